"""Two model worker processes behind the broker: both serve, and a session stays on its worker."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from backend.posegpt.tiny import build_tiny_checkpoint
from backend.server import serve_in_thread
from posegpt_net.client import PoseClient

pytestmark = pytest.mark.slow      # two model processes start: ~13 s of the suite


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", family="text", seed=3)
    handle = serve_in_thread(checkpoint, workers=2, device="cpu", dtype="float32", ready_timeout_s=180)
    yield handle
    handle.stop()


def _finish(client: PoseClient, ids: list[str], timeout_s: float = 120.0) -> dict:
    finals, deadline = {}, time.monotonic() + timeout_s
    while set(ids) - set(finals) and time.monotonic() < deadline:
        finals.update({e.request_id: e for e in client.pump() if e.final})
        time.sleep(0.005)
    assert not set(ids) - set(finals)
    return finals


def test_two_workers_both_serve_with_sessions_pinned(server):
    with PoseClient(server.address, timeout_s=30) as client:
        hello = client.request("hello")
        assert hello.capabilities["workers"] == 2
        sessions = [f"session-{i}" for i in range(4)]
        first = [client.chat(s, f"turn one of {s}") for s in sessions]       # all in flight at once
        finals = _finish(client, first)
        owner = {}
        for session, rid in zip(sessions, first):
            assert finals[rid].kind == "result", finals[rid].message
            owner[session] = finals[rid].worker
        assert set(owner.values()) == {"worker-0", "worker-1"}              # load spread over both
        second = [client.chat(s, f"turn two of {s}", mode="chat", max_new_tokens=4) for s in sessions]
        finals = _finish(client, second)
        for session, rid in zip(sessions, second):
            assert finals[rid].kind == "result", finals[rid].message
            assert finals[rid].worker == owner[session]            # the cache's holder
            # the worker kept the session's history: its cache covered turn one
            assert finals[rid].timings.get("cached_tokens", 0) > 0
        closed = client.request("close", session_id=sessions[0])
        assert closed.kind == "closed" and closed.existed is True


def test_same_prompt_gives_the_same_pose_on_either_worker(server):
    with PoseClient(server.address, timeout_s=30) as client:
        ids = [client.chat(f"twin-{i}", "both arms raised") for i in range(4)]
        finals = _finish(client, ids)
        workers = {finals[r].worker for r in ids}
        assert workers == {"worker-0", "worker-1"}
        poses = [finals[r].poses[0]["rotmat"] for r in ids]
        for pose in poses[1:]:
            np.testing.assert_allclose(pose, poses[0], atol=1e-5)


def test_a_crashed_worker_fails_its_requests_the_other_serves_and_it_comes_back(server):
    """Runs last: it kills one of the two worker processes."""
    with PoseClient(server.address, timeout_s=30) as client:
        first = client.request("chat", session_id="victim", prompt="arms up")
        victim_worker = first.worker
        rid = client.chat("victim", "talk for a long time", mode="chat", max_new_tokens=1000)
        deadline = time.monotonic() + 30
        while not any(e.request_id == rid and getattr(e, "stage", None) == "generating" for e in client.pump()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(server.server.worker_pids[victim_worker], signal.SIGKILL)
        killed = time.monotonic()
        event = client.wait(rid, timeout_s=10)
        assert (event.kind, event.code) == ("error", "worker_failed")
        assert time.monotonic() - killed < 3.0
        assert client.request("hello").capabilities["workers"] == 1
        again = client.request("chat", session_id="victim", prompt="arms up")      # re-pinned
        assert again.kind == "result" and again.worker != victim_worker
        # the broker starts the dead worker again; once it has loaded, both serve
        deadline = time.monotonic() + 120
        while client.request("hello").capabilities["workers"] < 2:
            assert time.monotonic() < deadline, "the worker was not restarted"
            time.sleep(0.5)
        ids = [client.chat(f"after-restart-{i}", "arms up") for i in range(4)]
        finals = _finish(client, ids)
        assert {finals[r].worker for r in ids} == {"worker-0", "worker-1"}
