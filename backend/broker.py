"""Load-balancing broker: clients on a ROUTER in front, model workers on a ROUTER behind.

The ZeroMQ guide's load-balancing pattern with one change: a session is pinned to the worker that holds
its KV cache and history, so the broker keeps one queue per worker instead of one shared queue. The
loop only moves frames, checks limits and answers cheap requests (hello, ping, cancel of queued work);
it never waits on a model. Every request it holds gets a heartbeat at least every ``HEARTBEAT_S``.

Run through ``posegpt-serve`` (backend/server.py), which binds the sockets and starts the workers.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Callable

import zmq

from posegpt_net import wire
from posegpt_net.transport import NOBLOCK, readable, recv_frames, send_frames

from . import jobs
from .jobs import Job

log = logging.getLogger("posegpt.server")

HEARTBEAT_S = 0.5          # a held request hears from the server at least this often
POLL_MS = 50               # loop tick when idle: heartbeats and stop flag
MAX_BATCH_RECV = 256       # messages taken from one socket per tick, so neither side starves
MAX_JOB_BATCH = 8          # direct-mode turns of distinct sessions handed to a worker together
MAX_RESTARTS = 3           # a worker process that dies is started again at most this often
MAX_PINNED_SESSIONS = 100_000   # least recently used pins beyond this are forgotten (bounded memory)
SERVER_NAME = "posegpt-serve/0.1.0"


@dataclass
class _Request:
    identity: bytes
    request_id: str
    job: Job                          # what the worker is asked to do
    worker: "WorkerSlot"
    images: list[zmq.Frame]           # a chat's image frames as received from the client
    received: float = field(default_factory=time.monotonic)
    started: float | None = None
    last_sent: float = field(default_factory=time.monotonic)


@dataclass
class WorkerSlot:
    identity: bytes
    is_alive: Callable[[], bool]
    ready: bool = False
    dead: bool = False
    model_card: dict | None = None
    queue: deque = field(default_factory=deque)      # request keys waiting for this worker
    running: list = field(default_factory=list)      # request keys the worker holds now
    served: int = 0
    respawn: Callable[[], Callable[[], bool]] | None = None   # starts it again; returns the new is_alive
    restarts: int = 0
    load_failed: bool = False                                 # its model cannot load: do not restart

    @property
    def load(self) -> int:
        return len(self.queue) + len(self.running)


class Broker:
    """Moves requests from ``frontend`` (clients) to ``backend`` (workers) and replies back."""

    def __init__(self, frontend: zmq.Socket, backend: zmq.Socket, workers: list[WorkerSlot],
                 limits: wire.Limits = wire.DEFAULT_LIMITS, max_queue: int = 64):
        self.frontend = frontend
        self.backend = backend
        self.workers = {w.identity: w for w in workers}
        self.limits = limits
        self.max_queue = max_queue
        self.requests: dict[tuple[bytes, str], _Request] = {}
        self.sessions: OrderedDict[str, WorkerSlot] = OrderedDict()    # session → worker, LRU order
        self.rejected = 0
        self.served = 0

    # --- main loop -----------------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool]) -> None:
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        next_beat = time.monotonic() + HEARTBEAT_S / 2
        while not should_stop():
            ready = dict(poller.poll(POLL_MS))
            if self.backend in ready:
                self._drain(self.backend, self._on_worker)
            if self.frontend in ready:
                self._drain(self.frontend, self._on_client, copy=False)
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + HEARTBEAT_S / 2
                self._check_workers()
                self._heartbeat(now)

    def wait_ready(self, timeout_s: float, should_stop: Callable[[], bool]) -> bool:
        """Serve only worker messages until every worker is ready (or failed); True if one is ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not should_stop():
            if all(w.ready or w.dead for w in self.workers.values()):
                break
            if self.backend.poll(POLL_MS):
                self._drain(self.backend, self._on_worker)
            self._check_workers()
        return any(w.ready for w in self.workers.values())

    def shutdown(self) -> None:
        """Answer every held request with "server_shutdown" and tell the workers to stop."""
        for request in list(self.requests.values()):
            self._reply(request.identity, wire.Error(request.request_id, "server_shutdown",
                                                     "the server is shutting down; the request was dropped"))
            self._log(request, "server_shutdown")
        self.requests.clear()
        self.sessions.clear()
        for worker in self.workers.values():
            if not worker.dead:
                send_frames(self.backend, [worker.identity, jobs.STOP])
        log.info("shutdown: %d requests served, %d malformed messages rejected", self.served, self.rejected)

    @staticmethod
    def _drain(sock: zmq.Socket, handle, copy: bool = True) -> None:
        for _ in range(MAX_BATCH_RECV):
            if not readable(sock):
                return
            handle(recv_frames(sock, NOBLOCK, copy))

    # --- clients -------------------------------------------------------------------------------------

    def _reply(self, identity: bytes, message: wire.Message) -> None:
        send_frames(self.frontend, [identity, *wire.encode(message)])

    def _on_client(self, frames: list[zmq.Frame]) -> None:
        # A chat's images go on to the worker as the very frames received here: libzmq shares their
        # buffers, so a 0.5 MB photo is not copied twice more inside this process.
        # (identity and the four header frames become bytes; binary frames stay zmq.Frames)
        identity, *frames = [frame.bytes if index < 5 else frame for index, frame in enumerate(frames)]
        try:
            message = wire.decode(frames, self.limits)
        except wire.WireError as err:
            self.rejected += 1
            log.debug("rejected a message from %s: %s", identity.hex(), err)
            self._reply(identity, wire.Error(err.request_id, err.code, err.message))
            return
        if isinstance(message, wire.Chat):
            message.images = frames[4:]          # the zmq.Frames themselves (decode read them in place)
        handler = self._HANDLERS.get(type(message))
        if handler is None:
            self.rejected += 1
            self._reply(identity, wire.Error(message.request_id, "unknown_type",
                                             f"{type(message).__name__.lower()} is not a request"))
            return
        handler(self, identity, message)

    def _model_card(self) -> dict | None:
        return next((w.model_card for w in self.workers.values() if w.ready and not w.dead), None)

    def _on_hello(self, identity: bytes, message: wire.Hello) -> None:
        card = self._model_card()
        live = sum(w.ready and not w.dead for w in self.workers.values())
        capabilities = {"modes": ["direct", "chat"], "accepts_images": bool(card and card.get("accepts_images")),
                        "cancel": True, "progress": True, "sessions": True, "workers": live,
                        "heartbeat_s": HEARTBEAT_S}
        self._reply(identity, wire.Hello(message.request_id, server=SERVER_NAME, model_card=card,
                                         capabilities=capabilities, limits=asdict(self.limits),
                                         ready=card is not None))
        log.info("request %s hello client=%r status=ok", message.request_id, message.client)

    def _on_ping(self, identity: bytes, message: wire.Ping) -> None:
        queued = sum(len(w.queue) for w in self.workers.values())
        live = sum(w.ready and not w.dead for w in self.workers.values())
        self._reply(identity, wire.Pong(message.request_id, time.time(), queued, live))
        log.debug("request %s ping status=ok", message.request_id)

    def _on_chat(self, identity: bytes, message: wire.Chat) -> None:
        card = self._model_card()
        error = None
        if card is None:
            error = ("not_ready", "no model worker is ready")
        elif message.images and not card.get("accepts_images", False):
            error = ("images_not_supported", f"{card.get('backbone', 'this model')} does not accept images")
        elif isinstance(card.get("max_prompt_chars"), int) and len(message.prompt) > card["max_prompt_chars"]:
            error = ("prompt_too_long", f"the prompt has {len(message.prompt)} characters; this model "
                                        f"accepts {card['max_prompt_chars']}")
        elif sum(len(w.queue) for w in self.workers.values()) >= self.max_queue:
            error = ("busy", f"{self.max_queue} requests are already queued")
        if error is not None:
            self._reply(identity, wire.Error(message.request_id, *error))
            log.info("request %s chat session=%s status=%s", message.request_id, message.session_id, error[0])
            return
        job = Job("chat", message.session_id, message.prompt, message.mode, message.options())
        self._enqueue(identity, message.request_id, job, message.images)

    def _on_session_op(self, identity: bytes, message: wire.Reset | wire.Close) -> None:
        if message.session_id not in self.sessions:
            self._reply(identity, wire.Closed(message.request_id, message.session_id, message.kind, existed=False))
            log.info("request %s %s session=%s status=ok existed=False", message.request_id, message.kind,
                     message.session_id)
            return
        # queued behind the session's chats, so a reset never races a turn of the same session
        self._enqueue(identity, message.request_id, Job(message.kind, message.session_id), [])

    def _on_cancel(self, identity: bytes, message: wire.Cancel) -> None:
        key = (identity, message.request_id)
        request = self.requests.get(key)
        if request is None:
            log.debug("cancel of %s: not held (already answered or unknown)", message.request_id)
            return
        if request.started is None:
            request.worker.queue.remove(key)
            del self.requests[key]
            self._reply(identity, wire.Error(message.request_id, "cancelled", "cancelled while queued"))
            self._log(request, "cancelled")
        else:
            send_frames(self.backend, [request.worker.identity, *jobs.cancel_frames(identity, message.request_id)])

    _HANDLERS = {wire.Hello: _on_hello, wire.Ping: _on_ping, wire.Chat: _on_chat, wire.Reset: _on_session_op,
                 wire.Close: _on_session_op, wire.Cancel: _on_cancel}

    # --- queues --------------------------------------------------------------------------------------

    def _enqueue(self, identity: bytes, request_id: str, job: Job, images: list[zmq.Frame]) -> None:
        key = (identity, request_id)
        if key in self.requests:
            self._reply(identity, wire.Error(request_id, "duplicate_request",
                                             f"request {request_id} is already in flight"))
            return
        worker = self._pin(job.session_id)
        if worker is None:
            self._reply(identity, wire.Error(request_id, "not_ready", "no model worker is ready"))
            return
        self.requests[key] = _Request(identity, request_id, job, worker, images)
        worker.queue.append(key)
        self._dispatch(worker)

    def _pin(self, session_id: str) -> WorkerSlot | None:
        worker = self.sessions.get(session_id)
        if worker is not None and not worker.dead:
            self.sessions.move_to_end(session_id)
            return worker
        live = [w for w in self.workers.values() if w.ready and not w.dead]
        if not live:
            return None
        worker = min(live, key=lambda w: (w.load, w.served))
        self.sessions[session_id] = worker
        if len(self.sessions) > MAX_PINNED_SESSIONS:
            self.sessions.popitem(last=False)     # the runtime has long evicted that session's cache too
        return worker

    def _dispatch(self, worker: WorkerSlot) -> None:
        """Hand an idle worker its next job: the queue head, joined by later direct-mode turns of other
        sessions (the runtime runs those as one padded batch), never overtaking a session's own turn."""
        if worker.running or not worker.queue or worker.dead:
            return
        batch = [worker.queue.popleft()]
        if self.requests[batch[0]].job.batchable:
            sessions = {self.requests[batch[0]].job.session_id}
            for key in list(worker.queue):
                if len(batch) >= MAX_JOB_BATCH:
                    break
                job = self.requests[key].job
                if job.batchable and job.session_id not in sessions:
                    worker.queue.remove(key)
                    batch.append(key)
                sessions.add(job.session_id)          # later turns of a skipped session wait their turn
        now = time.monotonic()
        for key in batch:
            request = self.requests[key]
            request.started = now
            worker.running.append(key)
            # the worker reports queue_ms and server_ms on this (system-wide monotonic) clock itself,
            # so its reply passes through here untouched
            request.job.received_at, request.job.dispatched_at = request.received, now
            send_frames(self.backend, [worker.identity, *jobs.job_frames(request.identity, request.request_id,
                                                                         request.job, request.images)],
                        copy=False)
            request.images = []        # the images are the worker's now

    # --- workers -------------------------------------------------------------------------------------

    def _on_worker(self, frames: list[bytes]) -> None:
        identity, command, *rest = frames
        worker = self.workers.get(identity)
        if worker is None:
            log.warning("message from unknown worker %r ignored", identity)
            return
        if command == jobs.READY:
            info = jobs.parse_info(rest[0])
            worker.ready, worker.model_card = True, info["model_card"]
            log.info("worker %s ready (pid %s, backbone %s)", identity.decode(), info.get("pid"),
                     worker.model_card.get("backbone"))
        elif command == jobs.FAILED:
            info = jobs.parse_info(rest[0])
            log.error("worker %s failed to start: [%s] %s", identity.decode(), info.get("code"), info.get("message"))
            worker.load_failed = True
            self._fail_worker(worker, info.get("code", "worker_failed"), info.get("message", "worker failed"))
        elif command == jobs.OUT:
            self._forward(worker, rest[0], rest[1], rest[2:])

    def _forward(self, worker: WorkerSlot, identity: bytes, summary: bytes, frames: list[bytes]) -> None:
        """Pass a worker's reply to its client as it is; ``summary`` (final replies) feeds the log line."""
        kind, request_id, final = wire.route(frames)
        key = (identity, request_id)
        request = self.requests.get(key)
        if request is None:
            return                  # answered already (shutdown, worker failure)
        now = time.monotonic()
        request.last_sent = now
        if final:
            del self.requests[key]
            if key in worker.running:
                worker.running.remove(key)
            worker.served += 1
            self.served += 1
            if kind == "closed" and request.job.kind == "close":
                self.sessions.pop(request.job.session_id, None)
            send_frames(self.frontend, [identity, *frames])
            self._dispatch(worker)
            if log.isEnabledFor(logging.INFO):
                self._log(request, *jobs.parse_summary(summary))
        else:
            send_frames(self.frontend, [identity, *frames])

    def _check_workers(self) -> None:
        for worker in self.workers.values():
            if worker.is_alive():
                continue
            if not worker.dead:
                log.error("worker %s stopped unexpectedly", worker.identity.decode())
                self._fail_worker(worker, "worker_failed", "the model worker stopped")
            if worker.respawn is not None and not worker.load_failed and worker.restarts < MAX_RESTARTS:
                worker.restarts += 1
                log.warning("starting worker %s again (restart %d of %d)", worker.identity.decode(),
                            worker.restarts, MAX_RESTARTS)
                worker.is_alive = worker.respawn()
                worker.dead = worker.ready = False       # serves again once it says READY

    def _fail_worker(self, worker: WorkerSlot, code: str, message: str) -> None:
        worker.dead = True
        keys = list(worker.queue) + list(worker.running)
        worker.queue.clear()
        worker.running.clear()
        for key in keys:
            request = self.requests.pop(key)
            self._reply(request.identity, wire.Error(request.request_id, code, message))
            self._log(request, code)
        for session, owner in list(self.sessions.items()):
            if owner is worker:
                del self.sessions[session]

    def _heartbeat(self, now: float) -> None:
        for worker in self.workers.values():
            positions = {key: i for i, key in enumerate(worker.queue)}
            for key in [*worker.running, *worker.queue]:
                request = self.requests.get(key)
                if request is None or now - request.last_sent < HEARTBEAT_S:
                    continue
                request.last_sent = now
                if request.started is None:
                    stage, info = "queued", {"position": positions[key] + 1}
                else:
                    stage, info = "running", {"elapsed_ms": round((now - request.started) * 1e3, 1)}
                self._reply(request.identity, wire.Progress(request.request_id, stage, info))

    def _log(self, request: _Request, status: str, model_ms: float = 0.0) -> None:
        now = time.monotonic()
        queue_ms = ((request.started or now) - request.received) * 1e3
        log.info("request %s %s session=%s worker=%s status=%s queue_ms=%.1f model_ms=%.1f total_ms=%.1f",
                 request.request_id, request.job.kind, request.job.session_id, request.worker.identity.decode(),
                 status,
                 queue_ms, model_ms, (now - request.received) * 1e3)
