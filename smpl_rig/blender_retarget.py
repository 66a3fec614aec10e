"""SMPL poses on the artist's own armature: the thin Blender layer over ``smpl_rig.retarget``.

Reads a rig once (``calibrate``: rest joints, the rest floor, and how each driven bone follows the others,
by turning each alone) into a ``retarget.RigSolver``, then poses it in closed form (``apply_pose``): numpy
(``retarget.solve``) computes every pose-bone rotation, one pass writes them on the bones. The mapping lives
on the armature object as a JSON custom property (``MAPPING_PROPERTY``), so it is saved in the .blend;
without one it is detected from bone names (``rig_names``).

Public: ``apply_pose`` (with ``ApplyOptions``), ``describe``, ``rig_mapping``, ``store_mapping``,
``retarget_problem``, ``is_retargetable``, ``world_joint_positions``, ``lowest_point``, ``save_preset``,
``load_preset``, ``calibrate``, ``forget_calibration``, ``reference_joints``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from . import blender as smpl_blender
from . import affine, blender_skinning, bones, retarget, rig_names
from . import rotations as rot
from .body import load as load_body
from .skeleton import JOINT_NAMES, NUM_JOINTS

__all__ = ["MAPPING_PROPERTY", "LAST_POSE_PROPERTY", "ApplyOptions", "rig_mapping", "store_mapping",
           "retarget_problem", "is_retargetable", "apply_pose", "describe", "world_joint_positions",
           "lowest_point", "save_preset", "load_preset", "calibrate", "forget_calibration", "reference_joints"]

MAPPING_PROPERTY = "posegpt_rig_mapping"       # JSON preset (``rig_names.mapping_to_json``) on the armature object
LAST_POSE_PROPERTY = "posegpt_last_pose"       # the driven bones' quaternions after the last apply, flat
CHANGED_TOLERANCE = 1e-4                       # a quaternion further than this from the last apply was edited
_PROBE_ANGLE = 0.5                             # radians: how far calibration turns each driven bone
_QUATERNION_MODE = 0                           # PoseBone.rotation_mode read as an integer by foreach_get
_CACHE: dict = {}


@dataclass
class ApplyOptions:
    """How a pose goes on the bones: ``strength`` 0..1 blends from the current pose (slerp per bone);
    ``only_selected`` writes only selected pose bones; ``keep_changed`` leaves bones edited by hand since
    the last apply; ``mirror`` swaps left and right; ``floor_contact`` rests the lowest point of the body
    (mesh, else joints) on the floor it stood on in rest pose."""
    strength: float = 1.0
    only_selected: bool = False
    keep_changed: bool = False
    mirror: bool = False
    floor_contact: bool = True


# --- the mapping on the armature ----------------------------------------------------------------------------

def rig_mapping(obj) -> rig_names.RigMapping:
    """The armature's mapping: the one stored on it, else detected from its bone names."""
    text = obj.get(MAPPING_PROPERTY) if obj is not None else None
    if isinstance(text, str) and text:
        try:
            return rig_names.mapping_from_json(text)
        except ValueError:
            pass
    return rig_names.detect_mapping([b.name for b in obj.data.bones])


def _current_mapping(obj) -> tuple[rig_names.RigMapping, str]:
    """``rig_mapping`` and its JSON, parsed once per distinct stored text (apply runs it every time)."""
    text = obj.get(MAPPING_PROPERTY)
    if isinstance(text, str) and text:
        cached = _CACHE.get(("mapping", text))
        if cached is None:
            cached = _CACHE[("mapping", text)] = rig_mapping(obj)
        return cached, text
    mapping = rig_mapping(obj)
    return mapping, rig_names.mapping_to_json(mapping)


def store_mapping(obj, mapping: rig_names.RigMapping) -> None:
    """Keep ``mapping`` on the armature object (saved with the .blend)."""
    obj[MAPPING_PROPERTY] = rig_names.mapping_to_json(mapping)
    forget_calibration(obj)


def save_preset(path, mapping: rig_names.RigMapping) -> None:
    Path(path).write_text(rig_names.mapping_to_json(mapping))


