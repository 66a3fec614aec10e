"""SMPL bodies as Blender armatures: build, pose, read back, keyframe, import AMASS motion.

The only module of ``smpl_rig`` that imports ``bpy``. Works in Blender 3.4–5.x; version-specific animation
APIs (slotted actions from 4.4 on) are chosen by ``bpy.app.version``.

Frames and the bone formula (``shared/docs/conventions.md``):

- every pose handed in is in the SMPL model frame; identity global orientation = upright, facing −Y;
- SMPL → Blender world is C = Rx(+90°): (x, y, z) → (x, −z, y); the armature object sits at the origin;
- a bone with rest orientation B_i = ``bone.matrix_local.to_3x3()`` gets the pose-bone rotation
  M_i = D_iᵀ R_i D_i with D_i = Cᵀ B_i, so any bone direction and roll poses correctly.

Public functions: ``build_armature``, ``apply_pose``, ``read_pose``, ``read_translation``, ``key_pose``,
``key_sequence``, ``load_amass``, ``is_smpl_armature``, ``find_smpl_armatures``, ``world_joint_positions``,
``rest_joints``, ``body_mesh``, ``pose_bone_quaternions``, ``pose_corrective_features``.
Reference and a script example: ``docs/blender_api.md``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import bpy
import numpy as np

from . import amass, frames
from . import rotations as rot
from .body import NUM_POSE_FEATURES, pose_corrective_features
from .skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS, PARENTS, primary_child

__all__ = [
    "build_armature", "apply_pose", "read_pose", "read_translation", "key_pose", "key_sequence",
    "load_amass", "AmassImport", "is_smpl_armature", "world_joint_positions", "rest_joints", "body_mesh",
    "pose_corrective_features", "pose_bone_quaternions", "find_smpl_armatures", "MARKER", "DEFAULT_AMASS_FPS",
]

MARKER = "smpl_rig"                 # custom property on the armature object (a group of rest data)
MESH_MARKER = "smpl_rig_mesh"       # custom property on the skinned mesh object
FORMAT_VERSION = 1
CORRECTIVE_PREFIX = "pose_corrective"
CORRECTIVE_RANGE = 2.0              # entries of R − I lie in [−2, 2]; shape-key sliders must allow that
DEFAULT_AMASS_FPS = amass.DEFAULT_FPS
ROTMAT_TOLERANCE = 1e-4             # how far from orthonormal a given matrix may be (float32 model output)
LEAF_LENGTH_RATIO = 0.6             # a leaf bone continues its parent's direction at this fraction of its length
MIN_BONE_RATIO = 0.02               # shortest bone, as a fraction of body height (Blender drops zero-length bones)
FACING_ROLL_LIMIT = 0.7             # bones more aligned than this with "forward" roll toward "up" instead

_C = frames.SMPL_TO_BLENDER
_FORWARD = np.array([0.0, -1.0, 0.0])   # the body's front in Blender (SMPL +Z)
_UP = np.array([0.0, 0.0, 1.0])
_SLOTTED_ACTIONS = bpy.app.version >= (4, 4, 0)
_FCURVE_GROUP_ARG = bpy.app.version >= (5, 0, 0)
_INTERPOLATION = {"CONSTANT": 0, "LINEAR": 1, "BEZIER": 2}


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


def _require_smpl_armature(obj) -> None:
    problem = _smpl_armature_problem(obj)
    if problem is not None:
        raise ValueError(problem)


def _require_poseable(obj) -> None:
    """An SMPL armature outside Edit Mode (there, bone rest matrices lag behind the edit bones)."""
    _require_smpl_armature(obj)
    if obj.mode == "EDIT":
        raise ValueError(f"armature {obj.name!r} is in Edit Mode; switch to Object or Pose Mode to pose it")


def rest_joints(obj) -> np.ndarray:
    """The rest joints (24, 3) of the body the armature was built from, SMPL frame, metres."""
    _require_smpl_armature(obj)
    return np.asarray(obj[MARKER]["rest_joints"], dtype=np.float64).reshape(NUM_JOINTS, 3)


def body_mesh(obj):
    """The skinned mesh object built with the armature, or None if it was deleted."""
    for child in obj.children:
        if child.type == "MESH" and child.get(MESH_MARKER):
            return child
    return None


def _corrective_key_blocks(obj):
    """The mesh's shape-key collection when it carries the 207 pose correctives in order, else None."""
    mesh_obj = body_mesh(obj)
    keys = mesh_obj.data.shape_keys if mesh_obj is not None else None
    if keys is None or len(keys.key_blocks) != NUM_POSE_FEATURES + 1:
        return None
    first, last = keys.key_blocks[1].name, keys.key_blocks[-1].name
    if first != _corrective_name(0) or last != _corrective_name(NUM_POSE_FEATURES - 1):
        return None
    return keys.key_blocks


