"""A run's state on disk: step checkpoints (``<output_dir>/checkpoints/step-NNNNNNN/``: accelerate's full
state plus ``trainer_state.json`` with the step, the micro-batches drawn and the resolved config), which one
to resume from, and which one to export.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .config import ExperimentConfig, config_to_dict

STATE_FILE = "trainer_state.json"


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """The run's step checkpoints (``checkpoints/step-NNNNNNN``), oldest first."""
    return sorted((Path(output_dir) / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def resolve_resume(cfg: ExperimentConfig) -> Path | None:
    if not cfg.train.resume:
        return None
    if cfg.train.resume == "latest":
        found = checkpoint_dirs(Path(cfg.train.output_dir))
        return found[-1] if found else None
    path = Path(cfg.train.resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint (no {STATE_FILE})")
    return path


def save_training_state(accelerator, cfg: ExperimentConfig, output_dir: Path, step: int, micro_batches: int) -> Path:
    folder = output_dir / "checkpoints" / f"step-{step:07d}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / STATE_FILE).write_text(json.dumps({"step": step, "micro_batches": micro_batches,
                                                     "config": config_to_dict(cfg)}, indent=1))
        for old in checkpoint_dirs(output_dir)[:-cfg.train.keep_last] if cfg.train.keep_last else []:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def read_state(step_dir: str | Path) -> dict:
    """``trainer_state.json`` of a step checkpoint: {"step", "micro_batches", "config"}."""
    path = Path(step_dir) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{step_dir} is not a training checkpoint (no {STATE_FILE})")
    return json.loads(path.read_text())


def find_step_dir(run: str | Path, step: int | None = None) -> Path:
    """A step checkpoint: ``run`` itself when it is one, else the one of ``step`` (default: the latest)
    under ``run``'s ``checkpoints/``."""
    run = Path(run)
    if (run / STATE_FILE).is_file():
        return run
    found = [d for d in checkpoint_dirs(run) if step is None or int(d.name.split("-")[1]) == step]
    if not found:
        raise FileNotFoundError(f"no training checkpoint{f' for step {step}' if step is not None else ''} in {run}")
    return found[-1]