def load_preset(path) -> rig_names.RigMapping:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ValueError(f"cannot read the mapping preset {path}: {error}") from None
    return rig_names.mapping_from_json(text)


def retarget_problem(obj, mapping: rig_names.RigMapping | None = None) -> str | None:
    """One sentence saying why ``obj`` cannot be posed, or None when it can."""
    if obj is None or getattr(obj, "type", None) != "ARMATURE":
        return "Select an armature: PoseGPT poses armatures (a humanoid rig or the body it creates)."
    mapping = mapping or rig_mapping(obj)
    absent = [b for b in mapping.driven_bones() + list(mapping.measure.values()) if b not in obj.pose.bones]
    if absent:
        return (f"The mapping names bones this armature does not have ({', '.join(absent[:4])}): fix them in the "
                f"Mapping table or detect the mapping again.")
    return rig_names.mapping_problem(mapping)


def is_retargetable(obj) -> bool:
    return retarget_problem(obj) is None


# --- calibration ---------------------------------------------------------------------------------------------

@dataclass
class _Calibration:
    """What ``calibrate`` read from a rig: the numpy solver plus what only Blender needs."""
    mapping: rig_names.RigMapping
    solver: retarget.RigSolver
    nonrigid: list              # bones whose parent relation is not rigid: corrected after one evaluation
    rest_floor: float           # world height of the lowest point in rest pose
    indices: list               # index of each of ``solver.names`` in ``obj.pose.bones``
    switch_indices: list        # index of each switch's bone in ``obj.pose.bones`` (None: absent)
    bone_count: int             # bones in the rig when it was read
    rest_fingerprint: np.ndarray  # every bone's rest head and tail then (``_rest_fingerprint``)

    @property
    def names(self) -> list:
        return self.solver.names

    @property
    def root(self) -> str | None:
        return self.solver.names[self.solver.root] if self.solver.root is not None else None


def _rest_fingerprint(obj, count: int) -> np.ndarray | None:
    """Every bone's rest head and tail (armature space), read in bulk, for a rig of ``count`` bones; None when
    it has another number of bones. (Counting bones, or finding one by name, walks a linked list: on a
    700-bone rig that would cost more than the apply itself.)"""
    values = np.empty(6 * count, dtype=np.float32)
    try:
        obj.data.bones.foreach_get("head_local", values[:3 * count])
        obj.data.bones.foreach_get("tail_local", values[3 * count:])
    except (RuntimeError, TypeError, ValueError):       # the array size no longer matches the bones
        return None
    return values


_INTERNAL_PREFIXES = ("ORG-", "MCH-", "DEF-")   # Rigify's internal bones: driven by constraints, never posed


def _chain_bones(obj, mapping) -> list:
    """Plain bones between two mapped bones (a fourth spine bone, a second neck bone, a palm): posed with the
    driven ones (torso chains share the joint's rotation, others stay at rest), so a chain's end lands where
    SMPL's joint does. Bones with constraints and Rigify's internal bones are left alone; so are bones off the
    chains (twist bones, fingers)."""
    mapped = np.array([j in mapping.joints for j in JOINT_NAMES])
    driven = set(mapping.driven_bones())
    pose_bones = obj.pose.bones
    chain = []
    for j, ends in enumerate(retarget.next_mapped_joints(mapped)):
        if not mapped[j]:
            continue
        top = mapping.joints[JOINT_NAMES[j]]
        for c in ends:
            path, bone = [], pose_bones[mapping.joints[JOINT_NAMES[c]]].parent
            while bone is not None and bone.name != top:
                path.append(bone)
                bone = bone.parent
            if bone is None:
                continue
            for b in path:
                if (b.name not in driven and b.name not in chain and not b.constraints
                        and not b.name.startswith(_INTERNAL_PREFIXES)):
                    chain.append(b.name)
    return chain


def forget_calibration(obj=None) -> None:
    """Drop cached rig data (all of it, or one armature's) after its rest pose, mapping or weights changed."""
    for key in [k for k in _CACHE if k != "reference" and (obj is None or k[0] == obj.name)]:
        del _CACHE[key]
    blender_skinning.forget(None if obj is None else obj.name)