def _corrective_name(feature: int) -> str:
    joint, entry = divmod(feature, 9)
    return f"{CORRECTIVE_PREFIX}_{JOINT_NAMES[joint + 1]}_{entry // 3}{entry % 3}"


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


def _bone_tails(heads: np.ndarray, min_length: float) -> np.ndarray:
    """Tails (24, 3): each bone points to its primary child joint; a leaf (head, feet, hands) continues
    its parent's direction at LEAF_LENGTH_RATIO of the parent-to-leaf distance."""
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


def _roll_target(direction: np.ndarray) -> np.ndarray:
    """The rule for every bone's roll: its local Z axis points to the body's front (−Y) as far as the bone
    direction allows; bones that themselves point mostly forward or back (feet) put local Z up (+Z)."""
    unit = direction / np.linalg.norm(direction)
    return _UP if abs(float(unit @ _FORWARD)) > FACING_ROLL_LIMIT else _FORWARD


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
            bone.align_roll(_roll_target(tails[i] - heads[i]).tolist())
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
            block = mesh_obj.shape_key_add(name=_corrective_name(k), from_mix=False)
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
    tails = _bone_tails(heads, MIN_BONE_RATIO * max(height, 1e-3))

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

def _bone_frames(obj) -> np.ndarray:
    """D_i = Cᵀ B_i for every joint (24, 3, 3), from the bones' rest orientations in armature space."""
    bones = obj.data.bones
    rest = np.array([bones[name].matrix_local.to_3x3() for name in JOINT_NAMES], dtype=np.float64)
    return _C.T @ rot.orthonormalize_rotmat(rest)


def _check_rotmats(rotmats: np.ndarray, what: str) -> np.ndarray:
    gram_error = np.abs(rotmats @ np.swapaxes(rotmats, -1, -2) - np.eye(3)).max(initial=0.0)
    if gram_error > ROTMAT_TOLERANCE or np.any(np.linalg.det(rotmats) < 0):
        raise ValueError(f"{what} contains matrices that are not rotations (|R Rᵀ − I| = {gram_error:.2g})")
    return rotmats


def _pose_rotmats(pose, current=None) -> np.ndarray:
    """Any accepted pose form → validated SMPL-frame rotations (24, 3, 3) float64.

    A dict maps joint names to one rotation each ((3,) axis-angle, (3, 3), (6,) 6D or (4,) wxyz); joints
    it leaves out keep ``current`` (the armature's pose)."""
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
        return _check_rotmats(rotmats, "pose")
    try:
        array = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"pose must be an array of numbers, got {type(pose).__name__}: {error}") from None
    rotmats = rot.pose_to_rotmat(array, num_joints=NUM_JOINTS)
    if rotmats.shape != (NUM_JOINTS, 3, 3):
        raise ValueError(f"apply_pose takes one pose, got shape {array.shape} (use key_sequence for many)")
    return _check_rotmats(np.asarray(rotmats, dtype=np.float64), "pose")


def _check_global_orient(global_orient: str) -> None:
    if global_orient not in ("keep", "upright"):
        raise ValueError(f"global_orient must be 'keep' or 'upright', got {global_orient!r}")


def _check_translation(translation, count: int | None = None) -> np.ndarray | None:
    if translation is None:
        return None
    t = np.asarray(translation, dtype=np.float64)
    expected = (3,) if count is None else (count, 3)
    if t.shape != expected or not np.all(np.isfinite(t)):
        raise ValueError(f"translation must be finite {expected}, got shape {t.shape}")
    return t


def _pelvis_location(bone_frames: np.ndarray, translation) -> np.ndarray:
    """SMPL translation (..., 3) → the pelvis pose-bone location (bone-local rest space): B_0ᵀ C t = D_0ᵀ t."""
    if translation is None:
        return np.zeros(3)
    return np.asarray(translation) @ bone_frames[0]


def _pose_bone_quats(bone_frames: np.ndarray, rotmats: np.ndarray) -> np.ndarray:
    """M_i = D_iᵀ R_i D_i as quaternions (..., 24, 4), w first."""
    local = np.swapaxes(bone_frames, -1, -2) @ rotmats @ bone_frames
    return rot.rotmat_to_quat_wxyz(local)


