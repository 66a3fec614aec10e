"""Retargeting's rule without Blender: name detection for every convention it claims, mapping presets and
mirror-fill, the body frame, and the formula P = F G Fᵀ Q B driven through a simulated Blender pose
evaluation on an A-pose rig with random rolls and an extra spine bone."""
from __future__ import annotations

import numpy as np
import pytest

from smpl_rig import frames, kinematics, retarget, rig_names, rotations as rot
from smpl_rig.body import load
from smpl_rig.skeleton import JOINT_INDEX, JOINT_NAMES, MIRROR, NUM_JOINTS, PARENTS, primary_child

C = frames.SMPL_TO_BLENDER


def _sided(template: str, sides=("Left", "Right")):
    return [template.format(side=s) for s in sides]


CONVENTION_NAMES = {
    "smpl": list(JOINT_NAMES),
    "smplx": ["root"] + list(JOINT_NAMES[:22]) + ["jaw", "left_eye_smplhf", "right_eye_smplhf"] + [
        f"{side}_{finger}{k}" for side in ("left", "right") for finger in ("index", "middle", "pinky", "ring", "thumb")
        for k in (1, 2, 3)],
    "smpl_kintree": ["Pelvis", "Spine1", "Spine2", "Spine3", "Neck", "Head"] + [
        f"{s}_{p}" for s in "LR" for p in ("Hip", "Knee", "Ankle", "Foot", "Collar", "Shoulder", "Elbow", "Wrist", "Hand")],
    "smpl_fbx": [f"m_avg_{n}" for n in ["Pelvis", "Spine1", "Spine2", "Spine3", "Neck", "Head"]] + [
        f"m_avg_{s}_{p}" for s in "LR" for p in ("Hip", "Knee", "Ankle", "Foot", "Collar", "Shoulder", "Elbow", "Wrist", "Hand")],
    "mixamo": [f"mixamorig:{n}" for n in ["Hips", "Spine", "Spine1", "Spine2", "Neck", "Head", "HeadTop_End"]] + [
        f"mixamorig:{s}{p}" for s in ("Left", "Right") for p in ("UpLeg", "Leg", "Foot", "ToeBase", "Shoulder", "Arm",
                                                               "ForeArm", "Hand", "HandMiddle1", "HandMiddle2")],
    "mixamo_underscore": [n.replace("mixamorig:", "mixamorig1_") for n in [
        "mixamorig:Hips", "mixamorig:Spine", "mixamorig:Spine1", "mixamorig:Spine2", "mixamorig:Neck", "mixamorig:Head"]] + [
        f"mixamorig1_{s}{p}" for s in ("Left", "Right") for p in ("UpLeg", "Leg", "Foot", "ToeBase", "Shoulder", "Arm",
                                                                "ForeArm", "Hand", "HandIndex1")],
    "rigify_metarig": ["spine"] + [f"spine.00{k}" for k in range(1, 7)] + [
        f"{p}.{s}" for s in "LR" for p in ("thigh", "shin", "foot", "toe", "heel.02", "shoulder", "upper_arm",
                                           "forearm", "hand", "palm.02", "f_middle.01")],
    "rigify": ["root", "torso", "hips", "chest", "neck", "head", "spine_fk", "spine_fk.001", "spine_fk.002",
               "spine_fk.003"] + [f"ORG-spine{k}" for k in ("", ".001", ".002", ".003", ".004", ".005", ".006")] + [
        f"{p}.{s}" for s in "LR" for p in ("thigh_fk", "shin_fk", "foot_fk", "toe_fk", "shoulder", "upper_arm_fk",
                                           "forearm_fk", "hand_fk", "f_middle.01", "thigh_parent", "upper_arm_parent",
                                           "ORG-thigh", "ORG-shin", "ORG-foot", "ORG-toe", "ORG-shoulder",
                                           "ORG-upper_arm", "ORG-forearm", "ORG-hand", "ORG-f_middle.01")],
    "unity": ["Hips", "Spine", "Chest", "UpperChest", "Neck", "Head"] + [
        f"{s}{p}" for s in ("Left", "Right") for p in ("UpperLeg", "LowerLeg", "Foot", "Toes", "Shoulder", "UpperArm",
                                                       "LowerArm", "Hand", "MiddleProximal")],
    "vrm": ["J_Bip_C_Hips", "J_Bip_C_Spine", "J_Bip_C_Chest", "J_Bip_C_UpperChest", "J_Bip_C_Neck", "J_Bip_C_Head"] + [
        f"J_Bip_{s}_{p}" for s in "LR" for p in ("UpperLeg", "LowerLeg", "Foot", "ToeBase", "Shoulder", "UpperArm",
                                                 "LowerArm", "Hand", "Middle1")],
    "unreal": ["root", "pelvis", "spine_01", "spine_02", "spine_03", "spine_04", "spine_05", "neck_01", "neck_02",
               "head"] + [f"{p}_{s}" for s in "lr" for p in ("thigh", "calf", "foot", "ball", "clavicle", "upperarm",
                                                             "lowerarm", "hand", "middle_01", "upperarm_twist_01",
                                                             "thigh_twist_01")],
    "auto_rig_pro": ["c_root_master.x", "c_root.x", "c_spine_01.x", "c_spine_02.x", "c_spine_03.x", "c_neck.x",
                     "c_head.x"] + [f"c_{p}.{s}" for s in "lr" for p in ("thigh_fk", "leg_fk", "foot_fk", "toes_fk",
                                                                          "shoulder", "arm_fk", "forearm_fk", "hand_fk",
                                                                          "middle1")],
}


