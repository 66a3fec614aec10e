"""The committed demo checkpoint (checkpoints/posegpt-demo: an adapter on the pinned all-MiniLM-L6-v2 package)
really has the metrics its model card states, loaded from its adapter and the installed base.

The model runs through ``PoseRuntime`` (what the backend serves) on the held-out TEST split of the pose
corpus stored next to it (benchmark.npz: explicit captions, speculative prompts, renders); its errors and
the two baselines' must equal metrics.json, and metrics.json must be what MODEL_CARD.md prints.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "posegpt-demo"
TOLERANCE_DEG = 0.05      # fp32 CPU reruns agree far closer; this only absorbs BLAS summation order
TOLERANCE_MM = 0.5


@pytest.fixture(scope="module")
def card_metrics():
    return json.loads((CHECKPOINT / "metrics.json").read_text())["results"]


@pytest.fixture(scope="module")
def measured():
    import torch

    from backend.posegpt.runtime import PoseRuntime
    from demo.evaluation import evaluate
    from demo.model_card import BENCHMARK_FILE, load_benchmark
    from training.evaluate import rest_skeleton

    threads = torch.get_num_threads()
    torch.set_num_threads(1)           # tiny matrices: one thread is fastest on a shared machine
    try:
        runtime = PoseRuntime.from_checkpoint(CHECKPOINT, device="cpu", dtype="float32")
        bench = load_benchmark(CHECKPOINT / BENCHMARK_FILE)
        rest, _ = rest_skeleton()
        yield evaluate(runtime, bench, rest, styles=("typed",))
    finally:
        torch.set_num_threads(threads)


def test_checkpoint_holds_only_trained_weights_and_names_its_base():
    sizes = {p.name: p.stat().st_size for p in CHECKPOINT.iterdir() if p.is_file()}
    assert max(sizes.values()) <= 25 * 2 ** 20, sizes
    manifest = json.loads((CHECKPOINT / "manifest.json").read_text())
    assert manifest["backbone_class"] == "LlavaForConditionalGeneration" and manifest["pose_token"] == "<POSE>"
    assert manifest["weights"] == "adapter" and "model.safetensors" not in sizes
    from backend.posegpt.package_base import MINILM_L6
    base = manifest["base_package"]
    assert (base["distribution"], base["version"], base["sha256"]) == (
        MINILM_L6["distribution"], MINILM_L6["version"], MINILM_L6["sha256"])
    card = (CHECKPOINT / "MODEL_CARD.md").read_text()
    assert base["sha256"] in card and f"{base['distribution']}=={base['version']}" in card


@pytest.fixture(scope="module")
def held_out():
    """Issue 17's figures (demo/outside_eval.py), measured again through the runtime on the full sets."""
    import torch

    from backend.posegpt.runtime import PoseRuntime
    from demo.model_card import BENCHMARK_FILE, load_benchmark
    from demo.outside_eval import figures
    from training.evaluate import rest_skeleton

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runtime = PoseRuntime.from_checkpoint(CHECKPOINT, device="cpu", dtype="float32")
        yield figures(runtime, load_benchmark(CHECKPOINT / BENCHMARK_FILE), rest_skeleton()[0], log=lambda line: None)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_held_out_figures_match_the_model_card(held_out):
    stated = json.loads((CHECKPOINT / "metrics.json").read_text())["held_out"]
    card = (CHECKPOINT / "MODEL_CARD.md").read_text()
    from demo.model_card import HELD_OUT_TARGETS
    for name, value in stated.items():
        if isinstance(value, str) or name.endswith("_ms_per_prompt"):    # words, or a timing
            continue
        assert held_out[name] == pytest.approx(value, abs=0.01 if name.endswith("_deg") else 1e-3), name
    for name, _, _ in HELD_OUT_TARGETS:
        assert f"| {stated[name]:.3f} |" in card, name


@pytest.mark.parametrize("name", ["explicit_typed", "speculative_typed", "images"])
@pytest.mark.slow
def test_test_split_metrics_match_the_model_card(measured, card_metrics, name):
    for predictor, metrics in measured[name].items():
        stated = card_metrics[name][predictor]
        assert metrics["count"] == stated["count"]
        assert metrics["mpjre_deg"] == pytest.approx(stated["mpjre_deg"], abs=TOLERANCE_DEG), predictor
        assert metrics["mpjpe_mm"] == pytest.approx(stated["mpjpe_mm"], abs=TOLERANCE_MM), predictor
        assert metrics["pa_mpjpe_mm"] == pytest.approx(stated["pa_mpjpe_mm"], abs=TOLERANCE_MM), predictor


