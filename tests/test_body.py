"""Body models: shapes the Body docstring promises, SMPL skinning facts, safe file reading, the mannequin."""
from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

from smpl_rig import body as body_module
from smpl_rig.body import Body, BodyModelError, load, pose_corrective_features
from smpl_rig.kinematics import forward_kinematics
from smpl_rig.mannequin import MANNEQUIN_LICENSE_PATH, MANNEQUIN_PATH, read_mannequin, read_rest_joints
from smpl_rig.rotations import rotvec_to_rotmat
from smpl_rig.skeleton import JOINT_INDEX, NUM_JOINTS
from smpl_rig.smpl_file import safe_unpickle
from smpl_fixtures import synthetic_smpl_arrays, write_synthetic_smpl

NUM_BETAS = 10


@pytest.fixture(scope="module")
def smpl_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smpl")
    return {fmt: write_synthetic_smpl(folder / f"SMPL_NEUTRAL.{fmt}", fmt=fmt, num_betas=NUM_BETAS, seed=3)
            for fmt in ("npz", "pkl")}


@pytest.fixture(scope="module")
def smpl_body(smpl_files):
    return load(smpl_files["npz"])


@pytest.fixture(scope="module")
def mannequin():
    return load("mannequin")


def random_rotmats(rng, batch=(), scale=0.5):
    return rotvec_to_rotmat(rng.normal(scale=scale, size=(*batch, NUM_JOINTS, 3)))


def identity_pose():
    return np.broadcast_to(np.eye(3), (NUM_JOINTS, 3, 3)).copy()


# --- the contract's shapes -----------------------------------------------------------------------------

def test_smpl_body_fields_have_the_documented_shapes(smpl_body):
    v = smpl_body.num_vertices
    assert smpl_body.rest_joints.shape == (24, 3)
    assert smpl_body.vertices.shape == (v, 3)
    assert smpl_body.faces.shape[1] == 3 and smpl_body.faces.dtype == np.int32
    assert smpl_body.faces.min() >= 0 and smpl_body.faces.max() < v
    assert smpl_body.weights.shape == (v, 24)
    np.testing.assert_allclose(smpl_body.weights.sum(1), 1.0, atol=1e-9)
    assert smpl_body.shapedirs.shape == (v, 3, NUM_BETAS)
    assert smpl_body.posedirs.shape == (v, 3, 207)
    assert smpl_body.joint_regressor.shape == (24, v)
    assert smpl_body.template_vertices.shape == (v, 3)
    assert smpl_body.betas.shape == (NUM_BETAS,) and not smpl_body.betas.any()
    assert (smpl_body.kind, smpl_body.gender, smpl_body.name) == ("smpl", "neutral", "SMPL_NEUTRAL")
    assert smpl_body.has_pose_correctives and smpl_body.num_betas == NUM_BETAS
    assert 1.6 < smpl_body.height < 1.9


def test_mannequin_fields_have_the_documented_shapes(mannequin):
    v = mannequin.num_vertices
    assert mannequin.rest_joints.shape == (24, 3)
    assert mannequin.vertices.shape == (v, 3) and v > 1000
    assert mannequin.faces.shape[1] == 3 and mannequin.faces.dtype == np.int32
    assert mannequin.faces.min() >= 0 and mannequin.faces.max() < v
    assert mannequin.weights.shape == (v, 24)
    assert mannequin.shapedirs is None and mannequin.posedirs is None and mannequin.joint_regressor is None
    assert mannequin.template_vertices.shape == (v, 3)
    assert mannequin.betas.shape == (0,)
    assert (mannequin.kind, mannequin.gender, mannequin.name) == ("mannequin", "neutral", "mannequin")
    assert not mannequin.has_pose_correctives and mannequin.num_betas == 0


def test_pose_returns_documented_shapes_for_single_and_batched_poses(smpl_body):
    rng = np.random.default_rng(0)
    vertices, joints = smpl_body.pose(random_rotmats(rng))
    assert vertices.shape == (smpl_body.num_vertices, 3) and joints.shape == (24, 3)
    vertices, joints = smpl_body.pose(random_rotmats(rng, (2, 3)), translation=np.zeros((2, 3, 3)))
    assert vertices.shape == (2, 3, smpl_body.num_vertices, 3) and joints.shape == (2, 3, 24, 3)


# --- mannequin facts ------------------------------------------------------------------------------------

