"""SMPL poses on the artist's own armature: the thin Blender layer over ``smpl_rig.retarget``.

Reads a rig once (``calibrate``: rest joints, body frame, rest alignments, how each driven bone follows the
others, the rest floor) and then poses it in closed form (``apply_pose``): numpy computes every pose-bone
rotation, one bulk write puts them on the bones. The mapping lives on the armature object as a JSON custom
property (``MAPPING_PROPERTY``), so it is saved in the .blend; without one it is detected from bone names.

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
from . import bones, retarget
from . import rotations as rot
from .body import load as load_body
from .skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS

__all__ = ["MAPPING_PROPERTY", "LAST_POSE_PROPERTY", "ApplyOptions", "rig_mapping", "store_mapping",
           "retarget_problem", "is_retargetable", "apply_pose", "describe", "world_joint_positions",
           "lowest_point", "save_preset", "load_preset", "calibrate", "forget_calibration", "reference_joints"]

MAPPING_PROPERTY = "posegpt_rig_mapping"       # JSON preset (``retarget.mapping_to_json``) on the armature object
LAST_POSE_PROPERTY = "posegpt_last_pose"       # the driven bones' quaternions after the last apply, flat
CHANGED_TOLERANCE = 1e-4                       # a quaternion further than this from the last apply was edited
_PROBE_ANGLE = 0.5                             # radians: how far calibration turns each driven bone
_RIGID_TOLERANCE = 1e-4                        # how well "parent = driven bone · constant" must hold
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

def rig_mapping(obj) -> retarget.RigMapping:
    """The armature's mapping: the one stored on it, else detected from its bone names."""
    text = obj.get(MAPPING_PROPERTY) if obj is not None else None
    if isinstance(text, str) and text:
        try:
            return retarget.mapping_from_json(text)
        except ValueError:
            pass
    return retarget.detect_mapping([b.name for b in obj.data.bones])


def _current_mapping(obj) -> tuple[retarget.RigMapping, str]:
    """``rig_mapping`` and its JSON, parsed once per distinct stored text (apply runs it every time)."""
    text = obj.get(MAPPING_PROPERTY)
    if isinstance(text, str) and text:
        cached = _CACHE.get(("mapping", text))
        if cached is None:
            cached = _CACHE[("mapping", text)] = rig_mapping(obj)
        return cached, text
    mapping = rig_mapping(obj)
    return mapping, retarget.mapping_to_json(mapping)


def store_mapping(obj, mapping: retarget.RigMapping) -> None:
    """Keep ``mapping`` on the armature object (saved with the .blend)."""
    obj[MAPPING_PROPERTY] = retarget.mapping_to_json(mapping)
    forget_calibration(obj)


def save_preset(path, mapping: retarget.RigMapping) -> None:
    Path(path).write_text(retarget.mapping_to_json(mapping))


def load_preset(path) -> retarget.RigMapping:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ValueError(f"cannot read the mapping preset {path}: {error}") from None
    return retarget.mapping_from_json(text)


def retarget_problem(obj, mapping: retarget.RigMapping | None = None) -> str | None:
    """One sentence saying why ``obj`` cannot be posed, or None when it can."""
    if obj is None or getattr(obj, "type", None) != "ARMATURE":
        return "Select an armature: PoseGPT poses armatures (a humanoid rig or the body it creates)."
    mapping = mapping or rig_mapping(obj)
    absent = [b for b in mapping.driven_bones() + list(mapping.measure.values()) if b not in obj.pose.bones]
    if absent:
        return (f"The mapping names bones this armature does not have ({', '.join(absent[:4])}): fix them in the "
                f"Mapping table or detect the mapping again.")
    return retarget.mapping_problem(mapping)


def is_retargetable(obj) -> bool:
    return retarget_problem(obj) is None


# --- calibration ---------------------------------------------------------------------------------------------

