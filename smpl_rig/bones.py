"""The bone formula and the rules of the armature ``smpl_rig.blender`` builds, in plain numpy.

Everything here is testable without Blender; ``smpl_rig.blender`` reads bone rest matrices out of Blender,
calls these functions and writes the results back.

The formula (``shared/docs/conventions.md``, "Putting a rotation on a Blender pose bone"): a bone with rest
orientation B_i (``bone.matrix_local.to_3x3()``, armature space) shows the SMPL local rotation R_i when its
pose-bone rotation is

    M_i = D_iᵀ · R_i · D_i,   D_i = Cᵀ · B_i,   C = Rx(+90°) (SMPL frame → Blender)

for any bone direction and roll; the inverse is R_i = D_i · M_i · D_iᵀ. The pelvis bone's location shows
SMPL's ``transl`` t as D_0ᵀ t.

``check_rotmats`` is the project's one test of "these are rotation matrices": the Blender glue and the
add-on's stored poses both call it.
"""
from __future__ import annotations

import numpy as np

from . import frames
from . import rotations as rot
from .skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS, PARENTS, primary_child

__all__ = [
    "ROTMAT_TOLERANCE", "check_rotmats", "pose_rotmats", "check_translation", "check_global_orient",
    "bone_frames", "pose_bone_rotmats", "pose_bone_quats", "smpl_rotmats_from_pose_bones", "pelvis_location",
    "translation_from_location", "bone_tails", "roll_target", "corrective_name",
]

ROTMAT_TOLERANCE = 1e-4             # how far from orthonormal a given matrix may be (float32 model output)
LEAF_LENGTH_RATIO = 0.6             # a leaf bone continues its parent's direction at this fraction of its length
MIN_BONE_RATIO = 0.02               # shortest bone, as a fraction of body height (Blender drops zero-length bones)
FACING_ROLL_LIMIT = 0.7             # bones more aligned than this with "forward" roll toward "up" instead
CORRECTIVE_PREFIX = "pose_corrective"

_C = frames.SMPL_TO_BLENDER
_FORWARD = np.array([0.0, -1.0, 0.0])   # the body's front in Blender (SMPL +Z)
_UP = np.array([0.0, 0.0, 1.0])


# --- validation -------------------------------------------------------------------------------------------

def check_rotmats(rotmats, what: str = "pose", *, num_joints: int | None = None) -> np.ndarray:
    """``rotmats`` (..., 3, 3) as float64 when every matrix is a proper rotation (finite, R Rᵀ = I to
    ``ROTMAT_TOLERANCE``, det +1), else ``ValueError`` saying why. num_joints: also require (J, 3, 3)."""
    arr = np.asarray(rotmats, dtype=np.float64)
    if num_joints is not None and arr.shape != (num_joints, 3, 3):
        raise ValueError(f"{what} must be {num_joints} rotation matrices, shape ({num_joints}, 3, 3); got {arr.shape}")
    if arr.ndim < 2 or arr.shape[-2:] != (3, 3):
        raise ValueError(f"{what} must be rotation matrices of shape (..., 3, 3), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite numbers")
    gram_error = np.abs(arr @ np.swapaxes(arr, -1, -2) - np.eye(3)).max(initial=0.0)
    if gram_error > ROTMAT_TOLERANCE or np.any(np.linalg.det(arr) < 0):
        raise ValueError(f"{what} contains matrices that are not rotations (|R Rᵀ − I| = {gram_error:.2g})")
    return arr


def pose_rotmats(pose, current=None) -> np.ndarray:
    """Any accepted pose form → validated SMPL-frame rotations (24, 3, 3) float64.

    pose: (24, 3) axis-angle, (72,), (24, 3, 3), (24, 6) / (144,) 6D, (24, 4) wxyz, or a dict mapping joint
    names to one rotation each ((3,), (3, 3), (6,) or (4,)); joints a dict leaves out keep ``current``
    (24, 3, 3)."""
    if isinstance(pose, dict):
        unknown = [k for k in pose if k not in JOINT_INDEX]
        if unknown:
            raise ValueError(f"unknown SMPL joint names {unknown}; expected names from {', '.join(JOINT_NAMES)}")
        rotmats = np.array(current, dtype=np.float64)
        for joint, value in pose.items():
            single = np.asarray(value, dtype=np.float64)
            if single.shape not in ((3,), (3, 3), (6,), (4,)):
                raise ValueError(f"rotation for {joint!r} must be (3,), (3, 3), (6,) or (4,), got {single.shape}")
            rotmats[JOINT_INDEX[joint]] = rot.pose_to_rotmat(single[None], num_joints=1)[0]
        return check_rotmats(rotmats, "pose")
    try:
        array = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"pose must be an array of numbers, got {type(pose).__name__}: {error}") from None
    rotmats = rot.pose_to_rotmat(array, num_joints=NUM_JOINTS)
    if rotmats.shape != (NUM_JOINTS, 3, 3):
        raise ValueError(f"apply_pose takes one pose, got shape {array.shape} (use key_sequence for many)")
    return check_rotmats(rotmats, "pose")


