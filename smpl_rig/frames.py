"""Coordinate frames and global-orientation changes (conventions page, "Frames").

- SMPL model frame: +Y up, the body faces +Z, its left is +X. Every pose inside smpl_rig is in it.
- AMASS files: +Z up; ``AMASS_TO_SMPL`` = Rx(−90°) takes them to the SMPL frame.
- Camera frame (what the model predicts for images and canonicalised text targets): +X right, +Y down,
  +Z forward; upright-facing-the-camera is Rx(180°) = diag(1, −1, −1). ``CAMERA_TO_SMPL`` = Rx(180°).
- Blender: +Z up, a character faces −Y; ``SMPL_TO_BLENDER`` = C = Rx(+90°): (x, y, z) → (x, −z, y).

Global rotations pivot about the pelvis joint J0, not the origin: see ``change_global_frame``.
"""
from __future__ import annotations

import math

import numpy as np

from . import rotations as rot
from .arrays import like as _like, namespace

SMPL_TO_BLENDER = rot.rotmat_x(math.pi / 2)
AMASS_TO_SMPL = rot.rotmat_x(-math.pi / 2)
CAMERA_TO_SMPL = rot.rotmat_x(math.pi)
SMPL_TO_CAMERA = CAMERA_TO_SMPL.T  # Rx(180°) is its own inverse
UPRIGHT_CAMERA = CAMERA_TO_SMPL.copy()  # global orientation of a body upright, facing the camera


def change_global_frame(global_orient_rotmat, frame_rotmat, translation=None, pelvis_rest=None):
    """Re-express a posed body in another frame G: R0' = G·R0 and, when a translation and the rest
    pelvis J0 are given, t' = G·(J0 + t) − J0 (SMPL pivots about J0, not the origin).

    global_orient_rotmat: (..., 3, 3); frame_rotmat: (3, 3); translation, pelvis_rest: (..., 3).
    Returns ``(R0', t')`` (t' is None without a translation).
    """
    g = _like(np.asarray(frame_rotmat, dtype=np.float64), global_orient_rotmat)
    new_orient = g @ global_orient_rotmat
    if translation is None:
        return new_orient, None
    if pelvis_rest is None:
        raise ValueError("changing the frame of a translated body needs the rest pelvis joint J0")
    j0 = pelvis_rest
    new_translation = (g @ (j0 + translation)[..., None])[..., 0] - j0
    return new_orient, new_translation


def heading_angle(global_orient_smpl):
    """Yaw (radians, about +Y) of the direction the body faces, for SMPL-frame orientations (..., 3, 3)."""
    facing = global_orient_smpl[..., :, 2]            # image of the body's forward axis +Z
    return namespace(facing).arctan2(facing[..., 0], facing[..., 2])


def remove_yaw(global_orient_smpl):
    """Rotate SMPL-frame orientations (..., 3, 3) about the vertical axis so the body faces +Z (toward the
    viewer); lean and tilt are kept."""
    yaw = heading_angle(global_orient_smpl)
    xp = namespace(yaw)
    c, s = xp.cos(yaw), xp.sin(yaw)
    one, zero = c * 0 + 1, c * 0
    stack = xp.stack
    undo = stack([stack([c, zero, -s], -1), stack([zero, one, zero], -1), stack([s, zero, c], -1)], -2)  # Ry(−yaw)
    return undo @ global_orient_smpl


def canonical_camera_orient(global_orient_smpl):
    """The text-to-pose training target: yaw removed, then expressed in the camera frame, so upright and
    facing the viewer is diag(1, −1, −1)."""
    return _like(SMPL_TO_CAMERA, global_orient_smpl) @ remove_yaw(global_orient_smpl)


def camera_to_smpl_orient(global_orient_camera):
    """A camera-frame global orientation (what the model predicts) → the SMPL model frame."""
    return _like(CAMERA_TO_SMPL, global_orient_camera) @ global_orient_camera


def amass_to_smpl_orient(global_orient_amass):
    """A Z-up AMASS global orientation → the SMPL model frame (Y up)."""
    return _like(AMASS_TO_SMPL, global_orient_amass) @ global_orient_amass


def smpl_points_to_blender(points):
    """(..., 3) positions in the SMPL frame → Blender world (x, −z, y)."""
    return points @ _like(SMPL_TO_BLENDER, points).T
