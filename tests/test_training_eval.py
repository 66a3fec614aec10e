"""Experiment config parsing, FK-based pose metrics, the text–pose retrieval model and its recall@K."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from smpl_rig.kinematics import forward_kinematics
from smpl_rig.rotations import rotmat_x, rotmat_y, rotvec_to_rotmat
from training.config import ConfigError, config_to_dict, load_config
from training.evaluate import format_table, pose_errors, rest_skeleton
from training.retrieval import TextPoseRetrieval, recall_at_k, train_retrieval


# --- config --------------------------------------------------------------------------------------------

def test_config_yaml_overrides_and_defaults(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model: {tiny_family: text}\noptim: {lr: 2e-4}\ntrain: {batch_size: 4}\n")
    cfg = load_config(path, ["optim.lr=1e-3", "train.grad_accum=3", "model.lora_targets=[q_proj, k_proj]",
                             "data.mix={text: 1}", "data.hmr_npz=a.npz"])
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.train.batch_size == 4 and cfg.train.grad_accum == 3
    assert cfg.model.lora_targets == ["q_proj", "k_proj"] and cfg.data.hmr_npz == ["a.npz"]
    assert cfg.data.mix == {"text": 1}
    # Paper defaults where nothing was said.
    assert (cfg.model.lora_r, cfg.model.lora_alpha, cfg.model.lora_dropout) == (128, 256, 0.05)
    assert (cfg.optim.weight_decay, cfg.train.ce_weight, cfg.train.pose_weight) == (0.0, 1.0, 0.1)
    assert config_to_dict(cfg)["optim"]["lr"] == pytest.approx(1e-3)


def test_config_override_words_stay_words():
    # YAML 1.1 reads "no" as False; on the command line only true/false are booleans.
    cfg = load_config(None, ["model.tiny_family=text", "train.mixed_precision=no", "train.progress=false"])
    assert cfg.train.mixed_precision == "no" and cfg.train.progress is False


@pytest.mark.parametrize("overrides, message", [
    (["optim.learning_rate=1"], "optim.learning_rate"),
    (["trian.max_steps=1"], "trian"),
    (["train.batch_size=many"], "train.batch_size"),
    (["train.progress=3"], "train.progress"),
    (["data.mix={pictures: 1}"], "pictures"),
    (["optim.lr"], "key=value"),
])
def test_config_rejects_unknown_keys_and_bad_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.tiny_family=text"] + overrides)


def test_config_needs_a_model(tmp_path):
    with pytest.raises(ConfigError, match="model.checkpoint"):
        load_config(None, [])


REPO = Path(__file__).resolve().parents[1]


def test_shipped_configs_parse():
    configs = sorted((REPO / "training/configs").glob("*.yaml"))
    assert {"paper_8xa100.yaml", "single_24gb.yaml", "smoke_tiny.yaml"} <= {c.name for c in configs}
    for config in configs:
        load_config(config)
    paper = load_config(REPO / "training/configs/paper_8xa100.yaml")
    assert (paper.train.batch_size, paper.train.grad_accum, paper.optim.lr) == (16, 2, 2e-4)
    assert paper.train.deepspeed_config == "training/deepspeed_zero2.json"
    assert load_config(REPO / "training/configs/single_24gb.yaml").model.load_in_4bit


def test_deepspeed_json_is_zero2_with_auto_fields_the_script_fills():
    import json
    ds = json.loads((REPO / "training/deepspeed_zero2.json").read_text())
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["train_micro_batch_size_per_gpu"] == "auto" and ds["bf16"]["enabled"] == "auto"


# --- metrics -------------------------------------------------------------------------------------------

def test_pose_errors_through_forward_kinematics():
    rest, source = rest_skeleton()
    assert rest.shape == (24, 3) and "mannequin" in source
    rng = np.random.default_rng(0)
    true = rotvec_to_rotmat(rng.normal(scale=0.3, size=(5, 24, 3)))
    same = pose_errors(true, true, rest)
    for values in same.values():
        np.testing.assert_allclose(values, 0, atol=1e-6)
    # Turning the whole body changes MPJPE but not PA-MPJPE; MPJRE counts the root joint only: angle / 24.
    turned = true.copy()
    turned[:, 0] = rotmat_y(0.5) @ true[:, 0]
    err = pose_errors(turned, true, rest)
    np.testing.assert_allclose(err["mpjre_deg"], math.degrees(0.5) / 24, rtol=1e-6)
    np.testing.assert_allclose(err["mpjre_rad100"], 50 / 24, rtol=1e-6)
    np.testing.assert_allclose(err["pa_mpjpe_mm"], 0, atol=1e-6)
    joints_a = forward_kinematics(rest, turned).joints
    joints_b = forward_kinematics(rest, true).joints
    expected = np.linalg.norm((joints_a - joints_a[:, :1]) - (joints_b - joints_b[:, :1]), axis=-1).mean(-1) * 1000
    np.testing.assert_allclose(err["mpjpe_mm"], expected, rtol=1e-9)
    assert (err["mpjpe_mm"] > 10).all()
    bent = true.copy()
    bent[:, 18] = rotmat_x(1.0) @ true[:, 18]                     # the left elbow
    assert (pose_errors(bent, true, rest)["pa_mpjpe_mm"] > 1).all()
    assert "| set |" in format_table({"x": {k: float(v.mean()) for k, v in err.items()} | {"count": 5}})


# --- retrieval -----------------------------------------------------------------------------------------

def _word_pose_pairs(n: int, seed: int):
    """Captions of three words; each word bends one joint, so text determines pose."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(12)]
    texts, poses = [], []
    for _ in range(n):
        chosen = rng.choice(12, size=3, replace=False)
        pose = np.zeros((24, 3))
        for c in chosen:
            pose[1 + c, c % 3] = 1.2
        texts.append(" ".join(vocab[c] for c in chosen))
        poses.append(rotvec_to_rotmat(pose))
    return texts, np.stack(poses)


