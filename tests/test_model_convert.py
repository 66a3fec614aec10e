"""The converter from the published checkpoint layout, on a tiny synthetic checkpoint written here in that
layout: the converted model must give the pose computed directly from the original tensors."""
import json

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file

from backend.posegpt import convert_published
from published_layout import random_projector_and_head
from backend.posegpt.runtime import PoseRuntime
from backend.posegpt.tiny import train_tiny_tokenizer
from smpl_rig import rotations


pytestmark = pytest.mark.usefixtures("one_thread")


HIDDEN, VISION_HIDDEN = 64, 32


def _write_published(root):
    """A tiny checkpoint in the ORIGINAL LLaVA-1.5 layout + a separate tiny CLIP vision tower."""
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel, LlamaConfig,
                              LlamaForCausalLM)
    torch.manual_seed(0)
    published, clip = root / "published", root / "clip"
    tok = train_tiny_tokenizer("text")
    base_vocab = len(tok)
    tok.add_tokens(["[SEG]"])  # added, non-special, right after the base vocabulary (32000 in the release)
    tok.save_pretrained(str(published))
    config = dict(hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, rms_norm_eps=1e-5, max_position_embeddings=1024, vocab_size=base_vocab + 1)
    language = LlamaForCausalLM(LlamaConfig(**config, tie_word_embeddings=False))
    weights = {k: v.detach().clone() for k, v in language.state_dict().items()}  # model.* / lm_head.* names
    weights.update(random_projector_and_head(HIDDEN, VISION_HIDDEN))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(published / "model.safetensors"))
    (published / "config.json").write_text(json.dumps({
        **config, "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": VISION_HIDDEN,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False}))
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=VISION_HIDDEN, intermediate_size=64, num_hidden_layers=3,
                                              num_attention_heads=2, image_size=32, patch_size=8))
    vision.save_pretrained(str(clip))
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(clip))
    return published, clip, weights, tok, LlamaConfig(**config, tie_word_embeddings=False)


def test_converted_checkpoint_gives_the_pose_of_the_original_tensors(tmp_path):
    from transformers import CLIPVisionModel, LlamaForCausalLM
    published, clip, weights, original_tok, language_config = _write_published(tmp_path)
    out = convert_published.convert(published, clip, tmp_path / "converted", dtype="fp32")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["converted_from"]["published_pose_token_id"] == len(original_tok) - 1

    rt = PoseRuntime.from_checkpoint(out, device="cpu")
    tok = rt.tokenizer
    pose_id, image_id = rt.pose_id, tok.convert_tokens_to_ids("<image>")
    assert pose_id != image_id and "<POSE>" in tok.all_special_tokens and "[SEG]" not in tok.get_vocab()
    # Rows follow token strings, not positions: <POSE> carries [SEG]'s rows, ordinary tokens keep theirs.
    seg = original_tok.convert_tokens_to_ids("[SEG]")
    lm_head = rt.model.lm_head.weight
    assert torch.equal(lm_head[pose_id], weights["lm_head.weight"][seg])
    word = original_tok.convert_tokens_to_ids("Ġpose")
    assert torch.equal(lm_head[tok.convert_tokens_to_ids("Ġpose")], weights["lm_head.weight"][word])

    image = PIL.Image.fromarray((np.random.RandomState(1).rand(48, 40, 3) * 255).astype("uint8"))
    result = rt.chat("s", "what is his pose?", [image], mode="direct")
    assert result.text == "Sure, it is<POSE>"  # a fast-only release: its own tokenizer, whole pieces

    # The reference: the original tensors run by hand (Llama decoder + CLIP layer −2 patches + mlp2x_gelu + head).
    ids = rt.store.get("s").ids[:-1]  # the direct turn, up to and including <POSE> (drop the end token)
    original_ids = torch.tensor([[original_tok.convert_tokens_to_ids("[SEG]" if t == "<POSE>" else t)
                                  for t in tok.convert_ids_to_tokens(ids)]])
    image_positions = torch.tensor(ids) == image_id
    original_ids[0, image_positions] = 0
    language = LlamaForCausalLM(language_config)
    language.load_state_dict({k: v for k, v in weights.items() if k.startswith(("model.embed", "model.layers",
                                                                                "model.norm", "lm_head"))})
    vision = CLIPVisionModel.from_pretrained(str(clip))
    pixels = rt.processor(images=[image], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        patches = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][0, 1:]
        features = torch.nn.functional.gelu(patches @ weights["model.mm_projector.0.weight"].T
                                            + weights["model.mm_projector.0.bias"])
        features = features @ weights["model.mm_projector.2.weight"].T + weights["model.mm_projector.2.bias"]
        embeds = language.model.embed_tokens(original_ids)
        embeds[0, image_positions] = features
        hidden = language.model(inputs_embeds=embeds).last_hidden_state[0, -2]  # the position before [SEG]
        h = torch.relu(hidden @ weights["model.text_hidden_fcs.0.0.weight"].T + weights["model.text_hidden_fcs.0.0.bias"])
        d6 = h @ weights["model.text_hidden_fcs.0.2.weight"].T + weights["model.text_hidden_fcs.0.2.bias"]
    expect = rotations.d6_to_rotmat(d6.reshape(24, 6).double()).numpy()
    assert image_positions.sum() == 16
    np.testing.assert_allclose(result.poses[0].rotmat, expect, atol=1e-4)


def test_converter_reads_bin_weights_only_and_has_a_cli(tmp_path, capsys):
    (tmp_path / "pub").mkdir()
    torch.save({"lm_head.weight": torch.zeros(2, 2)}, tmp_path / "pub" / "pytorch_model.bin")
    assert set(convert_published.read_published_weights(tmp_path / "pub")) == {"lm_head.weight"}
    with pytest.raises(SystemExit) as done:
        convert_published.main(["--help"])
    assert done.value.code == 0 and "--published" in capsys.readouterr().out
