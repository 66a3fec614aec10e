"""Procedural full-body poses on the SMPL skeleton, built per body part and randomised within joint limits.

Every joint rotation is written as three angles in degrees, ``(x, y, z)``, composed as
``R = Ry(y) · Rz(z) · Rx(x)`` in the joint's parent frame (SMPL model frame axes: +Y up, the body faces +Z,
its left is +X; the rest pose is the T-pose with identity rotations). What each angle does, checked by the
forward-kinematics tests in ``tests/test_corpus_generator.py``:

- left shoulder (arm along +X at rest): z = elevation (+ raises the arm, −75° hangs it at the side),
  y = −azimuth (negative swings the arm forward toward +Z), x = twist about the upper arm.
- left elbow: y = −flexion (the forearm folds toward the upper arm's local +Z), x = forearm twist.
- hips (leg along −Y at rest): x = −flexion (negative lifts the thigh forward), z = abduction (+ for the
  left leg moves it outward), y = rotation about the thigh.
- knees: x = +flexion (the shank folds backward).  Ankles: x < 0 lifts the toes.
- spine joints: x > 0 bends forward, z < 0 bends toward the body's left, y > 0 turns the chest to the left.
- neck / head: x > 0 looks down, y > 0 turns to the left, z < 0 tilts the head toward the left shoulder.

Right-side joints hold the mirror of a left-side rotation: mirroring across the body's midplane keeps x
and negates y and z (``mirror_angles``, ``mirror_pose``), so every left-side recipe serves both sides.

``PoseGenerator(seed).sample()`` returns a ``GeneratedPose`` with the angles, axis-angle pose (24, 3), the
SMPL-frame and canonical camera-frame global orientation, and a structured ``label`` naming the chosen
configuration per body part with its degrees. The captioner never reads the label; tests do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from smpl_rig import frames
from smpl_rig import rotations as rot
from smpl_rig.kinematics import forward_kinematics
from smpl_rig.skeleton import JOINT_INDEX, JOINT_NAMES, MIRROR, NUM_JOINTS

J = JOINT_INDEX

# Reference rest skeleton (metres, SMPL frame), close to the SMPL neutral mean shape and exactly
# left/right symmetric so that mirrored poses reflect exactly across x = 0. The generator's collision checks
# and the captioner measure on it, so the corpus does not depend on which body model is installed.
_HALF_SKELETON = {  # name: (|x|, y, z) for left joints; centre joints have x = 0
    "pelvis": (0.0, -0.223, 0.028), "left_hip": (0.069, -0.314, 0.023), "spine1": (0.0, -0.114, 0.002),
    "left_knee": (0.105, -0.692, 0.016), "spine2": (0.0, 0.020, 0.002), "left_ankle": (0.090, -1.090, -0.029),
    "spine3": (0.0, 0.074, 0.030), "left_foot": (0.116, -1.143, 0.095), "neck": (0.0, 0.290, -0.014),
    "left_collar": (0.080, 0.194, -0.007), "head": (0.0, 0.390, 0.039), "left_shoulder": (0.172, 0.224, -0.020),
    "left_elbow": (0.434, 0.212, -0.041), "left_wrist": (0.694, 0.222, -0.045), "left_hand": (0.776, 0.214, -0.055),
}


def _reference_rest_joints() -> np.ndarray:
    out = np.zeros((NUM_JOINTS, 3))
    for name, (x, y, z) in _HALF_SKELETON.items():
        out[J[name]] = (x, y, z)
        if name.startswith("left_"):
            out[J[name.replace("left_", "right_")]] = (-x, y, z)
    return out


REST_JOINTS = _reference_rest_joints()  # (24, 3)
FLOOR_CLEARANCE = {"foot": 0.03, "ankle": 0.08, "knee": 0.05}  # joint centre height above the floor on contact

# Joint limits in degrees for the (x, y, z) angles above, left side and centre joints; the right side is the
# mirror (x kept, y and z negated). The pelvis row bounds the global orientation's pitch, yaw and roll.
JOINT_LIMITS_DEG = {
    "pelvis": ((-60, 60), (-180, 180), (-30, 30)),
    "left_hip": ((-135, 40), (-40, 45), (-25, 50)),
    "spine1": ((-20, 30), (-20, 20), (-15, 15)),
    "left_knee": ((0, 150), (-5, 5), (-5, 5)),
    "spine2": ((-20, 30), (-20, 20), (-15, 15)),
    "left_ankle": ((-40, 60), (-20, 20), (-20, 20)),
    "spine3": ((-20, 30), (-20, 20), (-15, 15)),
    "left_foot": ((-25, 25), (-5, 5), (-5, 5)),
    "neck": ((-30, 35), (-35, 35), (-20, 20)),
    "left_collar": ((-15, 15), (-25, 15), (-10, 30)),
    "head": ((-30, 40), (-45, 45), (-20, 20)),
    "left_shoulder": ((-150, 150), (-115, 60), (-90, 100)),  # x: twist from the T-pose, palm down
    "left_elbow": ((-70, 70), (-150, 0), (-5, 5)),
    "left_wrist": ((-40, 40), (-30, 30), (-60, 60)),
    "left_hand": ((-20, 20), (-20, 20), (-30, 30)),
}


def _limits_table() -> np.ndarray:
    """(24, 3, 2) min/max degrees per joint and angle, right side mirrored from the left."""
    table = np.zeros((NUM_JOINTS, 3, 2))
    for name, rows in JOINT_LIMITS_DEG.items():
        table[J[name]] = rows
        if name.startswith("left_"):
            (xl, xh), (yl, yh), (zl, zh) = rows
            table[J[name.replace("left_", "right_")]] = ((xl, xh), (-yh, -yl), (-zh, -zl))
    return table


LIMITS = _limits_table()


# --- angles ↔ rotations ---------------------------------------------------------------------------------

def angles_to_rotmat(angles_deg: np.ndarray) -> np.ndarray:
    """(..., 3) degrees (x, y, z) → (..., 3, 3) rotation Ry(y) · Rz(z) · Rx(x) (``smpl_rig.rotations``)."""
    return rot.angles_xyz_deg_to_rotmat_yzx(angles_deg)


def mirror_angles(angles_deg: np.ndarray) -> np.ndarray:
    """Mirror (..., 24, 3) joint angles across the body's midplane: swap left/right, negate y and z."""
    out = np.asarray(angles_deg)[..., list(MIRROR), :].copy()
    out[..., 1:] *= -1
    return out


