"""Which bone of an artist's rig stands for which SMPL joint: naming conventions, detection, presets.

``detect_mapping(bone_names)`` tries every convention in ``CONVENTIONS`` (SMPL / SMPL-X names, Mixamo, the
Rigify metarig, Unity humanoid and VRM, Unreal, Auto-Rig Pro) and a generated Rigify rig, and keeps the one
mapping the most joints; ``mapping_problem`` is the one sentence for a rig it cannot pose; ``mirror_fill``
completes one side from the other; ``mapping_to_json`` / ``mapping_from_json`` are the presets (and what the
Blender layer stores on the armature). Plain Python: no numpy needed, no bpy.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .skeleton import JOINT_INDEX, JOINT_NAMES, MIRROR

__all__ = [
    "RigMapping", "CONVENTIONS", "REQUIRED_JOINTS", "detect_mapping", "mapping_problem", "mirror_fill",
    "mapping_to_json", "mapping_from_json",
]

PRESET_FORMAT = "posegpt-rig-mapping"
PRESET_VERSION = 1
MIN_MAPPED_JOINTS = 14
# Without these a rig cannot show a body pose: the caller says so in one sentence and leaves the bones.
REQUIRED_JOINTS = ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_shoulder",
                   "right_shoulder", "left_elbow", "right_elbow")


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
        "hip": ("c_thigh_fk.{l}", "thigh_stretch.{l}", "thigh.{l}"),
        "knee": ("c_leg_fk.{l}", "leg_stretch.{l}", "leg.{l}"),
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
    """"mixamorig:Hips" / "mixamorig1:Hips" / "mixamorig_Hips" / "Armature|Hips" → "Hips"."""
    return re.sub(r"^mixamorig\d*_", "", re.split(r"[:|]", name)[-1])


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
