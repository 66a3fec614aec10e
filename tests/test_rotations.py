"""Round trips and hand-worked values for smpl_rig.rotations, on numpy and torch, float32 and float64,
batch shapes (), (B,) and (B, 24), in the manner of roma's tests."""
import math

import numpy as np
import pytest
import torch

from smpl_rig import rotations as rot

BATCH_SHAPES = [(), (5,), (3, 24)]
DTYPES = [np.float64, np.float32]


def random_rotvecs(shape, seed=0, max_angle=math.pi * 0.999):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=shape + (3,))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    angle = rng.uniform(0, max_angle, size=shape + (1,))
    return axis * angle


def as_lib(x, lib, dtype):
    x = np.array(x, dtype=dtype)  # a writable copy
    return torch.from_numpy(x) if lib == "torch" else x


def to_np(x):
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def tol(dtype):
    return 1e-10 if dtype == np.float64 else 2e-5


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BATCH_SHAPES)
def test_every_conversion_round_trips(lib, dtype, shape):
    v = as_lib(random_rotvecs(shape), lib, dtype)
    m = rot.rotvec_to_rotmat(v)
    assert tuple(m.shape) == shape + (3, 3)
    assert type(m) is type(v) and m.dtype == v.dtype
    for name, there, back in [
        ("rotvec", rot.rotmat_to_rotvec, rot.rotvec_to_rotmat),
        ("quat", rot.rotmat_to_quat_wxyz, rot.quat_wxyz_to_rotmat),
        ("d6", rot.rotmat_to_d6, rot.d6_to_rotmat),
    ]:
        np.testing.assert_allclose(to_np(back(there(m))), to_np(m), atol=tol(dtype) * 10, err_msg=name)
    np.testing.assert_allclose(to_np(rot.quat_wxyz_to_rotvec(rot.rotvec_to_quat_wxyz(v))), to_np(v), atol=tol(dtype) * 100)
    np.testing.assert_allclose(to_np(rot.rotmat_to_rotvec(m)), to_np(v), atol=tol(dtype) * 100)
    np.testing.assert_allclose(to_np(rot.quat_wxyz_to_rotmat(rot.rotvec_to_quat_wxyz(v))), to_np(m), atol=tol(dtype) * 10)


def test_matrices_are_proper_rotations():
    m = rot.rotvec_to_rotmat(random_rotvecs((100,)))
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)


def test_small_and_near_pi_angles_are_exact():
    for angle in [0.0, 1e-9, 1e-6, 1e-4 * 0.99, 1e-4 * 1.01, math.pi - 1e-7, math.pi]:
        v = np.array([0.6, -0.8, 0.0]) * angle
        m = rot.rotvec_to_rotmat(v)
        expected = np.cos(angle) * np.eye(3) + np.sin(angle) * np.array(
            [[0, 0, -0.8], [0, 0, -0.6], [0.8, 0.6, 0]]) + (1 - np.cos(angle)) * np.outer([0.6, -0.8, 0], [0.6, -0.8, 0])
        np.testing.assert_allclose(m, expected, atol=1e-12)
        back = rot.rotmat_to_rotvec(m)
        assert abs(np.linalg.norm(back) - angle) < 1e-7
        if angle < math.pi - 1e-3:  # at π, ±axis are the same rotation
            np.testing.assert_allclose(back, v, atol=1e-9)


def test_quaternion_layout_is_w_first():
    q = rot.rotvec_to_quat_wxyz(np.array([0.0, 0.0, math.pi / 2]))
    np.testing.assert_allclose(q, [math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], atol=1e-15)
    assert rot.rotmat_to_quat_wxyz(rot.rotvec_to_rotmat(np.array([0, 0, -3.0])))[0] >= 0