def test_mannequin_is_an_upright_t_pose_in_the_smpl_frame(mannequin):
    j = mannequin.rest_joints
    assert j[JOINT_INDEX["left_hip"], 0] > 0 > j[JOINT_INDEX["right_hip"], 0]        # body left is +X
    assert j[JOINT_INDEX["left_wrist"], 0] > 0.5 and j[JOINT_INDEX["right_wrist"], 0] < -0.5  # arms out
    assert j[JOINT_INDEX["head"], 1] > j[JOINT_INDEX["neck"], 1] > j[JOINT_INDEX["pelvis"], 1]  # +Y up
    assert j[JOINT_INDEX["left_ankle"], 1] < j[JOINT_INDEX["left_knee"], 1] < j[JOINT_INDEX["left_hip"], 1]
    assert j[JOINT_INDEX["left_foot"], 2] > j[JOINT_INDEX["left_ankle"], 2]          # toes point +Z (facing)
    # Hand joints sit beyond the wrists, at the knuckles (SMPL's layout), not on top of them.
    assert 0.05 < np.linalg.norm(j[JOINT_INDEX["left_hand"]] - j[JOINT_INDEX["left_wrist"]]) < 0.15
    np.testing.assert_allclose(mannequin.weights.sum(1), 1.0, atol=1e-9)
    assert (mannequin.weights >= 0).all()
    assert 1.6 < mannequin.height < 1.9


def test_mannequin_skinning_follows_the_bones(mannequin):
    # Bend the left elbow 90°: everything skinned only to the forearm, wrist and hand turns rigidly about
    # the elbow; the right half of the body does not move.
    elbow = JOINT_INDEX["left_elbow"]
    rotmats = identity_pose()
    rotmats[elbow] = rotvec_to_rotmat(np.array([0.0, -np.pi / 2, 0.0]))
    vertices, joints = mannequin.pose(rotmats)
    forearm_and_hand = mannequin.weights[:, [elbow, JOINT_INDEX["left_wrist"], JOINT_INDEX["left_hand"]]].sum(1)
    rigid = np.isclose(forearm_and_hand, 1.0, atol=1e-9)
    assert rigid.sum() > 100
    pivot = mannequin.rest_joints[elbow]
    np.testing.assert_allclose(vertices[rigid], (mannequin.vertices[rigid] - pivot) @ rotmats[elbow].T + pivot,
                               atol=1e-9)
    assert np.abs(vertices[rigid] - mannequin.vertices[rigid]).max() > 0.2      # the hand really moved
    right_side = mannequin.vertices[:, 0] < -0.05
    np.testing.assert_allclose(vertices[right_side], mannequin.vertices[right_side], atol=1e-12)


def test_mannequin_asset_ships_its_licence_notice():
    notice = MANNEQUIN_LICENSE_PATH.read_text()
    assert "mannequin-x" in notice and "Apache License" in notice and "Version 2.0" in notice
    assert MANNEQUIN_PATH.stat().st_size < 1024 * 1024
    with np.load(MANNEQUIN_PATH, allow_pickle=False) as data:   # no object arrays inside
        assert data["vertices"].dtype == np.float32 and data["weights"].dtype == np.float32


def test_mannequin_refuses_shape_and_gender_it_does_not_have():
    with pytest.raises(BodyModelError, match="no shape space"):
        load("mannequin", betas=[1.0])
    with pytest.raises(BodyModelError, match="gender-neutral"):
        load("mannequin", gender="female")
    assert load("mannequin", betas=np.zeros(3)).num_vertices > 0   # zero betas are the mean shape


# --- skinning -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["smpl", "mannequin"])
def test_posed_joints_equal_forward_kinematics_of_rest_joints(which, smpl_body, mannequin):
    body = smpl_body if which == "smpl" else mannequin
    rng = np.random.default_rng(1)
    rotmats = random_rotmats(rng, (8,))
    translation = rng.normal(size=(8, 3))
    _, joints = body.pose(rotmats, translation=translation)
    expected = forward_kinematics(body.rest_joints, rotmats, translation).joints
    np.testing.assert_allclose(joints, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["smpl", "mannequin"])
