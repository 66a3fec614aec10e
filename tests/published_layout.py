"""Tiny random checkpoints written in the layout the authors released PoseGPT/ChatPose in.

- A Llama sentencepiece tokenizer in the slow layout transformers 4.31 saved (``tokenizer.model``,
  ``tokenizer_config.json`` with ``legacy``, ``special_tokens_map.json``, ``added_tokens.json`` with
  ``[SEG]`` = first id after the base vocabulary, optionally ``<im_start>``/``<im_end>`` after it), with or
  without a fast ``tokenizer.json`` beside it. The sentencepiece model is ``data/published_tokenizer.model``
  (trained here by ``train_sentencepiece`` on the text below; kept in git so the 4.31 ids recorded next to
  it stay valid).
- Weights in the original LLaVA-1.5 names (``model.layers.N``, ``model.mm_projector``,
  ``model.text_hidden_fcs``), the authors' SMPL-X buffers and 4.31's rotary ``inv_freq`` buffers included,
  as one safetensors file, a sharded safetensors set with an index, or a pickled ``pytorch_model.bin``.
- The language model is random but its output layer is set so that greedy decoding after "ASSISTANT:"
  writes "Sure, it is [SEG]." and stops, the answer the released model gives: chat mode and direct mode
  then read the pose at the same token, which is what the tests compare.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

DATA = Path(__file__).parent / "data"
SP_MODEL = DATA / "published_tokenizer.model"
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant "
          "gives helpful, detailed, and polite answers to the human's questions.")
ANSWER = "Sure, it is [SEG]."
DIRECT_HISTORY = "Sure, it is[SEG]"  # a direct-mode answer as our history keeps it, in the release's naming
HIDDEN, VISION_HIDDEN, LAYERS = 64, 32, 2


def train_sentencepiece(path: Path = SP_MODEL) -> None:
    """The fixture's Llama-style BPE sentencepiece model (byte fallback, digits split, dummy prefix)."""
    import sentencepiece

    text = [SYSTEM, "USER: what is the pose of the person in the image? ASSISTANT: Sure, it is a pose.",
            "Sure, it is. Sure, it is.", "she is proposing marriage", "a person waving with the right hand",
            "sitting cross-legged on the floor", "Now raise the left arm higher.", "He kneels and looks up!",
            "Can you give the SMPL pose of this person?", "What is his pose? What is her pose?"] * 40
    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buffer, model_type="bpe", vocab_size=400, byte_fallback=True,
        split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, allow_whitespace_only_pieces=True, character_coverage=1.0,
        num_threads=1, minloglevel=2)
    path.write_bytes(buffer.getvalue())


def write_tokenizer(folder: Path, *, legacy: bool, im_start_end: bool, fast_file: bool = False) -> dict[str, int]:
    """The release's tokenizer files; returns the added tokens and their ids."""
    import sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(SP_MODEL.read_bytes())
    base = sentencepiece.SentencePieceProcessor(model_file=str(SP_MODEL)).get_piece_size()
    added = {"[SEG]": base} | ({"<im_start>": base + 1, "<im_end>": base + 2} if im_start_end else {})
    (folder / "added_tokens.json").write_text(json.dumps(added))
    special = lambda c: {"__type": "AddedToken", "content": c, "lstrip": False, "normalized": True,  # noqa: E731
                         "rstrip": False, "single_word": False}
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": special("<s>"), "eos_token": special("</s>"), "unk_token": special("<unk>"), "pad_token": "<unk>"}))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"add_bos_token": True, "add_eos_token": False, "bos_token": special("<s>"), "eos_token": special("</s>"),
         "unk_token": special("<unk>"), "pad_token": None, "clean_up_tokenization_spaces": False, "legacy": legacy,
         "model_max_length": 2048, "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer"}))
    if fast_file:  # a release that also ships transformers' fast conversion
        from transformers import AutoTokenizer
        AutoTokenizer.from_pretrained(str(folder)).backend_tokenizer.save(str(folder / "tokenizer.json"))
    return added


def greedy_answer_ids(prompt_tokenizer, prompt_text: str) -> list[int]:
    """Ids the released model writes after ``prompt_text`` when it answers ANSWER, then EOS (id 2)."""
    before = prompt_tokenizer(prompt_text)
    ids = prompt_tokenizer(prompt_text + " " + ANSWER.replace("[SEG]", "<POSE>"))
    assert ids[:len(before)] == before
    return ids[len(before):] + [2]


