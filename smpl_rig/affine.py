"""Inverses of small affine transforms (Blender's 4 × 4 object and bone matrices) without LAPACK.

numpy's ``linalg.inv`` / ``solve`` call LAPACK, and an OpenBLAS numpy runs even a 4 × 4 system on its
thread pool: in Blender's process, with another program busy on the CPU, one 4 × 4 ``inv`` took 0.28 ms
(3 µs with ``OPENBLAS_NUM_THREADS=1``), and the add-on's pose application made several per reply. These
closed forms (the adjugate over the determinant) take about 30 µs a call whatever the thread pool is doing
(LAPACK's 5 µs holds only on an idle CPU).
"""
from __future__ import annotations

import numpy as np

__all__ = ["inverse_3x3", "inverse_affine"]


def inverse_3x3(m: np.ndarray) -> np.ndarray:
    """Inverse of invertible (..., 3, 3) matrices: the columns of A⁻¹ are r1 × r2, r2 × r0, r0 × r1 over det A,
    r_i being A's rows."""
    m = np.asarray(m, dtype=np.float64)
    r0, r1, r2 = m[..., 0, :], m[..., 1, :], m[..., 2, :]
    c0, c1, c2 = _cross(r1, r2), _cross(r2, r0), _cross(r0, r1)
    det = (r0 * c0).sum(-1)
    if np.any(det == 0):
        raise np.linalg.LinAlgError("singular 3 × 3 matrix")
    return np.stack([c0, c1, c2], axis=-1) / det[..., None, None]


_NEXT, _AFTER = [1, 2, 0], [2, 0, 1]


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # the same product as np.cross, which moves axes about: 16 µs a call on one vector against 7 here
    return a[..., _NEXT] * b[..., _AFTER] - a[..., _AFTER] * b[..., _NEXT]


def inverse_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of (..., 4, 4) affine transforms (last row 0 0 0 1): [A t] → [A⁻¹ −A⁻¹t]."""
    m = np.asarray(m, dtype=np.float64)
    out = np.zeros(m.shape)
    a = inverse_3x3(m[..., :3, :3])
    out[..., :3, :3] = a
    out[..., :3, 3] = -(a @ m[..., :3, 3:])[..., 0]
    out[..., 3, 3] = 1.0
    return out