def test_d6_layout_matches_hand_worked_example():
    # Rz(90°) maps x → y, y → −x: columns (0, 1, 0) and (−1, 0, 0).
    rz90 = rot.rotmat_z(math.pi / 2)
    np.testing.assert_allclose(rot.rotmat_to_d6(rz90), [0, 1, 0, -1, 0, 0], atol=1e-15)
    # Columns, not rows or the interleaved reshape(3, 2) layout.
    m = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(rot.rotmat_to_d6(m), [0, 0, 1, -1, 0, 0])
    assert not np.array_equal(rot.rotmat_to_d6(m), m[:, :2].reshape(6))
    # Gram–Schmidt of an unnormalised, skewed pair.
    d6 = np.array([2.0, 0, 0, 1.0, 3.0, 0])
    np.testing.assert_allclose(rot.d6_to_rotmat(d6), np.eye(3), atol=1e-15)


def test_axis_constructors_are_right_handed():
    np.testing.assert_allclose(rot.rotmat_x(math.pi / 2) @ [0, 1, 0], [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(rot.rotmat_y(math.pi / 2) @ [0, 0, 1], [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(rot.rotmat_z(math.pi / 2) @ [1, 0, 0], [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(rot.rotvec_to_rotmat(np.array([0.3, 0, 0])), rot.rotmat_x(0.3), atol=1e-15)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_geodesic_angle(lib):
    v = random_rotvecs((50,), seed=3)
    a = as_lib(rot.rotvec_to_rotmat(v), lib, np.float64)
    ident = as_lib(np.broadcast_to(np.eye(3), (50, 3, 3)), lib, np.float64)
    np.testing.assert_allclose(to_np(rot.geodesic_angle(a, ident)), np.linalg.norm(v, axis=-1), atol=1e-9)
    tiny = rot.rotmat_x(1e-7)
    assert abs(rot.geodesic_angle(tiny, np.eye(3)) - 1e-7) < 1e-12  # arccos would lose this
    # Agrees with the conventions page's arccos formula where that formula is well conditioned.
    m = to_np(a) @ np.swapaxes(to_np(a[::-1]) if lib == "numpy" else to_np(a).copy()[::-1], -1, -2)
    ref = np.arccos(np.clip((np.trace(m, axis1=-2, axis2=-1) - 1) / 2, -1, 1))
    np.testing.assert_allclose(rot.geodesic_angle(to_np(a), to_np(a)[::-1]), ref, atol=1e-6)


def test_torch_gradients_flow_through_d6_and_geodesic():
    d6 = torch.tensor(rot.rotmat_to_d6(rot.rotvec_to_rotmat(random_rotvecs((4,)))), requires_grad=True)
    loss = rot.geodesic_angle(rot.d6_to_rotmat(d6), torch.eye(3, dtype=d6.dtype).expand(4, 3, 3)).sum()
    loss.backward()
    assert torch.isfinite(d6.grad).all() and d6.grad.abs().sum() > 0


def test_pose_to_rotmat_accepts_every_layout_and_rejects_others():
    v = random_rotvecs((24,), seed=5)
    m = rot.rotvec_to_rotmat(v)
    for pose in [v, v.reshape(72), m, rot.rotmat_to_d6(m), rot.rotmat_to_d6(m).reshape(144), rot.rotmat_to_quat_wxyz(m)]:
        np.testing.assert_allclose(rot.pose_to_rotmat(pose), m, atol=1e-12)
    np.testing.assert_allclose(rot.pose_to_rotmat(np.stack([v, v])), np.stack([m, m]), atol=1e-12)
    with pytest.raises(ValueError, match="pose must be"):
        rot.pose_to_rotmat(np.zeros((23, 3)))
    with pytest.raises(ValueError, match="NaN"):
        bad = v.copy()
        bad[3, 1] = np.nan
        rot.pose_to_rotmat(bad)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        rot.rotvec_to_rotmat(np.zeros((4, 2)))


def test_quaternion_sign_alignment_and_slerp():
    q = rot.rotvec_to_quat_wxyz(random_rotvecs((10, 24), seed=7, max_angle=0.3) + np.linspace(0, 6, 10)[:, None, None] * [0, 1, 0])
    flipped = q * np.where(np.arange(10) % 2, -1, 1)[:, None, None]
    aligned = rot.quat_wxyz_align_signs(flipped, axis=0)
    assert ((aligned[1:] * aligned[:-1]).sum(-1) >= 0).all()
    np.testing.assert_allclose(rot.quat_wxyz_to_rotmat(aligned), rot.quat_wxyz_to_rotmat(q), atol=1e-12)
    # slerp: endpoints exact, midpoint is half the relative rotation, also when q1 has the far sign
    q0 = rot.rotvec_to_quat_wxyz(np.array([0, 0, 0.2]))
    q1 = -rot.rotvec_to_quat_wxyz(np.array([0, 0, 1.0]))
    np.testing.assert_allclose(rot.quat_wxyz_to_rotvec(rot.quat_wxyz_slerp(q0, q1, 0.5)), [0, 0, 0.6], atol=1e-12)
    np.testing.assert_allclose(rot.quat_wxyz_slerp(q0, q1, 0.0), q0, atol=1e-12)
    # product composes like matrices
    a, b = random_rotvecs((2,), seed=9)
    np.testing.assert_allclose(
        rot.quat_wxyz_to_rotmat(rot.quat_wxyz_multiply(rot.rotvec_to_quat_wxyz(a), rot.rotvec_to_quat_wxyz(b))),
        rot.rotvec_to_rotmat(a) @ rot.rotvec_to_rotmat(b), atol=1e-12)


def test_angle_parametrisation_and_mirror():
    a = np.array([[10.0, -35.0, 70.0]])
    expected = rot.rotmat_y(math.radians(-35)) @ rot.rotmat_z(math.radians(70)) @ rot.rotmat_x(math.radians(10))
    np.testing.assert_allclose(rot.angles_xyz_deg_to_rotmat_yzx(a)[0], expected, atol=1e-12)
    v = random_rotvecs((20,), seed=11)
    m = np.diag([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(rot.rotvec_to_rotmat(rot.rotvec_mirror_x(v)), m @ rot.rotvec_to_rotmat(v) @ m, atol=1e-12)
    vt = torch.from_numpy(v)
    np.testing.assert_allclose(rot.rotvec_mirror_x(vt).numpy(), rot.rotvec_mirror_x(v))


@pytest.mark.parametrize("batch", [(), (7,)])
def test_rotmat_slerp_matches_quaternion_slerp_and_its_ends(batch):
    rng = np.random.default_rng(11)
    a = rot.rotvec_to_rotmat(rng.normal(size=(*batch, 3)))
    b = rot.rotvec_to_rotmat(rng.normal(size=(*batch, 3)))
    for t in (0.0, 0.3, 1.0):
        want = rot.quat_wxyz_to_rotmat(rot.quat_wxyz_slerp(rot.rotmat_to_quat_wxyz(a), rot.rotmat_to_quat_wxyz(b),
                                                           np.full(batch, t)))
        np.testing.assert_allclose(rot.rotmat_slerp(a, b, t), want, atol=1e-9)
    half_turn = a @ rot.rotmat_x(np.pi)
    np.testing.assert_allclose(rot.geodesic_angle(rot.rotmat_slerp(a, half_turn, 0.5), a), np.pi / 2, atol=1e-6)


def test_rotmat_between_turns_a_onto_b_by_the_smallest_angle():
    rng = np.random.default_rng(12)
    for a, b in list(rng.normal(size=(20, 2, 3))) + [(np.array([1.0, 0, 0]), np.array([-1.0, 0, 0]))]:
        r = rot.rotmat_between(a, b)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(r @ a / np.linalg.norm(a), b / np.linalg.norm(b), atol=1e-12)
        cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        assert abs(rot.geodesic_angle(r, np.eye(3)) - np.arccos(np.clip(cos, -1, 1))) < 1e-7
