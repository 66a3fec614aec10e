"""Load-balancing broker: clients on a ROUTER in front, model workers on a ROUTER behind.

The ZeroMQ guide's load-balancing pattern with two changes. A session is pinned to the worker that holds
its KV cache and history, so the broker keeps one queue per worker instead of one shared queue. And a
studio shares the server, so the queue is fair: every client (its CURVE key, else its connection) has
quotas on requests waiting and running (``Quotas``), past which it hears ``busy`` with a retry hint; an
idle worker takes the next job from the client served least recently (round-robin), not from whoever
queued most; the image bytes held for waiting requests have a hard ceiling; and a client that is gone
(its connection closed, e.g. after its requests timed out) has its queued work dropped at the next
heartbeat, never run for nobody.

Images are decoded off the model's thread and GIL, by a small pool of low-priority processes
(``backend/images.py``: the decoder checks the size it decodes, and decodes only as large as the model
reads). A job reaches its worker with
the pixels, so a model never waits for a peer's 16 MB PNG, a cancel during a decode answers at once, and
a queued request holds a few hundred kilobytes instead of the file.

The loop only moves frames, checks limits and answers cheap requests (hello, ping, cancel of queued
work); it never waits on a model or a decoder. Every request it holds hears from it at least every
``HEARTBEAT_S``. Run through ``posegpt-serve`` (backend/server.py), which binds the sockets and starts
the workers; the broker ↔ worker messages are backend/jobs.py.
"""
from __future__ import annotations

import errno
import logging
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import OrderedDict, deque
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Callable

import zmq

from posegpt_net import wire
from posegpt_net.transport import NOBLOCK, readable, recv_frames, send_frames

from . import images as image_decoding
from . import jobs, memory
from .jobs import Job

log = logging.getLogger("posegpt.server")

HEARTBEAT_S = 0.5          # a held request hears from the server at least this often (the documented bound)
BEAT_EVERY_S = 0.3         # ... so it is sent after this much silence, leaving room for a busy loop tick
TICK_S = 0.1               # the loop looks at heartbeats, workers and the stop flag at least this often
MAX_BATCH_RECV = 256       # messages taken from one socket per tick, so neither side starves
MAX_JOB_BATCH = 8          # direct-mode turns of distinct sessions handed to a worker together
MAX_RESTARTS = 3           # a worker process that dies is started again at most this often
MAX_PINNED_SESSIONS = 100_000   # least recently used pins beyond this are forgotten (bounded memory)
DECODE_TIMEOUT_S = 30.0    # a decoder still on one request after this is killed (and started again)
SERVER_NAME = "posegpt-serve/0.1.0"


@dataclass(frozen=True)
class Quotas:
    """What one client may hold, and what all of them together may hold in images."""

    client_queued: int = 8                    # requests one client may have waiting (decoding or queued)
    client_running: int = 1                   # of one client's requests, at most this many run at once
                                              # while another client has work waiting
    queued_image_bytes: int = 256 * 1024 * 1024   # image bytes held for waiting requests, all clients
    client_image_share: float = 0.5           # the part of that one client may hold
    decode_processes: int = 1                   # decoder processes (off the model's thread and GIL, low priority)

    def __post_init__(self):
        if min(self.client_queued, self.client_running, self.queued_image_bytes, self.decode_processes) < 1:
            raise ValueError(f"every quota must be at least 1: {self}")
        if not 0.0 < self.client_image_share <= 1.0:
            raise ValueError(f"client_image_share must be in (0, 1], got {self.client_image_share}")


@dataclass
class _Client:
    """What one client (CURVE key or connection) holds now."""

    waiting: int = 0               # requests queued or decoding
    running: int = 0               # requests a worker holds
    image_bytes: int = 0           # bytes of its images (files, then pixels) held for waiting requests
    decoding: int = 0              # its decodes running now


