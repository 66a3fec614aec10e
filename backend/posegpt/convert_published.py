"""Convert the authors' released PoseGPT/ChatPose checkpoint into the project's checkpoint format.

    python -m backend.posegpt.convert_published --published /models/ChatPose --clip /models/clip-vit-large-patch14-336 \\
        --out /models/posegpt-project [--dtype bf16] [--allow-torch-bin]

The release (published-model.md) is one merged checkpoint in the ORIGINAL LLaVA-1.5 layout:
  model.embed_tokens / model.layers.N / model.norm / lm_head   Vicuna (Llama) decoder
  model.mm_projector.0 / .2                                    mlp2x_gelu projector
  model.text_hidden_fcs.0.0 / .0.2                             pose head H → H → 144
and no vision tower (config names it by ``mm_vision_tower``; pass a local copy with ``--clip``). Its pose
token is the added token ``[SEG]`` (id 32000 after 32000 base tokens).

The output is a transformers ``LlavaForConditionalGeneration``. That layout needs an ``<image>`` token,
and transformers' own LLaVA-1.5 conversion also puts ``<image>`` at id 32000, so ids are never carried
over by position: every row of the new embedding and output matrices is copied from the row of the SAME
token string in the original vocabulary, with ``[SEG]`` renamed to the project's ``<POSE>`` (a special
token) and ``<image>`` / ``<pad>`` appended as new tokens after it.
Only safetensors are read unless ``--allow-torch-bin`` is given (``.bin`` files are pickles; they are then
opened with ``torch.load(weights_only=True)``, which refuses arbitrary objects).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

PUBLISHED_POSE_TOKEN = "[SEG]"
IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
DIRECT_ANSWER = "Sure, it is <POSE>"  # the published answers read "Sure, it is [SEG]."
LANGUAGE_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
PROJECTOR = {"model.mm_projector.0.": "model.multi_modal_projector.linear_1.",
             "model.mm_projector.2.": "model.multi_modal_projector.linear_2."}
HEAD = {"model.text_hidden_fcs.0.0.": "0.", "model.text_hidden_fcs.0.2.": "2."}
IGNORED = ("model.vision_tower.", "model.mm_projector.1.")  # stripped tower leftovers; GELU has no weights


def read_published_weights(path: Path, allow_torch_bin: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of the published checkpoint directory, keyed by its original name."""
    files = sorted(path.glob("*.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    if not files:
        bins = sorted(path.glob("pytorch_model*.bin"))
        if not bins:
            raise FileNotFoundError(f"no *.safetensors (or pytorch_model*.bin) weights in {path}")
        if not allow_torch_bin:
            raise ValueError(f"{path} only has pickled .bin weights; pass --allow-torch-bin to read them with "
                             "torch.load(weights_only=True)")
        for file in bins:
            tensors.update(torch.load(str(file), map_location="cpu", weights_only=True, mmap=True))
    return tensors


def project_tokenizer(published: Path):
    """The published tokenizer with ``[SEG]`` renamed ``<POSE>`` (special), then ``<image>`` and ``<pad>`` added.

    Returns (tokenizer, original tokenizer)."""
    from transformers import AutoTokenizer

    from .model import POSE_TOKEN

    original = AutoTokenizer.from_pretrained(str(published), local_files_only=True)
    if PUBLISHED_POSE_TOKEN not in original.get_vocab():
        raise ValueError(f"the published tokenizer has no {PUBLISHED_POSE_TOKEN!r} token")
    with tempfile.TemporaryDirectory() as tmp:
        original.save_pretrained(tmp)  # a fast tokenizer.json whatever the source format was
        data = json.loads((Path(tmp) / "tokenizer.json").read_text())
        for entry in data["added_tokens"]:
            if entry["content"] == PUBLISHED_POSE_TOKEN:
                entry["content"], entry["special"] = POSE_TOKEN, True
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(data))
        config_file = Path(tmp) / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        for entry in config.get("added_tokens_decoder", {}).values():
            if entry.get("content") == PUBLISHED_POSE_TOKEN:
                entry["content"], entry["special"] = POSE_TOKEN, True
        config_file.write_text(json.dumps(config))
        tokenizer = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    extra = [IMAGE_TOKEN] + ([PAD_TOKEN] if tokenizer.pad_token is None else [])
    tokenizer.add_special_tokens({"extra_special_tokens": [POSE_TOKEN, IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    missing = [t for t in extra if t not in tokenizer.get_vocab()]
    if missing:
        raise ValueError(f"could not add {missing} to the tokenizer")
    return tokenizer, original


def remap_rows(matrix: torch.Tensor, original, tokenizer) -> torch.Tensor:
    """Rows of the new vocabulary from the rows of the same token in the original one (``<POSE>`` ← ``[SEG]``);
    tokens the original lacks (``<image>``, ``<pad>``) get the mean row."""
    from .model import POSE_TOKEN

    old_vocab = original.get_vocab()
    new_vocab = tokenizer.get_vocab()
    out = matrix.new_empty(len(tokenizer), matrix.shape[1])
    out[:] = matrix[: len(old_vocab)].float().mean(0).to(matrix.dtype)
    for token, new_id in new_vocab.items():
        source = PUBLISHED_POSE_TOKEN if token == POSE_TOKEN else token
        if source in old_vocab and old_vocab[source] < matrix.shape[0]:
            out[new_id] = matrix[old_vocab[source]]
    return out


def convert(published, clip, out, dtype: str = "bf16", allow_torch_bin: bool = False, verify: bool = True) -> Path:
    """Write the project checkpoint at ``out``; returns it. See the module docstring."""
    from transformers import CLIPImageProcessor, CLIPVisionModel, LlamaConfig, LlavaConfig

    from .checkpoint import FORMAT, FORMAT_VERSION, MANIFEST, POSE_HEAD_FILE
    from .model import POSE_DIM, POSE_TOKEN
    from .templates import VICUNA_V1

    published, clip, out = Path(published), Path(clip), Path(out)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    source_config = json.loads((published / "config.json").read_text())
    weights = read_published_weights(published, allow_torch_bin)
    tokenizer, original = project_tokenizer(published)

    unknown = [k for k in weights if not (k.startswith(LANGUAGE_PREFIXES) or any(k.startswith(p) for p in PROJECTOR)
                                          or any(k.startswith(p) for p in HEAD) or k.startswith(IGNORED))]
    if unknown:
        raise ValueError(f"unexpected tensors in the published checkpoint: {unknown[:8]}")
    if source_config.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ValueError(f"only the mlp2x_gelu projector is supported, not {source_config['mm_projector_type']!r}")

    state: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            tensor = remap_rows(tensor, original, tokenizer)
        if key.startswith("lm_head."):
            state[key] = tensor
        elif key.startswith(LANGUAGE_PREFIXES):
            state["model.language_model." + key[len("model."):]] = tensor
        for old, new in PROJECTOR.items():
            if key.startswith(old):
                state[new + key[len(old):]] = tensor
    head = {new + key[len(old):]: weights[key].float().contiguous()
            for key in weights for old, new in HEAD.items() if key.startswith(old)}
    if sorted(head) != ["0.bias", "0.weight", "2.bias", "2.weight"] or head["2.weight"].shape[0] != POSE_DIM:
        raise ValueError("the published pose head (model.text_hidden_fcs.0.0 / .0.2, H → 144) is incomplete")

    vision = CLIPVisionModel.from_pretrained(str(clip), local_files_only=True, dtype=torch_dtype)
    state.update({"model.vision_tower." + k: v for k, v in vision.state_dict().items()})
    vision_config = vision.config
    strategy = "default" if source_config.get("mm_vision_select_feature", "patch") == "patch" else "full"
    text_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=source_config["hidden_size"],
        intermediate_size=source_config["intermediate_size"], num_hidden_layers=source_config["num_hidden_layers"],
        num_attention_heads=source_config["num_attention_heads"],
        num_key_value_heads=source_config.get("num_key_value_heads", source_config["num_attention_heads"]),
        rms_norm_eps=source_config.get("rms_norm_eps", 1e-5),
        max_position_embeddings=source_config.get("max_position_embeddings", 4096),
        rope_parameters={"rope_type": "default", "rope_theta": float(source_config.get("rope_theta", 10000.0))},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False)
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(vision_config=vision_config.to_dict(), text_config=text_config,
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_layer=int(source_config.get("mm_vision_select_layer", -2)),
                         vision_feature_select_strategy=strategy, projector_hidden_act="gelu",
                         image_seq_length=patches + (strategy == "full"), tie_word_embeddings=False)
    config.architectures = ["LlavaForConditionalGeneration"]

    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    save_file({k: v.to(torch_dtype).contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    tokenizer.chat_template = VICUNA_V1.jinja()
    tokenizer.save_pretrained(str(out))
    size = vision_config.image_size
    try:
        processor = CLIPImageProcessor.from_pretrained(str(clip), local_files_only=True)
    except OSError:  # a vision tower saved without its processor: CLIP defaults at the tower's resolution
        processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor.save_pretrained(str(out))
    save_file(head, str(out / POSE_HEAD_FILE), metadata={"format": "pt"})
    template = VICUNA_V1.to_dict() | {"direct_answer": DIRECT_ANSWER}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "family": "llava",
        "backbone_class": "LlavaForConditionalGeneration", "weights": "merged", "pose_token": POSE_TOKEN,
        "pose_token_id": tokenizer.convert_tokens_to_ids(POSE_TOKEN), "hidden_size": source_config["hidden_size"],
        "head": {"hidden": int(head["0.weight"].shape[0]), "out": POSE_DIM, "layout": "24x6d_columns"},
        "vocab_size": len(tokenizer), "max_prompt_chars": 4000, "template": template, "accepts_images": True,
        "description": "converted from the published PoseGPT/ChatPose checkpoint",
        "converted_from": {"published": str(published), "vision_tower": str(clip),
                           "mm_vision_tower": source_config.get("mm_vision_tower"),
                           "published_pose_token": PUBLISHED_POSE_TOKEN,
                           "published_pose_token_id": original.convert_tokens_to_ids(PUBLISHED_POSE_TOKEN)},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if verify:
        _verify_loads_every_tensor(out, torch_dtype)
    return out


def _verify_loads_every_tensor(out: Path, dtype: torch.dtype) -> None:
    """from_pretrained silently initialises weights it cannot find; make a missing one an error instead."""
    from transformers import LlavaForConditionalGeneration

    _, info = LlavaForConditionalGeneration.from_pretrained(str(out), dtype=dtype, local_files_only=True,
                                                           output_loading_info=True)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise RuntimeError(f"the converted checkpoint does not load cleanly: {problems}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.posegpt.convert_published",
                                     description="Convert the published PoseGPT/ChatPose checkpoint (original "
                                     "LLaVA-1.5 layout) into a PoseGPT-for-Blender checkpoint directory.")
    parser.add_argument("--published", required=True, help="directory of the authors' released checkpoint")
    parser.add_argument("--clip", required=True,
                        help="local CLIP vision tower (the config's mm_vision_tower, e.g. clip-vit-large-patch14-336)")
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"), help="weights dtype (default bf16)")
    parser.add_argument("--allow-torch-bin", action="store_true",
                        help="also read pickled pytorch_model*.bin files (torch.load(weights_only=True))")
    parser.add_argument("--no-verify", action="store_true", help="skip reloading the result to check every tensor")
    args = parser.parse_args(argv)
    out = convert(args.published, args.clip, args.out, dtype=args.dtype, allow_torch_bin=args.allow_torch_bin,
                  verify=not args.no_verify)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
