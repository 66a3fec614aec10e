"""Pose generator: axis semantics proved by forward kinematics, every named configuration checked by FK,
joint limits, determinism, mirror symmetry and the collision check."""
import numpy as np
import pytest

from smpl_rig import frames
from smpl_rig import rotations as rot
from smpl_rig.skeleton import JOINT_INDEX as J
from smpl_rig.skeleton import MIRROR
from training.corpus import generator as g

NEUTRAL = g.PoseFamily(lean=("none",), twist_deg=(0, 0), head_nod=(0, 0), head_turn=(0, 0), head_tilt=(0, 0))


def fk(angles):
    return g.fk_joints(g.angles_to_rotmat(np.asarray(angles, dtype=np.float64)))


def one_joint(name, xyz):
    a = np.zeros((24, 3))
    a[J[name]] = xyz
    return fk(a)


def body_frame(pose):
    """Joints (24, 3) of a generated pose in (lat = body's left, up, fwd) coordinates about the pelvis."""
    facing = pose.global_orient_smpl[:, 2] * np.array([1.0, 0.0, 1.0])
    fwd = facing / np.linalg.norm(facing)
    left = np.cross([0.0, 1.0, 0.0], fwd)
    basis = np.stack([left, [0.0, 1.0, 0.0], fwd])
    return (pose.joints - pose.joints[J["pelvis"]]) @ basis.T


def poses(arms="both_down", legs="standing", n=12, seed=0, family=NEUTRAL):
    gen = g.PoseGenerator(seed)
    return [gen.sample(family=family, arms=arms, legs=legs) for _ in range(n)]


# --- what each angle does, by FK on the reference skeleton --------------------------------------------------

def test_left_shoulder_negative_z_lowers_the_arm_and_positive_raises_it():
    down = one_joint("left_shoulder", (0, 0, -75))
    up = one_joint("left_shoulder", (0, 0, 80))
    assert down[J["left_wrist"], 1] < down[J["left_shoulder"], 1] - 0.4
    assert up[J["left_wrist"], 1] > up[J["head"], 1] + 0.2


def test_left_shoulder_negative_y_swings_the_arm_forward():
    forward = one_joint("left_shoulder", (0, -90, 0))
    assert forward[J["left_wrist"], 2] > forward[J["left_shoulder"], 2] + 0.45


def test_right_side_mirrors_the_left():
    down = one_joint("right_shoulder", (0, 0, 75))        # mirror of left z = −75
    assert down[J["right_wrist"], 1] < down[J["right_shoulder"], 1] - 0.4
    forward = one_joint("right_shoulder", (0, 90, 0))
    assert forward[J["right_wrist"], 2] > forward[J["right_shoulder"], 2] + 0.45


def test_elbow_negative_y_folds_the_forearm_forward():
    j = one_joint("left_elbow", (0, -90, 0))
    assert j[J["left_wrist"], 2] > j[J["left_elbow"], 2] + 0.2


def test_hip_negative_x_lifts_the_thigh_forward_and_knee_positive_x_folds_back():
    a = np.zeros((24, 3))
    a[J["left_hip"]] = (-90, 0, 0)
    j = fk(a)
    assert j[J["left_knee"], 2] > j[J["left_hip"], 2] + 0.3
    assert abs(j[J["left_knee"], 1] - j[J["left_hip"], 1]) < 0.05
    k = one_joint("left_knee", (90, 0, 0))
    assert k[J["left_ankle"], 2] < k[J["left_knee"], 2] - 0.3