def _matrices(obj, names) -> np.ndarray:
    pose_bones = obj.pose.bones
    return np.array([pose_bones[n].matrix for n in names], dtype=np.float64)


def _skinned_meshes(obj):
    meshes = []
    for other in bpy.context.scene.objects:
        if other.type != "MESH":
            continue
        if any(m.type == "ARMATURE" and m.object is obj for m in other.modifiers):
            meshes.append(other)
    return meshes


def lowest_point(obj, mapping: rig_names.RigMapping | None = None, *, use_skinning: bool = True) -> float:
    """World height of the lowest point of the body: its skinned meshes' deformed vertices, else its joints.

    Where Blender's deformation is plain linear blend skinning of the bones' own channels (the add-on's SMPL
    bodies, most simple rigs) ``blender_skinning`` computes it from the pose just written; otherwise
    the view layer is evaluated first (constraints, other modifiers, shape keys) and the evaluated meshes read."""
    fast = blender_skinning.lowest_vertex_z(obj, _skinned_meshes(obj)) if use_skinning else None
    if fast is not None:
        return fast
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    lows = []
    for mesh_obj in _skinned_meshes(obj):
        evaluated = mesh_obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        try:
            count = len(mesh.vertices)
            if count:
                co = np.empty(count * 3, dtype=np.float32)
                mesh.vertices.foreach_get("co", co)
                world = np.array(evaluated.matrix_world, dtype=np.float64)
                lows.append(float((co.reshape(-1, 3).astype(np.float64) @ world[:3, :3].T + world[:3, 3])[:, 2].min()))
        finally:
            evaluated.to_mesh_clear()
    if lows:
        return min(lows)
    joints = world_joint_positions(obj, mapping, update=False)
    return float(np.nanmin(joints[:, 2]))


def reference_joints() -> np.ndarray:
    """The SMPL rest joints (24, 3) retargeting aligns rigs to: the mannequin's, SMPL frame."""
    if "reference" not in _CACHE:
        _CACHE["reference"] = load_body("mannequin").rest_joints
    return _CACHE["reference"]


