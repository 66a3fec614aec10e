"""AMASS motion import onto SMPL armatures (bpy module, headless): resampled by time, Z-up handled,
frame-rate keys and their absence, SMPL-H and SMPL layouts, bad files refused without side effects."""
from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from smpl_rig import blender as smpl_blender  # noqa: E402
from smpl_rig import blender_keys as smpl_keys  # noqa: E402
from smpl_rig import kinematics, rotations as rot  # noqa: E402

pytestmark = [pytest.mark.bpy, pytest.mark.usefixtures("fresh_scene")]


def set_scene_fps(fps: int):
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = fps, 1.0
    scene.frame_start, scene.frame_end = 1, 1


def smooth_amass_poses(rng, count, width=156):
    """AMASS-style axis-angle rows (count, width) varying smoothly; Z-up global orientation."""
    start, end = rng.normal(0, 0.4, (2, width))
    t = np.linspace(0, 1, count)[:, None]
    poses = start * (1 - t) + end * t
    poses[:, :3] = np.array([np.pi / 2, 0.0, 0.0]) + 0.3 * np.sin(3 * t) * np.array([0.2, 0.5, 1.0])  # upright in Z-up
    return poses


def write_amass(path, poses, trans, **extra):
    np.savez(path, poses=poses, trans=trans, betas=np.linspace(-1, 1, 16), gender=np.array("neutral"), **extra)
    return path


def amass_joints(rest_joints, poses, trans):
    """Joint positions in the AMASS (Z-up) world, straight from the file's numbers."""
    rotvecs = np.zeros((len(poses), 24, 3))
    rotvecs[:, :22] = poses[:, :66].reshape(-1, 22, 3)
    if poses.shape[1] == 72:
        rotvecs[:] = poses.reshape(-1, 24, 3)
    return kinematics.forward_kinematics(rest_joints, rot.rotvec_to_rotmat(rotvecs), trans).joints


@pytest.mark.parametrize("source", ["synthetic_smpl", "mannequin"])
def test_120_fps_into_30_fps_keeps_duration_and_lands_z_up_motion_in_place(tmp_path, bodies, source):
    body = bodies[source]
    set_scene_fps(30)
    obj = smpl_blender.build_armature(body)
    rng = np.random.default_rng(1)
    poses = smooth_amass_poses(rng, 241)                   # 2 s at 120 fps
    trans = np.cumsum(rng.normal(0, 0.01, (241, 3)), 0) + [0.0, 0.0, 0.9]
    path = write_amass(tmp_path / "walk_poses.npz", poses, trans, mocap_frame_rate=np.array(120.0))

    result = smpl_keys.load_amass(path, obj)
    assert (result.num_frames, result.start_frame, result.end_frame) == (61, 1, 61)
    assert result.source_fps == 120.0 and result.scene_fps == 30.0 and result.duration_s == pytest.approx(2.0)
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end) == (1, 61)
    assert (result.end_frame - result.start_frame) / result.scene_fps == pytest.approx(2.0)   # same duration

    # Blender is Z-up like AMASS: with C = Rx(90°) after AMASS→SMPL = Rx(−90°), the joints must land exactly
    # where the file puts them in its own world. Frame j at 30 fps is sample 4j at 120 fps.
    expected = amass_joints(body.rest_joints, poses, trans)
    for frame in (1, 2, 17, 40, 61):
        scene.frame_set(frame)
        joints = smpl_blender.world_joint_positions(obj)
        np.testing.assert_allclose(joints, expected[4 * (frame - 1)], atol=1e-5 * body.height)


