"""SMPL armatures in Blender (bpy module, headless): bones land where forward kinematics says, for both
body sources; poses read back exactly; keys read back from the F-curves; bad input changes nothing."""
from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from smpl_rig import blender as smpl_blender  # noqa: E402
from smpl_rig import blender_keys as smpl_keys  # noqa: E402
from smpl_rig import bones  # noqa: E402
from smpl_rig import body as smpl_body  # noqa: E402
from smpl_rig import frames, kinematics, rotations as rot  # noqa: E402
from smpl_rig.skeleton import JOINT_NAMES, PARENTS, primary_child  # noqa: E402

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("fresh_scene")]

BODY_SOURCES = ("synthetic_smpl", "mannequin")
NUM_RANDOM_POSES = 100
ROUND_TRIP_TOL = 1e-6
C = frames.SMPL_TO_BLENDER


# --- fixtures ---------------------------------------------------------------------------------------------

@pytest.fixture(params=BODY_SOURCES)
def body(request, bodies):
    return bodies[request.param]


def random_pose(rng, scale=0.6):
    """(24, 3) axis-angle with a random global orientation over the whole sphere."""
    pose = rng.normal(0.0, scale, (24, 3))
    pose[0] = rng.normal(size=3)
    pose[0] *= rng.uniform(0, np.pi) / np.linalg.norm(pose[0])
    return pose


def fk_in_blender(body, rotmats, translation=None):
    """Where the joints must be: SMPL forward kinematics mapped into Blender by C."""
    joints = kinematics.forward_kinematics(np.asarray(body.rest_joints, dtype=np.float64), rotmats, translation).joints
    return frames.smpl_points_to_blender(joints)


def armature_state(obj):
    """Everything apply_pose may change, to prove a rejected call changed nothing."""
    bones = obj.pose.bones
    state = {
        "rot": np.array([tuple(b.rotation_quaternion) for b in bones]),
        "loc": np.array([tuple(b.location) for b in bones]),
        "scale": np.array([tuple(b.scale) for b in bones]),
        "mode": [b.rotation_mode for b in bones],
    }
    mesh = smpl_blender.body_mesh(obj)
    if mesh is not None and mesh.data.shape_keys is not None:
        state["keys"] = np.array([k.value for k in mesh.data.shape_keys.key_blocks])
    return state


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key == "mode":
            assert a[key] == b[key]
        else:
            np.testing.assert_array_equal(a[key], b[key])


# --- building -------------------------------------------------------------------------------------------

def test_bones_sit_on_joints_point_to_children_with_a_deliberate_roll(body):
    obj = smpl_blender.build_armature(body, name="Rig")
    assert obj.type == "ARMATURE" and smpl_blender.is_smpl_armature(obj)
    assert sorted(b.name for b in obj.data.bones) == sorted(JOINT_NAMES)
    heads = frames.smpl_points_to_blender(np.asarray(body.rest_joints, dtype=np.float64))
    forward = np.array([0.0, -1.0, 0.0])
    rests = []
    for i, name in enumerate(JOINT_NAMES):
        bone = obj.data.bones[name]
        np.testing.assert_allclose(np.array(bone.head_local), heads[i], atol=1e-6)
        assert (bone.parent.name if bone.parent else None) == (JOINT_NAMES[PARENTS[i]] if i else None)
        direction = np.array(bone.tail_local) - np.array(bone.head_local)
        assert np.linalg.norm(direction) > 0.01 * body.height
        child = primary_child(i)
        target = heads[child] - heads[i] if child is not None else heads[i] - heads[PARENTS[i]]
        np.testing.assert_allclose(direction / np.linalg.norm(direction), target / np.linalg.norm(target), atol=1e-5)
        rest = np.array(bone.matrix_local.to_3x3())
        rests.append(rest)
        z_axis, y_axis = rest[:, 2], rest[:, 1]
        # The roll rule: local Z toward the body's front, or up for bones that point forward themselves.
        if abs(y_axis @ forward) <= bones.FACING_ROLL_LIMIT:
            assert z_axis @ forward > 0.7 * np.sqrt(1 - (y_axis @ forward) ** 2)
        else:
            assert z_axis[2] > 0
    # Not the degenerate "everything along +Z with roll 0" rig that hides conjugation bugs: limbs have
    # bone frames far from the SMPL frame (spine bones, up with Z forward, happen to match it).
    d = C.T @ np.array(rests)
    assert sum(np.abs(di - np.eye(3)).max() > 0.5 for di in d) >= 12
    mesh = smpl_blender.body_mesh(obj)
    assert mesh.parent == obj and [g.name for g in mesh.vertex_groups] == list(JOINT_NAMES)
    assert any(m.type == "ARMATURE" and m.object == obj for m in mesh.modifiers)
    has_keys = mesh.data.shape_keys is not None
    assert has_keys == (body.posedirs is not None)
    if has_keys:
        assert len(mesh.data.shape_keys.key_blocks) == 1 + 207
    np.testing.assert_allclose(smpl_blender.rest_joints(obj), body.rest_joints, atol=1e-6)


