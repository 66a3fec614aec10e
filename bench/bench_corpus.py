"""Pose-corpus throughput and caption quality, measured side by side in one run.

    .venv/bin/python bench/bench_corpus.py

Prints `name: value` lines: poses generated per second, captions per second, the share of caption facts
that agree with the generator's label, render milliseconds per image (capsule figure and, when installed,
the mannequin mesh), the projected time to build a 20 000-sample corpus without images, and how much of a
pose the complete (first) caption determines: the MPJRE of a per-body-part lookup (mean training pose of
each part's stated facts) against the mean-pose baseline, on held-out poses.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import collections

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_corpus_captioner import fact_agrees  # noqa: E402  (the tests' label rules, one definition)

from smpl_rig import rotations as rot  # noqa: E402
from smpl_rig.metrics import mpjre_deg  # noqa: E402
from smpl_rig.skeleton import JOINT_NAMES  # noqa: E402
from training.corpus import captioner, render  # noqa: E402
from training.corpus.generator import PoseGenerator  # noqa: E402

N_POSES = 600
N_RENDERS = 30
N_ORACLE = 2000          # poses for the caption-information oracle (90 % lookup table, 10 % held out)
ARM_PARTS, LEG_PARTS = ("collar", "shoulder", "elbow", "wrist", "hand"), ("hip", "knee", "ankle", "foot")
PART_JOINTS = {
    "arms": [j for j, n in enumerate(JOINT_NAMES) if n.split("_")[-1] in ARM_PARTS],
    "legs": [0] + [j for j, n in enumerate(JOINT_NAMES) if n.split("_")[-1] in LEG_PARTS],
    "torso": [3, 6, 9], "head": [12, 15],
}


def part_oracle_ratio(poses, first_captions) -> tuple[float, float]:
    """MPJRE (degrees) of predicting each body part by the mean training pose of the same stated facts for
    that part, and of the mean pose, on the last 10 % of the poses (text targets: canonical joint 0)."""
    targets = np.stack([p.rotmat for p in poses])
    targets[:, 0] = np.stack([p.global_orient_camera for p in poses])
    n_train = int(0.9 * len(poses))
    mean = rot.orthonormalize_rotmat(targets[:n_train].mean(0))
    pred = np.broadcast_to(mean, targets[n_train:].shape).copy()
    for part, joints in PART_JOINTS.items():
        keys = [tuple(sorted((f.key, str(f.side)) for f in cap.facts if f.part == part)) for cap in first_captions]
        groups = collections.defaultdict(list)
        for k, t in zip(keys[:n_train], targets[:n_train]):
            groups[k].append(t[joints])
        for i, k in enumerate(keys[n_train:]):
            if k in groups:
                pred[i][joints] = rot.orthonormalize_rotmat(np.mean(groups[k], 0))
    held = targets[n_train:]
    return float(mpjre_deg(pred, held).mean()), float(mpjre_deg(np.broadcast_to(mean, held.shape), held).mean())


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

    more = poses + [gen.sample() for _ in range(N_ORACLE - N_POSES)]
    first = [cs[0] for cs in caps] + [captioner.captions(p.rotmat, rng, 1)[0] for p in more[N_POSES:]]
    oracle, mean_pose = part_oracle_ratio(more, first)
    print(f"corpus_part_oracle_mpjre_deg: {oracle:.2f}")
    print(f"corpus_mean_pose_mpjre_deg: {mean_pose:.2f}")
    print(f"corpus_part_oracle_over_mean_pose: {oracle / mean_pose:.3f}")


if __name__ == "__main__":
    main()