@dataclass
class _Calibration:
    """What ``calibrate`` read from a rig: everything ``solve`` needs to pose it without evaluating it."""
    mapping: retarget.RigMapping
    parent: dict                # bone → driven bone it follows (None: follows nothing driven)
    relation: dict              # bone → K (4, 4): identity-pose matrix = parent's matrix · K
    nonrigid: list              # bones whose parent relation is not rigid: corrected after one evaluation
    blends: dict                # bone → (K_pre, C, w, K_post): identity pose = slerp(P_follow K_pre, C, w) K_post
    frame: np.ndarray           # F (3, 3)
    targets: dict               # bone → (joint index, Q_j B_b (3, 3)) for mapped bones
    rest_floor: float           # world height of the lowest point in rest pose
    root: str | None            # the bone whose location moves the body
    scale: float                # rig leg length / SMPL leg length (for translations)
    key: tuple
    # the closed form, vectorised over the k driven bones (``solve``):
    names: list = None          # driven bones in mapping order
    joint: np.ndarray = None    # (m,) SMPL joint of each mapped bone (the first m of ``names``)
    aligned_rest: np.ndarray = None   # (m, 3, 3) Q_j B_b
    anchor: np.ndarray = None   # (k,) index of the mapped bone whose orientation each bone's identity pose
                                #      follows (through reset bones), or m for "follows nothing driven"
    follow: np.ndarray = None   # (k, 3, 3) identity-pose orientation = P[anchor] · follow (or follow alone)
    blended: list = None        # [(index in names, index of the followed mapped bone, blend model)]
    indices: list = None        # index of each of ``names`` in ``obj.pose.bones``
    switch_indices: list = None # index of each switch's bone in ``obj.pose.bones`` (None: absent)
    chains: list = None         # torso chains the rotation is spread over (``_torso_chains``)


def _state_key(obj, mapping, text):
    """What a calibration depends on: the armature, its mapping and its rest pose, fingerprinted by the rest
    heads and tails of the pelvis, head, wrist and ankle bones (editing the rest pose moves some of them;
    ``forget_calibration`` covers any other edit)."""
    rest_bones = obj.data.bones
    probes = (mapping.joints.get(j) for j in ("pelvis", "head", "left_wrist", "right_wrist", "left_ankle", "right_ankle"))
    rest = [tuple(rest_bones[n].head_local) + tuple(rest_bones[n].tail_local) if n in rest_bones else None
            for n in probes if n is not None]
    return (obj.name, obj.data.name, len(rest_bones), text, hash(tuple(rest)))


_INTERNAL_PREFIXES = ("ORG-", "MCH-", "DEF-")   # Rigify's internal bones: driven by constraints, never posed


def _chain_bones(obj, mapping) -> list:
    """Plain bones between two mapped bones (a fourth spine bone, a second neck bone, a palm): they are set
    to rest on every apply, so the chain moves rigidly and its end lands where SMPL's joint does. Bones with
    constraints and Rigify's internal bones are left alone; so are bones off the chains (twist bones, fingers)."""
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
    """Drop cached rig data (all of it, or one armature's) after its rest pose or mapping changed."""
    for key in [k for k in _CACHE if k != "reference" and (obj is None or k[0] == obj.name)]:
        del _CACHE[key]


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


def lowest_point(obj, mapping: retarget.RigMapping | None = None) -> float:
    """World height of the lowest point of the body: its skinned meshes' evaluated vertices, else its joints.
    Evaluates the view layer first."""
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


