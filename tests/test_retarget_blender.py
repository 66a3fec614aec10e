"""SMPL poses on artists' rigs in real bpy (issue 14): Rigify's metarig and generated rig, a Mixamo rig, an
SMPL-named rig with other rolls, an A-pose rig with a four-bone spine, each with a skinned mesh.

For 200 poses of the project's corpus, every mapped bone segment (a mapped joint → the next mapped joint on
its bone's line) points where the mannequin's does when posed with the same rotations (mean ≤ 1°, max ≤ 3°);
floor contact puts the lowest vertex on the rest floor (1 mm); keys go on the driven bones; the apply
options do what they say; a rig that is not a humanoid gets one sentence and keeps its bones."""
from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

import rig_fixtures  # noqa: E402
from smpl_rig import blender_keys, blender_retarget, blender_skinning, frames, kinematics, retarget, rig_names  # noqa: E402
from smpl_rig import rotations as rot  # noqa: E402
from smpl_rig.body import load  # noqa: E402
from smpl_rig.skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS  # noqa: E402

pytestmark = [pytest.mark.bpy]

NUM_POSES = 200
MEAN_DEG, MAX_DEG = 1.0, 3.0
FLOOR_TOL_M = 1e-3


@pytest.fixture(scope="module")
def rigs():
    """Every rig kind, built once in one scene (a generated Rigify rig takes seconds to make)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    built = {}
    for kind in rig_fixtures.RIG_KINDS:
        built[kind] = rig_fixtures.build(kind)
    return built


@pytest.fixture(scope="module")
def corpus_poses():
    from training.corpus.generator import PoseGenerator
    generator = PoseGenerator(seed=14)
    return np.array([generator.sample().rotmat for _ in range(NUM_POSES)])


def mannequin_joints_blender(rotmats):
    return frames.smpl_points_to_blender(kinematics.forward_kinematics(load("mannequin").rest_joints, rotmats).joints)


@pytest.mark.parametrize("kind", rig_fixtures.RIG_KINDS)
def test_auto_detection_maps_all_24_joints(rigs, kind):
    info = blender_retarget.describe(rigs[kind])
    assert info["problem"] is None and info["mapped"] == NUM_JOINTS and info["missing"] == [], info


@pytest.mark.parametrize("kind", rig_fixtures.RIG_KINDS)
@pytest.mark.slow
def test_corpus_poses_point_every_bone_segment_like_the_mannequin(rigs, corpus_poses, kind):
    rig = rigs[kind]
    mapping = blender_retarget.rig_mapping(rig)
    segments = retarget.mapped_segments(np.array([j in mapping.joints for j in JOINT_NAMES]))
    options = blender_retarget.ApplyOptions(floor_contact=False)
    errors = []
    for rotmats in corpus_poses:
        blender_retarget.apply_pose(rig, rotmats, options=options)
        got = retarget.segment_directions(blender_retarget.world_joint_positions(rig, mapping), segments)
        want = retarget.segment_directions(mannequin_joints_blender(rotmats), segments)
        errors.append(retarget.direction_angles_deg(got, want))
    errors = np.array(errors)
    print(f"{kind}: mean {errors.mean():.4f}° max {errors.max():.4f}° over {len(segments)} segments")
    assert errors.mean() <= MEAN_DEG and errors.max() <= MAX_DEG


@pytest.mark.parametrize("kind", rig_fixtures.RIG_KINDS)
@pytest.mark.slow
def test_floor_contact_rests_the_lowest_vertex_on_the_rest_floor(rigs, corpus_poses, kind):
    rig = rigs[kind]
    rest_floor = blender_retarget.calibrate(rig).rest_floor
    gaps = []
    for rotmats in corpus_poses:                         # standing, kneeling, sitting, lying poses of the corpus
        blender_retarget.apply_pose(rig, rotmats)
        gaps.append(abs(blender_retarget.lowest_point(rig) - rest_floor))
    assert max(gaps) <= FLOOR_TOL_M


@pytest.mark.parametrize("kind", rig_fixtures.RIG_KINDS)
def test_the_lowest_point_by_skinning_in_numpy_is_blenders(rigs, corpus_poses, kind):
    """The floor contact's lowest vertex computed from the bone channels (no depsgraph evaluation) equals the
    lowest vertex of Blender's evaluated mesh to 1e-5 m, pose after pose; rigs whose deformation needs
    Blender (Rigify's constraints) take the evaluated path."""
    rig = rigs[kind]
    fast = []
    for rotmats in corpus_poses[:25]:
        blender_retarget.apply_pose(rig, rotmats, options=blender_retarget.ApplyOptions(floor_contact=False))
        fast.append(blender_skinning.lowest_vertex_z(rig, blender_retarget._skinned_meshes(rig)))
        if fast[-1] is not None:
            assert abs(fast[-1] - blender_retarget.lowest_point(rig, use_skinning=False)) <= 1e-5
    assert all(f is None for f in fast) or all(f is not None for f in fast)
    assert (fast[0] is None) == (kind == "rigify_generated"), (kind, fast[0])      # its bones have constraints
    # The object moved and turned just before a pose (no evaluation between): matrix_world is stale then.
    location, rotation = tuple(rig.location), tuple(rig.rotation_euler)
    try:
        rig.location.z += 0.5
        rig.rotation_euler.z += 0.7
        blender_retarget.apply_pose(rig, corpus_poses[30])
        # the floor contact still lands it on the rest floor (a world height), measured by Blender
        expected = blender_retarget.calibrate(rig).rest_floor
        assert abs(blender_retarget.lowest_point(rig, use_skinning=False) - expected) <= 1e-5
    finally:
        rig.location, rig.rotation_euler = location, rotation
        bpy.context.view_layer.update()


def test_a_lying_pose_rests_on_the_floor(rigs):
    rig = rigs["mixamo"]
    lying = np.tile(np.eye(3), (NUM_JOINTS, 1, 1))
    lying[0] = rot.rotmat_x(np.pi / 2)                       # face up, lying along the floor
    blender_retarget.apply_pose(rig, lying)
    assert abs(blender_retarget.lowest_point(rig) - blender_retarget.calibrate(rig).rest_floor) <= FLOOR_TOL_M


@pytest.mark.parametrize("kind", ["rigify_generated", "mixamo", "a_pose"])
def test_keys_on_retargeted_rigs_read_back(rigs, corpus_poses, kind):
    rig = rigs[kind]
    names = blender_retarget.calibrate(rig).names
    shown = {}
    for frame, rotmats in ((1, corpus_poses[0]), (11, corpus_poses[1])):
        blender_retarget.apply_pose(rig, rotmats)
        blender_keys.key_pose(rig, frame)
        shown[frame] = blender_retarget.world_joint_positions(rig)
    bpy.context.scene.frame_set(1)
    np.testing.assert_allclose(blender_retarget.world_joint_positions(rig), shown[1], atol=1e-4)
    blender_keys.key_sequence(rig, corpus_poses[2:6], fps=bpy.context.scene.render.fps, start_frame=30)
    bpy.context.scene.frame_set(32)
    blender_retarget.apply_pose(rig, corpus_poses[4], options=blender_retarget.ApplyOptions(floor_contact=False))
    expected = {n: tuple(rig.pose.bones[n].rotation_quaternion) for n in names}
    bpy.context.scene.frame_set(32)                           # the keys put the same rotations back
    for n in names:
        q = np.array(rig.pose.bones[n].rotation_quaternion)
        assert abs(abs(q @ np.array(expected[n])) - 1) < 1e-5, n
    rig.animation_data_clear()


def test_apply_options_strength_selection_keep_and_mirror(rigs, corpus_poses):
    rig = rigs["a_pose"]
    names = blender_retarget.calibrate(rig).names
    off = blender_retarget.ApplyOptions(floor_contact=False)
    quats = lambda: np.array([tuple(rig.pose.bones[n].rotation_quaternion) for n in names])
    blender_retarget.apply_pose(rig, corpus_poses[0], options=off)
    first = quats()
    blender_retarget.apply_pose(rig, corpus_poses[1], options=off)
    second = quats()
    # strength 0 keeps the pose; 0.5 is the slerp halfway
    blender_retarget.apply_pose(rig, corpus_poses[0], options=blender_retarget.ApplyOptions(strength=0.0, floor_contact=False))
    np.testing.assert_allclose(np.abs((quats() * second).sum(-1)), 1.0, atol=1e-6)
    blender_retarget.apply_pose(rig, corpus_poses[1], options=off)
    blender_retarget.apply_pose(rig, corpus_poses[0], options=blender_retarget.ApplyOptions(strength=0.5, floor_contact=False))
    half = rot.quat_wxyz_slerp(second, first, np.full(len(names), 0.5))
    np.testing.assert_allclose(np.abs((quats() * half).sum(-1)), 1.0, atol=1e-6)
    # keep bones edited by hand since the last apply
    blender_retarget.apply_pose(rig, corpus_poses[1], options=off)
    rig.pose.bones["lowerarm_l"].rotation_quaternion = (0.0, 1.0, 0.0, 0.0)
    blender_retarget.apply_pose(rig, corpus_poses[0], options=blender_retarget.ApplyOptions(keep_changed=True, floor_contact=False))
    assert tuple(rig.pose.bones["lowerarm_l"].rotation_quaternion) == (0.0, 1.0, 0.0, 0.0)
    np.testing.assert_allclose(np.abs(quats()[names.index("thigh_l")] @ first[names.index("thigh_l")]), 1.0, atol=1e-6)
    # only selected bones
    blender_retarget.apply_pose(rig, corpus_poses[1], options=off)
    for pose_bone in rig.pose.bones:
        _select(pose_bone, pose_bone.name == "thigh_r")
    blender_retarget.apply_pose(rig, corpus_poses[0], options=blender_retarget.ApplyOptions(only_selected=True, floor_contact=False))
    now = quats()
    for i, n in enumerate(names):
        expected = first[i] if n == "thigh_r" else second[i]
        assert abs(abs(now[i] @ expected) - 1) < 1e-6, n
    # mirror: the left arm does what the right arm did
    blender_retarget.apply_pose(rig, corpus_poses[0], options=blender_retarget.ApplyOptions(mirror=True, floor_contact=False))
    mirrored = blender_retarget.world_joint_positions(rig)
    want = mannequin_joints_blender(retarget.mirror_rotmats(corpus_poses[0]))
    segment = (JOINT_INDEX["left_elbow"], JOINT_INDEX["left_wrist"])
    got_dir = retarget.segment_directions(mirrored, [segment])
    assert retarget.direction_angles_deg(got_dir, retarget.segment_directions(want, [segment]))[0] < 1e-3


def _select(pose_bone, state):
    if "select" in pose_bone.bl_rna.properties:
        pose_bone.select = state
    else:
        pose_bone.bone.select = state


def test_a_non_humanoid_gets_one_sentence_and_keeps_its_bones():
    arm = bpy.data.objects.new("Tentacle", bpy.data.armatures.new("Tentacle"))
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    parent = None
    for k in range(5):
        bone = arm.data.edit_bones.new(f"seg_{k}")
        bone.head, bone.tail = (0, 0, k), (0, 0, k + 1)
        bone.parent = parent
        parent = bone
    bpy.ops.object.mode_set(mode="OBJECT")
    before = [tuple(b.rotation_quaternion) for b in arm.pose.bones]
    info = blender_retarget.describe(arm)
    assert info["mapped"] < NUM_JOINTS and "humanoid" in info["problem"]
    with pytest.raises(ValueError, match="humanoid"):
        blender_retarget.apply_pose(arm, np.zeros((24, 3)))
    assert [tuple(b.rotation_quaternion) for b in arm.pose.bones] == before
    assert blender_retarget.MAPPING_PROPERTY not in arm


def test_the_mapping_is_stored_on_the_armature_and_presets_round_trip(rigs, tmp_path):
    rig = rigs["mixamo"]
    blender_retarget.apply_pose(rig, np.zeros((24, 3)))
    stored = rig_names.mapping_from_json(rig[blender_retarget.MAPPING_PROPERTY])
    assert stored.joints == blender_retarget.rig_mapping(rig).joints
    path = tmp_path / "mixamo.json"
    blender_retarget.save_preset(path, stored)
    assert blender_retarget.load_preset(path).joints == stored.joints


def test_torso_chains_share_the_rotation_and_their_ends_land_on_smpl_joints(rigs, corpus_poses):
    """The A-pose rig's fourth spine bone and second neck bone take a share of the joint's rotation (a hand
    edit there is replaced); twist bones (off the chains) keep their pose."""
    rig = rigs["a_pose"]
    names = blender_retarget.calibrate(rig).names
    assert {"spine_04", "neck_02"} <= set(names) and not any("twist" in n for n in names)
    rig.pose.bones["spine_04"].rotation_quaternion = (0.9, 0.3, 0.2, 0.1)
    rig.pose.bones["upperarm_twist_01_l"].rotation_quaternion = (0.0, 1.0, 0.0, 0.0)
    blender_retarget.apply_pose(rig, corpus_poses[7], options=blender_retarget.ApplyOptions(floor_contact=False))
    angle = lambda bone: 2 * np.degrees(np.arccos(min(1.0, abs(rig.pose.bones[bone].rotation_quaternion[0]))))
    assert 0.3 < angle("spine_04") / angle("spine_03") < 3.0        # shared, not all on one bone
    assert 0.3 < angle("neck_02") / angle("neck_01") < 3.0
    assert tuple(rig.pose.bones["upperarm_twist_01_l"].rotation_quaternion) == (0.0, 1.0, 0.0, 0.0)
    segment = [(JOINT_INDEX["spine3"], JOINT_INDEX["neck"]), (JOINT_INDEX["neck"], JOINT_INDEX["head"])]
    got = retarget.segment_directions(blender_retarget.world_joint_positions(rig), segment)
    want = retarget.segment_directions(mannequin_joints_blender(corpus_poses[7]), segment)
    assert retarget.direction_angles_deg(got, want).max() < 1e-3


def test_amass_motion_goes_onto_a_retargeted_rig(rigs, tmp_path):
    from smpl_rig import amass
    rig = rigs["mixamo"]
    rng = np.random.default_rng(5)
    poses = rng.normal(0, 0.3, (6, 156))
    path = tmp_path / "walk.npz"
    np.savez(path, poses=poses, trans=rng.normal(0, 0.2, (6, 3)), mocap_frame_rate=np.array(24.0))
    bpy.context.scene.render.fps, bpy.context.scene.render.fps_base = 24, 1.0
    info = blender_keys.load_amass(path, rig, start_frame=50)
    assert (info.num_frames, info.start_frame, info.end_frame) == (6, 50, 55)
    expected = amass.poses_to_rotmat(poses)
    expected[:, 0] = frames.amass_to_smpl_orient(expected[:, 0])
    mapping = blender_retarget.rig_mapping(rig)
    segments = retarget.mapped_segments(np.array([j in mapping.joints for j in JOINT_NAMES]))
    for k in (0, 3, 5):
        bpy.context.scene.frame_set(50 + k)
        got = retarget.segment_directions(blender_retarget.world_joint_positions(rig), segments)
        want = retarget.segment_directions(mannequin_joints_blender(expected[k]), segments)
        assert retarget.direction_angles_deg(got, want).max() < 1e-2, k
    rig.animation_data_clear()


def test_the_numpy_lowest_point_follows_edited_vertices_and_repainted_weights(rigs, corpus_poses):
    """Vertex positions are read on every call; weights are cached until ``forget_calibration``."""
    rig = rigs["mixamo"]
    (mesh_obj,) = blender_retarget._skinned_meshes(rig)
    blender_retarget.apply_pose(rig, corpus_poses[3], options=blender_retarget.ApplyOptions(floor_contact=False))
    positions = np.empty(3 * len(mesh_obj.data.vertices), dtype=np.float32)
    mesh_obj.data.vertices.foreach_get("co", positions)
    weights = {v.index: [(e.group, e.weight) for e in v.groups] for v in mesh_obj.data.vertices}
    try:
        lowest = int(np.argmin(positions.reshape(-1, 3)[:, 2]))
        mesh_obj.data.vertices[lowest].co.z -= 0.2
        mesh_obj.data.update()
        fast = blender_skinning.lowest_vertex_z(rig, [mesh_obj])
        assert abs(fast - blender_retarget.lowest_point(rig, use_skinning=False)) <= 1e-5
        hips = mesh_obj.vertex_groups["mixamorig:Hips"]             # repainted: the whole body on the hips
        for v in mesh_obj.data.vertices:
            for e in list(v.groups):
                mesh_obj.vertex_groups[e.group].remove([v.index])
            hips.add([v.index], 1.0, "REPLACE")
        blender_retarget.forget_calibration(rig)
        rigid = blender_skinning.lowest_vertex_z(rig, [mesh_obj])
        assert abs(rigid - blender_retarget.lowest_point(rig, use_skinning=False)) <= 1e-5
        assert abs(rigid - fast) > 1e-3                      # the pose's feet no longer carry the lowest vertex
    finally:
        mesh_obj.data.vertices.foreach_set("co", positions)
        for v in mesh_obj.data.vertices:
            for e in list(v.groups):
                mesh_obj.vertex_groups[e.group].remove([v.index])
            for group, weight in weights[v.index]:
                mesh_obj.vertex_groups[group].add([v.index], weight, "REPLACE")
        mesh_obj.data.update()
        blender_retarget.forget_calibration(rig)


def test_the_numpy_lowest_point_leaves_what_blender_alone_decides_to_blender(rigs):
    """A bone with a constraint, or the armature with drivers: Blender's evaluation decides."""
    rig = rigs["mixamo"]
    meshes = blender_retarget._skinned_meshes(rig)
    had_animation = rig.animation_data is not None
    assert blender_skinning.lowest_vertex_z(rig, meshes) is not None
    bone = rig.pose.bones[len(rig.pose.bones) // 2]
    constraint = bone.constraints.new("COPY_ROTATION")
    try:
        assert blender_skinning.lowest_vertex_z(rig, meshes) is None
    finally:
        bone.constraints.remove(constraint)
    driver = bone.driver_add("rotation_quaternion", 1)
    try:
        assert blender_skinning.lowest_vertex_z(rig, meshes) is None
    finally:
        bone.driver_remove("rotation_quaternion", 1)
        if not had_animation:
            rig.animation_data_clear()
    assert blender_skinning.lowest_vertex_z(rig, meshes) is not None
