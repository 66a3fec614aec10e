"""The checkpoint directory format: tiny builds, bit-exact save/load, LoRA adapters, clear load errors,
and the training-side PoseGPT.forward (loss, pose positions)."""
import json
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backend.posegpt.checkpoint import load_checkpoint, save_checkpoint
from backend.posegpt.errors import PoseGPTError
from backend.posegpt.runtime import PoseRuntime
from backend.posegpt.tiny import build_tiny_checkpoint, build_tiny_model


pytestmark = pytest.mark.usefixtures("one_thread")



def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "text"])
def test_tiny_checkpoint_round_trips_bit_exactly(tmp_path, family):
    build_tiny_checkpoint(tmp_path / "warm", family)  # imports happen once, outside the timing
    start = time.perf_counter()
    first = build_tiny_checkpoint(tmp_path / "a", family, seed=3)
    assert time.perf_counter() - start < 5  # well under 1 s on an idle machine; CI boxes are shared
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["family"] == family and manifest["weights"] == "merged"
    assert manifest["pose_token"] == "<POSE>" and manifest["head"]["out"] == 144
    model, tok, proc, manifest = load_checkpoint(first)
    assert tok.convert_tokens_to_ids("<POSE>") == model.pose_token_id == manifest["pose_token_id"]
    assert "<POSE>" in tok.all_special_tokens  # a special token: never split, looked up by name
    assert (proc is None) == (family == "text")
    second = save_checkpoint(model, tok, proc, tmp_path / "b", manifest)
    again, tok2, _, manifest2 = load_checkpoint(second)
    a, b = _state(model), _state(again)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert manifest2 == manifest and tok2.get_vocab() == tok.get_vocab()
    head_a, head_b = load_file(str(first / "pose_head.safetensors")), load_file(str(second / "pose_head.safetensors"))
    assert all(torch.equal(head_a[k], head_b[k]) for k in head_a)


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = load_file(str(build_tiny_checkpoint(tmp_path / "a", "llava", seed=0) / "model.safetensors"))
    b = load_file(str(build_tiny_checkpoint(tmp_path / "b", "llava", seed=0) / "model.safetensors"))
    c = load_file(str(build_tiny_checkpoint(tmp_path / "c", "llava", seed=1) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_lora_adapter_checkpoint_loads_unmerged_and_merged(tmp_path):
    from peft import LoraConfig, get_peft_model

    base_dir = build_tiny_checkpoint(tmp_path / "base", "llava", seed=0)
    model, tok, proc, manifest = load_checkpoint(base_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", lora_dropout=0.0)
    model.backbone = get_peft_model(model.backbone, lora)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # peft starts B at zero; make the adapter matter
    manifest = {**manifest, "base_model": "../base"}
    adapter_dir = save_checkpoint(model, tok, proc, tmp_path / "adapter", manifest)
    assert (adapter_dir / "adapter_config.json").is_file() and (adapter_dir / "adapter_model.safetensors").is_file()
    assert not (adapter_dir / "model.safetensors").exists()
    assert json.loads((adapter_dir / "manifest.json").read_text())["weights"] == "adapter"

    ids = torch.tensor([tok("USER: she kneels ASSISTANT: Sure, here is the pose: <POSE>")["input_ids"]])
    with torch.no_grad():
        expect = model(ids)
        plain = load_checkpoint(base_dir)[0](ids)
        unmerged_model = load_checkpoint(adapter_dir)[0]
        merged_model = load_checkpoint(adapter_dir, merge_adapter=True)[0]
        unmerged, merged = unmerged_model(ids), merged_model(ids)
    assert hasattr(unmerged_model.backbone, "peft_config") and not hasattr(merged_model.backbone, "peft_config")
    assert not torch.allclose(plain.pose_rotmat, expect.pose_rotmat, atol=1e-3)  # the adapter changes poses
    assert torch.equal(unmerged.pose_rotmat, expect.pose_rotmat)
    torch.testing.assert_close(merged.pose_rotmat, expect.pose_rotmat, atol=1e-5, rtol=0)
    rt = PoseRuntime.from_checkpoint(adapter_dir, device="cpu")
    pose = rt.chat("s", "she kneels").poses[0]
    assert pose.rotmat.shape == (24, 3, 3)


def test_bad_checkpoints_raise_bad_checkpoint(tmp_path):
    cases = [tmp_path / "missing"]
    (tmp_path / "empty").mkdir()
    cases.append(tmp_path / "empty")
    broken = build_tiny_checkpoint(tmp_path / "broken", "text")
    (broken / "manifest.json").write_text("{not json")
    cases.append(broken)
    headless = build_tiny_checkpoint(tmp_path / "headless", "text")
    (headless / "pose_head.safetensors").unlink()
    cases.append(headless)
    no_weights = build_tiny_checkpoint(tmp_path / "noweights", "text")
    (no_weights / "model.safetensors").unlink()
    cases.append(no_weights)
    for path in cases:
        with pytest.raises(PoseGPTError) as err:
            PoseRuntime.from_checkpoint(path, device="cpu")
        assert err.value.code == "bad_checkpoint", path


def test_runtime_device_and_dtype_selection(tmp_path):
    from backend.posegpt.runtime import resolve_device, resolve_dtype
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("fp16", torch.device("cuda")) == torch.float16
    with pytest.raises(ValueError):
        resolve_dtype("fp8", torch.device("cpu"))
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert resolve_device("auto").type == "cuda"
    rt = PoseRuntime.from_checkpoint(build_tiny_checkpoint(tmp_path / "t", "text"), device="cpu", dtype="bf16")
    assert rt.model_card["dtype"] == "bfloat16"
    assert rt.chat("s", "hello").poses[0].rotmat.dtype == np.float32


def test_posegpt_forward_loss_and_pose_positions():
    model, tok, proc, manifest = build_tiny_model("text", seed=0)
    pose = model.pose_token_id
    ids = torch.tensor([[1, 10, 11, pose, 12, pose, 2], [3, 4, 5, 6, 7, 8, pose]])
    labels = ids.clone()
    labels[:, :3] = -100
    out = model(ids, attention_mask=torch.ones_like(ids), labels=labels)
    assert out.logits.shape == (2, 7, len(tok))
    assert out.pose_d6.shape == (3, 24, 6) and out.pose_rotmat.shape == (3, 24, 3, 3)
    assert out.pose_batch_index.tolist() == [0, 0, 1]
    expect_loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, len(tok)), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expect_loss)
    # Training's loss-only pass: the output layer only where labels are, the same loss and poses.
    lean = model(ids, attention_mask=torch.ones_like(ids), labels=labels, return_logits=False)
    assert lean.logits is None
    torch.testing.assert_close(lean.loss, expect_loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(lean.pose_d6, out.pose_d6)
    out.loss.backward()  # the pose head gets no gradient from CE alone; the backbone does
    assert model.backbone.model.embed_tokens.weight.grad is not None
    hidden = model.decoder(input_ids=ids).last_hidden_state
    want = model.pose_head(torch.stack([hidden[0, 2], hidden[0, 4], hidden[1, 5]])).reshape(3, 24, 6)
    torch.testing.assert_close(out.pose_d6, want)
    rot = out.pose_rotmat.detach()
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(3).expand(3, 24, 3, 3), atol=1e-5, rtol=0)
    assert model(ids[:, :3]).loss is None
    with pytest.raises(ValueError):
        model(torch.tensor([[pose, 1, 2]]))


def test_adapter_on_a_hub_id_never_reaches_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = build_tiny_checkpoint(tmp_path / "t", "text")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(weights="adapter", base_model="nobody/not-a-local-model")
    (path / "manifest.json").write_text(json.dumps(manifest))
    start = time.perf_counter()
    with pytest.raises(PoseGPTError) as err:
        load_checkpoint(path, local_files_only=False)  # HF_HUB_OFFLINE wins over the caller
    assert err.value.code == "bad_checkpoint" and time.perf_counter() - start < 30