def calibrate(obj, mapping: retarget.RigMapping | None = None) -> _Calibration:
    """Read everything ``apply_pose`` needs from the rig (cached until its rest pose or mapping changes).

    With the driven bones at identity (their pose restored afterwards): rest joints and the rest floor; then
    each driven bone turned alone to see which driven bone every other one follows and whether rigidly
    (a generated Rigify rig's neck follows half the torso, half the chest: corrected after evaluation)."""
    if obj is None or getattr(obj, "type", None) != "ARMATURE":
        raise ValueError(retarget_problem(obj))
    if mapping is None:
        mapping, text = _current_mapping(obj)
    else:
        text = retarget.mapping_to_json(mapping)
    key = _state_key(obj, mapping, text)
    cached = _CACHE.get(key)
    if cached is not None:
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
        rest = _matrices(obj, driven)                                   # (n, 4, 4) identity-pose matrices
        mapped = np.array([j in mapping.joints for j in JOINT_NAMES])
        rig_joints = np.full((NUM_JOINTS, 3), np.nan)
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
        parent, relation, nonrigid = _follow_relations(driven, rest, probes)
        blends = {n: _blend_model(obj, n, parent[n], rest[driven.index(n)], rest[driven.index(parent[n])])
                  for n in nonrigid}
        bpy.context.view_layer.update()
    finally:
        for n, (mode, quat, euler, loc, scale) in saved.items():
            pb = pose_bones[n]
            pb.rotation_mode = mode
            pb.rotation_quaternion, pb.rotation_euler, pb.location, pb.scale = quat, euler, loc, scale
    index = {n: i for i, n in enumerate(driven)}
    nonrigid = [n for n in nonrigid if blends[n] is None]
    placed: set = set()                     # "follows" must be a tree (constraints could make it a loop)
    while len(placed) < len(driven):
        progress = False
        for n in driven:
            if n not in placed and (parent[n] is None or parent[n] in placed):
                placed.add(n)
                progress = True
        if not progress:
            raise ValueError(f"the driven bones of {obj.name!r} follow each other in a loop; check the mapping")

    frame = retarget.body_frame(np.nan_to_num(rig_joints), mapped)
    # an armature smpl_rig.blender built is its own reference: Q = I, and the rule is exactly M = DᵀRD
    reference = smpl_blender.rest_joints(obj) if smpl_blender.is_smpl_armature(obj) else reference_joints()
    align = retarget.rest_alignments(np.nan_to_num(rig_joints), reference, frame, mapped)
    targets = {}
    for j, name in enumerate(JOINT_NAMES):
        if mapped[j]:
            b = mapping.joints[name]
            targets[b] = (j, align[j] @ rot.orthonormalize_rotmat(rest[index[b]][:3, :3]))
    root = mapping.root_bone()
    scale = _leg_length(rig_joints, mapped) / _leg_length(reference @ frame.T, mapped)
    calibration = _Calibration(mapping=mapping, parent=parent, relation=relation, nonrigid=nonrigid,
                               blends={n: b for n, b in blends.items() if b is not None},
                               frame=frame, targets=targets, rest_floor=rest_floor, root=root, scale=scale, key=key)
    _vectorise(calibration, driven, {pb.name: i for i, pb in enumerate(obj.pose.bones)})
    calibration.chains = _torso_chains(obj, calibration, chain, {n: rest[i] for i, n in enumerate(driven)})
    if not obj.get(MAPPING_PROPERTY):
        obj[MAPPING_PROPERTY] = text               # the detected mapping now lives in the .blend
    _CACHE[key] = calibration
    return calibration


def _vectorise(calibration: _Calibration, driven: list, bone_index: dict) -> None:
    """Fold reset bones (identity pose) into constant relations: each driven bone's identity-pose
    orientation is then one product with the target orientation of a mapped bone (or a constant)."""
    mapped = [n for n in driven if n in calibration.targets]
    names = mapped + [n for n in driven if n not in calibration.targets]
    position = {n: i for i, n in enumerate(mapped)}
    anchor, follow = [], []
    for n in names:
        k = calibration.relation[n][:3, :3].copy()
        up = calibration.parent[n]
        while up is not None and up not in position:        # a reset bone in between: identity pose
            k = calibration.relation[up][:3, :3] @ k
            up = calibration.parent[up]
        anchor.append(position[up] if up is not None else len(mapped))
        follow.append(rot.orthonormalize_rotmat(k))
    calibration.names = names
    calibration.indices = [bone_index[n] for n in names]
    calibration.switch_indices = [bone_index.get(b) for b, _, _ in calibration.mapping.switches]
    calibration.joint = np.array([calibration.targets[n][0] for n in mapped], dtype=np.int64)
    calibration.aligned_rest = np.array([calibration.targets[n][1] for n in mapped]).reshape(-1, 3, 3)
    calibration.anchor = np.array(anchor, dtype=np.int64)
    calibration.follow = np.array(follow).reshape(-1, 3, 3)
    calibration.blended = []
    for n, model in calibration.blends.items():
        if calibration.parent[n] in position:
            calibration.blended.append((names.index(n), position[calibration.parent[n]], model))
        else:
            calibration.nonrigid.append(n)