def mirror_pose(rotvec: np.ndarray) -> np.ndarray:
    """Mirror an axis-angle pose (..., 24, 3) across the body's midplane (x = 0): left and right joints swap
    and the y and z components of every axis-angle are negated (M·R·M with M = diag(−1, 1, 1))."""
    rotvec = np.asarray(rotvec)
    if rotvec.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"expected an axis-angle pose (..., 24, 3), got shape {rotvec.shape}")
    return rot.rotvec_mirror_x(rotvec[..., list(MIRROR), :])


def fk_joints(rotmats: np.ndarray, rest_joints: np.ndarray = REST_JOINTS) -> np.ndarray:
    """Joint positions (..., 24, 3) of local rotations (..., 24, 3, 3) on the reference skeleton."""
    return forward_kinematics(rest_joints, rotmats).joints


# --- per-body-part recipes (left-side convention) -------------------------------------------------------

def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _arm_twist_for_bend(elevation: float, azimuth: float, bend_dir) -> float:
    """Twist (degrees) about the upper arm that makes the elbow fold toward ``bend_dir`` (torso frame).

    The upper arm is Ry(−azimuth)·Rz(elevation) applied to +X; with twist τ the forearm folds toward
    cos τ·e_z − sin τ·e_y, e_* being the untwisted upper-arm frame's axes.
    """
    frame = rot.rotmat_y(math.radians(-azimuth)) @ rot.rotmat_z(math.radians(elevation))
    v = np.asarray(bend_dir, dtype=np.float64)
    return math.degrees(math.atan2(-float(v @ frame[:, 1]), float(v @ frame[:, 2])))


@dataclass
class ArmRecipe:
    """Ranges for one left arm: elevation, azimuth (+ forward), bend direction (torso frame: +X outward,
    +Y up, +Z forward), elbow flexion, collar elevation and protraction, all degrees."""
    elevation: tuple
    azimuth: tuple
    bend_dir: tuple
    flexion: tuple
    collar_elevation: tuple = (0, 4)
    collar_protraction: tuple = (0, 5)


