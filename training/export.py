"""Export a trained PoseGPT to the backend checkpoint format (``backend.posegpt.checkpoint``).

    python -m training.export --run runs/posegpt [--step 5000] --out checkpoints/my-posegpt [--adapter]

Merged (default): the LoRA weights, the trained `<POSE>` embedding row and output layer are folded into a
copy of the backbone, so the runtime needs nothing else. ``--adapter`` keeps the LoRA adapter separate on
top of the base checkpoint training started from (smaller; the base must stay where it is).
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

from safetensors.torch import load_file

from backend.posegpt.model import PoseGPT


def export_model(model: PoseGPT, tokenizer, processor, manifest: dict, out, *, merge: bool = True,
                 training_config: dict | None = None) -> Path:
    """Write ``model`` (a trained PoseGPT with a peft backbone) as a backend checkpoint at ``out``."""
    from backend.posegpt.checkpoint import save_checkpoint

    model = copy.deepcopy(model).cpu().float().eval()   # the training model keeps its adapter
    manifest = dict(manifest)
    manifest.pop("weights", None)
    if merge:
        if hasattr(model.backbone, "merge_and_unload"):
            model.backbone = model.backbone.merge_and_unload()
        manifest.pop("base_model", None)
    elif not manifest.get("base_model"):
        raise ValueError("an adapter export needs the base checkpoint training started from "
                         "(train from model.checkpoint, or export merged)")
    if training_config is not None:
        manifest["training_config"] = training_config
    return save_checkpoint(model, tokenizer, processor, out, manifest)


def load_trained(step_dir: str | Path):
    """Rebuild the training model of a checkpoint folder written by training.train and load its weights.
    Returns (model, tokenizer, processor, manifest, config)."""
    from .config import config_from_dict
    from .model_setup import build_model
    from .run_state import read_state

    step_dir = Path(step_dir)
    state = read_state(step_dir)
    cfg = config_from_dict(state["config"])
    cfg.model.gradient_checkpointing = False
    model, tokenizer, processor, manifest = build_model(cfg, precision="no")
    weights = load_file(str(step_dir / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if "lora_" in k or "pose_head" in k or "trainable_tokens" in k]:
        raise ValueError(f"{step_dir}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model, tokenizer, processor, manifest, cfg


def main(argv=None) -> int:
    from .config import config_to_dict
    from .run_state import find_step_dir

    parser = argparse.ArgumentParser(description="Export a training run to the backend checkpoint format.")
    parser.add_argument("--run", required=True, help="the run's output_dir (or a checkpoints/step-* folder)")
    parser.add_argument("--step", type=int, help="which step (default: the latest)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--adapter", action="store_true", help="keep LoRA as an adapter instead of merging")
    args = parser.parse_args(argv)
    try:
        step_dir = find_step_dir(args.run, args.step)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    model, tokenizer, processor, manifest, cfg = load_trained(step_dir)
    out = export_model(model, tokenizer, processor, manifest, args.out, merge=not args.adapter,
                       training_config=config_to_dict(cfg))
    print(f"exported {step_dir} → {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
