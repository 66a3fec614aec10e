"""The demo's from-scratch base model: template choice, tokenizer, and the config entry point."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.posegpt.runtime import PoseRuntime
from backend.posegpt.templates import VICUNA_V1, VICUNA_V1_NO_SYSTEM
from training.config import load_config
from training.demo_base import DemoSizes, build_demo_model, build_from_config

TEXTS = ["She is standing with both arms raised above her head.", "He kneels on his right knee, head down."]
SMALL = DemoSizes(vocab_size=300, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, image_size=32,
                  patch_size=16, vision_hidden=16, vision_layers=1, vision_heads=1)


@pytest.mark.parametrize("template", [VICUNA_V1, VICUNA_V1_NO_SYSTEM])
def test_demo_model_runs_in_the_runtime_with_its_template(template):
    model, tokenizer, processor, manifest = build_demo_model(TEXTS, sizes=SMALL, template=template)
    assert manifest["template"] == template.to_dict()
    rt = PoseRuntime(model, tokenizer, processor, manifest, device=torch.device("cpu"), dtype=torch.float32)
    first = rt.turns.start()
    assert first == [tokenizer.bos_token_id] + (tokenizer(template.system, add_special_tokens=False)["input_ids"]
                                                if template.system else [])
    result = rt.chat("s", TEXTS[0])
    assert result.poses[0].rotmat.shape == (24, 3, 3) and np.isfinite(result.poses[0].rotmat).all()
    assert rt.direct_answer_ids[-1] == model.pose_token_id


def test_no_system_template_halves_a_training_chat():
    _, tokenizer, _, _ = build_demo_model(TEXTS, sizes=SMALL, template=VICUNA_V1_NO_SYSTEM)
    system = tokenizer(VICUNA_V1.system, add_special_tokens=False)["input_ids"]
    caption = tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    assert len(system) > len(caption)      # the sentence the demo leaves out outweighs a whole caption


def test_config_names_an_unknown_template(tmp_path):
    from training.corpus.build import build_corpus

    build_corpus(tmp_path / "corpus", n=24, seed=0, images=0, body="capsules")
    cfg = load_config("training/configs/demo.yaml", [f"data.corpus_dir={tmp_path / 'corpus'}", "model.template=alpaca"])
    with pytest.raises(ValueError, match="alpaca"):
        build_from_config(cfg)