def calibrate(obj, mapping: rig_names.RigMapping | None = None) -> _Calibration:
    """Read everything ``apply_pose`` needs from the rig (cached until its rest pose or mapping changes).

    With the driven bones at identity (their pose restored afterwards): rest joints and the rest floor; then
    each driven bone turned alone, to see which driven bone every other one follows and whether rigidly
    (``retarget.follow_relations``; a generated Rigify rig's FK chains hang from constrained MCH bones, and
    its neck follows the torso by half: ``retarget.BlendModel``)."""
    if obj is None or getattr(obj, "type", None) != "ARMATURE":
        raise ValueError(retarget_problem(obj))
    if mapping is None:
        mapping, text = _current_mapping(obj)
    else:
        text = rig_names.mapping_to_json(mapping)
    key = (obj.name, obj.data.name, text)
    cached = _CACHE.get(key)
    if cached is not None:
        rest = _rest_fingerprint(obj, cached.bone_count)
        if rest is not None and np.array_equal(rest, cached.rest_fingerprint):
            if not obj.get(MAPPING_PROPERTY):   # another object of the same names and rest (a new file, say)
                obj[MAPPING_PROPERTY] = text
            return cached
    problem = retarget_problem(obj, mapping)
    if problem:
        raise ValueError(problem)
    chain = _chain_bones(obj, mapping)
    driven = mapping.driven_bones() + chain
    at_rest = set(mapping.reset) | set(chain)
    pose_bones = obj.pose.bones
    saved = {n: (pose_bones[n].rotation_mode, tuple(pose_bones[n].rotation_quaternion),
                 tuple(pose_bones[n].rotation_euler), tuple(pose_bones[n].location), tuple(pose_bones[n].scale))
             for n in driven}
    _set_switches(obj, mapping)
    try:
        for n in driven:
            pb = pose_bones[n]
            pb.rotation_mode = "QUATERNION"
            pb.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
            pb.location = (0.0, 0.0, 0.0)
            pb.scale = (1.0, 1.0, 1.0)
        bpy.context.view_layer.update()
        rest = _matrices(obj, driven)                                   # (k, 4, 4) identity-pose matrices
        mapped = np.array([j in mapping.joints for j in JOINT_NAMES])
        rig_joints = np.zeros((NUM_JOINTS, 3))
        for j, name in enumerate(JOINT_NAMES):
            if mapped[j]:
                rig_joints[j] = np.array(pose_bones[mapping.measure_bone(name)].head, dtype=np.float64)
        rest_floor = lowest_point(obj, mapping)
        probes = {}
        for n in driven:
            if n in at_rest:                     # always at identity: its turning never has to be followed
                continue
            pose_bones[n].rotation_quaternion = _PROBE
            bpy.context.view_layer.update()
            probes[n] = _matrices(obj, driven)[:, :3, :3]
            pose_bones[n].rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
        parent, relation, nonrigid = retarget.follow_relations(driven, rest, probes)
        blends = {n: _blend_model(obj, n, parent[n], rest[driven.index(n)]) for n in nonrigid}
        bpy.context.view_layer.update()
    finally:
        for n, (mode, quat, euler, loc, scale) in saved.items():
            pb = pose_bones[n]
            pb.rotation_mode = mode
            pb.rotation_quaternion, pb.rotation_euler, pb.location, pb.scale = quat, euler, loc, scale

    frame = retarget.body_frame(rig_joints, mapped)
    # an armature smpl_rig.blender built is its own reference: Q = I, and the rule is exactly M = DᵀRD
    reference = smpl_blender.rest_joints(obj) if smpl_blender.is_smpl_armature(obj) else reference_joints()
    alignments = retarget.rest_alignments(rig_joints, reference, frame, mapped)
    hierarchy = {b.name: (b.parent.name if b.parent is not None else None) for b in obj.data.bones}
    blends = {n: model for n, model in blends.items() if model is not None}
    solver = retarget.build_solver(mapping, driven, rest, parent, relation, blends, frame, alignments, hierarchy,
                                   chain, retarget.leg_length(rig_joints, mapped)
                                   / retarget.leg_length(reference @ frame.T, mapped))
    mapped_position = {n: i for i, n in enumerate(solver.names[:len(solver.joint)])}
    nonrigid = [n for n in nonrigid if n not in blends or parent[n] not in mapped_position]
    bone_index = {pb.name: i for i, pb in enumerate(obj.pose.bones)}
    calibration = _Calibration(mapping=mapping, solver=solver, nonrigid=nonrigid, rest_floor=rest_floor,
                               indices=[bone_index[n] for n in solver.names],
                               switch_indices=[bone_index.get(b) for b, _, _ in mapping.switches],
                               bone_count=len(bone_index),
                               rest_fingerprint=_rest_fingerprint(obj, len(bone_index)))
    if not obj.get(MAPPING_PROPERTY):
        obj[MAPPING_PROPERTY] = text               # the detected mapping now lives in the .blend
    _CACHE[key] = calibration
    return calibration


_PROBE = tuple(rot.rotvec_to_quat_wxyz(np.array([0.3, 0.8, -0.5]) * _PROBE_ANGLE).tolist())


