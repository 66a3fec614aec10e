"""The add-on on the artist's own rigs (bpy module): the body picker takes a Mixamo or generated Rigify rig,
a reply is applied and keyed through the same operators as on the SMPL body, the mapping table's operators
work, and an armature that is not a humanoid gets one sentence and keeps its bones."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import addon_utils  # noqa: E402

import rig_fixtures  # noqa: E402
from smpl_rig import blender_retarget, rig_names  # noqa: E402
from smpl_rig import rotations as rot  # noqa: E402
from smpl_rig.skeleton import JOINT_NAMES, NUM_JOINTS  # noqa: E402

pytestmark = [pytest.mark.bpy]
ADDON = "blender_addon"


@pytest.fixture(scope="module")
def addon():
    module = addon_utils.enable(ADDON, default_set=True)
    assert module is not None
    yield module
    addon_utils.disable(ADDON, default_set=True)


@pytest.fixture()
def scene(addon):
    bpy.ops.wm.read_homefile(use_empty=True)
    yield bpy.context.scene


def add_reply(obj, rotmats):
    from blender_addon.chat_state import pose_to_json
    message = obj.posegpt_chat.messages.add()
    message.role, message.text, message.pose_json = "assistant", "<POSE>", pose_to_json(rotmats)
    return len(obj.posegpt_chat.messages) - 1


def random_pose(seed):
    rotvec = np.random.default_rng(seed).normal(0, 0.4, (NUM_JOINTS, 3))
    rotvec[0] = 0
    return rot.rotvec_to_rotmat(rotvec)


@pytest.mark.parametrize("kind", ["mixamo", "rigify_generated"])
@pytest.mark.slow
def test_the_body_picker_takes_the_rig_and_replies_pose_and_key_it(scene, kind):
    from blender_addon import operators, rig_mapping, session
    rig = rig_fixtures.build(kind)
    bpy.context.view_layer.objects.active = rig
    assert operators.target_armature(bpy.context) is rig
    info = rig_mapping.status(rig)
    assert info["mapped"] == NUM_JOINTS and info["problem"] is None
    index = add_reply(rig, random_pose(1))
    session.apply_reply(rig, index)                            # what a reply arriving does
    assert abs(blender_retarget.lowest_point(rig) - blender_retarget.calibrate(rig).rest_floor) < 1e-3
    shown = blender_retarget.world_joint_positions(rig)
    second = add_reply(rig, random_pose(2))
    assert bpy.ops.posegpt.key_pose(armature=rig.name, index=second, frame=10) == {"FINISHED"}
    assert bpy.ops.posegpt.key_pose(armature=rig.name, index=index, frame=1) == {"FINISHED"}
    bpy.context.scene.frame_set(10)
    bpy.context.scene.frame_set(1)
    np.testing.assert_allclose(blender_retarget.world_joint_positions(rig), shown, atol=1e-4)
    if kind == "rigify_generated":
        assert rig.pose.bones["upper_arm_parent.L"]["IK_FK"] == 1.0


def test_apply_options_from_the_panel_reach_the_rig(scene):
    rig = rig_fixtures.build("a_pose")
    bpy.context.view_layer.objects.active = rig
    settings = bpy.context.scene.posegpt
    assert settings.floor_contact and settings.apply_strength == 1.0
    before = [tuple(b.rotation_quaternion) for b in rig.pose.bones]
    settings.apply_strength = 0.0
    index = add_reply(rig, random_pose(3))
    assert bpy.ops.posegpt.apply_pose(armature=rig.name, index=index) == {"FINISHED"}
    names = blender_retarget.calibrate(rig).names
    for name, quat in zip([b.name for b in rig.pose.bones], before):
        if name in names:
            assert abs(abs(np.dot(rig.pose.bones[name].rotation_quaternion, quat)) - 1) < 1e-6


def test_a_non_humanoid_armature_gets_one_sentence_and_keeps_its_bones(scene):
    from blender_addon import operators, rig_mapping
    arm = bpy.data.objects.new("Crane", bpy.data.armatures.new("Crane"))
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    for k in range(3):
        bone = arm.data.edit_bones.new(f"Bone.00{k}")
        bone.head, bone.tail = (0, 0, k), (0, 0, k + 1)
    bpy.ops.object.mode_set(mode="OBJECT")
    assert operators.target_armature(bpy.context) is None
    problem = rig_mapping.status(arm)["problem"]
    assert "humanoid" in problem and problem.count(". ") == 0
    before = [tuple(b.rotation_quaternion) for b in arm.pose.bones]
    index = add_reply(arm, random_pose(4))
    with pytest.raises(RuntimeError, match="does not look like a humanoid rig; pick a bone") as error:
        bpy.ops.posegpt.apply_pose(armature=arm.name, index=index)      # headless, a reported error raises
    assert "—" not in str(error.value)
    assert [tuple(b.rotation_quaternion) for b in arm.pose.bones] == before


def test_mapping_table_detect_clear_mirror_and_presets(scene, tmp_path):
    rig = rig_fixtures.build("rigify_metarig")
    bpy.context.view_layer.objects.active = rig
    assert bpy.ops.posegpt.detect_mapping(armature=rig.name) == {"FINISHED"}
    rows = rig.posegpt_rig.rows
    assert [r.joint for r in rows] == list(JOINT_NAMES) and all(r.bone for r in rows)
    detected = blender_retarget.rig_mapping(rig).joints
    for row in rows:                                            # pick bones by hand: the left side only
        if row.joint.startswith("right_"):
            row.bone = ""
    assert blender_retarget.rig_mapping(rig).mapped_count == NUM_JOINTS - 9
    assert bpy.ops.posegpt.mirror_mapping(armature=rig.name) == {"FINISHED"}
    assert blender_retarget.rig_mapping(rig).joints == detected
    path = tmp_path / "metarig.json"
    assert bpy.ops.posegpt.save_mapping(armature=rig.name, filepath=str(path)) == {"FINISHED"}
    assert bpy.ops.posegpt.clear_mapping(armature=rig.name) == {"FINISHED"}
    assert blender_retarget.rig_mapping(rig).mapped_count == 0 and blender_retarget.retarget_problem(rig)
    assert bpy.ops.posegpt.load_mapping(armature=rig.name, filepath=str(path)) == {"FINISHED"}
    assert rig_names.mapping_from_json(rig[blender_retarget.MAPPING_PROPERTY]).joints == detected


def test_a_reply_goes_into_the_pose_library(scene):
    rig = rig_fixtures.build("mixamo")
    bpy.context.view_layer.objects.active = rig
    prompt = rig.posegpt_chat.messages.add()
    prompt.role, prompt.text = "user", "she waves"
    index = add_reply(rig, random_pose(5))
    assert bpy.ops.posegpt.add_pose_asset(armature=rig.name, index=index) == {"FINISHED"}
    action = bpy.data.actions["PoseGPT: she waves"]
    assert action.asset_data is not None
    assert rig.animation_data is None or rig.animation_data.action is not action     # the rig's own animation untouched
    names = blender_retarget.calibrate(rig).names
    paths = {c.data_path for bag in _channelbags(action) for c in bag.fcurves}
    assert {f'pose.bones["{n}"].rotation_quaternion' for n in names} <= paths


def _channelbags(action):
    if hasattr(action, "layers") and len(action.layers):
        return [bag for layer in action.layers for strip in layer.strips for bag in strip.channelbags]
    return [action]
