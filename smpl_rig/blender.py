"""SMPL bodies as Blender armatures: build, recognise, pose, read back.

Blender glue only: the formula and the build rules are numpy in ``smpl_rig.bones``; keyframes and AMASS
import are in ``smpl_rig.blender_keys``. Only ``smpl_rig.blender*`` modules import ``bpy``. Works in
Blender 3.4–5.x.

Frames and the bone formula (``shared/docs/conventions.md``):

- every pose handed in is in the SMPL model frame; identity global orientation = upright, facing −Y;
- SMPL → Blender world is C = Rx(+90°): (x, y, z) → (x, −z, y); the armature object sits at the origin;
- a bone with rest orientation B_i = ``bone.matrix_local.to_3x3()`` gets the pose-bone rotation
  M_i = D_iᵀ R_i D_i with D_i = Cᵀ B_i, so any bone direction and roll poses correctly.

Public functions: ``build_armature``, ``apply_pose``, ``read_pose``, ``read_translation``,
``is_smpl_armature``, ``find_smpl_armatures``, ``world_joint_positions``, ``rest_joints``, ``body_mesh``,
``pose_bone_quaternions``.
Reference and a script example: ``docs/blender_api.md``.
"""
from __future__ import annotations

import bpy
import numpy as np

from . import bones, frames
from . import rotations as rot
from .body import NUM_POSE_FEATURES, pose_corrective_features
from .skeleton import JOINT_NAMES, NUM_JOINTS, PARENTS

__all__ = [
    "build_armature", "apply_pose", "read_pose", "read_translation", "is_smpl_armature",
    "world_joint_positions", "rest_joints", "body_mesh", "pose_bone_quaternions", "find_smpl_armatures",
    "MARKER", "update_pose_correctives", "bone_frames_of", "corrective_key_blocks", "require_smpl_armature",
    "require_poseable",
]

MARKER = "smpl_rig"                 # custom property on the armature object (a group of rest data)
MESH_MARKER = "smpl_rig_mesh"       # custom property on the skinned mesh object
FORMAT_VERSION = 1
CORRECTIVE_RANGE = 2.0              # entries of R − I lie in [−2, 2]; shape-key sliders must allow that


# --- recognising an SMPL armature ----------------------------------------------------------------------

def _smpl_armature_problem(obj) -> str | None:
    """Why ``obj`` is not an SMPL armature built by ``build_armature``, or None when it is."""
    if obj is None or not isinstance(obj, bpy.types.Object):
        return f"expected a Blender armature object, got {type(obj).__name__}"
    if obj.type != "ARMATURE":
        return f"object {obj.name!r} is a {obj.type.lower()}, not an armature"
    marker = obj.get(MARKER)
    if marker is None or not hasattr(marker, "to_dict"):
        return f"armature {obj.name!r} was not built by smpl_rig.blender.build_armature (no {MARKER!r} property)"
    if tuple(marker.get("joint_names", ())) != JOINT_NAMES or len(marker.get("rest_joints", ())) != NUM_JOINTS * 3:
        return f"armature {obj.name!r} has a damaged {MARKER!r} property (joint names or rest joints)"
    missing = [n for n in JOINT_NAMES if n not in obj.data.bones]
    if missing:
        return f"armature {obj.name!r} lacks the SMPL bones {', '.join(missing)}"
    return None


def is_smpl_armature(obj) -> bool:
    """True when ``obj`` is an armature built by ``build_armature`` with all 24 SMPL bones present."""
    return _smpl_armature_problem(obj) is None


def require_smpl_armature(obj) -> None:
    problem = _smpl_armature_problem(obj)
    if problem is not None:
        raise ValueError(problem)


def require_poseable(obj) -> None:
    """An SMPL armature outside Edit Mode (there, bone rest matrices lag behind the edit bones)."""
    require_smpl_armature(obj)
    if obj.mode == "EDIT":
        raise ValueError(f"armature {obj.name!r} is in Edit Mode; switch to Object or Pose Mode to pose it")


def rest_joints(obj) -> np.ndarray:
    """The rest joints (24, 3) of the body the armature was built from, SMPL frame, metres."""
    require_smpl_armature(obj)
    return np.asarray(obj[MARKER]["rest_joints"], dtype=np.float64).reshape(NUM_JOINTS, 3)


def body_mesh(obj):
    """The skinned mesh object built with the armature, or None if it was deleted."""
    for child in obj.children:
        if child.type == "MESH" and child.get(MESH_MARKER):
            return child
    return None