@pytest.mark.parametrize("convention", sorted(CONVENTION_NAMES))
def test_every_claimed_naming_maps_all_24_joints(convention):
    mapping = rig_names.detect_mapping(CONVENTION_NAMES[convention])
    assert mapping.mapped_count == NUM_JOINTS, mapping.missing
    assert rig_names.mapping_problem(mapping) is None
    assert len(set(mapping.joints.values())) == NUM_JOINTS          # one bone per joint
    if convention == "rigify":
        assert mapping.joints["left_shoulder"] == "upper_arm_fk.L" and mapping.measure["left_shoulder"] == "ORG-upper_arm.L"
        assert mapping.root == "torso" and ("upper_arm_parent.L", "IK_FK", 1.0) in mapping.switches


def test_sides_are_not_swapped():
    for names in CONVENTION_NAMES.values():
        mapping = rig_names.detect_mapping(names)
        left, right = mapping.joints["left_elbow"], mapping.joints["right_elbow"]
        assert left != right and rig_names._swap_side(left) == right, (left, right)


@pytest.mark.parametrize("names", [[], ["Bone", "Bone.001", "Bone.002"], ["tail_01", "tail_02", "wing_l", "wing_r"],
                                   ["Hips", "Spine", "Head"]])
def test_a_non_humanoid_gets_one_sentence(names):
    problem = rig_names.mapping_problem(rig_names.detect_mapping(names))
    assert problem is not None and problem.count(". ") == 0 and "humanoid" in problem and problem.endswith(".")


def test_mirror_fill_completes_the_other_side_and_presets_round_trip():
    names = CONVENTION_NAMES["rigify_metarig"]
    full = rig_names.detect_mapping(names)
    left_only = rig_names.RigMapping(joints={j: b for j, b in full.joints.items() if not j.startswith("right_")},
                                    convention="manual")
    filled = rig_names.mirror_fill(left_only, names)
    assert filled.joints == full.joints
    back = rig_names.mapping_from_json(rig_names.mapping_to_json(filled))
    assert back.joints == filled.joints and back.convention == "manual"
    with pytest.raises(ValueError, match="unknown SMPL joints"):
        rig_names.RigMapping.from_dict({**filled.to_dict(), "joints": {"tail": "Bone"}})
    with pytest.raises(ValueError, match="not JSON"):
        rig_names.mapping_from_json("{")


@pytest.mark.parametrize("axes", ["blender", "y_up", "x_forward"])
def test_body_frame_is_the_axis_aligned_left_up_forward(axes):
    joints = load("mannequin").rest_joints                         # SMPL frame: left +X, up +Y, front +Z
    frame = {"blender": C, "y_up": np.eye(3), "x_forward": rot.rotmat_y(np.pi / 2)}[axes]
    lean = rot.rotmat_x(0.15)                                      # a leaning spine must not tilt the frame
    rig = (joints @ lean.T) @ frame.T
    np.testing.assert_allclose(retarget.body_frame(rig, np.ones(NUM_JOINTS, bool)), frame, atol=1e-12)


def test_mirror_is_an_involution_and_mirrors_forward_kinematics():
    rng = np.random.default_rng(0)
    rotmats = rot.rotvec_to_rotmat(rng.normal(0, 0.5, (NUM_JOINTS, 3)))
    np.testing.assert_allclose(retarget.mirror_rotmats(retarget.mirror_rotmats(rotmats)), rotmats, atol=1e-12)
    joints = load("mannequin").rest_joints
    symmetric = (joints + joints[list(MIRROR)] * [-1, 1, 1]) / 2
    a = kinematics.forward_kinematics(symmetric, rotmats).joints
    b = kinematics.forward_kinematics(symmetric, retarget.mirror_rotmats(rotmats)).joints
    np.testing.assert_allclose(b[list(MIRROR)] * [-1, 1, 1], a, atol=1e-9)


