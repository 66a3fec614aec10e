"""Lazy-pirate PoseGPT client: non-blocking, no threads, safe to drive from a Blender timer.

    client = PoseClient("tcp://127.0.0.1:5555")
    rid = client.chat("session-1", "she is proposing marriage")
    ...                                     # every timer tick:
    for message in client.pump():           # never blocks; wire messages (posegpt_net.wire)
        if message.kind == "result": apply(message.poses[0]["rotmat_smpl"])

Scripts and tests may block instead: ``client.request("ping")`` or ``client.wait(rid)``.

Reliability (the ZeroMQ guide's lazy pirate): the server sends a heartbeat for every request it holds
at least every ``HEARTBEAT_S`` seconds, so a request that hears nothing for its timeout is lost. The
client then closes its socket and opens a fresh one (dropping anything queued for the dead peer),
resends the idempotent requests (hello, ping, cancel, reset, close) up to ``RETRIES`` times, and ends
every chat that was in flight with an ``error`` message ("timeout" or "connection_lost"): a generation is
never re-run behind the user's back. This is the one timeout layer between the add-on and the server.

What counts as hearing from the server: any reply proves the server alive (``last_heard``), but only a
final reply or *progress* (a new stage, more tokens, a queue position that moved) restarts a request's
timeout. A heartbeat that repeats the last one (the "running" beat with only its elapsed time new) does
not, so a server that only ever beats cannot hold a request forever. An error with an empty request id
(the server could not read which request it answers) ends every request in flight with that error.
``link`` follows the connection itself (socket monitor): "down", "tcp" (a peer accepted the TCP
connection but no ZeroMQ handshake yet), "up"; a peer that accepts TCP yet never completes the handshake
within ``HANDSHAKE_WAIT_S`` (an HTTP server on the port, say) ends the requests with ``bad_protocol``.

``pump()`` hands on the typed messages ``posegpt_net.wire`` decoded (``wire.Result``, ``wire.Error``,
``wire.Progress``, ...); the errors the client makes itself are ``wire.Error`` too. Observers
(``add_observer``) see every message as it arrives. Only numpy, pyzmq and the standard library are used.
"""
from __future__ import annotations

import itertools
import os
import secrets
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from posegpt_net import wire
from posegpt_net.transport import NOBLOCK, readable, recv_frames, send_frames

__all__ = ["PoseClient", "CurveKeys", "TIMEOUT_S", "RETRIES"]

TIMEOUT_S = 10.0          # silence (no reply, no heartbeat) after which a request is lost
RETRIES = 2               # resends of an idempotent request after a reconnect
MAX_MESSAGES_PER_PUMP = 500   # keeps one pump() short even when many replies are waiting
IDEMPOTENT = frozenset({"hello", "ping", "cancel", "reset", "close"})
HANDSHAKE_WAIT_S = 3.0    # TCP accepted but no ZeroMQ handshake after this long: not a ZeroMQ server
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_LINK_EVENTS = (_HANDSHAKE_FAILED | zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
                | zmq.EVENT_HANDSHAKE_SUCCEEDED)
_VOLATILE_INFO = frozenset({"elapsed_ms", "server_time"})     # change with every heartbeat, not progress
_monitor_ids = itertools.count()


@dataclass(frozen=True)
class CurveKeys:
    """Z85 CURVE keys: the server's public key and this client's key pair."""

    server_public: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def from_files(cls, server_public_file: str | os.PathLike, client_secret_file: str | os.PathLike):
        """Keys from certificate files written by ``posegpt-keys`` (``server.key``, ``client.key_secret``)."""
        server_public, _ = zmq.auth.load_certificate(os.fspath(server_public_file))
        client_public, client_secret = zmq.auth.load_certificate(os.fspath(client_secret_file))
        if client_secret is None:
            raise ValueError(f"{client_secret_file} holds no secret key (use the .key_secret file)")
        return cls(server_public, client_public, client_secret)


@dataclass
class _Pending:
    kind: str
    frames: list[bytes]
    timeout_s: float
    deadline: float
    retries: int                    # resends left after a reconnect (idempotent requests only)
    progress: tuple = ()            # the last progress heard, without its volatile fields


