"""Fine-tune PoseGPT: LoRA on the language model, a pose head from scratch, the `<POSE>` embedding row.

One process (laptop smoke run, one GPU):
    make train CONFIG=training/configs/smoke_tiny.yaml
    python -m training.train --config training/configs/paper_8xa100.yaml train.max_steps=100 optim.lr=1e-4
Many GPUs, the same config, ZeRO-2 through accelerate's DeepSpeed plugin (never a home-made engine):
    accelerate launch --config_file training/accelerate_config.yaml -m training.train \
        --config training/configs/paper_8xa100.yaml
    deepspeed --num_gpus 8 --module training.train --config training/configs/paper_8xa100.yaml
    torchrun --nproc_per_node 8 -m training.train --config training/configs/paper_8xa100.yaml
(several nodes: docs/training.md, "Launching on many GPUs"). Export a step afterwards with training.export.
Resume: ``train.resume=latest`` (or a checkpoint folder). Losses (CE and pose separately) go to the
progress bar and to ``<output_dir>/metrics.jsonl``; the final model is exported to ``<output_dir>/final``
in the backend checkpoint format.

The loop reads top to bottom: draw a mixed batch, forward (``PoseGPT.forward`` returns the loss,
1.0 × CE + 0.1 × pose L1), backward with accumulation, clip, step, schedule, log, evaluate, checkpoint.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from backend.posegpt.model import CE_WEIGHT, POSE_WEIGHT

from .collate import ChatEncoder, collate, language_mask
from .config import ExperimentConfig, config_to_dict, load_config, validate
from .model_setup import build_model, make_family_for, trainable_summary
from .run_state import STATE_FILE, resolve_resume, save_training_state
from .sampler import MixSampler
from .sources import MixedBatches, MixedSamples, build_sources, drop_image_samples, use_synthetic_data

log = logging.getLogger("training")


# --- loss ---------------------------------------------------------------------------------------------

def forward_batch(model, batch: dict, family, device, dtype, ce_weight: float = CE_WEIGHT,
                  pose_weight: float = POSE_WEIGHT, edit_weight: float = 0.0):
    """One collated batch through ``PoseGPT.forward`` with its labels and pose targets; the output's ``loss``
    is ce_weight × CE over assistant tokens + pose_weight × pose L1 over the batch's `<POSE>` tokens
    (``ce_loss`` and ``pose_loss`` its parts), + pose_weight × edit_weight × ``edit_focus_loss`` when the
    batch holds edit turns. A batch collated for block prompt attention runs under its 4-D mask."""
    kwargs = family.image_kwargs(batch["images"], device, dtype)
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"].to(device)
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=language_mask(batch, family, device, dtype),
                labels=batch["labels"].to(device), pose_targets=batch["pose_targets"].to(device),
                return_logits=False, ce_weight=ce_weight, pose_weight=pose_weight, **kwargs)
    if not torch.equal(out.pose_batch_index.cpu(), batch["pose_sample_index"]):
        raise RuntimeError("the <POSE> tokens found do not match the pose samples of the batch")
    focus = batch.get("pose_focus")
    if edit_weight > 0 and focus is not None and bool(focus.any()):
        out.edit_focus_loss = edit_focus_loss(out.pose_rotmat, batch["pose_targets"].to(device), focus.to(device))
        out.loss = out.loss + pose_weight * edit_weight * out.edit_focus_loss
    return out


def edit_focus_loss(pred_rotmat: torch.Tensor, true_rotmat: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
    """Mean |ΔR| over the matrix entries of the joints edit turns change ((N, 24) bool ``focus``).

    Why: an edit ("now raise the left arm") changes one to three of 24 joints, so under the plain L1 repeating
    the pose before is nearly optimal and the model learns to ignore the instruction (measured: edited-joint
    error 1.13 × the unchanged pose's, drift 0.3°). This term weighs the changed joints as a body of their own."""
    return (pred_rotmat.float() - true_rotmat.float()).abs()[focus].mean()


# --- launch ---------------------------------------------------------------------------------------------

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

def lr_schedule(optimizer, kind: str, warmup_steps: int, max_steps: int, cycles: int = 1):
    """Warm-up, then cosine or linear decay to 0 (``constant``: warm-up only), run ``cycles`` times over
    ``max_steps``. One cycle is transformers' schedule; with more, each cycle repeats it over
    ``max_steps / cycles`` steps (warm restarts), so the first cycle equals a one-cycle run of that length
    and a run resumed from that run's last checkpoint continues it exactly."""
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)

    length = max_steps // cycles
    warmup = min(warmup_steps, max(length - 1, 0))
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    if cycles == 1:                        # linear: DeepSpeed's WarmupDecayLR of the reference scripts
        make = get_cosine_schedule_with_warmup if kind == "cosine" else get_linear_schedule_with_warmup
        return make(optimizer, warmup, max_steps)

    def factor(step: int) -> float:        # transformers' arithmetic, on the step within its cycle
        step = step % length
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if kind == "cosine":
            progress = float(step - warmup) / float(max(1, length - warmup))
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(0.5) * 2.0 * progress)))
        return max(0.0, float(length - step) / float(max(1, length - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(cfg: ExperimentConfig) -> dict:
    """Run the experiment; returns {"history": [per-step dicts], "final": export path or None, "model",
    "tokenizer", "processor", "manifest": the trained model (unwrapped) and what it needs}."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from tqdm.auto import tqdm
    from backend.posegpt.templates import Template

    validate(cfg)                      # configs built in code skip load_config's checks otherwise
    device = cfg.train.device if cfg.train.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    precision = _precision(cfg, device)
    deepspeed = _deepspeed_plugin(cfg, precision)
    # Under DeepSpeed its own accelerator picks the device (CUDA; on a machine without one, its CPU
    # accelerator: single-process CPU runs only, for tests of the checkpoint format).
    accelerator = Accelerator(
        cpu=device == "cpu" and deepspeed is None, mixed_precision=precision,
        gradient_accumulation_steps=cfg.train.grad_accum, deepspeed_plugin=deepspeed,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])  # text-only batches skip the head
    log.info("process %d of %d (%s)", accelerator.process_index, accelerator.num_processes,
             accelerator.distributed_type)
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
    sources = build_sources(cfg, rank=accelerator.process_index, world=accelerator.num_processes)
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
    # A group of its own only when asked, so runs saved before vision_lr existed resume with their groups.
    tower = [p for n, p in model.named_parameters()
             if cfg.optim.vision_lr and p.requires_grad and "vision_tower" in n and id(p) not in head_ids]
    tower_ids = {id(p) for p in tower}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids | tower_ids]
    groups = [{"params": rest, "lr": cfg.optim.lr},
              {"params": tower, "lr": cfg.optim.vision_lr},
              {"params": head, "lr": cfg.optim.head_lr or cfg.optim.lr}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.optim.lr,
                                  weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas))
    scheduler = lr_schedule(optimizer, cfg.optim.schedule, cfg.optim.warmup_steps, cfg.train.max_steps,
                            cfg.optim.cycles)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)   # stepped by hand, once per optimizer step

    # 4. Data loader, then resume: weights, optimizer, scheduler and RNG states from accelerate; step and
    #    data position here. Making the loader's iterator draws a seed from torch's RNG, which a resumed run
    #    must not do after its RNG state was restored: without workers the iterator is made first; with
    #    workers (made after the resume, so they copy the skipping sampler) the draw comes from the loader's
    #    own generator, so torch's RNG, and with it LoRA's dropout, runs as in an uninterrupted run.
    batch_order = MixedBatches(sampler)
    loader = torch.utils.data.DataLoader(
        MixedSamples(sources, encoder, cfg.train.seed, cfg.data.follow_up_every, cfg.data.edit_every), batch_sampler=batch_order,
        collate_fn=lambda s: collate(s, tokenizer.pad_token_id or 0, family, cfg.model.prompt_attention),
        num_workers=cfg.data.num_workers,
        generator=torch.Generator().manual_seed(seed) if cfg.data.num_workers else None)
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
            out = forward_batch(model, batch, family, accelerator.device, dtype,
                                ce_weight=cfg.train.ce_weight, pose_weight=cfg.train.pose_weight,
                                edit_weight=cfg.train.edit_weight)
            loss, ce, pose = out.loss, out.ce_loss, out.pose_loss
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

    # 6. Export the final model in the backend's format (LoRA merged, or kept as an adapter on its base).
    final = None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and cfg.train.export_final:
        from .export import export_model
        final = export_model(accelerator.unwrap_model(model), tokenizer, processor, manifest,
                             output_dir / "final", merge=not cfg.train.export_adapter,
                             training_config=config_to_dict(cfg),
                             dtype=cfg.train.export_dtype)
    return {"history": history, "final": final, "model": accelerator.unwrap_model(model), "tokenizer": tokenizer,
            "processor": processor, "manifest": manifest}


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
    return {name: evaluate_records(model, tokenizer, template, family, records, rest, retrieval=retrieval,
                                   prompt_attention=cfg.model.prompt_attention)
            for name, records in sets.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune PoseGPT (see the module docstring).")
    parser.add_argument("--config", help="experiment YAML (training/configs/*.yaml)")
    # The DeepSpeed launcher passes --local_rank=N (older torch.distributed.launch --local-rank N); the
    # rank also reaches us as LOCAL_RANK in the environment, which accelerate reads.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=1e-4")
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
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