def test_retrieval_learns_matching_pairs_and_round_trips(tmp_path):
    torch.set_num_threads(1)
    texts, poses = _word_pose_pairs(48, seed=0)
    model = train_retrieval(texts, poses, epochs=60, batch_size=16, lr=3e-3, dim=32, hidden=64)
    recall = recall_at_k(model, texts, poses, ks=(1, 5))
    assert recall["text_to_pose_R@5"] > 80 and recall["pose_to_text_R@5"] > 80
    shuffled = recall_at_k(model, texts, poses[np.random.default_rng(1).permutation(48)], ks=(1,))
    assert shuffled["text_to_pose_R@1"] < recall["text_to_pose_R@1"]
    loaded = TextPoseRetrieval.load(model.save(tmp_path / "retrieval"))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(texts), model.encode_text(texts))
        torch.testing.assert_close(loaded.encode_pose(poses), model.encode_pose(poses))


def test_deepspeed_plugin_fills_the_zero2_json_from_the_experiment(monkeypatch):
    pytest.importorskip("deepspeed")       # optional dependency: pip install -e ".[deepspeed]"
    from deepspeed.runtime.config import DeepSpeedConfig

    from training.train import _deepspeed_plugin

    cfg = load_config(REPO / "training/configs/paper_8xa100.yaml", ["optim.grad_clip=0.5"])
    monkeypatch.chdir(REPO)                  # config paths are relative to where the run starts
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert _deepspeed_plugin(cfg, "bf16") is None          # a plain single-process run ignores the JSON
    monkeypatch.setenv("LOCAL_RANK", "0")
    plugin = _deepspeed_plugin(cfg, "bf16")
    ds = plugin.deepspeed_config
    assert (plugin.zero_stage, ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (2, 16, 2)
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    parsed = DeepSpeedConfig(dict(ds, train_batch_size=16 * 2), mpu=None)   # DeepSpeed's own parser, 1 process
    assert parsed.zero_optimization_stage == 2 and parsed.gradient_accumulation_steps == 2


def test_rest_skeleton_from_a_user_smpl_file_uses_its_joint_regressor(tmp_path):
    from smpl_fixtures import write_synthetic_smpl

    from smpl_rig.body import load

    path = write_synthetic_smpl(tmp_path / "SMPL_NEUTRAL.npz")
    rest, source = rest_skeleton(str(path))
    body = load(str(path))
    np.testing.assert_allclose(rest, body.joint_regressor @ body.vertices, atol=1e-6)
    assert "SMPL_NEUTRAL" in source