def pose_bone_quaternions(obj, rotmats) -> np.ndarray:
    """The pose-bone quaternions (..., 24, 4), w first, that show SMPL rotations (..., 24, 3, 3) on this
    armature: M_i = D_iᵀ R_i D_i (no sign alignment; see ``rotations.quat_wxyz_align_signs``)."""
    _require_smpl_armature(obj)
    rotmats = np.asarray(rotmats, dtype=np.float64)
    if rotmats.shape[-3:] != (NUM_JOINTS, 3, 3):
        raise ValueError(f"rotmats must be (..., 24, 3, 3), got {rotmats.shape}")
    return _pose_bone_quats(_bone_frames(obj), rotmats)


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
    _require_poseable(obj)
    _check_global_orient(global_orient)
    rotmats = _pose_rotmats(pose, current=read_pose(obj) if isinstance(pose, dict) else None)
    translation = _check_translation(translation)
    if global_orient == "upright":
        rotmats[0] = np.eye(3)

    bone_frames = _bone_frames(obj)
    quats = _pose_bone_quats(bone_frames, rotmats)
    location = _pelvis_location(bone_frames, translation)
    key_blocks = _corrective_key_blocks(obj)

    pose_bones = obj.pose.bones
    for i, name in enumerate(JOINT_NAMES):
        pose_bone = pose_bones[name]
        if pose_bone.rotation_mode != "QUATERNION":
            pose_bone.rotation_mode = "QUATERNION"
        pose_bone.rotation_quaternion = quats[i].tolist()
        pose_bone.location = location.tolist() if i == 0 else (0.0, 0.0, 0.0)
        pose_bone.scale = (1.0, 1.0, 1.0)
    if key_blocks is not None:
        values = np.concatenate([[key_blocks[0].value], pose_corrective_features(rotmats)]).astype(np.float32)
        key_blocks.foreach_set("value", values)
    if undo_push and bpy.ops.ed.undo_push.poll():
        bpy.ops.ed.undo_push(message="Apply SMPL pose")
    return rotmats


def read_pose(obj) -> np.ndarray:
    """The SMPL-frame rotations (24, 3, 3) the armature shows: R_i = D_i M_i D_iᵀ (inverse of apply_pose).

    Reads ``rotation_quaternion`` for quaternion bones; for another rotation mode (an artist's change) the
    rotation part of ``matrix_basis``."""
    _require_smpl_armature(obj)
    bone_frames = _bone_frames(obj)
    local = np.empty((NUM_JOINTS, 3, 3))
    for i, name in enumerate(JOINT_NAMES):
        pose_bone = obj.pose.bones[name]
        if pose_bone.rotation_mode == "QUATERNION":
            local[i] = rot.quat_wxyz_to_rotmat(np.array(pose_bone.rotation_quaternion, dtype=np.float64))
        else:
            local[i] = rot.orthonormalize_rotmat(np.array(pose_bone.matrix_basis.to_3x3(), dtype=np.float64))
    return bone_frames @ local @ np.swapaxes(bone_frames, -1, -2)


def read_translation(obj) -> np.ndarray:
    """The SMPL ``transl`` (3,) shown by the pelvis bone's location: t = D_0 · location."""
    _require_smpl_armature(obj)
    return _bone_frames(obj)[0] @ np.array(obj.pose.bones[JOINT_NAMES[0]].location, dtype=np.float64)


def world_joint_positions(obj, *, update: bool = True) -> np.ndarray:
    """World-space positions (24, 3) of the posed joints (pose-bone heads), Blender frame.

    update: evaluate the view layer first so the heads reflect the latest pose."""
    _require_smpl_armature(obj)
    if update:
        bpy.context.view_layer.update()
    world = np.array(obj.matrix_world, dtype=np.float64)
    heads = np.array([obj.pose.bones[name].head for name in JOINT_NAMES], dtype=np.float64)
    return heads @ world[:3, :3].T + world[:3, 3]


# --- animation curves ------------------------------------------------------------------------------------

