"""Artists' rigs built in the bpy module for the retargeting tests and bench, each with a skinned mesh.

- ``rigify_metarig()`` / ``rigify_generated()``: Rigify's human metarig, and the rig Rigify generates from it.
- ``mixamo_rig()``: ``mixamorig:*`` names, Y-up armature data in centimetres under an object rotated +90°
  about X and scaled 0.01 (what an FBX import gives), T-pose, bones along +Y with Mixamo-like rolls.
- ``smpl_named_rig()``: the 24 SMPL joint names (no smpl_rig marker), random rolls, moved and scaled.
- ``a_pose_rig()``: Unreal-style names, A-pose with bent elbows, a four-bone spine, a two-bone neck, twist
  bones and no finger bones but the middle finger's first.
Meshes: one box per deform bone, weight 1 to that bone (enough to test skinning and floor contact).
"""
from __future__ import annotations

import math

import bpy
import numpy as np

from smpl_rig import frames
from smpl_rig import rotations as rot
from smpl_rig.body import load
from smpl_rig.skeleton import JOINT_INDEX, JOINT_NAMES, PARENTS, primary_child

RIG_KINDS = ("rigify_metarig", "rigify_generated", "mixamo", "smpl_named", "a_pose")


def _mannequin_joints_blender() -> np.ndarray:
    return frames.smpl_points_to_blender(load("mannequin").rest_joints)


def _select_only(obj) -> None:
    for other in bpy.context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj


def add_box_mesh(arm_obj, deform_bones, name="Body", thickness=0.04):
    """A mesh of one box per deform bone (weight 1 to it), parented to ``arm_obj`` with an Armature modifier.
    Boxes are built in armature space around each bone's rest segment."""
    verts, faces, groups = [], [], []
    cube_faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    for bone_name in deform_bones:
        bone = arm_obj.data.bones[bone_name]
        m = np.array(bone.matrix_local, dtype=np.float64)
        length, t = bone.length, thickness
        base = len(verts)
        for x in (-t, t):
            for y in (0.0, length):
                for z in (-t, t):
                    verts.append((m @ np.array([x, y, z, 1.0]))[:3])
        faces.extend([tuple(base + k for k in f) for f in cube_faces])
        groups.append((bone_name, list(range(base, base + 8))))
    mesh = bpy.data.meshes.new(f"{name}_mesh")
    mesh.from_pydata([tuple(v) for v in verts], [], faces)
    mesh.update()
    mesh_obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(mesh_obj)
    mesh_obj.parent = arm_obj
    for bone_name, indices in groups:
        mesh_obj.vertex_groups.new(name=bone_name).add(indices, 1.0, "REPLACE")
    mesh_obj.modifiers.new("Armature", "ARMATURE").object = arm_obj
    return mesh_obj


_FACE_AND_HELPERS = ("face", "forehead", "temple", "jaw", "chin", "cheek", "brow", "lid", "ear", "nose", "lip",
                     "tongue", "teeth", "eye", "breast", "pelvis.", "heel")


def _is_face_or_helper(name: str) -> bool:
    """Rigify metarig bones left out of the box mesh: the face, breasts, pelvis and heel helpers."""
    return name.startswith(_FACE_AND_HELPERS)


def _enable_rigify():
    import addon_utils
    addon_utils.enable("rigify", default_set=True, persistent=True)


def rigify_metarig():
    _enable_rigify()
    bpy.ops.object.armature_human_metarig_add()
    meta = bpy.context.object
    body = [b.name for b in meta.data.bones if not _is_face_or_helper(b.name)]
    add_box_mesh(meta, body, thickness=0.03)
    bpy.ops.object.mode_set(mode="OBJECT") if bpy.context.object.mode != "OBJECT" else None
    return meta


def rigify_generated():
    meta = rigify_metarig()
    _select_only(meta)
    before = set(bpy.data.objects)
    result = bpy.ops.pose.rigify_generate()
    assert result == {"FINISHED"}, result
    rig = next(o for o in bpy.data.objects if o.type == "ARMATURE" and o not in before)
    deform = [b.name for b in rig.data.bones if b.name.startswith("DEF-") and b.use_deform
              and not _is_face_or_helper(b.name[4:])]
    for child in list(meta.children):
        bpy.data.objects.remove(child)
    meta.hide_set(True)
    add_box_mesh(rig, deform, thickness=0.03)
    return rig


