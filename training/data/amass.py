"""AMASS sequences (SMPL-H ``poses`` [n, 156]) → SMPL text→pose targets.

An AMASS npz holds ``poses`` (n, 156): 52 SMPL-H joints × axis-angle, of which joints 0..21 are the SMPL
body joints in SMPL order and 22..51 are fingers. SMPL's joints 22/23 (left/right hand) have no SMPL-H
counterpart, so they get the IDENTITY rotation: the published PoseScript loader read SMPL-H's first two
finger joints there, which bends the hands by whatever the index finger does.

The global orientation is normalised the way PoseScript normalises its poses (``posescript_normalize``:
in AMASS's Z-up frame, decomposed as Rz(θz)·Ry(θy)·Rx(θx) and θz set to 0), then brought to the SMPL frame
and expressed in the camera frame (conventions page), so "upright, facing the viewer" is diag(1, −1, −1).
For upright poses this is the conventions page's yaw removal; for leaning ones the two differ (the Euler
split puts part of a tilted body's heading into θx, θy), and the targets must be PoseScript's: its captions
were written for its normalised poses.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from smpl_rig import amass, frames

SMPLH_WIDTHS = (156, 165)        # PoseScript poses come from SMPL-H (and SMPL-X) sequences


def smplh_to_smpl_rotmat(poses) -> np.ndarray:
    """SMPL-H / SMPL-X axis-angle poses (..., 156 | 165) → SMPL local rotations (..., 24, 3, 3), with joints
    0..21 copied and the hand joints 22, 23 set to identity (``smpl_rig.amass``). Frames are not changed."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.shape[-1] not in SMPLH_WIDTHS:
        raise ValueError(f"expected SMPL-H poses (..., 156) or SMPL-X poses (..., 165), got {poses.shape}")
    return amass.poses_to_rotmat(poses)


def posescript_normalize(orient_amass) -> np.ndarray:
    """(..., 3, 3) Z-up AMASS global orientations → PoseScript's normalisation (its ``pose_normalization``):
    the ZYX Euler angles θx = atan2(R21, R22), θy = atan2(−R20, √(R21² + R22²)) kept, θz dropped:
    Ry(θy)·Rx(θx)."""
    r = np.asarray(orient_amass, dtype=np.float64)
    tx = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    ty = np.arctan2(-r[..., 2, 0], np.hypot(r[..., 2, 1], r[..., 2, 2]))
    cx, sx, cy, sy = np.cos(tx), np.sin(tx), np.cos(ty), np.sin(ty)
    zero, one = np.zeros_like(tx), np.ones_like(tx)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(*tx.shape, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*tx.shape, 3, 3)
    return ry @ rx


def canonical_text_target(rotmats_amass_frame) -> np.ndarray:
    """(..., 24, 3, 3) poses whose global orientation is in AMASS's Z-up frame → the canonical text→pose
    target: PoseScript's normalisation, then the SMPL frame, then the camera frame."""
    out = np.array(rotmats_amass_frame, dtype=np.float64, copy=True)
    smpl_orient = frames.amass_to_smpl_orient(posescript_normalize(out[..., 0, :, :]))
    out[..., 0, :, :] = frames.SMPL_TO_CAMERA @ smpl_orient
    return out


class AmassFrames:
    """Reads single frames from AMASS sequences, keeping the last few sequences open (PoseScript samples
    many frames of the same sequence)."""

    def __init__(self, root: str | Path, cache_size: int = 32):
        self.root = Path(root)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _poses(self, relpath: str) -> np.ndarray:
        if relpath in self._cache:
            self._cache.move_to_end(relpath)
            return self._cache[relpath]
        path = self.root / relpath
        if not path.is_file():
            raise FileNotFoundError(f"AMASS sequence {relpath} not found under {self.root}")
        poses = amass.read_amass(path).poses
        self._cache[relpath] = poses
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return poses

    def smpl_target(self, relpath: str, frame: int) -> np.ndarray:
        """The canonical text→pose target (24, 3, 3) float32 of one frame."""
        poses = self._poses(relpath)
        if not 0 <= frame < len(poses):
            raise IndexError(f"{relpath}: frame {frame} outside 0..{len(poses) - 1}")
        return canonical_text_target(smplh_to_smpl_rotmat(poses[frame])).astype(np.float32)