def _blend_model(obj, name, follow, rest_n) -> retarget.BlendModel | None:
    """For a bone whose parent chain holds one Copy Rotation/Transforms of another bone at an influence
    between 0 and 1 (Rigify's neck: half the torso), the ``retarget.BlendModel`` that a probe confirms; else
    None (such bones are then corrected after one evaluation)."""
    if follow is None:
        return None
    pose_bones = obj.pose.bones
    chain, bone = [], pose_bones[name].parent
    while bone is not None and bone.name != follow:
        chain.append(bone)
        bone = bone.parent
    blending = [(b, c) for b in chain for c in b.constraints
                if c.type in ("COPY_ROTATION", "COPY_TRANSFORMS") and c.enabled and 0.0 < c.influence < 1.0]
    if bone is None or len(blending) != 1:
        return None
    owner, constraint = blending[0]
    target = pose_bones.get(getattr(constraint, "subtarget", "")) if constraint.target is obj else None
    if target is None:
        return None
    rest_bones = obj.data.bones
    model = retarget.BlendModel(
        pre=rot.orthonormalize_rotmat(np.array(rest_bones[follow].matrix_local.to_3x3()).T
                                      @ np.array(rest_bones[owner.name].matrix_local.to_3x3())),
        still=rot.orthonormalize_rotmat(np.array(target.matrix, dtype=np.float64)[:3, :3]),
        w=float(constraint.influence),
        post=rot.orthonormalize_rotmat(np.array(owner.matrix, dtype=np.float64)[:3, :3].T @ rest_n[:3, :3]))
    pose_bones[follow].rotation_quaternion = _PROBE
    bpy.context.view_layer.update()
    actual = np.array(pose_bones[name].matrix, dtype=np.float64)[:3, :3]
    probed_follow = np.array(pose_bones[follow].matrix, dtype=np.float64)[:3, :3]
    pose_bones[follow].rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
    return model if np.allclose(retarget.blend_orientation(model, probed_follow), actual, atol=1e-4) else None


def _set_switches(obj, mapping, indices=None) -> None:
    """Set the mapping's rig switches (Rigify's IK/FK to FK) where they exist and differ. indices: the
    switch bones' indices in ``obj.pose.bones`` (a name lookup scans a big rig's bones)."""
    pose_bones = obj.pose.bones
    for k, (bone, prop, value) in enumerate(mapping.switches):
        pose_bone = pose_bones[indices[k]] if indices is not None and indices[k] is not None else None
        if pose_bone is None or pose_bone.name != bone:
            pose_bone = pose_bones.get(bone)
        current = pose_bone.get(prop) if pose_bone is not None else None
        if current is not None and current != value:
            pose_bone[prop] = value


# --- applying ------------------------------------------------------------------------------------------------

def _selected(pose_bone) -> bool:
    select = getattr(pose_bone, "select", None)            # Blender ≥ 5.0 selects pose bones
    return bool(select if select is not None else pose_bone.bone.select)


def apply_pose(obj, pose, *, options: ApplyOptions | None = None, global_orient: str = "keep",
               translation=None) -> np.ndarray:
    """Pose any humanoid armature with an SMPL pose (forms of ``smpl_rig.blender.apply_pose``, SMPL frame).

    The driven bones get quaternions (their rotation mode becomes QUATERNION); bones the mapping leaves out
    keep their pose; Rigify's IK/FK switches are set to FK. Raises ``ValueError`` with the one sentence of
    ``retarget_problem`` for a rig it cannot pose, before any bone changes. Returns the rotations (24, 3, 3).
    """
    options = options or ApplyOptions()
    if obj is None or getattr(obj, "type", None) != "ARMATURE":
        raise ValueError(retarget_problem(obj))
    if obj.mode == "EDIT":
        raise ValueError(f"armature {obj.name!r} is in Edit Mode; switch to Object or Pose Mode to pose it")
    bones.check_global_orient(global_orient)
    rest_pose = np.tile(np.eye(3), (NUM_JOINTS, 1, 1))
    rotmats = bones.pose_rotmats(pose, current=rest_pose if isinstance(pose, dict) else None)
    translation = bones.check_translation(translation)
    if not 0.0 <= float(options.strength) <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {options.strength}")
    calibration = calibrate(obj)                      # raises the one sentence for a rig it cannot pose
    if options.mirror:
        rotmats = retarget.mirror_rotmats(rotmats)
        if translation is not None:
            translation = translation * np.array([-1.0, 1.0, 1.0])
    if global_orient == "upright":
        rotmats[0] = np.eye(3)

    _set_switches(obj, calibration.mapping, calibration.switch_indices)
    quats, root_location, targets = retarget.solve(calibration.solver, rotmats, translation)
    names = calibration.names
    if not (options.only_selected or options.keep_changed or options.strength < 1.0):
        _write_all(obj, calibration, quats)
        pose_bones, written, shown = None, list(names), quats.copy()
    else:
        pose_bones = _driven_pose_bones(obj, calibration)
        written, shown = _write_some(pose_bones, names, quats, options, obj.get(LAST_POSE_PROPERTY))
    if calibration.nonrigid and any(n in written for n in calibration.nonrigid):
        _correct_nonrigid(obj, calibration, targets, options, set(written))
    root = calibration.root
    root_bone = _pose_bone(obj, calibration, calibration.solver.root) if root is not None else None
    if root_bone is not None and (not options.only_selected or _selected(root_bone)):
        root_bone.location = root_location
        if options.floor_contact:
            rest_to_low = calibration.rest_floor - lowest_point(obj, calibration.mapping)
            own = blender_skinning.world_matrix(obj)    # current even where the pose has not been evaluated yet
            world = (own if own is not None else np.array(obj.matrix_world, dtype=np.float64))[:3, :3]
            shift_armature = affine.inverse_3x3(world) @ np.array([0.0, 0.0, rest_to_low])
            h_root = _identity_pose_rotation(obj, root)
            root_bone.location = root_location + h_root.T @ shift_armature
    for i in np.flatnonzero(np.isnan(shown[:, 0])) if len(written) < len(names) else ():
        shown[i] = tuple(pose_bones[i].rotation_quaternion)          # bones left as they were
    for n in calibration.nonrigid if len(written) else ():
        if n in written:                                   # corrected after evaluation
            shown[names.index(n)] = tuple(obj.pose.bones[n].rotation_quaternion)
    obj[LAST_POSE_PROPERTY] = shown.ravel().tolist()
    return rotmats