def test_is_smpl_armature_rejects_other_objects(bodies):
    plain = bpy.data.objects.new("Plain", bpy.data.armatures.new("Plain"))
    empty = bpy.data.objects.new("Empty", None)
    obj = smpl_blender.build_armature(bodies["mannequin"])
    assert smpl_blender.is_smpl_armature(obj)
    assert not smpl_blender.is_smpl_armature(plain)
    assert not smpl_blender.is_smpl_armature(empty)
    assert not smpl_blender.is_smpl_armature(smpl_blender.body_mesh(obj))
    assert not smpl_blender.is_smpl_armature(None)
    bpy.context.scene.collection.objects.link(plain)
    assert smpl_blender.find_smpl_armatures() == [obj]


# --- posing ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["keep", "upright", "translated"])
def test_pose_bone_heads_equal_forward_kinematics(body, variant):
    obj = smpl_blender.build_armature(body)
    rng = np.random.default_rng({"keep": 0, "upright": 1, "translated": 2}[variant])
    tolerance = 1e-5 * body.height
    worst = 0.0
    for _ in range(NUM_RANDOM_POSES):
        pose = random_pose(rng)
        translation = rng.normal(0, 0.5, 3) if variant == "translated" else None
        orient = "upright" if variant == "upright" else "keep"
        smpl_blender.apply_pose(obj, pose, global_orient=orient, translation=translation)
        bpy.context.view_layer.update()
        heads = np.array([obj.matrix_world @ pb.head for pb in (obj.pose.bones[n] for n in JOINT_NAMES)])
        rotmats = rot.rotvec_to_rotmat(pose)
        if variant == "upright":
            rotmats[0] = np.eye(3)
        worst = max(worst, np.abs(heads - fk_in_blender(body, rotmats, translation)).max())
    assert worst <= tolerance, f"max joint error {worst:.3g} m > {tolerance:.3g} m"


def test_upright_stands_on_plus_z_facing_minus_y(bodies):
    body = bodies["mannequin"]
    obj = smpl_blender.build_armature(body)
    pose = random_pose(np.random.default_rng(5), scale=0.0)
    pose[0] = [2.0, -1.0, 0.5]
    smpl_blender.apply_pose(obj, pose, global_orient="upright")
    joints = smpl_blender.world_joint_positions(obj)
    index = {n: i for i, n in enumerate(JOINT_NAMES)}
    assert joints[index["head"], 2] > joints[index["pelvis"], 2] + 0.3 * body.height      # head up (+Z)
    assert joints[index["left_shoulder"], 0] > joints[index["right_shoulder"], 0]          # left is +X ...
    # ... so the body's front, left × up, is −Y: the character faces the Front view.
    left = joints[index["left_shoulder"]] - joints[index["right_shoulder"]]
    facing = np.cross(left, np.array([0.0, 0.0, 1.0]))
    assert facing[1] < -0.9 * np.linalg.norm(facing)


def test_object_transform_moves_the_whole_rig(bodies):
    body = bodies["mannequin"]
    obj = smpl_blender.build_armature(body)
    obj.location = (1.0, 2.0, -0.5)
    obj.rotation_euler = (0.0, 0.0, 0.7)
    bpy.context.view_layer.update()
    pose = random_pose(np.random.default_rng(9))
    rotmats = smpl_blender.apply_pose(obj, pose)
    world = np.array(obj.matrix_world)
    expected = fk_in_blender(body, rotmats) @ world[:3, :3].T + world[:3, 3]
    np.testing.assert_allclose(smpl_blender.world_joint_positions(obj), expected, atol=1e-5 * body.height)


