"""Tiny random-weight PoseGPT models and checkpoints, built offline in about a second, for tests, benchmarks
and the demo's from-scratch model (``training/demo_base.py`` builds its model with these same functions).

Everything a real checkpoint has is here, only small: a byte-level BPE tokenizer trained on the short
corpus below (or on the texts a caller gives), `<POSE>` added as a special token (embeddings resized), an
image processor, the family's conversation template, the pose head, all written in the project checkpoint
format.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .model import POSE_TOKEN, PoseGPT, add_pose_token
from .templates import CHATML, IMAGE_MARK, VICUNA_V1

_CORPUS = """\
A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful,
detailed, and polite answers to the human's questions.
USER: ASSISTANT: Sure, here is the pose: Sure, it is the pose you asked for.
Show me someone proposing marriage on one knee. She is kneeling with her right knee on the ground.
A person is standing upright with both arms raised above the head. He is sitting on a chair.
The person is running forward, the left leg bent and the right arm swinging back.
Someone waving hello with the left hand while walking. A dancer spinning on one foot.
The man crouches down and touches the floor with both hands. The woman leans to the side.
Lying on the back with legs crossed. Jumping in the air with arms spread wide.
What is the pose of the person in the image? Give me the pose. Describe the body in this photo.
The head is turned to the left and the torso twists to the right. Elbows bent, wrists relaxed.
Hips, knees, ankles, feet, spine, neck, collar, shoulders, elbows, wrists and hands.
system user assistant You are a helpful assistant.
"""

SPECIALS = {
    "llava": ["<unk>", "<s>", "</s>", "<pad>", IMAGE_MARK],
    "qwen2_vl": ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
    "text": ["<unk>", "<s>", "</s>", "<pad>"],
}
SPECIALS["qwen2_5_vl"] = SPECIALS["qwen2_vl"]


def train_bpe_tokenizer(texts, family: str = "llava", vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on ``texts`` (any text encodes; no unknown bytes) with the family's
    special tokens (``SPECIALS``) first; ``<POSE>`` is added later by ``add_pose_token``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS[family]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(list(texts), trainer)
    if family in ("qwen2_vl", "qwen2_5_vl"):
        return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<|im_end|>",
                                       pad_token="<|endoftext|>")
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")


def train_tiny_tokenizer(family: str = "llava", vocab_size: int = 400):
    """``train_bpe_tokenizer`` on the short built-in corpus (``_CORPUS``)."""
    return train_bpe_tokenizer(_CORPUS.splitlines(), family, vocab_size)


def _text_kwargs(vocab: int, hidden: int, layers: int, tokenizer) -> dict:
    heads = max(2, hidden // 16)
    return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=4096,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def _bert_text_config(vocab: int, hidden: int, layers: int, tokenizer):
    """A BERT encoder run as a causal decoder, the demo's language side (package_base.text_config_for)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=max(2, hidden // 16), max_position_embeddings=512,
                      pad_token_id=tokenizer.pad_token_id, is_decoder=True, add_cross_attention=False,
                      tie_word_embeddings=False)


