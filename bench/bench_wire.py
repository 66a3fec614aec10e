"""Wire overhead and client concurrency of posegpt-serve, on loopback with a tiny checkpoint.

    .venv/bin/python bench/bench_wire.py

Starts ``python -m backend.server`` as its own process (one model worker thread), then:
- sends ``REQUESTS`` direct-mode chats each carrying the same 1920×1080 JPEG, one at a time, and takes
  the client's round trip minus the time the server spent in the model and decoding the JPEG (both
  reported in the result's timings): what the network path adds to calling the runtime in-process;
- runs text chats with one client, then with 8 clients each keeping one request in flight, alternating
  for ``ROUNDS`` rounds, and reports the ratio of completed requests per second (8 / 1). Direct-mode
  turns of different sessions that queue up together run as one padded batch in the worker.

Prints ``wire_overhead_p50_ms``, ``wire_overhead_p99_ms`` (target p50 ≤ 3), ``clients8_throughput_ratio``
and, for context, the JPEG decode and model times and a ping's round trip (the machine's floor: a ping
crosses two of the four socket hops a chat crosses, and never reaches the worker thread).
"""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))      # posegpt_net is a top-level package of this tree

from backend.posegpt.tiny import build_tiny_checkpoint  # noqa: E402
from posegpt_net.client import PoseClient  # noqa: E402

REQUESTS = 200             # p50 of 200 round trips: on a shared VM fewer wander by a millisecond run to run
WARMUP = 5
THROUGHPUT_S = 2.5            # per round; rounds alternate 1 and 8 clients so machine load drifts cancel
ROUNDS = 3
CLIENTS = 8
START_TIMEOUT_S = 180


def photo_jpeg(width: int = 1920, height: int = 1080) -> bytes:
    """A photo-like JPEG (smooth shading plus sensor-like noise), about the size a camera writes."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 300), 128 + 80 * np.cos(y / 200), 128 + 60 * np.sin((x + y) / 500)], -1)
    pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def start_server(checkpoint: Path, workdir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``posegpt-serve`` on a free loopback port (``extra``: more command-line flags); returns it and its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = workdir / "server.out"
    process = subprocess.Popen(
        [sys.executable, "-m", "backend.server", "--checkpoint", str(checkpoint), "--bind",
         f"tcp://127.0.0.1:{port}", "--log-level", "WARNING", *extra],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out.open("w"),
        stderr=(workdir / "server.err").open("w"))
    deadline = time.monotonic() + START_TIMEOUT_S
    while "listening on" not in out.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((workdir / "server.err").read_text()[-2000:])
        time.sleep(0.1)
    return process, f"tcp://127.0.0.1:{port}"


def wire_overhead(address: str, jpeg: bytes) -> dict[str, float]:
    overheads, inside, decode, model = [], [], [], []
    with PoseClient(address, timeout_s=60) as client:
        for i in range(WARMUP + REQUESTS):
            start = time.perf_counter()
            event = client.request("chat", session_id=f"bench-{i}", prompt="what is the pose of the person?",
                                   images=[jpeg])
            round_trip = (time.perf_counter() - start) * 1e3
            if event.kind != "result":
                raise RuntimeError(f"{event.code}: {event.message}")
            client.request("close", session_id=f"bench-{i}")
            if i >= WARMUP:
                timings = event.timings
                overheads.append(round_trip - timings["model_ms"] - timings["image_decode_ms"])
                inside.append(timings["server_ms"] - timings["model_ms"] - timings["image_decode_ms"])
                decode.append(timings["image_decode_ms"])
                model.append(timings["model_ms"])
        pings = []
        for _ in range(REQUESTS):
            start = time.perf_counter()
            client.request("ping")
            pings.append((time.perf_counter() - start) * 1e3)
    return {"wire_overhead_p50_ms": np.percentile(overheads, 50), "wire_overhead_p99_ms": np.percentile(overheads, 99),
            "server_side_overhead_p50_ms": np.percentile(inside, 50),
            "image_decode_p50_ms": np.percentile(decode, 50), "model_p50_ms": np.percentile(model, 50),
            "ping_round_trip_p50_ms": np.percentile(pings, 50)}


def throughput(address: str, clients: int) -> tuple[int, float]:
    """(completed text chats, seconds) with ``clients`` clients, each keeping one request in flight."""
    pool = [PoseClient(address, timeout_s=60) for _ in range(clients)]
    done, serial = 0, 0

    def submit(c: PoseClient, n: int) -> None:
        c.chat(f"tp-{id(c)}-{n}", f"pose {n}: arms up, one knee bent")

    try:
        for n, c in enumerate(pool):
            submit(c, n)
        start = time.perf_counter()
        while time.perf_counter() - start < THROUGHPUT_S:
            for c in pool:
                for event in c.pump():
                    if event.final:
                        if event.kind != "result":
                            raise RuntimeError(f"{event.code}: {event.message}")
                        done += 1
                        serial += 1
                        submit(c, serial + clients)
            zmq.select([c.socket for c in pool], [], [], 0.05)      # sleep until a reply arrives
        elapsed = time.perf_counter() - start
        for c in pool:                      # let the requests still in flight finish before the next round
            while c.pending:
                c.wait(c.pending[0])
        return done, elapsed
    finally:
        for c in pool:
            c.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-wire-") as tmp:
        workdir = Path(tmp)
        checkpoint = build_tiny_checkpoint(workdir / "tiny-llava", family="llava")
        jpeg = photo_jpeg()
        process, address = start_server(checkpoint, workdir, "--max-queue", "256")
        try:
            figures = wire_overhead(address, jpeg)
            totals = {1: [0, 0.0], CLIENTS: [0, 0.0]}
            for _ in range(ROUNDS):
                for clients in (1, CLIENTS):
                    done, elapsed = throughput(address, clients)
                    totals[clients][0] += done
                    totals[clients][1] += elapsed
            one = totals[1][0] / totals[1][1]
            many = totals[CLIENTS][0] / totals[CLIENTS][1]
        finally:
            process.terminate()
            process.wait(30)
    print(f"jpeg_bytes: {len(jpeg)}")
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")
    print(f"clients1_requests_per_s: {one:.2f}")
    print(f"clients8_requests_per_s: {many:.2f}")
    print(f"clients8_throughput_ratio: {many / one:.3f}")


if __name__ == "__main__":
    main()
