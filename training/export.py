"""Export a trained PoseGPT to the backend checkpoint format (``backend.posegpt.checkpoint``).

    python -m training.export --run runs/posegpt [--step 5000] --out checkpoints/my-posegpt [--adapter] [--dtype bf16]

Any step checkpoint of a run exports: accelerate's (``model.safetensors``, or ``pytorch_model.bin``) and
DeepSpeed's ZeRO-2/3 folders (``latest`` + ``pytorch_model/`` with the partitioned optimizer states), whose
float32 master weights DeepSpeed's own ZeRO-to-fp32 consolidation reassembles (``deepspeed`` installed).

Merged (default): the LoRA weights, the trained `<POSE>` embedding row and output layer are folded into
the backbone, so the runtime needs nothing else. ``--adapter`` keeps the LoRA adapter separate on top of
the base checkpoint training started from (smaller; the base must stay where it is).

The backbone is written in bf16 by default (``--dtype fp32`` for float32; the pose head always float32).
Memory: the model is rebuilt in that dtype and the step's weights are copied in one tensor at a time
(never a second full copy: a DeepSpeed checkpoint is read lazily, a safetensors file memory-mapped), LoRA is
merged in place, and the checkpoint is written shard by shard. For 13B in bf16 that is about 28 GB of host
RAM (26 GB of weights, 1.2 GB of float32 trainable weights) and 26 GB on disk.
"""
from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from backend.posegpt.model import PoseGPT

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DEEPSPEED_LATEST = "latest"


def export_model(model: PoseGPT, tokenizer, processor, manifest: dict, out, *, merge: bool = True,
                 training_config: dict | None = None, dtype: str = "bf16", copy_model: bool = True) -> Path:
    """Write ``model`` (a trained PoseGPT with a peft backbone) as a backend checkpoint at ``out``.

    dtype: the exported backbone's dtype ("bf16", "fp16", "fp32"); the pose head stays float32.
    copy_model: export a copy (the training model keeps its adapter); False merges ``model`` itself."""
    from backend.posegpt.checkpoint import save_checkpoint

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    model = (copy.deepcopy(model) if copy_model else model).cpu().eval()
    manifest = dict(manifest)
    manifest.pop("weights", None)
    if merge:
        if hasattr(model.backbone, "merge_and_unload"):
            model.backbone = model.backbone.merge_and_unload()
        manifest.pop("base_model", None)
    elif not manifest.get("base_model") and not manifest.get("base_package"):
        raise ValueError("an adapter export needs the base checkpoint training started from "
                         "(train from model.checkpoint, or export merged)")
    model.backbone.to(DTYPES[dtype])
    model.pose_head.float()
    if training_config is not None:
        manifest["training_config"] = training_config
    manifest["export_dtype"] = dtype
    return save_checkpoint(model, tokenizer, processor, out, manifest)


def is_deepspeed_checkpoint(step_dir: Path) -> bool:
    return (step_dir / DEEPSPEED_LATEST).is_file()


@contextmanager
def step_weights(step_dir) -> Iterator[tuple[list[str], Callable[[str], torch.Tensor]]]:
    """(names, get) for the model weights of a step checkpoint, read one tensor at a time:
    ``model.safetensors`` (accelerate), ``pytorch_model.bin`` (accelerate without safetensors), or a
    DeepSpeed ZeRO folder (float32 weights reassembled from the partitions by ``zero_to_fp32``)."""
    step_dir = Path(step_dir)
    if (step_dir / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(step_dir / "model.safetensors"), framework="pt") as f:
            yield list(f.keys()), f.get_tensor
    elif (step_dir / "pytorch_model.bin").is_file():
        state = torch.load(step_dir / "pytorch_model.bin", map_location="cpu", mmap=True, weights_only=True)
        yield list(state), state.__getitem__
    elif is_deepspeed_checkpoint(step_dir):
        try:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        except ImportError as exc:
            raise ImportError(f"{step_dir} is a DeepSpeed checkpoint: exporting it needs deepspeed "
                              "(pip install -e \".[deepspeed]\")") from exc
        lazy = get_fp32_state_dict_from_zero_checkpoint(str(step_dir), lazy_mode=True)
        yield list(lazy), lambda name: lazy[name].contiguous()
    else:
        raise FileNotFoundError(f"{step_dir}: no model.safetensors, pytorch_model.bin or DeepSpeed checkpoint "
                                f"('{DEEPSPEED_LATEST}' + its folder)")


def load_trained(step_dir: str | Path, dtype: str = "fp32"):
    """Rebuild the training model of a checkpoint folder written by training.train and load its weights,
    one tensor at a time. ``dtype`` is the frozen weights' dtype (trainable ones are float32, as in
    training). Returns (model, tokenizer, processor, manifest, config)."""
    from .config import config_from_dict
    from .model_setup import build_model
    from .run_state import read_state

    step_dir = Path(step_dir)
    state = read_state(step_dir)
    cfg = config_from_dict(state["config"])
    cfg.model.gradient_checkpointing = False
    cfg.model.load_in_4bit = False           # export folds LoRA into full-precision weights
    model, tokenizer, processor, manifest = build_model(cfg, precision={"bf16": "bf16", "fp16": "fp16"}.get(dtype, "no"))
    params = dict(model.named_parameters()) | dict(model.named_buffers())
    with step_weights(step_dir) as (names, get):
        unexpected = [n for n in names if n not in params]
        if unexpected:
            raise ValueError(f"{step_dir}: weights do not match the model (unexpected {unexpected[:5]})")
        with torch.no_grad():
            for name in names:
                params[name].copy_(get(name))
    missing = [n for n in dict(model.named_parameters()) if n not in set(names)]
    if [k for k in missing if "lora_" in k or "pose_head" in k or "trainable_tokens" in k or "modules_to_save" in k]:
        raise ValueError(f"{step_dir}: trained weights missing from the checkpoint: {missing[:5]}")
    return model, tokenizer, processor, manifest, cfg


def main(argv=None) -> int:
    from .config import config_to_dict
    from .run_state import find_step_dir

    parser = argparse.ArgumentParser(description="Export a training run to the backend checkpoint format.")
    parser.add_argument("--run", required=True, help="the run's output_dir (or a checkpoints/step-* folder)")
    parser.add_argument("--step", type=int, help="which step (default: the latest)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--adapter", action="store_true", help="keep LoRA as an adapter instead of merging")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="backbone dtype (default bf16)")
    args = parser.parse_args(argv)
    try:
        step_dir = find_step_dir(args.run, args.step)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    model, tokenizer, processor, manifest, cfg = load_trained(step_dir, dtype=args.dtype)
    out = export_model(model, tokenizer, processor, manifest, args.out, merge=not args.adapter,
                       training_config=config_to_dict(cfg), dtype=args.dtype, copy_model=False)
    print(f"exported {step_dir} → {out} ({args.dtype})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
