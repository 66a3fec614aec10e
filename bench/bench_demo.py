"""The demo checkpoint on the pose corpus' test split, next to the two baselines, measured in one run.

    .venv/bin/python bench/bench_demo.py

Prints ``demo_mpjre_deg`` (the committed demo model through PoseRuntime, captions as typed in the add-on),
``mean_pose_mpjre_deg`` (the mean training pose) and ``nearest_caption_mpjre_deg`` (the pose of the training
caption sharing the most words) on the test split's explicit captions, then the same for speculative
prompts and the model's per-prompt latency. Data: checkpoints/posegpt-demo-tiny/benchmark.npz.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHECKPOINT = REPO / "checkpoints" / "posegpt-demo-tiny"


def main() -> int:
    import torch

    from backend.posegpt.runtime import PoseRuntime
    from demo.evaluation import compare, runtime_poses
    from demo.model_card import BENCHMARK_FILE, load_benchmark
    from training.evaluate import rest_skeleton

    torch.set_num_threads(1)
    bench = load_benchmark(CHECKPOINT / BENCHMARK_FILE)
    runtime = PoseRuntime.from_checkpoint(CHECKPOINT, device="cpu", dtype="float32")
    rest, _ = rest_skeleton()
    train_texts = [str(t) for t in bench["train_texts"]]
    for name, prefix in (("explicit", ""), ("speculative", "speculative_")):
        prompts = [str(p) for p in bench[f"{name}_prompts"]]
        started = time.perf_counter()
        pred = runtime_poses(runtime, prompts)
        per_prompt_ms = 1000 * (time.perf_counter() - started) / len(prompts)
        rows = compare(pred, prompts, bench[f"{name}_rotmat"], train_texts, bench["train_text_rotmat"], rest)
        print(f"{prefix}demo_mpjre_deg: {rows['model']['mpjre_deg']:.2f}")
        print(f"{prefix}mean_pose_mpjre_deg: {rows['mean_pose']['mpjre_deg']:.2f}")
        print(f"{prefix}nearest_caption_mpjre_deg: {rows['nearest_caption']['mpjre_deg']:.2f}")
        print(f"{prefix}demo_mpjpe_mm: {rows['model']['mpjpe_mm']:.1f}")
        print(f"{prefix}demo_batched_ms_per_prompt: {per_prompt_ms:.1f}")
        print(f"{prefix}test_prompts: {len(prompts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
