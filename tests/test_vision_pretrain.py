"""Stage 0 of the demo run: the vision tower trained alone on the corpus renders, then handed to the model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig

from backend.posegpt.tiny import clip_processor
from smpl_rig.metrics import mpjre_deg
from smpl_rig.pose_mean import mean_pose
from training.vision_pretrain import (PooledPoseRegressor, PretrainSettings, ensure_vision_tower, load_renders,
                                      pixel_values, pretrain_vision_tower)

SIZE = 32
TOWER = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         image_size=SIZE, patch_size=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from training.corpus.build import build_corpus

    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, n=60, seed=1, images=60, size=SIZE, body="capsules", workers=1)
    return out


def test_pixels_are_what_the_image_processor_makes(corpus):
    from PIL import Image

    images, _ = load_renders(corpus, "train", SIZE)
    expected = clip_processor(SIZE)([Image.fromarray(im) for im in images[:4]], return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixel_values(images[:4]), expected, atol=1e-5)


def test_renders_of_the_wrong_size_are_refused(corpus):
    with pytest.raises(ValueError, match="32×32 px"):
        load_renders(corpus, "train", 64)


def test_the_regressor_learns_the_renders_it_trains_on(corpus):
    """Fitting a few renders: the tower's pooled tokens must carry the pose (error well under the mean's)."""
    images, targets = load_renders(corpus, "train", SIZE)
    images, targets = images[:6], torch.from_numpy(targets[:6])
    torch.manual_seed(0)
    model = PooledPoseRegressor(TOWER, mean_pose(targets.numpy()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = (model(pixel_values(images)) - targets).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        fitted = mpjre_deg(model(pixel_values(images)).numpy(), targets.numpy()).mean()
    baseline = mpjre_deg(mean_pose(targets.numpy())[None], targets.numpy()).mean()
    assert fitted < 0.5 * baseline


def test_the_tower_is_saved_with_its_record_and_reused_while_it_matches(corpus, tmp_path):
    path = tmp_path / "stage0" / "vision_tower.safetensors"
    settings = PretrainSettings(steps=4, batch_size=4, eval_every=2)
    logged = []
    first = ensure_vision_tower(path, corpus, TOWER, settings, log=logged.append)
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert any("validation MPJRE" in line for line in logged)
    logged.clear()
    again = ensure_vision_tower(path, corpus, TOWER, settings, log=logged.append)
    assert logged and "reusing" in logged[0]
    assert all(torch.equal(first[k], again[k]) for k in first)
    logged.clear()
    ensure_vision_tower(path, corpus, TOWER, PretrainSettings(steps=2, batch_size=4, eval_every=2), log=logged.append)
    assert "other settings" in logged[0]


def test_the_demo_model_starts_from_the_stage0_tower(corpus, tmp_path):
    """build_from_config with model.vision_pretrain_steps: the LLaVA's tower holds stage 0's weights."""
    from training.config import load_config
    from training.demo_pretrained import load_pretrained_tower

    cfg = load_config("training/configs/demo.yaml", [f"data.corpus_dir={corpus}", "model.vision_pretrain_steps=3",
                                                      f"train.output_dir={tmp_path / 'run'}"])

    class Holder(torch.nn.Module):      # the path build_from_config reaches the tower by
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Module()
            self.backbone.model = torch.nn.Module()
            self.backbone.model.vision_tower = PooledPoseRegressor(TOWER, np.tile(np.eye(3), (24, 1, 1))).tower

    model = Holder()
    record = load_pretrained_tower(model, cfg)
    assert record["settings"]["steps"] == 3 and record["train_images"] > 0
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "run" / "stage0" / "vision_tower.safetensors"))
    state = model.backbone.model.vision_tower.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in saved)


def test_pretraining_reports_the_validation_error_against_the_mean_pose(corpus):
    _, record = pretrain_vision_tower(corpus, TOWER, PretrainSettings(steps=2, batch_size=4, eval_every=1),
                                      log=lambda _: None)
    assert [h["step"] for h in record["history"]] == [1, 2]
    assert record["val_mean_pose_mpjre_deg"] > 0 and record["val_over_mean"] > 0


def test_stage0_is_refused_where_it_would_be_ignored():
    from training.config import ConfigError, config_from_dict, validate

    with pytest.raises(ConfigError, match="vision_pretrain_steps"):      # another model: nothing would run it
        validate(config_from_dict({"model": {"tiny_family": "llava", "vision_pretrain_steps": 10}}))
    demo = {"base_builder": "training.demo_pretrained:build_from_config", "vision_pretrain_steps": 10}
    with pytest.raises(ConfigError, match="freeze_vision"):              # a frozen tower never reaches the export
        validate(config_from_dict({"model": {**demo, "freeze_vision": True}}))
    validate(config_from_dict({"model": {**demo, "freeze_vision": False}}))
