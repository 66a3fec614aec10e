"""The add-on's connection against misbehaving and dying servers (issue 16): every hang ends in an error
for the chat, and the state says "lost" within 2 s of a server going away mid-request.

A fake server is a ROUTER in a thread running a small script per request kind; no Blender needed."""
from __future__ import annotations

import http.server
import threading
import time

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from blender_addon import connection  # noqa: E402
from posegpt_net import client as client_module  # noqa: E402
from posegpt_net import wire  # noqa: E402

CARD = {"family": "llava", "accepts_images": False, "backbone": "Fake", "pose_token": "<POSE>"}


class FakeServer:
    """A ROUTER answering each request with ``script[kind](request)`` → list of messages (or None: silence).
    ``beat``: request ids to send a repeated heartbeat for every 0.3 s, as posegpt-serve does."""

    def __init__(self, script, port=0):
        self.script, self.beat, self.stopped = script, set(), threading.Event()
        # its own context: an authenticator another test left on the shared one must not judge this server
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.ROUTER)
        self.sock.linger = 0
        if port:
            self.sock.bind(f"tcp://127.0.0.1:{port}")
            self.port = port
        else:
            self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.identity = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        last_beat = 0.0
        while not self.stopped.is_set():
            if self.sock.poll(20):
                identity, *frames = self.sock.recv_multipart()
                self.identity = identity
                request = wire.decode(frames)
                for reply in self.script.get(request.kind, lambda r: None)(request) or ():
                    if reply == "beat":
                        self.beat.add(request.request_id)
                    else:
                        self.sock.send_multipart([identity, *wire.encode(reply)])
            if self.beat and time.monotonic() - last_beat > 0.3 and self.identity is not None:
                last_beat = time.monotonic()
                for rid in self.beat:
                    self.sock.send_multipart([self.identity, *wire.encode(wire.Progress(rid, "running", {}))])
        self.sock.close(linger=0)

    def stop(self):
        """Like a killed process: the socket closes, the client's TCP connection drops."""
        self.stopped.set()
        self.thread.join(timeout=5)
        if not self.thread.is_alive() and not self.context.closed:
            self.context.term()


def hello(request):
    return [wire.Hello(request.request_id, server="fake/1", model_card=CARD)]


def pong(request):
    return [wire.Pong(request.request_id, 1.0)]


def run_until(conn, done, limit_s):
    """Poll until ``done(outcomes)``; returns (outcomes, seconds)."""
    start, outcomes = time.monotonic(), []
    while time.monotonic() - start < limit_s:
        outcomes += conn.poll()
        if done(outcomes):
            break
        time.sleep(0.01)
    return outcomes, time.monotonic() - start


def chat_errors(outcomes):
    return [o for o in outcomes if o.kind == "error" and o.pending is not None and o.pending.kind == "chat"]


@pytest.fixture
def servers():
    made = []
    yield lambda script, **kw: made.append(FakeServer(script, **kw)) or made[-1]
    for server in made:
        server.stop()


def test_a_handshake_answered_with_another_message_fails_the_queued_chat(servers):
    server = servers({"hello": pong})
    conn = connection.Connection(server.address, timeout_s=5.0)
    conn.send_chat("SMPL", "s", "arms up")                   # queued behind the handshake
    outcomes, seconds = run_until(conn, chat_errors, 5.0)
    (error,) = chat_errors(outcomes)
    assert error.error_code == "bad_protocol" and "not a PoseGPT server" in error.error_text
    assert seconds < 1.0 and conn.state == "error" and not conn.busy


def test_an_error_without_request_id_ends_the_chat(servers):
    server = servers({"hello": hello, "chat": lambda r: [wire.Error("", "bad_header", "unreadable header")]})
    conn = connection.Connection(server.address, timeout_s=5.0)
    conn.send_chat("SMPL", "s", "arms up")
    outcomes, seconds = run_until(conn, chat_errors, 5.0)
    (error,) = chat_errors(outcomes)
    assert error.error_code == "bad_header" and "unreadable header" in error.error_text
    assert seconds < 1.0 and not conn.busy and conn.state == "connected"


@pytest.mark.slow
def test_a_server_that_only_beats_ends_the_chat_within_the_timeout(servers):
    server = servers({"hello": hello, "chat": lambda r: ["beat"], "ping": pong})
    conn = connection.Connection(server.address, timeout_s=1.0)
    conn.send_chat("SMPL", "s", "arms up")
    outcomes, seconds = run_until(conn, chat_errors, 5.0)
    (error,) = chat_errors(outcomes)
    assert error.error_code == "timeout" and seconds <= 1.0 + 0.5
    assert conn.state == "connected"                          # the beats proved it alive: not "lost"


