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

from dataclasses import dataclass

import numpy as np

from . import rotations as rot
from .rig_names import RigMapping
from .skeleton import CHILDREN, JOINT_INDEX, JOINT_NAMES, MIRROR, NUM_JOINTS, PARENTS, primary_child

__all__ = [
    "body_frame", "rest_alignments", "world_rotations", "target_orientations", "mirror_rotmats",
    "next_mapped_joints", "mapped_segments", "segment_directions", "direction_angles_deg", "leg_length",
    "follow_relations", "BlendModel", "blend_orientation", "RigSolver", "build_solver", "solve",
]


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


def _depth_levels() -> list:
    """Joint indices grouped by depth in the SMPL tree (root excluded): one batched product per level."""
    depth = [0] * NUM_JOINTS
    for i in range(1, NUM_JOINTS):
        depth[i] = depth[PARENTS[i]] + 1
    levels = [[i for i in range(NUM_JOINTS) if depth[i] == d] for d in range(1, max(depth) + 1)]
    return [(np.array(level), np.array([PARENTS[i] for i in level])) for level in levels]


_LEVELS = _depth_levels()


def world_rotations(rotmats) -> np.ndarray:
    """G (..., 24, 3, 3): SMPL world rotation of every joint, the local rotations (..., 24, 3, 3) chained."""
    world = np.array(rotmats, dtype=np.float64)
    for joints, parents in _LEVELS:
        world[..., joints, :, :] = world[..., parents, :, :] @ world[..., joints, :, :]
    return world


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