def test_spine_head_and_abduction_signs():
    lean = one_joint("spine1", (30, 0, 0))
    assert lean[J["neck"], 2] > 0.15                       # forward
    side = one_joint("spine1", (0, 0, -20))
    assert side[J["neck"], 0] > 0.1                        # toward the body's left (+X)
    abduct = one_joint("left_hip", (0, 0, 30))
    assert abduct[J["left_ankle"], 0] > abduct[J["left_hip"], 0] + 0.2
    turn = g.angles_to_rotmat(np.array([0.0, 45.0, 0.0]))  # head y > 0: the face (+Z) turns to +X
    assert (turn @ [0, 0, 1])[0] > 0.6
    nod = g.angles_to_rotmat(np.array([30.0, 0.0, 0.0]))   # head x > 0: the face looks down
    assert (nod @ [0, 0, 1])[1] < -0.4


def test_angles_to_rotmat_is_ry_rz_rx():
    a = np.array([20.0, -35.0, 50.0])
    expected = rot.rotmat_y(np.radians(a[1])) @ rot.rotmat_z(np.radians(a[2])) @ rot.rotmat_x(np.radians(a[0]))
    np.testing.assert_allclose(g.angles_to_rotmat(a), expected, atol=1e-12)
    with pytest.raises(ValueError):
        g.angles_to_rotmat(np.zeros(4))


# --- named configurations ---------------------------------------------------------------------------------

def test_arms_up_put_both_wrists_above_the_head():
    for p in poses("both_up"):
        assert p.joints[J["left_wrist"], 1] > p.joints[J["head"], 1] + 0.1
        assert p.joints[J["right_wrist"], 1] > p.joints[J["head"], 1] + 0.1


def test_arms_down_hang_below_the_pelvis_beside_the_body():
    for p in poses("both_down"):
        b = body_frame(p)
        for s, sign in (("left", 1), ("right", -1)):
            assert b[J[f"{s}_wrist"], 1] < 0.12
            assert sign * b[J[f"{s}_wrist"], 0] > 0.15


def test_t_pose_holds_the_wrists_out_at_shoulder_height():
    for p in poses("t_pose"):
        b = body_frame(p)
        for s, sign in (("left", 1), ("right", -1)):
            assert abs(b[J[f"{s}_wrist"], 1] - b[J[f"{s}_shoulder"], 1]) < 0.15
            assert sign * b[J[f"{s}_wrist"], 0] > 0.55


def test_arms_forward_and_pointing_put_the_wrist_in_front_of_the_shoulder():
    for p in poses("both_forward"):
        b = body_frame(p)
        assert b[J["left_wrist"], 2] > b[J["left_shoulder"], 2] + 0.35
        assert b[J["right_wrist"], 2] > b[J["right_shoulder"], 2] + 0.35
    for p in poses("pointing_left"):
        b = body_frame(p)
        assert b[J["left_wrist"], 2] > b[J["left_shoulder"], 2] + 0.45
        assert p.label["left_elbow_deg"] <= 5
        assert b[J["right_wrist"], 1] < 0.12


def test_crossed_arms_bring_each_wrist_past_the_midline():
    for p in poses("crossed"):
        b = body_frame(p)
        assert b[J["left_wrist"], 0] < -0.02 and b[J["right_wrist"], 0] > 0.02
        assert b[J["left_wrist"], 2] > 0.06 and b[J["right_wrist"], 2] > 0.06  # in front of the body axis


def test_hands_on_hips_rest_the_wrists_by_the_hips_with_elbows_out():
    for p in poses("hands_on_hips"):
        b = body_frame(p)
        for s, sign in (("left", 1), ("right", -1)):
            waist = np.array([sign * 0.14, 0.1, 0.0])        # beside the pelvis, above the hip joint
            assert np.linalg.norm(b[J[f"{s}_wrist"]] - waist) < 0.15
            assert sign * b[J[f"{s}_elbow"], 0] > sign * b[J[f"{s}_wrist"], 0] + 0.08