def _build(name, heads, tails, parents, roll_vectors, *, obj_matrix=None):
    """An armature object from bone heads/tails (armature space), parents (names or None), roll vectors."""
    arm = bpy.data.objects.new(name, bpy.data.armatures.new(name))
    bpy.context.scene.collection.objects.link(arm)
    _select_only(arm)
    bpy.ops.object.mode_set(mode="EDIT")
    edit = arm.data.edit_bones
    for bone_name in heads:
        b = edit.new(bone_name)
        b.head, b.tail = tuple(heads[bone_name]), tuple(tails[bone_name])
        b.align_roll(tuple(roll_vectors[bone_name]))
    for bone_name, parent in parents.items():
        if parent is not None:
            edit[bone_name].parent = edit[parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    if obj_matrix is not None:
        arm.matrix_world = obj_matrix
    return arm


def _smpl_layout(joints, names, extra_scale=None):
    """Heads/tails/parents for one bone per SMPL joint named by ``names`` (dict joint → bone)."""
    heads, tails, parents = {}, {}, {}
    for i, joint in enumerate(JOINT_NAMES):
        child = primary_child(i)
        direction = joints[child] - joints[i] if child is not None else (joints[i] - joints[PARENTS[i]]) * 0.6
        bone = names[joint]
        heads[bone], tails[bone] = joints[i], joints[i] + direction
        parents[bone] = names[JOINT_NAMES[PARENTS[i]]] if PARENTS[i] >= 0 else None
    return heads, tails, parents


MIXAMO = {
    "pelvis": "Hips", "left_hip": "LeftUpLeg", "right_hip": "RightUpLeg", "spine1": "Spine", "left_knee": "LeftLeg",
    "right_knee": "RightLeg", "spine2": "Spine1", "left_ankle": "LeftFoot", "right_ankle": "RightFoot",
    "spine3": "Spine2", "left_foot": "LeftToeBase", "right_foot": "RightToeBase", "neck": "Neck",
    "left_collar": "LeftShoulder", "right_collar": "RightShoulder", "head": "Head", "left_shoulder": "LeftArm",
    "right_shoulder": "RightArm", "left_elbow": "LeftForeArm", "right_elbow": "RightForeArm",
    "left_wrist": "LeftHand", "right_wrist": "RightHand", "left_hand": "LeftHandMiddle1",
    "right_hand": "RightHandMiddle1",
}


def mixamo_rig():
    """Mixamo: Y-up, centimetres, facing +Z in armature space; the object turns it +Z-up facing −Y."""
    joints = load("mannequin").rest_joints * 100.0                      # SMPL frame = Mixamo's armature frame
    joints = joints * np.array([1.05, 1.0, 1.0])                         # other proportions than the mannequin
    names = {j: f"mixamorig:{n}" for j, n in MIXAMO.items()}
    heads, tails, parents = _smpl_layout(joints, names)
    # Mixamo rolls: local Z of legs and spine toward +Z (front), of the arms toward +Y/-Y alternately.
    rolls = {}
    for joint, bone in names.items():
        if "collar" in joint or "shoulder" in joint or "elbow" in joint or "wrist" in joint or "hand" in joint:
            rolls[bone] = (0.0, 1.0, 0.0) if joint.startswith("left") else (0.0, -1.0, 0.0)
        elif "foot" in joint or "ankle" in joint:
            rolls[bone] = (0.0, 1.0, 0.0)
        else:
            rolls[bone] = (0.0, 0.0, 1.0)
    # fingers beyond the first and the head top, as Mixamo has them
    for side in ("Left", "Right"):
        base = f"mixamorig:{side}HandMiddle1"
        heads[f"mixamorig:{side}HandMiddle2"] = tails[base]
        tails[f"mixamorig:{side}HandMiddle2"] = tails[base] + (tails[base] - heads[base]) * 0.8
        parents[f"mixamorig:{side}HandMiddle2"] = base
        rolls[f"mixamorig:{side}HandMiddle2"] = rolls[base]
    obj_matrix = _matrix(rotation=rot.rotmat_x(math.pi / 2), scale=0.01)
    arm = _build("Mixamo", heads, tails, parents, rolls, obj_matrix=obj_matrix)
    add_box_mesh(arm, list(heads), thickness=3.0)
    return arm


def _matrix(rotation=np.eye(3), scale=1.0, location=(0.0, 0.0, 0.0)):
    from mathutils import Matrix
    m = np.eye(4)
    m[:3, :3] = rotation * scale
    m[:3, 3] = location
    return Matrix(m.tolist())


def smpl_named_rig(seed=0):
    joints = _mannequin_joints_blender() * 0.9
    names = {j: j for j in JOINT_NAMES}
    heads, tails, parents = _smpl_layout(joints, names)
    rng = np.random.default_rng(seed)
    rolls = {}
    for bone in heads:
        d = tails[bone] - heads[bone]
        v = rng.normal(size=3)
        v -= (v @ d) / (d @ d) * d
        rolls[bone] = v / np.linalg.norm(v)
    arm = _build("SMPLNamed", heads, tails, parents, rolls, obj_matrix=_matrix(scale=1.3, location=(0.5, 2.0, 0.3)))
    add_box_mesh(arm, list(heads), thickness=0.03)
    return arm


def a_pose_rig():
    """Unreal-style names, A-pose (arms 45° down, elbows bent 20° forward), spine_01..spine_04, neck_01/02."""
    j = _mannequin_joints_blender()
    J = JOINT_INDEX
    pts = {}
    pelvis, spine_top, neck = j[J["pelvis"]], j[J["spine3"]], j[J["neck"]]
    pts["pelvis"] = pelvis
    for k in range(4):                                  # four spine bones from just above the pelvis to the neck
        pts[f"spine_0{k + 1}"] = j[J["spine1"]] + (neck - j[J["spine1"]]) * k / 4
    pts["neck_01"], pts["neck_02"] = neck, neck + (j[J["head"]] - neck) * 0.5
    pts["head"] = j[J["head"]]
    for side, s in (("l", 1.0), ("r", -1.0)):
        pre = "left_" if s > 0 else "right_"
        pts[f"thigh_{side}"], pts[f"calf_{side}"] = j[J[pre + "hip"]], j[J[pre + "knee"]]
        pts[f"foot_{side}"], pts[f"ball_{side}"] = j[J[pre + "ankle"]], j[J[pre + "foot"]]
        pts[f"clavicle_{side}"] = j[J[pre + "collar"]]
        shoulder = j[J[pre + "shoulder"]]
        down = rot.rotmat_y(s * math.radians(45))       # arm 45° down (about the forward axis −Y in Blender)
        bend = rot.rotmat_z(-s * math.radians(20))      # forearm bent forward
        upper = down @ (j[J[pre + "elbow"]] - shoulder)
        fore = down @ bend @ (j[J[pre + "wrist"]] - j[J[pre + "elbow"]])
        hand = down @ bend @ (j[J[pre + "hand"]] - j[J[pre + "wrist"]])
        pts[f"upperarm_{side}"] = shoulder
        pts[f"lowerarm_{side}"] = shoulder + upper
        pts[f"hand_{side}"] = shoulder + upper + fore
        pts[f"middle_01_{side}"] = shoulder + upper + fore + hand
    chain = {"pelvis": None, "spine_01": "pelvis", "spine_02": "spine_01", "spine_03": "spine_02",
             "spine_04": "spine_03", "neck_01": "spine_04", "neck_02": "neck_01", "head": "neck_02"}
    for side in ("l", "r"):
        chain.update({f"thigh_{side}": "pelvis", f"calf_{side}": f"thigh_{side}", f"foot_{side}": f"calf_{side}",
                      f"ball_{side}": f"foot_{side}", f"clavicle_{side}": "spine_04",
                      f"upperarm_{side}": f"clavicle_{side}", f"lowerarm_{side}": f"upperarm_{side}",
                      f"hand_{side}": f"lowerarm_{side}", f"middle_01_{side}": f"hand_{side}"})
    children = {}
    for bone, parent in chain.items():
        if parent is not None:
            children.setdefault(parent, []).append(bone)
    first_child = {"pelvis": "spine_01", "spine_04": "neck_01"}
    heads, tails = dict(pts), {}
    for bone in chain:
        kids = children.get(bone)
        if kids:
            tails[bone] = pts[first_child.get(bone, kids[0])]
        else:
            tails[bone] = pts[bone] + (pts[bone] - pts[chain[bone]]) * 0.6
    for side in ("l", "r"):                             # twist bones: children of the limb, off the chain
        for limb in ("upperarm", "thigh"):
            twist = f"{limb}_twist_01_{side}"
            start, end = heads[f"{limb}_{side}"], tails[f"{limb}_{side}"]
            heads[twist], tails[twist] = start + (end - start) * 0.5, end
            chain[twist] = f"{limb}_{side}"
    mostly_up = {bone: abs((tails[bone] - heads[bone])[2]) >= 0.9 * np.linalg.norm(tails[bone] - heads[bone])
                 for bone in heads}
    rolls = {bone: (0.0, -1.0, 0.0) if mostly_up[bone] else (0.0, 0.0, 1.0) for bone in heads}
    arm = _build("APose", heads, tails, chain, rolls)
    add_box_mesh(arm, [b for b in heads if "twist" not in b], thickness=0.03)
    return arm


def build(kind: str):
    return {"rigify_metarig": rigify_metarig, "rigify_generated": rigify_generated, "mixamo": mixamo_rig,
            "smpl_named": smpl_named_rig, "a_pose": a_pose_rig}[kind]()
