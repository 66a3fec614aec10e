"""Fine-tune PoseGPT: LoRA on the language model, a pose head from scratch, the `<POSE>` embedding row.

One process (laptop smoke run, one GPU):
    make train CONFIG=training/configs/smoke_tiny.yaml
    python -m training.train --config training/configs/paper_8xa100.yaml train.max_steps=100 optim.lr=1e-4
Many GPUs, the same config, ZeRO-2 through accelerate's DeepSpeed plugin (never a home-made engine):
    accelerate launch --config_file training/accelerate_config.yaml -m training.train \
        --config training/configs/paper_8xa100.yaml
    deepspeed --num_gpus 8 --module training.train --config training/configs/paper_8xa100.yaml
Resume: ``train.resume=latest`` (or a checkpoint folder). Losses (CE and pose separately) go to the
progress bar and to ``<output_dir>/metrics.jsonl``; the final model is exported to ``<output_dir>/final``
in the backend checkpoint format.

The loop reads top to bottom: draw a mixed batch, forward, 1.0 × CE + 0.1 × pose L1, backward with
accumulation, clip, step, schedule, log, evaluate, checkpoint.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .collate import ChatEncoder, collate, pose_l1_loss
from .config import ExperimentConfig, config_to_dict, load_config
from .data.records import PoseRecord
from .sampler import MixSampler

log = logging.getLogger("training")
STATE_FILE = "trainer_state.json"


# --- model ------------------------------------------------------------------------------------------------

_FROZEN_PARTS = re.compile(r"vision_tower|visual|vision_model|multi_modal_projector|mm_projector")


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
    backbone = model.backbone
    for p in backbone.parameters():
        p.requires_grad_(False)
    if cfg.model.load_in_4bit:
        from peft import prepare_model_for_kbit_training
        backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=cfg.model.gradient_checkpointing)
    tied = bool(getattr(backbone.config.get_text_config(), "tie_word_embeddings", False))
    if cfg.model.lora_r > 0:
        lora = LoraConfig(
            r=cfg.model.lora_r, lora_alpha=cfg.model.lora_alpha, lora_dropout=cfg.model.lora_dropout,
            target_modules=_lora_target_regex(cfg.model.lora_targets), bias="none",
            # Only the new <POSE> row of the input embeddings learns (its output row through lm_head).
            trainable_token_indices=[model.pose_token_id],
            modules_to_save=["lm_head"] if cfg.model.train_lm_head and not tied else None)
        model.backbone = get_peft_model(backbone, lora)
    else:
        # lora_r = 0: full fine-tuning of the language model (small backbones); vision parts stay frozen.
        for name, p in backbone.named_parameters():
            if not _FROZEN_PARTS.search(name):
                p.requires_grad_(True)
    if not cfg.model.freeze_vision:
        for name, p in model.backbone.named_parameters():
            if _FROZEN_PARTS.search(name) and "lora_" not in name:
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
            if p.ndim != 2 or _FROZEN_PARTS.search(name):
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


# --- data -------------------------------------------------------------------------------------------------

class Concat:
    """Several datasets read as one (e.g. all image→pose files)."""

    def __init__(self, parts):
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int):
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part][index - int(self.offsets[part])]


def use_synthetic_data(cfg: ExperimentConfig) -> None:
    """With ``data.synthetic_dir`` set: write the synthetic dataset there once, point empty paths at it."""
    from .synthetic import synthetic_paths, write_synthetic_dataset

    folder = Path(cfg.data.synthetic_dir)
    if not (folder / "llava_mix.json").is_file():     # written last: its presence means a complete set
        write_synthetic_dataset(folder)
    paths = synthetic_paths(folder)
    for key in ("posescript_dir", "amass_dir", "hmr_npz", "hmr_image_root", "llava_json", "llava_image_root"):
        if not getattr(cfg.data, key):
            setattr(cfg.data, key, paths[key])
    for key in ("spg_jsonl", "rpe_jsonl", "rpe_image_root"):
        if not getattr(cfg.eval, key):
            setattr(cfg.eval, key, paths[key])


def build_sources(cfg: ExperimentConfig, split: str = "train") -> dict[str, object]:
    """{"image": ..., "text": ..., "instruction": ...} for the configured files (missing ones left out)."""
    from .data.hmr import HMRNpz
    from .data.llava_instruct import LlavaInstruct
    from .data.posescript import PoseScript
    from .data.webdataset_4dhumans import FourDHumansTars

    from .data.corpus import CorpusRecords

    d, limit, sources = cfg.data, cfg.data.limit_per_source, {}
    text_parts, image_parts = [], []
    if d.corpus_dir:
        text_parts.append(CorpusRecords(d.corpus_dir, split, "text", seed=cfg.train.seed, limit=limit,
                                        captions=d.corpus_captions))
        image_parts.append(CorpusRecords(d.corpus_dir, split, "image", seed=cfg.train.seed, limit=limit))
    if d.posescript_dir and d.amass_dir:
        text_parts.append(PoseScript(d.posescript_dir, d.amass_dir, split if split != "train" else d.posescript_split,
                                     seed=cfg.train.seed, limit=limit))
    if split == "train":
        image_parts += [HMRNpz(p, d.hmr_image_root, limit=limit) for p in d.hmr_npz]
        if d.tars:
            image_parts.append(FourDHumansTars(d.tars, limit=limit))
    if sum(len(p) for p in text_parts):
        sources["text"] = Concat(text_parts)
    if sum(len(p) for p in image_parts):
        sources["image"] = Concat(image_parts)
    if d.llava_json and split == "train":
        sources["instruction"] = LlavaInstruct(d.llava_json, d.llava_image_root, limit=limit)
    return sources


def drop_image_samples(sources: dict) -> None:
    """A text-only backbone: no image→pose source, and only the LLaVA chats without an image."""
    if sources.pop("image", None) is not None:
        log.warning("the backbone reads no images: image→pose data dropped from the mix")
    chats = sources.get("instruction")
    if chats is not None:
        before = len(chats.entries)
        chats.entries = [e for e in chats.entries if not e.get("image")]
        log.info("text-only backbone: %d of %d instruction chats kept (those without an image)",
                 len(chats.entries), before)
        if not chats.entries:
            sources.pop("instruction")


class MixedSamples(torch.utils.data.Dataset):
    """Map-style view for the DataLoader: key (source, index, batch number, slot) → EncodedSample. The
    template choice is seeded by (seed, batch, slot), so a resumed run builds the very same chats.

    follow_up_every = n > 0: every n-th batch is made of follow-up chats — each text sample is asked as the
    last turn of a chat whose one or two earlier turns (question and `<POSE>` answer) come from other
    samples of its source, so the model learns that the newest description wins. Whole batches, because
    a batch is padded to its longest chat: one long chat in a batch of short ones would cost the whole batch."""

    def __init__(self, sources: dict, encoder: ChatEncoder, seed: int, follow_up_every: int = 0):
        self.sources, self.encoder, self.seed = sources, encoder, seed
        self.follow_up_every = follow_up_every

    def __getitem__(self, key):
        name, index, batch_no, slot = key
        rng = random.Random(f"{self.seed}:{batch_no}:{slot}")
        record = self.sources[name][index]
        earlier = []
        if (self.follow_up_every and batch_no % self.follow_up_every == self.follow_up_every - 1
                and isinstance(record, PoseRecord) and record.kind == "text"):
            source = self.sources[name]
            earlier = [source[rng.randrange(len(source))] for _ in range(2 if rng.random() < 0.3 else 1)]
        return self.encoder.encode(record, rng, earlier)


class MixedBatches(torch.utils.data.Sampler):
    """The MixSampler's batches as DataLoader keys, skipping the ``skip`` batches a resumed run already saw."""

    def __init__(self, sampler: MixSampler, skip: int = 0):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        batch_no = 0
        while True:
            batch = self.sampler.next_batch()
            if batch_no >= self.skip:
                yield [(name, index, batch_no, slot) for slot, (name, index) in enumerate(batch)]
            batch_no += 1


