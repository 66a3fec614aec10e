"""Every launcher docs/training.md shows starts ``training.train`` as shown, here on CPU with 2 processes.

Each launcher has its own argument form: the DeepSpeed launcher adds ``--local_rank=N`` to the script's
arguments (and ``--module`` runs a module), accelerate and torchrun pass the rank in the environment only,
and a multi-node torchrun is one launcher per node meeting at a rendezvous address. On CPU the processes
join one gloo process group (accelerate's MULTI_CPU); the DeepSpeed engine itself needs GPUs and is left
to the GPU check (docs/training.md, "Launching on many GPUs").
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _script_args(tmp_path: Path) -> list[str]:
    return ["--config", str(REPO / "training/configs/smoke_tiny.yaml"),
            f"train.output_dir={tmp_path / 'run'}", f"data.synthetic_dir={tmp_path / 'data'}",
            "train.max_steps=2", "train.save_every=0", "train.eval_every=0", "train.progress=false",
            "train.export_final=false", "train.device=cpu", "data.limit_per_source=8"]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("LOCAL_RANK", None)
    return env


def _check(outputs: list[str], processes: int = 2):
    text = "\n".join(outputs)
    for rank in range(processes):
        assert f"process {rank} of {processes}" in text, text[-3000:]
    assert text.count("step 2: loss") == processes, text[-3000:]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from training.synthetic import write_synthetic_dataset

    folder = tmp_path_factory.mktemp("launch-data")
    write_synthetic_dataset(folder, text=8, images=4, instructions=4, image_size=32, caption_words=(3, 5))
    return folder


def _launch(command: list[str], tmp_path: Path, data_dir: Path, cwd: Path | None = None) -> str:
    shutil.copytree(data_dir, tmp_path / "data", dirs_exist_ok=True)
    done = subprocess.run(command + _script_args(tmp_path), cwd=cwd or tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert (tmp_path / "run" / "checkpoints" / "step-0000002" / "trainer_state.json").is_file()
    return done.stdout + done.stderr


def test_the_deepspeed_launchers_local_rank_argument_is_accepted(monkeypatch):
    from training import train as train_module

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda cfg: seen.setdefault("cfg", cfg) and {"history": [], "final": None})
    # main() sets LOCAL_RANK itself: set then delete it through monkeypatch, so the variable is gone again
    # after the test (a leaked LOCAL_RANK makes every later Accelerator think it is distributed).
    monkeypatch.setenv("LOCAL_RANK", "unset-after-the-test")
    monkeypatch.delenv("LOCAL_RANK")
    args = ["--local_rank=1", "--config", str(REPO / "training/configs/smoke_tiny.yaml"), "train.max_steps=3"]
    assert train_module.main(args) == 0
    assert seen["cfg"].train.max_steps == 3 and os.environ["LOCAL_RANK"] == "1"
    monkeypatch.delenv("LOCAL_RANK")
    assert train_module.main(["--local-rank", "0", "--config", str(REPO / "training/configs/smoke_tiny.yaml")]) == 0
    assert os.environ["LOCAL_RANK"] == "0"
    monkeypatch.delenv("LOCAL_RANK")


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, data_dir):
    out = _launch([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
                   "-m", "training.train"], tmp_path, data_dir)
    _check([out])


@pytest.mark.slow
def test_accelerate_launch_two_processes(tmp_path, data_dir):
    out = _launch([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                   "-m", "training.train"], tmp_path, data_dir)
    _check([out])


@pytest.mark.slow
def test_accelerate_launch_with_the_shipped_config_file(tmp_path, data_dir):
    # The docs' command, run from the repository root as shown (the config names the ZeRO JSON relative
    # to it); --num_processes 2 instead of the file's 8. Its DEEPSPEED type needs deepspeed installed.
    pytest.importorskip("deepspeed")
    out = _launch([str(BIN / "accelerate"), "launch", "--config_file", "training/accelerate_config.yaml",
                   "--num_processes", "2", "--main_process_port", str(_free_port()), "-m", "training.train"],
                  tmp_path, data_dir, cwd=REPO)
    _check([out])


@pytest.mark.slow
def test_deepspeed_launcher_two_processes(tmp_path, data_dir):
    pytest.importorskip("deepspeed")       # optional dependency: pip install -e ".[deepspeed]"
    out = _launch([str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(_free_port()),
                   "--module", "training.train"], tmp_path, data_dir)
    assert "--local_rank=1" in out         # the argument form that used to stop the script (exit 2)
    _check([out])


@pytest.mark.slow
def test_torchrun_two_nodes_meet_at_a_rendezvous(tmp_path, data_dir):
    shutil.copytree(data_dir, tmp_path / "data")
    port = _free_port()
    nodes = [subprocess.Popen([str(BIN / "torchrun"), "--nnodes", "2", "--nproc_per_node", "1", "--node_rank",
                               str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
                               "-m", "training.train"] + _script_args(tmp_path),
                              cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    _check(outputs)