ARM_RECIPES = {
    "down": ArmRecipe((-82, -68), (-5, 15), (0, 0, 1), (0, 25)),
    "forward": ArmRecipe((-8, 10), (78, 95), (-0.6, 0.5, 0), (0, 15), collar_protraction=(5, 12)),
    "sideways": ArmRecipe((-8, 8), (-8, 10), (0, 0, 1), (0, 12)),
    "up": ArmRecipe((62, 78), (0, 25), (-0.3, 0, 1), (0, 20), collar_elevation=(14, 24)),
    "v_up": ArmRecipe((25, 40), (-5, 20), (0, 0, 1), (0, 15), collar_elevation=(8, 14)),
    "reaching": ArmRecipe((20, 40), (60, 85), (-0.3, 0.5, 0), (0, 10), (5, 12), (8, 15)),
    "on_hip": ArmRecipe((-52, -40), (-35, -15), (-1, -0.4, 0.7), (95, 120)),
    # Crossed arms: upper arms hang forward under the shoulders, forearms fold across the chest; one arm
    # rides higher so the forearms stack instead of passing through each other.
    "crossed": ArmRecipe((-40, -34), (84, 96), (-1, 0.1, 0.15), (95, 110), collar_protraction=(5, 10)),
    "crossed_low": ArmRecipe((-64, -58), (84, 96), (-1, 0.1, 0.25), (90, 105), collar_protraction=(5, 10)),
    "waving": ArmRecipe((-5, 20), (0, 30), (0, 1, 0), (60, 100)),
    "behind_head": ArmRecipe((25, 45), (-25, -5), (-0.6, 1, -0.3), (125, 145), collar_elevation=(5, 12)),
    "pointing": ArmRecipe((-5, 12), (80, 100), (0, 1, 0), (0, 5), collar_protraction=(5, 12)),
    "to_face": ArmRecipe((-55, -45), (70, 85), (-0.6, 1, 0), (128, 140)),
    "praying": ArmRecipe((-62, -55), (80, 88), (-0.7, 0.7, 0.7), (80, 90)),
    "behind_back": ArmRecipe((-76, -67), (-45, -22), (-1, -0.5, -0.5), (50, 62)),
    "front_bent": ArmRecipe((-65, -45), (55, 80), (0, 0, 1), (60, 95)),
    "flexing": ArmRecipe((-5, 15), (-5, 15), (0, 1, 0), (100, 130)),
}

# Arm pairs: name → (left recipe, right recipe); "_left"/"_right" variants put the first recipe on that
# side. Weights steer the mix toward everyday poses.
ARM_PAIRS = {
    "both_down": ("down", "down", 8), "both_forward": ("forward", "forward", 3),
    "t_pose": ("sideways", "sideways", 3), "both_up": ("up", "up", 4), "v_up": ("v_up", "v_up", 3),
    "crossed": ("crossed", "crossed_low", 3), "hands_on_hips": ("on_hip", "on_hip", 3),
    "behind_head": ("behind_head", "behind_head", 3), "praying": ("praying", "praying", 2),
    "behind_back": ("behind_back", "behind_back", 2), "front_bent": ("front_bent", "front_bent", 2),
    "flexing": ("flexing", "flexing", 2), "reaching": ("reaching", "reaching", 2),
}
ONE_ARM = {  # name → (active recipe, other recipe, weight); expanded to name_left / name_right
    "waving": ("waving", "down", 3), "pointing": ("pointing", "down", 3), "thinking": ("to_face", "down", 2),
    "one_up": ("up", "down", 3), "hand_on_hip": ("on_hip", "down", 2), "reach": ("reaching", "down", 2),
    "one_sideways": ("sideways", "down", 1), "one_forward": ("forward", "down", 1),
}
MIXABLE_ARMS = ("down", "forward", "sideways", "up", "v_up", "on_hip", "waving", "pointing", "reaching",
                "behind_head", "front_bent", "behind_back")


def arm_pair_names() -> list[str]:
    names = list(ARM_PAIRS)
    for name in ONE_ARM:
        names += [f"{name}_left", f"{name}_right"]
    return names + ["mixed"]


def resolve_arm_pair(name: str, rng) -> tuple[str, str]:
    """(left recipe, right recipe) for an arm-pair name."""
    if name in ARM_PAIRS:
        left, right = ARM_PAIRS[name][:2]
        return (left, right) if left == right or rng.random() < 0.5 else (right, left)
    for base, (active, other, _) in ONE_ARM.items():
        if name == f"{base}_left":
            return active, other
        if name == f"{base}_right":
            return other, active
    if name == "mixed":
        a, b = rng.choice(len(MIXABLE_ARMS), size=2, replace=False)
        return MIXABLE_ARMS[a], MIXABLE_ARMS[b]
    raise ValueError(f"unknown arm configuration {name!r}; expected one of {arm_pair_names()}")