def _channels(id_data, action_name: str):
    """What holds the F-curves animating ``id_data`` (both kinds have ``.fcurves`` and ``.groups``): its
    slot's channelbag on Blender ≥ 4.4 (slotted actions), the action itself before. Creates the action,
    slot, layer and strip when missing."""
    anim = id_data.animation_data or id_data.animation_data_create()
    if anim.action is None:
        anim.action = bpy.data.actions.new(action_name)
    action = anim.action
    if not _SLOTTED_ACTIONS:
        return action
    slot = anim.action_slot
    if slot is None:
        slot = action.slots.new(id_type=id_data.id_type, name=id_data.name)
        anim.action_slot = slot
    layer = action.layers[0] if len(action.layers) else action.layers.new("Layer")
    strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
    return strip.channelbag(slot, ensure=True)


def _fcurve(channels, data_path: str, index: int, group: str):
    """The F-curve for (data_path, index), created in ``group`` when missing."""
    curve = channels.fcurves.find(data_path, index=index)
    if curve is not None:
        return curve
    if not _SLOTTED_ACTIONS:
        return channels.fcurves.new(data_path, index=index, action_group=group)
    if _FCURVE_GROUP_ARG:
        return channels.fcurves.new(data_path, index=index, group_name=group)
    curve = channels.fcurves.new(data_path, index=index)   # Blender 4.4–4.5: group set afterwards
    curve.group = channels.groups.get(group) or channels.groups.new(group)
    return curve


def _key_frames(curve) -> np.ndarray:
    count = len(curve.keyframe_points)
    co = np.empty(2 * count, dtype=np.float32)
    curve.keyframe_points.foreach_get("co", co)
    return co[0::2].astype(np.float64)


def _neighbour_key_value(curves, frame: float, *, or_after: bool) -> np.ndarray | None:
    """Values of a multi-channel property (one curve per channel) at its last key before ``frame``; with
    ``or_after``, at its first key after when none is before. None when there is no such key."""
    times = _key_frames(curves[0])
    before, after = times[times < frame - 1e-4], times[times > frame + 1e-4]
    if len(before):
        reference = before.max()
    elif or_after and len(after):
        reference = after.min()
    else:
        return None
    return np.array([c.evaluate(reference) for c in curves], dtype=np.float64)


def _write_keys(curve, frames_: np.ndarray, values: np.ndarray, interpolation: int) -> None:
    """Replace the curve's keys in [frames_.min(), frames_.max()] by (frames_, values) in one bulk write."""
    points = curve.keyframe_points
    count = len(points)
    lo, hi = frames_.min() - 1e-4, frames_.max() + 1e-4
    if count:
        co = np.empty(2 * count, dtype=np.float32)
        kinds = np.empty(count, dtype=np.int32)
        points.foreach_get("co", co)
        points.foreach_get("interpolation", kinds)
        keep = (co[0::2] < lo) | (co[0::2] > hi)
        frames_ = np.concatenate([co[0::2][keep], frames_])
        values = np.concatenate([co[1::2][keep], values])
        kinds = np.concatenate([kinds[keep], np.full(len(values) - keep.sum(), interpolation, dtype=np.int32)])
        order = np.argsort(frames_, kind="stable")
        frames_, values, kinds = frames_[order], values[order], kinds[order]
        if hasattr(points, "clear"):
            points.clear()
        else:                      # Blender 3.4 has no clear()
            while len(points):
                points.remove(points[-1], fast=True)
    else:
        kinds = np.full(len(frames_), interpolation, dtype=np.int32)
    points.add(len(frames_))
    points.foreach_set("co", np.stack([frames_, values], -1).astype(np.float32).ravel())
    points.foreach_set("interpolation", kinds)
    curve.update()


def _insert_key(curve, frame: float, value: float) -> None:
    curve.keyframe_points.insert(frame, value, options={"FAST"})


def _quat_curves(channels, name: str):
    path = f'pose.bones["{name}"].rotation_quaternion'
    return [_fcurve(channels, path, k, name) for k in range(4)]


def _location_curves(channels, name: str):
    path = f'pose.bones["{name}"].location'
    return [_fcurve(channels, path, k, name) for k in range(3)]


def _corrective_curves(key_blocks):
    channels = _channels(key_blocks.id_data, f"{key_blocks.id_data.name}_correctives")
    return [_fcurve(channels, f'key_blocks["{key_blocks[k + 1].name}"].value', 0, "pose correctives")
            for k in range(NUM_POSE_FEATURES)]