SPREAD_JOINTS = ("pelvis", "spine1", "spine2", "spine3", "neck")   # torso chains bend; limb chains stay rigid


@dataclass
class _Chain:
    """A mapped torso bone b, the plain bones e_1..e_k between it and the next mapped bone c, and their rest
    geometry in local frames: the joint's rotation is spread over b, e_1..e_k, then b swings so c lands on
    the line SMPL's joint is on."""
    top: int                    # index of b in ``names``
    extras: list                # indices of e_1..e_k in ``names``, top-down
    to_top: np.ndarray          # (k, 3, 3) e_i local → b local, at rest (axis of the shared rotation)
    relative: np.ndarray        # (k, 3, 3) rest rotation of e_i in its parent's frame
    offsets: np.ndarray         # (k + 1, 3) head of e_1..e_k, c in its parent's frame (rest)
    end: np.ndarray             # (3,) head of c in b's frame (rest)
    attached: dict              # extra index → indices of mapped bones hanging below that extra


def _torso_chains(obj, calibration, chain_bones, rest) -> list:
    mapping = calibration.mapping
    names = calibration.names
    where = {n: i for i, n in enumerate(names)}
    mapped = np.array([j in mapping.joints for j in JOINT_NAMES])
    ends = retarget.next_mapped_joints(mapped)
    m = len(calibration.joint)
    chains = []
    for joint in SPREAD_JOINTS:
        j = JOINT_INDEX[joint]
        if not mapped[j] or not ends[j]:
            continue
        top, bone = mapping.joints[joint], obj.pose.bones[mapping.joints[JOINT_NAMES[ends[j][0]]]]
        path, bone = [bone.name], bone.parent
        while bone is not None and bone.name != top:
            path.append(bone.name)
            bone = bone.parent
        extras = path[1:][::-1]
        if bone is None or not extras or not all(e in chain_bones for e in extras):
            continue
        frames_ = [rest[top]] + [rest[e] for e in extras] + [rest[path[0]]]
        rots = [rot.orthonormalize_rotmat(f[:3, :3]) for f in frames_]
        offsets = np.array([rots[i].T @ (frames_[i + 1][:3, 3] - frames_[i][:3, 3]) for i in range(len(extras) + 1)])
        attached = {where[e]: [] for e in extras}
        for i in range(m):                  # mapped bones that follow b through an extra (by the hierarchy)
            if calibration.anchor[i] != where[top]:
                continue
            up = obj.pose.bones[names[i]].parent
            while up is not None and up.name != top and up.name not in extras:
                up = up.parent
            if up is not None and up.name in extras:
                attached[where[up.name]].append(i)
        chains.append(_Chain(top=where[top], extras=[where[e] for e in extras],
                             to_top=np.array([rots[0].T @ r for r in rots[1:-1]]),
                             relative=np.array([rots[i].T @ rots[i + 1] for i in range(len(extras))]),
                             offsets=offsets, end=rots[0].T @ (frames_[-1][:3, 3] - frames_[0][:3, 3]),
                             attached=attached))
    return chains


