"""Edit turns (training/corpus/edits.py): each edit moves the body the way its words say, measured with
forward kinematics, and leaves every other joint bit-identical."""
import random

import numpy as np
import pytest

from smpl_rig import rotations as rot
from smpl_rig.kinematics import forward_kinematics
from smpl_rig.skeleton import JOINT_INDEX as J
from training.corpus import edits
from training.corpus.captioner import measure
from training.corpus.generator import LIMITS, REST_JOINTS, PoseGenerator, mirror_pose


def _poses(n=12):
    return [PoseGenerator([7, i, 0]).sample() for i in range(n)]


def _m(rotvec):
    return measure(rot.rotvec_to_rotmat(np.asarray(rotvec, np.float64)))


def _world(rotvec):
    return forward_kinematics(REST_JOINTS, rot.rotvec_to_rotmat(np.asarray(rotvec, np.float64)))


def test_angle_decomposition_inverts_the_generators_angles():
    rng = np.random.default_rng(0)
    for _ in range(500):
        a = rng.uniform(LIMITS[J["left_shoulder"], :, 0], LIMITS[J["left_shoulder"], :, 1])
        b = rot.rotmat_to_angles_xyz_deg_yzx(rot.angles_xyz_deg_to_rotmat_yzx(a), LIMITS[J["left_shoulder"]])
        assert np.allclose(rot.angles_xyz_deg_to_rotmat_yzx(b), rot.angles_xyz_deg_to_rotmat_yzx(a), atol=1e-9)


@pytest.mark.parametrize("kind", edits.EDIT_KINDS)
def test_every_edit_changes_only_its_joints_and_stays_within_limits(kind):
    made = 0
    for i, pose in enumerate(_poses(16)):
        e = edits.edit_pose(pose.rotvec, random.Random(f"{kind}:{i}"), kind)
        if e is None:
            continue
        made += 1
        assert e.kind == kind and e.instruction and e.rotvec.shape == (24, 3) and e.rotvec.dtype == np.float32
        same = [j for j in range(24) if j not in e.changed]
        assert np.array_equal(e.rotvec[same], pose.rotvec[same])        # bit-identical
        if kind != "mirror":     # (a mirror leaves symmetric joints as they are)
            assert all(not np.array_equal(e.rotvec[j], pose.rotvec[j]) for j in e.changed)
            for j in e.changed:
                a = rot.rotmat_to_angles_xyz_deg_yzx(rot.rotvec_to_rotmat(e.rotvec[j].astype(np.float64)), LIMITS[j])
                assert np.all(a >= LIMITS[j, :, 0] - 1e-2) and np.all(a <= LIMITS[j, :, 1] + 1e-2), (kind, j, a)
    assert made >= 2, f"{kind} applied to only {made} of 16 poses"


@pytest.mark.parametrize("side", ["left", "right"])
def test_raising_an_arm_lifts_that_wrist_and_lowering_drops_it(side):
    for i, pose in enumerate(_poses()):
        for kind, sign in ((f"raise_arm_{side}", 1), (f"lower_arm_{side}", -1)):
            e = edits.edit_pose(pose.rotvec, random.Random(i), kind)
            if e is None:
                continue
            assert e.changed == (J[f"{side}_shoulder"],)
            wrist = J[f"{side}_wrist"]
            rise = _world(e.rotvec).joints[wrist, 1] - _world(pose.rotvec).joints[wrist, 1]
            assert sign * rise >= edits.MIN_HEIGHT_M
            assert side in e.instruction.lower()


@pytest.mark.parametrize("side", ["left", "right"])
def test_turning_the_head_faces_the_bodys_own_side(side):
    for i, pose in enumerate(_poses()):
        e = edits.edit_pose(pose.rotvec, random.Random(i), f"turn_head_{side}")
        if e is None:
            continue
        before, after = _world(pose.rotvec).rotations, _world(e.rotvec).rotations
        # The face's direction (+Z of the head) moves toward the body's own side (+X of the chest is its left).
        lat = lambda w: (w[J["spine3"]].T @ w[J["head"]][:, 2])[0]  # noqa: E731
        assert (lat(after) - lat(before)) * (1 if side == "left" else -1) > 0.2
        assert set(e.changed) <= {J["neck"], J["head"]}


def test_the_other_edits_move_the_measured_body_the_way_they_say():
    effects = {"bend_elbow_left": lambda a, b: b.elbow_flexion["left"] - a.elbow_flexion["left"],
               "straighten_elbow_right": lambda a, b: a.elbow_flexion["right"] - b.elbow_flexion["right"],
               "bend_knees": lambda a, b: min(b.knee_flexion[s] - a.knee_flexion[s] for s in ("left", "right")),
               "nod_head": lambda a, b: b.head_nod - a.head_nod, "raise_head": lambda a, b: a.head_nod - b.head_nod,
               "tilt_head_right": lambda a, b: a.head_tilt - b.head_tilt,
               "lean_forward": lambda a, b: b.torso_pitch - a.torso_pitch,
               "lean_side_left": lambda a, b: b.torso_side - a.torso_side,
               "raise_knee_right": lambda a, b: 100 * (b.pos["right_knee"][1] - a.pos["right_knee"][1]),
               "spread_legs": lambda a, b: 100 * ((b.pos["left_ankle"] - b.pos["right_ankle"])[0]
                                                  - (a.pos["left_ankle"] - a.pos["right_ankle"])[0])}
    for kind, effect in effects.items():
        for i, pose in enumerate(_poses(6)):
            e = edits.edit_pose(pose.rotvec, random.Random(i), kind)
            if e is not None:
                assert effect(_m(pose.rotvec), _m(e.rotvec)) >= 8, kind


def test_edits_that_cannot_apply_return_none():
    straight = np.zeros((24, 3), np.float32)
    assert edits.edit_pose(straight, random.Random(0), "straighten_legs") is None
    assert edits.edit_pose(straight, random.Random(0), "straighten_elbow_left") is None
    assert edits.edit_pose(straight, random.Random(0), "mirror") is None           # symmetric already
    up = straight.copy()
    up[J["left_shoulder"]] = rot.rotmat_to_rotvec(rot.angles_xyz_deg_to_rotmat_yzx([0, 0, 95]))
    assert edits.edit_pose(up, random.Random(0), "raise_arm_left") is None


def test_edits_are_reproducible_from_the_rng():
    pose = _poses(1)[0]
    a, b = (edits.edit_pose(pose.rotvec, random.Random("s:3:1")) for _ in range(2))
    assert (a is None) == (b is None)
    if a is not None:
        assert a.kind == b.kind and a.instruction == b.instruction and np.array_equal(a.rotvec, b.rotvec)


def test_text_targets_follow_the_corpus_convention_and_mirror_joint_0():
    for pose in _poses(4):
        target = edits.text_target_rotmat(pose.rotvec)
        assert np.allclose(target[0], pose.global_orient_camera, atol=1e-5)
        assert np.allclose(target[1:], rot.rotvec_to_rotmat(pose.rotvec[1:]), atol=1e-6)
        back = edits.target_to_rotvec(target)
        assert np.allclose(edits.text_target_rotmat(back), target, atol=1e-5)
        e = edits.edit_pose(back, random.Random(0), "mirror")
        if e is not None:
            mirrored = edits.edited_target(target, e)
            assert np.allclose(mirrored, edits.text_target_rotmat(mirror_pose(back)), atol=1e-5)
        e = edits.edit_pose(back, random.Random(0), "bend_knees")
        out = edits.edited_target(target, e)
        same = [j for j in range(24) if j not in e.changed]
        assert np.array_equal(out[same], target[same])
