"""A reply's pose as a small stick figure, the icon of its turn in the chat (bpy-free).

Forward kinematics on the mannequin's rest skeleton, seen from the front and a little from the body's
left (SMPL frame: +y up, the body's left at +x, on the viewer's right; the view turned VIEW_YAW_DEG so
a thigh raised forward, sitting or kneeling, shows), drawn into an RGBA float image with anti-aliased lines. The
body's left limbs are blue and its right limbs orange, the way pose tools colour sides, so "raise the
left arm" can be checked at a glance. ``pose_previews.py`` hands the pixels to a ``bpy.utils.previews``
collection; this module only computes them.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from smpl_rig.kinematics import forward_kinematics
from smpl_rig.skeleton import JOINT_NAMES, PARENTS

ICON_PX = 32                 # Blender's preview icon size
LINE_HALF_WIDTH_PX = 1.1     # about 2 px lines at 32 px: still a line where Blender shows the icon at 16 px
HEAD_RADIUS_M = 0.1
MARGIN_PX = 1.5
VIEW_YAW_DEG = 30.0

LEFT_RGB = (0.40, 0.68, 1.00)
RIGHT_RGB = (1.00, 0.58, 0.30)
CENTRE_RGB = (0.88, 0.88, 0.88)

# Bones: every joint to its parent. The pelvis→hip and spine3→collar links draw the hip and shoulder lines.
BONES = tuple((PARENTS[j], j) for j in range(1, len(PARENTS)))
_SIDE = tuple(LEFT_RGB if JOINT_NAMES[j].startswith("left") else RIGHT_RGB if JOINT_NAMES[j].startswith("right")
              else CENTRE_RGB for _, j in BONES)
_NECK, _HEAD = JOINT_NAMES.index("neck"), JOINT_NAMES.index("head")


@lru_cache(maxsize=1)
def _rest_joints() -> np.ndarray:
    from smpl_rig.mannequin import read_rest_joints
    return read_rest_joints()


def figure_points(rotmat: np.ndarray, rest_joints: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The posed joints as drawn, (24, 2) in metres (x: toward the body's left, y: up), and the head's
    centre (2,): a head radius beyond the head joint, along the neck → head direction."""
    rest = _rest_joints() if rest_joints is None else np.asarray(rest_joints, np.float64)
    joints3 = forward_kinematics(rest, np.asarray(rotmat, np.float64)).joints
    yaw = np.radians(VIEW_YAW_DEG)
    joints = np.stack([joints3[:, 0] * np.cos(yaw) + joints3[:, 2] * np.sin(yaw), joints3[:, 1]], 1)
    up = joints[_HEAD] - joints[_NECK]
    norm = np.linalg.norm(up)
    head = joints[_HEAD] + (up / norm if norm > 1e-9 else np.array([0.0, 1.0])) * HEAD_RADIUS_M
    return joints, head


def stick_figure(rotmat: np.ndarray, size: int = ICON_PX, rest_joints: np.ndarray | None = None) -> np.ndarray:
    """(size, size, 4) float32 RGBA, row 0 at the bottom (Blender's pixel order), transparent background.

    The scale is fixed by the rest skeleton's height (so a crouch looks smaller than a stand, as it is),
    shrunk only when a pose would not fit (a lying body, arms stretched up); the figure is centred."""
    rest = _rest_joints() if rest_joints is None else np.asarray(rest_joints, np.float64)
    joints, head = figure_points(rotmat, rest)
    points = np.vstack([joints, head[None] + [[0.0, HEAD_RADIUS_M], [0.0, -HEAD_RADIUS_M],
                                              [HEAD_RADIUS_M, 0.0], [-HEAD_RADIUS_M, 0.0]]])
    low, high = points.min(0), points.max(0)
    rest_height = np.ptp(rest[:, 1]) + 3 * HEAD_RADIUS_M
    room = size - 2 * MARGIN_PX
    scale = min(room / rest_height, room / max(float((high - low).max()), 1e-6))
    centre = (low + high) / 2

    def to_pixels(p):
        return (np.asarray(p) - centre) * scale + size / 2

    a, b = to_pixels(joints[[p for p, _ in BONES]]), to_pixels(joints[[c for _, c in BONES]])   # (23, 2)
    # Distance of every pixel centre to every bone segment, (S², 23), one coordinate at a time: no
    # (S², 23, 2) temporaries, about a millisecond a figure.
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    px, py = xs.reshape(-1, 1), ys.reshape(-1, 1)
    ax, ay = a[:, 0].astype(np.float32), a[:, 1].astype(np.float32)
    dx, dy = (b[:, 0] - a[:, 0]).astype(np.float32), (b[:, 1] - a[:, 1]).astype(np.float32)
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / np.maximum(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    distance = np.hypot(px - ax - t * dx, py - ay - t * dy)
    coverage = np.clip(LINE_HALF_WIDTH_PX + 0.5 - distance, 0.0, 1.0)
    nearest = coverage.argmax(1)
    alpha = coverage.max(1)
    rgb = np.asarray(_SIDE, np.float64)[nearest]
    # The head: a ring, so it reads as a head and not as a blob at 16 px.
    hx, hy = to_pixels(head)
    ring = np.abs(np.hypot(px[:, 0] - hx, py[:, 0] - hy) - HEAD_RADIUS_M * scale)
    head_alpha = np.clip(LINE_HALF_WIDTH_PX + 0.5 - ring, 0.0, 1.0)
    rgb = np.where((head_alpha > alpha)[:, None], np.asarray(CENTRE_RGB), rgb)
    alpha = np.maximum(alpha, head_alpha)
    rgb = np.where((alpha > 0)[:, None], rgb, 0.0)
    return np.concatenate([rgb, alpha[:, None]], 1).reshape(size, size, 4).astype(np.float32)