def llava_config(text_config, tokenizer, *, vision_hidden: int, vision_layers: int, vision_heads: int,
                 image_size: int, patch_size: int, vision_feature_layer: int = -2, **llava_kwargs):
    """LlavaConfig: a CLIP vision tower of the given sizes (MLP 2 × wide), the two-layer GELU projector,
    ``text_config`` as the language side; one image token per patch."""
    from transformers import CLIPVisionConfig, LlavaConfig

    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must divide by patch_size {patch_size}")
    vision = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                              num_hidden_layers=vision_layers, num_attention_heads=vision_heads,
                              image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden)
    return LlavaConfig(vision_config=vision, text_config=text_config,
                       image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_MARK),
                       vision_feature_layer=vision_feature_layer, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=(image_size // patch_size) ** 2, **llava_kwargs)


def clip_processor(image_size: int):
    """CLIP preprocessing at ``image_size``: shortest edge resized, centre-cropped square."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})


def build_llava_backbone(text_config, tokenizer, *, vision_hidden: int, vision_layers: int, vision_heads: int,
                         image_size: int, patch_size: int, vision_feature_layer: int = -2, **llava_kwargs):
    """(LlavaForConditionalGeneration with random weights, CLIP image processor) for ``llava_config``."""
    from transformers import LlavaForConditionalGeneration

    config = llava_config(text_config, tokenizer, vision_hidden=vision_hidden, vision_layers=vision_layers,
                          vision_heads=vision_heads, image_size=image_size, patch_size=patch_size,
                          vision_feature_layer=vision_feature_layer, **llava_kwargs)
    return LlavaForConditionalGeneration(config), clip_processor(image_size)


def pose_model(backbone, tokenizer, template, head_out_scale: float = 0.1) -> PoseGPT:
    """Add `<POSE>` (embeddings resized), set the tokenizer's chat template, attach a fresh pose head whose
    output weights are scaled by ``head_out_scale``: a random head gives poses of a few radians; scaled
    down they stay near the bias pose, as a trained head's would."""
    pose_id = add_pose_token(backbone, tokenizer, POSE_TOKEN)
    tokenizer.chat_template = template.jinja()
    model = PoseGPT(backbone, pose_id)
    with torch.no_grad():
        model.pose_head[2].weight.mul_(head_out_scale)
    return model


def build_tiny_backbone(family: str, tokenizer, hidden: int = 64, layers: int = 2, image_size: int = 32,
                        text_model: str = "llama"):
    """(backbone, image_processor, template) for a family, random weights. ``text_model`` "bert" (llava only):
    the language side is a BERT encoder run as a causal decoder, as in the demo model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = len(tokenizer)
    if text_model not in ("llama", "bert") or (text_model == "bert" and family != "llava"):
        raise ValueError(f"text_model {text_model!r}: 'llama', or 'bert' for the llava family")
    if family == "llava":
        bert = text_model == "bert"
        text = (_bert_text_config(vocab, hidden, layers, tokenizer) if bert
                else LlamaConfig(**_text_kwargs(vocab, hidden, layers, tokenizer)))
        backbone, processor = build_llava_backbone(text, tokenizer, vision_hidden=32, vision_layers=2, vision_heads=2,
                                                   image_size=image_size, patch_size=8, vision_feature_layer=-2,
                                                   **({"tie_word_embeddings": False} if bert else {}))
        if bert:
            backbone.model.language_model.pooler = None   # as package_base.assemble_backbone: not a decoder's
        return backbone, processor, VICUNA_V1
    if family in ("qwen2_vl", "qwen2_5_vl"):
        import transformers
        text = _text_kwargs(vocab, hidden, layers, tokenizer)
        head_dim = hidden // text["num_attention_heads"]
        quarter = head_dim // 4  # mrope sections (t, h, w) over head_dim / 2 rotary frequencies
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                                   "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter]}
        ids = tokenizer.convert_tokens_to_ids
        if family == "qwen2_vl":
            config_class, model_class = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
            vision = dict(depth=2, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2)
        else:  # Qwen2.5-VL: windowed vision attention (one window-attention block, one full)
            config_class, model_class = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
            vision = dict(depth=2, hidden_size=32, intermediate_size=64, out_hidden_size=hidden, num_heads=2,
                          window_size=32, fullatt_block_indexes=[1])
        config = config_class(
            text_config=text, vision_config=dict(vision, patch_size=8, spatial_merge_size=2, temporal_patch_size=2),
            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
        pixels = image_size * image_size
        processor = transformers.Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels, patch_size=8,
                                                          merge_size=2, temporal_patch_size=2)
        return model_class(config), processor, CHATML
    if family == "text":
        return LlamaForCausalLM(LlamaConfig(**_text_kwargs(vocab, hidden, layers, tokenizer))), None, VICUNA_V1
    raise ValueError(f"unknown family {family!r}; expected 'llava', 'qwen2_vl', 'qwen2_5_vl' or 'text'")


def build_tiny_model(family: str = "llava", seed: int = 0, hidden: int = 64, layers: int = 2, image_size: int = 32,
                     text_model: str = "llama"):
    """(PoseGPT, tokenizer, image_processor, manifest) in memory, random weights from ``seed``."""
    torch.manual_seed(seed)
    tokenizer = train_tiny_tokenizer(family)
    backbone, processor, template = build_tiny_backbone(family, tokenizer, hidden, layers, image_size, text_model)
    backbone.eval()
    model = pose_model(backbone, tokenizer, template)
    manifest = {"family": family, "template": template.to_dict(), "description": f"tiny random {family} model",
                "accepts_images": family != "text"}
    return model, tokenizer, processor, manifest


def build_tiny_checkpoint(path, family: str = "llava", seed: int = 0, *, hidden: int = 64, layers: int = 2,
                          image_size: int = 32) -> Path:
    """Write a tiny random-weight checkpoint directory at ``path`` (offline, about a second); returns it."""
    from .checkpoint import save_checkpoint

    model, tokenizer, processor, manifest = build_tiny_model(family, seed, hidden, layers, image_size)
    return save_checkpoint(model, tokenizer, processor, path, manifest)


def teach(model: PoseGPT, tokenizer, processor, manifest: dict, examples: list[tuple[str, list, str]],
          steps: int = 100, lr: float = 1e-2) -> float:
    """Fit a tiny model to reply ``answer`` to ``prompt`` (+ images) for each (prompt, images, answer), by plain
    next-token cross-entropy on the template's encoding. Tests use it to get a model whose greedy reply is
    known (e.g. the direct-mode answer). Returns the last loss; the model is left in eval mode."""
    from .families import make_family
    from .templates import Template, TurnEncoder, encode_conversation

    template = Template.from_dict(manifest["template"])
    turns = TurnEncoder(tokenizer, template)
    family = make_family(manifest["family"], model.backbone.config, processor, model.decoder)
    batches = []
    for prompt, images, answer in examples:
        encoded = [family.encode_image(im) for im in images]
        messages = [{"role": "user", "content": turns.user_content(prompt, len(encoded))},
                    {"role": "assistant", "content": answer}]
        ids, labels = encode_conversation(tokenizer, template, messages,
                                          lambda k: family.placeholder_ids(encoded[k]))
        batches.append((torch.tensor([ids]), torch.tensor([labels]),
                        family.image_kwargs(encoded, torch.device("cpu"), torch.float32)))
    optimizer = torch.optim.Adam(model.backbone.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)  # decay: settles
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster than several fighting over a busy CPU
    model.train()
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            loss = sum(model(ids, labels=labels, **kwargs).loss for ids, labels, kwargs in batches)
            loss.backward()
            optimizer.step()
            schedule.step()
    finally:
        torch.set_num_threads(threads)
        model.eval()
    return float(loss.detach()) / len(batches)
