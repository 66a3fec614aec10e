"""A small text–pose retrieval model for the text→pose recall@K metric (PoseScript's protocol: a retrieval
model trained on REAL pairs ranks GENERATED poses).

Text encoder: bag of words (lower-cased word vocabulary from the training captions, mean of embeddings)
→ MLP. Pose encoder: MLP over the 24 × 6D pose. Both end L2-normalised in a shared space; trained with the
symmetric InfoNCE loss and a learnable temperature. Small on purpose: it trains on CPU in minutes on
PoseScript and in a second on the test fixtures.

    python -m training.retrieval --posescript-dir PS --amass-dir AMASS --out runs/retrieval
"""
from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from smpl_rig.rotations import rotmat_to_d6

WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


class TextPoseRetrieval(nn.Module):
    """vocab: list of words (index 0 is reserved for unknown words); dim: joint embedding size."""

    def __init__(self, vocab: list[str], dim: int = 128, hidden: int = 256):
        super().__init__()
        self.vocab = list(vocab)
        self.index = {w: i + 1 for i, w in enumerate(self.vocab)}
        self.dim, self.hidden = dim, hidden
        self.word_embedding = nn.EmbeddingBag(len(self.vocab) + 1, hidden, mode="mean")
        self.text_mlp = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.pose_mlp = nn.Sequential(nn.Linear(24 * 6, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                      nn.Linear(hidden, dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """list of N captions → (N, dim) unit vectors."""
        ids, offsets = [], []
        for text in texts:
            offsets.append(len(ids))
            ids.extend(self.index.get(w, 0) for w in words(text)) if words(text) else ids.append(0)
        device = self.log_scale.device
        bag = self.word_embedding(torch.tensor(ids, device=device), torch.tensor(offsets, device=device))
        return F.normalize(self.text_mlp(bag), dim=-1)

    def encode_pose(self, rotmats) -> torch.Tensor:
        """(N, 24, 3, 3) rotations → (N, dim) unit vectors."""
        rotmats = torch.as_tensor(rotmats, dtype=torch.float32, device=self.log_scale.device)
        if rotmats.shape[-3:] != (24, 3, 3):
            raise ValueError(f"expected poses (N, 24, 3, 3), got {tuple(rotmats.shape)}")
        return F.normalize(self.pose_mlp(rotmat_to_d6(rotmats).reshape(len(rotmats), -1)), dim=-1)

    def loss(self, texts: list[str], rotmats) -> torch.Tensor:
        """Symmetric InfoNCE over a batch of matching pairs."""
        logits = self.log_scale.exp() * self.encode_text(texts) @ self.encode_pose(rotmats).T
        target = torch.arange(len(texts), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / "retrieval.safetensors"))
        (folder / "retrieval.json").write_text(json.dumps({"vocab": self.vocab, "dim": self.dim, "hidden": self.hidden}))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "TextPoseRetrieval":
        folder = Path(folder)
        meta = json.loads((folder / "retrieval.json").read_text())
        model = cls(meta["vocab"], dim=meta["dim"], hidden=meta["hidden"])
        model.load_state_dict(load_file(str(folder / "retrieval.safetensors")))
        return model.eval()


def build_vocab(texts: list[str], min_count: int = 2, max_size: int = 20000) -> list[str]:
    counts = Counter(w for t in texts for w in words(t))
    return [w for w, c in counts.most_common(max_size) if c >= min_count]


def train_retrieval(texts: list[str], rotmats, *, epochs: int = 30, batch_size: int = 128, lr: float = 1e-3,
                    dim: int = 128, hidden: int = 256, min_count: int = 1, seed: int = 0) -> TextPoseRetrieval:
    """Fit a retrieval model on matching (caption, pose (24, 3, 3)) pairs."""
    if len(texts) != len(rotmats) or len(texts) < 2:
        raise ValueError("need at least two matching (text, pose) pairs")
    torch.manual_seed(seed)
    model = TextPoseRetrieval(build_vocab(texts, min_count), dim=dim, hidden=hidden)
    poses = torch.as_tensor(np.asarray(rotmats), dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(texts), generator=generator)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:
                continue
            loss = model.loss([texts[i] for i in idx.tolist()], poses[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def recall_at_k(model: TextPoseRetrieval, texts: list[str], rotmats, ks=(1, 5, 10)) -> dict[str, float]:
    """Text i must retrieve pose i (and pose i text i) among all N: recall@K in percent, both directions."""
    sims = model.encode_text(texts) @ model.encode_pose(rotmats).T            # (N, N)
    truth = torch.arange(len(texts))
    rank_t2p = (sims > sims[truth, truth][:, None]).sum(1)                      # poses scored above the true one
    rank_p2t = (sims.T > sims[truth, truth][:, None]).sum(1)
    out = {}
    for k in ks:
        out[f"text_to_pose_R@{k}"] = float((rank_t2p < k).float().mean() * 100)
        out[f"pose_to_text_R@{k}"] = float((rank_p2t < k).float().mean() * 100)
    return out


def main(argv=None) -> int:
    from .data.posescript import PoseScript

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posescript-dir", required=True)
    parser.add_argument("--amass-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    train = PoseScript(args.posescript_dir, args.amass_dir, "train")
    records = [train[i] for i in range(len(train))]
    model = train_retrieval([r.caption for r in records], np.stack([r.pose_rotmat for r in records]),
                            epochs=args.epochs, min_count=2)
    val = PoseScript(args.posescript_dir, args.amass_dir, "val")
    val_records = [val[i] for i in range(len(val))]
    if len(val_records) >= 2:
        print(json.dumps(recall_at_k(model, [r.caption for r in val_records],
                                     np.stack([r.pose_rotmat for r in val_records])), indent=1))
    model.save(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
