"""AMASS sequences (SMPL-H ``poses`` [n, 156]) → SMPL text→pose targets.

An AMASS npz holds ``poses`` (n, 156): 52 SMPL-H joints × axis-angle, of which joints 0..21 are the SMPL
body joints in SMPL order and 22..51 are fingers. SMPL's joints 22/23 (left/right hand) have no SMPL-H
counterpart, so they get the IDENTITY rotation: the published PoseScript loader read SMPL-H's first two
finger joints there, which bends the hands by whatever the index finger does.

The global orientation is brought from AMASS's Z-up frame to the SMPL frame, its yaw removed, and then
expressed in the camera frame (conventions page), so "upright, facing the viewer" is diag(1, −1, −1).
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


def canonical_text_target(rotmats_amass_frame) -> np.ndarray:
    """(..., 24, 3, 3) poses whose global orientation is in AMASS's Z-up frame → the canonical text→pose
    target: global orientation in the SMPL frame, yaw removed, then in the camera frame."""
    out = np.array(rotmats_amass_frame, dtype=np.float64, copy=True)
    smpl_orient = frames.amass_to_smpl_orient(out[..., 0, :, :])
    out[..., 0, :, :] = frames.canonical_camera_orient(smpl_orient)
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
