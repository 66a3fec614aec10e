"""Pose-estimation metrics of the conventions page: MPJPE and PA-MPJPE in millimetres, MPJRE in degrees
(and radians × 100 as in the paper's tables). Each returns one value per sample, shape (...)."""
from __future__ import annotations

import numpy as np

from .arrays import to_numpy as _np
from .rotations import geodesic_angle


def mpjpe_mm(pred_joints_m, true_joints_m, root: int = 0):
    """Mean per-joint position error after centring both skeletons on the pelvis; inputs (..., J, 3) in
    metres, result (...) in millimetres."""
    p, t = _np(pred_joints_m), _np(true_joints_m)
    p = p - p[..., root:root + 1, :]
    t = t - t[..., root:root + 1, :]
    return np.linalg.norm(p - t, axis=-1).mean(-1) * 1000.0


def procrustes_align(pred, true):
    """Similarity transform (rotation, uniform scale, translation) that best maps ``pred`` onto ``true``
    per sample (Umeyama); returns the aligned ``pred``. pred, true: (..., J, 3)."""
    p, t = _np(pred), _np(true)
    mp, mt = p.mean(-2, keepdims=True), t.mean(-2, keepdims=True)
    p0, t0 = p - mp, t - mt
    cov = np.swapaxes(t0, -1, -2) @ p0                       # (..., 3, 3)
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))                       # no reflections
    fix = np.ones(s.shape)
    fix[..., -1] = d
    r = u @ (fix[..., :, None] * vt)
    scale = (s * fix).sum(-1) / (p0 ** 2).sum((-1, -2))
    return scale[..., None, None] * (p0 @ np.swapaxes(r, -1, -2)) + mt


def pa_mpjpe_mm(pred_joints_m, true_joints_m):
    """MPJPE after a per-sample similarity Procrustes alignment; (..., J, 3) metres → (...) millimetres."""
    aligned = procrustes_align(pred_joints_m, true_joints_m)
    return np.linalg.norm(aligned - _np(true_joints_m), axis=-1).mean(-1) * 1000.0


def mpjre_deg(pred_rotmats, true_rotmats):
    """Mean geodesic angle between predicted and true joint rotations; (..., J, 3, 3) → (...) degrees."""
    return np.degrees(geodesic_angle(_np(pred_rotmats), _np(true_rotmats))).mean(-1)


def mpjre_rad100(pred_rotmats, true_rotmats):
    """MPJRE as the paper's tables print it: radians × 100."""
    return np.radians(mpjre_deg(pred_rotmats, true_rotmats)) * 100.0