def key_pose(obj, frame: float) -> None:
    """Keyframe the armature's current pose at ``frame``: rotation quaternions of the 24 bones (each
    sign-aligned with that bone's previous key, so interpolation takes the short way), the pelvis location
    when it is translated or already animated, and the pose-corrective shape-key values."""
    _require_poseable(obj)
    frame = float(frame)
    if not math.isfinite(frame):
        raise ValueError(f"frame must be a finite number, got {frame}")
    other_modes = [n for n in JOINT_NAMES if obj.pose.bones[n].rotation_mode != "QUATERNION"]
    if other_modes:
        raise ValueError(f"bones {', '.join(other_modes)} are not in quaternion rotation mode; SMPL keys are "
                         f"quaternions (apply_pose sets that mode)")
    channels = _channels(obj, f"{obj.name}_action")
    for name in JOINT_NAMES:
        pose_bone = obj.pose.bones[name]
        curves = _quat_curves(channels, name)
        quat = np.array(pose_bone.rotation_quaternion, dtype=np.float64)   # w, x, y, z
        previous = _neighbour_key_value(curves, frame, or_after=True)
        if previous is not None and float(previous @ quat) < 0:
            quat = -quat
            pose_bone.rotation_quaternion = quat.tolist()   # same rotation, now continuous with the keys
        for curve, value in zip(curves, quat):
            _insert_key(curve, frame, float(value))
            curve.update()
    pelvis = obj.pose.bones[JOINT_NAMES[0]]
    location_animated = channels.fcurves.find(f'pose.bones["{JOINT_NAMES[0]}"].location') is not None
    if location_animated or any(abs(v) > 0 for v in pelvis.location):
        for curve, value in zip(_location_curves(channels, JOINT_NAMES[0]), pelvis.location):
            _insert_key(curve, frame, float(value))
            curve.update()
    key_blocks = _corrective_key_blocks(obj)
    if key_blocks is not None:
        for k, curve in enumerate(_corrective_curves(key_blocks)):
            _insert_key(curve, frame, float(key_blocks[k + 1].value))
            curve.update()


def _scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def key_sequence(obj, poses, fps: float | None = None, start_frame: float | None = None, *,
                 translations=None, global_orient: str = "keep", interpolation: str = "LINEAR") -> np.ndarray:
    """Keyframe a motion in bulk (one ``keyframe_points.add`` + ``foreach_set`` per F-curve).

    poses: (n, 24, 3) axis-angle, (n, 24, 3, 3), (n, 24, 6) 6D or (n, 24, 4) wxyz, SMPL frame.
    fps: the motion's frame rate (default: the scene's); pose k is placed at time k / fps, i.e. on frame
        ``start_frame + k / fps × scene fps`` (fractional frames when the rates differ: resample first,
        as ``load_amass`` does, to land on whole frames).
    start_frame: frame of pose 0 (default: the scene's current frame).
    translations: optional (n, 3) SMPL ``transl`` per pose, keyed on the pelvis location.
    global_orient: "keep" or "upright" (joint 0 replaced by identity).
    interpolation: "LINEAR" (default), "BEZIER" or "CONSTANT" for the new keys.

    Quaternions are sign-aligned over time (and with any key just before the range); keys already in the
    range are replaced, keys outside it kept. Pose-corrective shape-key values are keyed too. Everything
    is validated before any key is written. Returns the frames used (n,).
    """
    _require_poseable(obj)
    _check_global_orient(global_orient)
    if interpolation not in _INTERPOLATION:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}, got {interpolation!r}")
    try:
        array = np.asarray(poses, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"poses must be an array of numbers: {error}") from None
    if array.ndim < 3 or array.shape[0] == 0:
        raise ValueError(f"poses must be (n, 24, ...) with n ≥ 1, got shape {array.shape}")
    rotmats = np.array(rot.pose_to_rotmat(array, num_joints=NUM_JOINTS), dtype=np.float64)
    if rotmats.shape[1:] != (NUM_JOINTS, 3, 3) or rotmats.ndim != 4:
        raise ValueError(f"poses must be (n, 24, ...) for one motion, got shape {array.shape}")
    _check_rotmats(rotmats, "poses")
    count = len(rotmats)
    translations = _check_translation(translations, count)
    scene = bpy.context.scene
    scene_fps = _scene_fps(scene)
    fps = scene_fps if fps is None else float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    start = float(scene.frame_current if start_frame is None else start_frame)
    if not math.isfinite(start):
        raise ValueError(f"start_frame must be finite, got {start_frame}")
    if global_orient == "upright":
        rotmats[:, 0] = np.eye(3)

    frame_numbers = start + np.arange(count) * (scene_fps / fps)
    bone_frames = _bone_frames(obj)
    quats = rot.quat_wxyz_align_signs(_pose_bone_quats(bone_frames, rotmats), axis=0)  # (n, 24, 4)
    channels = _channels(obj, f"{obj.name}_action")
    kind = _INTERPOLATION[interpolation]
    for i, name in enumerate(JOINT_NAMES):
        curves = _quat_curves(channels, name)
        previous = _neighbour_key_value(curves, frame_numbers[0], or_after=False)
        if previous is not None and float(previous @ quats[0, i]) < 0:
            quats[:, i] *= -1   # continue the keys already before this range without a flip
        for k, curve in enumerate(curves):
            _write_keys(curve, frame_numbers, quats[:, i, k], kind)
    pelvis_location_path = f'pose.bones["{JOINT_NAMES[0]}"].location'
    if translations is not None or channels.fcurves.find(pelvis_location_path) is not None:
        # No translations over a range of an already translated motion means "at rest", as in apply_pose.
        locations = _pelvis_location(bone_frames, translations if translations is not None else np.zeros((count, 3)))
        for k, curve in enumerate(_location_curves(channels, JOINT_NAMES[0])):
            _write_keys(curve, frame_numbers, locations[:, k], kind)
    key_blocks = _corrective_key_blocks(obj)
    if key_blocks is not None:
        features = pose_corrective_features(rotmats)
        for k, curve in enumerate(_corrective_curves(key_blocks)):
            _write_keys(curve, frame_numbers, features[:, k], kind)
    return frame_numbers