def _spread(chains, basis, identity_pose, targets) -> None:
    """Spread each torso chain's rotation M over its bones (the same physical axis, angle / (k + 1) each),
    swing the top bone so the chain's end is where M puts it, and re-aim the mapped bones hanging below the
    chain (their targets are absolute). Chains top-down, each seeing the corrections of those above it; in
    place on ``basis`` and ``identity_pose`` (k, 3, 3)."""
    for chain in chains:
        k = len(chain.extras)
        m, h = basis[chain.top].copy(), identity_pose[chain.top]
        part = rot.rotmat_to_rotvec(m) / (k + 1)
        own = rot.rotvec_to_rotmat(np.concatenate([part[None], np.swapaxes(chain.to_top, -1, -2) @ part], 0))
        frames_ = [own[0]]                                                            # posed frames in b's frame
        point = own[0] @ chain.offsets[0]
        for i in range(k):
            frames_.append(frames_[-1] @ chain.relative[i] @ own[i + 1])
            point = point + frames_[-1] @ chain.offsets[i + 1]
        s = rot.rotvec_to_rotmat(_swing_rotvec(point, m @ chain.end))
        basis[chain.top] = s @ own[0]
        rigid = np.eye(3)
        for i, e in enumerate(chain.extras):
            basis[e] = own[i + 1]
            rigid = rigid @ chain.relative[i]
            change = h @ s @ frames_[i + 1] @ rigid.T @ m.T @ h.T                     # posed e_i vs rigid e_i
            for x in chain.attached[e]:
                identity_pose[x] = change @ identity_pose[x]
                basis[x] = identity_pose[x].T @ targets[x]


def _swing_rotvec(a, b) -> np.ndarray:
    """Axis-angle (3,) of the smallest rotation turning direction a onto direction b."""
    axis = np.cross(a, b)
    sin, cos = float(np.linalg.norm(axis)), float(a @ b)
    return axis / sin * np.arctan2(sin, cos) if sin > 1e-12 else np.zeros(3)


_PROBE = tuple(rot.rotvec_to_quat_wxyz(np.array([0.3, 0.8, -0.5]) * _PROBE_ANGLE).tolist())


def _follow_relations(driven, rest, probes):
    """Which driven bone each driven bone follows in rotation (the deepest of those whose turning turns it),
    the constant relation K (4, 4) to it, and the bones for which "P_follow · K" does not hold."""
    index = {n: i for i, n in enumerate(driven)}
    moved = {n: {m for m in probes if m != n and not np.allclose(probes[m][index[n]], rest[index[n], :3, :3], atol=1e-6)}
             for n in driven}
    parent, relation, nonrigid = {}, {}, []
    for n in driven:
        candidates = [m for m in moved[n] if moved[n] - {m} <= moved[m]]
        follow = candidates[0] if candidates else None
        parent[n] = follow
        if follow is None:
            relation[n] = rest[index[n]]
            continue
        relation[n] = np.linalg.inv(rest[index[follow]]) @ rest[index[n]]
        predicted = probes[follow][index[follow]] @ relation[n][:3, :3]
        if not np.allclose(predicted, probes[follow][index[n]], atol=_RIGID_TOLERANCE):
            nonrigid.append(n)
    return parent, relation, nonrigid


def _blend_model(obj, name, follow, rest_n, rest_follow):
    """A bone whose parent chain holds one Copy Rotation/Transforms of a bone that does not move, at an
    influence between 0 and 1 (Rigify's neck: half the torso): its identity-pose orientation is
    slerp(P_follow · K_pre, C, w) · K_post. Returns (K_pre, C, w, K_post) when a probe confirms it, else None
    (such bones are then corrected after one evaluation)."""
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
    w = float(constraint.influence)
    rest_bones = obj.data.bones
    k_pre = rot.orthonormalize_rotmat(np.array(rest_bones[follow].matrix_local.to_3x3()).T
                                      @ np.array(rest_bones[owner.name].matrix_local.to_3x3()))
    c = rot.orthonormalize_rotmat(np.array(target.matrix, dtype=np.float64)[:3, :3])
    k_post = rot.orthonormalize_rotmat(np.array(owner.matrix, dtype=np.float64)[:3, :3].T @ rest_n[:3, :3])
    model = (k_pre, c, w, k_post)
    pose_bones[follow].rotation_quaternion = _PROBE
    bpy.context.view_layer.update()
    actual = np.array(pose_bones[name].matrix, dtype=np.float64)[:3, :3]
    probed_follow = np.array(pose_bones[follow].matrix, dtype=np.float64)[:3, :3]
    pose_bones[follow].rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
    predicted = _blend(model, probed_follow)
    return model if np.allclose(predicted, actual, atol=1e-4) else None


