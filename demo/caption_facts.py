"""How much of a test pose its caption states: the error of a predictor that knows exactly what it says.

    python -m demo.caption_facts --corpus runs/demo-corpus

A corpus caption names one to four of its pose's facts ("arms up", "kneeling on the left knee", "head turned
to the right"), chosen by the captioner; the joints it leaves out are free. The *caption facts* predictor
reads the captioner's record of which facts a test caption states and answers the mean pose
(``smpl_rig.pose_mean``) of the reference poses for which all of those facts hold
(``training.corpus.captioner.extract_facts``), the overall mean where none does. The reference poses are
the training split's plus ``extra`` more from the corpus' pose generator (its own seed): a first caption
states up to four facts, which only a handful of the 5,400 training poses share, and the mean of a handful
is itself off by its spread. It knows the caption's meaning exactly but not the
degree words ("slightly", "deeply", "90 degrees"); a model that reads captions well can beat it only
through those. The model card prints it next to the model on the benchmark's explicit captions (each test
sample's first caption, as in ``benchmark.npz``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from smpl_rig import rotations
from smpl_rig.metrics import mpjre_deg
from smpl_rig.pose_mean import mean_pose


def _fact_keys(facts) -> frozenset:
    """Facts as the captioner records them per caption ([key, side] pairs) or as ``Fact`` objects."""
    return frozenset((f.key, f.side) if hasattr(f, "key") else (f[0], f[1]) for f in facts)


def facts_oracle(corpus_dir, extra: int = 0, seed: int = 1_000_003) -> dict:
    """{"prompts", "pred_rotmat", "true_rotmat", "mean_rotmat", "matches"}: for each explicit test sample's
    first caption, the mean reference pose sharing the facts it states (text targets: joint 0 in the camera
    frame)."""
    from tqdm.auto import tqdm

    from training.corpus.build import load_corpus
    from training.corpus.captioner import extract_facts, measure
    from training.corpus.generator import PoseGenerator

    corpus_dir = Path(corpus_dir)
    stated = {}
    with open(corpus_dir / "captions.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["split"] == "test" and rec["kind"] == "explicit":
                stated[rec["index"]] = _fact_keys(rec["facts"][0])
    train = [s for s in load_corpus(corpus_dir, "train") if s.kind == "explicit"]
    holds = [_fact_keys(extract_facts(measure(rotations.rotvec_to_rotmat(s.rotvec.astype(np.float64)))))
             for s in train]
    targets = [s.text_target_rotmat().astype(np.float64) for s in train]
    generator = PoseGenerator(seed)
    for _ in tqdm(range(extra), desc="reference poses", mininterval=10, disable=not extra):
        pose = generator.sample()
        holds.append(_fact_keys(extract_facts(measure(pose.rotmat))))
        target = pose.rotmat.astype(np.float64).copy()
        target[0] = pose.global_orient_camera
        targets.append(target)
    targets = np.stack(targets)
    overall = mean_pose(targets[:len(train)])
    test = [s for s in load_corpus(corpus_dir, "test") if s.kind == "explicit"]
    preds, matches = [], []
    for s in test:
        rows = [k for k, facts in enumerate(holds) if stated[s.index] <= facts]
        preds.append(mean_pose(targets[rows]) if rows else overall)
        matches.append(len(rows))
    return {"prompts": [s.explicit_captions[0] for s in test], "pred_rotmat": np.stack(preds), "references": len(holds),
            "true_rotmat": np.stack([s.text_target_rotmat() for s in test]).astype(np.float64),
            "mean_rotmat": overall, "matches": np.array(matches)}


def summary(oracle: dict) -> dict:
    error = float(mpjre_deg(oracle["pred_rotmat"], oracle["true_rotmat"]).mean())
    mean = float(mpjre_deg(oracle["mean_rotmat"][None], oracle["true_rotmat"]).mean())
    return {"explicit_facts_oracle_mpjre_deg": round(error, 3), "explicit_mean_pose_mpjre_deg": round(mean, 3),
            "explicit_facts_oracle_over_mean": round(error / mean, 4),
            "explicit_facts_oracle_median_matches": int(np.median(oracle["matches"])),
            "reference_poses": oracle["references"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="runs/demo-corpus")
    parser.add_argument("--extra", type=int, default=40000, help="generated reference poses besides the train split")
    args = parser.parse_args(argv)
    for key, value in summary(facts_oracle(args.corpus, args.extra)).items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