# --- AMASS ------------------------------------------------------------------------------------------------

@dataclass
class AmassImport:
    """What ``load_amass`` keyed: ``num_frames`` scene frames from ``start_frame`` to ``end_frame``,
    covering ``duration_s`` seconds of a motion recorded at ``source_fps`` (``scene_fps`` in the scene);
    ``betas`` as stored in the file (the armature keeps its own rest skeleton)."""
    num_frames: int
    start_frame: int
    end_frame: int
    source_fps: float
    scene_fps: float
    duration_s: float
    betas: np.ndarray


def load_amass(path, obj, *, fps: float | None = None, start_frame: int | None = None,
               set_frame_range: bool = True) -> AmassImport:
    """Import an AMASS-layout ``.npz`` motion onto an SMPL armature.

    The file holds ``poses`` (n, 156) SMPL-H or (n, 72) SMPL axis-angle (also (n, 165) SMPL-X, (n, 66)),
    ``trans`` (n, 3) (optional), ``betas`` (optional), and ``mocap_frame_rate`` or ``mocap_framerate``.
    fps: the motion's frame rate, overriding the file's; when neither gives one, 120 fps with a warning.
    start_frame: first scene frame (default: the scene's start frame).
    set_frame_range: extend the scene's frame range to show the whole motion.

    AMASS data is Z-up: the global orientation and translation are re-expressed in the SMPL frame about
    the armature's rest pelvis (``smpl_rig.frames``). The motion is resampled by TIME onto the scene's
    frame rate (slerp between neighbouring recorded poses), so its duration is kept, then keyed with
    ``key_sequence``. The armature keeps its own rest skeleton (the file's betas are returned, not applied).
    """
    _require_poseable(obj)
    motion = amass.read_amass(path, fps=fps)
    rotmats, translations = motion.rotmats(), motion.translations.copy()

    # Z-up → SMPL frame; the global rotation pivots about the rest pelvis J0.
    pelvis_rest = rest_joints(obj)[0]
    rotmats[:, 0] = frames.amass_to_smpl_orient(rotmats[:, 0])
    _, translations = frames.change_global_frame(np.eye(3), frames.AMASS_TO_SMPL, translations, pelvis_rest)

    scene = bpy.context.scene
    scene_fps = _scene_fps(scene)
    rotmats, translations, duration = amass.resample_by_time(rotmats, translations, motion.fps, scene_fps)
    start = int(scene.frame_start if start_frame is None else start_frame)
    key_sequence(obj, rotmats, fps=scene_fps, start_frame=start, translations=translations)
    end = start + len(rotmats) - 1
    if set_frame_range:
        scene.frame_start = min(scene.frame_start, start)
        scene.frame_end = max(scene.frame_end, end)
    return AmassImport(num_frames=len(rotmats), start_frame=start, end_frame=end, source_fps=motion.fps,
                       scene_fps=scene_fps, duration_s=duration, betas=motion.betas)
