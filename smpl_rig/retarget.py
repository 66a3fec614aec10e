"""Retargeting: SMPL poses onto any humanoid armature, as plain numpy (the rule; ``smpl_rig.blender_retarget``
is the thin Blender layer that reads the rig and writes the bones).

A rig is described by a ``RigMapping`` (which bone stands for which of the 24 SMPL joints) and by its rest
data in armature space. The rule, for SMPL local rotations R (SMPL model frame, conventions page):

1. Body frame F (3, 3): the rig's left, up and forward axes in armature space, measured from its rest
   joints and snapped to the nearest axis (characters are modelled axis-aligned). For an armature built
   by ``smpl_rig.blender`` F = C = Rx(+90°).
2. Rest alignment Q_j (24, 3, 3): the rotation (armature space) that turns the rig's rest segment of joint j
   (its joint → the next mapped joint) onto SMPL's T-pose segment expressed through F: the smallest swing
   for limbs, plus the left–right line for the pelvis and chest, whose children branch. A leaf (head,
   hands, toes) keeps its parent's Q. This is what absorbs A-poses, bent elbows, any bone roll and axis
   convention: only the rig's rest joint positions are read, never its bone axes.
3. Target orientation of the bone driven for joint j, armature space: P_j = F · G_j · Fᵀ · Q_j · B_j, with
   G_j the SMPL world rotation of joint j (forward kinematics of R) and B_j the bone's rest orientation.
   Every segment then points where SMPL's does: P_j B_jᵀ (rig segment) = F G_j (SMPL segment).
4. Pose-bone rotation: M_j = H_jᵀ P_j, where H_j is the orientation the bone would have with an identity
   pose-bone rotation, given its parent's pose (Blender: parent · parent_restⁱ · rest). Bones between two
   mapped bones (a fourth spine bone, a second neck bone) keep identity, so the chain moves rigidly and its
   end lands where SMPL's joint does.

For the SMPL armature itself (F = C, Q = I) this is exactly M = DᵀRD of ``smpl_rig.bones``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from . import rotations as rot
from .skeleton import CHILDREN, JOINT_INDEX, JOINT_NAMES, MIRROR, NUM_JOINTS, PARENTS, primary_child

__all__ = [
    "RigMapping", "CONVENTIONS", "detect_mapping", "mapping_problem", "mirror_fill", "body_frame",
    "rest_alignments", "world_rotations", "target_orientations", "mirror_rotmats", "next_mapped_joints",
    "mapped_segments", "segment_directions", "direction_angles_deg", "mapping_to_json", "mapping_from_json", "REQUIRED_JOINTS",
]

PRESET_FORMAT = "posegpt-rig-mapping"
PRESET_VERSION = 1
MIN_MAPPED_JOINTS = 14
# Without these a rig cannot show a body pose: the caller says so in one sentence and leaves the bones.
REQUIRED_JOINTS = ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_shoulder",
                   "right_shoulder", "left_elbow", "right_elbow")
_C = rot.rotmat_x(np.pi / 2)


# --- the mapping ------------------------------------------------------------------------------------------

@dataclass
class RigMapping:
    """Which bone of a rig stands for which SMPL joint.

    joints:     {SMPL joint name: bone name} for the mapped joints (the bones that get rotations).
    measure:    {SMPL joint name: bone name} where a joint's position is read when it is not the driven
                bone's head (a generated Rigify rig drives FK controls; its joints are its ``ORG-`` bones).
    root:       the bone whose location moves the whole body (floor contact, translation); default: the
                pelvis bone.
    reset:      bones set to identity rotation on every apply (controls between the driven ones).
    switches:   [(bone, property, value)]: custom properties set on apply (Rigify's IK/FK switches to FK).
    convention: the naming the mapping was detected from ("manual" when edited by hand).
    """
    joints: dict = field(default_factory=dict)
    measure: dict = field(default_factory=dict)
    root: str | None = None
    reset: tuple = ()
    switches: tuple = ()
    convention: str = "manual"

    @property
    def mapped_count(self) -> int:
        return len(self.joints)

    @property
    def missing(self) -> list[str]:
        return [name for name in JOINT_NAMES if name not in self.joints]

    def bone(self, joint: str) -> str | None:
        return self.joints.get(joint)

    def measure_bone(self, joint: str) -> str | None:
        return self.measure.get(joint, self.joints.get(joint))

    def root_bone(self) -> str | None:
        return self.root or self.joints.get("pelvis")

    def driven_bones(self) -> list[str]:
        """Every bone an apply writes: the mapped ones in joint order, then the reset ones."""
        bones = [self.joints[n] for n in JOINT_NAMES if n in self.joints]
        return bones + [b for b in self.reset if b not in bones]

    def to_dict(self) -> dict:
        return {"format": PRESET_FORMAT, "version": PRESET_VERSION, "convention": self.convention,
                "joints": dict(self.joints), "measure": dict(self.measure), "root": self.root,
                "reset": list(self.reset), "switches": [list(s) for s in self.switches]}

    @classmethod
    def from_dict(cls, data: dict) -> "RigMapping":
        if not isinstance(data, dict) or data.get("format") != PRESET_FORMAT:
            raise ValueError(f"not a rig mapping preset (expected format {PRESET_FORMAT!r})")
        joints = data.get("joints") or {}
        unknown = [k for k in joints if k not in JOINT_INDEX]
        if unknown:
            raise ValueError(f"the preset maps unknown SMPL joints {unknown}")
        if not all(isinstance(v, str) and v for v in joints.values()):
            raise ValueError("every mapped joint needs a bone name")
        switches = tuple((str(b), str(p), float(v)) for b, p, v in data.get("switches") or ())
        return cls(joints=dict(joints), measure=dict(data.get("measure") or {}), root=data.get("root") or None,
                   reset=tuple(data.get("reset") or ()), switches=switches,
                   convention=str(data.get("convention", "manual")))


def mapping_to_json(mapping: RigMapping) -> str:
    """A mapping as a JSON preset (what the add-on saves and stores on the armature)."""
    return json.dumps(mapping.to_dict(), indent=1, sort_keys=True)


def mapping_from_json(text: str) -> RigMapping:
    """Read what ``mapping_to_json`` wrote; ``ValueError`` saying why for anything else."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"the mapping preset is not JSON: {error}") from None
    return RigMapping.from_dict(data)


# Naming conventions: SMPL joint → candidate bone names, "{L}"/"{l}"/"{Left}" stand for the side spelled the
# convention's way. The first candidate found in the rig wins.
_SIDES = {
    "Left": ("Left", "Right"), "left": ("left", "right"), "L": ("L", "R"), "l": ("l", "r"),
}

CONVENTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "smpl": {
        "pelvis": ("pelvis", "Pelvis", "m_avg_Pelvis", "f_avg_Pelvis", "root"),
        "hip": ("{left}_hip", "{L}_Hip", "m_avg_{L}_Hip", "f_avg_{L}_Hip"),
        "spine1": ("spine1", "Spine1", "m_avg_Spine1", "f_avg_Spine1"),
        "knee": ("{left}_knee", "{L}_Knee", "m_avg_{L}_Knee", "f_avg_{L}_Knee"),
        "spine2": ("spine2", "Spine2", "m_avg_Spine2", "f_avg_Spine2"),
        "ankle": ("{left}_ankle", "{L}_Ankle", "m_avg_{L}_Ankle", "f_avg_{L}_Ankle"),
        "spine3": ("spine3", "Spine3", "m_avg_Spine3", "f_avg_Spine3"),
        "foot": ("{left}_foot", "{L}_Foot", "m_avg_{L}_Foot", "f_avg_{L}_Foot"),
        "neck": ("neck", "Neck", "m_avg_Neck", "f_avg_Neck"),
        "collar": ("{left}_collar", "{L}_Collar", "m_avg_{L}_Collar", "f_avg_{L}_Collar"),
        "head": ("head", "Head", "m_avg_Head", "f_avg_Head"),
        "shoulder": ("{left}_shoulder", "{L}_Shoulder", "m_avg_{L}_Shoulder", "f_avg_{L}_Shoulder"),
        "elbow": ("{left}_elbow", "{L}_Elbow", "m_avg_{L}_Elbow", "f_avg_{L}_Elbow"),
        "wrist": ("{left}_wrist", "{L}_Wrist", "m_avg_{L}_Wrist", "f_avg_{L}_Wrist"),
        "hand": ("{left}_hand", "{L}_Hand", "m_avg_{L}_Hand", "f_avg_{L}_Hand", "{left}_middle1", "{left}_index1"),
    },
    "mixamo": {
        "pelvis": ("Hips",), "hip": ("{Left}UpLeg",), "knee": ("{Left}Leg",), "ankle": ("{Left}Foot",),
        "foot": ("{Left}ToeBase",), "spine1": ("Spine",), "spine2": ("Spine1",), "spine3": ("Spine2",),
        "neck": ("Neck",), "head": ("Head",), "collar": ("{Left}Shoulder",), "shoulder": ("{Left}Arm",),
        "elbow": ("{Left}ForeArm",), "wrist": ("{Left}Hand",),
        "hand": ("{Left}HandMiddle1", "{Left}HandIndex1", "{Left}HandRing1"),
    },
    "rigify_metarig": {
        "pelvis": ("spine",), "spine1": ("spine.001",), "spine2": ("spine.002",), "spine3": ("spine.003",),
        "neck": ("spine.004", "neck"), "head": ("spine.006", "spine.005", "head"),
        "hip": ("thigh.{L}",), "knee": ("shin.{L}",), "ankle": ("foot.{L}",), "foot": ("toe.{L}",),
        "collar": ("shoulder.{L}",), "shoulder": ("upper_arm.{L}",), "elbow": ("forearm.{L}",),
        "wrist": ("hand.{L}",), "hand": ("f_middle.01.{L}", "palm.02.{L}", "f_index.01.{L}"),
    },
    "unity": {   # Unity humanoid and VRM (VRoid's J_Bip_* names)
        "pelvis": ("Hips", "J_Bip_C_Hips", "hips"), "spine1": ("Spine", "J_Bip_C_Spine", "spine"),
        "spine2": ("Chest", "J_Bip_C_Chest", "chest"), "spine3": ("UpperChest", "J_Bip_C_UpperChest", "upperChest"),
        "neck": ("Neck", "J_Bip_C_Neck", "neck"), "head": ("Head", "J_Bip_C_Head", "head"),
        "hip": ("{Left}UpperLeg", "J_Bip_{L}_UpperLeg", "{left}UpperLeg"),
        "knee": ("{Left}LowerLeg", "J_Bip_{L}_LowerLeg", "{left}LowerLeg"),
        "ankle": ("{Left}Foot", "J_Bip_{L}_Foot", "{left}Foot"),
        "foot": ("{Left}Toes", "J_Bip_{L}_ToeBase", "{left}Toes"),
        "collar": ("{Left}Shoulder", "J_Bip_{L}_Shoulder", "{left}Shoulder"),
        "shoulder": ("{Left}UpperArm", "J_Bip_{L}_UpperArm", "{left}UpperArm"),
        "elbow": ("{Left}LowerArm", "J_Bip_{L}_LowerArm", "{left}LowerArm"),
        "wrist": ("{Left}Hand", "J_Bip_{L}_Hand", "{left}Hand"),
        "hand": ("{Left}MiddleProximal", "J_Bip_{L}_Middle1", "{left}MiddleProximal", "{Left}IndexProximal"),
    },
    "unreal": {
        "pelvis": ("pelvis",), "spine1": ("spine_01",), "spine2": ("spine_02",), "spine3": ("spine_03",),
        "neck": ("neck_01",), "head": ("head",), "hip": ("thigh_{l}",), "knee": ("calf_{l}",),
        "ankle": ("foot_{l}",), "foot": ("ball_{l}",), "collar": ("clavicle_{l}",), "shoulder": ("upperarm_{l}",),
        "elbow": ("lowerarm_{l}",), "wrist": ("hand_{l}",), "hand": ("middle_01_{l}", "index_01_{l}"),
    },
    "auto_rig_pro": {   # the control rig (c_*) first, then the exported deform names
        "pelvis": ("c_root.x", "root.x"), "spine1": ("c_spine_01.x", "spine_01.x"),
        "spine2": ("c_spine_02.x", "spine_02.x"), "spine3": ("c_spine_03.x", "spine_03.x"),
        "neck": ("c_neck.x", "neck.x"), "head": ("c_head.x", "head.x"),
        "hip": ("c_thigh_fk.{l}", "thigh_stretch.{l}", "thigh.{l}"), "knee": ("c_leg_fk.{l}", "leg_stretch.{l}", "leg.{l}"),
        "ankle": ("c_foot_fk.{l}", "foot.{l}"), "foot": ("c_toes_fk.{l}", "toes_01.{l}", "c_toes.{l}"),
        "collar": ("c_shoulder.{l}", "shoulder.{l}"), "shoulder": ("c_arm_fk.{l}", "arm_stretch.{l}", "arm.{l}"),
        "elbow": ("c_forearm_fk.{l}", "forearm_stretch.{l}", "forearm.{l}"), "wrist": ("c_hand_fk.{l}", "hand.{l}"),
        "hand": ("c_middle1.{l}", "middle1.{l}", "c_index1.{l}"),
    },
}
# A generated Rigify rig: FK controls are driven, its ORG- bones (the metarig's bones) show the joints.
RIGIFY_CONTROLS = {
    "pelvis": "spine_fk", "spine1": "spine_fk.001", "spine2": "spine_fk.002", "spine3": "spine_fk.003",
    "neck": "neck", "head": "head", "hip": "thigh_fk.{L}", "knee": "shin_fk.{L}", "ankle": "foot_fk.{L}",
    "foot": "toe_fk.{L}", "collar": "shoulder.{L}", "shoulder": "upper_arm_fk.{L}", "elbow": "forearm_fk.{L}",
    "wrist": "hand_fk.{L}", "hand": "f_middle.01.{L}",
}
RIGIFY_ORG = {
    "pelvis": "ORG-spine", "spine1": "ORG-spine.001", "spine2": "ORG-spine.002", "spine3": "ORG-spine.003",
    "neck": "ORG-spine.004", "head": "ORG-spine.006", "hip": "ORG-thigh.{L}", "knee": "ORG-shin.{L}",
    "ankle": "ORG-foot.{L}", "foot": "ORG-toe.{L}", "collar": "ORG-shoulder.{L}", "shoulder": "ORG-upper_arm.{L}",
    "elbow": "ORG-forearm.{L}", "wrist": "ORG-hand.{L}", "hand": "ORG-f_middle.01.{L}",
}
RIGIFY_RESET = ("torso", "hips", "chest")
# Auto-Rig Pro's control rig: IK/FK switches on the IK controls, 1 = FK (its c_*_fk bones are the ones posed).
ARP_SWITCHES = (("c_hand_ik.l", "ik_fk_switch", 1.0), ("c_hand_ik.r", "ik_fk_switch", 1.0),
                ("c_foot_ik.l", "ik_fk_switch", 1.0), ("c_foot_ik.r", "ik_fk_switch", 1.0))
