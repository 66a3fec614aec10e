"""The floor contact's lowest vertex without a depsgraph evaluation (Blender-specific).

After a pose is written, the floor contact needs the lowest point of the deformed body. Asking Blender means
evaluating the view layer (armature, then every skinned mesh), and the lift that follows changes the pose
again, so the draw evaluates it all a second time. Where Blender's deformation is plain linear blend
skinning of the bones' own channels (the add-on's SMPL bodies, Mixamo-style rigs), this module computes the
same vertices in numpy from what was just written:

    pose[b]   = pose[parent] · rest_parent⁻¹ · rest[b] · basis[b]     (armature space, parents first)
    vertex'   = Σ_b w_vb · pose[b] · rest[b]⁻¹ · vertex  / Σ_b w_vb   (Armature modifier, vertex groups)

A rig or mesh where that is not what Blender draws (constraints, drivers, an action, partial inheritance,
envelopes, preserve volume, a second modifier, shape keys) gets ``None`` and the caller evaluates.

What is read once and cached (``SKIN_CACHE``, cleared by ``forget``): the bone tree and each mesh's normalised
weights as a (V, C) matrix over the C bones that weigh on it (24 on the mannequin).
Vertex positions and bone channels are read on every call, so moved vertices or bones are never stale;
repainted weights are (``forget``, or ``blender_retarget.forget_calibration``, reads them again).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import affine

__all__ = ["lowest_vertex_z", "pose_matrices", "plain_bones", "world_matrix", "forget", "SKIN_CACHE"]

MIN_TOTAL_WEIGHT = 0.0001         # the Armature modifier leaves a vertex with less total weight in place
SKIN_CACHE: dict = {}


@dataclass
class _BoneTree:
    order: list                   # bone indices, parents first
    parent: list                  # parent index of each bone (-1: none)
    local: np.ndarray             # (B, 4, 4) rest matrix in its parent's rest frame (armature space at roots)
    inverse_rest: np.ndarray      # (B, 4, 4) armature-space rest matrix, inverted
    fingerprint: np.ndarray       # rest heads and tails when read


@dataclass
class _Skin:
    columns: np.ndarray           # (C,) the armature bones (``obj.data.bones`` index) that weigh on this mesh
    weights: np.ndarray           # (V, C) float32 normalised weights; a zero row for a vertex left in place
    moved: np.ndarray             # (V,) whether the modifier moves the vertex at all


def forget(obj_name: str | None = None) -> None:
    """Drop what was read from ``obj_name``'s bones and meshes (every armature when None)."""
    for key in [k for k in SKIN_CACHE if obj_name is None or k[0] == obj_name]:
        del SKIN_CACHE[key]


def _fingerprint(obj) -> np.ndarray:
    count = len(obj.data.bones)
    values = np.empty(6 * count, dtype=np.float32)
    obj.data.bones.foreach_get("head_local", values[:3 * count])
    obj.data.bones.foreach_get("tail_local", values[3 * count:])
    return values


def _bone_tree(obj) -> _BoneTree:
    fingerprint = _fingerprint(obj)
    key = (obj.name, "bones", obj.data.name)
    tree = SKIN_CACHE.get(key)
    if tree is not None and np.array_equal(tree.fingerprint, fingerprint):
        return tree
    bones = obj.data.bones
    index = {b.name: i for i, b in enumerate(bones)}
    rest = np.array([b.matrix_local for b in bones], dtype=np.float64)
    parent = [index[b.parent.name] if b.parent is not None else -1 for b in bones]
    depth = [0] * len(parent)
    for i in range(len(parent)):
        p = parent[i]
        while p >= 0:
            depth[i] += 1
            p = parent[p]
    local = np.array([rest[i] if p < 0 else np.linalg.solve(rest[p], rest[i]) for i, p in enumerate(parent)])
    tree = _BoneTree(order=sorted(range(len(parent)), key=depth.__getitem__), parent=parent, local=local,
                     inverse_rest=np.linalg.inv(rest), fingerprint=fingerprint)
    SKIN_CACHE[key] = tree
    return tree


def plain_bones(obj) -> bool:
    """Whether every bone's pose follows from its own channels and its parent's alone (no constraints, no
    drivers or action, full inheritance): what ``pose_matrices`` computes."""
    animation = obj.animation_data
    if animation is not None and (len(animation.drivers) or animation.action is not None):
        return False
    # a connected bone with a location set: Blender ignores it, the formula would not
    return all(not pb.constraints and pb.bone.use_inherit_rotation and pb.bone.inherit_scale == "FULL"
               and pb.bone.use_local_location and not (pb.bone.use_connect and any(pb.location))
               for pb in obj.pose.bones)


def pose_matrices(obj, tree: _BoneTree | None = None) -> np.ndarray:
    """(B, 4, 4) armature-space pose matrix of every bone (``obj.data.bones`` order) from the channels as they
    are now, before any evaluation; only right where ``plain_bones(obj)``. ``tree``: ``_bone_tree(obj)``
    when the caller already has it (it reads the rest fingerprint)."""
    tree = tree or _bone_tree(obj)
    count = len(tree.parent)
    basis = np.empty(count * 16, dtype=np.float32)
    obj.pose.bones.foreach_get("matrix_basis", basis)
    basis = basis.reshape(count, 4, 4).transpose(0, 2, 1).astype(np.float64)     # Blender's are column-major
    pose = np.empty((count, 4, 4))
    for i in tree.order:
        p = tree.parent[i]
        pose[i] = (tree.local[i] if p < 0 else pose[p] @ tree.local[i]) @ basis[i]
    return pose


