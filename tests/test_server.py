"""posegpt-serve in-process over loopback with a tiny real checkpoint: every message type, concurrency,
cancel, heartbeats, limits. The poses that arrive are compared with the runtime's own answer."""
from __future__ import annotations

import io
import logging
import re
import time

import numpy as np
import pytest
from PIL import Image

from backend.posegpt.runtime import PoseRuntime
from backend.posegpt.tiny import build_tiny_checkpoint
from backend.broker import Quotas
from backend.server import serve_in_thread
from posegpt_net import wire
from posegpt_net.client import PoseClient
from smpl_rig import rotations
from smpl_rig.frames import camera_to_smpl_orient

TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llava", family="llava", seed=0)


@pytest.fixture(scope="module")
def reference(checkpoint):
    return PoseRuntime.from_checkpoint(checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def server(checkpoint):
    handle = serve_in_thread(checkpoint, device="cpu", dtype="float32", max_queue=32)
    yield handle
    handle.stop()


@pytest.fixture
def client(server):
    with PoseClient(server.address, timeout_s=TIMEOUT_S) as c:
        yield c


def _jpeg(size=(96, 64), color=(200, 120, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _until_done(clients_and_ids, timeout_s=60.0):
    """Pump every client until each of its requests has a final event; returns {request_id: event}."""
    finals, progress = {}, {}
    deadline = time.monotonic() + timeout_s
    wanted = {rid for _, rid in clients_and_ids}
    clients = {id(c): c for c, _ in clients_and_ids}
    while wanted - set(finals) and time.monotonic() < deadline:
        for c in clients.values():
            for event in c.pump():
                if event.final:
                    finals[event.request_id] = event
                else:
                    progress.setdefault(event.request_id, []).append(event)
        time.sleep(0.005)
    assert not wanted - set(finals), "requests did not finish in time"
    return finals, progress


def test_hello_reports_versions_model_card_capabilities_and_limits(client, reference):
    event = client.request("hello")
    assert event.kind == "hello" and event.ready is True
    assert event.protocol_versions == [wire.PROTOCOL_VERSION]
    card = event.model_card
    assert card["backbone"] == reference.model_card["backbone"] and card["accepts_images"] is True
    assert card["pose_token"] == "<POSE>"
    assert event.capabilities["modes"] == ["direct", "chat"]
    assert event.limits["max_images"] == wire.DEFAULT_LIMITS.max_images
    assert card["image_size"] == reference.family.input_side == 32      # what the server decodes JPEGs down to


def test_ping_pong(client):
    event = client.request("ping")
    assert event.kind == "pong" and abs(event.server_time - time.time()) < 5
    assert event.workers == 1


def test_chat_result_carries_the_runtimes_pose_in_all_forms(client, reference):
    image = _jpeg()
    event = client.request("chat", session_id="pose-check", prompt="a person waving hello", images=[image])
    assert event.kind == "result", event.message
    want = reference.chat("ref-pose-check", "a person waving hello", images=[Image.open(io.BytesIO(image)).convert("RGB")])
    assert event.text == want.text and len(event.poses) == len(want.poses) == 1
    got, ref = event.poses[0], want.poses[0]
    for name in wire.POSE_ARRAYS:
        np.testing.assert_allclose(got[name], getattr(ref, name), atol=1e-5, err_msg=name)
    # the four forms describe one rotation, and the frames are what the header says
    np.testing.assert_allclose(rotations.rotvec_to_rotmat(got["rotvec"]), got["rotmat"], atol=1e-4)
    np.testing.assert_allclose(rotations.d6_to_rotmat(got["d6"]), got["rotmat"], atol=1e-4)
    np.testing.assert_allclose(rotations.quat_wxyz_to_rotmat(got["quat_wxyz"]), got["rotmat"], atol=1e-4)
    np.testing.assert_allclose(got["rotmat_smpl"][0], camera_to_smpl_orient(got["rotmat"][0]), atol=1e-5)
    np.testing.assert_allclose(got["rotmat_upright"][0], np.eye(3), atol=1e-6)
    np.testing.assert_array_equal(got["rotmat_smpl"][1:], got["rotmat"][1:])
    timings = event.timings
    assert {"model_ms", "image_decode_ms", "queue_ms", "server_ms"} <= set(timings)
    assert timings["server_ms"] >= timings["model_ms"] + timings["image_decode_ms"] + timings["queue_ms"]
    assert timings["model_ms"] > 0 and timings["queue_ms"] >= 0 and event.worker == "worker-0"


def test_one_log_line_per_request_with_its_timings(client, caplog):
    with caplog.at_level(logging.INFO, logger="posegpt.server"):
        chat = client.request("chat", session_id="logged", prompt="arms up")
        bad = client.request("chat", session_id="logged", prompt="arms up", images=[_jpeg()[:400]])  # truncated
        client.request("close", session_id="logged")
    messages = [record.getMessage() for record in caplog.records]
    lines = {m.split()[1]: m for m in messages if m.startswith("request ")}
    assert chat.kind == "result" and bad.kind == "error"
    model_ms = float(re.search(r"model_ms=([\d.]+)", lines[chat.request_id]).group(1))
    assert "chat session=logged worker=worker-0 status=ok" in lines[chat.request_id]
    assert model_ms == pytest.approx(chat.timings["model_ms"], abs=0.1)
    assert f"status={bad.code}" in lines[bad.request_id]


def test_chat_mode_streams_progress_and_sessions_reset_and_close(client):
    rid = client.chat("talk", "tell me about a dancer", mode="chat", max_new_tokens=24)
    finals, progress = _until_done([(client, rid)])
    assert finals[rid].kind == "result", finals[rid].message
    assert any(p.stage == "generating" for p in progress.get(rid, [])) or \
        finals[rid].timings["model_ms"] < 100      # a very fast turn may finish between reports
    reset = client.request("reset", session_id="talk")
    assert (reset.kind, reset.session_id, reset.action, reset.existed) == ("closed", "talk", "reset", True)
    closed = client.request("close", session_id="talk")
    assert closed.kind == "closed" and closed.action == "close" and closed.existed is True
    again = client.request("close", session_id="talk")
    assert again.kind == "closed" and again.existed is False


def test_cancel_stops_a_running_generation_and_drops_queued_work(client):
    running = client.chat("cancel-a", "keep talking", mode="chat", max_new_tokens=1000)
    queued = client.chat("cancel-a", "and more", mode="chat", max_new_tokens=1000)   # same session: waits
    deadline = time.monotonic() + TIMEOUT_S
    seen_running = False
    while not seen_running and time.monotonic() < deadline:
        seen_running = any(e.request_id == running and e.kind == "progress" for e in client.pump())
        time.sleep(0.01)
    assert seen_running
    start = time.monotonic()
    client.cancel(queued)
    event = client.wait(queued)
    assert (event.kind, event.code) == ("error", "cancelled")
    client.cancel(running)
    event = client.wait(running)
    assert (event.kind, event.code) == ("error", "cancelled")
    assert time.monotonic() - start < 5.0          # stopped at the next step, not after 1000 tokens
    assert client.request("ping").kind == "pong"


def test_a_slow_request_does_not_block_pings_or_other_sessions(server, client):
    slow = client.chat("slow", "a long story", mode="chat", max_new_tokens=1000)
    time.sleep(0.2)
    with PoseClient(server.address, timeout_s=TIMEOUT_S) as other:
        for _ in range(5):
            start = time.perf_counter()
            assert other.request("ping").kind == "pong"
            assert time.perf_counter() - start < 0.25
        hello = other.request("hello")
        assert hello.kind == "hello"
    # heartbeats keep arriving while the slow request runs
    beats = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and len(beats) < 2:
        beats += [e for e in client.pump() if e.request_id == slow and e.kind == "progress"]
        time.sleep(0.02)
    assert len(beats) >= 2
    client.cancel(slow)
    assert client.wait(slow).code == "cancelled"


def test_eight_concurrent_clients_get_their_own_answers(server, reference):
    prompts = [f"pose number {i}: arms {'up' if i % 2 else 'down'}, knee {i}" for i in range(8)]
    clients = [PoseClient(server.address, timeout_s=TIMEOUT_S) for _ in prompts]
    try:
        ids = [(c, c.chat(f"crowd-{i}", p)) for i, (c, p) in enumerate(zip(clients, prompts))]
        finals, _ = _until_done(ids, timeout_s=120)
    finally:
        for c in clients:
            c.close()
    wants = [reference.chat(f"ref-crowd-{i}", p).poses[0].rotmat for i, p in enumerate(prompts)]
    assert not np.allclose(wants[0], wants[1], atol=1e-3)          # different prompts, different poses
    for (c, rid), want in zip(ids, wants):
        event = finals[rid]
        assert event.kind == "result", event.message
        np.testing.assert_allclose(event.poses[0]["rotmat"], want, atol=1e-4)
    # turns that queued up together ran as one padded batch, and still got their own poses
    assert max(finals[rid].timings.get("batch_size", 1) for _, rid in ids) > 1


def test_errors_come_back_for_bad_requests_not_silence(server, client):
    too_long = client.request("chat", session_id="e", prompt="x" * 5000)
    assert (too_long.kind, too_long.code) == ("error", "prompt_too_long")     # model card limit
    big = _jpeg((32, 32)) + b"\0" * (wire.DEFAULT_LIMITS.max_image_bytes)
    event = client.request("chat", session_id="e", prompt="p", images=[big])
    assert event.code == "image_too_large"
    # raw frames a well-behaved client would never send still get an error reply with the request id
    import zmq
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(server.address)
    try:
        for frames, code in [([b"POSEGPT/9", b"ping", b"v", b"{}"], "unsupported_version"),
                             ([b"POSEGPT/1", b"teleport", b"t", b"{}"], "unknown_type"),
                             ([b"POSEGPT/1", b"result", b"u", b'{"session_id":"s","text":"","num_poses":0,'
                                                                b'"arrays":[]}'], "unknown_type")]:
            sock.send_multipart(frames)
            assert sock.poll(5000)
            reply = wire.decode(sock.recv_multipart())
            assert isinstance(reply, wire.Error) and reply.code == code and reply.request_id == frames[2].decode()
    finally:
        sock.close()


def test_a_client_past_its_quota_hears_busy_with_a_retry_hint_and_cancel_empties_it(client):
    quota = Quotas().client_queued
    ids = [client.chat("flood", f"turn {i}", mode="chat", max_new_tokens=1000) for i in range(quota + 12)]
    finals, _ = _until_done([(client, rid) for rid in ids[quota + 1:]], timeout_s=TIMEOUT_S)
    # one runs, the client's quota waits, the rest are refused at once with a hint when to try again
    refused = [finals[rid] for rid in ids[quota + 1:]]
    assert [e.code for e in refused] == ["busy"] * 11
    assert all(e.details["reason"] == "client_quota" and e.details["retry_after_s"] > 0 for e in refused)
    for rid in ids[:quota + 1]:
        client.cancel(rid)
    finals, _ = _until_done([(client, rid) for rid in ids[:quota + 1]], timeout_s=TIMEOUT_S)
    assert all(finals[rid].code == "cancelled" for rid in ids[:quota + 1])
    assert client.request("ping").queued == 0


def test_a_full_queue_answers_busy_to_everyone(server):
    clients = [PoseClient(server.address, timeout_s=TIMEOUT_S) for _ in range(5)]
    try:
        ids = [(c, c.chat(f"full-{k}", f"turn {i}", mode="chat", max_new_tokens=1000))
               for k, c in enumerate(clients) for i in range(8)]
        time.sleep(0.5)
        finals = {}
        for c in clients:
            finals.update({e.request_id: e for e in c.pump() if e.final})
        # one runs, 32 (max_queue) wait, the rest are refused
        busy = [e for e in finals.values() if e.code == "busy"]
        assert len(busy) == 40 - 33 and all(e.details["reason"] == "queue_full" for e in busy)
        for c, rid in ids:
            c.cancel(rid)
        _until_done([(c, rid) for c, rid in ids if rid not in finals], timeout_s=TIMEOUT_S)
        assert clients[0].request("ping").queued == 0
    finally:
        for c in clients:
            c.close()