def corrective_key_blocks(obj):
    """The mesh's shape-key collection when it carries the 207 pose correctives in order, else None."""
    mesh_obj = body_mesh(obj)
    keys = mesh_obj.data.shape_keys if mesh_obj is not None else None
    if keys is None or len(keys.key_blocks) != NUM_POSE_FEATURES + 1:
        return None
    first, last = keys.key_blocks[1].name, keys.key_blocks[-1].name
    if first != bones.corrective_name(0) or last != bones.corrective_name(NUM_POSE_FEATURES - 1):
        return None
    return keys.key_blocks


# --- building -------------------------------------------------------------------------------------------

def _check_body(body) -> None:
    def shape_of(name):
        value = getattr(body, name, None)
        return None if value is None else tuple(np.shape(value))

    joints, verts, faces, weights = (shape_of(n) for n in ("rest_joints", "vertices", "faces", "weights"))
    if joints != (NUM_JOINTS, 3) or not np.all(np.isfinite(body.rest_joints)):
        raise ValueError(f"body.rest_joints must be finite (24, 3), got {joints}")
    if verts is None or len(verts) != 2 or verts[1] != 3 or not np.all(np.isfinite(body.vertices)):
        raise ValueError(f"body.vertices must be finite (V, 3), got {verts}")
    n_verts = verts[0]
    if faces is None or len(faces) != 2 or faces[1] != 3:
        raise ValueError(f"body.faces must be (F, 3), got {faces}")
    if len(body.faces) and (np.min(body.faces) < 0 or np.max(body.faces) >= n_verts):
        raise ValueError(f"body.faces index vertices outside 0..{n_verts - 1}")
    if weights != (n_verts, NUM_JOINTS) or not np.all(np.isfinite(body.weights)):
        raise ValueError(f"body.weights must be finite ({n_verts}, 24), got {weights}")
    posedirs = shape_of("posedirs")
    if posedirs is not None and posedirs != (n_verts, 3, NUM_POSE_FEATURES):
        raise ValueError(f"body.posedirs must be ({n_verts}, 3, 207), got {posedirs}")


def _ensure_object_mode() -> None:
    if bpy.context.object is not None and bpy.context.object.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")


def _build_skeleton(arm_obj, heads: np.ndarray, tails: np.ndarray) -> None:
    view_layer = bpy.context.view_layer
    previous_active = view_layer.objects.active
    view_layer.objects.active = arm_obj
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        edit_bones = arm_obj.data.edit_bones
        for i, name in enumerate(JOINT_NAMES):
            bone = edit_bones.new(name)
            bone.head, bone.tail = heads[i].tolist(), tails[i].tolist()
            bone.align_roll(bones.roll_target(tails[i] - heads[i]).tolist())
            bone.use_connect = False   # heads sit exactly on the joints; locations stay free for the pelvis
            if PARENTS[i] >= 0:
                bone.parent = edit_bones[JOINT_NAMES[PARENTS[i]]]
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = previous_active if previous_active is not None else arm_obj


def _build_mesh(body, name: str, arm_obj, collection):
    vertices = frames.smpl_points_to_blender(np.asarray(body.vertices, dtype=np.float64))
    faces = np.asarray(body.faces, dtype=np.int64)
    mesh = bpy.data.meshes.new(f"{name}_mesh")
    mesh.from_pydata(vertices.tolist(), [], faces.tolist())
    mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), dtype=bool))  # a body, not facets
    mesh.update()
    mesh_obj = bpy.data.objects.new(f"{name}_body", mesh)
    collection.objects.link(mesh_obj)
    mesh_obj.parent = arm_obj
    mesh_obj[MESH_MARKER] = 1

    weights = np.asarray(body.weights, dtype=np.float64)
    for j, joint in enumerate(JOINT_NAMES):
        group = mesh_obj.vertex_groups.new(name=joint)
        for v in np.flatnonzero(weights[:, j] > 1e-8):
            group.add([int(v)], float(weights[v, j]), "REPLACE")
    modifier = mesh_obj.modifiers.new("Armature", "ARMATURE")
    modifier.object = arm_obj

    if body.posedirs is not None:
        offsets = frames.smpl_points_to_blender(np.moveaxis(np.asarray(body.posedirs, dtype=np.float64), 2, 0))
        mesh_obj.shape_key_add(name="Basis", from_mix=False)
        for k in range(NUM_POSE_FEATURES):
            block = mesh_obj.shape_key_add(name=bones.corrective_name(k), from_mix=False)
            block.slider_min, block.slider_max = -CORRECTIVE_RANGE, CORRECTIVE_RANGE
            block.data.foreach_set("co", (vertices + offsets[k]).astype(np.float32).ravel())
            block.value = 0.0
    return mesh_obj