def test_model_beats_the_mean_pose_on_every_test_set(measured):
    for name, rows in measured.items():
        assert rows["model"]["mpjre_deg"] < rows["mean_pose"]["mpjre_deg"], name


def test_model_card_prints_the_stated_metrics(card_metrics):
    card = (CHECKPOINT / "MODEL_CARD.md").read_text()
    for name, rows in card_metrics.items():
        for predictor, metrics in rows.items():
            row = f"| {predictor.replace('_', ' ')} | {metrics['mpjre_deg']:.2f} | {metrics['mpjpe_mm']:.1f} |"
            assert row in card, f"{name}: the card lacks {row!r}"
    assert re.search(r"test split", card, re.IGNORECASE)


@pytest.mark.slow
def test_benchmark_holds_only_test_split_targets_and_real_rotations():
    from demo.model_card import load_benchmark
    from smpl_rig import rotations

    bench = load_benchmark(CHECKPOINT / "benchmark.npz")
    for key in ("explicit_rotmat", "speculative_rotmat", "image_rotmat"):
        r = bench[key]
        np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    # Held out by pose: no test pose is a training pose. Short captions ("The person is squatting.") may
    # repeat word for word across poses, which is why the nearest-caption baseline is a fair rival.
    train_poses = bench["train_rotmat"].reshape(len(bench["train_rotmat"]), -1)
    for pose in bench["explicit_rotmat"].reshape(len(bench["explicit_rotmat"]), -1):
        assert np.abs(train_poses - pose).max(axis=1).min() > 1e-3
    train = {str(t) for t in bench["train_texts"]}
    held_out = [str(p) for p in bench["explicit_prompts"]]
    assert sum(p in train for p in held_out) <= 0.1 * len(held_out)
    # Upright, facing the camera is diag(1, -1, -1): text targets' global orientation sits near it.
    angles = np.degrees(rotations.geodesic_angle(bench["explicit_rotmat"][:, 0], np.diag([1.0, -1.0, -1.0])))
    assert np.median(angles) < 30.0