def world_matrix(o) -> np.ndarray | None:
    """An object's world matrix from its own channels and its parents' (``matrix_world`` is only current after
    an evaluation, and a transform set just before may not have had one); None when constraints or a bone or
    vertex parent make it Blender's to compute."""
    if o.constraints:
        return None
    basis = np.array(o.matrix_basis, dtype=np.float64)
    if o.parent is None:
        return basis
    if o.parent_type not in ("OBJECT", "ARMATURE"):
        return None
    parent = world_matrix(o.parent)
    return None if parent is None else parent @ np.array(o.matrix_parent_inverse, dtype=np.float64) @ basis


def _plain_skin(obj, mesh_obj) -> bool:
    """Whether Blender deforms ``mesh_obj`` by ``obj`` with nothing but linear blend skinning by vertex groups."""
    modifiers = list(mesh_obj.modifiers)
    if len(modifiers) != 1 or mesh_obj.parent_type not in ("OBJECT", "ARMATURE"):
        return False
    m = modifiers[0]
    return (m.type == "ARMATURE" and m.object is obj and m.show_viewport and m.use_vertex_groups
            and not m.use_bone_envelopes and not m.use_deform_preserve_volume and not m.use_multi_modifier
            and not m.vertex_group and mesh_obj.data.shape_keys is None)


def _skin(obj, mesh_obj) -> _Skin:
    """The mesh's weights for ``obj``'s deforming bones, read once (a Python loop over the vertices)."""
    deform = {b.name: i for i, b in enumerate(obj.data.bones) if b.use_deform}
    column = {g.index: deform[g.name] for g in mesh_obj.vertex_groups if g.name in deform}
    vertices = mesh_obj.data.vertices
    key = (obj.name, "skin", mesh_obj.name, mesh_obj.data.name, len(vertices), tuple(sorted(column.items())))
    skin = SKIN_CACHE.get(key)
    if skin is not None:
        return skin
    rows = [[(column[e.group], e.weight) for e in v.groups if e.group in column and e.weight > 0.0]
            for v in vertices]
    columns = np.array(sorted({bone for row in rows for bone, _ in row}), dtype=np.intp)
    position = {bone: c for c, bone in enumerate(columns)}
    weights = np.zeros((len(rows), len(columns)))
    for v, row in enumerate(rows):
        for bone, weight in row:
            weights[v, position[bone]] += weight
    total = weights.sum(1)
    moved = total > MIN_TOTAL_WEIGHT
    weights[moved] /= total[moved, None]
    weights[~moved] = 0.0
    skin = SKIN_CACHE[key] = _Skin(columns=columns, weights=weights.astype(np.float32), moved=moved)
    return skin


def lowest_vertex_z(obj, meshes) -> float | None:
    """World height of the lowest vertex of ``meshes`` (each deformed by the armature ``obj``) as Blender would
    draw them with the bone channels as they are now; None where that needs Blender (see the module
    docstring) or no mesh has a vertex."""
    if not meshes or not all(_plain_skin(obj, m) for m in meshes) or not plain_bones(obj):
        return None
    armature_world = world_matrix(obj)
    mesh_worlds = [world_matrix(m) for m in meshes]
    if armature_world is None or any(w is None for w in mesh_worlds):
        return None
    # world height of a point moved by each bone alone: row 2 of world · pose · rest⁻¹, as (B, 4)
    tree = _bone_tree(obj)
    height_rows = (armature_world @ pose_matrices(obj, tree) @ tree.inverse_rest)[:, 2, :]
    lows = []
    for mesh_obj, mesh_world in zip(meshes, mesh_worlds):
        co = _positions(mesh_obj.data)
        if not len(co):
            continue
        to_armature = (affine.inverse_affine(armature_world) @ mesh_world).astype(np.float32)
        v = co @ to_armature[:3, :3].T + to_armature[:3, 3]                         # (V, 3) armature space
        skin = _skin(obj, mesh_obj)
        # each vertex's own blend of those rows, (V, 4): one small matrix product instead of a gather per slot
        blended = skin.weights @ height_rows[skin.columns].astype(np.float32)
        z = np.einsum("vc,vc->v", blended[:, :3], v) + blended[:, 3]
        if not skin.moved.all():                                    # left in place: the armature's world only
            z[~skin.moved] = v[~skin.moved] @ armature_world[2, :3].astype(np.float32) + armature_world[2, 3]
        lows.append(float(z.min()))
    return min(lows) if lows else None


def _positions(mesh) -> np.ndarray:
    """(V, 3) float32 vertex positions, mesh space. Blender 3.5+ keeps them as the "position" attribute, read in
    bulk about 80 times faster than through ``vertices``."""
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    attribute = mesh.attributes.get("position")
    if attribute is not None and attribute.data_type == "FLOAT_VECTOR" and attribute.domain == "POINT":
        attribute.data.foreach_get("vector", co)
    else:
        mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)