def sample_arm(recipe_name: str, rng) -> dict:
    """Left-convention angles of one arm: {joint suffix: (x, y, z) degrees} plus its elbow flexion."""
    r = ARM_RECIPES[recipe_name]
    el, az, flex = _u(rng, *r.elevation), _u(rng, *r.azimuth), _u(rng, *r.flexion)
    bend = np.asarray(r.bend_dir, dtype=np.float64) + rng.normal(0, 0.12, 3)
    twist = _arm_twist_for_bend(el, az, bend)
    return {
        "collar": (_u(rng, -4, 4), -_u(rng, *r.collar_protraction), _u(rng, *r.collar_elevation)),
        "shoulder": (twist, -az, el),
        # Forearm twist and wrist angles: small natural variation, since no caption or view can tell them.
        "elbow": (_u(rng, -12, 12), -flex, 0.0),
        "wrist": (_u(rng, -10, 10), _u(rng, -8, 8), _u(rng, -12, 12)),
        "hand": (0.0, 0.0, _u(rng, -5, 5)),
        "flexion": flex,
    }


@dataclass
class LegRecipe:
    """One leg (left convention): hip flexion, abduction and rotation, knee flexion, ankle ('flat' keeps
    the sole parallel to the floor) — degrees."""
    flexion: tuple
    knee: tuple
    abduction: tuple = (0, 6)
    rotation: tuple = (-5, 15)
    ankle: tuple | str = "flat"
    knee_from_flexion: bool = False  # the knee range is an offset from the hip flexion


LEG_RECIPES = {
    "stand": LegRecipe((-4, 6), (0, 8)),
    "wide": LegRecipe((-4, 6), (0, 12), abduction=(14, 24)),
    "step_front": LegRecipe((20, 35), (5, 20)),
    "step_back": LegRecipe((-20, -10), (5, 18), ankle=(-10, 15)),
    "lunge_front": LegRecipe((70, 90), (80, 100)),
    "lunge_back": LegRecipe((-35, -22), (0, 20), ankle=(-25, 0)),
    # The kneeling leg's shin slopes up behind the knee with the foot on its instep, so the knee is the
    # lowest point; the front leg's shin is near vertical, which puts its sole at the same floor.
    "kneel_down": LegRecipe((-5, 10), (100, 115), ankle=(40, 60)),
    "kneel_up": LegRecipe((101, 110), (-10, 0), knee_from_flexion=True),
    "sit": LegRecipe((80, 95), (75, 100), abduction=(0, 10)),
    "squat": LegRecipe((88, 100), (115, 135), abduction=(8, 18), rotation=(5, 20)),
    "crouch": LegRecipe((45, 65), (50, 80), abduction=(4, 12), rotation=(0, 15)),
    "raised": LegRecipe((60, 95), (60, 100), ankle=(0, 30)),
}

# Leg pairs: name → (left recipe, right recipe, weight, pelvis forward tilt range).
LEG_PAIRS = {
    "standing": ("stand", "stand", 10, (0, 0)), "wide_stance": ("wide", "wide", 3, (0, 0)),
    "kneeling_both": ("kneel_down", "kneel_down", 3, (0, 5)), "sitting": ("sit", "sit", 4, (0, 0)),
    "squatting": ("squat", "squat", 3, (20, 35)), "crouching": ("crouch", "crouch", 3, (10, 20)),
}
ONE_LEG = {  # expanded to name_left / name_right: the first recipe goes on that side
    "step": ("step_front", "step_back", 3, (0, 0)), "lunge": ("lunge_front", "lunge_back", 3, (0, 10)),
    "kneeling": ("kneel_down", "kneel_up", 3, (0, 5)), "raise": ("raised", "stand", 3, (0, 0)),
}


def leg_pair_names() -> list[str]:
    names = list(LEG_PAIRS)
    for name in ONE_LEG:
        names += [f"{name}_left", f"{name}_right"]
    return names


def resolve_leg_pair(name: str) -> tuple[str, str, tuple]:
    """(left recipe, right recipe, pelvis tilt range) for a leg-pair name."""
    if name in LEG_PAIRS:
        left, right, _, tilt = LEG_PAIRS[name]
        return left, right, tilt
    for base, (active, other, _, tilt) in ONE_LEG.items():
        if name == f"{base}_left":
            return active, other, tilt
        if name == f"{base}_right":
            return other, active, tilt
    raise ValueError(f"unknown leg configuration {name!r}; expected one of {leg_pair_names()}")