# --- the card's figures against an independent computation ------------------------------------------------
# Everything below is written here from the conventions page, with numpy only: it shares no code with
# demo.evaluation / demo.model_card / training.evaluate / smpl_rig.metrics, which wrote the card.

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def _rodrigues(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle → (..., 3, 3)."""
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    axis = rotvec / np.maximum(angle, 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*rotvec.shape[:-1], 3, 3)
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def _joints(rotmat: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """(N, 24, 3, 3) local rotations on the rest skeleton (24, 3) → (N, 24, 3) joint positions."""
    world = [rotmat[:, 0]]
    pos = [np.broadcast_to(rest[0], (len(rotmat), 3))]
    for j in range(1, 24):
        p = SMPL_PARENTS[j]
        world.append(world[p] @ rotmat[:, j])
        pos.append(pos[p] + np.einsum("nab,b->na", world[p], rest[j] - rest[p]))
    return np.stack(pos, 1)


def _errors(pred: np.ndarray, true: np.ndarray, rest: np.ndarray) -> dict[str, float]:
    cos = (np.einsum("njab,njab->nj", pred, true) - 1) / 2          # trace(P Tᵀ) = Σ P∘T
    mpjre = np.degrees(np.arccos(np.clip(cos, -1, 1))).mean()
    jp, jt = _joints(pred, rest), _joints(true, rest)
    jp, jt = jp - jp[:, :1], jt - jt[:, :1]
    mpjpe = 1000 * np.linalg.norm(jp - jt, axis=-1).mean()
    aligned = []
    for p, t in zip(jp, jt):                                         # similarity Procrustes, p onto t
        p0, t0 = p - p.mean(0), t - t.mean(0)
        u, s, vt = np.linalg.svd(p0.T @ t0)
        d = np.sign(np.linalg.det(u @ vt))
        s[-1] *= d
        u[:, -1] *= d
        r = u @ vt
        scale = s.sum() / (p0 ** 2).sum()
        aligned.append(np.linalg.norm(scale * p0 @ r - t0, axis=-1).mean())
    return {"mpjre_deg": float(mpjre), "mpjpe_mm": float(mpjpe), "pa_mpjpe_mm": float(1000 * np.mean(aligned))}


def _chordal_mean(rotmats: np.ndarray) -> np.ndarray:
    """Per joint: the mean matrix, its first two columns made orthonormal (Gram–Schmidt), the third their cross."""
    m = rotmats.mean(0)
    a = m[..., :, 0] / np.linalg.norm(m[..., :, 0], axis=-1, keepdims=True)
    b = m[..., :, 1] - (a * m[..., :, 1]).sum(-1, keepdims=True) * a
    b /= np.linalg.norm(b, axis=-1, keepdims=True)
    return np.stack([a, b, np.cross(a, b)], -1)


@pytest.fixture(scope="module")
def independent():
    """The card's model and mean-pose rows recomputed: predictions straight from ``PoseRuntime.chat_batch``
    (direct mode, a fresh session per prompt, as the backend serves), targets straight from benchmark.npz."""
    import torch
    from PIL import Image

    from backend.posegpt.runtime import PoseRuntime
    from training.chat_turns import IMAGE_QUESTIONS

    with np.load(CHECKPOINT / "benchmark.npz", allow_pickle=False) as data:
        bench = {k: data[k] for k in data.files}
    with np.load(REPO / "smpl_rig" / "data" / "mannequin.npz", allow_pickle=False) as data:
        rest = data["rest_joints"].astype(np.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runtime = PoseRuntime.from_checkpoint(CHECKPOINT, device="cpu", dtype="float32")

        def predict(prompts, images=None):
            out = []
            for start in range(0, len(prompts), 16):
                requests = [{"session_id": f"independent-{start + k}", "prompt": str(p), "mode": "direct",
                             "images": [images[start + k]] if images is not None else []}
                            for k, p in enumerate(prompts[start:start + 16])]
                for request, result in zip(requests, runtime.chat_batch(requests)):
                    out.append(result.poses[0].rotmat)
                    runtime.close(request["session_id"])
            return np.asarray(out, dtype=np.float64)

        train_mean = _chordal_mean(_rodrigues(bench["train_rotvec"].astype(np.float64))[bench["train_text_pose"]])
        rows = {}
        for name in ("explicit", "speculative"):
            true = _rodrigues(bench[f"{name}_rotvec"].astype(np.float64))
            rows[f"{name}_typed"] = {"model": _errors(predict(bench[f"{name}_prompts"]), true, rest),
                                     "mean_pose": _errors(np.broadcast_to(train_mean, true.shape), true, rest)}
        true = _rodrigues(bench["image_rotvec"].astype(np.float64))
        pixels = [Image.fromarray(p) for p in bench["image_pixels"]]
        image_mean = np.broadcast_to(bench["train_image_mean_rotmat"].astype(np.float64), true.shape)
        rows["images"] = {"model": _errors(predict([IMAGE_QUESTIONS[0]] * len(pixels), pixels), true, rest),
                          "mean_pose": _errors(image_mean, true, rest)}
        return rows
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["explicit_typed", "speculative_typed", "images"])
@pytest.mark.slow
def test_card_figures_match_an_independent_computation(independent, card_metrics, name):
    for predictor, computed in independent[name].items():
        stated = card_metrics[name][predictor]
        assert computed["mpjre_deg"] == pytest.approx(stated["mpjre_deg"], abs=TOLERANCE_DEG), predictor
        assert computed["mpjpe_mm"] == pytest.approx(stated["mpjpe_mm"], abs=TOLERANCE_MM), predictor
        assert computed["pa_mpjpe_mm"] == pytest.approx(stated["pa_mpjpe_mm"], abs=TOLERANCE_MM), predictor


def test_independent_metrics_are_right_on_known_cases():
    rest = np.random.default_rng(0).normal(size=(24, 3)) * 0.1
    eye = np.broadcast_to(np.eye(3), (1, 24, 3, 3)).copy()
    turned = eye.copy()
    turned[0, 5] = _rodrigues(np.array([0.0, 0.0, np.radians(30.0)]))
    errors = _errors(turned, eye, rest)
    assert errors["mpjre_deg"] == pytest.approx(30.0 / 24)
    spun = eye.copy()
    spun[0, 0] = _rodrigues(np.array([0.3, -1.0, 0.2]))             # a rigid turn: Procrustes removes it all
    assert _errors(spun, eye, rest)["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-9)
