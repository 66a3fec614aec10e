"""The paper's pose-estimation protocol on fixtures in the public layouts: 3DPW's sequence pickles and image
folders, SPIN's Human3.6M npz, synthetic SMPL files per gender and a 17-joint regressor.

Every expected value is computed here independently (own Rodrigues, linear blend skinning from the raw
SMPL arrays, regressor, Procrustes), never through training.estimation or smpl_rig.
"""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from smpl_fixtures import synthetic_smpl_arrays, write_synthetic_smpl

from training.data.estimation_sets import read_3dpw, read_spin_npz
from training.estimation import Bodies, load_regressor, protocol_errors, summarize
from training.estimation import main as estimation_main

PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
LSP_FROM_H36M = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]     # SPIN's H36M_TO_J14
SEEDS = {"male": 11, "female": 12, "neutral": 13}
V = 400


def rodrigues(v):
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    axis = v / np.maximum(angle, 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*v.shape[:-1], 3, 3)
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def lbs(arrays, betas, rotmat):
    """SMPL by the book: shape, joints, pose correctives, forward kinematics, skinning. (24,3,3) → (V, 3)."""
    b = np.zeros(arrays["shapedirs"].shape[2])
    b[: len(betas)] = betas
    shaped = arrays["v_template"] + arrays["shapedirs"] @ b
    joints = arrays["J_regressor"] @ shaped
    posed = shaped + arrays["posedirs"] @ (rotmat[1:] - np.eye(3)).reshape(-1)
    world = np.zeros((24, 4, 4))
    for j in range(24):
        local = np.eye(4)
        local[:3, :3] = rotmat[j]
        local[:3, 3] = joints[j] - (joints[PARENTS[j]] if j else 0)
        world[j] = local if j == 0 else world[PARENTS[j]] @ local
    skin = world.copy()
    skin[:, :3, 3] -= np.einsum("jab,jb->ja", world[:, :3, :3], joints)
    blended = np.einsum("vj,jab->vab", arrays["weights"], skin)
    return np.einsum("vab,vb->va", blended[:, :3, :3], posed) + blended[:, :3, 3]


def lsp_joints(arrays, regressor, betas, rotmat):
    j17 = regressor @ lbs(arrays, betas, rotmat)
    return j17[LSP_FROM_H36M] - j17[0]


def procrustes_error(p, t):
    p0, t0 = p - p.mean(0), t - t.mean(0)
    u, s, vt = np.linalg.svd(p0.T @ t0)
    d = np.sign(np.linalg.det(u @ vt))
    s[-1] *= d
    u[:, -1] *= d
    aligned = (s.sum() / (p0 ** 2).sum()) * p0 @ (u @ vt)
    return np.linalg.norm(aligned - t0, axis=-1).mean()


