"""Every rotation conversion of the project, for numpy arrays and torch tensors alike.

Names say source and target convention, component order included:

- ``rotvec``: axis-angle, (..., 3), angle = norm in radians.
- ``rotmat``: rotation matrix, (..., 3, 3), acting on column vectors.
- ``quat_wxyz``: unit quaternion, (..., 4), scalar FIRST (Blender's order; SciPy and roma use x, y, z, w).
- ``d6``: the 6D representation of the conventions page, (..., 6): the first two COLUMNS of the matrix,
  column after column, ``[R00, R10, R20, R01, R11, R21]``. Never the interleaved ``reshape(3, 2)`` layout.

Every function takes any leading batch shape and returns the input's array type and dtype. numpy is the
only hard dependency (the Blender add-on ships this module without torch); torch is used when given.
No other module of the project converts rotations.
"""
from __future__ import annotations

import math

import numpy as np

from .arrays import is_torch, namespace

__all__ = [
    "rotvec_to_rotmat", "rotmat_to_rotvec", "rotmat_to_quat_wxyz", "quat_wxyz_to_rotmat",
    "rotvec_to_quat_wxyz", "quat_wxyz_to_rotvec", "rotmat_to_d6", "d6_to_rotmat", "d6_to_rotvec",
    "rotvec_to_d6", "quat_wxyz_to_d6", "d6_to_quat_wxyz", "geodesic_angle", "pose_to_rotmat",
    "quat_wxyz_align_signs", "quat_wxyz_slerp", "quat_wxyz_multiply", "quat_wxyz_conjugate",
    "rotmat_x", "rotmat_y", "rotmat_z", "orthonormalize_rotmat", "angles_xyz_deg_to_rotmat_yzx",
    "rotvec_mirror_x", "rotmat_slerp", "rotmat_between",
]

_SMALL_ANGLE = 1e-4  # below this, Taylor series replace sin(x)/x-type ratios


# --- array-library dispatch: ``smpl_rig.arrays`` ------------------------------------------------------

def _check_last(x, sizes: tuple[int, ...], what: str):
    if tuple(x.shape[len(x.shape) - len(sizes):]) != sizes or len(x.shape) < len(sizes):
        raise ValueError(f"{what} must have shape (..., {', '.join(map(str, sizes))}), got {tuple(x.shape)}")


def _prepare(x, sizes, what):
    xp = namespace(x)
    x = xp.asarray(x)
    _check_last(x, sizes, what)
    return xp, x


def _keep_dtype(fn):
    """numpy 1.x promotes 0-d float32 arithmetic with Python floats to float64; return the input's dtype."""
    import functools

    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        out = fn(x, *args, **kwargs)
        if isinstance(out, np.ndarray) and isinstance(x, np.ndarray) and x.dtype.kind == "f" and out.dtype != x.dtype:
            out = out.astype(x.dtype)
        return out
    return wrapper


# --- axis-angle ----------------------------------------------------------------------------------------

def _skew(xp, v):
    """(..., 3) → (..., 3, 3) cross-product matrix."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = x * 0
    return xp.stack([xp.stack([o, -z, y], -1), xp.stack([z, o, -x], -1), xp.stack([-y, x, o], -1)], -2)


@_keep_dtype
def rotvec_to_rotmat(rotvec):
    """Axis-angle (..., 3) → rotation matrix (..., 3, 3) by Rodrigues' formula, exact near zero."""
    xp, v = _prepare(rotvec, (3,), "rotvec")
    theta = xp.norm(v)[..., None]                      # (..., 1, 1)
    small = theta < _SMALL_ANGLE
    safe = xp.where(small, theta * 0 + 1, theta)
    t2 = theta * theta
    a = xp.where(small, 1 - t2 / 6, xp.sin(safe) / safe)          # sin θ / θ
    b = xp.where(small, 0.5 - t2 / 24, (1 - xp.cos(safe)) / (safe * safe))  # (1 − cos θ) / θ²
    k = _skew(xp, v)
    return xp.eye_like(v) + a * k + b * (k @ k)


