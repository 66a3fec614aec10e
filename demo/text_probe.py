"""What the demo's frozen text encoder already knows about poses: its states, pooled, fitted to the pose.

    python -m demo.text_probe --corpus runs/demo-corpus [--captions 12000]

all-MiniLM-L6-v2 from the pinned package (``backend.posegpt.package_base``) stays frozen; each training
caption is read once, run causally (as the demo's decoder runs it) or bidirectionally (as it was
pretrained), and its last-layer states are averaged over the tokens (``mean``) or its last token's state is
taken (``last``, what a head reading `<POSE>` gets). A two-layer MLP (1024 wide) learns the pose from
each (L1 on rotation matrices, as the pose head's loss). Prints MPJRE on each explicit test sample's first
caption (the benchmark's prompts) over the mean pose's: ``text_probe_<attention>_<pool>_over_mean``.
A probe far below the demo checkpoint says its fine-tune loses what the encoder had.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from smpl_rig import rotations
from smpl_rig.metrics import mpjre_deg
from smpl_rig.pose_mean import mean_pose


def frozen_encoder(causal: bool):
    from transformers import BertModel

    from backend.posegpt.package_base import MINILM_L6, base_tokenizer, read_package_base, text_config_for

    base = read_package_base(MINILM_L6)
    tokenizer = base_tokenizer(base, [])
    config = text_config_for(base, len(tokenizer))      # the demo decoder's config; as pretrained when not causal
    config.is_decoder = causal
    model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict({k: v for k, v in base.state_dict.items()
                           if not k.startswith("pooler.") and not k.endswith("position_ids")}, strict=False)
    return model.eval(), tokenizer


def features(model, tokenizer, texts: list[str], batch: int = 64) -> dict[str, torch.Tensor]:
    """{"mean": (N, H) token-averaged last-layer states, "last": (N, H) the last token's ([SEP])}."""
    out = {"mean": [], "last": []}
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i:i + batch], padding=True, return_tensors="pt")
            states = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"][..., None].float()
            out["mean"].append((states * mask).sum(1) / mask.sum(1))
            out["last"].append(states[torch.arange(len(states)), enc["attention_mask"].sum(1) - 1])
    return {k: torch.cat(v) for k, v in out.items()}


def fit_and_score(train_x, train_y, test_x, test_y, mean, steps: int = 4000, seed: int = 0) -> float:
    """MPJRE (deg) on the test set of a two-layer MLP fitted on (train_x, train_y)."""
    torch.manual_seed(seed)
    width = train_x.shape[1]
    head = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, 1024), torch.nn.GELU(),
                               torch.nn.Linear(1024, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 144))
    with torch.no_grad():
        head[-1].bias.copy_(torch.from_numpy(rotations.rotmat_to_d6(mean).reshape(-1)).float())
        head[-1].weight.mul_(0.1)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps)
    targets = torch.from_numpy(train_y).float()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, len(train_x), (128,), generator=generator)
        loss = (rotations.d6_to_rotmat(head(train_x[batch]).reshape(-1, 24, 6)) - targets[batch]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        pred = rotations.d6_to_rotmat(head(test_x).reshape(-1, 24, 6)).numpy()
    return float(mpjre_deg(pred, test_y).mean())


def main(argv=None) -> int:
    from training.corpus.build import load_corpus

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="runs/demo-corpus")
    parser.add_argument("--captions", type=int, default=12000, help="training captions drawn (seed 0)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train = [s for s in load_corpus(args.corpus, "train") if s.kind == "explicit"]
    test = [s for s in load_corpus(args.corpus, "test") if s.kind == "explicit"]
    pairs = [(c, k) for k, s in enumerate(train) for c in s.captions]
    pick = np.random.default_rng(0).choice(len(pairs), min(args.captions, len(pairs)), replace=False)
    train_texts = [pairs[i][0] for i in pick]
    train_y = np.stack([train[pairs[i][1]].text_target_rotmat() for i in pick]).astype(np.float64)
    test_texts = [s.explicit_captions[0] for s in test]
    test_y = np.stack([s.text_target_rotmat() for s in test]).astype(np.float64)
    mean = mean_pose(train_y)
    baseline = float(mpjre_deg(mean[None], test_y).mean())
    for attention in ("causal", "bidirectional"):
        model, tokenizer = frozen_encoder(causal=attention == "causal")
        train_f, test_f = features(model, tokenizer, train_texts), features(model, tokenizer, test_texts)
        for pool in ("mean", "last"):
            error = fit_and_score(train_f[pool], train_y, test_f[pool], test_y, mean)
            print(f"text_probe_{attention}_{pool}_over_mean: {error / baseline:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