def _write_all(obj, calibration, quats) -> None:
    """Every driven bone's quaternion in one bulk read-modify-write of the pose (the common case: a 700-bone
    Rigify rig would otherwise pay a Python round trip per bone); bones not in quaternion mode are switched."""
    pose_bones = obj.pose.bones
    count = calibration.bone_count                     # checked against the rig by ``calibrate``
    index = np.asarray(calibration.indices)
    modes = np.empty(count, dtype=np.int32)
    try:
        pose_bones.foreach_get("rotation_mode", modes)
        other_modes = np.flatnonzero(modes[index] != _QUATERNION_MODE)
    except (RuntimeError, TypeError):                  # a Blender that cannot read enums in bulk
        other_modes = range(len(index))
    for i in other_modes:
        pose_bone = pose_bones[int(index[i])]
        if pose_bone.rotation_mode != "QUATERNION":
            pose_bone.rotation_mode = "QUATERNION"
    values = np.empty(4 * count, dtype=np.float32)
    pose_bones.foreach_get("rotation_quaternion", values)
    values.reshape(count, 4)[index] = quats
    pose_bones.foreach_set("rotation_quaternion", values)
    obj.update_tag()


def _write_some(pose_bones, names, quats, options, last) -> tuple[list, np.ndarray]:
    """Per-bone writes for the options that look at each bone: only selected, keep hand edits, strength.
    Returns the names written and what each bone now shows (NaN rows: left as it was)."""
    if last is not None:
        last = np.asarray(last, dtype=np.float64).reshape(-1, 4) if len(last) == 4 * len(names) else None
    written, shown = [], np.full((len(names), 4), np.nan)
    for i, pb in enumerate(pose_bones):
        if options.only_selected and not _selected(pb):
            continue
        quat = quats[i]
        current = _quaternion(pb)
        if options.keep_changed and last is not None and abs(abs(float(current @ last[i])) - 1.0) > CHANGED_TOLERANCE:
            continue
        if options.strength < 1.0:
            quat = rot.quat_wxyz_slerp(current, quat, np.float64(options.strength))
        if pb.rotation_mode != "QUATERNION":
            pb.rotation_mode = "QUATERNION"
        pb.rotation_quaternion = quat
        shown[i] = quat
        written.append(names[i])
    return written, shown


