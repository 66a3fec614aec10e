"""Serving a studio: fairness under an abusive client, dropping a gone client's work, memory after bursts.

    .venv/bin/python bench/bench_serving.py

Starts ``python -m backend.server`` as its own process (one model worker thread, a tiny LLaVA-style
checkpoint, the default quotas), then:
- fairness: a victim client sends ``VICTIM_TURNS`` text chats one after another, first alone, then while
  an abuser (its own process) keeps its whole quota queued with chats carrying four 4K photos each,
  resending as soon as the server's ``busy`` retry hint allows. Prints the victim's p99
  latency alone and loaded and ``fair_share_p99_ratio`` (loaded / alone; the target is at most 3);
- a gone client: the abuser fills its quota with long generations and closes its socket (what the
  lazy-pirate client does when its requests time out); ``gone_client_drop_s`` is how long until the
  server holds none of its work;
- the soak: ``SOAK_ROUNDS`` rounds of a burst of large queued images from three clients (each filling
  its image quota), RSS of the server process after each round once the queue drained;
  ``rss_growth_ratio`` = RSS after the last round / after the first (target within 1.15). Bounded by
  ``SOAK_LIMIT_S``;
- the KV budget: a server started with ``--kv-budget-tokens KV_BUDGET_TOKENS --max-sessions 20`` serves
  100 sessions two turns each; every reply reports the tokens and sessions cached
  (``kv_cached_tokens_max`` must stay within ``kv_budget_tokens``).
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))      # posegpt_net is a top-level package of this tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_wire  # noqa: E402
from backend.posegpt.tiny import build_tiny_checkpoint  # noqa: E402
from posegpt_net.client import PoseClient  # noqa: E402

VICTIM_TURNS = 60
ABUSER_IMAGES = 4              # photos per abusive chat (the wire's limit)
SOAK_ROUNDS = 10
SOAK_CLIENTS = 3
SOAK_LIMIT_S = 120.0
KV_BUDGET_TOKENS = 2000        # the KV part: 100 sessions against this budget (about 20 sessions' worth)


def photo_jpeg(width: int = 3840, height: int = 2160, seed: int = 0) -> bytes:
    """A photo-like 4K JPEG (smooth shading plus sensor noise), a few megabytes like a camera's."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 300), 128 + 80 * np.cos(y / 200), 128 + 60 * np.sin((x + y) / 500)], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def start_server(checkpoint: Path, workdir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """bench_wire's server start, on the CPU in float32 as this benchmark's figures assume."""
    return bench_wire.start_server(checkpoint, workdir, "--device", "cpu", "--dtype", "float32", *extra)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- fairness -------------------------------------------------------------------------------------------

def victim_latencies(address: str, turns: int = VICTIM_TURNS) -> list[float]:
    """Seconds per text chat of one client sending ``turns`` of them one after another."""
    out = []
    with PoseClient(address, timeout_s=60) as client:
        for i in range(turns):
            start = time.perf_counter()
            reply = client.request("chat", session_id=f"victim-{i % 4}", prompt=f"she raises her arms, turn {i}")
            if reply.kind != "result":
                raise RuntimeError(f"the victim's chat failed: {reply.code}: {reply.message}")
            out.append(time.perf_counter() - start)
    return out


def abuse(address: str, photos: list[bytes], stop, counts, mode: str = "direct") -> None:
    """An abusive client (run in its own process, as it would be on its own machine): keeps more large
    chats in flight than its quota allows until ``stop`` is set; a busy reply makes it wait the server's
    retry hint before trying again. ``counts``: [results, busy replies]. It runs at the lowest priority:
    it stands in for a client on another machine, not for a process competing with the server here."""
    os.nice(19)
    with PoseClient(address, timeout_s=60) as client:
        serial, in_flight, hold_until = 0, set(), 0.0
        while not stop.is_set():
            while len(in_flight) < 10 and time.monotonic() >= hold_until and not stop.is_set():
                serial += 1
                in_flight.add(client.chat(f"abuser-{serial % 16}", "what is the pose?", images=photos,
                                          mode=mode, max_new_tokens=1000))
            for message in client.pump():
                if message.final:
                    in_flight.discard(message.request_id)
                    counts[0] += message.kind == "result"
                    if getattr(message, "code", "") == "busy":
                        counts[1] += 1
                        hold_until = time.monotonic() + message.details.get("retry_after_s", 0.1)
            time.sleep(0.005)