def test_zero_pose_gives_the_rest_mesh(which, smpl_body, mannequin):
    body = smpl_body if which == "smpl" else mannequin
    vertices, joints = body.pose(identity_pose())
    np.testing.assert_allclose(vertices, body.vertices, atol=1e-12)
    np.testing.assert_allclose(joints, body.rest_joints, atol=1e-12)
    shifted, _ = body.pose(identity_pose(), translation=[0.5, -1.0, 2.0])
    np.testing.assert_allclose(shifted, body.vertices + [0.5, -1.0, 2.0], atol=1e-12)


def test_pose_is_linear_blend_skinning_with_pose_correctives(smpl_body):
    # An independent per-vertex loop: v = Σ_j w_vj · G_j · (v_rest + P·f(R)), G_j the skinning transform.
    rng = np.random.default_rng(2)
    rotmats = random_rotmats(rng)
    vertices, _ = smpl_body.pose(rotmats)
    skin = forward_kinematics(smpl_body.rest_joints, rotmats).skinning
    features = np.concatenate([(rotmats[i] - np.eye(3)).ravel() for i in range(1, 24)])
    for v in rng.choice(smpl_body.num_vertices, 20, replace=False):
        rest = smpl_body.vertices[v] + smpl_body.posedirs[v] @ features
        expected = sum(smpl_body.weights[v, j] * (skin[j, :3, :3] @ rest + skin[j, :3, 3]) for j in range(24))
        np.testing.assert_allclose(vertices[v], expected, atol=1e-12)


def test_global_orientation_alone_rotates_the_mesh_about_the_pelvis(smpl_body):
    rotmats = identity_pose()
    rotmats[0] = rotvec_to_rotmat(np.array([0.3, -1.1, 0.4]))
    vertices, _ = smpl_body.pose(rotmats)
    pelvis = smpl_body.rest_joints[0]
    np.testing.assert_allclose(vertices, (smpl_body.vertices - pelvis) @ rotmats[0].T + pelvis, atol=1e-12)


def test_pose_corrective_features_are_rotation_minus_identity_row_major():
    rng = np.random.default_rng(4)
    rotmats = random_rotmats(rng, (3,))
    features = pose_corrective_features(rotmats)
    assert features.shape == (3, 207)
    np.testing.assert_array_equal(features[1, 9 * 4:9 * 5].reshape(3, 3), rotmats[1, 5] - np.eye(3))
    assert features[2, 0] == rotmats[2, 1, 0, 0] - 1 and features[2, 1] == rotmats[2, 1, 0, 1]
    assert not pose_corrective_features(identity_pose()).any()
    torch = pytest.importorskip("torch")
    from_torch = pose_corrective_features(torch.from_numpy(rotmats))
    np.testing.assert_array_equal(from_torch.numpy(), features)


# --- shape ----------------------------------------------------------------------------------------------

def test_betas_change_rest_joints_through_the_joint_regressor(smpl_files):
    raw = synthetic_smpl_arrays(num_betas=NUM_BETAS, seed=3)
    betas = np.random.default_rng(5).normal(size=NUM_BETAS)
    shaped = load(smpl_files["npz"], betas=betas)
    expected_vertices = raw["v_template"] + np.einsum("vck,k->vc", raw["shapedirs"], betas)
    np.testing.assert_allclose(shaped.vertices, expected_vertices, atol=1e-12)
    np.testing.assert_allclose(shaped.rest_joints, raw["J_regressor"] @ expected_vertices, atol=1e-12)
    np.testing.assert_array_equal(shaped.betas, betas)
    assert np.abs(shaped.rest_joints - load(smpl_files["npz"]).rest_joints).max() > 1e-3


def test_fewer_betas_are_padded_and_pose_betas_match_a_shaped_body(smpl_body):
    partial = smpl_body.shaped([0.8, -0.4])
    np.testing.assert_array_equal(partial.betas, [0.8, -0.4] + [0.0] * (NUM_BETAS - 2))
    rotmats = random_rotmats(np.random.default_rng(6))
    np.testing.assert_allclose(smpl_body.pose(rotmats, betas=[0.8, -0.4])[0], partial.pose(rotmats)[0], atol=1e-12)
    with pytest.raises(ValueError, match="11 betas"):
        smpl_body.shaped(np.zeros(NUM_BETAS + 1))


# --- file reading ---------------------------------------------------------------------------------------