def sample_leg(recipe_name: str, rng, pelvis_tilt: float) -> dict:
    """Left-convention angles of one leg given the pelvis forward tilt (degrees)."""
    r = LEG_RECIPES[recipe_name]
    flex, knee = _u(rng, *r.flexion), _u(rng, *r.knee)
    if r.knee_from_flexion:
        knee += flex
    if r.ankle == "flat":  # shank pitch in the world is tilt − flexion + knee; the ankle undoes it
        ankle = float(np.clip(-(pelvis_tilt - flex + knee) + rng.uniform(-5, 5), -38, 55))
    else:
        ankle = _u(rng, *r.ankle)
    return {
        "hip": (-flex, _u(rng, *r.rotation), _u(rng, *r.abduction)),
        "knee": (knee, 0.0, 0.0),
        "ankle": (ankle, _u(rng, -8, 8), _u(rng, -6, 6)),
        "foot": (_u(rng, -10, 10), 0.0, 0.0),
        "flexion": flex, "knee_flexion": knee,
    }


TORSO_LEANS = {"none": 10, "forward": 3, "back": 2, "left": 1.5, "right": 1.5}
SPINE_SHARE = {"spine1": 0.4, "spine2": 0.3, "spine3": 0.3}


# --- collision check ------------------------------------------------------------------------------------

# Capsules: name → (start joint, end joint, radius m, extension of the end beyond the joint as a fraction).
CAPSULES = {
    "torso": ("pelvis", "neck", 0.11, 0.0), "head": ("head", "head", 0.10, 0.0),
    "l_upper": ("left_shoulder", "left_elbow", 0.045, 0.0), "r_upper": ("right_shoulder", "right_elbow", 0.045, 0.0),
    "l_fore": ("left_elbow", "left_wrist", 0.04, 0.0), "r_fore": ("right_elbow", "right_wrist", 0.04, 0.0),
    "l_hand": ("left_wrist", "left_hand", 0.035, 0.6), "r_hand": ("right_wrist", "right_hand", 0.035, 0.6),
    "l_thigh": ("left_hip", "left_knee", 0.07, 0.0), "r_thigh": ("right_hip", "right_knee", 0.07, 0.0),
    "l_shank": ("left_knee", "left_ankle", 0.05, 0.0), "r_shank": ("right_knee", "right_ankle", 0.05, 0.0),
}
# Pairs that must not interpenetrate by more than the allowance (contacts such as a hand on the hip are fine).
COLLISION_PAIRS = [
    ("l_fore", "torso"), ("r_fore", "torso"), ("l_hand", "torso"), ("r_hand", "torso"),
    ("l_fore", "r_fore"), ("l_fore", "head"), ("r_fore", "head"),
    ("l_hand", "head"), ("r_hand", "head"), ("l_upper", "head"), ("r_upper", "head"),
    ("l_hand", "l_thigh"), ("l_hand", "r_thigh"), ("r_hand", "l_thigh"), ("r_hand", "r_thigh"),
    ("l_fore", "l_thigh"), ("r_fore", "r_thigh"),
    ("l_thigh", "r_thigh"), ("l_shank", "r_shank"), ("l_shank", "r_thigh"), ("r_shank", "l_thigh"),
]
PENETRATION_ALLOWANCE = 0.045  # metres of capsule overlap accepted as contact
# Hands rest on the hips or behind the head by design, and the torso capsule is narrower than real hips.
CONTACT_ALLOWANCE = {("l_hand", "torso"): 0.08, ("r_hand", "torso"): 0.08, ("l_hand", "head"): 0.07,
                     ("r_hand", "head"): 0.07}


def capsule_segments(joints: np.ndarray) -> dict:
    """name → (start (3,), end (3,), radius) for the capsules of posed joints (24, 3)."""
    out = {}
    for name, (a, b, radius, ext) in CAPSULES.items():
        p, q = joints[J[a]], joints[J[b]]
        if name == "head":  # a sphere a little above the head joint
            p = q = joints[J["head"]] + 0.06 * (joints[J["head"]] - joints[J["neck"]]) / 0.1
        out[name] = (p, q + ext * (q - p), radius)
    return out


