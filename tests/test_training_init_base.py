"""training.init_base: a Hugging Face base-model folder → the project checkpoint a training run starts from."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backend.posegpt.checkpoint import load_checkpoint
from backend.posegpt.tiny import build_tiny_backbone, train_tiny_tokenizer
from training.init_base import main as init_main

pytestmark = pytest.mark.usefixtures("one_thread")


def _hf_folder(path, family: str, pad_to: int | None = None):
    """A tiny model saved the way the hub ships one: no <POSE>, maybe embeddings padded past the vocabulary."""
    torch.manual_seed(0)
    tokenizer = train_tiny_tokenizer(family)
    backbone, processor, _ = build_tiny_backbone(family, tokenizer)
    if pad_to:
        backbone.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to, mean_resizing=False)
    backbone.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    if processor is not None:
        processor.save_pretrained(str(path))
    return path, len(tokenizer), {k: v.clone() for k, v in backbone.state_dict().items()}


@pytest.mark.parametrize("family,pad_to", [("llava", 64), ("llava", None), ("qwen2_vl", None)])
def test_init_base_adds_pose_with_mean_rows_and_a_rest_pose_head(tmp_path, family, pad_to):
    base, vocabulary, source = _hf_folder(tmp_path / "hf", family, pad_to)
    assert init_main(["--base", str(base), "--out", str(tmp_path / "ckpt"), "--dtype", "fp32"]) == 0

    model, tokenizer, processor, manifest = load_checkpoint(tmp_path / "ckpt")
    pose_id = tokenizer.convert_tokens_to_ids("<POSE>")
    assert pose_id == vocabulary == manifest["pose_token_id"] and manifest["family"] == family
    assert manifest["weights"] == "merged" and manifest["template"]["name"] == ("vicuna_v1" if family == "llava" else "chatml")
    saved = model.backbone.state_dict()
    for name in ("embed_tokens", "lm_head"):
        key = next(k for k in saved if name in k and k.endswith("weight"))
        original = next(v for k, v in source.items() if name in k and k.endswith("weight"))
        # Every existing row is untouched; the <POSE> row is the mean of the vocabulary's rows.
        torch.testing.assert_close(saved[key][:vocabulary], original[:vocabulary])
        torch.testing.assert_close(saved[key][pose_id], original[:vocabulary].mean(0), rtol=1e-5, atol=1e-6)
    for key, value in source.items():
        if "embed_tokens" not in key and "lm_head" not in key and key in saved:
            torch.testing.assert_close(saved[key], value, msg=key)

    # The fresh head answers the rest pose: upright facing the camera, diag(1, -1, -1), every joint identity.
    head = load_file(str(tmp_path / "ckpt" / "pose_head.safetensors"))
    rest = np.broadcast_to(np.eye(3), (24, 3, 3)).copy()
    rest[0] = np.diag([1.0, -1.0, -1.0])
    np.testing.assert_allclose(head["2.bias"].numpy(), np.concatenate([rest[:, :, 0], rest[:, :, 1]], 1).reshape(-1),
                               atol=1e-7)
    with torch.no_grad():
        _, rotmat = model.pose_from_hidden(torch.randn(3, head["0.weight"].shape[1]))
    assert np.abs(rotmat.numpy() - rest).max() < 0.1


def test_init_base_output_starts_a_training_run(tmp_path):
    from training.config import config_from_dict
    from training.model_setup import build_model

    base, vocabulary, _ = _hf_folder(tmp_path / "hf", "llava", 64)
    init_main(["--base", str(base), "--out", str(tmp_path / "ckpt"), "--dtype", "fp32"])
    cfg = config_from_dict({"model": {"checkpoint": str(tmp_path / "ckpt"), "lora_r": 4, "lora_alpha": 8,
                                      "gradient_checkpointing": False}})
    model, tokenizer, _, manifest = build_model(cfg)
    assert model.pose_token_id == vocabulary and manifest["base_model"].endswith("ckpt")
    assert any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_init_base_refuses_a_folder_that_already_has_pose(tmp_path):
    base, _, _ = _hf_folder(tmp_path / "hf", "llava")
    init_main(["--base", str(base), "--out", str(tmp_path / "ckpt"), "--dtype", "fp32"])
    with pytest.raises(ValueError, match="already has <POSE>"):
        init_main(["--base", str(tmp_path / "ckpt"), "--out", str(tmp_path / "again")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        init_main(["--base", str(tmp_path / "empty"), "--out", str(tmp_path / "x")])
    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    assert manifest["init_base"]["head"] == "rest pose"
