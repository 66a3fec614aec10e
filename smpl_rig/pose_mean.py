"""The mean of a set of poses: per joint, the chordal mean of the rotation matrices, made a rotation again.

The demo's base model starts its head at this pose and the demo's model card uses it as a baseline; it
lives here, below both, so neither has to import the other.
"""
from __future__ import annotations

import numpy as np

from . import rotations


def mean_pose(rotmats: np.ndarray) -> np.ndarray:
    """(N, 24, 3, 3) → (24, 3, 3): per joint, the mean matrix projected back onto SO(3) (Gram–Schmidt)."""
    rotmats = np.asarray(rotmats, dtype=np.float64)
    if rotmats.ndim != 4 or rotmats.shape[1:] != (24, 3, 3) or not len(rotmats):
        raise ValueError(f"expected (N, 24, 3, 3) poses with N >= 1, got {rotmats.shape}")
    return rotations.orthonormalize_rotmat(rotmats.mean(0))
