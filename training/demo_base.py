"""The demo's from-scratch base model: a tiny LLaVA (CLIP vision tower + Llama decoder) with a tokenizer the
project trains itself on the pose corpus, ``<POSE>`` added, and a fresh pose head.

No pretrained weights exist on the machines this must run on, so every weight starts random and the demo
run (training/configs/demo.yaml) fine-tunes all of them. The sizes below are chosen so that run finishes
on two shared CPU cores in under half an hour and the exported checkpoint stays well under 20 MB.

    model, tokenizer, processor, manifest = build_demo_model(texts, mean_pose_rotmat=mean, seed=0)

``texts`` trains the tokenizer (corpus captions and prompts plus every chat template the pipeline writes);
``mean_pose_rotmat`` (24, 3, 3), when given, becomes the pose head's output bias, so an untrained head
already answers the mean training pose instead of a random one.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from backend.posegpt.model import POSE_TOKEN
from backend.posegpt.templates import TEMPLATES, VICUNA_V1, Template
from backend.posegpt.tiny import build_llava_backbone, pose_model, train_bpe_tokenizer
from smpl_rig import rotations


@dataclass(frozen=True)
class DemoSizes:
    """Backbone sizes of the demo model (about 1.1 M parameters with a 1 k vocabulary)."""
    vocab_size: int = 1024          # BPE merges learnt on the corpus; <POSE> comes on top
    hidden: int = 128
    layers: int = 4
    heads: int = 4                  # head_dim 32
    kv_heads: int = 2
    intermediate: int = 320
    image_size: int = 64            # the corpus renders are made at this size
    patch_size: int = 16            # 16 image tokens per picture: cheap enough for CPU training
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2


def template_texts(t: Template = VICUNA_V1) -> list[str]:
    """Every fixed string the training chats and the runtime write, so the tokenizer learns them whole."""
    from .chat_turns import DESCRIBED_PERSON_QUESTION, IMAGE_QUESTIONS, POSE_ANSWERS, TEXT_QUESTIONS

    fixed = [t.system, t.user_prefix, t.assistant_prefix + t.answer_prefix + t.direct_answer.replace(POSE_TOKEN, "")]
    fixed += [q.replace("{description}", "") for q in (*TEXT_QUESTIONS, DESCRIBED_PERSON_QUESTION, *IMAGE_QUESTIONS)]
    fixed += [a.replace(POSE_TOKEN, "") for a in POSE_ANSWERS]
    return fixed


def train_tokenizer(texts: Iterable[str], vocab_size: int = DemoSizes.vocab_size, template: Template = VICUNA_V1):
    """Byte-level BPE (``backend.posegpt.tiny.train_bpe_tokenizer``, LLaVA's special tokens) trained on
    ``texts`` plus the chat templates; ``<POSE>`` is added by ``add_pose_token``."""
    # The templates appear in every sample: repeat them so their words become single tokens.
    return train_bpe_tokenizer(list(texts) + template_texts(template) * 50, "llava", vocab_size)


def build_backbone(tokenizer, sizes: DemoSizes):
    """(LlavaForConditionalGeneration with random weights, CLIP image processor)."""
    from transformers import LlamaConfig

    if sizes.hidden % sizes.heads:
        raise ValueError(f"hidden must divide by heads: {sizes}")
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=sizes.hidden, intermediate_size=sizes.intermediate,
                       num_hidden_layers=sizes.layers, num_attention_heads=sizes.heads,
                       num_key_value_heads=sizes.kv_heads, max_position_embeddings=2048,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    return build_llava_backbone(text, tokenizer, vision_hidden=sizes.vision_hidden, vision_layers=sizes.vision_layers,
                                vision_heads=sizes.vision_heads, image_size=sizes.image_size,
                                patch_size=sizes.patch_size, vision_feature_layer=-1)


def build_demo_model(texts: Iterable[str], *, mean_pose_rotmat: np.ndarray | None = None, seed: int = 0,
                     sizes: DemoSizes = DemoSizes(), attention_gain: float | None = None,
                     template: Template = VICUNA_V1):
    """(PoseGPT, tokenizer, image processor, manifest) with random weights from ``seed``.

    mean_pose_rotmat: (24, 3, 3) camera-frame pose the untrained head should answer (output bias), or None.
    attention_gain: re-draw the decoder's matrices at std 1/√fan-in (query/key × this gain) with
    ``training.model_setup.remix_tiny_backbone``; None (the demo's choice) keeps transformers' 0.02 init.
    Measured: at 0.02 the states before `<POSE>` of 32 test captions are 0.98-cosine alike, with gain 2
    0.42 alike — yet full training from the gain-2 start stayed at the mean pose for 1500 steps, while the
    0.02 start had begun to separate prompts by step 1000 (the head and every weight train here, unlike
    the frozen-backbone tests the re-draw was made for).
    """
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(texts, sizes.vocab_size, template)
    backbone, processor = build_backbone(tokenizer, sizes)
    # Output weights × 0.1: start close to the bias pose; training grows what the text explains.
    model = pose_model(backbone, tokenizer, template, head_out_scale=0.1)
    if attention_gain is not None:     # its own generator: the draws above are the same either way
        from .model_setup import remix_tiny_backbone
        remix_tiny_backbone(model.backbone, seed=seed, attention_gain=attention_gain)
    with torch.no_grad():
        last = model.pose_head[2]
        if mean_pose_rotmat is not None:
            mean = np.asarray(mean_pose_rotmat, dtype=np.float64)
            if mean.shape != (24, 3, 3):
                raise ValueError(f"mean_pose_rotmat must be (24, 3, 3), got {mean.shape}")
            last.bias.copy_(torch.from_numpy(rotations.rotmat_to_d6(mean).reshape(-1)).float())
    manifest = {"family": "llava", "template": template.to_dict(), "accepts_images": True,
                "description": "PoseGPT demo: tiny LLaVA trained from scratch on the project's pose corpus",
                "demo_sizes": asdict(sizes), "init": {"attention_gain": attention_gain}}
    return model, tokenizer, processor, manifest


# --- from a training config ---------------------------------------------------------------------------

DEFAULT_CORPUS_BUILD = {"n": 8000, "seed": 0, "images": 1000, "size": 64}


def ensure_corpus(corpus_dir, build: dict | None = None):
    """The corpus folder, generated first (``training.corpus.build.build_corpus``) when it holds none."""
    from pathlib import Path

    from .corpus.build import build_corpus

    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / "manifest.json").is_file():
        build_corpus(corpus_dir, **(build or DEFAULT_CORPUS_BUILD))
    return corpus_dir


def build_from_config(cfg):
    """``model.base_builder`` entry point: the demo base model for a training config.

    Builds the pose corpus at ``data.corpus_dir`` first when it is missing (DEFAULT_CORPUS_BUILD: fixed
    seed and splits). The tokenizer learns the train split's captions and speculative prompts; the head's
    bias is the mean train pose (text targets: joint 0 in the canonical camera frame). Returns (PoseGPT,
    tokenizer, processor, manifest)."""
    from smpl_rig.pose_mean import mean_pose

    from .corpus.build import load_corpus

    if not cfg.data.corpus_dir:
        raise ValueError("the demo base model learns its tokenizer from the corpus: set data.corpus_dir")
    samples = load_corpus(ensure_corpus(cfg.data.corpus_dir), "train")
    texts = [t for s in samples for t in s.captions]
    mean = mean_pose(np.stack([s.text_target_rotmat() for s in samples]))
    name = cfg.model.template or VICUNA_V1.name
    if name not in TEMPLATES:
        raise ValueError(f"model.template {name!r} is not a known template; expected one of {sorted(TEMPLATES)}")
    template = TEMPLATES[name]
    model, tokenizer, processor, manifest = build_demo_model(texts, mean_pose_rotmat=mean, seed=cfg.train.seed,
                                                             template=template)
    manifest["corpus"] = {"dir": str(cfg.data.corpus_dir), "train_samples": len(samples)}
    return model, tokenizer, processor, manifest
