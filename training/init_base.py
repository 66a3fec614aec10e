"""Build the starting checkpoint of a training run from a Hugging Face model folder: the base model with
`<POSE>` added, its embedding rows resized the way LLaVA's training code does, and a fresh pose head.

    python -m training.init_base --base models/llava-1.5-13b-hf --out checkpoints/llava-1.5-13b-base
    python -m training.init_base --base models/Qwen2-VL-7B-Instruct --out checkpoints/qwen2-vl-7b-base

``--base`` is a local folder in transformers' layout (e.g. ``llava-hf/llava-1.5-13b-hf`` downloaded with
``huggingface-cli download``): ``config.json``, the safetensors weights, the tokenizer and, for an image
model, ``preprocessor_config.json``. Nothing is fetched from the network. The family follows from
``config.model_type`` (llava, qwen2_vl, qwen2_5_vl; llama/mistral/qwen2 = text only) and picks the
conversation template (Vicuna v1 for LLaVA-1.5, ChatML for Qwen) unless ``--template`` names another.

What changes:
1. ``<POSE>`` joins the tokenizer as a special token (conventions page, "The pose token").
2. Its input-embedding and output-layer rows start at the mean of the rows of the tokenizer's existing
   vocabulary, as LLaVA's ``smart_tokenizer_and_embedding_resize`` initialises added tokens (PoseGPT's
   training code derives from it). Embedding matrices padded beyond the vocabulary (llava-hf pads to a
   multiple of 64) are not grown; the `<POSE>` row is overwritten with that mean all the same.
3. A fresh pose head (Linear(H, H) → ReLU → Linear(H, 144)) starts at the rest pose, as a training run's
   ``model.init_pose_head`` does (``training.model_setup.init_pose_head``).

Memory and time: the model is read once in ``--dtype`` (bf16 by default: 26 GB of host RAM for 13B)
and written as merged safetensors shards of the same size; about a minute per 10 GB of disk read.
The result is what ``model.checkpoint`` of training/configs/paper_8xa100.yaml points at.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

FAMILY_OF_MODEL_TYPE = {"llava": "llava", "qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl",
                        "llama": "text", "mistral": "text", "qwen2": "text"}
DEFAULT_TEMPLATE = {"llava": "vicuna_v1", "qwen2_vl": "chatml", "qwen2_5_vl": "chatml", "text": "vicuna_v1"}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def init_pose_rows(backbone, pose_id: int, vocabulary: int) -> None:
    """Set the `<POSE>` row of the input embeddings and of the output layer (when untied) to the mean of
    rows ``0 .. vocabulary-1`` (the tokens that existed before `<POSE>`)."""
    from backend.posegpt.model import unwrap_backbone

    model = unwrap_backbone(backbone)
    layers = {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    with torch.no_grad():
        for layer in layers.values():
            rows = layer.weight[:vocabulary].float().mean(0)
            layer.weight[pose_id] = rows.to(layer.weight.dtype)


def init_base(base, out, *, dtype: str = "bf16", template: str | None = None, seed: int = 0) -> Path:
    """Write the starting checkpoint (backend format, merged weights) for ``base`` at ``out``; returns it."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    from backend.posegpt.checkpoint import save_checkpoint
    from backend.posegpt.model import POSE_TOKEN, PoseGPT, add_pose_token
    from backend.posegpt.templates import TEMPLATES

    from .model_setup import init_pose_head

    base, out = Path(base), Path(out)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{base} has no config.json: expected a Hugging Face model folder")
    config = AutoConfig.from_pretrained(str(base), local_files_only=True)
    family = FAMILY_OF_MODEL_TYPE.get(config.model_type)
    if family is None:
        raise ValueError(f"{base}: model_type {config.model_type!r} is not a supported family "
                         f"({', '.join(sorted(FAMILY_OF_MODEL_TYPE))})")
    template_name = template or DEFAULT_TEMPLATE[family]
    if template_name not in TEMPLATES:
        raise ValueError(f"unknown template {template_name!r}; expected one of {sorted(TEMPLATES)}")
    chat = TEMPLATES[template_name]
    architecture = (config.architectures or [None])[0]
    backbone_class = getattr(transformers, architecture or "", None)
    if backbone_class is None:
        raise ValueError(f"{base}: config.architectures {config.architectures} names no transformers class")

    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    processor = (AutoImageProcessor.from_pretrained(str(base), local_files_only=True)
                 if family != "text" and (base / "preprocessor_config.json").is_file() else None)
    if family != "text" and processor is None:
        raise FileNotFoundError(f"{base} has no preprocessor_config.json: an image model needs its image processor")
    backbone = backbone_class.from_pretrained(str(base), dtype=DTYPES[dtype], local_files_only=True)
    if POSE_TOKEN in tokenizer.get_vocab():
        raise ValueError(f"{base}: the tokenizer already has {POSE_TOKEN}; this folder is not a base model")

    vocabulary = len(tokenizer)
    pose_id = add_pose_token(backbone, tokenizer, POSE_TOKEN)
    init_pose_rows(backbone, pose_id, vocabulary)
    tokenizer.chat_template = chat.jinja()
    torch.manual_seed(seed)
    model = PoseGPT(backbone, pose_id)
    init_pose_head(model.pose_head)
    manifest = {"family": family, "template": chat.to_dict(), "accepts_images": family != "text",
                "description": f"{base.name} with <POSE> added and a fresh pose head (training.init_base)",
                "init_base": {"source": str(base.resolve()), "architecture": architecture,
                              "pose_rows": f"mean of the {vocabulary} existing rows", "head": "rest pose"}}
    save_checkpoint(model, tokenizer, processor, out, manifest)
    log.info("wrote %s: %s + <POSE> (id %d), fresh head", out, architecture, pose_id)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Build a training run's starting checkpoint (see the module docstring).")
    parser.add_argument("--base", required=True, help="Hugging Face model folder (e.g. llava-1.5-13b-hf)")
    parser.add_argument("--out", required=True, help="where to write the project checkpoint")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--template", help="conversation template name (default: the family's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh head's first layer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = init_base(args.base, args.out, dtype=args.dtype, template=args.template, seed=args.seed)
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    print(f"{out}: {manifest['backbone_class']}, {manifest['pose_token']} = id {manifest['pose_token_id']}, "
          f"vocabulary {manifest['vocab_size']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
