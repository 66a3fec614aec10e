"""Pose-corpus throughput and caption quality, measured side by side in one run.

    .venv/bin/python bench/bench_corpus.py

Prints `name: value` lines: poses generated per second, captions per second, the share of caption facts
that agree with the generator's label, render milliseconds per image (capsule figure and, when installed,
the mannequin mesh), and the projected time to build a 20 000-sample corpus without images.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_corpus_captioner import fact_agrees  # noqa: E402  (the tests' label rules, one definition)

from training.corpus import captioner, render  # noqa: E402
from training.corpus.generator import PoseGenerator  # noqa: E402

N_POSES = 600
N_RENDERS = 30


def main() -> None:
    gen = PoseGenerator(0)
    t = time.perf_counter()
    poses = [gen.sample() for _ in range(N_POSES)]
    gen_s = time.perf_counter() - t

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    caps = [captioner.captions(p.rotmat, rng, 3) for p in poses]
    cap_s = time.perf_counter() - t
    facts = [(f, p.label) for p, cs in zip(poses, caps) for f in cs[0].facts]
    agreement = np.mean([fact_agrees(f, label) for f, label in facts])
    per_caption = np.mean([all(fact_agrees(f, p.label) for f in cs[0].facts) for p, cs in zip(poses, caps)])

    views = [render.random_view(rng) for _ in range(N_RENDERS)]
    t = time.perf_counter()
    for p, (yaw, pitch) in zip(poses, views):
        render.render_pose(p.rotmat, yaw, pitch, size=96)
    capsule_ms = (time.perf_counter() - t) / N_RENDERS * 1e3

    print(f"corpus_poses_per_s: {N_POSES / gen_s:.1f}")
    print(f"corpus_captions_per_s: {3 * N_POSES / cap_s:.1f}")
    print(f"corpus_caption_fact_agreement: {agreement:.4f}")
    print(f"corpus_caption_all_facts_agree: {per_caption:.4f}")
    print(f"corpus_render_capsules_ms: {capsule_ms:.1f}")
    body = render.load_default_body()
    if body is not None:
        t = time.perf_counter()
        for p, (yaw, pitch) in zip(poses, views):
            render.render_pose(p.rotmat, yaw, pitch, size=96, body=body)
        print(f"corpus_render_mannequin_ms: {(time.perf_counter() - t) / N_RENDERS * 1e3:.1f}")
    per_sample = gen_s / N_POSES + cap_s / N_POSES
    print(f"corpus_build_20000_no_images_s: {20000 * per_sample:.0f}")


if __name__ == "__main__":
    main()