def _pose_bone(obj, calibration, i):
    """The pose bone of ``calibration.names[i]``, by index when the rig still has it there."""
    pose_bones = obj.pose.bones
    pose_bone = pose_bones[calibration.indices[i]] if calibration.indices[i] < calibration.bone_count else None
    return pose_bone if pose_bone is not None and pose_bone.name == calibration.names[i] else pose_bones[
        calibration.names[i]]


def _driven_pose_bones(obj, calibration) -> list:
    """The pose bones of ``calibration.names``, fetched by index (a name lookup scans a big rig's bones)."""
    pose_bones = obj.pose.bones
    count = calibration.bone_count
    found = []
    for name, index in zip(calibration.names, calibration.indices):
        pb = pose_bones[index] if index < count else None
        found.append(pb if pb is not None and pb.name == name else pose_bones[name])
    return found


def _correct_nonrigid(obj, calibration, targets, options, written) -> None:
    """Bones whose parent does not follow a driven bone in a way ``retarget`` models: evaluate once, read
    their actual identity-pose orientation, turn them onto their target orientations P."""
    bpy.context.view_layer.update()
    position = {n: i for i, n in enumerate(calibration.names[:len(targets)])}
    for n in calibration.nonrigid:
        if n not in written or n not in position:
            continue
        pb = obj.pose.bones[n]
        wanted = rot.rotmat_to_quat_wxyz(_identity_pose_rotation(obj, n).T @ targets[position[n]])
        if options.strength < 1.0:
            wanted = rot.quat_wxyz_slerp(_quaternion(pb), wanted, np.float64(options.strength))
        pb.rotation_quaternion = wanted


def _identity_pose_rotation(obj, name) -> np.ndarray:
    """Rotation (3, 3) the bone would have with an identity pose-bone transform: from the bones' channels where
    they alone set it (``blender_skinning.pose_matrices``; the pose just written may not be evaluated yet),
    else from its evaluated matrix."""
    pb = obj.pose.bones[name]
    basis = np.array(pb.matrix_basis, dtype=np.float64)
    if blender_skinning.plain_bones(obj):
        pose = blender_skinning.pose_matrices(obj)[obj.data.bones.find(name)]
    else:
        pose = np.array(pb.matrix, dtype=np.float64)
    return rot.orthonormalize_rotmat(pose[:3, :3] @ affine.inverse_3x3(basis[:3, :3]))   # top left of pose · basis⁻¹


def _quaternion(pose_bone) -> np.ndarray:
    if pose_bone.rotation_mode == "QUATERNION":
        q = np.array(pose_bone.rotation_quaternion, dtype=np.float64)
        return q / np.linalg.norm(q)
    basis = np.array(pose_bone.matrix_basis.to_3x3(), dtype=np.float64)
    return rot.rotmat_to_quat_wxyz(rot.orthonormalize_rotmat(basis))


def world_joint_positions(obj, mapping: rig_names.RigMapping | None = None, *, update: bool = True) -> np.ndarray:
    """World positions (24, 3) of the mapped joints (heads of their measure bones); NaN rows for unmapped."""
    mapping = mapping or rig_mapping(obj)
    if update:
        bpy.context.view_layer.update()
    world = np.array(obj.matrix_world, dtype=np.float64)
    out = np.full((NUM_JOINTS, 3), np.nan)
    for j, name in enumerate(JOINT_NAMES):
        bone = mapping.measure_bone(name)
        if bone is not None and bone in obj.pose.bones:
            out[j] = world[:3, :3] @ np.array(obj.pose.bones[bone].head, dtype=np.float64) + world[:3, 3]
    return out


def describe(obj) -> dict:
    """What the add-on shows for an armature: {"problem": sentence or None, "mapped": n, "missing": [...],
    "convention": name}."""
    if obj is None or getattr(obj, "type", None) != "ARMATURE":
        return {"problem": retarget_problem(obj), "mapped": 0, "missing": list(JOINT_NAMES), "convention": ""}
    mapping = rig_mapping(obj)
    return {"problem": retarget_problem(obj, mapping), "mapped": mapping.mapped_count, "missing": mapping.missing,
            "convention": mapping.convention}
