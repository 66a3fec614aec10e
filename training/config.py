"""One experiment = one YAML file, overridable on the command line with dotted ``key=value`` pairs.

    cfg = load_config("training/configs/paper_8xa100.yaml", ["optim.lr=1e-4", "train.max_steps=10"])

Every section is a dataclass with commented defaults (the paper's values); a key that is not a field is
rejected with the list of valid keys, so a typo never silently trains with a default. The resolved config
is stored in every training checkpoint (``config_to_dict``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin, get_type_hints

import yaml

from backend.posegpt.attention import PROMPT_ATTENTION


class ConfigError(ValueError):
    """A config file or override that does not fit the schema (the message names the key)."""


@dataclass
class ModelConfig:
    checkpoint: str = ""                 # project checkpoint to start from (backend format, e.g. a converted LLaVA)
    tiny_family: str = ""                # or build a tiny random model offline: "llava" | "qwen2_vl" | "text"
    tiny_hidden: int = 64                # tiny model sizes (tests, smoke runs)
    tiny_layers: int = 2
    tiny_init: str = "hf"                # "hf" | "mixing": re-draw a tiny random backbone so its states depend on
                                         # the whole prompt, as a pretrained LM's do (see model_setup.remix_tiny_backbone)
    template: str = ""                   # conversation template (backend.posegpt.templates.TEMPLATES) for a base
                                         # builder that makes its own model; "" = the builder's default
    base_builder: str = ""               # or "module:function", called with the config → (model, tokenizer,
                                         # image processor, manifest); such builders initialise their own head
    lora_r: int = 128                    # 0 = full fine-tuning of the language model (small backbones)
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    lora_targets: list = field(default_factory=lambda: ["q_proj", "v_proj"])  # the paper: query and value
    train_lm_head: bool = True           # the published run trained the output layer (new-token row)
    init_pose_head: bool = True          # fresh head starting at the rest pose; false to keep a trained head
    freeze_vision: bool = True           # vision tower and projector stay frozen (paper); false trains them
                                         # fully (models trained from scratch; merged export only)
    gradient_checkpointing: bool = True
    load_in_4bit: bool = False           # QLoRA on one 24 GB GPU (bitsandbytes, CUDA only)
    vision_pretrain_steps: int = 0       # demo builder: train the vision tower alone on the corpus renders first
                                         # (training/vision_pretrain.py, stage 0); 0 = start it random
    prompt_attention: str = "causal"     # "causal" | "block": each user message also reads itself whole (a prefix
                                         # LM per turn; backend/posegpt/attention.py), for a pretrained encoder
                                         # as the decoder (the demo); recorded in the exported manifest


@dataclass
class DataConfig:
    posescript_dir: str = ""             # PoseScript release folder (json files)
    amass_dir: str = ""                  # AMASS root the PoseScript sequence paths are relative to
    posescript_split: str = "train"
    hmr_npz: list = field(default_factory=list)      # HMR-style npz files (imgname, center/scale, pose, betas)
    hmr_image_root: str = ""
    tars: list = field(default_factory=list)         # 4D-Humans webdataset tar shards (split between processes)
    eft_json: list = field(default_factory=list)     # EFT pseudo-ground-truth fits (COCO2014-All-ver01.json, ...)
    eft_image_root: str = ""
    llava_json: str = ""                 # LLaVA instruction mix (e.g. llava_v1_5_mix665k.json)
    llava_image_root: str = ""
    corpus_dir: str = ""                 # the project's own pose corpus (training/corpus): text and image records
    follow_up_every: int = 0             # every n-th batch: text samples asked as the last turn of a 2-3 turn chat
    edit_every: int = 0                  # every n-th batch: text samples + an edit turn ("raise the left arm") to its edited pose
    corpus_captions: str = "all"         # "all" (every caption/phrasing a record) | "first" | "one" (training.data.corpus)
    mix: dict = field(default_factory=lambda: {"image": 2, "text": 1, "instruction": 1})
    max_length: int = 2048               # tokens per sample after image expansion (longer ones are cut)
    limit_per_source: int = 0            # 0 = all; small numbers for smoke runs
    synthetic_dir: str = ""              # write (once) and use the tiny synthetic dataset there (smoke runs)
    template_pool: int = 0               # 0 = every question/answer template; n = the first n (overfit probes)
    num_workers: int = 0


@dataclass
class OptimConfig:
    lr: float = 2e-4                     # the paper (the inherited script used 3e-4)
    head_lr: float = 0.0                 # 0 = same as lr; tiny overfitting runs raise it for the fresh head
    vision_lr: float = 0.0               # 0 = same as lr; a pretrained vision tower that trains on (the demo's
                                         # stage 0 tower) moves slower than the fresh projector and adapter
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 100
    schedule: str = "cosine"             # "cosine" | "linear" (warm-up, then linear decay to 0: the reference
                                         # scripts' DeepSpeed WarmupDecayLR; the paper configs) | "constant"
    cycles: int = 1                      # > 1: the schedule (warm-up, decay to 0) runs this many times over
                                         # max_steps (warm restarts); cycle 1 is a cycles=1 run of max_steps/cycles
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    output_dir: str = "runs/posegpt"
    max_steps: int = 10000               # optimizer steps
    batch_size: int = 16                 # per GPU (paper)
    grad_accum: int = 2                  # paper
    ce_weight: float = 1.0
    pose_weight: float = 0.1
    edit_weight: float = 0.0             # edit turns: + pose_weight × edit_weight × L1 on the joints the edit changes
    mixed_precision: str = "auto"        # "auto" (bf16 when the device has it) | "bf16" | "fp16" | "no"
    deepspeed_config: str = ""           # e.g. training/deepspeed_zero2.json; used under accelerate/deepspeed
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500                # 0 = never
    save_every: int = 1000               # 0 = only at the end
    keep_last: int = 2
    resume: str = ""                     # a training-state folder written by this script, or "latest"
    device: str = "auto"                 # "auto" | "cpu" | "cuda"
    progress: bool = True
    torch_threads: int = 0               # 0 = torch's default; 1 helps tiny CPU runs on a busy machine
    export_final: bool = True            # write <output_dir>/final in the backend format (LoRA merged)
    export_adapter: bool = False         # final export keeps LoRA as an adapter on its base (a base_package
                                         # base: only the trained weights are written)
    export_dtype: str = "bf16"           # dtype of the exported backbone: "bf16" | "fp16" | "fp32" (head: fp32)


@dataclass
class EvalConfig:
    max_samples: int = 256               # per source, for periodic evaluation
    smpl_model: str = ""                 # user SMPL file for FK; empty = the mannequin's joints
    retrieval_model: str = ""            # text–pose retrieval model (training/retrieval.py) for recall@K
    spg_jsonl: str = ""                  # speculative pose generation benchmark
    rpe_jsonl: str = ""                  # reasoning-based pose estimation benchmark
    rpe_image_root: str = ""


@dataclass
class ExperimentConfig:
    name: str = "posegpt"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint) or hint
    if dataclasses.is_dataclass(origin):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {origin.__name__} fields, got {value!r}")
        return _from_dict(origin, value, key + ".")
    if origin is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if origin is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):       # YAML reads "2e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if origin is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):        # a single path given on the command line
            return [value] if value else []
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return value


def _from_dict(cls, data: dict, prefix: str = ""):
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"valid keys here: {', '.join(prefix + n for n in names)}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def config_to_dict(cfg) -> dict:
    """Plain nested dict (YAML/JSON-safe) of a config dataclass."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict) -> ExperimentConfig:
    """Build and validate a config from a nested dict (unknown keys rejected)."""
    return _from_dict(ExperimentConfig, data or {})


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML: numbers, true/false, [lists]) in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        if not key:
            raise ConfigError(f"override {item!r} has no key")
        _set_dotted(data, key, _parse_value(raw))
    return data