# --- loss -------------------------------------------------------------------------------------------------

def forward_losses(model, batch: dict, family, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy over assistant tokens, pose L1 over the batch's pose samples)."""
    kwargs = family.image_kwargs(batch["images"], device, dtype)
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"].to(device)
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                labels=batch["labels"].to(device), return_logits=False, **kwargs)
    if not torch.equal(out.pose_batch_index.cpu(), batch["pose_sample_index"]):
        raise RuntimeError("the <POSE> tokens found do not match the pose samples of the batch")
    return out.loss, pose_l1_loss(out.pose_rotmat, batch["pose_targets"].to(device))


# --- checkpoints ------------------------------------------------------------------------------------------

def _checkpoint_dirs(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def resolve_resume(cfg: ExperimentConfig) -> Path | None:
    if not cfg.train.resume:
        return None
    if cfg.train.resume == "latest":
        found = _checkpoint_dirs(Path(cfg.train.output_dir))
        return found[-1] if found else None
    path = Path(cfg.train.resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint (no {STATE_FILE})")
    return path


def _precision(cfg: ExperimentConfig, device: str) -> str:
    wanted = cfg.train.mixed_precision
    if wanted != "auto":
        return wanted
    return "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "no"


def _deepspeed_plugin(cfg: ExperimentConfig, precision: str):
    """accelerate's DeepSpeedPlugin from the shipped JSON, under a distributed launcher only; "auto" fields
    are filled from this config so the JSON stays the single ZeRO description."""
    if not cfg.train.deepspeed_config:
        return None
    if "LOCAL_RANK" not in os.environ and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false") != "true":
        log.info("deepspeed_config %s ignored: not started by accelerate launch / deepspeed", cfg.train.deepspeed_config)
        return None
    from accelerate import DeepSpeedPlugin

    ds = json.loads(Path(cfg.train.deepspeed_config).read_text())
    fill = {"train_micro_batch_size_per_gpu": cfg.train.batch_size, "gradient_accumulation_steps": cfg.train.grad_accum,
            "gradient_clipping": cfg.optim.grad_clip}
    for key, value in fill.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    ds.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and the world size
    for key in ("bf16", "fp16"):
        if isinstance(ds.get(key), dict) and ds[key].get("enabled") == "auto":
            ds[key]["enabled"] = precision == key
    return DeepSpeedPlugin(hf_ds_config=ds)


# --- the loop ---------------------------------------------------------------------------------------------

def train(cfg: ExperimentConfig) -> dict:
    """Run the experiment; returns {"history": [per-step dicts], "final": export path or None, "model",
    "tokenizer", "processor", "manifest": the trained model (unwrapped) and what it needs}."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from tqdm.auto import tqdm
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    from backend.posegpt.templates import Template

    device = cfg.train.device if cfg.train.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    precision = _precision(cfg, device)
    accelerator = Accelerator(
        cpu=device == "cpu", mixed_precision=precision, gradient_accumulation_steps=cfg.train.grad_accum,
        deepspeed_plugin=_deepspeed_plugin(cfg, precision),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])  # text-only batches skip the head
    set_seed(cfg.train.seed, device_specific=True)
    if cfg.train.torch_threads:
        torch.set_num_threads(cfg.train.torch_threads)
    output_dir = Path(cfg.train.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.data.synthetic_dir:
        use_synthetic_data(cfg)

    # 1. Model, tokenizer, the backbone family's image handling, the conversation template.
    # Weights load on the CPU and accelerate moves them; 4-bit weights can only be made on the GPU.
    model, tokenizer, processor, manifest = build_model(
        cfg, precision, device=str(accelerator.device) if cfg.model.load_in_4bit else "cpu")
    family = make_family_for(model, processor, manifest)
    template = Template.from_dict(manifest["template"])
    log.info("model: %s", trainable_summary(model))

    # 2. Data: each source, the per-batch mix, the chat encoder.
    sources = build_sources(cfg)
    if not family.accepts_images:
        drop_image_samples(sources)
    encoder = ChatEncoder(tokenizer, template, family, model.pose_token_id, cfg.data.max_length,
                          template_pool=cfg.data.template_pool)
    seed = cfg.train.seed + 7919 * accelerator.process_index          # each process draws its own samples
    # Made here so a missing source fails (and the mix is logged) before the model moves to the GPU.
    sampler = MixSampler({k: len(v) for k, v in sources.items()}, cfg.data.mix, cfg.train.batch_size, seed=seed)

    # 3. Optimizer (the fresh pose head may get its own learning rate), schedule.
    head = [p for p in model.pose_head.parameters() if p.requires_grad]
    head_ids = {id(p) for p in head}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": rest, "lr": cfg.optim.lr},
              {"params": head, "lr": cfg.optim.head_lr or cfg.optim.lr}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.optim.lr,
                                  weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas))
    warmup = min(cfg.optim.warmup_steps, max(cfg.train.max_steps - 1, 0))
    scheduler = (get_cosine_schedule_with_warmup(optimizer, warmup, cfg.train.max_steps)
                 if cfg.optim.schedule == "cosine" else get_constant_schedule_with_warmup(optimizer, warmup))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)   # stepped by hand, once per optimizer step

    # 4. Data loader, then resume: weights, optimizer, scheduler and RNG states from accelerate; step and
    #    data position here. The loader's iterator is made first because making it draws from torch's RNG,
    #    which a resumed run must not do after its RNG state was restored.
    batch_order = MixedBatches(sampler)
    loader = torch.utils.data.DataLoader(
        MixedSamples(sources, encoder, cfg.train.seed, cfg.data.follow_up_every), batch_sampler=batch_order,
        collate_fn=lambda s: collate(s, tokenizer.pad_token_id or 0, family), num_workers=cfg.data.num_workers)
    batches = iter(loader) if cfg.data.num_workers == 0 else None
    step, micro_batches = 0, 0
    resume_dir = resolve_resume(cfg)
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        state = json.loads((resume_dir / STATE_FILE).read_text())
        step, micro_batches = int(state["step"]), int(state["micro_batches"])
        batch_order.skip = micro_batches     # read when the first batch is drawn
        log.info("resumed from %s at step %d", resume_dir, step)
    if batches is None:                      # worker processes copy the sampler when the iterator starts
        batches = iter(loader)

    # 5. The loop.
    dtype = next(p for p in accelerator.unwrap_model(model).backbone.parameters()).dtype
    history, window = [], []
    metrics_file = output_dir / "metrics.jsonl"
    bar = tqdm(total=cfg.train.max_steps, initial=step, disable=not (cfg.train.progress and accelerator.is_main_process),
               desc="train", dynamic_ncols=True)
    model.train()
    started = time.time()
    while step < cfg.train.max_steps:
        batch = next(batches)
        micro_batches += 1
        with accelerator.accumulate(model):
            ce, pose = forward_losses(model, batch, family, accelerator.device, dtype)
            loss = cfg.train.ce_weight * ce + cfg.train.pose_weight * pose
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.optim.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        window.append((float(loss.detach()), float(ce.detach()), float(pose.detach())))
        if not accelerator.sync_gradients:
            continue
        scheduler.step()
        step += 1
        record = {"step": step, "loss": float(np.mean([w[0] for w in window])), "ce": float(np.mean([w[1] for w in window])),
                  "pose": float(np.mean([w[2] for w in window])), "lr": scheduler.get_last_lr()[0]}
        window = []
        history.append(record)
        bar.update(1)
        bar.set_postfix(ce=f"{record['ce']:.3f}", pose=f"{record['pose']:.4f}")
        if accelerator.is_main_process and (step % cfg.train.log_every == 0 or step == cfg.train.max_steps):
            with open(metrics_file, "a") as f:
                f.write(json.dumps(record | {"elapsed_s": round(time.time() - started, 2)}) + "\n")
        if cfg.train.eval_every and step % cfg.train.eval_every == 0 and accelerator.is_main_process:
            results = periodic_eval(cfg, accelerator.unwrap_model(model), tokenizer, template, family)
            if results:
                log.info("step %d eval: %s", step, json.dumps(results))
                with open(metrics_file, "a") as f:
                    f.write(json.dumps({"step": step, "eval": results}) + "\n")
        if (cfg.train.save_every and step % cfg.train.save_every == 0) or step == cfg.train.max_steps:
            save_training_state(accelerator, cfg, output_dir, step, micro_batches)
    bar.close()

    # 6. Export the final model in the backend's format (LoRA merged).
    final = None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and cfg.train.export_final:
        from .export import export_model
        final = export_model(accelerator.unwrap_model(model), tokenizer, processor, manifest,
                             output_dir / "final", merge=True, training_config=config_to_dict(cfg))
    return {"history": history, "final": final, "model": accelerator.unwrap_model(model), "tokenizer": tokenizer,
            "processor": processor, "manifest": manifest}


def save_training_state(accelerator, cfg: ExperimentConfig, output_dir: Path, step: int, micro_batches: int) -> Path:
    folder = output_dir / "checkpoints" / f"step-{step:07d}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / STATE_FILE).write_text(json.dumps({"step": step, "micro_batches": micro_batches,
                                                     "config": config_to_dict(cfg)}, indent=1))
        for old in _checkpoint_dirs(output_dir)[:-cfg.train.keep_last] if cfg.train.keep_last else []:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def periodic_eval(cfg: ExperimentConfig, model, tokenizer, template, family) -> dict:
    """Pose errors on the validation split (PoseScript / corpus) and the benchmark files that are configured."""
    from .data.benchmarks import load_rpe, load_spg
    from .evaluate import evaluate_records, rest_skeleton
    from .retrieval import TextPoseRetrieval

    sets = {}
    if (cfg.data.posescript_dir and cfg.data.amass_dir) or cfg.data.corpus_dir:
        try:
            val = build_sources(cfg, split="val")
        except FileNotFoundError:
            val = {}
        for kind, records in val.items():
            sets[f"val_{kind}"] = [records[i] for i in range(min(len(records), cfg.eval.max_samples))]
    if cfg.eval.spg_jsonl:
        sets["spg"] = load_spg(cfg.eval.spg_jsonl)[: cfg.eval.max_samples]
    if cfg.eval.rpe_jsonl:
        sets["rpe"] = load_rpe(cfg.eval.rpe_jsonl, cfg.eval.rpe_image_root)[: cfg.eval.max_samples]
    if not family.accepts_images:
        sets = {name: records for name, records in sets.items() if records and records[0].kind == "text"}
    if not sets:
        return {}
    rest, _ = rest_skeleton(cfg.eval.smpl_model or None)
    retrieval = TextPoseRetrieval.load(cfg.eval.retrieval_model) if cfg.eval.retrieval_model else None
    return {name: evaluate_records(model, tokenizer, template, family, records, rest, retrieval=retrieval)
            for name, records in sets.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune PoseGPT (see the module docstring).")
    parser.add_argument("--config", help="experiment YAML (training/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=1e-4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    result = train(cfg)
    if result["history"]:
        last = result["history"][-1]
        print(f"step {last['step']}: loss {last['loss']:.4f} (ce {last['ce']:.4f}, pose {last['pose']:.4f})")
    if result["final"]:
        print(f"exported: {result['final']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