def write_release(root: Path, *, legacy: bool = True, im_start_end: bool = True, weights_format: str = "safetensors",
                  fast_file: bool = False, seed: int = 0):
    """A tiny release in ``root/published`` and a tiny CLIP tower in ``root/clip``.

    Returns (published, clip, weights dict in the release's names, LlamaConfig of its language model)."""
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from backend.posegpt.prompt_tokenizer import AddedTokenRule, SentencePiecePromptTokenizer

    torch.manual_seed(seed)
    published, clip = root / "published", root / "clip"
    added = write_tokenizer(published, legacy=legacy, im_start_end=im_start_end, fast_file=fast_file)
    vocab = max(added.values()) + 1
    config = dict(hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4,
                  num_key_value_heads=4, rms_norm_eps=1e-5, max_position_embeddings=1024, vocab_size=vocab)
    language_config = LlamaConfig(**config, tie_word_embeddings=False)
    language = LlamaForCausalLM(language_config)
    weights = {k: v.detach().clone() for k, v in language.state_dict().items()}

    # Greedy decoding follows ANSWER: each answer token's output row points at the state of the token before.
    rules = [AddedTokenRule(c, i) for c, i in added.items()] + [AddedTokenRule(t, i, (False, False))
                                                                for t, i in (("<s>", 1), ("</s>", 2), ("<unk>", 0))]
    prompt_tok = SentencePiecePromptTokenizer(published / "tokenizer.model",
                                              [r if r.content != "[SEG]" else AddedTokenRule("<POSE>", r.token_id)
                                               for r in rules], legacy=legacy, bos_id=1)
    chain = prompt_tok(SYSTEM + " USER: hello ASSISTANT:")[-1:] + greedy_answer_ids(prompt_tok, "USER: hi ASSISTANT:")
    assert len(set(chain)) == len(chain), "the fixture's answer needs distinct tokens"
    embed = weights["model.embed_tokens.weight"]
    for source, target in zip(chain, chain[1:]):
        weights["lm_head.weight"][target] += 40.0 * embed[source] / embed[source].norm()

    weights.update(random_projector_and_head(HIDDEN, VISION_HIDDEN))
    stored = dict(weights)
    stored["model.smplx.v_template"] = torch.randn(20, 3)          # the authors' body model, not the network
    stored["model.smplx.faces_tensor"] = torch.randint(0, 20, (10, 3))
    for layer in range(LAYERS):                                     # 4.31 saved the rotary buffer
        stored[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = torch.rand(8)
    _save_weights(published, {k: v.contiguous() for k, v in stored.items()}, weights_format)

    (published / "config.json").write_text(json.dumps({
        **config, "architectures": ["ChatPoseForCausalLM"], "model_type": "llava",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": VISION_HIDDEN,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": im_start_end, "mm_use_im_patch_token": False,
        "use_cache": False}))  # the authors' evaluate() reads every position's state: it needs uncached decoding
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=VISION_HIDDEN, intermediate_size=64, num_hidden_layers=3,
                                              num_attention_heads=2, image_size=32, patch_size=8))
    vision.save_pretrained(str(clip))
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(clip))
    return published, clip, weights, language_config


def random_projector_and_head(hidden: int, vision_hidden: int) -> dict[str, torch.Tensor]:
    """The release's mlp2x_gelu projector and pose head (``text_hidden_fcs``), random, in its names."""
    return {"model.mm_projector.0.weight": torch.randn(hidden, vision_hidden) * 0.2,
            "model.mm_projector.0.bias": torch.randn(hidden) * 0.1,
            "model.mm_projector.2.weight": torch.randn(hidden, hidden) * 0.2,
            "model.mm_projector.2.bias": torch.randn(hidden) * 0.1,
            "model.text_hidden_fcs.0.0.weight": torch.randn(hidden, hidden) * 0.2,
            "model.text_hidden_fcs.0.0.bias": torch.randn(hidden) * 0.1,
            "model.text_hidden_fcs.0.2.weight": torch.randn(144, hidden) * 0.2,
            "model.text_hidden_fcs.0.2.bias": torch.randn(144) * 0.1}


def _save_weights(folder: Path, tensors: dict, weights_format: str) -> None:
    """"safetensors": one file; "sharded": two safetensors shards and their index; "bin": a pickled state dict."""
    if weights_format == "safetensors":
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    elif weights_format == "sharded":
        keys = sorted(tensors)
        shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
        for name, part in shards.items():
            save_file({k: tensors[k] for k in part}, str(folder / name), metadata={"format": "pt"})
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}))
    elif weights_format == "bin":
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        raise ValueError(weights_format)


# --- the authors' prompt code, as their chat script runs it (LLaVA's conversation "v1" + tokenizer_image_token) ---

CONVERSATIONS = {  # name: (questions in order, first turn has an image)
    "text": (("she is proposing marriage", "Now raise the left arm higher."), False),
    "image": (("What is his pose?", "Now he kneels."), True),
}


def reference_prompt(questions, answers, image: bool, im_start_end: bool = True) -> str:
    """The conversation string of the authors' chat script before answer ``len(answers)``: Vicuna v1 with
    separators " " and "</s>", the first question prefixed by the image (wrapped when ``im_start_end``)."""
    messages = []
    for k, question in enumerate(questions[:len(answers) + 1]):
        if k == 0 and image:
            question = ("<im_start><image><im_end>" if im_start_end else "<image>") + "\n" + question
        messages += [("USER", question), ("ASSISTANT", answers[k] if k < len(answers) else None)]
    text = SYSTEM + " "
    for k, (role, message) in enumerate(messages):
        text += role + ": " + message + (" ", "</s>")[k % 2] if message else role + ":"
    return text


def reference_ids(prompt: str, chunk_ids, image_ids: list[int]) -> list[int]:
    """``tokenizer_image_token``: split at "<image>", each chunk's ids (BOS first) from ``chunk_ids``, every
    BOS but the first dropped, ``image_ids`` between chunks."""
    ids: list[int] = []
    for k, chunk in enumerate(prompt.split("<image>")):
        part = list(chunk_ids(chunk))
        ids += (image_ids + part[1:]) if k else part
    return ids