class PoseClient:
    """Talks to ``posegpt-serve`` over one DEALER socket; see the module docstring."""

    def __init__(self, address: str, timeout_s: float = TIMEOUT_S, curve: CurveKeys | None = None,
                 context: zmq.Context | None = None, client_name: str = "posegpt-client"):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.address = address
        self.timeout_s = float(timeout_s)
        self.curve = curve
        self.client_name = client_name
        self._context = context or zmq.Context.instance()
        self._pending: dict[str, _Pending] = {}
        self._backlog: list[wire.Message] = []
        self._observers: list[Callable[[wire.Message], None]] = []
        self._socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self.last_heard = 0.0            # monotonic time of the last message from the server (0: never)
        self.link = "down"               # "down", "tcp" (no ZeroMQ handshake yet) or "up"
        self.link_since = time.monotonic()
        self.disconnects = 0             # times an established ("up") connection was dropped by the peer
        self.ever_up = False             # a ZeroMQ handshake with this address has succeeded at least once
        self._open()

    # --- requests ------------------------------------------------------------------------------------

    def submit(self, kind: str, *, timeout_s: float | None = None, retries: int = RETRIES, **fields) -> str:
        """Send a request ("hello", "ping", "chat", "reset", "close") and return its request id.

        ``fields`` are the message's fields (see ``posegpt_net.wire``); images are encoded file bytes.
        ``retries``: resends of an idempotent request after a timeout (0: its first timeout ends it).
        Raises ``ValueError`` (``wire.WireError``) for a request that cannot be sent."""
        if kind == "cancel":
            raise ValueError("use cancel(request_id) to cancel a request")
        request_id = secrets.token_hex(8)
        if kind == "hello":
            message = wire.Hello(request_id, client=fields.pop("client", self.client_name), **fields)
        elif kind == "ping":
            message = wire.Ping(request_id, **fields)
        elif kind == "chat":
            fields["images"] = [_image_bytes(image) for image in fields.get("images", ())]
            message = wire.Chat(request_id, **fields)
        elif kind == "reset":
            message = wire.Reset(request_id, **fields)
        elif kind == "close":
            message = wire.Close(request_id, **fields)
        else:
            raise ValueError(f"unknown request kind {kind!r}; expected one of {wire.REQUEST_TYPES}")
        self._send(request_id, kind, wire.encode(message), timeout_s, retries if kind in IDEMPOTENT else 0)
        return request_id

    def chat(self, session_id: str, prompt: str, images=(), mode: str = "direct", *,
             timeout_s: float | None = None, **options) -> str:
        """Ask for a pose; ``images``: PNG/JPEG/WebP bytes (or paths); ``options``: max_new_tokens,
        temperature, top_p, seed. Returns the request id; the answer arrives through ``pump()``."""
        return self.submit("chat", timeout_s=timeout_s, session_id=session_id, prompt=prompt,
                           images=list(images), mode=mode, **options)

    def hello(self, **kw) -> str:
        return self.submit("hello", **kw)

    def ping(self, **kw) -> str:
        return self.submit("ping", **kw)

    def reset(self, session_id: str, **kw) -> str:
        return self.submit("reset", session_id=session_id, **kw)

    def cancel(self, request_id: str) -> None:
        """Ask the server to drop or stop ``request_id``; it then ends with error "cancelled" (or its
        result, if that was already on its way). Unknown ids are ignored."""
        pending = self._pending.get(request_id)
        if pending is None:
            return
        try:
            send_frames(self._socket, wire.encode(wire.Cancel(request_id)), NOBLOCK)
        except zmq.Again:
            pass        # nothing reaches the server now; the request's own timeout ends it

    def forget(self, request_id: str) -> None:
        """Stop waiting for ``request_id`` without telling the server: no message about it will come."""
        self._pending.pop(request_id, None)

    @property
    def socket(self) -> zmq.Socket:
        """The current DEALER, for a ``zmq.Poller`` in scripts that sleep until any client has news
        (it changes after a reconnect; register it again each time)."""
        return self._socket

    @property
    def pending(self) -> list[str]:
        """Ids of the requests still waiting for their final message."""
        return list(self._pending)

    def add_observer(self, callback: Callable[[wire.Message], None]) -> None:
        """Call ``callback(message)`` for every message as it arrives (before ``pump``/``wait`` return
        it), client-made errors included: for logs, timings and tests."""
        self._observers.append(callback)

    # --- messages ------------------------------------------------------------------------------------

    def pump(self) -> list[wire.Message]:
        """Every message that has arrived, without blocking; also fires timeouts and reconnects."""
        messages, self._backlog = self._backlog, []
        return messages + self._pump_new()

    def wait(self, request_id: str, timeout_s: float | None = None) -> wire.Message:
        """Block until ``request_id`` has its final message and return it (its progress is dropped, other
        requests' messages stay for the next ``pump()``). Raises ``TimeoutError`` only when ``timeout_s``
        runs out first; the request's own timeout ends it with an error message anyway."""
        for index, message in enumerate(self._backlog):
            if message.request_id == request_id and message.final:
                return self._backlog.pop(index)
        if request_id not in self._pending:
            raise KeyError(f"no request {request_id!r} is pending")
        give_up = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            found = None
            for message in self._pump_new():
                if message.request_id != request_id:
                    self._backlog.append(message)
                elif message.final:
                    found = message
            if found is not None:
                return found
            now = time.monotonic()
            if give_up is not None and now >= give_up:
                raise TimeoutError(f"request {request_id} still pending after {timeout_s} s")
            wake = min(p.deadline for p in self._pending.values()) if self._pending else now
            wake = min(wake, give_up) if give_up is not None else wake
            self._socket.poll(max(1, min(100, int((wake - now) * 1000) + 1)), zmq.POLLIN)

    def request(self, kind: str, *, timeout_s: float | None = None, **fields) -> wire.Message:
        """``submit`` then ``wait``: the final message of one request (for scripts and tests)."""
        return self.wait(self.submit(kind, timeout_s=timeout_s, **fields))

    def close(self) -> None:
        """Close the socket; pending requests are forgotten."""
        self._pending.clear()
        self._close_socket()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- machinery -----------------------------------------------------------------------------------

    def _open(self) -> None:
        sock = self._context.socket(zmq.DEALER)
        sock.linger = 0          # a dead server must not keep our messages (or the process) alive
        if self.curve is not None:
            sock.curve_serverkey = self.curve.server_public
            sock.curve_publickey = self.curve.client_public
            sock.curve_secretkey = self.curve.client_secret
        self._monitor = _monitor_socket(sock)
        sock.connect(self.address)
        self._socket = sock
        # libzmq's I/O thread sends each link event to the monitor with a blocking send: were the monitor's
        # PAIR closed while the DEALER still reports (the garbage collector closing a dropped client's
        # sockets in its own order), every socket on the shared context would hang. This runs once, in the
        # one safe order, on close() or when the client is collected.
        self._release = weakref.finalize(self, _close_monitored, sock, self._monitor)
        self.link, self.link_since = "down", time.monotonic()      # our own reconnect: not a disconnect

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._release()
            self._socket = self._monitor = None

    def _send(self, request_id: str, kind: str, frames: list[bytes], timeout_s: float | None,
              retries: int) -> None:
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        if timeout <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout}")
        self._pending[request_id] = _Pending(kind, frames, timeout, time.monotonic() + timeout, retries)
        try:
            send_frames(self._socket, frames, NOBLOCK)
        except zmq.Again:
            pass        # queue full towards a dead peer: the timeout will reconnect and resend or fail it

    def _pump_new(self) -> list[wire.Message]:
        messages: list[wire.Message] = []
        self._check_handshake(messages)
        for _ in range(MAX_MESSAGES_PER_PUMP):
            if not readable(self._socket):
                break
            messages.extend(self._receive(recv_frames(self._socket, NOBLOCK)))
        self._check_timeouts(messages)
        for message in messages:
            for observer in self._observers:
                observer(message)
        return messages

    def _receive(self, frames: list[bytes]) -> list[wire.Message]:
        now = time.monotonic()
        self.last_heard = now
        try:
            message = wire.decode(frames, wire.CLIENT_LIMITS)
        except wire.WireError as err:
            if err.request_id not in self._pending:
                return []
            message = wire.Error(err.request_id, err.code, f"undecodable reply: {err.message}")
        if message.kind == "error" and not message.request_id:
            # the server could not tell which request it refuses: none of ours will get another answer
            ended = [wire.Error(request_id, message.code, message.message, message.details)
                     for request_id in self._pending]
            self._pending.clear()
            return ended
        pending = self._pending.get(message.request_id)
        if pending is None:
            return []                                     # late reply to a request already ended
        if message.kind not in wire.REPLY_TYPES:
            message = wire.Error(message.request_id, "unknown_type",
                                 f"unexpected {message.kind} message from the server")
        if message.kind == "progress":
            key = (message.stage, tuple(sorted((k, repr(v)) for k, v in (message.info or {}).items()
                                               if k not in _VOLATILE_INFO)))
            if key != pending.progress:                   # progress, not a repeated heartbeat
                pending.progress = key
                pending.deadline = now + pending.timeout_s
        else:
            pending.deadline = now + pending.timeout_s
        if message.final:
            self._pending.pop(message.request_id, None)
        return [message]

    def _set_link(self, link: str) -> None:
        if link != self.link:
            if self.link == "up" and link != "up":
                self.disconnects += 1
            self.link, self.link_since = link, time.monotonic()

    def _check_handshake(self, messages: list[wire.Message]) -> None:
        failed = None
        while readable(self._monitor):
            event = recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
            if event & _HANDSHAKE_FAILED:
                failed = event
            elif event == zmq.EVENT_CONNECTED:
                self._set_link("tcp")
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._set_link("up")
                self.ever_up = True
            elif event == zmq.EVENT_DISCONNECTED:
                self._set_link("down")
        if failed is not None:
            self._set_link("down")
            self._end_all(messages, "auth_failed",
                          f"{self.address} refused the connection during the security handshake "
                          f"(CURVE keys not allowed, or plaintext against CURVE)")
        elif (self.link == "tcp" and not self.ever_up and self._pending
              and time.monotonic() - self.link_since > HANDSHAKE_WAIT_S):
            self._end_all(messages, "bad_protocol",
                          f"{self.address} accepted the connection but never answered in ZeroMQ "
                          f"(another kind of server, an HTTP server say, listens there)")

    def _end_all(self, messages: list[wire.Message], code: str, text: str) -> None:
        for request_id in list(self._pending):
            del self._pending[request_id]
            messages.append(wire.Error(request_id, code, text))

    def _check_timeouts(self, messages: list[wire.Message]) -> None:
        now = time.monotonic()
        expired = [rid for rid, p in self._pending.items() if now >= p.deadline]
        if not expired:
            return
        for request_id in expired:
            pending = self._pending[request_id]
            if pending.retries <= 0:
                del self._pending[request_id]
                messages.append(wire.Error(request_id, "timeout", f"no answer from {self.address} within "
                                                                  f"{pending.timeout_s:g} s"))
        # Lazy pirate: the peer is gone or stuck; a fresh socket drops whatever was queued for it.
        self._close_socket()
        self._open()
        for request_id, pending in list(self._pending.items()):
            if pending.kind in IDEMPOTENT:
                pending.retries -= request_id in expired
                pending.deadline = now + pending.timeout_s
                try:
                    send_frames(self._socket, pending.frames, NOBLOCK)
                except zmq.Again:
                    pass        # not connected yet: the next timeout tries again
            else:
                del self._pending[request_id]
                messages.append(wire.Error(request_id, "connection_lost",
                                           f"lost the connection to {self.address} during the request; "
                                           "it was not re-run"))


def _image_bytes(image) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    raise ValueError(f"images must be encoded PNG/JPEG/WebP bytes or file paths, got {type(image).__name__}")


def _monitor_socket(sock: zmq.Socket) -> zmq.Socket:
    """A PAIR receiving ``sock``'s link events. Its receive queue is unbounded (rcvhwm 0, set before it
    connects): libzmq's I/O thread would block on a full queue, and with it every socket of the context."""
    address = f"inproc://posegpt-monitor-{os.getpid()}-{next(_monitor_ids)}"
    sock.monitor(address, _LINK_EVENTS)
    monitor = sock.context.socket(zmq.PAIR)
    monitor.linger = 0
    monitor.rcvhwm = 0
    monitor.connect(address)
    return monitor


def _close_monitored(sock: zmq.Socket, monitor: zmq.Socket) -> None:
    """Stop the events before closing their reader, then the socket (see ``PoseClient._open``)."""
    if not sock.closed:
        sock.monitor(None, 0)
    monitor.close(linger=0)
    sock.close(linger=0)
