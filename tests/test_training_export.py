"""training.export from any step checkpoint: bf16 by default, a chosen step, and DeepSpeed ZeRO-2 folders."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from backend.posegpt.runtime import PoseRuntime
from backend.posegpt.templates import Template
from training.config import config_from_dict
from training.data.records import PoseRecord
from training.evaluate import predict_poses
from training.export import load_trained
from training.export import main as export_main
from training.model_setup import make_family_for
from training.synthetic import write_synthetic_dataset
from training.train import train

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["The person kneels with both arms raised. Can you give the SMPL pose of this person?",
           "Someone sits with the left leg crossed. Can you give the SMPL pose of this person?"]
OVERRIDES = {"model": {"tiny_family": "llava", "lora_r": 4, "lora_alpha": 8, "gradient_checkpointing": False},
             "data": {"max_length": 512, "mix": {"text": 1, "instruction": 1}},
             "optim": {"lr": 5e-3, "head_lr": 1e-2, "warmup_steps": 1},
             "train": {"max_steps": 2, "batch_size": 2, "grad_accum": 1, "save_every": 1, "eval_every": 0,
                       "progress": False, "torch_threads": 1, "log_every": 1, "export_final": False,
                       "mixed_precision": "no", "device": "cpu"}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(folder, text=8, images=2, instructions=4, image_size=32, caption_words=(3, 5))
    return folder


def _config(data_dir, out):
    torch.set_num_threads(1)
    cfg = json.loads(json.dumps(OVERRIDES))
    cfg["data"]["synthetic_dir"] = str(data_dir)
    cfg["train"]["output_dir"] = str(out)
    return cfg


def _training_poses(step_dir):
    model, tokenizer, processor, manifest, _ = load_trained(step_dir)
    records = [PoseRecord(kind="text", pose_rotmat=np.zeros((24, 3, 3))) for _ in PROMPTS]
    return predict_poses(model.eval(), tokenizer, Template.from_dict(manifest["template"]),
                         make_family_for(model, processor, manifest), records, questions=PROMPTS)


def _served_poses(checkpoint):
    runtime = PoseRuntime.from_checkpoint(checkpoint, device="cpu", dtype="float32", warmup=False)
    return np.stack([runtime.chat(f"s{k}", p, mode="direct").poses[0].rotmat for k, p in enumerate(PROMPTS)])


def _dtypes(path: Path) -> set[str]:
    found = set()
    for file in path.glob("model*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            found |= {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    return found


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(config_from_dict(_config(data_dir, out)))
    return out


@pytest.mark.slow
def test_export_defaults_to_bf16_and_serves_close_to_the_training_model(run, tmp_path):
    assert export_main(["--run", str(run), "--out", str(tmp_path / "bf16")]) == 0
    assert _dtypes(tmp_path / "bf16") == {"BF16"}
    with safe_open(str(tmp_path / "bf16" / "pose_head.safetensors"), framework="pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F32"}
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert manifest["export_dtype"] == "bf16" and manifest["weights"] == "merged"
    expected = _training_poses(run / "checkpoints" / "step-0000002")
    # bf16 weights round to 3 significant digits: the poses move by a fraction of a degree.
    angle = np.degrees(np.arccos(np.clip((np.einsum("njab,njab->nj", _served_poses(tmp_path / "bf16"), expected) - 1) / 2,
                                         -1, 1)))
    assert angle.max() < 2.0


@pytest.mark.slow
def test_export_of_an_earlier_step_in_fp32_poses_like_that_step(run, tmp_path):
    assert export_main(["--run", str(run), "--step", "1", "--out", str(tmp_path / "s1"), "--dtype", "fp32"]) == 0
    assert _dtypes(tmp_path / "s1") == {"F32"}
    step1 = _training_poses(run / "checkpoints" / "step-0000001")
    np.testing.assert_allclose(_served_poses(tmp_path / "s1"), step1, atol=1e-5)
    assert np.abs(step1 - _training_poses(run / "checkpoints" / "step-0000002")).max() > 1e-4
    with pytest.raises(SystemExit):
        export_main(["--run", str(run), "--step", "7", "--out", str(tmp_path / "none")])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_deepspeed_zero2_step_checkpoint_exports_like_the_same_run_without_deepspeed(data_dir, run, tmp_path):
    pytest.importorskip("deepspeed")       # optional dependency: pip install -e ".[deepspeed]"
    shutil.copytree(data_dir, tmp_path / "data")
    cfg = _config(tmp_path / "data", tmp_path / "ds")
    overrides = [f"{section}.{key}={json.dumps(value)}" for section, values in cfg.items() for key, value in values.items()]
    overrides.append(f"train.deepspeed_config={REPO / 'training' / 'deepspeed_zero2.json'}")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    done = subprocess.run([str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "1", "--master_port",
                           str(_free_port()), "--module", "training.train"] + overrides,
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "DistributedType.DEEPSPEED" in done.stdout + done.stderr
    step = tmp_path / "ds" / "checkpoints" / "step-0000002"
    assert (step / "latest").is_file() and not (step / "model.safetensors").exists()
    assert list(step.glob("*/zero_pp_rank_0_mp_rank_00_optim_states.pt"))     # ZeRO's partitioned states

    assert export_main(["--run", str(tmp_path / "ds"), "--out", str(tmp_path / "out"), "--dtype", "fp32"]) == 0
    # ZeRO-2 on one process computes what plain accelerate does: the exports pose alike.
    np.testing.assert_allclose(_served_poses(tmp_path / "out"), _training_poses(run / "checkpoints" / "step-0000002"),
                               atol=1e-4)


@pytest.mark.slow
def test_a_frozen_output_layer_still_trains_the_pose_row_and_exports_it(data_dir, tmp_path):
    # single_24gb.yaml keeps lm_head frozen (its Adam states would not fit): the <POSE> output row must
    # learn anyway, or the model never emits <POSE> in chat mode.
    cfg = _config(data_dir, tmp_path / "run")
    cfg["model"]["train_lm_head"] = False
    result = train(config_from_dict(cfg))
    trained = [n for n, p in result["model"].named_parameters() if p.requires_grad and "lora_" not in n
               and "pose_head" not in n]
    assert len(trained) == 2 and any("embed_tokens" in n for n in trained) and any("lm_head" in n for n in trained)
    assert export_main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--dtype", "fp32"]) == 0
    np.testing.assert_allclose(_served_poses(tmp_path / "out"), _training_poses(tmp_path / "run" / "checkpoints" / "step-0000002"),
                               atol=1e-5)
    from backend.posegpt.checkpoint import load_checkpoint
    from backend.posegpt.tiny import build_tiny_model

    exported, _, _, _ = load_checkpoint(tmp_path / "out")
    start, _, _, _ = build_tiny_model("llava", seed=0)
    pose_id = exported.pose_token_id
    moved = (exported.lm_head.weight - start.lm_head.weight).abs().sum(1)
    assert moved[pose_id] > 0 and moved[torch.arange(len(moved)) != pose_id].max() == 0


def test_4bit_is_refused_where_it_would_be_ignored():
    from training.config import ConfigError, validate

    with pytest.raises(ConfigError, match="load_in_4bit"):
        validate(config_from_dict({"model": {"tiny_family": "llava", "load_in_4bit": True}}))