# --- the formula through a simulated Blender rig ----------------------------------------------------------

def _a_pose_rig(rng):
    """Bones (name → head, rest matrix 3×3, parent) of an A-pose rig with bent elbows, random rolls and an
    extra bone between spine3 and the neck, in Blender armature space; and the joint → bone mapping."""
    joints = frames.smpl_points_to_blender(load("mannequin").rest_joints * 1.1)
    for side, s in (("left", 1), ("right", -1)):                 # arms 40° down, forearms bent 25° forward
        shoulder = joints[JOINT_INDEX[f"{side}_shoulder"]].copy()
        down = rot.rotmat_y(s * np.radians(40))
        for name in ("elbow", "wrist", "hand"):
            i = JOINT_INDEX[f"{side}_{name}"]
            joints[i] = shoulder + down @ (joints[i] - shoulder)
        elbow = joints[JOINT_INDEX[f"{side}_elbow"]].copy()
        bend = rot.rotmat_z(-s * np.radians(25))
        for name in ("wrist", "hand"):
            i = JOINT_INDEX[f"{side}_{name}"]
            joints[i] = elbow + bend @ (joints[i] - elbow)
    heads = {JOINT_NAMES[i]: joints[i] for i in range(NUM_JOINTS)}
    parents = {JOINT_NAMES[i]: JOINT_NAMES[PARENTS[i]] if PARENTS[i] >= 0 else None for i in range(NUM_JOINTS)}
    heads["upper_chest"] = (joints[JOINT_INDEX["spine3"]] + joints[JOINT_INDEX["neck"]]) / 2
    parents["upper_chest"] = "spine3"
    for n in ("neck", "left_collar", "right_collar"):
        parents[n] = "upper_chest"
    tails = {}
    for n in heads:
        kids = [k for k, p in parents.items() if p == n]
        i = JOINT_INDEX.get(n)
        first = JOINT_NAMES[primary_child(i)] if i is not None and primary_child(i) is not None else None
        if n == "spine3":
            first = "upper_chest"
        elif n == "upper_chest":
            first = "neck"
        tails[n] = heads[first] if first else heads[n] + (heads[n] - heads[parents[n]]) * 0.5
        del kids
    rest = {}
    for n in heads:
        y = (tails[n] - heads[n]) / np.linalg.norm(tails[n] - heads[n])
        x = np.cross(y, rng.normal(size=3))
        x /= np.linalg.norm(x)
        rest[n] = np.stack([x, y, np.cross(x, y)], -1)            # Blender bones: local Y along the bone
    order = ["pelvis"]
    while len(order) < len(heads):
        order += [n for n in heads if n not in order and parents[n] in order]
    return heads, rest, parents, order


def test_segments_point_where_smpl_points_on_an_a_pose_rig_with_any_rolls():
    rng = np.random.default_rng(4)
    heads, rest, parents, order = _a_pose_rig(rng)
    mapped = np.ones(NUM_JOINTS, bool)
    rig_joints = np.array([heads[n] for n in JOINT_NAMES])
    frame = retarget.body_frame(rig_joints, mapped)
    mannequin = load("mannequin").rest_joints
    align = retarget.rest_alignments(rig_joints, mannequin, frame, mapped)
    rest_b = np.array([rest[n] for n in JOINT_NAMES])
    segments = retarget.mapped_segments(mapped)
    for _ in range(20):
        rotmats = rot.rotvec_to_rotmat(rng.normal(0, 0.5, (NUM_JOINTS, 3)))
        target = retarget.target_orientations(rotmats, frame, align, rest_b)        # P, armature space
        posed_rot, posed_head = {}, {}
        for n in order:                                   # Blender: parent · parent_restᵀ · rest · basis
            p = parents[n]
            h = rest[n] if p is None else posed_rot[p] @ rest[p].T @ rest[n]
            basis = h.T @ target[JOINT_INDEX[n]] if n in JOINT_INDEX else np.eye(3)   # extra bone: identity
            posed_rot[n] = h @ basis
            posed_head[n] = heads[n] if p is None else posed_head[p] + posed_rot[p] @ rest[p].T @ (heads[n] - heads[p])
        got = np.array([posed_head[n] for n in JOINT_NAMES])
        want = frames.smpl_points_to_blender(kinematics.forward_kinematics(mannequin, rotmats).joints)
        angles = retarget.direction_angles_deg(retarget.segment_directions(got, segments),
                                               retarget.segment_directions(want, segments))
        assert angles.max() < 1e-6