def _parse_value(raw: str):
    """YAML value of a command-line override, except that YAML 1.1's yes/no/on/off stay words: only
    true/false are booleans (``train.mixed_precision=no`` means the string "no")."""
    if not raw.strip():
        return ""
    value = yaml.safe_load(raw)
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        return raw.strip()
    return value


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file (or start from the defaults when ``path`` is None), apply the overrides,
    validate. Raises ``ConfigError`` naming the offending key."""
    data: dict = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    apply_overrides(data, list(overrides or []))
    cfg = config_from_dict(data)
    validate(cfg)
    return cfg


def validate(cfg: ExperimentConfig) -> None:
    """Cross-field checks that a type check alone cannot make."""
    if cfg.train.batch_size < 1 or cfg.train.grad_accum < 1:
        raise ConfigError("train.batch_size and train.grad_accum must be at least 1")
    if cfg.train.mixed_precision not in ("auto", "bf16", "fp16", "no"):
        raise ConfigError("train.mixed_precision must be one of auto, bf16, fp16, no")
    if cfg.train.export_dtype not in ("bf16", "fp16", "fp32"):
        raise ConfigError("train.export_dtype must be one of bf16, fp16, fp32")
    if cfg.optim.schedule not in ("cosine", "linear", "constant"):
        raise ConfigError("optim.schedule must be cosine, linear or constant")
    if cfg.optim.cycles < 1 or cfg.train.max_steps % cfg.optim.cycles:
        raise ConfigError(f"optim.cycles must be at least 1 and divide train.max_steps ({cfg.train.max_steps}); "
                          f"got {cfg.optim.cycles}")
    if not cfg.data.mix or any((not isinstance(v, (int, float))) or v < 0 for v in cfg.data.mix.values()):
        raise ConfigError("data.mix must map source names to non-negative weights")
    unknown = set(cfg.data.mix) - {"image", "text", "instruction"}
    if unknown:
        raise ConfigError(f"data.mix: unknown source(s) {sorted(unknown)}; use image, text, instruction")
    chosen = [k for k in ("checkpoint", "tiny_family", "base_builder") if getattr(cfg.model, k)]
    if len(chosen) != 1:
        raise ConfigError("set exactly one of model.checkpoint (a project checkpoint), model.tiny_family "
                          f"(offline tiny model) or model.base_builder (module:function); got {chosen or 'none'}")
    if cfg.model.load_in_4bit and not cfg.model.checkpoint:
        raise ConfigError("model.load_in_4bit quantises a checkpoint's weights as they load (bitsandbytes, CUDA): "
                          "it applies to model.checkpoint only; a tiny_family or base_builder model would "
                          "silently train unquantised")
    if cfg.model.vision_pretrain_steps < 0 or (cfg.model.vision_pretrain_steps and cfg.model.freeze_vision):
        raise ConfigError("model.vision_pretrain_steps must be 0, or positive with model.freeze_vision: false "
                          "(a frozen tower would never reach the adapter export)")
    if cfg.model.vision_pretrain_steps and cfg.model.base_builder != "training.demo_pretrained:build_from_config":
        raise ConfigError("model.vision_pretrain_steps (stage 0 on the corpus renders) applies to the demo's base "
                          "builder, training.demo_pretrained:build_from_config; with another model it would be ignored")
    if cfg.optim.vision_lr < 0:
        raise ConfigError("optim.vision_lr must be 0 (= optim.lr) or positive")
    if cfg.model.prompt_attention not in PROMPT_ATTENTION:
        raise ConfigError(f"model.prompt_attention must be one of {', '.join(PROMPT_ATTENTION)}")
    if cfg.model.tiny_init not in ("hf", "mixing"):
        raise ConfigError("model.tiny_init must be hf or mixing")
    if cfg.model.base_builder and ":" not in cfg.model.base_builder:
        raise ConfigError("model.base_builder must look like package.module:function")