def segment_distance(p1, q1, p2, q2) -> np.ndarray:
    """Shortest distance between segments p1–q1 and p2–q2, points (..., 3) → (...); degenerate segments
    (points) included. Closest points by clamped line parameters, in the manner of Ericson's
    Real-Time Collision Detection, §5.1.9."""
    p1, q1, p2, q2 = (np.asarray(x, dtype=np.float64) for x in (p1, q1, p2, q2))
    d1, d2, r = q1 - p1, q2 - p2, p1 - p2
    a, e = (d1 * d1).sum(-1), (d2 * d2).sum(-1)
    b, c, f = (d1 * d2).sum(-1), (d1 * r).sum(-1), (d2 * r).sum(-1)
    eps = 1e-12
    safe_a, safe_e = np.maximum(a, eps), np.maximum(e, eps)
    denom = a * e - b * b
    s = np.where(denom > eps, np.clip((b * f - c * e) / np.maximum(denom, eps), 0, 1), 0.0)
    t = (b * s + f) / safe_e
    s = np.where(t < 0, np.clip(-c / safe_a, 0, 1), np.where(t > 1, np.clip((b - c) / safe_a, 0, 1), s))
    t = np.clip(t, 0, 1)
    s = np.where(a < eps, 0.0, s)                                   # first segment is a point
    t = np.where(a < eps, np.clip(f / safe_e, 0, 1), t)
    t = np.where(e < eps, 0.0, t)                                   # second segment is a point
    s = np.where((e < eps) & (a >= eps), np.clip(-c / safe_a, 0, 1), s)
    return np.linalg.norm((p1 + d1 * s[..., None]) - (p2 + d2 * t[..., None]), axis=-1)


_PAIR_A = [a for a, _ in COLLISION_PAIRS]
_PAIR_B = [b for _, b in COLLISION_PAIRS]
_PAIR_ALLOWANCE = np.array([CONTACT_ALLOWANCE.get(pair, 0.0) for pair in COLLISION_PAIRS])


def worst_penetration(joints: np.ndarray) -> tuple[float, tuple[str, str]]:
    """Largest capsule overlap beyond what the pair may touch (metres, ≤ 0 when acceptable: a hand may
    press into the torso capsule by ``CONTACT_ALLOWANCE`` more than two forearms) over
    ``COLLISION_PAIRS``, and the pair."""
    caps = capsule_segments(joints)
    pa, qa, ra = (np.array([caps[n][k] for n in _PAIR_A]) for k in range(3))
    pb, qb, rb = (np.array([caps[n][k] for n in _PAIR_B]) for k in range(3))
    overlap = ra + rb - segment_distance(pa, qa, pb, qb) - _PAIR_ALLOWANCE
    i = int(np.argmax(overlap))
    return float(overlap[i]), COLLISION_PAIRS[i]


# --- the pose -------------------------------------------------------------------------------------------

@dataclass
class GeneratedPose:
    """One generated pose.

    angles_deg:  (24, 3) the (x, y, z) angles per joint (joint 0: global orientation in the SMPL frame).
    rotvec:      (24, 3) float32 axis-angle, SMPL frame (joint 0 = SMPL-frame global orientation).
    rotmat:      (24, 3, 3) float64 local rotations, SMPL frame.
    global_orient_smpl:   (3, 3) = rotmat[0].
    global_orient_camera: (3, 3) the text-to-pose target for joint 0 (yaw removed, camera frame).
    joints:      (24, 3) FK joint positions on ``REST_JOINTS`` with the lowest contact on the floor y = 0.
    label:       the configuration chosen per body part, with degrees (for tests, never for captions).
    """
    angles_deg: np.ndarray
    rotvec: np.ndarray
    rotmat: np.ndarray
    global_orient_smpl: np.ndarray
    global_orient_camera: np.ndarray
    joints: np.ndarray
    label: dict = field(default_factory=dict)


def floor_height(joints: np.ndarray) -> float:
    """Height of the floor under posed joints (..., 24, 3): the lowest foot, ankle or knee contact."""
    cands = [joints[..., J[f"{s}_{part}"], 1] - FLOOR_CLEARANCE[part]
             for s in ("left", "right") for part in ("foot", "ankle", "knee")]
    return np.min(np.stack(cands, -1), -1)


def within_limits(angles_deg: np.ndarray, slack: float = 1e-6) -> np.ndarray:
    """(..., 24, 3) angles → (..., 24, 3) booleans, True where the angle respects ``LIMITS``."""
    a = np.asarray(angles_deg)
    return (a >= LIMITS[..., 0] - slack) & (a <= LIMITS[..., 1] + slack)


def pose_from_angles(angles_deg: np.ndarray, label: dict | None = None) -> GeneratedPose:
    """Build every representation of a pose from its (24, 3) angles."""
    angles_deg = np.asarray(angles_deg, dtype=np.float64)
    if angles_deg.shape != (NUM_JOINTS, 3):
        raise ValueError(f"expected (24, 3) angles in degrees, got shape {angles_deg.shape}")
    rotmat = angles_to_rotmat(angles_deg)
    joints = fk_joints(rotmat)
    joints = joints - np.array([0.0, floor_height(joints), 0.0])
    return GeneratedPose(
        angles_deg=angles_deg, rotvec=rot.rotmat_to_rotvec(rotmat).astype(np.float32), rotmat=rotmat,
        global_orient_smpl=rotmat[0].copy(), global_orient_camera=frames.canonical_camera_orient(rotmat[0]),
        joints=joints, label=dict(label or {}))