@_keep_dtype
def rotvec_to_quat_wxyz(rotvec):
    """Axis-angle (..., 3) → unit quaternion (..., 4), w first, w ≥ 0 for angles ≤ π."""
    xp, v = _prepare(rotvec, (3,), "rotvec")
    theta = xp.norm(v)
    small = theta < _SMALL_ANGLE
    safe = xp.where(small, theta * 0 + 1, theta)
    s = xp.where(small, 0.5 - theta * theta / 48, xp.sin(safe / 2) / safe)  # sin(θ/2) / θ
    return xp.concat([xp.cos(theta / 2), v * s], -1)


@_keep_dtype
def quat_wxyz_to_rotvec(quat):
    """Quaternion (..., 4), w first, any norm → axis-angle (..., 3) with angle in [0, π]."""
    xp, q = _prepare(quat, (4,), "quat_wxyz")
    q = q / xp.norm(q)
    q = xp.where(q[..., :1] < 0, -q, q)                # the short way round
    w, vec = q[..., :1], q[..., 1:]
    s = xp.norm(vec)                                   # sin(θ/2)
    theta = 2 * xp.arctan2(s, w)
    small = s < _SMALL_ANGLE
    ratio = xp.where(small, 2 / w * (1 + s * s / 6), theta / xp.where(small, s * 0 + 1, s))  # θ / sin(θ/2)
    return vec * ratio


@_keep_dtype
def rotmat_to_rotvec(rotmat):
    """Rotation matrix (..., 3, 3) → axis-angle (..., 3), angle in [0, π]."""
    return quat_wxyz_to_rotvec(rotmat_to_quat_wxyz(rotmat))


# --- quaternions ---------------------------------------------------------------------------------------

@_keep_dtype
def quat_wxyz_to_rotmat(quat):
    """Quaternion (..., 4), w first (normalised here) → rotation matrix (..., 3, 3)."""
    xp, q = _prepare(quat, (4,), "quat_wxyz")
    q = q / xp.norm(q)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return xp.stack([xp.stack(r, -1) for r in rows], -2)


@_keep_dtype
def rotmat_to_quat_wxyz(rotmat):
    """Rotation matrix (..., 3, 3) → unit quaternion (..., 4), w first, w ≥ 0.

    Shepperd's method: of the four algebraically equal formulas, use the one with the largest
    denominator, so no branch divides by a number near zero.
    """
    xp, m = _prepare(rotmat, (3, 3), "rotmat")
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4·q_k² for k = w, x, y, z
    four_sq = xp.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    root = xp.sqrt(xp.clip(four_sq, 1e-12, None))      # 2·|q_k|
    candidates = xp.stack([
        xp.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
        xp.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], -1),
        xp.stack([m02 - m20, m10 + m01, four_sq[..., 2], m21 + m12], -1),
        xp.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], -1),
    ], -2) / (2 * root[..., :, None])                  # (..., 4 candidates, 4)
    q = xp.take(candidates, xp.argmax(four_sq))
    q = q / xp.norm(q)
    return xp.where(q[..., :1] < 0, -q, q)


@_keep_dtype
def quat_wxyz_multiply(a, b):
    """Hamilton product a·b of quaternions (..., 4), w first."""
    xp, a = _prepare(a, (4,), "quat_wxyz")
    _, b = _prepare(b, (4,), "quat_wxyz")
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return xp.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)


@_keep_dtype
def quat_wxyz_conjugate(q):
    """Inverse of a unit quaternion (..., 4), w first."""
    xp, q = _prepare(q, (4,), "quat_wxyz")
    return xp.concat([q[..., :1], -q[..., 1:]], -1)