@pytest.mark.parametrize("representation", ["rotvec", "rotmat", "d6", "quat_wxyz", "flat72"])
def test_read_pose_inverts_apply_pose(body, representation):
    obj = smpl_blender.build_armature(body)
    rng = np.random.default_rng(11)
    for _ in range(NUM_RANDOM_POSES):
        rotvec = random_pose(rng)
        rotmats = rot.rotvec_to_rotmat(rotvec)
        given = {"rotvec": rotvec, "rotmat": rotmats, "d6": rot.rotmat_to_d6(rotmats),
                 "quat_wxyz": rot.rotmat_to_quat_wxyz(rotmats), "flat72": rotvec.reshape(72)}[representation]
        translation = rng.normal(0, 0.3, 3)
        smpl_blender.apply_pose(obj, given, translation=translation)
        np.testing.assert_allclose(smpl_blender.read_pose(obj), rotmats, atol=ROUND_TRIP_TOL)
        np.testing.assert_allclose(smpl_blender.read_translation(obj), translation, atol=ROUND_TRIP_TOL)


def test_float32_model_output_round_trips(bodies):
    obj = smpl_blender.build_armature(bodies["mannequin"])
    rotmats = rot.rotvec_to_rotmat(random_pose(np.random.default_rng(4))).astype(np.float32)
    smpl_blender.apply_pose(obj, rot.rotmat_to_d6(rotmats))
    np.testing.assert_allclose(smpl_blender.read_pose(obj), rotmats, atol=ROUND_TRIP_TOL)


def test_dict_pose_changes_only_named_joints(bodies):
    obj = smpl_blender.build_armature(bodies["mannequin"])
    base = rot.rotvec_to_rotmat(random_pose(np.random.default_rng(6)))
    smpl_blender.apply_pose(obj, base)
    elbow = np.array([0.0, 0.0, 1.2])
    smpl_blender.apply_pose(obj, {"left_elbow": elbow, "neck": rot.rotvec_to_rotmat(np.array([0.3, 0.0, 0.0]))})
    expected = base.copy()
    expected[JOINT_NAMES.index("left_elbow")] = rot.rotvec_to_rotmat(elbow)
    expected[JOINT_NAMES.index("neck")] = rot.rotvec_to_rotmat(np.array([0.3, 0.0, 0.0]))
    np.testing.assert_allclose(smpl_blender.read_pose(obj), expected, atol=ROUND_TRIP_TOL)


def test_pose_corrective_shape_keys_follow_the_applied_rotations(bodies):
    body = bodies["synthetic_smpl"]
    obj = smpl_blender.build_armature(body)
    blocks = smpl_blender.body_mesh(obj).data.shape_keys.key_blocks
    rng = np.random.default_rng(8)
    for _ in range(10):
        rotmats = smpl_blender.apply_pose(obj, random_pose(rng, scale=1.0))
        values = np.array([b.value for b in blocks[1:]])
        features = (rotmats[1:] - np.eye(3)).reshape(207)            # (R_i − I), row-major, joints 1..23
        np.testing.assert_allclose(values, features, atol=1e-6)
        names = [b.name for b in blocks[1:]]
        assert names[0] == "pose_corrective_left_hip_00" and names[-1] == "pose_corrective_right_hand_22"


def test_skinned_mesh_matches_smpl_linear_blend_skinning(body):
    """The deformed mesh (shape keys, then Armature modifier) equals Body.pose mapped into Blender."""
    obj = smpl_blender.build_armature(body)
    mesh_obj = smpl_blender.body_mesh(obj)
    rng = np.random.default_rng(12)
    for _ in range(3):
        rotmats = rot.rotvec_to_rotmat(random_pose(rng, scale=0.5))
        translation = rng.normal(0, 0.3, 3)
        smpl_blender.apply_pose(obj, rotmats, translation=translation)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = mesh_obj.evaluated_get(depsgraph).to_mesh()
        coords = np.empty(3 * len(evaluated.vertices), dtype=np.float32)
        evaluated.vertices.foreach_get("co", coords)
        mesh_obj.evaluated_get(depsgraph).to_mesh_clear()
        expected, _ = body.pose(rotmats, translation)
        error = np.abs(coords.reshape(-1, 3) - frames.smpl_points_to_blender(expected)).max()
        assert error <= 1e-5 * body.height * 3, error