def geodesic_deg(a, b):
    return np.degrees(np.arccos(np.clip((np.einsum("jab,jab->j", a, b) - 1) / 2, -1, 1))).mean()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """SMPL files, the regressor, a 3DPW tree (2 sequences, 3 people) and a Human3.6M npz."""
    root = tmp_path_factory.mktemp("estimation")
    rng = np.random.default_rng(0)
    (root / "smpl").mkdir()
    arrays = {}
    for gender, seed in SEEDS.items():
        write_synthetic_smpl(root / "smpl" / f"SMPL_{gender.upper()}.npz", seed=seed, num_vertices=V)
        arrays[gender] = synthetic_smpl_arrays(seed=seed, num_vertices=V)
    regressor = rng.uniform(0, 1, (17, V)) * (rng.uniform(0, 1, (17, V)) < 0.05)
    regressor /= regressor.sum(1, keepdims=True)
    np.save(root / "J_regressor_h36m.npy", regressor)

    pw = root / "3dpw"
    truth = []          # (sequence, person, frame, camera-frame rotmat, betas, gender, center, side)
    for name, genders, frames in (("courtyard_a_00", ["m", "f"], 3), ("downtown_b_01", ["f"], 2)):
        (pw / "imageFiles" / name).mkdir(parents=True)
        cam = rodrigues(rng.normal(scale=0.3, size=(frames, 3)))
        cam_poses = np.tile(np.eye(4), (frames, 1, 1))
        cam_poses[:, :3, :3] = cam
        cam_poses[:, :3, 3] = rng.normal(size=(frames, 3))
        seq = {"sequence": name, "genders": genders, "cam_poses": cam_poses, "img_frame_ids": np.arange(frames),
               "betas": [], "poses": [], "poses2d": [], "campose_valid": [], "trans": []}
        for person, g in enumerate(genders):
            poses = rng.normal(scale=0.3, size=(frames, 72))
            betas = rng.normal(size=16)                 # the release stores more than 10 for some people
            keypoints = np.concatenate([rng.uniform(10, 60, (frames, 2, 18)), np.ones((frames, 1, 18))], 1)
            keypoints[:, 2, :3] = 0                     # unconfident keypoints stay out of the box
            keypoints[:, :2, :3] = 1000.0
            valid = np.ones(frames, dtype=bool)
            valid[-1] = person == 0                     # the second person's last frame has no camera pose
            seq["poses"].append(poses)
            seq["betas"].append(betas)
            seq["poses2d"].append(keypoints)
            seq["campose_valid"].append(valid.astype(np.float64))
            seq["trans"].append(rng.normal(size=(frames, 3)))
            for f in np.flatnonzero(valid):
                r = rodrigues(poses[f].reshape(24, 3))
                r[0] = cam[f] @ r[0]
                seen = keypoints[f][:2, 3:].T
                low, high = seen.min(0), seen.max(0)
                truth.append((name, person, f, r, betas[:10], {"m": "male", "f": "female"}[g],
                              (low + high) / 2, 1.2 * (high - low).max()))
        for f in range(frames):
            Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(
                pw / "imageFiles" / name / f"image_{f:05d}.jpg")
        (pw / "sequenceFiles" / "test").mkdir(parents=True, exist_ok=True)
        with open(pw / "sequenceFiles" / "test" / f"{name}.pkl", "wb") as fh:
            pickle.dump(seq, fh, protocol=2)

    n = 4
    (root / "h36m" / "images").mkdir(parents=True)
    s24 = np.zeros((n, 24, 4))
    s24[:, :, :3] = rng.normal(scale=0.3, size=(n, 24, 3))
    s24[:, :, 3] = 1.0
    names = []
    for i in range(n):
        names.append(f"images/S9_Walking_1.54138969_{i:06d}.jpg")
        Image.fromarray(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)).save(root / "h36m" / names[-1])
    np.savez(root / "h36m_valid_protocol2.npz", imgname=np.array(names), center=rng.uniform(20, 40, (n, 2)),
             scale=rng.uniform(0.1, 0.3, n), S=s24)
    return {"root": root, "arrays": arrays, "regressor": regressor, "truth": truth, "s24": s24}


def test_3dpw_reader_reads_the_public_layout(world):
    samples = read_3dpw(world["root"] / "3dpw", "test")
    truth = world["truth"]
    assert len(samples) == len(truth) == 7
    for s, (name, person, frame, rotmat, betas, gender, center, side) in zip(samples, truth):
        assert s.image_path == world["root"] / "3dpw" / "imageFiles" / name / f"image_{frame:05d}.jpg"
        assert s.image_path.is_file() and s.gender == gender
        np.testing.assert_allclose(s.pose_rotmat, rotmat, atol=1e-10)
        np.testing.assert_allclose(s.betas, betas)
        np.testing.assert_allclose(s.center, center)
        assert s.box_size == pytest.approx(side)


def test_h36m_reader_takes_pelvis_relative_lsp_joints(world):
    samples = read_spin_npz(world["root"] / "h36m_valid_protocol2.npz", world["root"] / "h36m")
    s24 = world["s24"]
    assert len(samples) == 4 and all(s.pose_rotmat is None and s.image_path.is_file() for s in samples)
    for s, joints in zip(samples, s24):
        np.testing.assert_allclose(s.joints14, joints[:14, :3] - joints[14, :3])


