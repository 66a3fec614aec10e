"""Model setup for training: the starting PoseGPT (a backend checkpoint, a tiny random model or a base
builder), peft's LoRA on the language model only, what is frozen and what trains, a fresh pose head.

    model, tokenizer, processor, manifest = build_model(cfg, precision="bf16")
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .config import ExperimentConfig

FROZEN_PARTS = re.compile(r"vision_tower|visual|vision_model|multi_modal_projector|mm_projector")


def _lora_target_regex(targets: list[str]) -> str:
    """LoRA only in the language model: the same projection names exist in CLIP's and Qwen's vision towers,
    which stay frozen (paper), as does the multimodal projector."""
    names = "|".join(sorted(set(targets)))
    return rf"^(?!.*(?:vision_tower|visual|vision_model|multi_modal_projector|mm_projector)).*\.(?:{names})$"


def _backbone_dtype(cfg: ExperimentConfig, precision: str) -> torch.dtype:
    # Frozen weights are stored in the compute precision; trainable ones are kept in float32 (below).
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def build_model(cfg: ExperimentConfig, precision: str = "no", device: str = "cpu"):
    """(PoseGPT with a peft backbone, tokenizer, image processor, manifest) ready to train."""
    from peft import LoraConfig, get_peft_model

    from backend.posegpt.checkpoint import load_checkpoint
    from backend.posegpt.model import unwrap_backbone
    from backend.posegpt.tiny import build_tiny_model

    if cfg.model.checkpoint:
        model, tokenizer, processor, manifest = load_checkpoint(
            cfg.model.checkpoint, device=device, dtype=_backbone_dtype(cfg, precision),
            quantization="4bit" if cfg.model.load_in_4bit else None)
        if manifest.get("weights") != "merged":
            raise ValueError(f"{cfg.model.checkpoint}: training starts from merged weights; this checkpoint "
                             "is an adapter (export it with --merge first)")
        manifest = {k: v for k, v in manifest.items() if k not in ("weights", "base_model")}
        manifest["base_model"] = str(Path(cfg.model.checkpoint).resolve())
    elif cfg.model.base_builder:
        import importlib
        module_name, _, function = cfg.model.base_builder.partition(":")
        torch.manual_seed(cfg.train.seed)
        model, tokenizer, processor, manifest = getattr(importlib.import_module(module_name), function)(cfg)
    else:
        torch.manual_seed(cfg.train.seed)
        model, tokenizer, processor, manifest = build_tiny_model(
            cfg.model.tiny_family, seed=cfg.train.seed, hidden=cfg.model.tiny_hidden, layers=cfg.model.tiny_layers)
        if cfg.model.tiny_init == "mixing":
            remix_tiny_backbone(model.backbone, seed=cfg.train.seed)
    manifest["prompt_attention"] = cfg.model.prompt_attention   # the runtime must mask prompts as training did
    backbone = model.backbone
    for p in backbone.parameters():
        p.requires_grad_(False)
    if cfg.model.load_in_4bit:
        from peft import prepare_model_for_kbit_training
        backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=cfg.model.gradient_checkpointing)
    tied = bool(getattr(backbone.config.get_text_config(), "tie_word_embeddings", False))
    if cfg.model.lora_r > 0:
        # Only the new <POSE> row of the input embeddings learns; its output row learns with the whole
        # output layer (train_lm_head), or alone when the output layer stays frozen (one 24 GB GPU): a model
        # must learn to emit <POSE> in chat mode.
        pose_rows = [model.pose_token_id]
        if not cfg.model.train_lm_head and not tied:
            base = unwrap_backbone(backbone)
            names = {id(m): n.rsplit(".", 1)[-1] for n, m in base.named_modules()}
            pose_rows = {names[id(base.get_input_embeddings())]: [model.pose_token_id],
                         names[id(base.get_output_embeddings())]: [model.pose_token_id]}
        # Whole modules that train are peft's modules_to_save, so an adapter export carries them: the output
        # layer when asked, and the vision tower and projector when they train (a tower trained from scratch).
        whole = (["lm_head"] if cfg.model.train_lm_head and not tied else [])
        if not cfg.model.freeze_vision:
            base = unwrap_backbone(backbone)
            whole += [n for n in ("vision_tower", "multi_modal_projector") if hasattr(base.model, n)]
        lora = LoraConfig(
            r=cfg.model.lora_r, lora_alpha=cfg.model.lora_alpha, lora_dropout=cfg.model.lora_dropout,
            target_modules=_lora_target_regex(cfg.model.lora_targets), bias="none",
            trainable_token_indices=pose_rows, modules_to_save=whole or None)
        model.backbone = get_peft_model(backbone, lora)
    else:
        # lora_r = 0: full fine-tuning of the language model (small backbones); vision parts stay frozen.
        for name, p in backbone.named_parameters():
            if not FROZEN_PARTS.search(name):
                p.requires_grad_(True)
    if not cfg.model.freeze_vision:
        for name, p in model.backbone.named_parameters():
            if FROZEN_PARTS.search(name) and "lora_" not in name:
                p.requires_grad_(True)
    if cfg.model.init_pose_head and not cfg.model.base_builder:
        init_pose_head(model.pose_head)
    for p in model.pose_head.parameters():
        p.requires_grad_(True)
    for p in model.parameters():       # master copies of trainable weights in float32
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if cfg.model.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer, processor, manifest


def remix_tiny_backbone(backbone, seed: int = 0, attention_gain: float = 4.0) -> None:
    """Re-draw a tiny random backbone's matrices with std 1/√fan-in (and ``attention_gain`` × that for the
    query/key projections, so attention is sharp and content-dependent).

    At transformers' 0.02 init a tiny random decoder's last state is almost only its own token: the states
    before `<POSE>` of 32 different captions are 0.998-cosine alike and no head fits them (measured). A
    pretrained LM's states depend on the whole prompt; this gives a random tiny model that property (cosine
    ≈ 0.4), which is what tests of the training pipeline need."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if p.ndim != 2 or FROZEN_PARTS.search(name):
                continue
            std = p.shape[1] ** -0.5 * (attention_gain if ("q_proj" in name or "k_proj" in name) else 1.0)
            p.copy_(torch.randn(p.shape, generator=generator) * std)


def init_pose_head(head: torch.nn.Sequential, out_scale: float = 0.01) -> None:
    """Start a fresh head at the rest pose, as HMR-style regressors start from the mean pose: the output
    bias is the 6D of the canonical rest pose (global orientation upright facing the camera, diag(1, −1, −1);
    every body joint identity) and the output weights are scaled down. A random start gives random
    rotations after Gram–Schmidt, from which the L1 loss on matrices descends slowly and can stall in
    flipped solutions (measured: 32 poses fit to ~0.003° from the rest start, ~10–40° from a random one)."""
    from smpl_rig.frames import UPRIGHT_CAMERA
    from smpl_rig.rotations import rotmat_to_d6

    rest = np.broadcast_to(np.eye(3), (24, 3, 3)).copy()
    rest[0] = UPRIGHT_CAMERA
    last = head[-1]
    with torch.no_grad():
        last.weight.mul_(out_scale)
        last.bias.copy_(torch.as_tensor(rotmat_to_d6(rest).reshape(-1), dtype=last.bias.dtype))


def make_family_for(model, processor, manifest):
    from backend.posegpt.families import make_family
    from backend.posegpt.model import unwrap_backbone

    base = unwrap_backbone(model.backbone)
    return make_family(manifest["family"], base.config, processor, base.model)


def trainable_summary(model) -> str:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{train:,} trainable of {total:,} parameters ({100 * train / max(total, 1):.2f}%)"