def test_resampling_slerps_between_recorded_poses(tmp_path, bodies):
    """50 fps into 30 fps: times coincide every 0.1 s (exact poses there); in between, each joint's rotation
    lies on the short arc between its two neighbouring samples at the fraction time says."""
    set_scene_fps(30)
    obj = smpl_blender.build_armature(bodies["mannequin"])
    rng = np.random.default_rng(2)
    poses = smooth_amass_poses(rng, 51, width=72)          # 1 s at 50 fps, plain SMPL layout
    poses[:, 3:] += rng.normal(0, 0.15, (51, 69))          # neighbouring samples differ noticeably
    path = write_amass(tmp_path / "jitter.npz", poses, np.zeros((51, 3)), mocap_framerate=np.array(50.0))
    result = smpl_keys.load_amass(path, obj, start_frame=10)
    assert (result.num_frames, result.start_frame, result.end_frame) == (31, 10, 40)

    source = rot.rotvec_to_rotmat(poses.reshape(51, 24, 3))
    source[:, 0] = rot.rotmat_x(-np.pi / 2) @ source[:, 0]   # Z-up → SMPL frame
    scene = bpy.context.scene
    for j in range(31):
        scene.frame_set(10 + j)
        got = smpl_blender.read_pose(obj)
        position = j * 50 / 30
        lower = int(np.floor(position + 1e-9))
        fraction = position - lower
        if fraction < 1e-9:
            np.testing.assert_allclose(got, source[lower], atol=1e-6)
            continue
        a, b = source[lower], source[lower + 1]
        to_a, to_b, total = (rot.geodesic_angle(got, a), rot.geodesic_angle(got, b), rot.geodesic_angle(a, b))
        np.testing.assert_allclose(to_a + to_b, total, atol=1e-5)          # on the arc between them
        np.testing.assert_allclose(to_a, fraction * total, atol=1e-5)      # at the fraction time says


def test_hand_joints_identity_for_smpl_h_and_kept_for_smpl(tmp_path, bodies):
    set_scene_fps(30)
    rng = np.random.default_rng(3)
    for width, hands_identity in ((156, True), (72, False)):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        set_scene_fps(30)
        obj = smpl_blender.build_armature(bodies["mannequin"])
        poses = smooth_amass_poses(rng, 4, width=width)
        path = write_amass(tmp_path / f"w{width}.npz", poses, np.zeros((4, 3)), mocap_frame_rate=np.array(30.0))
        smpl_keys.load_amass(path, obj)
        bpy.context.scene.frame_set(2)
        got = smpl_blender.read_pose(obj)
        np.testing.assert_allclose(got[1:22], rot.rotvec_to_rotmat(poses[1, 3:66].reshape(21, 3)), atol=1e-6)
        expected_hands = (np.eye(3)[None].repeat(2, 0) if hands_identity
                          else rot.rotvec_to_rotmat(poses[1, 66:72].reshape(2, 3)))
        np.testing.assert_allclose(got[22:], expected_hands, atol=1e-6)


def test_missing_frame_rate_defaults_to_120_with_a_warning_or_takes_the_parameter(tmp_path, bodies):
    set_scene_fps(24)
    obj = smpl_blender.build_armature(bodies["mannequin"])
    rng = np.random.default_rng(4)
    path = write_amass(tmp_path / "no_rate.npz", smooth_amass_poses(rng, 121), np.zeros((121, 3)))
    with pytest.warns(UserWarning, match="assuming 120 fps"):
        result = smpl_keys.load_amass(path, obj)
    assert result.source_fps == 120.0 and result.num_frames == 25          # 1 s at 24 fps
    result = smpl_keys.load_amass(path, obj, fps=60.0)
    assert result.source_fps == 60.0 and result.num_frames == 49           # the same samples last 2 s


@pytest.mark.parametrize("content, message", [
    ({"trans": np.zeros((5, 3))}, "no 'poses'"),
    ({"poses": np.zeros((5, 70)), "trans": np.zeros((5, 3))}, "must be"),
    ({"poses": np.zeros((5, 156)), "trans": np.zeros((4, 3))}, "trans"),
    ({"poses": np.full((5, 156), np.nan), "trans": np.zeros((5, 3))}, "NaN"),
    ({"poses": np.zeros((0, 156)), "trans": np.zeros((0, 3))}, "at least one frame"),
])
def test_bad_amass_files_are_refused_without_keys(tmp_path, bodies, content, message):
    obj = smpl_blender.build_armature(bodies["mannequin"])
    path = tmp_path / "bad.npz"
    np.savez(path, mocap_frame_rate=np.array(60.0), **content)
    with pytest.raises(ValueError, match=message):
        smpl_keys.load_amass(path, obj)
    assert obj.animation_data is None


def test_not_an_npz_and_not_an_smpl_armature_are_refused(tmp_path, bodies):
    obj = smpl_blender.build_armature(bodies["mannequin"])
    text = tmp_path / "motion.npz"
    text.write_text("not a zip archive")
    with pytest.raises(ValueError, match="cannot read"):
        smpl_keys.load_amass(text, obj)
    good = write_amass(tmp_path / "ok.npz", np.zeros((3, 156)), np.zeros((3, 3)), mocap_frame_rate=np.array(30.0))
    with pytest.raises(ValueError, match="not an armature"):
        smpl_keys.load_amass(good, smpl_blender.body_mesh(obj))
    assert obj.animation_data is None