RIGIFY_SWITCHES = (("upper_arm_parent.L", "IK_FK", 1.0), ("upper_arm_parent.R", "IK_FK", 1.0),
                   ("thigh_parent.L", "IK_FK", 1.0), ("thigh_parent.R", "IK_FK", 1.0))


def _joint_part(joint: str) -> tuple[str, int]:
    """"left_knee" → ("knee", 0); "right_knee" → ("knee", 1); "spine2" → ("spine2", -1)."""
    if joint.startswith("left_"):
        return joint[5:], 0
    if joint.startswith("right_"):
        return joint[6:], 1
    return joint, -1


def _expand(template: str, side: int) -> str:
    if side < 0:
        return template
    for token, pair in _SIDES.items():
        template = template.replace("{" + token + "}", pair[side])
    return template


def _strip_namespace(name: str) -> str:
    """"mixamorig:Hips" / "mixamorig1:Hips" / "Armature|Hips" → "Hips"."""
    return re.split(r"[:|]", name)[-1]


def detect_mapping(bone_names) -> RigMapping:
    """The best mapping of a rig's bones to SMPL joints by name: every convention in ``CONVENTIONS`` (and a
    generated Rigify rig) is tried, namespaces such as ``mixamorig:`` ignored, and the one mapping the most
    joints wins. The result may be incomplete: ``mapping_problem`` says whether it is usable."""
    names = list(bone_names)
    by_plain: dict[str, str] = {}
    for name in names:
        by_plain.setdefault(_strip_namespace(name), name)
        by_plain.setdefault(_strip_namespace(name).lower(), name)
    best = RigMapping()
    if all(_expand(RIGIFY_CONTROLS[p], s) in names for p, s in (("pelvis", -1), ("hip", 0), ("shoulder", 0))):
        mapping = _rigify_generated(set(names))
        if mapping.mapped_count > best.mapped_count:
            best = mapping
    for convention, table in CONVENTIONS.items():
        joints = {}
        for joint in JOINT_NAMES:
            part, side = _joint_part(joint)
            for template in table.get(part, ()):
                candidate = _expand(template, side)
                found = by_plain.get(candidate) or by_plain.get(candidate.lower())
                if found is not None and found not in joints.values():
                    joints[joint] = found
                    break
        if len(joints) > best.mapped_count:
            switches = ARP_SWITCHES if convention == "auto_rig_pro" else ()
            best = RigMapping(joints=joints, convention=convention,
                              switches=tuple(s for s in switches if s[0] in names))
    return best


