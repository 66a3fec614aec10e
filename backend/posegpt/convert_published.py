"""Convert the authors' released PoseGPT/ChatPose checkpoint into the project's checkpoint format.

    python -m backend.posegpt.convert_published --published /models/ChatPose --clip /models/clip-vit-large-patch14-336 \\
        --out /models/posegpt-project [--dtype bf16] [--no-im-start-end]

The release (published-model.md) is one merged checkpoint in the ORIGINAL LLaVA-1.5 layout:
  model.embed_tokens / model.layers.N / model.norm / lm_head   Vicuna (Llama) decoder
  model.mm_projector.0 / .2                                    mlp2x_gelu projector
  model.text_hidden_fcs.0.0 / .0.2                             pose head H → H → 144
and no vision tower (config names it by ``mm_vision_tower``; pass a local copy with ``--clip``). Its pose
token is the added token ``[SEG]`` (id 32000 after 32000 base tokens). Weights may come as safetensors or
pickled ``.bin`` files (read with ``torch.load(weights_only=True)``, which refuses anything but tensors),
whole or sharded with an index; buffers of the authors' model class that are not the model (SMPL-X's
``model.smplx.*``, rotary ``inv_freq``) are skipped and named in the log.

The output is a transformers ``LlavaForConditionalGeneration``. That layout needs an ``<image>`` token,
and transformers' own LLaVA-1.5 conversion also puts ``<image>`` at id 32000, so ids are never carried
over by position: every row of the new embedding and output matrices is copied from the row of the SAME
token string in the original vocabulary, with ``[SEG]`` renamed to the project's ``<POSE>`` (a special
token) and ``<image>`` / ``<pad>`` appended as new tokens after it.

Prompts must reach the model as the ids its authors' code gave it, so the checkpoint keeps the release's
sentencepiece model and a "whole" template (templates.py, prompt_tokenizer.py): the Vicuna conversation
string of the authors' chat script, images wrapped ``<im_start><image><im_end>`` as that script does,
tokenised the way transformers 4.31's slow Llama tokenizer did, legacy or not as the release says.
"""
from __future__ import annotations

import argparse
import json
import logging
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import PoseGPTError

log = logging.getLogger(__name__)

PUBLISHED_POSE_TOKEN = "[SEG]"
IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
IM_START, IM_END = "<im_start>", "<im_end>"
DIRECT_ANSWER = "Sure, it is<POSE>"  # the published answers read "Sure, it is [SEG]."; the model emits [SEG] after "▁is"
PROMPT_MODEL_FILE = "published_tokenizer.model"
LANGUAGE_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
PROJECTOR = {"model.mm_projector.0.": "model.multi_modal_projector.linear_1.",
             "model.mm_projector.2.": "model.multi_modal_projector.linear_2."}
HEAD = {"model.text_hidden_fcs.0.0.": "0.", "model.text_hidden_fcs.0.2.": "2."}
IGNORED = ("model.vision_tower.", "model.mm_projector.1.")  # stripped tower leftovers; GELU has no weights
NOT_THE_MODEL = ("model.smplx.", "model.smpl.")             # the authors' body-model buffers
NOT_THE_MODEL_SUFFIXES = (".rotary_emb.inv_freq",)           # recomputed by transformers, not weights
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _bad(message: str) -> PoseGPTError:
    return PoseGPTError("bad_checkpoint", message)


def _weight_files(path: Path) -> list[Path]:
    """The weight files of the release: those an index names, else every safetensors, else every .bin."""
    for name in INDEX_FILES:
        index = path / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise _bad(f"{index} is not a weight index (no weight_map): {exc}") from exc
            files = [path / f for f in sorted(set(weight_map.values()))]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise _bad(f"{index.name} names shards that are missing from {path}: {missing}")
            return files
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise _bad(f"no weights in {path}: expected *.safetensors or pytorch_model*.bin (or an index file)")
    return files