def test_the_smpl_armature_itself_gets_the_bone_formula():
    """F = C and Q = I on the armature smpl_rig.blender builds: P = C G Cᵀ B, i.e. M = DᵀRD."""
    from smpl_rig import bones
    joints = frames.smpl_points_to_blender(load("mannequin").rest_joints)
    mapped = np.ones(NUM_JOINTS, bool)
    frame = retarget.body_frame(joints, mapped)
    np.testing.assert_allclose(frame, C, atol=1e-12)
    align = retarget.rest_alignments(joints, load("mannequin").rest_joints, frame, mapped)
    np.testing.assert_allclose(align, np.broadcast_to(np.eye(3), align.shape), atol=1e-9)
    rng = np.random.default_rng(1)
    rest_b = rot.rotvec_to_rotmat(rng.normal(size=(NUM_JOINTS, 3)))
    rotmats = rot.rotvec_to_rotmat(rng.normal(0, 0.5, (NUM_JOINTS, 3)))
    target = retarget.target_orientations(rotmats, frame, align, rest_b)
    parent_target = np.concatenate([np.eye(3)[None], target])[[p + 1 for p in PARENTS]]
    parent_rest = np.concatenate([np.eye(3)[None], rest_b])[[p + 1 for p in PARENTS]]
    basis = np.swapaxes(parent_target @ np.swapaxes(parent_rest, -1, -2) @ rest_b, -1, -2) @ target
    np.testing.assert_allclose(basis, bones.pose_bone_rotmats(bones.bone_frames(rest_b), rotmats), atol=1e-9)


def _simulate(heads, rest, parents, order, basis):
    """Blender's pose evaluation: armature-space 4×4 matrices from rest (rotation, head) and pose-bone
    rotations ``basis`` {bone: (3, 3)} (identity for bones not in it), parents first."""
    rest4 = {}
    for n in order:
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = rest[n], heads[n]
        rest4[n] = m
    posed = {}
    for n in order:
        b = np.eye(4)
        b[:3, :3] = basis.get(n, np.eye(3))
        p = parents[n]
        posed[n] = (rest4[n] if p is None else posed[p] @ np.linalg.inv(rest4[p]) @ rest4[n]) @ b
    return posed


def test_the_solver_poses_a_simulated_rig_whose_spine_has_an_extra_bone():
    """follow_relations → build_solver → solve, on the A-pose rig run through Blender's evaluation in numpy:
    every bone segment points where the mannequin's does, and the extra spine bone takes a share."""
    rng = np.random.default_rng(7)
    heads, rest, parents, order = _a_pose_rig(rng)
    mapping = rig_names.RigMapping(joints={n: n for n in JOINT_NAMES})
    driven = list(JOINT_NAMES) + ["upper_chest"]
    identity = _simulate(heads, rest, parents, order, {})
    rest_arr = np.array([identity[n] for n in driven])
    probe = rot.rotvec_to_rotmat(np.array([0.15, 0.4, -0.25]))
    probes = {n: np.array([_simulate(heads, rest, parents, order, {n: probe})[d][:3, :3] for d in driven])
              for n in JOINT_NAMES}
    parent, relation, nonrigid = retarget.follow_relations(driven, rest_arr, probes)
    assert nonrigid == [] and parent["neck"] == "spine3" and parent["left_collar"] == "spine3"
    mapped = np.ones(NUM_JOINTS, bool)
    rig_joints = np.array([heads[n] for n in JOINT_NAMES])
    frame = retarget.body_frame(rig_joints, mapped)
    mannequin = load("mannequin").rest_joints
    alignments = retarget.rest_alignments(rig_joints, mannequin, frame, mapped)
    solver = retarget.build_solver(mapping, driven, rest_arr, parent, relation, {}, frame, alignments, parents,
                                   ["upper_chest"], 1.0)
    assert len(solver.chains) == 1 and solver.names[-1] == "upper_chest"
    segments = retarget.mapped_segments(mapped)
    for _ in range(10):
        rotmats = rot.rotvec_to_rotmat(rng.normal(0, 0.5, (NUM_JOINTS, 3)))
        quats, _, _ = retarget.solve(solver, rotmats)
        basis = dict(zip(solver.names, rot.quat_wxyz_to_rotmat(quats)))
        posed = _simulate(heads, rest, parents, order, basis)
        got = np.array([posed[n][:3, 3] for n in JOINT_NAMES])
        want = frames.smpl_points_to_blender(kinematics.forward_kinematics(mannequin, rotmats).joints)
        angles = retarget.direction_angles_deg(retarget.segment_directions(got, segments),
                                               retarget.segment_directions(want, segments))
        assert angles.max() < 1e-6
        share = rot.geodesic_angle(basis["upper_chest"], np.eye(3))
        assert share > 1e-3 and abs(share - rot.geodesic_angle(basis["spine3"], np.eye(3))) < np.radians(60)