def test_npz_and_pkl_of_the_same_model_load_identical_arrays(smpl_files, tmp_path):
    from_npz, from_pkl = load(smpl_files["npz"]), load(smpl_files["pkl"])
    old_protocol = load(write_synthetic_smpl(tmp_path / "SMPL_NEUTRAL.pkl", fmt="pkl", seed=3, pickle_protocol=0))
    # Files "cleaned" of chumpy by Python 3 tools: plain numpy arrays, protocol 2 (bytes as _codecs.encode) or 4.
    cleaned = []
    for protocol in (2, 4):
        path = tmp_path / f"SMPL_NEUTRAL_p{protocol}.pkl"
        path.write_bytes(pickle.dumps(synthetic_smpl_arrays(num_betas=NUM_BETAS, seed=3), protocol=protocol))
        cleaned.append(load(path))
    for other in (from_pkl, old_protocol, *cleaned):
        for name in ("rest_joints", "vertices", "faces", "weights", "shapedirs", "posedirs", "joint_regressor",
                     "template_vertices", "betas"):
            np.testing.assert_array_equal(getattr(from_npz, name), getattr(other, name), err_msg=name)


def test_pkl_uses_shims_not_chumpy_or_scipy(smpl_files):
    import sys
    load(smpl_files["pkl"])
    assert "chumpy" not in sys.modules


def test_npz_with_a_pickled_sparse_regressor_member_loads(smpl_files, tmp_path):
    # Some converted SMPL .npz files store J_regressor as a 0-d object array holding a sparse matrix.
    raw = synthetic_smpl_arrays(num_betas=NUM_BETAS, seed=3)
    sparse = safe_unpickle(smpl_files["pkl"].read_bytes())["J_regressor"]        # the .pkl's shim, for reference
    from smpl_fixtures import _FakeClassPickler, _FakeCscMatrix
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "|O", "fortran_order": False, "shape": ()})
    wrapper = np.empty((), dtype=object)
    wrapper[()] = _FakeCscMatrix(raw["J_regressor"])
    _FakeClassPickler(member, protocol=2).dump(wrapper)
    path = tmp_path / "smpl_neutral.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in raw.items():
            if key != "J_regressor":
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, value)
                archive.writestr(f"{key}.npy", buffer.getvalue())
        archive.writestr("J_regressor.npy", member.getvalue())
    body = load(path)
    np.testing.assert_array_equal(body.joint_regressor, raw["J_regressor"])
    np.testing.assert_array_equal(body.joint_regressor, sparse.array)


class _RunsShell:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code_execution(tmp_path):
    payload = pickle.dumps({"v_template": _RunsShell()}, protocol=2)
    assert b"system" in payload
    with pytest.raises(BodyModelError, match=r"refusing to load (posix|os)\.system"):
        safe_unpickle(payload)
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(payload)
    with pytest.raises(BodyModelError, match="refusing"):
        load(path)
    with pytest.raises(BodyModelError, match=r"refusing to load builtins\.eval"):
        safe_unpickle(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(BodyModelError, match="refusing _codecs.encode with encoding 'rot13'"):
        safe_unpickle(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")
    assert safe_unpickle(b"c_codecs\nencode\n(Vab\nVlatin1\ntR.") == b"ab"


@pytest.mark.parametrize("problem, message", [
    ("text", "not a readable"),
    ("missing_key", "missing posedirs"),
    ("short_posedirs", r"posedirs should be \(400, 3, 207\)"),
    ("smplh_weights", "only SMPL's 24-joint skeleton"),
    ("bad_faces", "f indexes vertices outside"),
    ("nan_template", "contains NaN"),
    ("bad_weights", "rows should sum to 1"),
    ("bad_tree", "not SMPL's kinematic tree"),
    ("suffix", "ending in .npz or .pkl"),
    ("pickled_list", "not a dict of arrays"),
])
def test_bad_files_raise_body_model_error_saying_what_is_wrong(problem, message, tmp_path):
    raw = synthetic_smpl_arrays(num_betas=4, seed=0)
    path = tmp_path / "SMPL_NEUTRAL.npz"
    if problem == "text":
        path.write_text("these are not the arrays you are looking for\n")
    elif problem == "suffix":
        path = tmp_path / "SMPL_NEUTRAL.obj"
        path.write_text("v 0 0 0\n")
    elif problem == "pickled_list":
        path = tmp_path / "SMPL_NEUTRAL.pkl"
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    else:
        if problem == "missing_key":
            del raw["posedirs"]
        elif problem == "short_posedirs":
            raw["posedirs"] = raw["posedirs"][:, :, :200]
        elif problem == "smplh_weights":
            raw["weights"] = np.zeros((400, 52))
        elif problem == "bad_faces":
            raw["f"][0, 0] = 400
        elif problem == "nan_template":
            raw["v_template"][5, 1] = np.nan
        elif problem == "bad_weights":
            raw["weights"][7] *= 2
        elif problem == "bad_tree":
            raw["kintree_table"][0, 4] = 2
        with open(path, "wb") as f:
            np.savez(f, **raw)
    with pytest.raises(BodyModelError, match=message):
        load(path)


def test_missing_file_and_unknown_gender_are_clear_errors(tmp_path):
    with pytest.raises(BodyModelError, match="no SMPL model file"):
        load(tmp_path / "nothing_here.npz")
    with pytest.raises(ValueError, match="gender must be one of"):
        load("mannequin", gender="robot")


# --- gender -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("file_name, gender", [
    ("SMPL_FEMALE.npz", "female"), ("SMPL_MALE.pkl", "male"), ("basicModel_f_lbs_10_207_0_v1.0.0.pkl", "female"),
    ("basicmodel_m_lbs_10_207_0_v1.1.0.pkl", "male"), ("basicModel_neutral_lbs_10_207_0_v1.0.0.pkl", "neutral"),
    ("my_body.npz", None),
])
def test_gender_is_read_from_the_file_name(file_name, gender):
    assert body_module._infer_gender(file_name) == gender