def test_an_http_server_on_the_port_is_named_as_such(monkeypatch):
    monkeypatch.setattr(client_module, "HANDSHAKE_WAIT_S", 0.5)
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        conn = connection.Connection(f"tcp://127.0.0.1:{httpd.server_address[1]}", timeout_s=10.0)
        conn.send_chat("SMPL", "s", "arms up")
        outcomes, seconds = run_until(conn, chat_errors, 5.0)
        (error,) = chat_errors(outcomes)
        assert error.error_code == "bad_protocol" and "not a PoseGPT server" in error.error_text
        assert seconds < 3.0 and conn.state == "error"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_killed_mid_request_reads_lost_within_2_s_and_the_chat_ends(servers):
    server = servers({"hello": hello, "chat": lambda r: ["beat"], "ping": pong})
    conn = connection.Connection(server.address, timeout_s=10.0)
    run_until(conn, lambda o: conn.state == "connected", 3.0)
    conn.send_chat("SMPL", "s", "arms up")
    run_until(conn, lambda o: server.beat, 3.0)
    server.stop()
    outcomes, seconds = run_until(conn, lambda o: conn.state == "lost" and chat_errors(o), 5.0)
    assert conn.state == "lost" and conn.status_line().startswith("Lost connection — retrying")
    assert seconds < 2.0
    (error,) = chat_errors(outcomes)
    assert error.error_code == "connection_lost"


@pytest.mark.slow
def test_a_server_that_goes_silent_mid_request_reads_lost_within_2_s(servers):
    server = servers({"hello": hello, "chat": lambda r: ["beat"], "ping": pong})
    conn = connection.Connection(server.address, timeout_s=10.0)
    run_until(conn, lambda o: conn.state == "connected", 3.0)
    conn.send_chat("SMPL", "s", "arms up")
    run_until(conn, lambda o: server.beat, 3.0)
    time.sleep(0.2)
    conn.poll()
    server.beat.clear()                                      # stuck: the TCP connection stays, nothing comes
    _, seconds = run_until(conn, lambda o: conn.state == "lost", 5.0)
    assert conn.state == "lost" and seconds < 2.0


def test_idle_connection_notices_a_dead_server_and_comes_back(servers):
    server = servers({"hello": hello, "ping": pong})
    conn = connection.Connection(server.address, timeout_s=2.0)
    run_until(conn, lambda o: conn.state == "connected", 3.0)
    port = server.port
    server.stop()
    _, seconds = run_until(conn, lambda o: conn.state == "lost", 12.0)
    assert conn.state == "lost" and seconds < 10.0
    servers({"hello": hello, "ping": pong}, port=port)      # the server restarts on the same port
    outcomes, _ = run_until(conn, lambda o: conn.state == "connected", 10.0)
    assert conn.state == "connected" and conn.reconnects == 1 and conn.model_card == CARD
    assert conn.status_line() == "Connected again"


def test_cancel_ends_the_chat_at_once(servers):
    server = servers({"hello": hello, "chat": lambda r: ["beat"], "ping": pong})
    conn = connection.Connection(server.address, timeout_s=10.0)
    run_until(conn, lambda o: conn.state == "connected", 3.0)
    rid = conn.send_chat("SMPL", "s", "arms up")
    cancelled = conn.cancel(rid)
    assert cancelled.prompt == "arms up" and not conn.chats_for("SMPL")
    assert np.isfinite(conn.state_since)


@pytest.mark.slow
def test_an_idle_server_that_stops_answering_pings_reads_lost(servers, monkeypatch):
    """No TCP drop (a frozen server): the pings go unanswered and the state reads lost after LOST_IDLE_S."""
    monkeypatch.setattr(connection, "IDLE_PING_S", 0.2)
    monkeypatch.setattr(connection, "LOST_IDLE_S", 0.8)
    answering = {"pings": True}
    server = servers({"hello": hello, "ping": lambda r: pong(r) if answering["pings"] else None})
    conn = connection.Connection(server.address, timeout_s=5.0)
    run_until(conn, lambda o: conn.state == "connected", 3.0)
    run_until(conn, lambda o: False, 1.0)                    # pings answered: still connected
    assert conn.state == "connected"
    answering["pings"] = False
    _, seconds = run_until(conn, lambda o: conn.state == "lost", 5.0)
    assert conn.state == "lost" and seconds < 0.8 + 0.5