@_keep_dtype
def quat_wxyz_align_signs(quats, axis: int = 0):
    """Flip signs along ``axis`` (a time axis) so each quaternion has a non-negative dot product with the
    one before it: keyframe interpolation then takes the short way. Same rotations, returned as a copy."""
    xp, q = _prepare(quats, (4,), "quat_wxyz")
    axis = axis % (len(q.shape) - 1)
    n = q.shape[axis]
    if n < 2:
        return q * 1
    sl = lambda a, b: (slice(None),) * axis + (slice(a, b),)
    dots = (q[sl(1, None)] * q[sl(None, n - 1)]).sum(-1)
    flips = xp.cumprod(xp.where(dots < 0, dots * 0 - 1, dots * 0 + 1), axis)
    return xp.concat([q[sl(0, 1)], q[sl(1, None)] * flips[..., None]], axis)


@_keep_dtype
def quat_wxyz_slerp(q0, q1, t):
    """Spherical interpolation between unit quaternions (..., 4) at fraction ``t`` (broadcast to (...,))."""
    xp, q0 = _prepare(q0, (4,), "quat_wxyz")
    _, q1 = _prepare(q1, (4,), "quat_wxyz")
    t = t[..., None] if hasattr(t, "shape") and len(t.shape) else t
    dot = (q0 * q1).sum(-1, keepdims=True) if not is_torch(q0) else (q0 * q1).sum(-1, keepdim=True)
    q1 = xp.where(dot < 0, -q1, q1)
    dot = xp.abs(dot)
    omega = xp.arctan2(xp.sqrt(xp.clip(1 - dot * dot, 0, None)), dot)
    near = omega < _SMALL_ANGLE
    s = xp.where(near, omega * 0 + 1, xp.sin(omega))
    w0 = xp.where(near, 1 - t + omega * 0, xp.sin((1 - t) * omega) / s)
    w1 = xp.where(near, t + omega * 0, xp.sin(t * omega) / s)
    q = w0 * q0 + w1 * q1
    return q / xp.norm(q)