def _rigify_generated(names: set) -> RigMapping:
    joints, measure = {}, {}
    for joint in JOINT_NAMES:
        part, side = _joint_part(joint)
        control = _expand(RIGIFY_CONTROLS[part], side)
        org = _expand(RIGIFY_ORG[part], side)
        if control in names:
            joints[joint] = control
            if org in names:
                measure[joint] = org
    return RigMapping(joints=joints, measure=measure, root="torso" if "torso" in names else None,
                      reset=tuple(b for b in RIGIFY_RESET if b in names),
                      switches=tuple(s for s in RIGIFY_SWITCHES if s[0] in names), convention="rigify")


def mapping_problem(mapping: RigMapping) -> str | None:
    """One sentence saying why a mapping cannot pose the rig, or None when it can."""
    missing = [j for j in REQUIRED_JOINTS if j not in mapping.joints]
    if mapping.mapped_count < MIN_MAPPED_JOINTS or missing:
        shown = ", ".join((missing or mapping.missing)[:6])
        return (f"Only {mapping.mapped_count} of the 24 body joints could be matched to bones (missing {shown}): "
                f"this does not look like a humanoid rig; pick a bone for each joint in the Mapping table or "
                f"load a mapping preset.")
    return None


_SIDE_SWAPS = [(r"Left", "Right"), (r"Right", "Left"), (r"left", "right"), (r"right", "left"),
               (r"(?<![A-Za-z])L(?![a-z])", "R"), (r"(?<![A-Za-z])R(?![a-z])", "L"),
               (r"(?<![A-Za-z])l(?![A-Za-z])", "r"), (r"(?<![A-Za-z])r(?![A-Za-z])", "l")]