def test_gender_picks_the_file_in_a_folder_and_labels_the_body(tmp_path):
    write_synthetic_smpl(tmp_path / "SMPL_FEMALE.npz", seed=1)
    write_synthetic_smpl(tmp_path / "SMPL_MALE.pkl", fmt="pkl", seed=2)
    write_synthetic_smpl(tmp_path / "SMPL_NEUTRAL.npz", seed=3)
    female, male, neutral = (load(tmp_path, gender=g) for g in ("female", "male", None))
    assert (female.gender, male.gender, neutral.gender) == ("female", "male", "neutral")
    assert (female.name, male.name, neutral.name) == ("SMPL_FEMALE", "SMPL_MALE", "SMPL_NEUTRAL")
    np.testing.assert_array_equal(female.vertices, synthetic_smpl_arrays(seed=1)["v_template"])
    assert load(tmp_path / "SMPL_MALE.pkl").gender == "male"
    unnamed = write_synthetic_smpl(tmp_path / "custom.npz")
    assert load(unnamed, gender="female").gender == "female" and load(unnamed).gender == "neutral"
    with pytest.raises(BodyModelError, match="looks like a male model"):
        load(tmp_path / "SMPL_MALE.pkl", gender="female")


def test_bad_pose_input_is_refused(smpl_body):
    with pytest.raises(ValueError, match=r"\(\.\.\., 24, 3, 3\)"):
        smpl_body.pose(np.zeros((23, 3, 3)))
    nan_pose = identity_pose()
    nan_pose[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        smpl_body.pose(nan_pose)
    with pytest.raises(ValueError, match="translation"):
        smpl_body.pose(identity_pose(), translation=[0.0, 1.0])


def test_load_builds_the_body_from_the_files_arrays(smpl_files, smpl_body, mannequin):
    """``load`` puts each reader's arrays where ``Body`` documents them: the mannequin's as stored, an SMPL
    file's rest joints regressed from its template (computed here independently of ``load``)."""
    arrays = read_mannequin()
    for name in ("rest_joints", "vertices", "faces", "weights"):
        np.testing.assert_array_equal(getattr(mannequin, name), arrays[name])
    np.testing.assert_array_equal(read_rest_joints(), arrays["rest_joints"])      # the skeleton on its own
    assert mannequin.posedirs is None
    assert (mannequin.kind, mannequin.gender, mannequin.num_betas) == ("mannequin", "neutral", 0)
    raw = np.load(smpl_files["npz"])
    np.testing.assert_allclose(smpl_body.rest_joints, raw["J_regressor"] @ raw["v_template"], atol=1e-12)
    np.testing.assert_array_equal(smpl_body.posedirs, raw["posedirs"])
    assert (smpl_body.kind, smpl_body.gender, smpl_body.num_betas) == ("smpl", "neutral", NUM_BETAS)