def check_global_orient(global_orient: str) -> None:
    if global_orient not in ("keep", "upright"):
        raise ValueError(f"global_orient must be 'keep' or 'upright', got {global_orient!r}")


def check_translation(translation, count: int | None = None) -> np.ndarray | None:
    """None, or a finite (3,) translation ((count, 3) when ``count`` is given) as float64."""
    if translation is None:
        return None
    t = np.asarray(translation, dtype=np.float64)
    expected = (3,) if count is None else (count, 3)
    if t.shape != expected or not np.all(np.isfinite(t)):
        raise ValueError(f"translation must be finite {expected}, got shape {t.shape}")
    return t


# --- the bone formula ---------------------------------------------------------------------------------------

def bone_frames(rest_rotmats) -> np.ndarray:
    """D_i = Cᵀ B_i (..., 3, 3) from the bones' rest orientations B_i in armature space (re-orthonormalised:
    Blender stores them in single precision)."""
    return _C.T @ rot.orthonormalize_rotmat(np.asarray(rest_rotmats, dtype=np.float64))


def pose_bone_rotmats(frames_: np.ndarray, rotmats) -> np.ndarray:
    """M_i = D_iᵀ R_i D_i: pose-bone rotations (..., 24, 3, 3) from SMPL local rotations (..., 24, 3, 3)."""
    return np.swapaxes(frames_, -1, -2) @ np.asarray(rotmats, dtype=np.float64) @ frames_


def pose_bone_quats(frames_: np.ndarray, rotmats) -> np.ndarray:
    """M_i = D_iᵀ R_i D_i as quaternions (..., 24, 4), w first, w ≥ 0 (no sign alignment over time)."""
    return rot.rotmat_to_quat_wxyz(pose_bone_rotmats(frames_, rotmats))


def smpl_rotmats_from_pose_bones(frames_: np.ndarray, local) -> np.ndarray:
    """R_i = D_i M_i D_iᵀ: the inverse of ``pose_bone_rotmats``."""
    return frames_ @ np.asarray(local, dtype=np.float64) @ np.swapaxes(frames_, -1, -2)


def pelvis_location(frames_: np.ndarray, translation) -> np.ndarray:
    """SMPL translation (..., 3) → the pelvis pose-bone location (bone-local rest space): B_0ᵀ C t = D_0ᵀ t.
    None gives (3,) zeros."""
    if translation is None:
        return np.zeros(3)
    return np.asarray(translation) @ frames_[0]


def translation_from_location(frames_: np.ndarray, location) -> np.ndarray:
    """The pelvis pose-bone location → SMPL ``transl``: t = D_0 · location."""
    return frames_[0] @ np.asarray(location, dtype=np.float64)


# --- the armature build_armature makes ------------------------------------------------------------------------

def bone_tails(heads: np.ndarray, min_length: float) -> np.ndarray:
    """Tails (24, 3) for bones with ``heads`` (24, 3) on the joints: each bone points to its primary child
    joint; a leaf (head, feet, hands) continues its parent's direction at LEAF_LENGTH_RATIO of the
    parent-to-leaf distance; a bone shorter than ``min_length`` keeps that length along its parent's
    direction (or up)."""
    tails = np.empty_like(heads)
    for i in range(NUM_JOINTS):
        child = primary_child(i)
        if child is not None:
            direction = heads[child] - heads[i]
        else:
            direction = (heads[i] - heads[PARENTS[i]]) * LEAF_LENGTH_RATIO
        length = np.linalg.norm(direction)
        if length < min_length:  # coincident joints: keep a usable bone along the parent's direction or up
            fallback = heads[i] - heads[PARENTS[i]] if i else _UP
            fallback_norm = np.linalg.norm(fallback)
            direction = fallback / fallback_norm * min_length if fallback_norm > 1e-9 else _UP * min_length
        tails[i] = heads[i] + direction
    return tails


def roll_target(direction: np.ndarray) -> np.ndarray:
    """The rule for every bone's roll: its local Z axis points to the body's front (−Y) as far as the bone
    direction allows; bones that themselves point mostly forward or back (feet) put local Z up (+Z)."""
    unit = direction / np.linalg.norm(direction)
    return _UP if abs(float(unit @ _FORWARD)) > FACING_ROLL_LIMIT else _FORWARD


def corrective_name(feature: int) -> str:
    """Name of the shape key for pose-corrective feature ``feature`` (0..206): joint, row, column."""
    joint, entry = divmod(feature, 9)
    return f"{CORRECTIVE_PREFIX}_{JOINT_NAMES[joint + 1]}_{entry // 3}{entry % 3}"
