"""Frames, forward kinematics and metrics of smpl_rig against hand-worked facts of the conventions page."""
import math

import numpy as np
import pytest
import torch

from smpl_rig import frames, kinematics, metrics
from smpl_rig import rotations as rot
from smpl_rig.skeleton import JOINT_NAMES, MIRROR, NUM_JOINTS, PARENTS, joint_index, primary_child


def rest_skeleton(seed=0):
    """A plausible T-pose: children offset from parents, body left = +X, Y up."""
    rng = np.random.default_rng(seed)
    joints = np.zeros((24, 3))
    for i in range(1, 24):
        joints[i] = joints[PARENTS[i]] + rng.normal(scale=0.1, size=3)
    return joints


def random_pose(shape=(), seed=0):
    rng = np.random.default_rng(seed)
    return rot.rotvec_to_rotmat(rng.normal(scale=0.6, size=shape + (24, 3)))


def test_skeleton_tables():
    assert len(JOINT_NAMES) == NUM_JOINTS == 24
    assert PARENTS[0] == -1 and all(PARENTS[i] < i for i in range(1, 24))
    assert JOINT_NAMES[PARENTS[joint_index("left_elbow")]] == "left_shoulder"
    assert MIRROR[joint_index("left_wrist")] == joint_index("right_wrist") and MIRROR[0] == 0
    assert primary_child(joint_index("spine3")) == joint_index("neck")
    assert primary_child(joint_index("head")) is None
    with pytest.raises(KeyError, match="unknown SMPL joint"):
        joint_index("left_tail")


def test_frame_constants():
    # SMPL → Blender: (x, y, z) → (x, −z, y); up (+Y) becomes +Z, facing (+Z) becomes −Y.
    np.testing.assert_allclose(frames.SMPL_TO_BLENDER @ [1, 2, 3], [1, -3, 2], atol=1e-15)
    np.testing.assert_allclose(frames.AMASS_TO_SMPL @ [0, 0, 1], [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(frames.CAMERA_TO_SMPL, np.diag([1.0, -1, -1]), atol=1e-15)
    np.testing.assert_allclose(frames.UPRIGHT_CAMERA, np.diag([1.0, -1, -1]), atol=1e-15)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_canonicalisation_removes_yaw_only(lib):
    lean = rot.rotmat_x(0.3)  # leaning, facing the viewer
    orients = np.stack([rot.rotmat_y(yaw) @ lean for yaw in np.linspace(-3, 3, 7)])
    x = torch.from_numpy(orients) if lib == "torch" else orients
    canon = frames.canonical_camera_orient(x)
    canon = canon.numpy() if lib == "torch" else canon
    np.testing.assert_allclose(canon, np.broadcast_to(frames.SMPL_TO_CAMERA @ lean, canon.shape), atol=1e-12)
    # upright and facing the viewer is diag(1, −1, −1) in the camera frame
    np.testing.assert_allclose(frames.canonical_camera_orient(np.eye(3)), np.diag([1.0, -1, -1]), atol=1e-15)
    np.testing.assert_allclose(frames.camera_to_smpl_orient(np.diag([1.0, -1, -1])), np.eye(3), atol=1e-15)


def test_global_frame_change_pivots_about_pelvis():
    rest = rest_skeleton(1) + [0.02, 0.3, -0.05]   # pelvis away from the origin
    pose = random_pose(seed=2)
    transl = np.array([0.4, -0.1, 1.2])
    g = rot.rotvec_to_rotmat(np.array([0.3, -1.2, 0.5]))
    new_orient, new_transl = frames.change_global_frame(pose[0], g, transl, rest[0])
    moved = pose.copy()
    moved[0] = new_orient
    before = kinematics.forward_kinematics(rest, pose, transl).joints
    after = kinematics.forward_kinematics(rest, moved, new_transl).joints
    np.testing.assert_allclose(after, before @ g.T, atol=1e-12)   # the whole body moved rigidly by G
    with pytest.raises(ValueError, match="rest pelvis"):
        frames.change_global_frame(pose[0], g, transl)


def test_forward_kinematics_hand_worked():
    rest = np.zeros((24, 3))
    for i in range(1, 24):
        rest[i] = rest[PARENTS[i]] + [0, 0.1, 0]      # a chain straight up along +Y
    pose = np.broadcast_to(np.eye(3), (24, 3, 3)).copy()
    pose[0] = rot.rotmat_z(math.pi / 2)                # the root turns +Y into −X
    fk = kinematics.forward_kinematics(rest, pose, np.array([1.0, 0, 0]))
    depth = [0] * 24                                   # number of bones between joint and root
    for i in range(1, 24):
        depth[i] = depth[PARENTS[i]] + 1
    np.testing.assert_allclose(fk.joints, np.stack([[1.0 - 0.1 * d, 0, 0] for d in depth]), atol=1e-12)
    assert fk.transforms.shape == (24, 4, 4) and fk.skinning.shape == (24, 4, 4)
    np.testing.assert_allclose(fk.transforms[:, :3, 3], fk.joints)
    # skinning maps each rest joint onto its posed position
    homog = np.concatenate([rest, np.ones((24, 1))], -1)
    np.testing.assert_allclose(np.einsum("jab,jb->ja", fk.skinning, homog)[:, :3], fk.joints, atol=1e-12)


def test_forward_kinematics_batched_numpy_equals_torch():
    rest = rest_skeleton(4)
    pose = random_pose((3, 2), seed=5)
    fk = kinematics.forward_kinematics(rest, pose)
    assert fk.joints.shape == (3, 2, 24, 3) and fk.rotations.shape == (3, 2, 24, 3, 3)
    fk_t = kinematics.forward_kinematics(torch.from_numpy(rest), torch.from_numpy(pose))
    np.testing.assert_allclose(fk_t.joints.numpy(), fk.joints, atol=1e-12)
    np.testing.assert_allclose(fk.joints[1, 0], kinematics.forward_kinematics(rest, pose[1, 0]).joints)
    with pytest.raises(ValueError, match="expected rest joints"):
        kinematics.forward_kinematics(rest[:23], pose)


def test_mpjpe_sees_similarity_transforms_pa_mpjpe_does_not():
    joints = kinematics.forward_kinematics(rest_skeleton(6), random_pose(seed=6)).joints
    g = rot.rotvec_to_rotmat(np.array([0.4, 0.9, -0.2]))
    moved = 1.3 * joints @ g.T + [0.5, 2.0, -1.0]
    assert metrics.mpjpe_mm(moved, joints) > 10.0
    assert metrics.pa_mpjpe_mm(moved, joints) < 1e-9
    assert metrics.mpjpe_mm(joints + [1.0, 2.0, 3.0], joints) < 1e-9   # pelvis centring
    np.testing.assert_allclose(metrics.mpjpe_mm(joints + [0, 0.01, 0] * (np.arange(24) > 0)[:, None], joints),
                               10.0 * 23 / 24, rtol=1e-9)


def test_mpjre_units():
    true = random_pose((4,), seed=8)
    pred = true @ rot.rotmat_x(math.radians(10))      # every joint off by 10°
    np.testing.assert_allclose(metrics.mpjre_deg(pred, true), 10.0, atol=1e-9)
    np.testing.assert_allclose(metrics.mpjre_rad100(pred, true), math.radians(10) * 100, atol=1e-9)
    np.testing.assert_allclose(metrics.mpjre_deg(torch.from_numpy(pred), torch.from_numpy(true)), 10.0, atol=1e-9)