@dataclass
class _Request:
    identity: bytes
    request_id: str
    client: bytes                     # the quota key: CURVE public key, else the connection identity
    job: Job                          # what the worker is asked to do
    worker: "WorkerSlot"
    images: list                      # the client's image frames until decoded, then the RGB pixel buffers
    image_bytes: int = 0              # what ``images`` holds (counted against the quotas until dispatch)
    ready: bool = True                # images decoded (or none)
    decoding: bool = False
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
    queue: deque = field(default_factory=deque)      # request keys waiting for this worker, in arrival order
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
                 limits: wire.Limits = wire.DEFAULT_LIMITS, max_queue: int = 64, quotas: Quotas = Quotas()):
        self.frontend = frontend
        self.backend = backend
        self.workers = {w.identity: w for w in workers}
        self.limits = limits
        self.max_queue = max_queue
        self.quotas = quotas
        self.requests: dict[tuple[bytes, str], _Request] = {}
        self.sessions: OrderedDict[str, WorkerSlot] = OrderedDict()    # session → worker, LRU order
        self.clients: dict[bytes, _Client] = {}
        self.turns: OrderedDict[bytes, None] = OrderedDict()      # clients, least recently served first
        self.image_bytes = 0                                       # held for waiting requests, all clients
        self.rejected = 0
        self.served = 0
        self.dropped_for_gone_clients = 0
        self._service_s = 0.05                   # running mean of a job's time on a worker (retry hints)
        self._decode_wait: deque = deque()       # request keys whose images wait for a decoder
        # Decoders are processes, not threads: a decoder's Python between Pillow calls would take the GIL
        # from the model's thread every switch interval. They get the client's frames over ZeroMQ (no copy
        # made under this process's GIL, nothing pickled) from a ROUTER in a private folder.
        self._decoder_dir = tempfile.mkdtemp(prefix="posegpt-")
        Path(self._decoder_dir, "server.pid").write_text(str(os.getpid()))   # swept if we are SIGKILLed
        self.decoders = frontend.context.socket(zmq.ROUTER)
        self.decoders.linger = 0
        if frontend.context.get(zmq.IO_THREADS) > 2:
            self.decoders.affinity = 1 << 2        # its own I/O thread: photos to decode never block clients
        self._decoder_endpoint = f"ipc://{self._decoder_dir}/decoders.ipc"
        self.decoders.bind(self._decoder_endpoint)
        self._decoder_procs: dict[bytes, multiprocessing.Process] = {}
        self._idle_decoders: deque = deque()                  # identities of decoders waiting for work
        self._in_decoder: dict[bytes, _Request] = {}          # decoder identity → the request it decodes
        self._decode_started: dict[bytes, float] = {}
        for index in range(quotas.decode_processes):
            self._spawn_decoder(f"decoder-{index}".encode())
        self._trim_due = False
        # a send to a client that has gone raises EHOSTUNREACH instead of vanishing: how gone clients
        # are noticed (every held request is sent a heartbeat at least every BEAT_EVERY_S)
        frontend.router_mandatory = True
        self.curve = bool(frontend.curve_server)     # then quotas are per CURVE key, not per connection

    # --- main loop -----------------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool]) -> None:
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        poller.register(self.decoders, zmq.POLLIN)
        next_tick = time.monotonic() + TICK_S
        while not should_stop():
            ready = dict(poller.poll(max(1, int((next_tick - time.monotonic()) * 1000) + 1)))
            if self.backend in ready:
                self._drain(self.backend, self._on_worker)
            if self.decoders in ready:
                self._drain(self.decoders, self._on_decoder, copy=False)
            if self.frontend in ready:
                self._drain(self.frontend, self._on_client, copy=False)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TICK_S
                self._check_workers()
                self._check_decoders()
                self._heartbeat(now)
                if self._trim_due and not self.requests:
                    self._trim_due = False
                    memory.trim()            # the burst is over: give its memory back

    def wait_ready(self, timeout_s: float, should_stop: Callable[[], bool]) -> bool:
        """Serve only worker messages until every worker is ready (or failed); True if one is ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not should_stop():
            if all(w.ready or w.dead for w in self.workers.values()):
                break
            if self.backend.poll(int(TICK_S * 1000)):
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
        self.decoders.close(0)
        for process in self._decoder_procs.values():
            process.terminate()
        for process in self._decoder_procs.values():
            process.join(5)
        shutil.rmtree(self._decoder_dir, ignore_errors=True)
        log.info("shutdown: %d requests served, %d malformed messages rejected, %d requests of gone clients "
                 "dropped", self.served, self.rejected, self.dropped_for_gone_clients)

    @staticmethod
    def _drain(sock: zmq.Socket, handle, copy: bool = True) -> None:
        for _ in range(MAX_BATCH_RECV):
            if not readable(sock):
                return
            handle(recv_frames(sock, NOBLOCK, copy))

    # --- clients -------------------------------------------------------------------------------------

    def _send(self, identity: bytes, frames: list) -> bool:
        """Send to a client without ever blocking; a client that is gone (or has stopped reading: its
        send queue full) loses everything it held."""
        try:
            send_frames(self.frontend, [identity, *frames], NOBLOCK)
            return True
        except zmq.Again:
            # a thousand messages wait unread: the client no longer reads (hung, or hostile); its work
            # would only ever be run for nobody
            log.warning("client %s reads nothing; dropping its work", identity.hex())
            self._drop_client(identity)
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self._drop_client(identity)
        return False

    def _reply(self, identity: bytes, message: wire.Message) -> bool:
        return self._send(identity, wire.encode(message))

    def _on_client(self, frames: list[zmq.Frame]) -> None:
        # A chat's images stay the very frames received here until decoded: libzmq shares their buffers.
        # (identity and the four header frames become bytes; binary frames stay zmq.Frames)
        user = _user_id(frames[1]) if self.curve and len(frames) > 1 else None
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
                                             f"{message.kind} is not a request"))
            return
        handler(self, identity, message, user.encode() if user else identity)

    def _model_card(self) -> dict | None:
        return next((w.model_card for w in self.workers.values() if w.ready and not w.dead), None)

    def _on_hello(self, identity: bytes, message: wire.Hello, client: bytes) -> None:
        card = self._model_card()
        live = sum(w.ready and not w.dead for w in self.workers.values())
        capabilities = {"modes": ["direct", "chat"], "accepts_images": bool(card and card.get("accepts_images")),
                        "cancel": True, "progress": True, "sessions": True, "workers": live,
                        "heartbeat_s": HEARTBEAT_S, "quotas": asdict(self.quotas), "max_queue": self.max_queue}
        self._reply(identity, wire.Hello(message.request_id, server=SERVER_NAME, model_card=card,
                                         capabilities=capabilities, limits=asdict(self.limits),
                                         ready=card is not None))
        log.info("request %s hello client=%r status=ok", message.request_id, message.client)

    def _on_ping(self, identity: bytes, message: wire.Ping, client: bytes) -> None:
        live = sum(w.ready and not w.dead for w in self.workers.values())
        self._reply(identity, wire.Pong(message.request_id, time.time(), self._queued(), live))
        log.debug("request %s ping status=ok", message.request_id)

    def _queued(self) -> int:
        return sum(len(w.queue) for w in self.workers.values())

    def _retry_after(self, ahead: int) -> float:
        """Seconds after which a refused request may find room: ``ahead`` jobs at the mean service time."""
        live = max(1, sum(w.ready and not w.dead for w in self.workers.values()))
        return round(min(60.0, max(0.1, self._service_s * (ahead + 1) / live)), 2)

    def _on_chat(self, identity: bytes, message: wire.Chat, client: bytes) -> None:
        card = self._model_card()
        holder = self.clients.get(client) or _Client()
        image_bytes = sum(len(frame) for frame in message.images)
        share = int(self.quotas.queued_image_bytes * self.quotas.client_image_share)
        error, details = None, {}
        if card is None:
            error = ("not_ready", "no model worker is ready")
        elif message.images and not card.get("accepts_images", False):
            error = ("images_not_supported", f"{card.get('backbone', 'this model')} does not accept images")
        elif isinstance(card.get("max_prompt_chars"), int) and len(message.prompt) > card["max_prompt_chars"]:
            error = ("prompt_too_long", f"the prompt has {len(message.prompt)} characters; this model "
                                        f"accepts {card['max_prompt_chars']}")
        elif holder.waiting >= self.quotas.client_queued:
            error = ("busy", f"this client already has {holder.waiting} requests waiting (its quota)")
            details = {"retry_after_s": self._retry_after(holder.waiting), "reason": "client_quota"}
        elif self._queued() >= self.max_queue:
            error = ("busy", f"{self.max_queue} requests are already queued")
            details = {"retry_after_s": self._retry_after(self._queued()), "reason": "queue_full"}
        elif image_bytes and (self.image_bytes + image_bytes > self.quotas.queued_image_bytes
                              or holder.image_bytes + image_bytes > share):
            error = ("busy", "the images waiting on this server already fill its memory budget")
            details = {"retry_after_s": self._retry_after(holder.waiting), "reason": "image_memory"}
        if error is not None:
            self._reply(identity, wire.Error(message.request_id, *error, details))
            log.info("request %s chat session=%s status=%s", message.request_id, message.session_id, error[0])
            return
        job = Job("chat", message.session_id, message.prompt, message.mode, message.options())
        request = self._enqueue(identity, client, message.request_id, job, message.images, image_bytes)
        if request is not None and request.images:
            self._decode_wait.append((identity, message.request_id))
            self._start_decodes()

    def _on_session_op(self, identity: bytes, message: wire.Reset | wire.Close, client: bytes) -> None:
        if message.session_id not in self.sessions:
            self._reply(identity, wire.Closed(message.request_id, message.session_id, message.kind, existed=False))
            log.info("request %s %s session=%s status=ok existed=False", message.request_id, message.kind,
                     message.session_id)
            return
        holder = self.clients.get(client) or _Client()
        if holder.waiting >= self.quotas.client_queued or self._queued() >= self.max_queue:
            reason = "client_quota" if holder.waiting >= self.quotas.client_queued else "queue_full"
            self._reply(identity, wire.Error(message.request_id, "busy", "too many requests are waiting",
                                             {"retry_after_s": self._retry_after(holder.waiting), "reason": reason}))
            return
        # queued behind the session's chats, so a reset never races a turn of the same session
        self._enqueue(identity, client, message.request_id, Job(message.kind, message.session_id), [], 0)

    def _on_cancel(self, identity: bytes, message: wire.Cancel, client: bytes) -> None:
        key = (identity, message.request_id)
        request = self.requests.get(key)
        if request is None:
            log.debug("cancel of %s: not held (already answered or unknown)", message.request_id)
            return
        if request.started is None:
            self._release(key)
            self._reply(identity, wire.Error(message.request_id, "cancelled", wire.CANCELLED_MESSAGE))
            self._log(request, "cancelled")
        else:
            send_frames(self.backend, [request.worker.identity, *jobs.cancel_frames(identity, message.request_id)])

    _HANDLERS = {wire.Hello: _on_hello, wire.Ping: _on_ping, wire.Chat: _on_chat, wire.Reset: _on_session_op,
                 wire.Close: _on_session_op, wire.Cancel: _on_cancel}

    def _drop_client(self, identity: bytes) -> None:
        """The connection ``identity`` is gone: its queued work goes, its running work is cancelled."""
        for key in [k for k in self.requests if k[0] == identity]:
            request = self.requests[key]
            if request.started is None:
                self._release(key)
            else:
                send_frames(self.backend, [request.worker.identity, *jobs.cancel_frames(*key)])
                request.last_sent = float("inf")          # no more heartbeats to nobody
            self.dropped_for_gone_clients += 1
            self._log(request, "client_gone")

    # --- queues --------------------------------------------------------------------------------------

    def _enqueue(self, identity: bytes, client: bytes, request_id: str, job: Job, images: list,
                 image_bytes: int) -> _Request | None:
        key = (identity, request_id)
        if key in self.requests:
            self._reply(identity, wire.Error(request_id, "duplicate_request",
                                             f"request {request_id} is already in flight"))
            return None
        worker = self._pin(job.session_id)
        if worker is None:
            self._reply(identity, wire.Error(request_id, "not_ready", "no model worker is ready"))
            return None
        request = _Request(identity, request_id, client, job, worker, images, image_bytes, ready=not images)
        self.requests[key] = request
        holder = self.clients.setdefault(client, _Client())
        holder.waiting += 1
        holder.image_bytes += image_bytes
        self.image_bytes += image_bytes
        self._trim_due = self._trim_due or image_bytes > 0
        if client not in self.turns:            # a client not served lately goes first
            self.turns[client] = None
            self.turns.move_to_end(client, last=False)
        worker.queue.append(key)
        self._dispatch(worker)
        return request

    def _release(self, key: tuple[bytes, str]) -> _Request:
        """Forget a request that has not started (cancelled, or its client is gone)."""
        request = self.requests.pop(key)
        if key in request.worker.queue:
            request.worker.queue.remove(key)
        if key in self._decode_wait:
            self._decode_wait.remove(key)
        holder = self.clients[request.client]
        holder.waiting -= 1
        if not request.decoding:              # else the decoder still holds them: released when it ends
            self._free_images(request)
        self._forget_idle(request.client)
        return request

    def _free_images(self, request: _Request) -> None:
        holder = self.clients.get(request.client)
        if holder is not None:
            holder.image_bytes -= request.image_bytes
        self.image_bytes -= request.image_bytes
        request.image_bytes, request.images = 0, []

    def _forget_idle(self, client: bytes) -> None:
        holder = self.clients.get(client)
        if holder is not None and not (holder.waiting or holder.running or holder.decoding or holder.image_bytes):
            del self.clients[client]
            self.turns.pop(client, None)

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
        """Hand an idle worker its next job, round-robin over clients: the first ready request of the client
        served least recently, joined by other clients' (then the same clients') direct-mode turns of
        distinct sessions, which the runtime runs as one padded batch. A request never overtakes an
        earlier one of its own client or session, and a client never has more than its quota running."""
        if worker.running or not worker.queue or worker.dead:
            return
        heads: OrderedDict[bytes, list] = OrderedDict((client, []) for client in self.turns)
        for key in worker.queue:
            heads.setdefault(self.requests[key].client, []).append(key)
        batch: list = []
        sessions: set = set()
        blocked_sessions: set = set()
        taken: dict[bytes, int] = {}
        # work-conserving: the running quota only holds while another client has work ready here
        contenders = sum(1 for keys in heads.values() if keys and self.requests[keys[0]].ready)
        running_quota = self.quotas.client_running if contenders > 1 else MAX_JOB_BATCH
        progress = True
        while progress and len(batch) < MAX_JOB_BATCH:
            progress = False
            for client, keys in heads.items():
                if not keys or len(batch) >= MAX_JOB_BATCH:
                    continue
                request = self.requests[keys[0]]
                running = self.clients[client].running + taken.get(client, 0)
                if (not request.ready or running >= running_quota
                        or request.job.session_id in blocked_sessions | sessions
                        or (batch and not _batch_with(self.requests[batch[0]], request))):
                    # this client's turn is over for this job: its next request may not overtake this one
                    blocked_sessions.add(request.job.session_id)
                    keys.clear()
                    continue
                batch.append(keys.pop(0))
                sessions.add(request.job.session_id)
                taken[client] = taken.get(client, 0) + 1
                progress = True
                if not request.job.batchable:
                    break
            if batch and not self.requests[batch[0]].job.batchable:
                break
        if not batch:
            return
        now = time.monotonic()
        for key in batch:
            request = self.requests[key]
            worker.queue.remove(key)
            request.started = now
            worker.running.append(key)
            holder = self.clients[request.client]
            holder.waiting -= 1
            holder.running += 1
            self.turns.move_to_end(request.client)        # served: to the back of the round
            # the worker reports queue_ms and server_ms on this (system-wide monotonic) clock itself,
            # so its reply passes through here untouched
            request.job.received_at, request.job.dispatched_at = request.received, now
            send_frames(self.backend, [worker.identity, *jobs.job_frames(request.identity, request.request_id,
                                                                         request.job, request.images)],
                        copy=False)
            self._free_images(request)        # the pixels are the worker's now

    # --- image decoding (decoder processes; the loop never waits for them) ---------------------------

    def _spawn_decoder(self, identity: bytes) -> None:
        process = multiprocessing.get_context("spawn").Process(
            target=image_decoding.serve_decoder, name=identity.decode(), daemon=True,
            args=(self._decoder_endpoint, identity, asdict(self.limits), os.getpid()))
        process.start()
        self._decoder_procs[identity] = process

    def _check_decoders(self) -> None:
        """A decoder that died (a bomb that got past every check, the OOM killer) fails its request and
        is started again."""
        now = time.monotonic()
        for identity, process in list(self._decoder_procs.items()):
            started = self._decode_started.get(identity)
            if process.is_alive() and identity in self._in_decoder and now - started > DECODE_TIMEOUT_S:
                log.error("image decoder %s took over %g s on one request; stopping it", identity.decode(),
                          DECODE_TIMEOUT_S)
                process.kill()
                process.join(5)
            if process.is_alive():
                continue
            log.error("image decoder %s stopped (exit code %s); starting it again", identity.decode(),
                      process.exitcode)
            self._decode_started.pop(identity, None)
            request = self._in_decoder.pop(identity, None)
            if identity in self._idle_decoders:
                self._idle_decoders.remove(identity)
            if request is not None:
                self._decoded(request, wire.WireError("bad_image", "the image decoder stopped on this image"), 0.0)
            self._spawn_decoder(identity)

    def _start_decodes(self) -> None:
        """Hand waiting images to idle decoders, taking first the client with the fewest decoding."""
        while self._idle_decoders and self._decode_wait:
            key = min(self._decode_wait, key=lambda k: self.clients[self.requests[k].client].decoding
                      if k in self.requests else -1)
            self._decode_wait.remove(key)
            request = self.requests.get(key)
            if request is None:
                continue
            size = (request.worker.model_card or {}).get("image_size")
            options = json.dumps({"draft_size": size if isinstance(size, int) and size > 0 else None})
            decoder = self._idle_decoders.popleft()
            request.decoding = True
            self.clients[request.client].decoding += 1
            self._in_decoder[decoder] = request
            self._decode_started[decoder] = time.monotonic()
            send_frames(self.decoders, [decoder, decoder, options.encode(), *request.images], copy=False)

    def _on_decoder(self, frames: list) -> None:
        identity, *rest = (frame.bytes if index < 4 else frame for index, frame in enumerate(frames))
        if identity not in self._decoder_procs:
            return
        if rest == [b"READY"]:
            self._idle_decoders.append(identity)
        else:
            _tag, status, head, *pixels = rest
            info = json.loads(head)
            request = self._in_decoder.pop(identity, None)
            self._idle_decoders.append(identity)
            if request is not None:
                outcome = (list(zip(info["sizes"], pixels)) if status == b"ok"
                           else wire.WireError(info["code"], info["message"]))
                self._decoded(request, outcome, float(info.get("ms", 0.0)))
        self._start_decodes()

    def _decoded(self, request: _Request, outcome, decode_ms: float) -> None:
        """A decode ended: the request is ready (or answered with the decoder's error)."""
        key = (request.identity, request.request_id)
        request.decoding = False
        self.clients[request.client].decoding -= 1
        if self.requests.get(key) is not request:
            # cancelled, or its client gone, while decoding: the files are free only now
            self._free_images(request)
            self._forget_idle(request.client)
            return
        if isinstance(outcome, wire.WireError):
            self._release(key)
            self._reply(request.identity, wire.Error(request.request_id, outcome.code, outcome.message))
            self._log(request, outcome.code)
            return
        pixels = [data for _size, data in outcome]
        self._resize_images(request, pixels, sum(len(p) for p in pixels))
        request.job.images = [list(size) for size, _data in outcome]
        request.job.image_decode_ms = decode_ms
        request.ready = True
        self._dispatch(request.worker)

    def _resize_images(self, request: _Request, images: list, image_bytes: int) -> None:
        holder = self.clients[request.client]
        delta = image_bytes - request.image_bytes
        holder.image_bytes += delta
        self.image_bytes += delta
        request.images, request.image_bytes = images, image_bytes

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
        if not final:
            if request.last_sent != float("inf"):          # its client is not known to be gone
                request.last_sent = now
                self._send(identity, frames)
            return
        del self.requests[key]
        if key in worker.running:
            worker.running.remove(key)
        self._finished(request, now)
        worker.served += 1
        self.served += 1
        if kind == "closed" and request.job.kind == "close":
            self.sessions.pop(request.job.session_id, None)
        if request.last_sent != float("inf"):
            self._send(identity, frames)
        self._dispatch(worker)
        if log.isEnabledFor(logging.INFO):
            self._log(request, *jobs.parse_summary(summary))

    def _finished(self, request: _Request, now: float) -> None:
        """A started request ended: its client's running count, the mean service time."""
        holder = self.clients.get(request.client)
        if holder is not None:
            holder.running -= 1
            self._forget_idle(request.client)
        if request.started is not None:
            self._service_s += 0.2 * ((now - request.started) - self._service_s)

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
        now = time.monotonic()
        for key in list(worker.queue):
            request = self._release(key)
            self._reply(request.identity, wire.Error(request.request_id, code, message))
            self._log(request, code)
        for key in list(worker.running):
            request = self.requests.pop(key)
            self._finished(request, now)
            self._reply(request.identity, wire.Error(request.request_id, code, message))
            self._log(request, code)
        worker.queue.clear()
        worker.running.clear()
        for session, owner in list(self.sessions.items()):
            if owner is worker:
                del self.sessions[session]

    def _heartbeat(self, now: float) -> None:
        """A progress message for every held request silent for ``BEAT_EVERY_S``; a send that finds its
        client gone drops all that client's work (``_drop_client``)."""
        for worker in self.workers.values():
            positions, counts = {}, {}
            for key in worker.queue:           # a queued request's place among its own client's requests
                client = self.requests[key].client
                counts[client] = positions[key] = counts.get(client, 0) + 1
            for key in [*worker.running, *worker.queue]:
                request = self.requests.get(key)
                if request is None or now - request.last_sent < BEAT_EVERY_S:
                    continue
                request.last_sent = now
                if request.started is None:
                    stage = "queued" if request.ready else "decoding"
                    info = {"position": positions[key], "clients_waiting": len(self.turns)}
                else:
                    stage, info = "running", {"elapsed_ms": round((now - request.started) * 1e3, 1)}
                self._reply(request.identity, wire.Progress(request.request_id, stage, info))

    def _log(self, request: _Request, status: str, model_ms: float = 0.0) -> None:
        now = time.monotonic()
        queue_ms = ((request.started or now) - request.received) * 1e3
        log.info("request %s %s session=%s worker=%s status=%s queue_ms=%.1f model_ms=%.1f total_ms=%.1f",
                 request.request_id, request.job.kind, request.job.session_id, request.worker.identity.decode(),
                 status, queue_ms, model_ms, (now - request.received) * 1e3)


def _user_id(frame: zmq.Frame) -> str | None:
    """The ZAP user id of the peer that sent ``frame`` (with CURVE: its public key, Z85), if any."""
    try:
        return frame.get("User-Id") or None
    except zmq.ZMQError:
        return None


def _batch_with(head: _Request, other: _Request) -> bool:
    """Whether ``other`` may join the batch ``head`` starts: both direct-mode turns with as many images.
    (A padded batch costs every row the longest row's length: a text turn batched with a four-photo turn
    would wait for the photos' tokens.)"""
    return head.job.batchable and other.job.batchable and len(head.job.images) == len(other.job.images)
