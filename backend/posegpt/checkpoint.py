"""The project's checkpoint directory (docs/checkpoint_format.md): save and load, bit-exact.

    manifest.json              what this is: family, backbone class, pose token, head sizes, template, ...
    config.json + model*.safetensors   merged backbone weights (weights == "merged"), or
    adapter_config.json + adapter_model.safetensors   a peft adapter on manifest["base_model"], or on
                               manifest["base_package"] (weights shipped by a pinned Python package, with
                               config.json the model they go into; package_base.py)
    tokenizer.json, tokenizer_config.json, ...        the tokenizer, `<POSE>` included
    preprocessor_config.json   the image processor (absent for text-only backbones)
    pose_head.safetensors      "0.weight" (H', H), "0.bias", "2.weight" (144, H'), "2.bias"

Loading never reaches the network unless ``local_files_only=False`` is asked for (and HF_HUB_OFFLINE=1
forbids even that).
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import PoseGPTError
from .model import POSE_DIM, PoseGPT, add_pose_token, build_pose_head, text_hidden_size, unwrap_backbone

FORMAT = "posegpt-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
POSE_HEAD_FILE = "pose_head.safetensors"
REQUIRED_MANIFEST_KEYS = ("family", "backbone_class", "weights", "pose_token", "pose_token_id", "template")


def save_checkpoint(model: PoseGPT, tokenizer, processor, path, manifest: dict) -> Path:
    """Write ``model`` (PoseGPT, peft-wrapped or not) with its tokenizer and image processor to ``path``.

    ``manifest`` must give at least ``family`` and ``template`` (a dict, see templates.Template); the
    backbone class, weights kind, pose token id and head sizes are filled in here. A peft backbone is
    saved as an adapter and then needs ``manifest["base_model"]`` (a local path or hub id).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    base = unwrap_backbone(model.backbone)
    is_adapter = base is not model.backbone
    if is_adapter and not manifest.get("base_model") and not manifest.get("base_package"):
        raise ValueError("an adapter checkpoint needs manifest['base_model'] or ['base_package'] (where its base "
                         "weights live)")
    full = complete_manifest(model, tokenizer, manifest)
    head_sd = {k: v.detach().contiguous().cpu() for k, v in model.pose_head.state_dict().items()}
    model.backbone.save_pretrained(str(path))  # safetensors; peft writes only the adapter
    if is_adapter and manifest.get("base_package"):
        base.config.save_pretrained(str(path))  # the skeleton the package's weights go into
    tokenizer.save_pretrained(str(path))
    if processor is not None:
        processor.save_pretrained(str(path))
    save_file(head_sd, str(path / POSE_HEAD_FILE), metadata={"format": "pt"})
    (path / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return path


def complete_manifest(model: PoseGPT, tokenizer, manifest: dict) -> dict:
    """``manifest`` plus the fields the model and tokenizer determine (those always win: a merged adapter is
    "merged"); checks that family and template are given."""
    base = unwrap_backbone(model.backbone)
    head_in = model.pose_head[0]
    full = {
        "max_prompt_chars": 4000,
        **manifest,
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "backbone_class": type(base).__name__,
        "weights": "adapter" if base is not model.backbone else "merged",
        "pose_token": tokenizer.convert_ids_to_tokens(model.pose_token_id),
        "pose_token_id": model.pose_token_id,
        "hidden_size": text_hidden_size(base.config),
        "head": {"hidden": int(head_in.out_features), "out": POSE_DIM, "layout": "24x6d_columns"},
        "vocab_size": len(tokenizer),
    }
    for key in ("family", "template"):
        if key not in full:
            raise ValueError(f"manifest needs {key!r}")
    return full


def read_manifest(path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise PoseGPTError("bad_checkpoint", f"checkpoint directory {str(path)!r} does not exist")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise PoseGPTError("bad_checkpoint", f"{str(path)!r} has no {MANIFEST}; is it a PoseGPT checkpoint?")
    except json.JSONDecodeError as exc:
        raise PoseGPTError("bad_checkpoint", f"{MANIFEST} in {str(path)!r} is not valid JSON: {exc}")
    missing = [k for k in REQUIRED_MANIFEST_KEYS if k not in manifest]
    if manifest.get("format") != FORMAT or missing:
        raise PoseGPTError("bad_checkpoint", f"{MANIFEST} in {str(path)!r} is not a {FORMAT} manifest"
                           + (f" (missing {missing})" if missing else ""))
    if not (path / POSE_HEAD_FILE).is_file():
        raise PoseGPTError("bad_checkpoint", f"{str(path)!r} has no {POSE_HEAD_FILE}")
    return manifest


def _resolve_base(path: Path, base: str) -> str:
    candidate = (path / base) if not os.path.isabs(base) else Path(base)
    return str(candidate) if candidate.exists() else base  # else a hub id (only used when allowed)


def _package_backbone(path: Path, spec: dict, dtype: torch.dtype):
    """The base of a ``base_package`` adapter: the checkpoint's config.json filled with the installed
    package's weights (package_base.py)."""
    from transformers import AutoConfig

    from .package_base import assemble_backbone, read_package_base

    config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    return assemble_backbone(config, read_package_base(spec)).to(dtype)


def load_checkpoint(path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    merge_adapter: bool = False, local_files_only: bool = True, quantization: str | None = None):
    """Load a checkpoint directory. Returns ``(model: PoseGPT, tokenizer, processor | None, manifest)``.

    dtype: backbone dtype (the pose head stays float32). quantization: None, "4bit" or "8bit"
    (bitsandbytes, CUDA only). merge_adapter: fold a peft adapter into the base weights.
    """
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    path = Path(path)
    manifest = read_manifest(path)
    local_files_only = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
    try:
        # trust_remote_code=False: a checkpoint that ships Python code is refused, never run or asked about.
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        processor = (AutoImageProcessor.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
                     if (path / "preprocessor_config.json").is_file() else None)
        backbone_class = getattr(transformers, manifest["backbone_class"])
        kwargs = {"dtype": dtype, "local_files_only": local_files_only, "trust_remote_code": False}
        if quantization:
            kwargs["quantization_config"] = _quantization_config(quantization)
            kwargs["device_map"] = {"": device}
        if manifest["weights"] == "merged":
            backbone = backbone_class.from_pretrained(str(path), **kwargs)
        elif manifest["weights"] == "adapter":
            from peft import PeftModel
            if manifest.get("base_package"):
                base = _package_backbone(path, manifest["base_package"], dtype)
            else:
                base = backbone_class.from_pretrained(_resolve_base(path, manifest["base_model"]), **kwargs)
            add_pose_token(base, tokenizer, manifest["pose_token"])  # grow the embeddings as training did
            backbone = PeftModel.from_pretrained(base, str(path), local_files_only=True)
            if merge_adapter:
                backbone = backbone.merge_and_unload()
        else:
            raise PoseGPTError("bad_checkpoint", f"unknown weights kind {manifest['weights']!r}")
    except PoseGPTError:
        raise
    except (OSError, ValueError, AttributeError, KeyError, pickle.UnpicklingError, RuntimeError) as exc:
        # UnpicklingError: a pickled pytorch_model.bin that torch.load(weights_only=True) refuses to run
        raise PoseGPTError("bad_checkpoint", f"cannot load the backbone from {str(path)!r}: "
                                             f"{str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}") from exc

    pose_id = tokenizer.convert_tokens_to_ids(manifest["pose_token"])
    if pose_id != manifest["pose_token_id"]:
        raise PoseGPTError("bad_checkpoint", f"the tokenizer gives {manifest['pose_token']!r} id {pose_id}, "
                           f"the manifest says {manifest['pose_token_id']}")
    head_sd = load_file(str(path / POSE_HEAD_FILE))
    hidden = text_hidden_size(unwrap_backbone(backbone).config)
    if head_sd.get("0.weight") is None or head_sd["0.weight"].shape[1] != hidden:
        raise PoseGPTError("bad_checkpoint", f"{POSE_HEAD_FILE} does not fit hidden size {hidden}")
    head = build_pose_head(hidden, int(head_sd["0.weight"].shape[0]))
    head.load_state_dict(head_sd)
    model = PoseGPT(backbone, pose_id, head)
    if not quantization:
        model.to(device)
    else:
        model.pose_head.to(device)
    model.eval()
    return model, tokenizer, processor, manifest


def load_prompt_tokenizer(manifest: dict, path, tokenizer):
    """The prompt tokenizer of a "whole" template (``manifest["prompt_tokenizer"]``), or None.

    A sentencepiece prompt tokenizer must agree with the checkpoint's tokenizer on every piece's id, or the
    ids it writes would mean other tokens to the model."""
    from .prompt_tokenizer import SentencePiecePromptTokenizer, from_spec

    spec = manifest.get("prompt_tokenizer")
    if not spec:
        return None
    try:
        prompt = from_spec(spec, Path(path), tokenizer)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, ImportError) as exc:
        raise PoseGPTError("bad_checkpoint", f"cannot load the prompt tokenizer {spec.get('model_file', '')!r} "
                           f"of {str(path)!r}: {exc}") from exc
    if isinstance(prompt, SentencePiecePromptTokenizer):
        vocab = tokenizer.get_vocab()
        wrong = [p for i in range(prompt.sp.get_piece_size()) if vocab.get(p := prompt.sp.id_to_piece(i), i) != i]
        if wrong:
            raise PoseGPTError("bad_checkpoint", f"the prompt tokenizer's pieces {wrong[:5]} have other ids in the "
                               "checkpoint's tokenizer")
    return prompt


def _quantization_config(kind: str):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise PoseGPTError("bad_checkpoint", f"{kind} loading needs bitsandbytes, which is not installed") from exc
    from transformers import BitsAndBytesConfig
    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization must be None, '4bit' or '8bit', got {kind!r}")
