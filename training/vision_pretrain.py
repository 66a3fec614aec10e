"""Stage 0 of the demo run: the CLIP vision tower learns the mannequin renders before the chat model sees them.

The paper starts from a pretrained CLIP tower and keeps it frozen; nothing pretrained fits the demo's 96-px
mannequin renders, so the demo tower started from random weights and learnt only through the language
model, from a third of the batches. Measured on the corpus' test renders, that reached 0.90 × the mean
pose's error in 6000 steps, while the same tower trained alone, mean-pooled into a small regressor, reaches
0.69 in 3000 steps (4.5 min on one core). With ``model.vision_pretrain_steps`` the demo run first trains
the tower this way and then starts the chat model from it; the regressor on top is thrown away, the tower is
kept. In a full run (8000 steps, ``optim.vision_lr`` 2e-4) the test renders reached 0.707 × the mean pose,
but the text side lost ground (the demo model card), so ``demo.yaml`` leaves it off for now.

    weights = ensure_vision_tower(path, corpus_dir, vision_config, steps=6000, seed=0)

The tower's weights are saved as safetensors with what made them (sizes, steps, seed, corpus and the
held-out error), and reused while those match.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smpl_rig import rotations
from smpl_rig.metrics import mpjre_deg
from smpl_rig.pose_mean import mean_pose

FORMAT = "posegpt-vision-pretrain"
# CLIP's pixel statistics, as the demo's image processor normalises (transformers' OPENAI_CLIP_MEAN / STD).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@dataclass(frozen=True)
class PretrainSettings:
    steps: int = 6000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    eval_every: int = 1000


class PooledPoseRegressor(torch.nn.Module):
    """The tower, its patch tokens averaged (the tokens LLaVA hands the projector: last layer, CLS dropped),
    and a two-layer MLP to 24 joints × 6D; the MLP starts at ``mean_rotmat``."""

    def __init__(self, vision_config, mean_rotmat: np.ndarray, width: int = 512):
        super().__init__()
        from transformers import CLIPVisionModel

        self.tower = CLIPVisionModel(vision_config)
        hidden = vision_config.hidden_size
        self.head = torch.nn.Sequential(torch.nn.LayerNorm(hidden), torch.nn.Linear(hidden, width),
                                        torch.nn.GELU(), torch.nn.Linear(width, 24 * 6))
        with torch.no_grad():
            self.head[-1].weight.mul_(0.1)
            self.head[-1].bias.copy_(torch.from_numpy(rotations.rotmat_to_d6(mean_rotmat).reshape(-1)).float())

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.tower(pixel_values=pixel_values).last_hidden_state[:, 1:]
        return rotations.d6_to_rotmat(self.head(tokens.mean(1)).reshape(-1, 24, 6))


def pixel_values(images_uint8: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 renders at the tower's size → CLIP-normalised (N, 3, H, W) float32, what
    ``clip_processor(size)`` makes of them (checked by the tests)."""
    x = (np.asarray(images_uint8, dtype=np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def load_renders(corpus_dir, split: str, image_size: int):
    """(images (N, H, W, 3) uint8, targets (N, 24, 3, 3) float32: joint 0 as the camera saw it)."""
    from PIL import Image

    from .corpus.build import load_corpus

    samples = [s for s in load_corpus(corpus_dir, split) if s.image_path is not None]
    if not samples:
        raise ValueError(f"{corpus_dir}: no rendered images in the {split} split")
    images = np.stack([np.asarray(Image.open(s.image_path).convert("RGB")) for s in samples])
    if images.shape[1:3] != (image_size, image_size):
        raise ValueError(f"{corpus_dir}: renders are {images.shape[1]}×{images.shape[2]} px, the tower takes "
                         f"{image_size}×{image_size}")
    return images, np.stack([s.image_target_rotmat() for s in samples]).astype(np.float32)


def _predict(model: PooledPoseRegressor, images: np.ndarray, batch: int = 100) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [model(pixel_values(images[i:i + batch])).numpy() for i in range(0, len(images), batch)]
    model.train()
    return np.concatenate(out)


def pretrain_vision_tower(corpus_dir, vision_config, settings: PretrainSettings = PretrainSettings(),
                          log=print) -> tuple[dict, dict]:
    """Train the tower on the train split's renders (L1 on rotation matrices, as the pose head's loss);
    returns (tower state dict, record with the validation split's MPJRE against the mean pose)."""
    from tqdm.auto import tqdm

    train_x, train_y = load_renders(corpus_dir, "train", vision_config.image_size)
    val_x, val_y = load_renders(corpus_dir, "validation", vision_config.image_size)
    mean = mean_pose(train_y)
    baseline = float(mpjre_deg(mean[None], val_y).mean())
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = PooledPoseRegressor(vision_config, mean)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=settings.steps,
                                                   pct_start=0.05)
    targets = torch.from_numpy(train_y)
    started = time.monotonic()
    history = []
    for step in tqdm(range(1, settings.steps + 1), desc="vision tower", mininterval=10):
        batch = rng.integers(0, len(train_x), settings.batch_size)
        loss = (model(pixel_values(train_x[batch])) - targets[batch]).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % settings.eval_every == 0 or step == settings.steps:
            error = float(mpjre_deg(_predict(model, val_x), val_y).mean())
            history.append({"step": step, "loss": round(loss.item(), 5), "val_mpjre_deg": round(error, 3)})
            log(f"vision tower step {step}: loss {loss.item():.4f}, validation MPJRE {error:.2f}° "
                f"({error / baseline:.3f} × the mean pose)")
    record = {"format": FORMAT, "settings": settings.__dict__, "vision_config": _config_key(vision_config),
              "corpus": str(corpus_dir), "train_images": len(train_x), "val_images": len(val_x),
              "val_mean_pose_mpjre_deg": round(baseline, 3), "history": history,
              "val_over_mean": round(history[-1]["val_mpjre_deg"] / baseline, 4),
              "seconds": round(time.monotonic() - started, 1)}
    return model.tower.state_dict(), record


def _config_key(vision_config) -> dict:
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")
    return {k: getattr(vision_config, k) for k in keys}


def ensure_vision_tower(path, corpus_dir, vision_config, settings: PretrainSettings = PretrainSettings(),
                        log=print) -> dict:
    """The pretrained tower's state dict from ``path`` (a .safetensors file with its record beside it as
    .json) when it was made with these sizes, settings and corpus; trained and saved there first otherwise."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    record_path = path.with_suffix(".json")
    wanted = {"settings": settings.__dict__, "vision_config": _config_key(vision_config), "corpus": str(corpus_dir)}
    if path.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("format") == FORMAT and all(record.get(k) == v for k, v in wanted.items()):
            log(f"vision tower: reusing {path} (validation {record['val_over_mean']} × the mean pose)")
            return load_file(str(path))
        log(f"vision tower: {path} was made with other settings; training it again")
    state, record = pretrain_vision_tower(corpus_dir, vision_config, settings, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return state