def build_armature(body, name: str = "SMPL", *, collection=None):
    """Build an SMPL armature with its skinned mesh in Blender world (+Z up, facing −Y).

    body: a ``smpl_rig.body.Body`` (rest_joints (24, 3), vertices (V, 3), faces (F, 3), weights (V, 24),
        optional posedirs (V, 3, 207)), SMPL frame, metres.
    name: name of the armature object (the mesh is ``{name}_body``).
    collection: where to link the objects (default: the active scene's collection).

    One bone per SMPL joint, named by ``JOINT_NAMES``, head on the joint, pointing to its primary child
    (leaves continue their parent's direction); roll rule: local Z toward the body's front (−Y), or up
    (+Z) for bones pointing mostly forward. Pose bones use quaternions. The mesh has one vertex group per
    joint, an Armature modifier, and, when the body has posedirs, 207 pose-corrective shape keys (values
    driven by ``apply_pose`` from R_i). Returns the armature object, rest pose, with rest data in
    ``obj["smpl_rig"]``.
    """
    _check_body(body)
    _ensure_object_mode()
    collection = collection if collection is not None else bpy.context.scene.collection
    joints_smpl = np.asarray(body.rest_joints, dtype=np.float64)
    heads = frames.smpl_points_to_blender(joints_smpl)
    height = float(np.ptp(np.asarray(body.vertices, dtype=np.float64)[:, 1])) or float(np.ptp(joints_smpl[:, 1]))
    tails = bones.bone_tails(heads, bones.MIN_BONE_RATIO * max(height, 1e-3))

    arm_obj = bpy.data.objects.new(name, bpy.data.armatures.new(name))
    collection.objects.link(arm_obj)
    _build_skeleton(arm_obj, heads, tails)
    for pose_bone in arm_obj.pose.bones:
        pose_bone.rotation_mode = "QUATERNION"

    mesh_obj = _build_mesh(body, name, arm_obj, collection)
    arm_obj[MARKER] = {
        "version": FORMAT_VERSION,
        "joint_names": list(JOINT_NAMES),
        "rest_joints": joints_smpl.ravel().tolist(),
        "height": height,
        "body_kind": str(getattr(body, "kind", "unknown")),
        "body_name": str(getattr(body, "name", "body")),
        "gender": str(getattr(body, "gender", "neutral")),
        "has_pose_correctives": body.posedirs is not None,
        "mesh": mesh_obj.name,
    }
    return arm_obj


# --- poses ----------------------------------------------------------------------------------------------

def bone_frames_of(obj) -> np.ndarray:
    """D_i = Cᵀ B_i for every joint (24, 3, 3), from the bones' rest orientations in armature space."""
    rest = obj.data.bones
    return bones.bone_frames(np.array([rest[name].matrix_local.to_3x3() for name in JOINT_NAMES], dtype=np.float64))


def pose_bone_quaternions(obj, rotmats) -> np.ndarray:
    """The pose-bone quaternions (..., 24, 4), w first, that show SMPL rotations (..., 24, 3, 3) on this
    armature: M_i = D_iᵀ R_i D_i (no sign alignment; see ``rotations.quat_wxyz_align_signs``)."""
    require_smpl_armature(obj)
    rotmats = np.asarray(rotmats, dtype=np.float64)
    if rotmats.shape[-3:] != (NUM_JOINTS, 3, 3):
        raise ValueError(f"rotmats must be (..., 24, 3, 3), got {rotmats.shape}")
    return bones.pose_bone_quats(bone_frames_of(obj), rotmats)


def find_smpl_armatures(scene=None) -> list:
    """Every SMPL armature (``is_smpl_armature``) in ``scene`` (default: the active scene)."""
    scene = scene if scene is not None else bpy.context.scene
    return [obj for obj in scene.objects if is_smpl_armature(obj)]


