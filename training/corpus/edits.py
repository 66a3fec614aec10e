"""Edit turns: change one part of a pose ("now raise the left arm", "bend the knees more", "mirror it").

``edit_pose(rotvec, rng, kind)`` changes the local rotations of the named joints by a clearly visible
amount (30–70° drawn, clamped to the generator's ``JOINT_LIMITS_DEG`` so the body stays plausible), copies
every other joint's rotation unchanged, and checks with forward kinematics (``captioner.measure``) that
the result does what the instruction says: a raised left wrist is higher, a head turned to the right faces
the body's right. Edits that do not apply (an arm already straight up, a straight knee straightened)
return None. "left"/"right" are the body's own (shared/docs/conventions.md).

Angles are the generator's (x, y, z) per joint, R = Ry(y)·Rz(z)·Rx(x); a right-side joint's y and z
limits are the left's mirrored, so edits are written for the left side and mirrored for the right.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import numpy as np

from smpl_rig import frames
from smpl_rig import rotations as rot
from smpl_rig.skeleton import JOINT_INDEX as J

from .captioner import SIDES, Measures, measure
from .generator import LIMITS, mirror_pose

DELTA_DEG = (30.0, 70.0)      # the drawn size of an edit, before the joint limits clamp it
MIN_HEIGHT_M = 0.08           # a raised/lowered hand or knee moves at least this much
MIN_ANGLE_DEG = 15.0          # a bent/straightened joint or a turned head changes at least this much
MIN_MIRROR_DEG = 15.0         # mirroring an almost symmetric pose shows nothing


@dataclass(frozen=True)
class Edit:
    """One edit turn: its kind, the user's instruction, the edited pose (24, 3) float32 axis-angle in the
    SMPL frame (as the corpus' poses.npz rotvec) and the joints it changed (skeleton order); every other
    joint's rotation is bit-identical to the input's."""
    kind: str
    instruction: str
    rotvec: np.ndarray
    changed: tuple[int, ...]


@dataclass(frozen=True)
class _Spec:
    """A left-side (or unsided) edit: (joint, angle axis 0/1/2, share of the drawn amount with its sign).
    For right-side limb joints the sign is anatomical (the generator's mirrored y/z convention)."""
    moves: tuple
    check: Callable[[Measures, Measures, str], bool]
    phrases: tuple


def _higher(joint: str, sign: float = 1.0):
    return lambda a, b, s: sign * (b.pos[joint.format(s=s)][1] - a.pos[joint.format(s=s)][1]) >= MIN_HEIGHT_M


def _flexes(kind: str, sign: float, sides=None):
    def check(a, b, s):
        table_a, table_b = getattr(a, kind), getattr(b, kind)
        which = sides or (s,)
        return all(sign * (table_b[x] - table_a[x]) >= MIN_ANGLE_DEG for x in which)
    return check


def _grows(attr: str, sign: float, sided: bool = False):
    """``attr`` of the measures moves by MIN_ANGLE_DEG toward ``sign`` (sided: + is the body's left)."""
    def check(a, b, s):
        d = sign * (getattr(b, attr) - getattr(a, attr))
        return (d if not sided or s == "left" else -d) >= MIN_ANGLE_DEG
    return check


def _feet_apart(a, b, s):
    width = lambda m: m.pos["left_ankle"][0] - m.pos["right_ankle"][0]  # noqa: E731
    return width(b) - width(a) >= 0.12


_SPECS = {
    "raise_arm": _Spec((("left_shoulder", 2, 1.0),), _higher("{s}_wrist"), (
        "Now raise the {side} arm higher.", "Lift the {side} arm up more.", "Raise {poss} {side} hand higher.",
        "{side} arm higher", "Put the {side} arm up higher.", "Move the {side} hand up.", "{side} hand up more",
        "Can you lift the {side} arm a bit higher?")),
    "lower_arm": _Spec((("left_shoulder", 2, -1.0),), _higher("{s}_wrist", -1.0), (
        "Now lower the {side} arm.", "Bring the {side} arm down a bit.", "Drop {poss} {side} hand lower.",
        "{side} arm lower", "Put the {side} arm down more.", "Move the {side} hand down.")),
    "bend_elbow": _Spec((("left_elbow", 1, -1.0),), _flexes("elbow_flexion", 1.0), (
        "Bend the {side} elbow more.", "Now bend {poss} {side} arm at the elbow.", "{side} elbow more bent",
        "Fold the {side} forearm in more.", "bend the {side} arm")),
    "straighten_elbow": _Spec((("left_elbow", 1, 1.0),), _flexes("elbow_flexion", -1.0), (
        "Straighten the {side} arm.", "Now stretch out {poss} {side} arm.", "{side} arm straighter",
        "Unbend the {side} elbow.", "straighten the {side} elbow a bit")),
    "raise_knee": _Spec((("left_hip", 0, -1.0), ("left_knee", 0, 0.8)), _higher("{s}_knee"), (
        "Lift the {side} knee.", "Now raise {poss} {side} leg.", "{side} knee up", "Bring the {side} knee up higher.",
        "raise the {side} knee more")),
    "bend_knees": _Spec((("left_knee", 0, 1.0), ("right_knee", 0, 1.0), ("left_hip", 0, -0.5), ("right_hip", 0, -0.5)),
                        _flexes("knee_flexion", 1.0, SIDES), (
        "Bend the knees more.", "Now bend {poss} knees.", "knees more bent", "Sink a bit lower, bending the knees.",
        "bend the legs more", "More bend in the knees.")),
    "straighten_legs": _Spec((("left_knee", 0, -1.0), ("right_knee", 0, -1.0)), _flexes("knee_flexion", -1.0, SIDES), (
        "Straighten the legs.", "Now straighten {poss} knees.", "legs straighter", "Stretch the legs out straight.",
        "unbend the knees")),
    "spread_legs": _Spec((("left_hip", 2, 0.5), ("right_hip", 2, 0.5)), _feet_apart, (
        "Spread the legs wider.", "Now put {poss} feet further apart.", "feet wider apart", "Widen the stance.",
        "legs apart more")),
    "turn_head": _Spec((("neck", 1, 0.4), ("head", 1, 0.6)), _grows("head_turn", 1.0, sided=True), (
        "Turn the head to the {side}.", "Now look to {poss} {side}.", "head to the {side}", "look {side}",
        "Have {obj} look over to the {side}.", "Turn {poss} face toward the {side}.")),
    "nod_head": _Spec((("neck", 0, 0.4), ("head", 0, 0.6)), _grows("head_nod", 1.0), (
        "Tilt the head down.", "Now look down.", "head down", "Lower {poss} chin.", "Have {obj} look at the floor.")),
    "raise_head": _Spec((("neck", 0, -0.4), ("head", 0, -0.6)), _grows("head_nod", -1.0), (
        "Tilt the head back.", "Now look up.", "head up", "Raise {poss} chin.", "Have {obj} look at the sky.")),
    "tilt_head": _Spec((("neck", 2, -0.5), ("head", 2, -0.5)), _grows("head_tilt", 1.0, sided=True), (
        "Tilt the head to the {side}.", "Now cock {poss} head toward the {side} shoulder.", "head tilted {side}",
        "Lean the head to the {side}.")),
    "lean_forward": _Spec((("spine1", 0, 1 / 3), ("spine2", 0, 1 / 3), ("spine3", 0, 1 / 3)),
                          _grows("torso_pitch", 1.0), (
        "Lean forward more.", "Now bend {poss} upper body forward.", "lean forward", "Bend over a bit more.",
        "more forward lean")),
    "lean_back": _Spec((("spine1", 0, -1 / 3), ("spine2", 0, -1 / 3), ("spine3", 0, -1 / 3)),
                       _grows("torso_pitch", -1.0), (
        "Lean back.", "Now arch {poss} back.", "lean back more", "Tip the upper body backward.")),
    "lean_side": _Spec((("spine1", 2, -1 / 3), ("spine2", 2, -1 / 3), ("spine3", 2, -1 / 3)),
                       _grows("torso_side", 1.0, sided=True), (
        "Lean to the {side}.", "Now bend {poss} upper body to the {side}.", "lean {side}", "Tilt the torso toward the {side}.")),
}
_SIDED = ("raise_arm", "lower_arm", "bend_elbow", "straighten_elbow", "raise_knee", "turn_head", "tilt_head", "lean_side")
MIRROR_PHRASES = ("Mirror it.", "mirror it", "Now mirror the pose.", "Flip it left to right.", "Swap left and right.",
                  "Do the same on the other side.", "mirror")
EDIT_KINDS: tuple[str, ...] = tuple(
    k2 for k in _SPECS for k2 in ((f"{k}_left", f"{k}_right") if k in _SIDED else (k,))) + ("mirror",)
_PERSONS = (("the", "them"), ("their", "them"))   # neutral: the chat's first turn may say he or she


def _angles(rotvec_row: np.ndarray, joint: int) -> np.ndarray:
    return rot.rotmat_to_angles_xyz_deg_yzx(rot.rotvec_to_rotmat(rotvec_row.astype(np.float64)), LIMITS[joint])


def _moves_for(spec: _Spec, side: str):
    """Actual (joint index, axis, signed share) of a spec on one side."""
    out = []
    for name, axis, share in spec.moves:
        if side == "right":
            if name.startswith(("left_", "right_")):
                name = name.replace("left_", "@").replace("right_", "left_").replace("@", "right_")
            elif axis:
                share = -share           # unsided joint turned the other way
        if name.startswith("right_") and axis:
            share = -share               # right limbs' y/z angles are the left's mirrored
        out.append((J[name], axis, share))
    return out


def _instruction(spec_phrases: tuple, side: str, rng: random.Random) -> str:
    poss, obj = rng.choice(_PERSONS)
    text = rng.choice(spec_phrases).format(side=side, poss=poss, obj=obj)
    return text[:1].upper() + text[1:] if text[-1] in ".?" else text


def edit_pose(rotvec: np.ndarray, rng: random.Random, kind: str | None = None) -> Edit | None:
    """Edit a (24, 3) SMPL-frame axis-angle pose; ``kind`` from EDIT_KINDS or None to draw one with ``rng``.
    Returns None when the edit does not apply to this pose (no visible change within the joint limits)."""
    rotvec = np.asarray(rotvec, dtype=np.float32)
    if rotvec.shape != (24, 3):
        raise ValueError(f"expected an axis-angle pose (24, 3), got shape {rotvec.shape}")
    kind = kind or rng.choice(EDIT_KINDS)
    if kind not in EDIT_KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; expected one of {EDIT_KINDS}")
    before = rot.rotvec_to_rotmat(rotvec.astype(np.float64))
    if kind == "mirror":
        out = mirror_pose(rotvec).astype(np.float32)
        if np.max(np.degrees(rot.geodesic_angle(rot.rotvec_to_rotmat(out.astype(np.float64))[1:], before[1:]))) \
                < MIN_MIRROR_DEG:
            return None
        return Edit(kind, rng.choice(MIRROR_PHRASES), out, tuple(range(24)))
    base, _, side = kind.rpartition("_") if kind.rsplit("_", 1)[-1] in ("left", "right") else (kind, "", "")
    spec = _SPECS[base]
    delta = rng.uniform(*DELTA_DEG)
    out, changed = rotvec.copy(), set()
    angles = {}
    for j, axis, share in _moves_for(spec, side or "left"):
        a = angles.setdefault(j, _angles(rotvec[j], j))
        lo, hi = LIMITS[j, axis]
        step = share * delta
        # Clamp at the limit, but never pull an angle already past it (poses from other data) backward.
        new = min(a[axis] + step, max(hi, a[axis])) if step > 0 else max(a[axis] + step, min(lo, a[axis]))
        if abs(new - a[axis]) > 1e-3:
            a[axis] = new
            changed.add(j)
    for j in changed:
        out[j] = rot.rotmat_to_rotvec(rot.angles_xyz_deg_to_rotmat_yzx(angles[j])).astype(np.float32)
    if not changed or not spec.check(measure(before), measure(rot.rotvec_to_rotmat(out.astype(np.float64))),
                                     side or "left"):
        return None
    return Edit(kind, _instruction(spec.phrases, side, rng), out, tuple(sorted(changed)))


# --- targets in the text→pose convention ------------------------------------------------------------------

def text_target_rotmat(rotvec: np.ndarray) -> np.ndarray:
    """(24, 3, 3) float32 text→pose target of an SMPL-frame pose, as ``CorpusSample.text_target_rotmat``:
    joint 0 the canonical camera-frame orientation (yaw removed)."""
    r = rot.rotvec_to_rotmat(np.asarray(rotvec, dtype=np.float32))
    r[0] = frames.canonical_camera_orient(r[0].astype(np.float64)).astype(np.float32)
    return r


def target_to_rotvec(target_rotmat: np.ndarray) -> np.ndarray:
    """A text→pose target (joint 0 in the camera frame) back to an SMPL-frame (24, 3) pose edit_pose reads
    (yaw already removed, so the body faces the viewer)."""
    r = np.asarray(target_rotmat, dtype=np.float64).copy()
    r[0] = frames.camera_to_smpl_orient(r[0])
    return rot.rotmat_to_rotvec(r).astype(np.float32)


def edited_target(target_rotmat: np.ndarray, edit: Edit) -> np.ndarray:
    """The edited pose as a text→pose target: the changed joints from the edit (joint 0 canonicalised,
    so a mirrored body's orientation is mirrored too), the others the original target's, untouched."""
    out = np.asarray(target_rotmat, dtype=np.float32).copy()
    if edit.changed:
        idx = list(edit.changed)
        out[idx] = text_target_rotmat(edit.rotvec)[idx]
    return out
