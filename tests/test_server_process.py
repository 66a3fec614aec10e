"""posegpt-serve as a real process: killed mid-request, restarted, stopped with SIGTERM, --help, warnings."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.posegpt.tiny import build_tiny_checkpoint
from posegpt_net.client import PoseClient

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", family="llava", seed=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m backend.server`` with its output in files; ``start`` returns once it listens."""

    def __init__(self, tmp_path: Path, checkpoint: Path, bind: str, *extra: str):
        self.args = [sys.executable, "-m", "backend.server", "--checkpoint", str(checkpoint), "--bind", bind,
                     "--device", "cpu", "--dtype", "float32", *extra]
        self.tmp_path = tmp_path
        self.process: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> "ServerProcess":
        self.runs += 1
        self.out = self.tmp_path / f"server{self.runs}.out"
        self.err = self.tmp_path / f"server{self.runs}.err"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=self.out.open("w"),
                                        stderr=self.err.open("w"))
        deadline = time.monotonic() + START_TIMEOUT_S
        while "listening on" not in self.out.read_text():
            assert self.process.poll() is None, self.err.read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _wait_running(client: PoseClient, request_id: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in client.pump():
            assert event.request_id != request_id or not event.final, event
            if event.request_id == request_id and getattr(event, "stage", None) in ("running", "generating"):
                return
        time.sleep(0.01)
    raise AssertionError("the request never started running")


def test_help_lists_every_option():
    result = subprocess.run([sys.executable, "-m", "backend.server", "--help"], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert result.returncode == 0
    for option in ("--checkpoint", "--bind", "tcp://127.0.0.1:5555", "--workers", "--curve", "--no-curve",
                   "--keys-dir", "--allow-dir", "--max-image-bytes", "--max-image-pixels", "--max-prompt-chars",
                   "--log-level"):
        assert option in result.stdout


@pytest.mark.slow
def test_killed_server_gives_an_error_within_the_timeout_then_works_after_restart(tmp_path, checkpoint):
    port = free_port()
    server = ServerProcess(tmp_path, checkpoint, f"tcp://127.0.0.1:{port}").start()
    timeout_s = 3.0
    client = PoseClient(f"tcp://127.0.0.1:{port}", timeout_s=timeout_s)
    try:
        assert client.request("ping").kind == "pong"
        rid = client.chat("s", "talk for a long time", mode="chat", max_new_tokens=1000)
        _wait_running(client, rid)
        server.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        event = client.wait(rid, timeout_s=timeout_s + 5)
        assert event.kind == "error" and event.code in ("timeout", "connection_lost")
        assert time.monotonic() - killed <= timeout_s + 1.0
        server.process.wait()
        server.start()                                   # same port: the client reconnects by itself
        event = client.request("chat", session_id="s2", prompt="a person waving")
        assert event.kind == "result", event.message
        assert event.poses[0]["rotmat"].shape == (24, 3, 3)
        # the generation that was in flight was not re-run by the new server
        # the request's log line is written just after its reply is sent: give it a moment to land
        deadline = time.monotonic() + 5.0
        while server.err.read_text().count("status=ok") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "talk for a long time" not in server.err.read_text()
        assert server.err.read_text().count("status=ok") == 1
    finally:
        client.close()
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_gracefully(tmp_path, checkpoint, signum):
    port = free_port()
    # bound to every interface without CURVE: the server must say how dangerous that is
    server = ServerProcess(tmp_path, checkpoint, f"tcp://0.0.0.0:{port}").start()
    client = PoseClient(f"tcp://127.0.0.1:{port}", timeout_s=10.0)
    try:
        assert "WARNING" in server.err.read_text() and "CURVE" in server.err.read_text()
        running = client.chat("a", "talk", mode="chat", max_new_tokens=1000)
        queued = client.chat("a", "queued behind it", mode="chat", max_new_tokens=5)
        _wait_running(client, running)
        server.process.send_signal(signum)
        events = {rid: client.wait(rid, timeout_s=15) for rid in (running, queued)}
        assert all(e.kind == "error" and e.code == "server_shutdown" for e in events.values()), events
        assert server.process.wait(timeout=30) == 0
        assert "shutdown:" in server.err.read_text()
    finally:
        client.close()
        server.stop()
