"""smpl_rig.amass, the one reader of AMASS files (bpy-free): layouts, hand joints, rates, resampling."""
import math

import numpy as np
import pytest

from smpl_rig import amass
from smpl_rig import rotations as rot


def test_every_layout_keeps_body_joints_and_sets_smpl_hands_to_identity():
    rng = np.random.default_rng(0)
    for width in (66, 72, 156, 165):
        poses = rng.normal(scale=0.5, size=(3, width))
        out = amass.poses_to_rotmat(poses)
        assert out.shape == (3, 24, 3, 3)
        np.testing.assert_allclose(out[:, :22], rot.rotvec_to_rotmat(poses[:, :66].reshape(3, 22, 3)), atol=1e-12)
        if width == 72:
            np.testing.assert_allclose(out[:, 22:], rot.rotvec_to_rotmat(poses[:, 66:].reshape(3, 2, 3)), atol=1e-12)
        else:   # SMPL-H/X finger joints must never land on SMPL's hand joints
            np.testing.assert_allclose(out[:, 22:], np.broadcast_to(np.eye(3), (3, 2, 3, 3)), atol=0)
    with pytest.raises(ValueError, match="AMASS 'poses'"):
        amass.poses_to_rotmat(np.zeros((3, 70)))


def test_read_amass_rates_and_errors(tmp_path):
    poses = np.zeros((5, 156))
    np.savez(tmp_path / "a.npz", poses=poses, trans=np.zeros((5, 3)), mocap_framerate=np.array(60.0))
    assert amass.read_amass(tmp_path / "a.npz").fps == 60.0
    np.savez(tmp_path / "b.npz", poses=poses, trans=np.zeros((5, 3)), mocap_frame_rate=np.array(50.0))
    motion = amass.read_amass(tmp_path / "b.npz")
    assert motion.fps == 50.0 and len(motion) == 5 and math.isclose(motion.duration_s, 0.08)
    np.savez(tmp_path / "c.npz", poses=poses)
    with pytest.warns(UserWarning, match="assuming 120 fps"):
        assert amass.read_amass(tmp_path / "c.npz").fps == 120.0
    assert amass.read_amass(tmp_path / "c.npz", fps=30).fps == 30.0
    np.savez(tmp_path / "d.npz", poses=poses, trans=np.zeros((4, 3)), mocap_framerate=np.array(60.0))
    with pytest.raises(ValueError, match="'trans' must be"):
        amass.read_amass(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", trans=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="no 'poses'"):
        amass.read_amass(tmp_path / "e.npz")
    (tmp_path / "f.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        amass.read_amass(tmp_path / "f.npz")


def test_resampling_by_time_keeps_duration_and_slerps():
    angles = np.linspace(0, 1.2, 13)                  # 13 samples at 120 fps: 0.1 s
    rotmats = np.broadcast_to(np.eye(3), (13, 24, 3, 3)).copy()
    rotmats[:, 5] = rot.rotvec_to_rotmat(angles[:, None] * [0, 0, 1.0])
    out, moved, duration = amass.resample_by_time(rotmats, np.zeros((13, 3)), 120.0, 30.0)
    assert math.isclose(duration, 0.1) and len(out) == 4       # frames at 0, 1/30, 2/30, 3/30 s
    np.testing.assert_allclose(rot.rotmat_to_rotvec(out[:, 5])[:, 2], [0, 0.4, 0.8, 1.2], atol=1e-12)
    out, _, _ = amass.resample_by_time(rotmats, np.zeros((13, 3)), 120.0, 50.0)   # between samples
    np.testing.assert_allclose(rot.rotmat_to_rotvec(out[1, 5])[2], 1.2 * (1 / 50) / 0.1, atol=1e-12)