def _blend(model, follow_orientation) -> np.ndarray:
    """Identity-pose orientation (3, 3) of a blended bone for its followed bone's orientation (3, 3): the
    slerp from its own chain's orientation A toward the constant C, A · exp(w · log(Aᵀ C)) (Rodrigues,
    written out: this runs on every apply)."""
    k_pre, c, w, k_post = model
    own = follow_orientation @ k_pre                                         # A
    d = own.T @ c
    vee = 0.5 * np.array([d[2, 1] - d[1, 2], d[0, 2] - d[2, 0], d[1, 0] - d[0, 1]])   # sin θ · axis
    sin, cos = float(np.linalg.norm(vee)), 0.5 * (float(np.trace(d)) - 1.0)
    theta = np.arctan2(sin, cos)
    if sin < 1e-12:
        if cos > 0:
            return own @ k_post
        return own @ rot.rotvec_to_rotmat(w * rot.rotmat_to_rotvec(d)) @ k_post          # θ = π: any axis
    x, y, z = vee / sin
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    t = w * theta
    return own @ (np.eye(3) + np.sin(t) * k + (1.0 - np.cos(t)) * (k @ k)) @ k_post


def _leg_length(joints, mapped) -> float:
    total = 0.0
    for a, b in (("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("right_hip", "right_knee"),
                 ("right_knee", "right_ankle")):
        i, k = JOINT_INDEX[a], JOINT_INDEX[b]
        if mapped[i] and mapped[k]:
            total += float(np.linalg.norm(joints[k] - joints[i]))
    return total or 1.0


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


def solve(calibration: _Calibration, rotmats, translation=None) -> tuple[np.ndarray, np.ndarray]:
    """Pose-bone quaternions (k, 4) wxyz for ``calibration.names`` from SMPL rotations (24, 3, 3), and the
    root bone's location (3,) for ``translation`` (SMPL ``transl``, scaled to the rig; zeros for None)."""
    f = calibration.frame
    m = len(calibration.joint)
    world = retarget.world_rotations(rotmats)                                       # (24, 3, 3)
    targets = f @ world[calibration.joint] @ f.T @ calibration.aligned_rest        # (m, 3, 3) P
    anchors = np.concatenate([targets, np.eye(3)[None]], 0)[calibration.anchor]    # (k, 3, 3)
    identity_pose = anchors @ calibration.follow                                   # (k, 3, 3) H
    for i, followed, model in calibration.blended:                                 # Rigify's half-following neck
        identity_pose[i] = _blend(model, targets[followed])
    basis = np.tile(np.eye(3), (len(calibration.names), 1, 1))
    basis[:m] = np.swapaxes(identity_pose[:m], -1, -2) @ targets                   # M = Hᵀ P
    if calibration.chains:
        _spread(calibration.chains, basis, identity_pose, targets)
    location = np.zeros(3)
    if translation is not None and calibration.root in calibration.names:
        h_root = identity_pose[calibration.names.index(calibration.root)]
        location = h_root.T @ (calibration.scale * (f @ np.asarray(translation, dtype=np.float64)))
    return rot.rotmat_to_quat_wxyz(basis), location


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
    rotmats = bones.pose_rotmats(pose, current=np.tile(np.eye(3), (NUM_JOINTS, 1, 1)) if isinstance(pose, dict) else None)
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
    quats, root_location = solve(calibration, rotmats, translation)
    names = calibration.names
    pose_bones = _driven_pose_bones(obj, calibration)
    blend = options.strength < 1.0
    last = obj.get(LAST_POSE_PROPERTY) if options.keep_changed else None
    last = np.asarray(last, dtype=np.float64).reshape(-1, 4) if last is not None and len(last) == 4 * len(names) else None
    written = []
    for i, pb in enumerate(pose_bones):
        if options.only_selected and not _selected(pb):
            continue
        quat = quats[i]
        if blend or last is not None:
            current = _quaternion(pb)
            if last is not None and abs(abs(float(current @ last[i])) - 1.0) > CHANGED_TOLERANCE:
                continue
            if blend:
                quat = rot.quat_wxyz_slerp(current, quat, np.float64(options.strength))
        if pb.rotation_mode != "QUATERNION":
            pb.rotation_mode = "QUATERNION"
        pb.rotation_quaternion = quat
        written.append(names[i])
    if calibration.nonrigid and any(n in written for n in calibration.nonrigid):
        _correct_nonrigid(obj, calibration, rotmats, options, set(written))
    root = calibration.root
    root_bone = obj.pose.bones[root] if root is not None else None
    if root_bone is not None and (not options.only_selected or _selected(root_bone)):
        root_bone.location = root_location
        if options.floor_contact:
            rest_to_low = calibration.rest_floor - lowest_point(obj, calibration.mapping)
            world = np.array(obj.matrix_world, dtype=np.float64)[:3, :3]
            shift_armature = np.linalg.solve(world, np.array([0.0, 0.0, rest_to_low]))
            h_root = _identity_pose_rotation(obj, root)
            root_bone.location = root_location + h_root.T @ shift_armature
    obj[LAST_POSE_PROPERTY] = [v for pb in pose_bones for v in pb.rotation_quaternion]
    return rotmats


def _driven_pose_bones(obj, calibration) -> list:
    """The pose bones of ``calibration.names``, fetched by index (a name lookup scans a big rig's bones)."""
    pose_bones = obj.pose.bones
    count = len(pose_bones)
    found = []
    for name, index in zip(calibration.names, calibration.indices):
        pb = pose_bones[index] if index < count else None
        found.append(pb if pb is not None and pb.name == name else pose_bones[name])
    return found


def _correct_nonrigid(obj, calibration, rotmats, options, written) -> None:
    """Bones whose parent does not follow a driven bone rigidly (a generated Rigify rig's neck follows half
    the torso): evaluate once, read their actual identity-pose orientation, rotate them onto the target."""
    bpy.context.view_layer.update()
    f = calibration.frame
    world = retarget.world_rotations(rotmats)
    for n in calibration.nonrigid:
        if n not in written or n not in calibration.targets:
            continue
        pb = obj.pose.bones[n]
        identity_pose = _identity_pose_rotation(obj, n)
        j, qb = calibration.targets[n]
        wanted = rot.rotmat_to_quat_wxyz(identity_pose.T @ (f @ world[j] @ f.T @ qb))
        if options.strength < 1.0:
            wanted = rot.quat_wxyz_slerp(_quaternion(pb), wanted, np.float64(options.strength))
        pb.rotation_quaternion = wanted


def _identity_pose_rotation(obj, name) -> np.ndarray:
    """Rotation (3, 3) the bone would have with an identity pose-bone transform (from its evaluated matrix)."""
    pb = obj.pose.bones[name]
    basis = np.array(pb.matrix_basis, dtype=np.float64)
    return rot.orthonormalize_rotmat((np.array(pb.matrix, dtype=np.float64) @ np.linalg.inv(basis))[:3, :3])


def _quaternion(pose_bone) -> np.ndarray:
    if pose_bone.rotation_mode == "QUATERNION":
        q = np.array(pose_bone.rotation_quaternion, dtype=np.float64)
        return q / np.linalg.norm(q)
    return rot.rotmat_to_quat_wxyz(rot.orthonormalize_rotmat(np.array(pose_bone.matrix_basis.to_3x3(), dtype=np.float64)))


def world_joint_positions(obj, mapping: retarget.RigMapping | None = None, *, update: bool = True) -> np.ndarray:
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