def test_each_apply_pose_with_undo_push_is_one_undo_step(bodies):
    obj = smpl_blender.build_armature(bodies["mannequin"], name="UndoRig")
    bpy.ops.ed.undo_push(message="built")
    rng = np.random.default_rng(13)
    first, second = rng.normal(0, 0.5, (2, 24, 3))
    smpl_blender.apply_pose(obj, first, undo_push=True)
    smpl_blender.apply_pose(obj, second, undo_push=True, translation=[0.0, 0.0, 0.4])
    bpy.ops.ed.undo()
    obj = bpy.data.objects["UndoRig"]          # undo reloads data: look the object up again
    np.testing.assert_allclose(smpl_blender.read_pose(obj), rot.rotvec_to_rotmat(first), atol=ROUND_TRIP_TOL)
    np.testing.assert_allclose(smpl_blender.read_translation(obj), 0.0, atol=ROUND_TRIP_TOL)
    bpy.ops.ed.undo()
    obj = bpy.data.objects["UndoRig"]
    np.testing.assert_allclose(smpl_blender.read_pose(obj), np.broadcast_to(np.eye(3), (24, 3, 3)), atol=ROUND_TRIP_TOL)


# --- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (np.zeros((23, 3)), "pose must be"),
    (np.zeros((24, 5)), "pose must be"),
    (np.zeros((2, 24, 3)), "one pose"),
    (np.full((24, 3), np.nan), "NaN"),
    (np.full((24, 3, 3), 2.0), "not rotations"),
    (np.tile(np.diag([1.0, 1.0, -1.0]), (24, 1, 1)), "not rotations"),
    ({"left_elbow": [0, 0, 1], "left_pinky": [0, 1, 0]}, "unknown SMPL joint"),
    ({"left_elbow": [0, 0]}, "must be"),
    ("a pose", "pose"),
])
def test_bad_pose_raises_and_leaves_the_armature_unchanged(bodies, bad, message):
    obj = smpl_blender.build_armature(bodies["synthetic_smpl"])
    smpl_blender.apply_pose(obj, random_pose(np.random.default_rng(1)), translation=[0.1, 0.2, 0.3])
    before = armature_state(obj)
    with pytest.raises(ValueError, match=message):
        smpl_blender.apply_pose(obj, bad, translation=[0.5, 0.5, 0.5])
    assert_same_state(before, armature_state(obj))


@pytest.mark.parametrize("kwargs, message", [
    ({"translation": [0.0, 1.0]}, "translation"),
    ({"translation": [0.0, np.inf, 1.0]}, "translation"),
    ({"global_orient": "camera"}, "global_orient"),
])
def test_bad_options_raise_and_leave_the_armature_unchanged(bodies, kwargs, message):
    obj = smpl_blender.build_armature(bodies["mannequin"])
    smpl_blender.apply_pose(obj, random_pose(np.random.default_rng(2)))
    before = armature_state(obj)
    with pytest.raises(ValueError, match=message):
        smpl_blender.apply_pose(obj, np.zeros((24, 3)), **kwargs)
    assert_same_state(before, armature_state(obj))


def test_non_smpl_armature_is_refused_untouched():
    arm = bpy.data.objects.new("Other", bpy.data.armatures.new("Other"))
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    bone = arm.data.edit_bones.new("pelvis")
    bone.head, bone.tail = (0, 0, 0), (0, 0, 1)
    bpy.ops.object.mode_set(mode="OBJECT")
    rotation = tuple(arm.pose.bones["pelvis"].rotation_quaternion)
    for call in (lambda: smpl_blender.apply_pose(arm, np.zeros((24, 3))), lambda: smpl_blender.read_pose(arm)):
        with pytest.raises(ValueError, match="not built by smpl_rig"):
            call()
    # keys also go on retargeted rigs (issue 14): a one-bone armature is refused with the retargeting sentence
    for call in (lambda: smpl_keys.key_pose(arm, 1), lambda: smpl_keys.key_sequence(arm, np.zeros((2, 24, 3)))):
        with pytest.raises(ValueError, match="does not look like a humanoid"):
            call()
    assert tuple(arm.pose.bones["pelvis"].rotation_quaternion) == rotation and arm.animation_data is None