def fair_share(address: str) -> dict[str, float]:
    alone = victim_latencies(address)
    photos = [photo_jpeg(seed=k) for k in range(ABUSER_IMAGES)]
    context = multiprocessing.get_context("spawn")
    stop, counts = context.Event(), context.Array("i", 2)
    abuser = context.Process(target=abuse, args=(address, photos, stop, counts), daemon=True)
    abuser.start()
    time.sleep(3.0)                              # its quota is full before the victim starts
    try:
        loaded = victim_latencies(address)
    finally:
        stop.set()
        abuser.join(30)
    p99_alone, p99_loaded = float(np.percentile(alone, 99)), float(np.percentile(loaded, 99))
    p50_alone, p50_loaded = float(np.median(alone)), float(np.median(loaded))
    return {"victim_p99_alone_ms": p99_alone * 1e3, "victim_p99_loaded_ms": p99_loaded * 1e3,
            "fair_share_p99_ratio": p99_loaded / p99_alone, "victim_p50_alone_ms": p50_alone * 1e3,
            "victim_p50_loaded_ms": p50_loaded * 1e3, "fair_share_p50_ratio": p50_loaded / p50_alone,
            "abuser_results": float(counts[0]),
            "abuser_busy_replies": float(counts[1]), "photo_bytes": float(sum(len(p) for p in photos))}


def gone_client_drop(address: str) -> float:
    """Seconds from an abuser closing its socket (quota full of long generations) to the server holding
    none of its work (its queue empty, as a ping from another client reports)."""
    abuser = PoseClient(address, timeout_s=60)
    for i in range(8 + 1):
        abuser.chat(f"gone-{i}", "talk for a long time", mode="chat", max_new_tokens=1000)
    with PoseClient(address, timeout_s=10) as watcher:
        deadline = time.monotonic() + 10
        while watcher.request("ping").queued < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        if watcher.request("ping").queued == 0:
            raise RuntimeError("the abuser's requests were not queued; nothing to measure")
        abuser.close()
        closed = time.monotonic()
        while watcher.request("ping").queued > 0 and time.monotonic() - closed < 30:
            time.sleep(0.02)
        return time.monotonic() - closed


# --- soak -----------------------------------------------------------------------------------------------

def soak(address: str, pid: int, photos: list[bytes]) -> dict[str, float]:
    """Bursts of large queued images; the server's RSS after each round once its queue drained."""
    rss, start = [], time.monotonic()
    clients = [PoseClient(address, timeout_s=60) for _ in range(SOAK_CLIENTS)]
    try:
        for round_ in range(SOAK_ROUNDS):
            ids = [(c, c.chat(f"soak-{k}-{i}", "what is the pose?", images=photos))
                   for k, c in enumerate(clients) for i in range(8)]
            for c, rid in ids:
                c.wait(rid)
            time.sleep(0.5)                      # the broker trims the heap on its next tick
            rss.append(rss_bytes(pid))
            if time.monotonic() - start > SOAK_LIMIT_S:
                break
    finally:
        for c in clients:
            c.close()
    return {"soak_rounds": float(len(rss)), "rss_first_round_mb": rss[0] / 2 ** 20,
            "rss_last_round_mb": rss[-1] / 2 ** 20, "rss_growth_ratio": rss[-1] / rss[0],
            "soak_s": time.monotonic() - start}


def kv_budget(address: str, sessions: int = 100) -> dict[str, float]:
    """``sessions`` sessions of two turns each against a server started with a small KV budget: the most
    cached tokens and sessions any reply reported, and whether the oldest session still answers."""
    most_tokens = most_sessions = 0.0
    with PoseClient(address, timeout_s=60) as client:
        for turn in range(2):
            for i in range(sessions):
                reply = client.request("chat", session_id=f"kv-{i}", prompt=f"turn {turn}: pose {i}, arms up")
                if reply.kind != "result":
                    raise RuntimeError(f"{reply.code}: {reply.message}")
                most_tokens = max(most_tokens, reply.timings["kv_cached_tokens"])
                most_sessions = max(most_sessions, reply.timings["kv_cached_sessions"])
        budget = client.request("hello").model_card
    return {"kv_budget_tokens": float(budget["kv_budget_tokens"]), "kv_cached_tokens_max": most_tokens,
            "kv_max_sessions": float(budget["max_cached_sessions"]), "kv_cached_sessions_max": most_sessions}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        checkpoint = build_tiny_checkpoint(workdir / "tiny-llava", family="llava")
        process, address = start_server(checkpoint, workdir)
        try:
            figures = fair_share(address)
            figures["gone_client_drop_s"] = gone_client_drop(address)
            figures.update(soak(address, process.pid, [photo_jpeg(seed=10 + k) for k in range(ABUSER_IMAGES)]))
        finally:
            process.terminate()
            process.wait(30)
        process, address = start_server(checkpoint, workdir, "--kv-budget-tokens", str(KV_BUDGET_TOKENS),
                                        "--max-sessions", "20")
        try:
            figures.update(kv_budget(address))
        finally:
            process.terminate()
            process.wait(30)
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")


if __name__ == "__main__":
    main()
