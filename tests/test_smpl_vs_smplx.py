"""Our SMPL posing equals the reference implementation, ``smplx``, when that package is installed.

``smplx`` is under a non-commercial licence, so it is never a requirement: without it these tests skip.
The model is synthetic (tests/smpl_fixtures.py) with SMPL's real vertex count, because smplx picks extra
keypoints by fixed SMPL vertex ids. smplx reads .pkl with plain ``pickle.load``, so for it we write the
same arrays as a plain-numpy pickle named SMPL_NEUTRAL.pkl in a temporary folder; we read that file with
our restricted unpickler, and the chumpy-style .pkl of the same arrays too.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

smplx = pytest.importorskip("smplx", exc_type=ImportError)  # also skip when installed but broken
torch = pytest.importorskip("torch")

from smpl_fixtures import synthetic_smpl_arrays, write_synthetic_smpl  # noqa: E402

from smpl_rig.body import load  # noqa: E402
from smpl_rig.rotations import rotvec_to_rotmat  # noqa: E402

NUM_VERTICES = 6890
NUM_BETAS = 10
BATCH = 6
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smplx_models")
    arrays = synthetic_smpl_arrays(num_betas=NUM_BETAS, seed=11, num_vertices=NUM_VERTICES)
    # smplx converts every array through float32; float32-exact inputs make both sides see the same model.
    arrays = {k: v.astype(np.float32).astype(np.float64) if v.dtype.kind == "f" else v for k, v in arrays.items()}
    with open(folder / "SMPL_NEUTRAL.pkl", "wb") as f:
        pickle.dump(arrays, f, protocol=2)
    return folder


@pytest.fixture(scope="module")
def random_inputs():
    rng = np.random.default_rng(12)
    rotvecs = rng.normal(scale=0.6, size=(BATCH, 24, 3))
    betas = rng.normal(scale=1.5, size=(BATCH, NUM_BETAS))
    translation = rng.normal(scale=0.5, size=(BATCH, 3))
    return rotvecs, betas, translation


def ours(body, rotvecs, betas, translation):
    rotmats = rotvec_to_rotmat(rotvecs)
    posed = [body.pose(rotmats[i], translation=translation[i], betas=betas[i]) for i in range(len(rotvecs))]
    return np.stack([v for v, _ in posed]), np.stack([j for _, j in posed])


def test_rotation_matrix_layer_matches_smplx(model_folder, random_inputs):
    rotvecs, betas, translation = random_inputs
    layer = smplx.SMPLLayer(model_path=str(model_folder), gender="neutral", num_betas=NUM_BETAS,
                            dtype=torch.float64)
    rotmats = torch.from_numpy(rotvec_to_rotmat(rotvecs))
    with torch.no_grad():
        out = layer(betas=torch.from_numpy(betas), global_orient=rotmats[:, :1], body_pose=rotmats[:, 1:],
                    transl=torch.from_numpy(translation))
    vertices, joints = ours(load(model_folder / "SMPL_NEUTRAL.pkl"), rotvecs, betas, translation)
    np.testing.assert_allclose(vertices, out.vertices.numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(joints, out.joints[:, :24].numpy(), atol=TOLERANCE, rtol=0)
    assert np.abs(vertices - vertices[:, :1]).max() > 0.5          # a real, non-degenerate body was posed


def test_axis_angle_model_matches_smplx_and_chumpy_pkl_gives_the_same(model_folder, random_inputs, tmp_path):
    rotvecs, betas, translation = random_inputs
    model = smplx.SMPL(model_path=str(model_folder), gender="neutral", num_betas=NUM_BETAS, batch_size=BATCH,
                       dtype=torch.float64)
    with torch.no_grad():
        out = model(betas=torch.from_numpy(betas), global_orient=torch.from_numpy(rotvecs[:, 0]),
                    body_pose=torch.from_numpy(rotvecs[:, 1:].reshape(BATCH, -1)),
                    transl=torch.from_numpy(translation))
    # The chumpy/sparse-style .pkl of the same (unrounded) arrays: within float32 rounding of smplx's copy.
    chumpy_style = write_synthetic_smpl(tmp_path / "SMPL_NEUTRAL.pkl", fmt="pkl", num_betas=NUM_BETAS, seed=11,
                                        num_vertices=NUM_VERTICES)
    vertices, joints = ours(load(chumpy_style), rotvecs, betas, translation)
    np.testing.assert_allclose(vertices, out.vertices.numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(joints, out.joints[:, :24].numpy(), atol=TOLERANCE, rtol=0)