def test_edit_mode_armature_is_refused_untouched(bodies):
    obj = smpl_blender.build_armature(bodies["mannequin"])
    smpl_blender.apply_pose(obj, random_pose(np.random.default_rng(14)))
    before = armature_state(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    with pytest.raises(ValueError, match="Edit Mode"):
        smpl_blender.apply_pose(obj, np.zeros((24, 3)))
    with pytest.raises(ValueError, match="Edit Mode"):
        smpl_keys.key_sequence(obj, np.zeros((3, 24, 3)))
    bpy.ops.object.mode_set(mode="OBJECT")
    assert_same_state(before, armature_state(obj))
    assert obj.animation_data is None


def test_build_armature_rejects_a_malformed_body(bodies):
    good = bodies["mannequin"]
    bad = smpl_body.Body(rest_joints=good.rest_joints[:20], vertices=good.vertices, faces=good.faces,
                         weights=good.weights)
    count = len(bpy.data.objects)
    with pytest.raises(ValueError, match="rest_joints"):
        smpl_blender.build_armature(bad)
    assert len(bpy.data.objects) == count


# --- keyframes --------------------------------------------------------------------------------------------

def _channels(obj):
    """The F-curves of the object's assigned action slot (Blender ≥ 4.4) or of its action."""
    from bpy_extras import anim_utils
    anim = obj.animation_data
    if bpy.app.version >= (4, 4, 0):
        return anim_utils.action_get_channelbag_for_slot(anim.action, anim.action_slot).fcurves
    return anim.action.fcurves


def _curve_quats(obj, frames_):
    """Quaternions (n, 24, 4) evaluated straight from the rotation F-curves."""
    fcurves = _channels(obj)
    out = np.empty((len(frames_), 24, 4))
    for i, name in enumerate(JOINT_NAMES):
        for k in range(4):
            curve = fcurves.find(f'pose.bones["{name}"].rotation_quaternion', index=k)
            out[:, i, k] = [curve.evaluate(f) for f in frames_]
    return out


def _bone_local(obj, rotmats):
    """What the pose-bone rotations must be, M_i = D_iᵀ R_i D_i, for (n, 24, 3, 3) (B_i is stored in float32
    and off orthonormal by ~5e-7: projected back, as apply_pose does, to compare at 1e-6)."""
    rest = rot.orthonormalize_rotmat(np.array([obj.data.bones[n].matrix_local.to_3x3() for n in JOINT_NAMES]))
    d = C.T @ rest
    return np.swapaxes(d, -1, -2) @ rotmats @ d


def _smooth_motion(rng, count):
    """A motion whose rotations wander through ±π, so quaternion signs would flip without alignment."""
    start, end = random_pose(rng, 1.0), random_pose(rng, 1.0)
    t = np.linspace(0, 1, count)[:, None, None]
    return rot.rotvec_to_rotmat(start * (1 - t) + end * t * 3.0)


def test_key_sequence_reads_back_at_every_frame(body):
    obj = smpl_blender.build_armature(body)
    rng = np.random.default_rng(21)
    rotmats = _smooth_motion(rng, 40)
    translations = rng.normal(0, 0.2, (40, 3))
    frames_ = smpl_keys.key_sequence(obj, rotmats, fps=bpy.context.scene.render.fps, start_frame=5,
                                        translations=translations)
    np.testing.assert_array_equal(frames_, 5 + np.arange(40))
    quats = _curve_quats(obj, frames_)
    np.testing.assert_allclose(rot.quat_wxyz_to_rotmat(quats), _bone_local(obj, rotmats), atol=1e-6)
    np.testing.assert_allclose(rot.quat_wxyz_to_rotmat(smpl_blender.pose_bone_quaternions(obj, rotmats)),
                               _bone_local(obj, rotmats), atol=1e-6)
    dots = (quats[1:] * quats[:-1]).sum(-1)
    assert dots.min() >= 0, "consecutive keys of a bone must not flip sign"
    # Blender's own evaluation of the action gives the same pose, joints and corrective values.
    scene = bpy.context.scene
    blocks = smpl_blender.body_mesh(obj).data.shape_keys
    for k in (0, 13, 39):
        scene.frame_set(int(frames_[k]))
        np.testing.assert_allclose(smpl_blender.read_pose(obj), rotmats[k], atol=1e-6)
        np.testing.assert_allclose(smpl_blender.world_joint_positions(obj),
                                   fk_in_blender(body, rotmats[k], translations[k]), atol=1e-5 * body.height)
        if blocks is not None:
            values = np.array([b.value for b in blocks.key_blocks[1:]])
            np.testing.assert_allclose(values, (rotmats[k, 1:] - np.eye(3)).reshape(207), atol=1e-6)


def test_key_sequence_places_frames_by_time_and_keeps_other_keys(bodies):
    obj = smpl_blender.build_armature(bodies["mannequin"])
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0
    rng = np.random.default_rng(22)
    first = _smooth_motion(rng, 10)
    smpl_keys.key_sequence(obj, first, fps=30, start_frame=1)
    second = _smooth_motion(rng, 9)
    frames_ = smpl_keys.key_sequence(obj, second, fps=60, start_frame=20)  # 60 fps: half a frame apart
    np.testing.assert_allclose(frames_, 20 + 0.5 * np.arange(9))
    np.testing.assert_allclose(rot.quat_wxyz_to_rotmat(_curve_quats(obj, frames_)), _bone_local(obj, second), atol=1e-6)
    np.testing.assert_allclose(rot.quat_wxyz_to_rotmat(_curve_quats(obj, 1 + np.arange(10))), _bone_local(obj, first),
                               atol=1e-6)
    curve = _channels(obj).find('pose.bones["pelvis"].rotation_quaternion', index=0)
    assert len(curve.keyframe_points) == 19


def test_key_sequence_without_translations_puts_a_translated_motion_back_at_rest(bodies):
    body = bodies["mannequin"]
    obj = smpl_blender.build_armature(body)
    rng = np.random.default_rng(24)
    motion = _smooth_motion(rng, 6)
    smpl_keys.key_sequence(obj, motion, start_frame=1, translations=rng.normal(0, 0.3, (6, 3)))
    smpl_keys.key_sequence(obj, motion[:3], start_frame=3)
    scene = bpy.context.scene
    scene.frame_set(2)
    assert np.abs(smpl_blender.read_translation(obj)).max() > 0.01        # kept outside the new range
    scene.frame_set(4)
    np.testing.assert_allclose(smpl_blender.read_translation(obj), 0.0, atol=1e-7)
    np.testing.assert_allclose(smpl_blender.world_joint_positions(obj), fk_in_blender(body, motion[1]),
                               atol=1e-5 * body.height)


def test_key_pose_aligns_signs_with_the_previous_key(bodies):
    obj = smpl_blender.build_armature(bodies["mannequin"])
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    poses = []
    for frame, angle in enumerate((2.9, 3.1, 3.3, 3.6), start=1):   # crosses π: w changes sign
        pose = np.zeros((24, 3))
        pose[[0, 18]] = axis * angle
        poses.append(smpl_blender.apply_pose(obj, pose))
        smpl_keys.key_pose(obj, frame)
    quats = _curve_quats(obj, [1, 2, 3, 4])
    assert ((quats[1:] * quats[:-1]).sum(-1) >= 0).all()
    np.testing.assert_allclose(rot.quat_wxyz_to_rotmat(quats), _bone_local(obj, np.array(poses)), atol=1e-6)
    assert _channels(obj).find('pose.bones["pelvis"].location', index=0) is None  # never translated
    obj.pose.bones["left_elbow"].rotation_mode = "XYZ"
    with pytest.raises(ValueError, match="left_elbow .*quaternion"):
        smpl_keys.key_pose(obj, 5)


def test_key_pose_keys_pelvis_location_once_translated(bodies):
    body = bodies["synthetic_smpl"]
    obj = smpl_blender.build_armature(body)
    rng = np.random.default_rng(23)
    rotmats = [smpl_blender.apply_pose(obj, random_pose(rng), translation=[0.2, 0.1, -0.3])]
    smpl_keys.key_pose(obj, 1)
    rotmats.append(smpl_blender.apply_pose(obj, random_pose(rng)))   # back to no translation: keyed too
    smpl_keys.key_pose(obj, 10)
    scene = bpy.context.scene
    for frame, rotmat, translation in ((1, rotmats[0], [0.2, 0.1, -0.3]), (10, rotmats[1], None)):
        scene.frame_set(frame)
        np.testing.assert_allclose(smpl_blender.world_joint_positions(obj), fk_in_blender(body, rotmat, translation),
                                   atol=1e-5 * body.height)
        values = np.array([b.value for b in smpl_blender.body_mesh(obj).data.shape_keys.key_blocks[1:]])
        np.testing.assert_allclose(values, (rotmat[1:] - np.eye(3)).reshape(207), atol=1e-6)


@pytest.mark.parametrize("poses, kwargs, message", [
    (np.zeros((0, 24, 3)), {}, "n ≥ 1"),
    (np.zeros((5, 23, 3)), {}, "pose must be"),
    (np.full((5, 24, 3), np.nan), {}, "NaN"),
    (np.zeros((5, 24, 3)), {"translations": np.zeros((4, 3))}, "translation"),
    (np.zeros((5, 24, 3)), {"fps": 0}, "fps"),
])
def test_key_sequence_bad_input_writes_nothing(bodies, poses, kwargs, message):
    obj = smpl_blender.build_armature(bodies["mannequin"])
    with pytest.raises(ValueError, match=message):
        smpl_keys.key_sequence(obj, poses, **kwargs)
    assert obj.animation_data is None


# --- another Blender --------------------------------------------------------------------------------------

SYSTEM_BLENDER_CHECK = textwrap.dedent("""
    import sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    try:
        import numpy as np
    except ImportError:
        sys.exit(3)
    import bpy
    from smpl_rig import blender as sb, blender_keys as sk, body as B, rotations as rot, kinematics, frames
    from smpl_fixtures import write_synthetic_smpl
    print("BLENDER", bpy.app.version)
    write_synthetic_smpl({smpl!r}, seed=1)
    for source in ("mannequin", {smpl!r}):
        body = B.load(source)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        obj = sb.build_armature(body)
        rng = np.random.default_rng(0)
        for _ in range(20):
            pose, transl = rng.normal(0, 0.6, (24, 3)), rng.normal(0, 0.3, 3)
            rotmats = sb.apply_pose(obj, pose, translation=transl)
            fk = kinematics.forward_kinematics(body.rest_joints, rotmats, transl).joints
            assert np.abs(sb.world_joint_positions(obj) - frames.smpl_points_to_blender(fk)).max() < 1e-5 * body.height
            assert np.abs(sb.read_pose(obj) - rotmats).max() < 1e-6
        motion = rot.rotvec_to_rotmat(rng.normal(0, 0.5, (30, 24, 3)))
        sk.key_sequence(obj, motion, start_frame=1)
        sk.key_sequence(obj, motion[:5], start_frame=40)          # merges into the existing curves
        for frame, expected in ((1, motion[0]), (7, motion[6]), (30, motion[29]), (42, motion[2])):
            bpy.context.scene.frame_set(frame)
            assert np.abs(sb.read_pose(obj) - expected).max() < 1e-6, frame
        sb.apply_pose(obj, np.zeros((24, 3)), translation=[0.0, 0.0, 1.0])
        sk.key_pose(obj, 60)
        bpy.context.scene.frame_set(60)
        assert np.abs(sb.read_translation(obj) - [0.0, 0.0, 1.0]).max() < 1e-6
        np.savez({amass!r}, poses=rng.normal(0, 0.3, (121, 156)), trans=rng.normal(0, 0.3, (121, 3)),
                 mocap_frame_rate=np.array(120.0))
        bpy.context.scene.render.fps = 30
        info = sk.load_amass({amass!r}, obj, start_frame=100)
        assert (info.num_frames, info.end_frame) == (31, 130), info
    print("SYSTEM BLENDER OK")
""")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("blender") is None, reason="no system Blender (make test-gui installs Debian's 3.4)")
def test_the_same_module_works_in_the_system_blender(tmp_path):
    """The add-on runs inside Blender 3.4–5.x: the packaged Blender (3.4 on Debian bookworm, so the
    pre-slotted ``action.fcurves`` path) must pose, read back and key exactly like the bpy module."""
    repo = Path(__file__).resolve().parent.parent
    script = tmp_path / "check.py"
    script.write_text(SYSTEM_BLENDER_CHECK.format(repo=str(repo), tests=str(repo / "tests"),
                                                  smpl=str(tmp_path / "smpl.npz"), amass=str(tmp_path / "motion.npz")))
    run = subprocess.run(["blender", "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(script)],
                         capture_output=True, text=True, timeout=300)
    if run.returncode == 3:
        pytest.skip("the system Blender's Python has no numpy")
    assert run.returncode == 0 and "SYSTEM BLENDER OK" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