@_keep_dtype
def rotmat_slerp(a, b, t):
    """Rotation matrices (..., 3, 3) a fraction ``t`` of the way from ``a`` to ``b`` on the shortest arc:
    a · exp(t · log(aᵀ b)), Rodrigues written out (no quaternion round trip: retargeting runs it on every
    apply). At a half turn (aᵀ b = 180°) the axis comes from the symmetric part."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape == (3, 3) and np.isscalar(t):
        return _rotmat_slerp_single(a.astype(np.float64), b.astype(np.float64), float(t))
    xp, a = _prepare(a, (3, 3), "rotmat")
    _, b = _prepare(b, (3, 3), "rotmat")
    d = xp.swap(a) @ b
    vee = xp.stack([d[..., 2, 1] - d[..., 1, 2], d[..., 0, 2] - d[..., 2, 0], d[..., 1, 0] - d[..., 0, 1]], -1) / 2
    sin = xp.norm(vee)                                          # (..., 1): sin θ
    cos = (d[..., 0, 0] + d[..., 1, 1] + d[..., 2, 2] - 1)[..., None] / 2
    theta = xp.arctan2(sin, cos)
    if bool((sin < _SMALL_ANGLE).any() & (cos < 0).any()):      # near a half turn: a careful log
        return a @ rotvec_to_rotmat(rotmat_to_rotvec(d) * t)
    axis = vee / xp.where(sin < 1e-12, sin * 0 + 1, sin)
    k = _skew(xp, axis)
    angle = (theta * t)[..., None]
    return a @ (xp.eye_like(axis) + xp.sin(angle) * k + (1 - xp.cos(angle)) * (k @ k))


def _rotmat_slerp_single(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """``rotmat_slerp`` for one pair of float64 (3, 3) matrices, in scalar arithmetic (no array dispatch)."""
    d = a.T @ b
    x, y, z = 0.5 * (d[2, 1] - d[1, 2]), 0.5 * (d[0, 2] - d[2, 0]), 0.5 * (d[1, 0] - d[0, 1])
    sin = math.sqrt(x * x + y * y + z * z)
    cos = 0.5 * (d[0, 0] + d[1, 1] + d[2, 2] - 1.0)
    if sin < _SMALL_ANGLE and cos < 0:                            # near a half turn: a careful log
        return a @ rotvec_to_rotmat(rotmat_to_rotvec(d) * t)
    if sin < 1e-12:
        return a.copy()
    angle = t * math.atan2(sin, cos)
    x, y, z = x / sin, y / sin, z / sin
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return a @ (np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k))


def rotmat_between(a, b) -> np.ndarray:
    """The smallest rotation (3, 3) turning direction ``a`` (3,) onto direction ``b`` (3,), numpy, float64:
    I + [v]× + [v]×² / (1 + c) with v = â × b̂, c = â · b̂; a half turn picks an axis perpendicular to
    ``a``."""
    a = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    b = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-12:
        axis = np.cross(a, np.eye(3)[np.argmin(np.abs(a))])
        return rotvec_to_rotmat(axis / np.linalg.norm(axis) * math.pi)
    k = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + k + (k @ k) / (1.0 + c)


# --- 6D ------------------------------------------------------------------------------------------------

@_keep_dtype
def rotmat_to_d6(rotmat):
    """Rotation matrix (..., 3, 3) → 6D (..., 6) = [R00, R10, R20, R01, R11, R21] (columns 0 and 1)."""
    xp, m = _prepare(rotmat, (3, 3), "rotmat")
    return xp.concat([m[..., :, 0], m[..., :, 1]], -1)


@_keep_dtype
def d6_to_rotmat(d6):
    """6D (..., 6), two columns → rotation matrix (..., 3, 3) by Gram–Schmidt (b1, b2, b3 = b1 × b2)."""
    xp, d = _prepare(d6, (6,), "d6")
    a1, a2 = d[..., 0:3], d[..., 3:6]
    b1 = a1 / xp.clip(xp.norm(a1), 1e-12, None)
    a2 = a2 - (b1 * a2).sum(-1)[..., None] * b1
    b2 = a2 / xp.clip(xp.norm(a2), 1e-12, None)
    b3 = xp.cross(b1, b2)
    return xp.stack([b1, b2, b3], -1)                  # columns


def rotvec_to_d6(rotvec):
    return rotmat_to_d6(rotvec_to_rotmat(rotvec))


def d6_to_rotvec(d6):
    return rotmat_to_rotvec(d6_to_rotmat(d6))


def quat_wxyz_to_d6(quat):
    return rotmat_to_d6(quat_wxyz_to_rotmat(quat))


def d6_to_quat_wxyz(d6):
    return rotmat_to_quat_wxyz(d6_to_rotmat(d6))


def orthonormalize_rotmat(rotmat):
    """Nearest-by-Gram–Schmidt proper rotation for a slightly drifted matrix (..., 3, 3)."""
    return d6_to_rotmat(rotmat_to_d6(rotmat))


# --- measures and constructors -------------------------------------------------------------------------

@_keep_dtype
def geodesic_angle(rotmat_a, rotmat_b):
    """Angle in radians (...) of R_a R_bᵀ, accurate near 0 and π (atan2 of sine and cosine parts,
    equal to arccos((trace − 1) / 2) of the conventions page)."""
    xp, a = _prepare(rotmat_a, (3, 3), "rotmat")
    _, b = _prepare(rotmat_b, (3, 3), "rotmat")
    m = a @ xp.swap(b)
    cos = (m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2] - 1) / 2
    vee = xp.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    sin = xp.norm(vee)[..., 0] / 2
    return xp.arctan2(sin, cos)


def _axis_rotmat(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def rotmat_x(angle: float) -> np.ndarray:
    """Rotation about +X by ``angle`` radians (right-handed), float64 (3, 3)."""
    return _axis_rotmat(0, angle)


def rotmat_y(angle: float) -> np.ndarray:
    """Rotation about +Y by ``angle`` radians (right-handed), float64 (3, 3)."""
    return _axis_rotmat(1, angle)


def rotmat_z(angle: float) -> np.ndarray:
    """Rotation about +Z by ``angle`` radians (right-handed), float64 (3, 3)."""
    return _axis_rotmat(2, angle)


def angles_xyz_deg_to_rotmat_yzx(angles_deg) -> np.ndarray:
    """Angles (..., 3) in degrees about X, Y and Z (components in that order) → R = Ry(y) · Rz(z) · Rx(x),
    (..., 3, 3) float64: twist about the bone's own X first, then swing. The pose corpus writes joint
    limits in this parametrisation."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if a.shape[-1:] != (3,):
        raise ValueError(f"angles must have a trailing size of 3 (x, y, z degrees), got shape {a.shape}")
    per_axis = rotvec_to_rotmat(a[..., None, :] * np.eye(3))      # (..., 3, 3, 3): Rx, Ry, Rz
    return per_axis[..., 1, :, :] @ per_axis[..., 2, :, :] @ per_axis[..., 0, :, :]


