"""The chat's stick-figure icons (blender_addon/pose_icon.py, bpy-free): what the figure shows must
match the pose — the side that moved, the height, the head on top — at the 32 px Blender shows."""
from __future__ import annotations

import numpy as np
import pytest

from blender_addon.pose_icon import ICON_PX, LEFT_RGB, RIGHT_RGB, stick_figure
from smpl_rig import rotations as rot
from smpl_rig.skeleton import JOINT_INDEX as J


def pose(**rotvecs) -> np.ndarray:
    rotvec = np.zeros((24, 3))
    for name, value in rotvecs.items():
        rotvec[J[name]] = value
    return rot.rotvec_to_rotmat(rotvec)


def side_pixels(image, rgb):
    """(rows, cols) of the mostly opaque pixels drawn in a side's colour; row 0 is the bottom."""
    close = np.abs(image[..., :3] - np.asarray(rgb)).max(-1) < 1e-6
    return np.nonzero(close & (image[..., 3] > 0.5))


def test_icon_is_rgba_float_bottom_up_with_the_head_on_top():
    image = stick_figure(pose())
    assert image.shape == (ICON_PX, ICON_PX, 4) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    rows = np.nonzero(image[..., 3].max(1) > 0.5)[0]
    head_rows, _ = np.nonzero((image[..., 3] > 0.5) & (np.abs(image[..., :3] - 0.88).max(-1) < 1e-6))
    assert head_rows.max() == rows.max()                   # the head is the top of the figure (rows go up)
    assert not image[[0, -1], :, 3].any() and not image[:, [0, -1], 3].any()      # nothing cut by the border


def test_the_body_left_is_blue_on_the_viewer_right_and_a_raised_left_arm_shows():
    t_pose = stick_figure(pose())
    _, left_cols = side_pixels(t_pose, LEFT_RGB)
    _, right_cols = side_pixels(t_pose, RIGHT_RGB)
    assert left_cols.mean() > right_cols.mean() + 4         # seen from the front: the body's left on the right

    raised = stick_figure(pose(left_shoulder=[0.0, 0.0, 1.3]))       # the left arm up, over the head
    left_rows, _ = side_pixels(raised, LEFT_RGB)
    right_rows, _ = side_pixels(raised, RIGHT_RGB)
    head_rows = np.nonzero(raised[..., 3].max(1) > 0.5)[0]
    assert left_rows.max() > right_rows.max() + 4 and left_rows.max() == head_rows.max()
    mirrored = stick_figure(pose(right_shoulder=[0.0, 0.0, -1.3]))
    assert side_pixels(mirrored, RIGHT_RGB)[0].max() > side_pixels(mirrored, LEFT_RGB)[0].max() + 4


def test_a_crouch_is_drawn_smaller_than_a_stand_and_a_lying_body_still_fits():
    def height(image):
        rows = np.nonzero(image[..., 3].max(1) > 0.5)[0]
        return rows.max() - rows.min()
    bent = dict(left_hip=[-1.6, 0, 0], right_hip=[-1.6, 0, 0], left_knee=[2.2, 0, 0], right_knee=[2.2, 0, 0])
    assert height(stick_figure(pose(**bent))) < 0.8 * height(stick_figure(pose()))
    lying = stick_figure(pose(pelvis=[np.pi / 2, 0, 0], left_shoulder=[0, 0, 1.3], right_shoulder=[0, 0, -1.3]))
    covered = np.nonzero(lying[..., 3].max(0) > 0.5)[0]
    assert covered.max() - covered.min() > ICON_PX / 2
    assert not lying[[0, -1], :, 3].any() and not lying[:, [0, -1], 3].any()


@pytest.mark.parametrize("size", [16, 32, 64])
def test_sizes(size):
    image = stick_figure(pose(), size=size)
    assert image.shape == (size, size, 4) and image[..., 3].max() == pytest.approx(1.0)