def apply_pose(obj, pose, *, global_orient: str = "keep", translation=None, undo_push: bool = False) -> np.ndarray:
    """Pose an SMPL armature.

    pose: SMPL-frame rotations as (24, 3) axis-angle, (72,), (24, 3, 3) matrices, (24, 6) or (144,) 6D,
        (24, 4) wxyz quaternions, or a dict {joint name: rotation} changing only those joints.
    global_orient: "keep" uses joint 0 as given; "upright" replaces it with identity (standing on +Z,
        facing −Y).
    translation: (3,) SMPL ``transl`` in metres, or None for none (pelvis location reset to zero).
    undo_push: also push an undo step named "Apply SMPL pose" when a window context allows it (the
        add-on's operator, with bl_options {'REGISTER', 'UNDO'}, already gives one undo step per call).

    Everything is validated before the armature changes: bad input raises ``ValueError`` and leaves the
    armature as it was. Pose-bone locations (but the pelvis's) and scales are reset, so the result is
    exactly the SMPL pose; pose-corrective shape keys get (R_i − I). Returns the rotations applied
    (24, 3, 3).
    """
    require_poseable(obj)
    bones.check_global_orient(global_orient)
    rotmats = bones.pose_rotmats(pose, current=read_pose(obj) if isinstance(pose, dict) else None)
    translation = bones.check_translation(translation)
    if global_orient == "upright":
        rotmats[0] = np.eye(3)

    bone_frames = bone_frames_of(obj)
    quats = bones.pose_bone_quats(bone_frames, rotmats)
    location = bones.pelvis_location(bone_frames, translation)
    key_blocks = corrective_key_blocks(obj)

    pose_bones = obj.pose.bones
    for i, name in enumerate(JOINT_NAMES):
        pose_bone = pose_bones[name]
        if pose_bone.rotation_mode != "QUATERNION":
            pose_bone.rotation_mode = "QUATERNION"
        pose_bone.rotation_quaternion = quats[i].tolist()
        pose_bone.location = location.tolist() if i == 0 else (0.0, 0.0, 0.0)
        pose_bone.scale = (1.0, 1.0, 1.0)
    _set_correctives(key_blocks, rotmats)
    if undo_push and bpy.ops.ed.undo_push.poll():
        bpy.ops.ed.undo_push(message="Apply SMPL pose")
    return rotmats


def _set_correctives(key_blocks, rotmats) -> None:
    if key_blocks is not None:
        values = np.concatenate([[key_blocks[0].value], pose_corrective_features(rotmats)]).astype(np.float32)
        key_blocks.foreach_set("value", values)


def update_pose_correctives(obj) -> None:
    """Set the pose-corrective shape keys from the pose the bones show (after posing them another way,
    e.g. ``smpl_rig.blender_retarget``); nothing for a body without correctives."""
    require_smpl_armature(obj)
    _set_correctives(corrective_key_blocks(obj), read_pose(obj))


def read_pose(obj) -> np.ndarray:
    """The SMPL-frame rotations (24, 3, 3) the armature shows: R_i = D_i M_i D_iᵀ (inverse of apply_pose).

    Reads ``rotation_quaternion`` for quaternion bones; for another rotation mode (an artist's change) the
    rotation part of ``matrix_basis``."""
    require_smpl_armature(obj)
    bone_frames = bone_frames_of(obj)
    pose_bones = [obj.pose.bones[name] for name in JOINT_NAMES]
    # one conversion for all quaternion bones (this runs after every reply, for the corrective keys)
    quats = np.array([b.rotation_quaternion for b in pose_bones], dtype=np.float64)
    local = rot.quat_wxyz_to_rotmat(quats)
    for i, pose_bone in enumerate(pose_bones):
        if pose_bone.rotation_mode != "QUATERNION":
            local[i] = rot.orthonormalize_rotmat(np.array(pose_bone.matrix_basis.to_3x3(), dtype=np.float64))
    return bones.smpl_rotmats_from_pose_bones(bone_frames, local)


def read_translation(obj) -> np.ndarray:
    """The SMPL ``transl`` (3,) shown by the pelvis bone's location: t = D_0 · location."""
    require_smpl_armature(obj)
    return bones.translation_from_location(bone_frames_of(obj), obj.pose.bones[JOINT_NAMES[0]].location)


def world_joint_positions(obj, *, update: bool = True) -> np.ndarray:
    """World-space positions (24, 3) of the posed joints (pose-bone heads), Blender frame.

    update: evaluate the view layer first so the heads reflect the latest pose."""
    require_smpl_armature(obj)
    if update:
        bpy.context.view_layer.update()
    world = np.array(obj.matrix_world, dtype=np.float64)
    heads = np.array([obj.pose.bones[name].head for name in JOINT_NAMES], dtype=np.float64)
    return heads @ world[:3, :3].T + world[:3, 3]