def read_published_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the published checkpoint directory, keyed by its original name."""
    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(Path(path)):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), "pt") as f:
                    tensors.update({key: f.get_tensor(key) for key in f.keys()})
            else:  # a pickle: the weights-only unpickler rebuilds tensors and refuses any other object
                tensors.update(torch.load(str(file), map_location="cpu", weights_only=True, mmap=True))
        except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError) as exc:
            raise _bad(f"cannot read weights file {file.name}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                       " (a .bin is read with torch.load(weights_only=True), which holds only tensors)") from exc
    return tensors


def project_tokenizer(published: Path):
    """The published tokenizer with ``[SEG]`` renamed ``<POSE>`` (special), then ``<image>`` and ``<pad>`` added.

    Reads slow (``tokenizer.model``) and fast (``tokenizer.json``) releases. Returns (tokenizer, original)."""
    from transformers import AutoTokenizer

    from .model import POSE_TOKEN

    if not any((published / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        raise _bad(f"{published} has no tokenizer (tokenizer.model or tokenizer.json)")
    try:
        original = AutoTokenizer.from_pretrained(str(published), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, ImportError, TypeError) as exc:
        raise _bad(f"cannot read the published tokenizer in {published}: {exc}") from exc
    if PUBLISHED_POSE_TOKEN not in original.get_vocab():
        raise _bad(f"the published tokenizer has no {PUBLISHED_POSE_TOKEN!r} token")
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
        for leftover in ("tokenizer.model", "added_tokens.json"):  # the renamed tokenizer.json is the tokenizer
            (Path(tmp) / leftover).unlink(missing_ok=True)
        tokenizer = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    extra = [IMAGE_TOKEN] + ([PAD_TOKEN] if tokenizer.pad_token is None else [])
    tokenizer.add_special_tokens({"extra_special_tokens": [POSE_TOKEN, IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    missing = [t for t in extra if t not in tokenizer.get_vocab()]
    if missing:
        raise _bad(f"could not add {missing} to the tokenizer")
    return tokenizer, original


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as exc:
        raise _bad(f"{path} is not valid JSON: {exc}") from exc


def prompt_tokenizer_spec(published: Path, tokenizer) -> dict:
    """How the authors' code tokenised prompts with this release (manifest ``prompt_tokenizer``).

    transformers 4.31 read ``tokenizer.model``, the ``legacy`` flag (True when absent), the special tokens
    with the strip flags their config gives them, and the added tokens of ``added_tokens.json``, which it
    added as plain strings: whitespace on both sides of those is stripped. ``[SEG]`` is written ``<POSE>``."""
    from .model import POSE_TOKEN

    if not (published / "tokenizer.model").is_file():
        log.warning("%s ships no tokenizer.model: prompts are tokenised by its fast tokenizer, piece by piece "
                    "between images, which may differ from the authors' slow tokenizer", published)
        return {"kind": "checkpoint_tokenizer", "add_bos": True,
                "attention_masked_ids": [tokenizer.unk_token_id] if tokenizer.unk_token_id not in
                                        (None, tokenizer.eos_token_id) else []}
    config = _json(published / "tokenizer_config.json")
    special_map = _json(published / "special_tokens_map.json")
    vocab = tokenizer.get_vocab()
    rules: dict[str, dict] = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = special_map.get(key, config.get(key))
        if isinstance(value, dict) and value.get("content"):
            rules[value["content"]] = {"strip": [bool(value.get("lstrip")), bool(value.get("rstrip"))], "special": True}
        elif isinstance(value, str) and value:
            rules.setdefault(value, {"strip": None, "special": True})
    added = list(_json(published / "added_tokens.json"))
    added += [e["content"] for e in config.get("added_tokens_decoder", {}).values() if e.get("content")]
    added += [e["content"] for e in _json(published / "tokenizer.json").get("added_tokens", [])]
    for content in added:
        if content not in rules:
            rules[content] = {"strip": None, "special": False}
    entries = []
    for content, rule in rules.items():
        ours = POSE_TOKEN if content == PUBLISHED_POSE_TOKEN else content
        if ours in vocab:
            entries.append({"content": ours, "id": vocab[ours], "strip": rule["strip"], "special": rule["special"]})
    legacy = config.get("legacy", True)
    # The chat script sets pad = unk, and 4.31's generate() then hides every <unk> of the prompt from attention.
    unk = vocab.get(_content(special_map.get("unk_token", config.get("unk_token"))) or "<unk>")
    return {"kind": "sentencepiece_llama_slow", "model_file": PROMPT_MODEL_FILE,
            "legacy": True if legacy is None else bool(legacy), "bos_id": tokenizer.bos_token_id,
            "add_bos": bool(config.get("add_bos_token", True)), "added_tokens": entries,
            "attention_masked_ids": [unk] if unk is not None and unk != tokenizer.eos_token_id else []}


def _content(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


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


def convert(published, clip, out, dtype: str = "bf16", verify: bool = True, im_start_end: bool = True) -> Path:
    """Write the project checkpoint at ``out``; returns it. See the module docstring. ``im_start_end``: wrap
    images as the authors' chat script does (on by default there), else announce them as ``<image>\\n``.
    Raises PoseGPTError("bad_checkpoint") saying what is missing or wrong."""
    from transformers import CLIPImageProcessorPil, CLIPVisionModel, LlamaConfig, LlavaConfig

    from .checkpoint import FORMAT, FORMAT_VERSION, MANIFEST, POSE_HEAD_FILE
    from .model import POSE_DIM, POSE_TOKEN
    from .templates import VICUNA_V1

    published, clip, out = Path(published), Path(clip), Path(out)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    if not (published / "config.json").is_file():
        raise _bad(f"{published} has no config.json")
    source_config = _json(published / "config.json")
    needed = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
              if k not in source_config]
    if needed:
        raise _bad(f"{published / 'config.json'} lacks {needed}")
    weights = read_published_weights(published)
    tokenizer, original = project_tokenizer(published)

    skipped = sorted(k for k in weights if k.startswith(NOT_THE_MODEL) or k.endswith(NOT_THE_MODEL_SUFFIXES))
    if skipped:
        log.info("skipping %d tensors that are not the model: %s", len(skipped),
                 ", ".join(sorted({re.sub(r"\.\d+\.", ".*.", k) for k in skipped})))
        for key in skipped:
            del weights[key]
    unknown = [k for k in weights if not (k.startswith(LANGUAGE_PREFIXES) or any(k.startswith(p) for p in PROJECTOR)
                                          or any(k.startswith(p) for p in HEAD) or k.startswith(IGNORED))]
    if unknown:
        raise _bad(f"unexpected tensors in the published checkpoint: {unknown[:8]}")
    for required in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                     "model.mm_projector.0.weight", "model.mm_projector.2.weight"):
        if required not in weights:
            raise _bad(f"the published checkpoint has no {required}")
    if source_config.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise _bad(f"only the mlp2x_gelu projector is supported, not {source_config['mm_projector_type']!r}")

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
        raise _bad("the published pose head (model.text_hidden_fcs.0.0 / .0.2, H → 144) is incomplete")

    try:
        vision = CLIPVisionModel.from_pretrained(str(clip), local_files_only=True, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise _bad(f"cannot load the CLIP vision tower from {clip}: {exc}") from exc
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
    # PIL resizing, as the authors' CLIPImageProcessor did (a torchvision backend resamples differently).
    try:
        processor = CLIPImageProcessorPil.from_pretrained(str(clip), local_files_only=True)
    except OSError:  # a vision tower saved without its processor: CLIP defaults at the tower's resolution
        processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor.save_pretrained(str(out))
    save_file(head, str(out / POSE_HEAD_FILE), metadata={"format": "pt"})
    prompt_spec = prompt_tokenizer_spec(published, tokenizer)
    if prompt_spec["kind"] == "sentencepiece_llama_slow":
        shutil.copyfile(published / "tokenizer.model", out / PROMPT_MODEL_FILE)
    template = VICUNA_V1.to_dict() | {
        "name": "chatpose_vicuna_v1", "encoding": "whole", "direct_answer": DIRECT_ANSWER,
        "image_text": (IM_START + IMAGE_TOKEN + IM_END if im_start_end else IMAGE_TOKEN) + "\n"}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "family": "llava",
        "backbone_class": "LlavaForConditionalGeneration", "weights": "merged", "pose_token": POSE_TOKEN,
        "pose_token_id": tokenizer.convert_tokens_to_ids(POSE_TOKEN), "hidden_size": source_config["hidden_size"],
        "head": {"hidden": int(head["0.weight"].shape[0]), "out": POSE_DIM, "layout": "24x6d_columns"},
        "vocab_size": len(tokenizer), "max_prompt_chars": 4000, "template": template, "accepts_images": True,
        "prompt_tokenizer": prompt_spec,
        "description": "converted from the published PoseGPT/ChatPose checkpoint",
        "converted_from": {"published": str(published), "vision_tower": str(clip),
                           "mm_vision_tower": source_config.get("mm_vision_tower"),
                           "published_pose_token": PUBLISHED_POSE_TOKEN,
                           "published_pose_token_id": original.convert_tokens_to_ids(PUBLISHED_POSE_TOKEN),
                           "skipped_tensors": len(skipped)},
    }
    template["pose_follows"] = _token_before_pose(out, manifest, tokenizer)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if verify:
        _verify_loads_every_tensor(out, torch_dtype)
    return out


def _token_before_pose(out: Path, manifest: dict, tokenizer) -> str:
    """The piece the authors' tokenisation of "Sure, it is [SEG]" puts before [SEG] (``▁is`` for Llama):
    recorded in the template so the runtime can check its direct answer against it at every load."""
    from .checkpoint import load_prompt_tokenizer
    from .templates import Template, TurnEncoder

    encoder = TurnEncoder(tokenizer, Template.from_dict(manifest["template"]),
                          load_prompt_tokenizer(manifest, out, tokenizer))
    ids = encoder.check_pose_follows()
    return tokenizer.convert_ids_to_tokens(ids[-2])


def _verify_loads_every_tensor(out: Path, dtype: torch.dtype) -> None:
    """from_pretrained silently initialises weights it cannot find; make a missing one an error instead."""
    from transformers import LlavaForConditionalGeneration

    _, info = LlavaForConditionalGeneration.from_pretrained(str(out), dtype=dtype, local_files_only=True,
                                                           output_loading_info=True)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise _bad(f"the converted checkpoint does not load cleanly: {problems}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.posegpt.convert_published",
                                     description="Convert the published PoseGPT/ChatPose checkpoint (original "
                                     "LLaVA-1.5 layout) into a PoseGPT-for-Blender checkpoint directory.")
    parser.add_argument("--published", required=True, help="directory of the authors' released checkpoint")
    parser.add_argument("--clip", required=True,
                        help="local CLIP vision tower (the config's mm_vision_tower, e.g. clip-vit-large-patch14-336)")
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"), help="weights dtype (default bf16)")
    parser.add_argument("--no-im-start-end", action="store_true",
                        help="announce images as '<image>\\n' instead of the chat script's '<im_start><image><im_end>\\n' "
                        "(for a release trained without those tokens)")
    parser.add_argument("--no-verify", action="store_true", help="skip reloading the result to check every tensor")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = convert(args.published, args.clip, args.out, dtype=args.dtype, verify=not args.no_verify,
                      im_start_end=not args.no_im_start_end)
    except PoseGPTError as exc:
        print(f"convert_published: {exc.code}: {exc}")
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
