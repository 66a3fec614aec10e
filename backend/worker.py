"""Model worker: one PoseRuntime behind a DEALER socket, fed one job at a time by the broker.

Run by ``posegpt-serve`` itself, as a thread (``--workers 1``) or one process per GPU:

    python -m backend.worker --connect ipc:///tmp/x/workers.ipc --identity worker-1 --checkpoint CKPT

One thread owns the DEALER and runs the model: no hand-off between threads on the way in or out (each
costs up to a GIL switch interval). While the model generates, the runtime's ``should_stop`` callback,
called at every decoding step, reads the broker's waiting messages without blocking, so a CANCEL stops
the generation at the next step. The broker, not this loop, is what never waits on the model.

The broker ↔ worker messages and the job they carry are backend/jobs.py.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import zmq

from posegpt_net import wire
from posegpt_net.transport import NOBLOCK, readable, recv_frames, send_frames

from . import jobs
from .images import from_pixels
from .jobs import Job

log = logging.getLogger("posegpt.worker")

POLL_MS = 100                 # how often the socket thread looks at stop flags
PROGRESS_INTERVAL_S = 0.1     # forward at most this often the runtime's per-step progress


@dataclass
class _Held:
    """A job received from the broker and not yet answered."""

    identity: bytes
    request_id: str
    job: Job
    images: list[zmq.Frame]           # RGB pixels (decoded by the broker), still in the received frames
    cancel: threading.Event = field(default_factory=threading.Event)


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars / tuples turned into JSON types and non-finite floats into None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _pictures(held: "_Held") -> list:
    """The job's RGB pixel frames as PIL images (over the frames' buffers: no copy)."""
    sizes = held.job.images
    if len(sizes) != len(held.images):
        raise wire.WireError("bad_image", f"{len(held.images)} pixel frames for {len(sizes)} image sizes")
    return [from_pixels(width, height, frame.buffer if hasattr(frame, "buffer") else frame)
            for (width, height), frame in zip(sizes, held.images)]


class ModelWorker:
    """Serves jobs from the broker at ``connect`` with the runtime ``runtime_factory()`` builds."""

    def __init__(self, runtime_factory: Callable[[], Any], connect: str, identity: bytes,
                 context: zmq.Context | None = None, parent_pid: int | None = None):
        self.runtime_factory = runtime_factory
        self.connect = connect
        self.identity = identity
        self.parent_pid = parent_pid
        self._context = context or zmq.Context.instance()
        self._jobs: deque[_Held] = deque()
        self._active: dict[tuple[bytes, str], _Held] = {}   # jobs received and not yet answered
        self._stopping = threading.Event()
        self._socket: zmq.Socket | None = None
        self._owner: int | None = None                      # the thread that may touch the socket
        self.orphaned = False                               # stopped because the server process died
        self._runtime = None

    def stop(self) -> None:
        """Stop after the current step (any thread; the runtime's should_stop sees it)."""
        self._stopping.set()
        for job in list(self._active.values()):
            job.cancel.set()

    def run(self) -> None:
        self._owner = threading.get_ident()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.identity = self.identity
        self._socket.linger = 0
        self._socket.connect(self.connect)
        try:
            runtime = self._runtime = self._load()
            while runtime is not None and not self._stopping.is_set():
                if not self._jobs:
                    if self._socket.poll(POLL_MS):
                        self._read_commands()
                    if self.parent_pid is not None and os.getppid() != self.parent_pid:
                        log.warning("%s: the server process is gone; stopping", self.identity.decode())
                        self.orphaned = True
                        self.stop()
                    continue
                batch = self._next_jobs()
                replies = self._answer_batch(runtime, batch) if len(batch) > 1 else [self._answer(runtime, batch[0])]
                for job, reply in zip(batch, replies):
                    self._active.pop((job.identity, job.request_id), None)
                    send_frames(self._socket, jobs.out_frames(job.identity, wire.encode(reply), *_summary(reply)))
        finally:
            self.stop()
            self._socket.close(linger=0)

    def _load(self):
        try:
            runtime = self.runtime_factory()
            card = json_safe(dict(runtime.model_card))
        except Exception as exc:
            code = getattr(exc, "code", "bad_checkpoint")
            log.exception("%s: the model could not be loaded", self.identity.decode())
            send_frames(self._socket, jobs.failed_frames(code, str(exc)))
            return None
        send_frames(self._socket, jobs.ready_frames(card, os.getpid()))
        return runtime

    def _read_commands(self) -> None:
        """Take every waiting broker message without blocking (only from the socket's own thread)."""
        while readable(self._socket):
            # pixels stay in libzmq's buffers (zmq.Frame): no copy on the way in
            command, *rest = recv_frames(self._socket, NOBLOCK, copy=False)
            command = command.bytes
            if command == jobs.JOB:
                held = _Held(*jobs.parse_job(rest))
                self._active[(held.identity, held.request_id)] = held
                self._jobs.append(held)
            elif command == jobs.CANCEL:
                identity, request_id = (frame.bytes for frame in rest)
                held = self._active.get((identity, request_id.decode()))
                if held is not None:
                    held.cancel.set()
            elif command == jobs.STOP:
                self.stop()

    def _next_jobs(self) -> list[_Held]:
        """The next job, with the direct-mode turns of other sessions the broker sent along with it."""
        batch = [self._jobs.popleft()]
        if batch[0].job.batchable:
            sessions = {batch[0].job.session_id}
            while self._jobs and self._jobs[0].job.batchable and self._jobs[0].job.session_id not in sessions:
                sessions.add(self._jobs[0].job.session_id)
                batch.append(self._jobs.popleft())
        return batch

    def _answer_batch(self, runtime, batch: list[_Held]) -> list[wire.Message]:
        """Direct-mode turns of distinct sessions as one padded forward pass (``runtime.chat_batch``)."""
        replies: list[wire.Message | None] = [None] * len(batch)
        requests, slots = [], []
        for index, job in enumerate(batch):
            try:
                images = _pictures(job)
            except wire.WireError as err:
                replies[index] = wire.Error(job.request_id, err.code, err.message)
                continue
            options = job.job.options
            requests.append(dict(session_id=job.job.session_id, prompt=job.job.prompt, images=images,
                                 mode="direct", max_new_tokens=options["max_new_tokens"],
                                 temperature=options["temperature"], top_p=options["top_p"], seed=options["seed"],
                                 should_stop=job.cancel.is_set))
            slots.append(index)
        start = time.perf_counter()
        try:
            outcomes = runtime.chat_batch(requests) if requests else []
        except Exception as exc:                      # the whole batch failed: every turn says why
            outcomes = [exc] * len(requests)
        finished = time.perf_counter()
        extra = {"model_ms": (finished - start) * 1e3}
        for index, outcome in zip(slots, outcomes):
            job = batch[index]
            if job.cancel.is_set():
                replies[index] = wire.Error(job.request_id, "cancelled", wire.CANCELLED_MESSAGE)
            elif isinstance(outcome, Exception):
                replies[index] = self._error_reply(job, outcome)
            else:
                replies[index] = self._result(job, outcome, extra)
        return replies

    def _in_owner_thread(self) -> bool:
        return threading.get_ident() == self._owner

    def _answer(self, runtime, job: _Held) -> wire.Message:
        try:
            if job.cancel.is_set():
                raise wire.WireError("cancelled", wire.CANCELLED_MESSAGE)
            return self._run(runtime, job)
        except Exception as exc:
            return self._error_reply(job, exc)

    def _error_reply(self, job: _Held, exc: Exception) -> wire.Error:
        code = getattr(exc, "code", None)
        if code not in wire.ERROR_CODES:
            log.error("%s: request %s failed", self.identity.decode(), job.request_id, exc_info=exc)
            code = "internal"
        if code == "cancelled":                      # however far it got, the documented words
            return wire.Error(job.request_id, code, wire.CANCELLED_MESSAGE)
        return wire.Error(job.request_id, code, getattr(exc, "message", str(exc))[:500])

    def _run(self, runtime, job: _Held) -> wire.Message:
        spec = job.job
        if spec.kind in ("reset", "close"):
            existed = spec.session_id in set(runtime.sessions)
            if existed:
                getattr(runtime, spec.kind)(spec.session_id)
            return wire.Closed(job.request_id, spec.session_id, spec.kind, existed)
        images = _pictures(job)
        start = time.perf_counter()
        last_progress = [time.monotonic()]      # a turn shorter than the interval sends no progress

        def should_stop() -> bool:
            # the runtime asks between steps: the moment to read cancels the broker has sent since
            if self._in_owner_thread():
                self._read_commands()
            return job.cancel.is_set() or self._stopping.is_set()

        def on_progress(info: dict) -> None:
            now = time.monotonic()
            if self._in_owner_thread() and now - last_progress[0] >= PROGRESS_INTERVAL_S:
                last_progress[0] = now
                message = wire.Progress(job.request_id, "generating", json_safe(dict(info)))
                send_frames(self._socket, jobs.out_frames(job.identity, wire.encode(message)))

        options = spec.options
        result = runtime.chat(spec.session_id, spec.prompt, images=images, mode=spec.mode,
                              max_new_tokens=options["max_new_tokens"], temperature=options["temperature"],
                              top_p=options["top_p"], seed=options["seed"], should_stop=should_stop,
                              on_progress=on_progress)
        finished = time.perf_counter()
        if job.cancel.is_set():
            return wire.Error(job.request_id, "cancelled", wire.CANCELLED_MESSAGE)
        return self._result(job, result, {"model_ms": (finished - start) * 1e3})

    def _result(self, job: _Held, result, extra_timings: dict) -> wire.Result:
        poses = [{name: np.asarray(getattr(pose, name), dtype=np.float32) for name in wire.POSE_ARRAYS}
                 for pose in result.poses]
        timings = {k: float(v) for k, v in dict(result.timings).items()
                   if isinstance(v, (int, float, np.generic)) and math.isfinite(float(v))}
        timings.update(extra_timings, image_decode_ms=job.job.image_decode_ms)
        store = getattr(self._runtime, "store", None)
        if store is not None:              # what the KV budget holds now (docs/protocol.md, memory bounds)
            timings.update(kv_cached_tokens=float(store.cached_tokens()),
                           kv_cached_sessions=float(len(store.cached_ids())))
        received, dispatched = job.job.received_at, job.job.dispatched_at
        if received and dispatched:
            # queue_ms: waiting for a worker; the broker's decoding of the images (image_decode_ms) happens
            # in that time and is not counted twice
            timings.update(queue_ms=max(0.0, (dispatched - received) * 1e3 - job.job.image_decode_ms),
                           server_ms=(time.monotonic() - received) * 1e3)
        return wire.Result(job.request_id, job.job.session_id, result.text, poses, timings,
                           self.identity.decode(), int(getattr(result, "history_trimmed", 0)))


def _summary(reply: wire.Message) -> tuple[str, float]:
    """What the broker's log line needs of a final reply: its status and the model time."""
    status = reply.code if isinstance(reply, wire.Error) else "ok"
    model_ms = reply.timings.get("model_ms", 0.0) if isinstance(reply, wire.Result) else 0.0
    return status, model_ms


@dataclass(frozen=True)
class KVBudget:
    """The bound on the KV caches a worker's sessions keep (``PoseRuntime.set_kv_budget``): ``tokens`` of
    context in all, else ``gigabytes`` of cache, else sized from the device's free memory once the model
    is loaded; at most ``max_sessions`` sessions holding a cache."""

    tokens: int | None = None
    gigabytes: float | None = None
    max_sessions: int = 32

    def args(self) -> list[str]:
        """The ``python -m backend.worker`` arguments that carry this budget."""
        out = ["--max-sessions", str(self.max_sessions)]
        if self.tokens is not None:
            out += ["--kv-budget-tokens", str(self.tokens)]
        if self.gigabytes is not None:
            out += ["--kv-budget-gb", str(self.gigabytes)]
        return out


def runtime_loader(checkpoint: str, device: str = "auto", dtype: str = "auto",
                   kv: KVBudget = KVBudget()) -> Callable[[], Any]:
    """A factory that loads the project checkpoint with the model runtime (imported only when called) and
    bounds its KV caches."""
    def load():
        from backend.posegpt.runtime import PoseRuntime
        runtime = PoseRuntime.from_checkpoint(checkpoint, device=device, dtype=dtype)
        tokens = runtime.set_kv_budget(kv.tokens, kv.gigabytes, kv.max_sessions)
        log.info("KV cache budget: %d tokens in at most %d sessions", tokens, kv.max_sessions)
        return runtime
    return load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One PoseGPT model worker (started by posegpt-serve).")
    parser.add_argument("--connect", required=True, help="the broker's worker endpoint")
    parser.add_argument("--identity", required=True, help="this worker's socket identity")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--kv-budget-tokens", type=int, default=None)
    parser.add_argument("--kv-budget-gb", type=float, default=None)
    parser.add_argument("--max-sessions", type=int, default=KVBudget.max_sessions)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Ctrl-C reaches the whole process group; the server decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    kv = KVBudget(args.kv_budget_tokens, args.kv_budget_gb, args.max_sessions)
    worker = ModelWorker(runtime_loader(args.checkpoint, args.device, args.dtype, kv), args.connect,
                         args.identity.encode(), parent_pid=args.parent_pid)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run()
    if worker.orphaned and args.connect.startswith("ipc://"):
        # the server was killed without its cleanup (SIGKILL): the last worker out removes its folder
        shutil.rmtree(os.path.dirname(args.connect[len("ipc://"):]), ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