def rotmat_to_angles_xyz_deg_yzx(rotmat, limits_deg=None) -> np.ndarray:
    """Inverse of ``angles_xyz_deg_to_rotmat_yzx`` for one (3, 3) matrix → (x, y, z) degrees. Two angle
    triples give every matrix (z and 180° − z); with ``limits_deg`` (3, 2) the one inside (or nearer) the
    limits is returned, else the one with |z| ≤ 90°."""
    r = np.asarray(rotmat, dtype=np.float64)
    z = math.asin(max(-1.0, min(1.0, r[1, 0])))
    options = []
    for zz in (z, math.pi - z if z >= 0 else -math.pi - z):
        c = math.cos(zz)
        sign = 1.0 if c >= 0 else -1.0     # R[1,1] = cos z cos x, R[1,2] = −cos z sin x, R[0,0] = cos y cos z …
        x = math.atan2(-sign * r[1, 2], sign * r[1, 1])
        y = math.atan2(-sign * r[2, 0], sign * r[0, 0])
        options.append(np.degrees([x, y, zz]))
    if limits_deg is None:
        return options[0]
    lim = np.asarray(limits_deg, dtype=np.float64)
    return min(options, key=lambda a: float(np.sum(np.clip(lim[:, 0] - a, 0, None) + np.clip(a - lim[:, 1], 0, None))))


def rotvec_mirror_x(rotvec):
    """Mirror axis-angle rotations (..., 3) across the plane x = 0: M·R·M with M = diag(−1, 1, 1), which for
    axis-angle negates the y and z components. (Swapping left and right joints is the caller's part.)"""
    xp, v = _prepare(rotvec, (3,), "rotvec")
    return xp.concat([v[..., :1], -v[..., 1:]], -1)


# --- poses in any representation -----------------------------------------------------------------------

def pose_to_rotmat(pose, num_joints: int = 24):
    """A pose as (J, 3) axis-angle, (J*3,), (J, 3, 3) matrices, (J, 6) or (J*6,) 6D, or (J, 4) quaternions
    (w first), any leading batch shape → (..., J, 3, 3). Rejects other shapes and non-finite values with a
    ``ValueError`` that says what was expected."""
    xp = namespace(pose)
    p = xp.asarray(pose)
    shape = tuple(p.shape)
    if not xp.isfinite_all(p):
        raise ValueError("pose contains NaN or infinite values")
    j = num_joints
    if shape[-3:] == (j, 3, 3):   # checked first: for j = 3, (3, 3) would also read as axis-angle
        return p
    if shape[-2:] == (j, 3):
        return rotvec_to_rotmat(p)
    if shape[-2:] == (j, 6):
        return d6_to_rotmat(p)
    if shape[-2:] == (j, 4):
        return quat_wxyz_to_rotmat(p)
    if shape[-1:] == (j * 3,):
        return rotvec_to_rotmat(p.reshape(*shape[:-1], j, 3))
    if shape[-1:] == (j * 6,):
        return d6_to_rotmat(p.reshape(*shape[:-1], j, 6))
    raise ValueError(
        f"a pose must be ({j}, 3) axis-angle, ({j * 3},), ({j}, 3, 3) matrices, ({j}, 6) or ({j * 6},) 6D, "
        f"or ({j}, 4) quaternions w-first; got shape {shape}")