def test_hands_behind_head_and_praying_and_behind_back():
    for p in poses("behind_head"):
        for s in ("left", "right"):
            assert np.linalg.norm(p.joints[J[f"{s}_wrist"]] - p.joints[J["head"]]) < 0.22
            assert p.joints[J[f"{s}_elbow"], 1] > p.joints[J[f"{s}_shoulder"], 1] - 0.05
    for p in poses("praying"):
        b = body_frame(p)
        assert np.linalg.norm(b[J["left_wrist"]] - b[J["right_wrist"]]) < 0.15
        assert b[J["left_wrist"], 2] > 0.15 and 0.1 < b[J["left_wrist"], 1] < b[J["neck"], 1]
    for p in poses("behind_back"):
        b = body_frame(p)
        assert b[J["left_wrist"], 2] < -0.08 and b[J["right_wrist"], 2] < -0.08


def test_waving_thinking_and_one_arm_up_use_the_named_side():
    for p in poses("waving_left"):
        assert p.joints[J["left_wrist"], 1] > p.joints[J["left_elbow"], 1] + 0.12
        assert p.joints[J["right_wrist"], 1] < p.joints[J["pelvis"], 1] + 0.12
    for p in poses("thinking_right"):
        b = body_frame(p)
        face = b[J["head"]] + np.array([0.0, -0.04, 0.09])
        assert np.linalg.norm(b[J["right_hand"]] - face) < 0.13
    for p in poses("one_up_right"):
        assert p.joints[J["right_wrist"], 1] > p.joints[J["head"], 1] + 0.1
        assert p.joints[J["left_wrist"], 1] < p.joints[J["pelvis"], 1] + 0.12


def test_v_reaching_front_bent_and_flexing_arms():
    for p in poses("v_up"):
        b = body_frame(p)
        for s, sign in (("left", 1), ("right", -1)):
            assert b[J[f"{s}_wrist"], 1] > b[J["head"], 1] + 0.05
            assert sign * (b[J[f"{s}_wrist"], 0] - b[J[f"{s}_shoulder"], 0]) > 0.25
    for p in poses("reaching"):
        b = body_frame(p)
        for s in ("left", "right"):
            assert b[J[f"{s}_wrist"], 2] > b[J[f"{s}_shoulder"], 2] + 0.25
            assert b[J[f"{s}_wrist"], 1] > b[J[f"{s}_shoulder"], 1] + 0.15
    for p in poses("front_bent"):
        b = body_frame(p)
        for s in ("left", "right"):
            assert b[J[f"{s}_wrist"], 2] > 0.2 and 0 < b[J[f"{s}_wrist"], 1] < b[J[f"{s}_shoulder"], 1]
            assert p.label[f"{s}_elbow_deg"] >= 60
    for p in poses("flexing"):
        for s in ("left", "right"):
            assert p.joints[J[f"{s}_wrist"], 1] > p.joints[J[f"{s}_elbow"], 1] + 0.12
            assert abs(p.joints[J[f"{s}_elbow"], 1] - p.joints[J[f"{s}_shoulder"], 1]) < 0.15


def test_one_arm_configurations_move_only_the_named_arm():
    for p in poses("one_sideways_left"):
        b = body_frame(p)
        assert b[J["left_wrist"], 0] > 0.55 and b[J["right_wrist"], 1] < 0.12
    for p in poses("one_forward_right"):
        b = body_frame(p)
        assert b[J["right_wrist"], 2] > b[J["right_shoulder"], 2] + 0.35 and b[J["left_wrist"], 1] < 0.12
    for p in poses("hand_on_hip_left"):
        b = body_frame(p)
        assert np.linalg.norm(b[J["left_wrist"]] - [0.14, 0.1, 0.0]) < 0.15 and b[J["right_wrist"], 1] < 0.12
    for p in poses("reach_right"):
        b = body_frame(p)
        assert b[J["right_wrist"], 2] > b[J["right_shoulder"], 2] + 0.25 and b[J["left_wrist"], 1] < 0.12
    for p in poses("mixed", n=20):
        assert p.label["left_arm"] != p.label["right_arm"]