def _swap_side(name: str) -> str | None:
    """The other side's name of a bone (``hand.L`` → ``hand.R``, ``LeftArm`` → ``RightArm``), or None."""
    for pattern, replacement in _SIDE_SWAPS:
        if re.search(pattern, name):
            return re.sub(pattern, replacement, name)
    return None


def mirror_fill(mapping: RigMapping, bone_names) -> RigMapping:
    """Fill each unmapped left/right joint with the mirror-named bone of its mapped partner (``hand.L`` →
    ``hand.R``, ``LeftArm`` → ``RightArm``, ``thigh_l`` → ``thigh_r``) when the rig has that bone."""
    names = set(bone_names)
    joints = dict(mapping.joints)
    for i, joint in enumerate(JOINT_NAMES):
        partner = JOINT_NAMES[MIRROR[i]]
        if partner == joint or joint in joints or partner not in joints:
            continue
        candidate = _swap_side(joints[partner])
        if candidate in names and candidate not in joints.values():
            joints[joint] = candidate
    return RigMapping(joints=joints, measure=dict(mapping.measure), root=mapping.root, reset=mapping.reset,
                      switches=mapping.switches, convention=mapping.convention)


# --- the rule ------------------------------------------------------------------------------------------

def next_mapped_joints(mapped) -> list[list[int]]:
    """For each joint, the mapped joints reached first going down the SMPL tree through unmapped joints,
    the primary child's line first: the ends of that joint's segments. mapped: (24,) bools."""
    mapped = np.asarray(mapped, dtype=bool)

    def reach(j):
        out = []
        children = list(CHILDREN[j])
        first = primary_child(j)
        if first is not None:
            children.remove(first)
            children.insert(0, first)
        for c in children:
            out.extend([c] if mapped[c] else reach(c))
        return out

    return [reach(j) for j in range(NUM_JOINTS)]


