"""A demo checkpoint on held-out sets, next to its baselines, measured in one run (issue 17's figures).

    .venv/bin/python bench/bench_demo.py [--checkpoint DIR] [--limit N] [--edit-limit N]

The checkpoint is ``--checkpoint``, else ``$POSEGPT_BENCH_CHECKPOINT``, else the Makefile's demo checkpoint
(checkpoints/posegpt-demo). Its ``benchmark.npz`` holds its corpus' TEST split (never trained on) and
the TRAIN poses the baselines need. Everything goes through ``PoseRuntime`` in direct mode, prompts as
typed in the add-on, a fresh session per prompt (two turns per session for the edit chats). Prints
``name: value`` lines (``demo/outside_eval.py`` defines them):

- explicit captions: ``demo_mpjre_deg``, ``mean_pose_mpjre_deg``, ``demo_over_mean`` (target ≤ 0.40),
  ``nearest_caption_mpjre_deg``;
- ``paraphrase_degradation``: error on the captions rewritten with everyday synonyms over the error on
  the originals, same poses (target ≤ 1.10);
- outside the corpus: the outside writer on the explicit test poses and the hand-typed prompts
  (``outside_writer_*``, ``hand_prompts_*``), pooled as ``outside_mpjre_over_mean`` (target ≤ 0.6);
- speculative prompts against the mean train pose of their situation: ``speculative_over_situation_mean``
  (target ≤ 1.10), and the nearest-caption baseline;
- images: ``demo_image_mpjre_over_mean`` (target ≤ 0.7);
- edit turns (``training.corpus.edits``; a "skipped: …" line while it is missing): ``edit_target_over_unchanged``
  (target ≤ 0.5) and ``edit_drift_deg`` (target ≤ 5).

Subsampling: by default every test prompt and image is used and the edit chats are 150 fixed test poses
(``--edit-limit``); ``--limit N`` caps each test set at a fixed N-sample subsample for a slower model.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_CHECKPOINT = REPO / "checkpoints" / "posegpt-demo"   # the Makefile's CHECKPOINT


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.environ.get("POSEGPT_BENCH_CHECKPOINT", str(DEFAULT_CHECKPOINT)))
    parser.add_argument("--limit", type=int, default=0, help="cap each test set at N samples (0: all)")
    parser.add_argument("--edit-limit", type=int, default=150, help="edit chats (test poses) to run")
    args = parser.parse_args(argv)

    import torch

    from backend.posegpt.runtime import PoseRuntime
    from demo.evaluation import NearestCaption
    from demo.model_card import BENCHMARK_FILE, load_benchmark
    from demo.outside_eval import figures, mpjre, pick
    from training.evaluate import rest_skeleton

    torch.set_num_threads(1)
    checkpoint = Path(args.checkpoint)
    started = time.perf_counter()
    bench = load_benchmark(checkpoint / BENCHMARK_FILE)
    runtime = PoseRuntime.from_checkpoint(checkpoint, device="cpu", dtype="float32")
    rest, _ = rest_skeleton()
    print(f"checkpoint: {checkpoint.name}")
    figures(runtime, bench, rest, limit=args.limit, edit_limit=args.edit_limit)

    nearest = NearestCaption([str(t) for t in bench["train_texts"]], bench["train_text_rotmat"])
    for name, prefix in (("explicit", ""), ("speculative", "speculative_")):
        idx = pick(len(bench[f"{name}_prompts"]), args.limit)
        prompts = [str(p) for p in bench[f"{name}_prompts"][idx]]
        print(f"{prefix}nearest_caption_mpjre_deg: {mpjre(nearest.predict(prompts), bench[f'{name}_rotmat'][idx]):.2f}")
    print(f"bench_demo_seconds: {time.perf_counter() - started:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