def _swap_side_words(value):
    if isinstance(value, str):
        return (value.replace("left", "\0").replace("right", "left").replace("\0", "right"))
    return value


def mirror_label(label: dict) -> dict:
    """The label of the mirrored pose: left/right names swap, signed left-positive degrees flip sign."""
    out = {}
    for key, value in label.items():
        new_key = _swap_side_words(key)
        new_value = _swap_side_words(value)
        if key in SIGNED_LABEL_KEYS:
            new_value = -value
        out[new_key] = new_value
    return out


SIGNED_LABEL_KEYS = ("torso_side_deg", "torso_twist_deg", "head_turn_deg", "head_tilt_deg", "yaw_deg", "roll_deg")


def mirror(pose: GeneratedPose) -> GeneratedPose:
    """The left/right mirror image of a generated pose, label included."""
    return pose_from_angles(mirror_angles(pose.angles_deg), mirror_label(pose.label))


# --- the generator --------------------------------------------------------------------------------------

def _weighted_choice(rng, options: dict) -> str:
    names = list(options)
    w = np.array([options[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def _arm_weights() -> dict:
    w = {name: spec[2] for name, spec in ARM_PAIRS.items()}
    for name, spec in ONE_ARM.items():
        w[f"{name}_left"] = w[f"{name}_right"] = spec[2] / 2
    w["mixed"] = 4
    return w


def _leg_weights() -> dict:
    w = {name: spec[2] for name, spec in LEG_PAIRS.items()}
    for name, spec in ONE_LEG.items():
        w[f"{name}_left"] = w[f"{name}_right"] = spec[2] / 2
    return w


ARM_WEIGHTS, LEG_WEIGHTS = _arm_weights(), _leg_weights()


@dataclass
class PoseFamily:
    """Constraints for a family of poses (used by speculative prompts): allowed arm and leg configurations
    (None = any), torso lean choices with an optional degree range, head nod/turn ranges (degrees)."""
    arms: tuple | None = None
    legs: tuple | None = None
    lean: tuple | None = None
    lean_deg: tuple | None = None
    twist_deg: tuple | None = None
    head_nod: tuple | None = None
    head_turn: tuple | None = None
    head_tilt: tuple | None = None


class PoseGenerator:
    """Deterministic random poses: ``PoseGenerator(seed).sample(family=None)`` → ``GeneratedPose``."""

    MAX_TRIES = 40

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def sample(self, family: PoseFamily | None = None, arms: str | None = None,
               legs: str | None = None) -> GeneratedPose:
        """A pose whose limbs do not interpenetrate (capsule check); resamples the details first, then the
        configuration, when one does."""
        family = family or PoseFamily()
        for attempt in range(self.MAX_TRIES):
            arm_name = arms or self._pick(family.arms, ARM_WEIGHTS)
            leg_name = legs or self._pick(family.legs, LEG_WEIGHTS)
            for _ in range(8):
                pose = self._build(arm_name, leg_name, family)
                overlap, pair = worst_penetration(pose.joints)
                if overlap <= PENETRATION_ALLOWANCE:
                    return pose
        raise RuntimeError(f"no collision-free pose for arms={arm_name} legs={leg_name} (last: {pair})")

    def _pick(self, allowed, weights: dict) -> str:
        if allowed:
            return str(allowed[int(self.rng.integers(len(allowed)))])
        return _weighted_choice(self.rng, weights)

    def _build(self, arm_name: str, leg_name: str, family: PoseFamily) -> GeneratedPose:
        rng = self.rng
        a = np.zeros((NUM_JOINTS, 3))
        label = {"arms": arm_name, "legs": leg_name}

        # Arms: each side sampled in the left convention; the right one is mirrored into place.
        left_recipe, right_recipe = resolve_arm_pair(arm_name, rng)
        label["left_arm"], label["right_arm"] = left_recipe, right_recipe
        for side, recipe in (("left", left_recipe), ("right", right_recipe)):
            arm = sample_arm(recipe, rng)
            label[f"{side}_elbow_deg"] = round(arm["flexion"], 1)
            for part in ("collar", "shoulder", "elbow", "wrist", "hand"):
                x, y, z = arm[part]
                a[J[f"{side}_{part}"]] = (x, y, z) if side == "left" else (x, -y, -z)

        # Legs, with the pelvis tilt the configuration needs (a squat leans the hips forward).
        left_leg, right_leg, tilt_range = resolve_leg_pair(leg_name)
        tilt = _u(rng, *tilt_range)
        label["left_leg"], label["right_leg"] = left_leg, right_leg
        for side, recipe in (("left", left_leg), ("right", right_leg)):
            leg = sample_leg(recipe, rng, tilt)
            label[f"{side}_knee_deg"] = round(leg["knee_flexion"], 1)
            label[f"{side}_hip_flexion_deg"] = round(leg["flexion"], 1)
            for part in ("hip", "knee", "ankle", "foot"):
                x, y, z = leg[part]
                a[J[f"{side}_{part}"]] = (x, y, z) if side == "left" else (x, -y, -z)

        # Torso: one lean direction spread over the three spine joints, plus a twist.
        lean = self._pick(family.lean, TORSO_LEANS)
        pitch = side_bend = 0.0
        if lean == "forward":
            pitch = _u(rng, *(family.lean_deg or (15, 40)))
        elif lean == "back":
            pitch = -_u(rng, *(family.lean_deg or (12, 25)))
        elif lean in ("left", "right"):
            side_bend = _u(rng, *(family.lean_deg or (12, 25))) * (1 if lean == "left" else -1)
        else:
            pitch = _u(rng, -5, 5)
        if family.twist_deg is not None:
            twist = _u(rng, *family.twist_deg) * rng.choice([-1, 1])
        else:
            twist = _u(rng, -30, 30) if rng.random() < 0.3 else _u(rng, -6, 6)
        for name, share in SPINE_SHARE.items():
            a[J[name]] = (pitch * share, twist * share, -side_bend * share)
        label.update(torso_lean=lean, torso_pitch_deg=round(pitch + tilt, 1), torso_side_deg=round(side_bend, 1),
                     torso_twist_deg=round(twist, 1))

        # Head: turn, nod, tilt split between neck (40 %) and head (60 %).
        turn = _u(rng, *family.head_turn) if family.head_turn else (
            _u(rng, -60, 60) if rng.random() < 0.4 else _u(rng, -8, 8))
        nod = _u(rng, *family.head_nod) if family.head_nod else (
            _u(rng, -30, 40) if rng.random() < 0.3 else _u(rng, -6, 6))
        tilt_head = _u(rng, *family.head_tilt) if family.head_tilt else (
            _u(rng, -20, 20) if rng.random() < 0.25 else _u(rng, -4, 4))
        a[J["neck"]] = (0.4 * nod, 0.4 * turn, -0.4 * tilt_head)
        a[J["head"]] = (0.6 * nod, 0.6 * turn, -0.6 * tilt_head)
        label.update(head_turn_deg=round(turn, 1), head_nod_deg=round(nod, 1), head_tilt_deg=round(tilt_head, 1))

        # Global orientation: mostly facing the viewer, sometimes turned away or leaning.
        yaw = _u(rng, -20, 20) if rng.random() < 0.8 else _u(rng, -180, 180)
        extra_pitch, roll = (_u(rng, -12, 12), _u(rng, -10, 10)) if rng.random() < 0.15 else (0.0, 0.0)
        a[0] = (tilt + extra_pitch, yaw, roll)
        label.update(yaw_deg=round(yaw, 1), global_pitch_deg=round(tilt + extra_pitch, 1), roll_deg=round(roll, 1))
        label["torso_pitch_deg"] = round(pitch + tilt + extra_pitch, 1)

        return pose_from_angles(np.clip(a, LIMITS[..., 0], LIMITS[..., 1]), label)


def generate(n: int, seed: int = 0, family: PoseFamily | None = None) -> list[GeneratedPose]:
    """``n`` poses from ``PoseGenerator(seed)``."""
    gen = PoseGenerator(seed)
    return [gen.sample(family) for _ in range(n)]


__all__ = [
    "REST_JOINTS", "JOINT_LIMITS_DEG", "LIMITS", "ARM_RECIPES", "LEG_RECIPES", "GeneratedPose", "PoseFamily",
    "PoseGenerator", "generate", "angles_to_rotmat", "mirror_angles", "mirror_pose", "mirror", "mirror_label",
    "fk_joints", "floor_height", "within_limits", "worst_penetration", "segment_distance", "pose_from_angles",
    "arm_pair_names", "leg_pair_names", "JOINT_NAMES",
]