def mapped_segments(mapped, *, branches: bool = False) -> list[tuple[int, int]]:
    """The bone segments of the mapped joints: (mapped joint, next mapped joint on its bone's line, the
    primary child's), whose directions retargeting reproduces exactly. branches: also the side segments
    of branching joints (pelvis → hips, spine3 → collars): those depend on the rig's rest proportions
    (where its hips sit relative to its pelvis), which no rotation changes."""
    ends = next_mapped_joints(mapped)
    if branches:
        return [(j, c) for j in range(NUM_JOINTS) if mapped[j] for c in ends[j]]
    return [(j, ends[j][0]) for j in range(NUM_JOINTS) if mapped[j] and ends[j]]


def segment_directions(joints, segments) -> np.ndarray:
    """Unit directions (..., S, 3) of the segments [(a, b)] of joint positions (..., 24, 3)."""
    joints = np.asarray(joints, dtype=np.float64)
    a, b = np.array([s[0] for s in segments]), np.array([s[1] for s in segments])
    d = joints[..., b, :] - joints[..., a, :]
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def direction_angles_deg(a, b) -> np.ndarray:
    """Angles in degrees (...) between directions (..., 3), accurate near 0 (atan2 of |a × b| and a · b)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), (a * b).sum(-1)))


def _unit(v):
    return v / np.linalg.norm(v)


def _snap_axis(v, taken=()):
    order = [k for k in np.argsort(-np.abs(v)) if k not in taken]
    axis = np.zeros(3)
    axis[order[0]] = np.sign(v[order[0]]) or 1.0
    return axis, order[0]


def body_frame(rest_joints, mapped) -> np.ndarray:
    """F (3, 3): columns = the rig's left, up and forward axes in armature space, snapped to the nearest
    coordinate axes. rest_joints: (24, 3) armature space (rows of unmapped joints are ignored)."""
    joints = np.asarray(rest_joints, dtype=np.float64)
    mapped = np.asarray(mapped, dtype=bool)
    lateral = np.zeros(3)
    for side_pair in (("left_hip", "right_hip"), ("left_shoulder", "right_shoulder"), ("left_collar", "right_collar")):
        a, b = (JOINT_INDEX[n] for n in side_pair)
        if mapped[a] and mapped[b]:
            lateral += _unit(joints[a] - joints[b])
    top = next((JOINT_INDEX[n] for n in ("neck", "head", "spine3", "spine2") if mapped[JOINT_INDEX[n]]), None)
    if not np.any(lateral) or top is None or not mapped[0]:
        raise ValueError("the body frame needs the pelvis, a neck/head or upper spine joint and a left/right pair")
    left, k = _snap_axis(lateral)
    up, _ = _snap_axis(joints[top] - joints[0], taken=(k,))
    return np.stack([left, up, np.cross(left, up)], -1)


def _swing(a, b) -> np.ndarray:
    """The smallest rotation turning direction a onto direction b (3, 3)."""
    a, b = _unit(a), _unit(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        perpendicular = np.cross(a, np.eye(3)[np.argmin(np.abs(a))])
        return rot.rotvec_to_rotmat(_unit(perpendicular) * np.pi)
    return rot.rotvec_to_rotmat(axis / s * np.arctan2(s, c))


def _two_vector(a1, a2, b1, b2) -> np.ndarray:
    """The rotation taking a1 exactly onto b1 and a2 as close as possible onto b2 (3, 3)."""
    def frame(u, v):
        x = _unit(u)
        y = _unit(v - (v @ x) * x)
        return np.stack([x, y, np.cross(x, y)], -1)
    return frame(b1, b2) @ frame(a1, a2).T


def rest_alignments(rig_joints, smpl_joints, frame, mapped) -> np.ndarray:
    """Q (24, 3, 3) in armature space: rig rest segment → SMPL T-pose segment (seen through ``frame``).

    rig_joints: (24, 3) the rig's rest joints, armature space; smpl_joints: (24, 3) SMPL rest joints (SMPL
    frame); frame: F from ``body_frame``; mapped: (24,) bools. Unmapped joints get identity."""
    rig = np.asarray(rig_joints, dtype=np.float64)
    ref = np.asarray(smpl_joints, dtype=np.float64) @ np.asarray(frame).T
    mapped = np.asarray(mapped, dtype=bool)
    ends = next_mapped_joints(mapped)
    q = np.tile(np.eye(3), (NUM_JOINTS, 1, 1))
    for j in range(NUM_JOINTS):
        if not mapped[j]:
            continue
        if not ends[j] or np.linalg.norm(rig[ends[j][0]] - rig[j]) < 1e-9:   # a leaf keeps its parent's alignment
            p = PARENTS[j]
            while p >= 0 and not mapped[p]:
                p = PARENTS[p]
            q[j] = q[p] if p >= 0 else np.eye(3)
            continue
        c = ends[j][0]
        sides = [e for e in ends[j][1:] if JOINT_NAMES[e].startswith(("left_", "right_"))]
        left = [e for e in sides if JOINT_NAMES[e].startswith("left_")]
        right = [e for e in sides if JOINT_NAMES[e].startswith("right_") and MIRROR[e] in left]
        if right:
            l, r = MIRROR[right[0]], right[0]
            q[j] = _two_vector(rig[c] - rig[j], rig[l] - rig[r], ref[c] - ref[j], ref[l] - ref[r])
        else:
            q[j] = _swing(rig[c] - rig[j], ref[c] - ref[j])
    return q


def world_rotations(rotmats) -> np.ndarray:
    """G (..., 24, 3, 3): SMPL world rotation of every joint, the local rotations (..., 24, 3, 3) chained."""
    rotmats = np.asarray(rotmats, dtype=np.float64)
    world = [rotmats[..., 0, :, :]]
    for i in range(1, NUM_JOINTS):
        world.append(world[PARENTS[i]] @ rotmats[..., i, :, :])
    return np.stack(world, -3)


def target_orientations(rotmats, frame, alignments, rest_orientations) -> np.ndarray:
    """P (..., 24, 3, 3) = F G Fᵀ Q B: where each driven bone must point, armature space.

    rotmats: (..., 24, 3, 3) SMPL local rotations; frame: F; alignments: Q (24, 3, 3); rest_orientations:
    B (24, 3, 3) rest orientation of each joint's driven bone (any value for unmapped joints)."""
    f = np.asarray(frame, dtype=np.float64)
    return f @ world_rotations(rotmats) @ f.T @ alignments @ rest_orientations


def mirror_rotmats(rotmats) -> np.ndarray:
    """The mirror image of a pose (..., 24, 3, 3) across the body's midplane: left and right joints swap and
    every rotation becomes M R M with M = diag(−1, 1, 1) (SMPL's left is +X)."""
    m = np.diag([-1.0, 1.0, 1.0])
    rotmats = np.asarray(rotmats, dtype=np.float64)
    return m @ rotmats[..., list(MIRROR), :, :] @ m
