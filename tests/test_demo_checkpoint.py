"""The committed demo checkpoint (checkpoints/posegpt-demo-tiny) really has the metrics its model card states.

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
CHECKPOINT = REPO / "checkpoints" / "posegpt-demo-tiny"
TOLERANCE_DEG = 0.05      # fp32 CPU reruns agree far closer; this only absorbs BLAS summation order
TOLERANCE_MM = 0.5


@pytest.fixture(scope="module")
def card_metrics():
    return json.loads((CHECKPOINT / "metrics.json").read_text())["results"]


@pytest.fixture(scope="module")
def measured():
    import torch

    from backend.posegpt.runtime import PoseRuntime
    from demo.model_card import BENCHMARK_FILE, evaluate, load_benchmark
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


def test_checkpoint_is_small_and_self_described():
    size = sum(p.stat().st_size for p in CHECKPOINT.rglob("*") if p.is_file())
    assert size <= 20 * 2 ** 20, f"{size / 2 ** 20:.1f} MB > 20 MB"
    manifest = json.loads((CHECKPOINT / "manifest.json").read_text())
    assert manifest["backbone_class"] == "LlavaForConditionalGeneration"
    assert manifest["weights"] == "merged" and manifest["pose_token"] == "<POSE>"
    assert (CHECKPOINT / "MODEL_CARD.md").is_file()


@pytest.mark.parametrize("name", ["explicit_typed", "speculative_typed", "images"])
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