def test_standing_keeps_the_legs_straight_and_the_pelvis_high():
    for p in poses(legs="standing"):
        assert p.joints[J["pelvis"], 1] > 0.85
        assert p.label["left_knee_deg"] < 10 and p.label["right_knee_deg"] < 10


def test_sitting_puts_the_knees_forward_of_the_hips_at_hip_height():
    for p in poses(legs="sitting"):
        b = body_frame(p)
        for s in ("left", "right"):
            assert b[J[f"{s}_knee"], 2] > b[J[f"{s}_hip"], 2] + 0.3
            assert abs(b[J[f"{s}_knee"], 1] - b[J[f"{s}_hip"], 1]) < 0.12


def test_kneeling_on_the_left_knee_puts_that_knee_on_the_floor():
    for p in poses(legs="kneeling_left"):
        assert p.joints[J["left_knee"], 1] < 0.12           # the floor is y = 0 (lowest contact)
        assert p.joints[J["right_knee"], 1] > 0.35
    for p in poses(legs="kneeling_both"):
        assert p.joints[J["left_knee"], 1] < 0.12 and p.joints[J["right_knee"], 1] < 0.12


def test_squatting_lowers_the_pelvis_with_deeply_bent_knees():
    for p in poses(legs="squatting"):
        assert p.joints[J["pelvis"], 1] < 0.6
        assert min(p.label["left_knee_deg"], p.label["right_knee_deg"]) > 110


def test_crouching_bends_the_knees_and_lowers_the_pelvis_less_than_a_squat():
    for p in poses(legs="crouching"):
        assert 0.6 < p.joints[J["pelvis"], 1] < 0.9
        b = body_frame(p)
        assert b[J["left_knee"], 2] > b[J["left_ankle"], 2] + 0.1         # knees ahead of the feet


def test_lunge_step_raise_and_wide_stance_by_fk():
    for p in poses(legs="lunge_left"):
        b = body_frame(p)
        assert b[J["left_knee"], 2] > b[J["left_hip"], 2] + 0.25
        assert b[J["right_ankle"], 2] < -0.2
    for p in poses(legs="step_right"):
        b = body_frame(p)
        assert b[J["right_ankle"], 2] > b[J["left_ankle"], 2] + 0.15
    for p in poses(legs="raise_left"):
        assert p.joints[J["left_ankle"], 1] > p.joints[J["right_ankle"], 1] + 0.25
    for p in poses(legs="wide_stance"):
        b = body_frame(p)
        assert b[J["left_ankle"], 0] - b[J["right_ankle"], 0] > 0.45


# --- limits, determinism, frames, mirror, collisions ------------------------------------------------------

@pytest.fixture(scope="module")
def random_poses():
    return g.generate(300, seed=11)


def test_generation_is_deterministic_by_seed():
    a, b, c = g.generate(20, seed=3), g.generate(20, seed=3), g.generate(20, seed=4)
    np.testing.assert_array_equal(np.stack([p.angles_deg for p in a]), np.stack([p.angles_deg for p in b]))
    assert [p.label for p in a] == [p.label for p in b]
    assert not np.allclose(np.stack([p.angles_deg for p in a]), np.stack([p.angles_deg for p in c]))


def test_every_joint_stays_within_its_limits(random_poses):
    angles = np.stack([p.angles_deg for p in random_poses])
    assert g.within_limits(angles).all()
    bad = angles[0].copy()
    bad[J["left_knee"], 0] = -20                           # a knee bending forward
    assert not g.within_limits(bad)[J["left_knee"], 0]
    limits = g.LIMITS
    assert (limits[J["right_shoulder"], 1] == -limits[J["left_shoulder"], 1][::-1]).all()