def leg_length(joints, mapped) -> float:
    """Hip → knee → ankle length summed over both legs (for scaling SMPL translations to a rig); 1 if none."""
    total = 0.0
    for a, b in (("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("right_hip", "right_knee"),
                 ("right_knee", "right_ankle")):
        i, k = JOINT_INDEX[a], JOINT_INDEX[b]
        if mapped[i] and mapped[k]:
            total += float(np.linalg.norm(np.asarray(joints[k]) - np.asarray(joints[i])))
    return total or 1.0


# --- how a rig's bones follow each other (read once from the rig) ---------------------------------------------

RIGID_TOLERANCE = 1e-4          # how well "orientation = followed bone's · constant" must hold


def follow_relations(driven, rest, probes):
    """Which driven bone each driven bone follows in rotation, from the rig's answers to probing.

    driven: bone names (k); rest: (k, 4, 4) armature-space matrices with every driven bone at identity
    pose; probes: {bone: (k, 3, 3) orientations with only that bone turned}. A bone follows the deepest of
    the bones whose turning turns it (constraints included). Returns ({bone: followed or None}, {bone: K
    (4, 4)} with identity-pose matrix = followed bone's matrix · K (or K alone), [bones for which that is not
    rigid]). Raises ``ValueError`` when "follows" is not a tree."""
    index = {n: i for i, n in enumerate(driven)}
    moved = {n: {m for m in probes
                 if m != n and not np.allclose(probes[m][index[n]], rest[index[n], :3, :3], atol=1e-6)}
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
        if not np.allclose(predicted, probes[follow][index[n]], atol=RIGID_TOLERANCE):
            nonrigid.append(n)
    placed: set = set()
    while len(placed) < len(driven):
        progress = False
        for n in driven:
            if n not in placed and (parent[n] is None or parent[n] in placed):
                placed.add(n)
                progress = True
        if not progress:
            raise ValueError("the driven bones follow each other in a loop; check the mapping")
    return parent, relation, nonrigid


@dataclass
class BlendModel:
    """A bone that follows through one Copy Rotation at partial influence ``w`` of a still bone (Rigify's neck
    follows the torso by half): identity-pose orientation = slerp(P_follow · pre, still, w) · post."""
    pre: np.ndarray
    still: np.ndarray
    w: float
    post: np.ndarray


def blend_orientation(model: BlendModel, follow_orientation) -> np.ndarray:
    """Identity-pose orientation (3, 3) of a blended bone for its followed bone's orientation (3, 3): the
    slerp from its own chain's orientation A toward ``still``, A · exp(w · log(Aᵀ still))."""
    return rot.rotmat_slerp(follow_orientation @ model.pre, model.still, model.w) @ model.post


# --- chains between mapped bones ------------------------------------------------------------------------------

SPREAD_JOINTS = ("pelvis", "spine1", "spine2", "spine3", "neck")   # torso chains bend; limb chains stay rigid


@dataclass
class Chain:
    """A mapped torso bone b, the plain bones e_1..e_k between it and the next mapped bone c, and their rest
    geometry in local frames: the joint's rotation is spread over b, e_1..e_k, then b swings so c lands on
    the line SMPL's joint is on."""
    top: int                    # index of b in the solver's ``names``
    extras: list                # indices of e_1..e_k, top-down
    to_top: np.ndarray          # (k, 3, 3) e_i local → b local, at rest (axis of the shared rotation)
    relative: np.ndarray        # (k, 3, 3) rest rotation of e_i in its parent's frame
    offsets: np.ndarray         # (k + 1, 3) head of e_1..e_k, c in its parent's frame (rest)
    end: np.ndarray             # (3,) head of c in b's frame (rest)
    attached: dict              # extra index → indices of mapped bones hanging below that extra


def _torso_chains(mapping: RigMapping, names, anchor, hierarchy, chain_bones, rest) -> list:
    """The torso chains of a rig: hierarchy {bone: parent bone or None}; rest {bone: (4, 4)}."""
    where = {n: i for i, n in enumerate(names)}
    mapped = np.array([j in mapping.joints for j in JOINT_NAMES])
    ends = next_mapped_joints(mapped)
    m = int(mapped.sum())
    chains = []
    for joint in SPREAD_JOINTS:
        j = JOINT_INDEX[joint]
        if not mapped[j] or not ends[j]:
            continue
        top, end = mapping.joints[joint], mapping.joints[JOINT_NAMES[ends[j][0]]]
        path, bone = [end], hierarchy.get(end)
        while bone is not None and bone != top:
            path.append(bone)
            bone = hierarchy.get(bone)
        extras = path[1:][::-1]
        if bone is None or not extras or not all(e in chain_bones for e in extras):
            continue
        frames_ = [rest[top]] + [rest[e] for e in extras] + [rest[end]]
        rots = [rot.orthonormalize_rotmat(f[:3, :3]) for f in frames_]
        offsets = np.array([rots[i].T @ (frames_[i + 1][:3, 3] - frames_[i][:3, 3]) for i in range(len(extras) + 1)])
        attached = {where[e]: [] for e in extras}
        for i in range(m):                  # mapped bones that follow b through an extra (by the hierarchy)
            if anchor[i] != where[top]:
                continue
            up = hierarchy.get(names[i])
            while up is not None and up != top and up not in extras:
                up = hierarchy.get(up)
            if up is not None and up in extras:
                attached[where[up]].append(i)
        chains.append(Chain(top=where[top], extras=[where[e] for e in extras],
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
        share = rot.rotmat_slerp(np.eye(3), m, 1.0 / (k + 1))                         # M^(1/(k+1)), b's frame
        own = np.concatenate([share[None], np.swapaxes(chain.to_top, -1, -2) @ share @ chain.to_top], 0)
        frames_ = [own[0]]                                                            # posed frames in b's frame
        point = own[0] @ chain.offsets[0]
        for i in range(k):
            frames_.append(frames_[-1] @ chain.relative[i] @ own[i + 1])
            point = point + frames_[-1] @ chain.offsets[i + 1]
        s = rot.rotmat_between(point, m @ chain.end)
        basis[chain.top] = s @ own[0]
        rigid = np.eye(3)
        for i, e in enumerate(chain.extras):
            basis[e] = own[i + 1]
            rigid = rigid @ chain.relative[i]
            change = h @ s @ frames_[i + 1] @ rigid.T @ m.T @ h.T                     # posed e_i vs rigid e_i
            for x in chain.attached[e]:
                identity_pose[x] = change @ identity_pose[x]
                basis[x] = identity_pose[x].T @ targets[x]


# --- the solver -------------------------------------------------------------------------------------------------

@dataclass
class RigSolver:
    """Everything ``solve`` needs to pose a rig without evaluating it, vectorised over its k driven bones.

    names: driven bones, the m mapped ones first (mapping order), then reset and chain bones (identity pose).
    joint (m,): SMPL joint of each mapped bone; aligned_rest (m, 3, 3): Q_j B_b; anchor (k,): the mapped bone
    whose orientation each bone's identity pose follows (through reset bones), or m for "nothing driven";
    follow (k, 3, 3): identity-pose orientation = P[anchor] · follow; blended: [(index, followed mapped
    index, BlendModel)]; chains: torso ``Chain``s; frame: F; root: index of the root bone in ``names`` or
    None; scale: rig leg length / SMPL leg length.
    """
    names: list
    joint: np.ndarray
    aligned_rest: np.ndarray
    anchor: np.ndarray
    follow: np.ndarray
    blended: list
    chains: list
    frame: np.ndarray
    root: int | None
    scale: float


def build_solver(mapping: RigMapping, driven, rest, parent, relation, blends, frame, alignments, hierarchy,
                 chain_bones, scale) -> RigSolver:
    """Fold what was read from a rig into a ``RigSolver``.

    driven: bone names; rest: (k, 4, 4) identity-pose matrices; parent / relation: ``follow_relations``;
    blends: {bone: BlendModel}; frame: F; alignments: Q (24, 3, 3); hierarchy: {bone: parent bone or None};
    chain_bones: the plain bones between mapped ones (set to identity; torso ones share the rotation)."""
    rest_of = {n: rest[i] for i, n in enumerate(driven)}
    joint_of = {mapping.joints[name]: j for j, name in enumerate(JOINT_NAMES) if name in mapping.joints}
    mapped = [n for n in driven if n in joint_of]
    names = mapped + [n for n in driven if n not in joint_of]
    position = {n: i for i, n in enumerate(mapped)}
    anchor, follow = [], []
    for n in names:
        k = relation[n][:3, :3].copy()
        up = parent[n]
        while up is not None and up not in position:        # a reset bone in between: identity pose
            k = relation[up][:3, :3] @ k
            up = parent[up]
        anchor.append(position[up] if up is not None else len(mapped))
        follow.append(rot.orthonormalize_rotmat(k))
    aligned = [alignments[joint_of[n]] @ rot.orthonormalize_rotmat(rest_of[n][:3, :3]) for n in mapped]
    blended = [(names.index(n), position[parent[n]], model) for n, model in blends.items() if parent[n] in position]
    root = mapping.root_bone()
    return RigSolver(names=names, joint=np.array([joint_of[n] for n in mapped], dtype=np.int64),
                     aligned_rest=np.array(aligned).reshape(-1, 3, 3), anchor=np.array(anchor, dtype=np.int64),
                     follow=np.array(follow).reshape(-1, 3, 3), blended=blended,
                     chains=_torso_chains(mapping, names, anchor, hierarchy, set(chain_bones), rest_of),
                     frame=np.asarray(frame, dtype=np.float64), root=names.index(root) if root in names else None,
                     scale=float(scale))


def solve(solver: RigSolver, rotmats, translation=None):
    """Pose-bone rotations for SMPL rotations (24, 3, 3) (SMPL frame).

    Returns (quaternions (k, 4) wxyz for ``solver.names``, the root bone's location (3,) for ``translation``
    (SMPL ``transl``, scaled to the rig; zeros for None), the mapped bones' target orientations P (m, 3, 3))."""
    f = solver.frame
    m = len(solver.joint)
    world = world_rotations(rotmats)                                                # (24, 3, 3)
    targets = f @ world[solver.joint] @ f.T @ solver.aligned_rest                  # (m, 3, 3) P
    anchors = np.concatenate([targets, np.eye(3)[None]], 0)[solver.anchor]         # (k, 3, 3)
    identity_pose = anchors @ solver.follow                                        # (k, 3, 3) H
    for i, followed, model in solver.blended:                                      # Rigify's half-following neck
        identity_pose[i] = blend_orientation(model, targets[followed])
    basis = np.tile(np.eye(3), (len(solver.names), 1, 1))
    basis[:m] = np.swapaxes(identity_pose[:m], -1, -2) @ targets                   # M = Hᵀ P
    if solver.chains:
        _spread(solver.chains, basis, identity_pose, targets)
    location = np.zeros(3)
    if translation is not None and solver.root is not None:
        location = identity_pose[solver.root].T @ (solver.scale * (f @ np.asarray(translation, dtype=np.float64)))
    return rot.rotmat_to_quat_wxyz(basis), location, targets
