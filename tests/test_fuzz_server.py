"""Fuzz a real server process with 10 000+ malformed, truncated, oversized and wrong-version messages:
every one gets an error reply, memory stays flat, and the server still answers a ping and a real chat."""
from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import zmq

from backend.posegpt.tiny import build_tiny_checkpoint
from posegpt_net import wire
from posegpt_net.client import PoseClient

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = 10_500
BATCH = 250
MAX_IMAGE_BYTES = 64 * 1024
MAX_HEADER_BYTES = 4096
MAX_PROMPT_CHARS = 1000
RSS_GROWTH_LIMIT_KB = 30 * 1024


def _png_claiming(width: int, height: int, pad: int = 0) -> bytes:
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + b"\0" * pad)


def _chat_header(**fields) -> bytes:
    header = {"session_id": "s", "prompt": "arms up", "mode": "direct", "options": {}, "images": []}
    header.update(fields)
    return json.dumps(header).encode()


BAD_FIELDS = {"prompt": [None, 5, [1], "", " "], "session_id": [None, 5, "", "x" * 200], "mode": [None, 5, "poem"],
              "options": [None, 5, [1]], "images": [None, 5, {"a": 1}, [{}]]}


def malformed_messages(rng: random.Random):
    """Endless stream of messages that must all be refused (none is a valid request)."""
    valid = [wire.encode(wire.Chat("v", "s", "arms up", [_png_claiming(8, 8)])), wire.encode(wire.Ping("p")),
             wire.encode(wire.Hello("h", client="x")), wire.encode(wire.Reset("r", "s"))]
    rid = lambda: f"f{rng.randrange(10**9)}".encode()  # noqa: E731
    makers = [
        lambda: [rng.randbytes(rng.randint(0, 48)) for _ in range(rng.randint(1, 6))],            # garbage
        lambda: [b"POSEGPT/" + str(rng.choice([0, 2, 10, 99])).encode(), b"ping", rid(), b"{}"],  # version
        lambda: [rng.choice([b"POSEGPT", b"POSEGPT/", b"posegpt/1", b"POSEGPT/1.0"]), b"ping", rid(), b"{}"],
        lambda: [wire.PROTOCOL, rng.randbytes(rng.randint(0, 12)), rid(), b"{}"],                  # unknown type
        lambda: [wire.PROTOCOL, rng.choice([b"result", b"pong", b"progress", b"closed"]), rid(), b"{}"],
        lambda: rng.choice(valid)[:rng.randint(1, 3)],                                           # truncated frames
        lambda: (lambda f: f[:3] + [f[3][:rng.randrange(len(f[3]))]] + f[4:])(rng.choice(valid)),  # cut JSON
        lambda: [wire.PROTOCOL, b"ping", rid(), b"{" + b" " * (MAX_HEADER_BYTES + 10) + b"}"],     # header size
        lambda: [wire.PROTOCOL, b"chat", rid(), _chat_header(images=[{}]),
                 _png_claiming(8, 8, pad=MAX_IMAGE_BYTES)],                                        # image bytes
        lambda: [wire.PROTOCOL, b"chat", rid(), _chat_header(images=[{}]),
                 _png_claiming(rng.randint(20000, 60000), rng.randint(20000, 60000))],             # pixels
        lambda: [wire.PROTOCOL, b"chat", rid(), _chat_header(images=[{}]),
                 rng.choice([b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"RIFF0000WEBPVP8X", b"GIF89a"])
                 + rng.randbytes(rng.randint(0, 30))],                                              # bad image
        lambda: [wire.PROTOCOL, b"ping", rid(), b"{}"] + [b""] * rng.randint(5, 40),              # frames
        lambda: [wire.PROTOCOL, b"ping", rng.choice([b"", b"x" * 65, b"\xff\xfe", b"a\x00b"]), b"{}"],
        lambda: [wire.PROTOCOL, b"chat", rid(), _chat_header(**(lambda k: {k: rng.choice(BAD_FIELDS[k])})(
                 rng.choice(list(BAD_FIELDS))))],
        lambda: [wire.PROTOCOL, b"chat", rid(), _chat_header(options={rng.choice(
                 ["max_new_tokens", "temperature", "top_p", "seed"]): rng.choice([-1, "x", float("inf"), [1]])})],
        lambda: [wire.PROTOCOL, b"chat", rid(), _chat_header(prompt="x" * rng.randint(MAX_PROMPT_CHARS + 1, 3000))],
        lambda: [wire.PROTOCOL, b"chat", rid(), _chat_header(prompt=" " * rng.randint(0, 5))],
        lambda: [wire.PROTOCOL, b"chat", rid(), b"[" * rng.randint(1000, 4000)],                  # deep JSON
        lambda: [wire.PROTOCOL, b"chat", rid(), rng.randbytes(rng.randint(1, 200))],             # binary header
    ]
    while True:
        yield rng.choice(makers)()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    checkpoint = build_tiny_checkpoint(tmp / "tiny", family="llava", seed=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, err = tmp / "server.out", tmp / "server.err"
    with out.open("w") as out_file, err.open("w") as err_file:     # the child keeps its own copies
        process = subprocess.Popen(
            [sys.executable, "-m", "backend.server", "--checkpoint", str(checkpoint),
             "--bind", f"tcp://127.0.0.1:{port}", "--device", "cpu", "--dtype", "float32",
             "--max-image-bytes", str(MAX_IMAGE_BYTES), "--max-header-bytes", str(MAX_HEADER_BYTES),
             "--max-prompt-chars", str(MAX_PROMPT_CHARS), "--log-level", "WARNING"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out_file, stderr=err_file)
    deadline = time.monotonic() + 120
    while "listening on" not in out.read_text():
        assert process.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
        time.sleep(0.1)
    yield process, f"tcp://127.0.0.1:{port}"
    process.kill()
    process.wait()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_fuzzed_server_answers_every_message_and_keeps_serving(server):
    process, address = server
    rng = random.Random(1234)
    messages = malformed_messages(rng)
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvhwm = sock.sndhwm = 0
    sock.connect(address)
    codes: dict[str, int] = {}
    sent = replies = 0
    baseline = None
    try:
        while sent < MESSAGES:
            for _ in range(BATCH):
                sock.send_multipart(next(messages))
                sent += 1
            while replies < sent:
                assert sock.poll(10_000), f"no reply after {replies} of {sent} messages"
                reply = wire.decode(sock.recv_multipart(), wire.CLIENT_LIMITS)
                assert isinstance(reply, wire.Error), reply
                codes[reply.code] = codes.get(reply.code, 0) + 1
                replies += 1
            if baseline is None and sent >= 1000:
                baseline = _rss_kb(process.pid)
        grown = _rss_kb(process.pid) - baseline
    finally:
        sock.close()
    assert replies == sent >= 10_000
    for code in ("bad_protocol", "unsupported_version", "unknown_type", "too_few_frames", "too_many_frames",
                 "bad_request_id", "header_too_large", "bad_header", "image_too_large", "image_too_many_pixels",
                 "bad_image", "prompt_too_long", "empty_prompt"):
        assert codes.get(code, 0) > 0, (code, codes)
    assert grown < RSS_GROWTH_LIMIT_KB, f"RSS grew by {grown} kB over {sent} malformed messages"

    # a frame beyond the size libzmq accepts drops that connection, not the server
    big = context.socket(zmq.DEALER)
    big.linger = 0
    big.connect(address)
    big.send_multipart(wire.encode(wire.Ping("huge"))[:3] + [b" " * (MAX_IMAGE_BYTES * 4)])
    time.sleep(0.3)
    big.close()

    with PoseClient(address, timeout_s=30) as client:
        assert client.request("ping").kind == "pong"
        event = client.request("chat", session_id="after-fuzz", prompt="a person waving hello")
        assert event.kind == "result", event.message
        assert event.poses[0]["rotmat"].shape == (24, 3, 3)
    assert process.poll() is None