def test_representations_agree(random_poses):
    for p in random_poses[:50]:
        np.testing.assert_allclose(rot.rotvec_to_rotmat(p.rotvec.astype(np.float64)), p.rotmat, atol=1e-5)
        np.testing.assert_allclose(p.rotmat, g.angles_to_rotmat(p.angles_deg), atol=1e-12)
        np.testing.assert_allclose(p.global_orient_camera, frames.canonical_camera_orient(p.rotmat[0]), atol=1e-12)
        assert p.rotvec.dtype == np.float32 and p.rotvec.shape == (24, 3)


def test_yaw_only_orientation_gives_the_upright_camera_target():
    a = np.zeros((24, 3))
    a[0] = (0, 70, 0)
    p = g.pose_from_angles(a)
    np.testing.assert_allclose(p.global_orient_camera, np.diag([1.0, -1.0, -1.0]), atol=1e-12)


def test_poses_are_varied(random_poses):
    assert len({p.label["arms"] for p in random_poses}) >= 25
    assert len({p.label["legs"] for p in random_poses}) >= 12
    spread = np.stack([p.angles_deg for p in random_poses]).std(0)
    assert (spread[[J["left_shoulder"], J["right_shoulder"], J["left_hip"], J["right_knee"]]].max(1) > 20).all()


def test_mirror_reflects_fk_joints_across_the_midplane(random_poses):
    reflect = np.diag([-1.0, 1.0, 1.0])
    for p in random_poses[:40]:
        m = g.mirror_pose(p.rotvec.astype(np.float64))
        joints = g.fk_joints(p.rotmat)
        mirrored = g.fk_joints(rot.rotvec_to_rotmat(m))
        np.testing.assert_allclose(mirrored[list(MIRROR)], joints @ reflect, atol=1e-6)
        np.testing.assert_allclose(g.mirror_pose(m), p.rotvec, atol=1e-6)
        np.testing.assert_allclose(rot.rotvec_to_rotmat(g.mirror(p).rotvec.astype(np.float64)),
                                   rot.rotvec_to_rotmat(m), atol=1e-5)
    with pytest.raises(ValueError):
        g.mirror_pose(np.zeros((23, 3)))


def test_mirror_swaps_the_label_sides():
    p = poses(arms="waving_left", legs="kneeling_right", n=1)[0]
    m = g.mirror(p)
    assert m.label["arms"] == "waving_right" and m.label["legs"] == "kneeling_left"
    assert m.label["right_arm"] == "waving" and m.label["head_turn_deg"] == -p.label["head_turn_deg"]
    assert m.joints[J["left_knee"], 1] < 0.12             # now the left knee is on the floor


def test_generated_poses_pass_the_collision_check_and_a_collision_is_caught(random_poses):
    assert all(g.worst_penetration(p.joints)[0] <= g.PENETRATION_ALLOWANCE for p in random_poses)
    a = np.zeros((24, 3))
    a[J["left_shoulder"]] = (0, -80, -20)                  # forearm folded straight into the chest
    a[J["left_elbow"]] = (0, -150, 0)
    a[J["left_shoulder"], 0] = g._arm_twist_for_bend(-20, 80, (-1, 0, 0))
    overlap, pair = g.worst_penetration(g.fk_joints(g.angles_to_rotmat(a)))
    assert overlap > g.PENETRATION_ALLOWANCE and "l_" in pair[0]


def test_segment_distance_matches_brute_force():
    rng = np.random.default_rng(1)
    t = np.linspace(0, 1, 301)[:, None]
    for k in range(60):
        p = rng.normal(size=(4, 3))
        if k % 5 == 0:
            p[1] = p[0]
        a, b = p[0] + t * (p[1] - p[0]), p[2] + t * (p[3] - p[2])
        brute = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).min()
        d = g.segment_distance(*p)
        assert d <= brute + 1e-9 and brute - d < 0.02


def test_unknown_configuration_names_are_rejected():
    with pytest.raises(ValueError, match="unknown arm"):
        g.PoseGenerator(0).sample(arms="juggling")
    with pytest.raises(ValueError, match="unknown leg"):
        g.PoseGenerator(0).sample(legs="flying")
