"""The training loop end to end on tiny offline models and synthetic data in the real layouts: resume gives
the losses of an uninterrupted run, the exported checkpoint poses like the training model in the backend."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from backend.posegpt.runtime import PoseRuntime
from backend.posegpt.templates import Template
from training.config import config_from_dict
from training.data.records import PoseRecord
from training.evaluate import predict_poses
from training.export import load_trained
from training.export import main as export_main
from training.synthetic import write_synthetic_dataset
from training.model_setup import make_family_for
from training.train import train

TEXT_PROMPT = "The person kneels with both arms raised. Can you give the SMPL pose of this person?"
IMAGE_PROMPT = "<image>\nWhat is the SMPL pose of the person in the middle of this picture?"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(folder, text=12, images=6, instructions=6, image_size=32, caption_words=(3, 5))
    return folder


def _config(data_dir, out, **train):
    torch.set_num_threads(1)
    return config_from_dict({
        "model": {"tiny_family": "llava", "lora_r": 4, "lora_alpha": 8, "gradient_checkpointing": False},
        "data": {"synthetic_dir": str(data_dir), "max_length": 512},
        "optim": {"lr": 5e-3, "head_lr": 1e-2, "warmup_steps": 1},
        "train": {"output_dir": str(out), "max_steps": 4, "batch_size": 4, "grad_accum": 2, "save_every": 2,
                  "eval_every": 0, "progress": False, "torch_threads": 1, "log_every": 1,
                  "export_dtype": "fp32"} | train})


@pytest.fixture(scope="module")
def full_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run_full")
    return out, train(_config(data_dir, out))


def test_resume_continues_with_the_losses_of_an_uninterrupted_run(data_dir, full_run, tmp_path):
    out, full = full_run
    assert [h["step"] for h in full["history"]] == [1, 2, 3, 4]
    assert all(np.isfinite([h["ce"], h["pose"]]).all() for h in full["history"])
    step2 = out / "checkpoints" / "step-0000002"
    state = json.loads((step2 / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["micro_batches"] == 4 and state["config"]["model"]["lora_r"] == 4
    resumed = train(_config(data_dir, tmp_path / "resumed", resume=str(step2), export_final=False))
    assert [h["step"] for h in resumed["history"]] == [3, 4]
    for a, b in zip(full["history"][2:], resumed["history"]):
        for key in ("loss", "ce", "pose", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (key, a, b)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "ce" in r] == [1, 2, 3, 4] and all("pose" in r for r in logged)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_each_warm_restart_cycle_is_the_one_cycle_schedule_of_its_length(kind):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    from training.train import lr_schedule

    def factors(scheduler, steps):
        return [scheduler.lr_lambdas[0](step) for step in range(steps)]

    def optimizer():
        return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)

    make = get_cosine_schedule_with_warmup if kind == "cosine" else get_linear_schedule_with_warmup
    one = factors(make(optimizer(), 3, 10), 11)
    three = factors(lr_schedule(optimizer(), kind, 3, 30, cycles=3), 31)
    assert three[:10] == one[:10] and three[10:20] == one[:10] and three[20:30] == one[:10]
    assert one[10] == three[10] == three[30] == 0.0          # each cycle ends (and the next starts) at lr 0
    assert factors(lr_schedule(optimizer(), kind, 3, 10), 11) == one


@pytest.mark.parametrize("cycles", [0, 3])
def test_cycles_that_do_not_divide_the_run_are_refused(data_dir, tmp_path, cycles):
    from training.config import ConfigError, validate

    cfg = _config(data_dir, tmp_path, max_steps=8)
    cfg.optim.cycles = cycles
    with pytest.raises(ConfigError, match="optim.cycles"):
        validate(cfg)


def test_a_finished_run_resumed_into_a_second_cycle_is_the_two_cycle_run(data_dir, full_run, tmp_path):
    # The demo's recipe: 2 cycles over 2 × N steps; its first N steps are the one-cycle N-step run, so a
    # finished run continued for a second cycle gives what `make train` gives from scratch.
    out, full = full_run

    def two_cycles(folder, **train_args):
        cfg = _config(data_dir, folder, max_steps=8, export_final=False, **train_args)
        cfg.optim.cycles = 2
        return cfg

    whole = train(two_cycles(tmp_path / "whole"))
    continued = train(two_cycles(tmp_path / "continued", resume=str(out / "checkpoints" / "step-0000004")))
    assert [h["step"] for h in continued["history"]] == [5, 6, 7, 8]
    for a, b in zip(full["history"] + continued["history"], whole["history"]):
        for key in ("loss", "ce", "pose", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (key, a, b)
    assert whole["history"][3]["lr"] == 0.0 < whole["history"][4]["lr"]      # (lr logged for the next step)


@pytest.mark.slow
def test_resume_with_loader_workers_continues_with_the_losses_of_an_uninterrupted_run(data_dir, tmp_path):
    # Worker processes draw their seed when the loader's iterator starts; from torch's RNG that draw would
    # shift LoRA's dropout masks after a resume (4.4e-4 in the loss, measured): the loader has its own.
    def config(out, **train_args):
        cfg = _config(data_dir, out, export_final=False, **train_args)
        cfg.data.num_workers = 1
        return cfg

    full = train(config(tmp_path / "full"))
    resumed = train(config(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoints" / "step-0000002")))
    assert [h["step"] for h in resumed["history"]] == [3, 4]
    for a, b in zip(full["history"][2:], resumed["history"]):
        for key in ("loss", "ce", "pose"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (key, a, b)


def _training_predictions(step_dir, prompts, images):
    model, tokenizer, processor, manifest, _ = load_trained(step_dir)
    family = make_family_for(model, processor, manifest)
    template = Template.from_dict(manifest["template"])
    records = [PoseRecord(kind="image" if im else "text", pose_rotmat=np.zeros((24, 3, 3)),
                          load_image=(lambda im=im: im) if im else None) for im in images]
    return predict_poses(model.eval(), tokenizer, template, family, records, questions=prompts)


def _runtime_predictions(checkpoint, prompts, images):
    runtime = PoseRuntime.from_checkpoint(checkpoint, device="cpu", dtype="float32", warmup=False)
    return np.stack([runtime.chat(f"s{k}", prompt, images=[im] if im else [], mode="direct").poses[0].rotmat
                     for k, (prompt, im) in enumerate(zip(prompts, images))])


def test_merged_export_poses_like_the_training_model(data_dir, full_run):
    out, full = full_run
    image = Image.fromarray(np.random.default_rng(5).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    prompts, images = [TEXT_PROMPT, IMAGE_PROMPT], [None, image]
    expected = _training_predictions(out / "checkpoints" / "step-0000004", prompts, images)
    got = _runtime_predictions(full["final"], prompts, images)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    manifest = json.loads((full["final"] / "manifest.json").read_text())
    assert manifest["weights"] == "merged" and manifest["training_config"]["train"]["max_steps"] == 4
    # Training moved the pose head away from its random start: the poses are not the tiny model's.
    assert np.abs(expected).max() > 0


def test_adapter_export_from_a_base_checkpoint_poses_like_the_training_model(data_dir, tmp_path):
    from backend.posegpt.tiny import build_tiny_checkpoint

    base = build_tiny_checkpoint(tmp_path / "base", family="llava", seed=3)
    cfg = _config(data_dir, tmp_path / "run", max_steps=2, export_final=False)
    cfg.model.tiny_family, cfg.model.checkpoint = "", str(base)
    cfg.data.mix = {"text": 1, "instruction": 1}
    train(cfg)
    assert export_main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "adapter"), "--adapter",
                        "--dtype", "fp32"]) == 0
    manifest = json.loads((tmp_path / "adapter" / "manifest.json").read_text())
    assert manifest["weights"] == "adapter" and manifest["base_model"] == str(base.resolve())
    expected = _training_predictions(tmp_path / "run" / "checkpoints" / "step-0000002", [TEXT_PROMPT], [None])
    np.testing.assert_allclose(_runtime_predictions(tmp_path / "adapter", [TEXT_PROMPT], [None]), expected, atol=1e-5)


@pytest.mark.slow
def test_tiny_model_overfits_32_text_to_pose_samples(tmp_path):
    """The whole text→pose path (PoseScript/AMASS reader, templates, masking, CE + pose L1, LoRA + head
    updates) must be able to memorise 32 samples: MPJRE below 5° on them, in the direct-mode prompt the
    backend uses. The backbone is a tiny random one re-drawn to mix context (model_setup.remix_tiny_backbone);
    LoRA dropout is off because this is a memorisation probe."""
    from training.evaluate import evaluate_records, rest_skeleton
    from training.data.posescript import PoseScript

    torch.set_num_threads(1)
    paths = write_synthetic_dataset(tmp_path / "data", text=32, images=1, instructions=1, caption_words=(2, 4))
    cfg = config_from_dict({
        "model": {"tiny_family": "text", "tiny_init": "mixing", "tiny_hidden": 128, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
                  "gradient_checkpointing": False},
        "data": {"posescript_dir": paths["posescript_dir"], "amass_dir": paths["amass_dir"], "mix": {"text": 1},
                 "template_pool": 1},
        "optim": {"lr": 5e-4, "head_lr": 1e-2, "warmup_steps": 0, "schedule": "cosine"},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 120, "batch_size": 32, "grad_accum": 1,
                  "pose_weight": 1.0,
                  "save_every": 0, "eval_every": 0, "export_final": False, "progress": False, "torch_threads": 1,
                  "log_every": 50}})
    result = train(cfg)
    data = PoseScript(paths["posescript_dir"], paths["amass_dir"], "train")
    records = [data[i] for i in range(len(data))]
    assert len(records) == 32
    model = result["model"]
    family = make_family_for(model, result["processor"], result["manifest"])
    template = Template.from_dict(result["manifest"]["template"])
    scores = evaluate_records(model, result["tokenizer"], template, family, records, rest_skeleton()[0], batch_size=32)
    print("overfit:", scores, result["history"][-1])
    assert scores["mpjre_deg"] < 5.0, (scores, result["history"][-1])
    assert result["history"][-1]["pose"] < 0.2 * result["history"][0]["pose"]


def test_qwen2_vl_export_poses_like_the_training_model(data_dir, tmp_path):
    """Qwen2-VL's 3-D rotary positions: training (collate) and the runtime must build the same ones."""
    cfg = _config(data_dir, tmp_path / "run", max_steps=2)
    cfg.model.tiny_family = "qwen2_vl"
    result = train(cfg)
    image = Image.fromarray(np.random.default_rng(6).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    prompts, images = [TEXT_PROMPT, IMAGE_PROMPT], [None, image]
    expected = _training_predictions(tmp_path / "run" / "checkpoints" / "step-0000002", prompts, images)
    np.testing.assert_allclose(_runtime_predictions(result["final"], prompts, images), expected, atol=1e-5)