@pytest.mark.parametrize("pred_body", ["subject", "neutral"])
def test_3dpw_errors_match_an_independent_computation(world, pred_body):
    samples = read_3dpw(world["root"] / "3dpw", "test")
    rng = np.random.default_rng(1)
    pred = np.stack([s.pose_rotmat for s in samples]) @ rodrigues(rng.normal(scale=0.2, size=(len(samples), 24, 3)))
    errors = protocol_errors(pred, samples, Bodies(world["root"] / "smpl"),
                             load_regressor(world["root"] / "J_regressor_h36m.npy"), pred_body)
    arrays, regressor = world["arrays"], world["regressor"]
    for k, (s, (_, _, _, rotmat, betas, gender, _, _)) in enumerate(zip(samples, world["truth"])):
        true = lsp_joints(arrays[gender], regressor, betas, rotmat)
        guess = (lsp_joints(arrays[gender], regressor, betas, pred[k]) if pred_body == "subject"
                 else lsp_joints(arrays["neutral"], regressor, [], pred[k]))
        assert errors["mpjpe_mm"][k] == pytest.approx(1000 * np.linalg.norm(guess - true, axis=-1).mean(), rel=1e-9)
        assert errors["pa_mpjpe_mm"][k] == pytest.approx(1000 * procrustes_error(guess, true), rel=1e-6, abs=1e-9)
        assert errors["mpjre_deg"][k] == pytest.approx(geodesic_deg(pred[k], rotmat), rel=1e-6)
        assert errors["mpjre_rad100"][k] == pytest.approx(np.radians(geodesic_deg(pred[k], rotmat)) * 100, rel=1e-6)
    exact = protocol_errors(np.stack([s.pose_rotmat for s in samples]), samples, Bodies(world["root"] / "smpl"),
                            load_regressor(world["root"] / "J_regressor_h36m.npy"))
    assert np.abs(exact["mpjpe_mm"]).max() < 1e-9 and np.abs(exact["mpjre_deg"]).max() < 1e-5


def test_h36m_errors_match_an_independent_computation(world):
    samples = read_spin_npz(world["root"] / "h36m_valid_protocol2.npz", world["root"] / "h36m")
    pred = rodrigues(np.random.default_rng(2).normal(scale=0.4, size=(4, 24, 3)))
    errors = protocol_errors(pred, samples, Bodies(world["root"] / "smpl"), world["regressor"])
    assert "mpjre_deg" not in errors                       # Human3.6M has joints, no SMPL ground truth
    for k, joints in enumerate(world["s24"]):
        guess = lsp_joints(world["arrays"]["neutral"], world["regressor"], [], pred[k])
        true = joints[:14, :3] - joints[14, :3]
        assert errors["mpjpe_mm"][k] == pytest.approx(1000 * np.linalg.norm(guess - true, axis=-1).mean(), rel=1e-9)
        assert errors["pa_mpjpe_mm"][k] == pytest.approx(1000 * procrustes_error(guess, true), rel=1e-6)


def test_the_command_prints_the_paper_table_for_a_checkpoint(world, tmp_path, capsys):
    import torch

    from backend.posegpt.tiny import build_tiny_checkpoint

    torch.set_num_threads(1)
    checkpoint = build_tiny_checkpoint(tmp_path / "tiny", "llava", seed=0)
    root = world["root"]
    code = estimation_main(["--checkpoint", str(checkpoint), "--smpl-model", str(root / "smpl"),
                            "--joint-regressor", str(root / "J_regressor_h36m.npy"), "--3dpw", str(root / "3dpw"),
                            "--h36m", str(root / "h36m_valid_protocol2.npz"), "--h36m-image-root", str(root / "h36m"),
                            "--out", str(tmp_path / "results.json")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Method | MPJPE | PA-MPJPE | MPJRE | MPJPE | PA-MPJPE |" in printed
    assert "| PoseGPT (paper) | 163.6 | 81.9 | 10.4 | 126.0 | 82.4 |" in printed
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert results["3dpw"]["count"] == 7 and results["h36m"]["count"] == 4
    row = next(line for line in printed.splitlines() if line.startswith("| tiny |"))
    cells = [float(c) for c in row.strip("|").split("|")[1:]]
    expected = [results["3dpw"]["mpjpe_mm"], results["3dpw"]["pa_mpjpe_mm"], results["3dpw"]["mpjre_rad100"],
                results["h36m"]["mpjpe_mm"], results["h36m"]["pa_mpjpe_mm"]]
    np.testing.assert_allclose(cells, expected, atol=0.051)
    assert summarize({"mpjpe_mm": np.array([1.0, 3.0])}) == {"mpjpe_mm": 2.0, "count": 2}
