"""The add-on's side of the conversation with posegpt-serve, without bpy.

``Connection`` wraps ``posegpt_net.client.PoseClient``: it remembers which armature each request is for,
turns the wire messages the client hands on into ``Outcome``s the Blender side applies on the main thread,
and puts every failure into words (``reply_handling.AddonError``). A result's poses are validated here,
once, where they enter the add-on. The client's timeout is the only one: a request the client has not
ended is still alive. ``poll()`` never blocks: Blender calls it from a ``bpy.app.timers`` callback.
"""
from __future__ import annotations

import ipaddress
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .chat_state import check_rotmats
from .reply_handling import AddonError, describe_error

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
DEFAULT_TIMEOUT_S = 10.0
CLIENT_NAME = "posegpt-blender"
LOST_BUSY_S = 1.5        # a chat in flight hears nothing this long (beats come every 0.5 s): lost
IDLE_PING_S = 3.0        # while idle and connected, ping this often
LOST_IDLE_S = 8.0        # while idle, nothing heard this long: lost
# the final reply each request kind must get (an error aside); anything else is a protocol failure
EXPECTED_REPLY = {"hello": "hello", "chat": "result", "reset": "closed", "close": "closed"}

_ADDRESS_RE = re.compile(r"^tcp://(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\s]+):(?P<port>\d{1,5})$")
_Z85_KEY_RE = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


def address_host(address: str) -> str:
    """The host part of ``tcp://HOST:PORT`` (brackets stripped); raises AddonError when malformed."""
    if address.startswith(("ipc://", "inproc://")):
        return "localhost"
    match = _ADDRESS_RE.match(address.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise AddonError("bad_address", f"cannot use backend address {address!r}", address=address)
    return match["host"].strip("[]")


def is_loopback(address: str) -> bool:
    """True when ``address`` stays on this machine (loopback IP, localhost, ipc:// or inproc://)."""
    host = address_host(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False            # a host name other than localhost: treat as remote


def check_online_access(address: str, online_access: bool) -> None:
    """Blender ≥ 4.2 asks add-ons not to go online unless the user allowed it; loopback is not online."""
    if not online_access and not is_loopback(address):
        raise AddonError("online_access", f"online access is disabled, so {address} is not contacted",
                                address=address)


def read_curve_key(value: str, *, secret: bool) -> bytes:
    """A CURVE key given as a key file (zmq.auth certificate from `make keys`) or as 40 Z85 characters."""
    text = value.strip()
    if _Z85_KEY_RE.match(text):
        return text.encode("ascii")
    path = Path(text).expanduser()
    if not path.is_file():
        raise AddonError("bad_keys", f"{text!r} is neither a key file nor a 40-character Z85 key")
    import zmq.auth  # here, not at the top: the bpy-free import test needs no pyzmq
    public, secret_key = zmq.auth.load_certificate(str(path))
    key = secret_key if secret else public
    if not key:
        raise AddonError("bad_keys", f"{path.name} holds no {'secret' if secret else 'public'} key")
    return key


def curve_settings(server_public_key: str, client_public_key: str, client_secret_key: str):
    """The client's ``curve`` argument (``posegpt_net.client.CurveKeys``) from the three preference
    fields; all empty → None (plaintext, fine on loopback)."""
    fields = (server_public_key.strip(), client_public_key.strip(), client_secret_key.strip())
    if not any(fields):
        return None
    if not all(fields):
        raise AddonError("bad_keys", "CURVE needs the server public key and the client public and "
                                "secret keys")
    from posegpt_net.client import CurveKeys
    return CurveKeys(server_public=read_curve_key(fields[0], secret=False),
                     client_public=read_curve_key(fields[1], secret=False),
                     client_secret=read_curve_key(fields[2], secret=True))


@dataclass
class Pending:
    """A request in flight: what it was and which armature its reply belongs to."""
    request_id: str
    kind: str
    target: str = ""                 # armature object name
    prompt: str = ""
    started: float = 0.0
    stage: str = "sent"
    image: str = ""                  # name of the Blender image sent with the prompt, if any
    image_path: str = ""


@dataclass
class Outcome:
    """Something the Blender side must act on. ``kind``: "connected", "result", "error", "progress",
    "lost" (``error_text`` says why). ``poses``: the result's ``rotmat_smpl`` arrays, validated, as (24, 3, 3) float64
    SMPL-frame rotations. ``note``: what the server said about the turn besides its answer (the history
    it trimmed to make room), empty when nothing."""
    kind: str
    pending: Pending | None = None
    text: str = ""
    poses: list[np.ndarray] = field(default_factory=list)
    error_code: str = ""
    error_text: str = ""
    note: str = ""


class Connection:
    """One connection to a backend. States: "connecting", "connected", "lost" (it was connected, the
    server went silent or closed the connection: retrying), "error" (never connected, or refused us),
    "closed".

    Liveness: the server beats every request it holds at least every 0.5 s, so a chat in flight that
    hears nothing for ``LOST_BUSY_S`` means the server is gone; while idle the connection pings every
    ``IDLE_PING_S`` and is lost after ``LOST_IDLE_S`` without an answer. A connection that drops (the
    server process died) is lost at once and its chats in flight end with ``connection_lost`` (their
    replies can never come: a new connection is a new peer to the server). While lost, a hello is sent
    again and again; its answer makes the connection "connected" again with a fresh model card."""

    def __init__(self, address: str = DEFAULT_ADDRESS, timeout_s: float = DEFAULT_TIMEOUT_S, *,
                 curve=None, online_access: bool = True, client_factory=None,
                 clock=time.monotonic):
        address = address.strip()
        address_host(address)                                   # raises on a malformed address
        check_online_access(address, online_access)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.address = address
        self.timeout_s = float(timeout_s)
        self.state = "connecting"
        self.state_since = clock()
        self.model_card: dict = {}
        self.server_name = ""
        self.error_text = ""
        self.lost_reason = ""
        self.reconnects = 0                     # times the connection came back after being lost
        self.pending: dict[str, Pending] = {}
        self._queued: dict[str, tuple] = {}     # chats sent before the hello answered, by placeholder id
        self._clock = clock
        self._ping_id = ""
        self._ping_sent = 0.0
        self._disconnects = 0
        if client_factory is None:
            from posegpt_net.client import PoseClient as client_factory
        self._client = client_factory(address, timeout_s=self.timeout_s, curve=curve, client_name=CLIENT_NAME)
        self._send_hello()

    def add_observer(self, callback) -> None:
        """Call ``callback(message)`` with every wire message the client receives (demo timings, tests)."""
        self._client.add_observer(callback)

    # --- state -----------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while any request waits for an answer (the timer pumps fast)."""
        return bool(self.pending)

    @property
    def alive(self) -> bool:
        """True while the connection is worth pumping (connecting, connected or lost and retrying)."""
        return self.state in ("connecting", "connected", "lost")

    def chats_for(self, target: str) -> list[Pending]:
        return [p for p in self.pending.values() if p.kind == "chat" and p.target == target]

    def status_line(self) -> str:
        """The connection in a few words, for the panel's header."""
        host = self.address.removeprefix("tcp://")
        if self.state == "connecting":
            return f"Connecting to {host}…"
        if self.state == "connected":
            return "Connected" if not self.reconnects else "Connected again"
        if self.state == "lost":
            return f"Lost connection — retrying ({self._clock() - self.state_since:.0f} s)"
        if self.state == "error":
            return "Not connected"
        return "Disconnected"

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state, self.state_since = state, self._clock()

    # --- requests ------------------------------------------------------------------------------------
    def _send_hello(self) -> None:
        # no resend: with no server there, the artist hears so after one timeout, not three
        hello_id = self._client.submit("hello", client=CLIENT_NAME, retries=0)
        self.pending[hello_id] = Pending(hello_id, "hello", started=self._clock())

    def send_chat(self, target: str, session_id: str, prompt: str, images: list[bytes] = (),
                  mode: str = "chat", *, image: str = "", image_path: str = "") -> str:
        """Send one turn for armature ``target``; returns the request id (the reply comes via poll()).
        ``image``, ``image_path``: the Blender image sent and where it came from, kept for the chat."""
        if not self.alive:
            raise AddonError("not_connected", f"not connected to {self.address}", address=self.address)
        if not prompt.strip():
            raise AddonError("empty_prompt", "the prompt is empty")
        now = self._clock()
        if self.state != "connected":           # goes out once the server has said hello (again)
            request_id = f"queued-{uuid.uuid4().hex[:12]}"
            self._queued[request_id] = (session_id, prompt, list(images), mode)
            self.pending[request_id] = Pending(request_id, "chat", target=target, prompt=prompt, started=now,
                                               stage="waiting for the server", image=image, image_path=image_path)
            return request_id
        request_id = self._client.chat(session_id, prompt, images=list(images), mode=mode)
        self.pending[request_id] = Pending(request_id, "chat", target=target, prompt=prompt, started=now,
                                           image=image, image_path=image_path)
        return request_id

    def _flush_queued(self) -> None:
        for placeholder, (session_id, prompt, images, mode) in list(self._queued.items()):
            pending = self.pending.pop(placeholder, None)
            del self._queued[placeholder]
            if pending is None:                  # cancelled while waiting
                continue
            pending.request_id = self._client.chat(session_id, prompt, images=images, mode=mode)
            pending.stage = "sent"
            pending.started = self._clock()
            self.pending[pending.request_id] = pending

    def _fail_queued(self, code: str, message: str) -> list[Outcome]:
        failed = []
        for placeholder in list(self._queued):
            del self._queued[placeholder]
            pending = self.pending.pop(placeholder, None)
            if pending is not None:
                failed.append(self._fail(pending, code, message))
        return failed

    def reset_session(self, session_id: str) -> None:
        """Ask the server to forget a session (best effort: nothing waits for the answer)."""
        if self.state == "connected" and session_id:
            request_id = self._client.submit("reset", session_id=session_id)
            now = self._clock()
            self.pending[request_id] = Pending(request_id, "reset", started=now)

    def cancel(self, request_id: str) -> Pending | None:
        """Stop a request: the server is asked to drop it, and it ends here at once (a late reply is
        ignored). Returns what was cancelled, None for an unknown id."""
        pending = self.pending.pop(request_id, None)
        if request_id in self._queued:
            del self._queued[request_id]
        elif pending is not None:
            self._client.cancel(request_id)
            forget = getattr(self._client, "forget", None)
            if forget is not None:
                forget(request_id)
        return pending

    def close(self) -> None:
        self._set_state("closed")
        self.pending.clear()
        self._queued.clear()
        self._client.close()

    # --- events ----------------------------------------------------------------------------------------
    def poll(self) -> list[Outcome]:
        """Read whatever arrived (never blocks) and return what the Blender side must do."""
        if not self.alive:
            return []
        outcomes: list[Outcome] = []
        for message in self._client.pump():
            outcomes.extend(self._handle(message))
        if self.alive:
            outcomes.extend(self._check_liveness())
        return outcomes

    def _check_liveness(self) -> list[Outcome]:
        last_heard = getattr(self._client, "last_heard", None)
        if last_heard is None or self.state != "connected":
            return []
        now = self._clock()
        disconnects = getattr(self._client, "disconnects", 0)
        if disconnects > self._disconnects:
            self._disconnects = disconnects
            return self._lose("the server closed the connection", in_flight="connection_lost")
        chats = [p for p in self.pending.values() if p.kind == "chat"]
        if chats:
            silent = now - max(last_heard, max(p.started for p in chats))
            if silent > LOST_BUSY_S:
                return self._lose(f"no heartbeat from the server for {silent:.1f} s")
            return []
        silent = now - max(last_heard, self.state_since)
        if silent > LOST_IDLE_S:
            return self._lose(f"no answer to a ping for {silent:.0f} s")
        if not self._ping_id and now - max(last_heard, self._ping_sent) > IDLE_PING_S:
            self._ping_id = self._client.submit("ping", retries=0, timeout_s=LOST_IDLE_S)
            self._ping_sent = now
        return []

    def _lose(self, reason: str, in_flight: str = "") -> list[Outcome]:
        """The server went away: say so, end the chats that can no longer be answered, say hello again."""
        self._set_state("lost")
        self.lost_reason = reason
        outcomes = [Outcome("lost", error_text=reason)]
        if in_flight:
            for pending in [p for p in self.pending.values() if p.kind == "chat"]:
                self.cancel(pending.request_id)
                outcomes.append(self._fail(pending, in_flight, f"lost the connection to {self.address} "
                                                               "while waiting (the server stopped)"))
        if not any(p.kind == "hello" for p in self.pending.values()):
            self._send_hello()
        return outcomes

    def _fail(self, pending: Pending | None, code: str, message: str) -> Outcome:
        text = describe_error(code, message, address=self.address, timeout_s=self.timeout_s)
        if pending is not None and pending.kind == "hello":
            if self.state == "lost":
                # keep retrying: the server was there before and may come back
                self._send_hello()
                return Outcome("error", pending=pending, error_code=code, error_text=text)
            # The server never answered or refused us: stop the client's own retries right here.
            self._set_state("error")
            self.error_text = text
            self._client.close()
        return Outcome("error", pending=pending, error_code=code, error_text=text)

    def _handle(self, message) -> list[Outcome]:
        """One ``posegpt_net.wire`` message → what the Blender side must do."""
        if message.request_id and message.request_id == self._ping_id:
            if message.final:
                self._ping_id = ""             # a pong proves the server alive; a failed ping: silence decides
            return []
        pending = self.pending.get(message.request_id or "")
        if pending is None:
            return []                          # late or unasked-for: nothing waits for it
        if message.kind == "progress":
            pending.stage = message.stage
            return [Outcome("progress", pending=pending)]
        del self.pending[pending.request_id]
        if message.kind == "error":
            failed = [self._fail(pending, message.code, message.message)]
            if pending.kind == "hello":
                failed.extend(self._fail_queued(message.code, message.message))
            return failed
        expected = EXPECTED_REPLY.get(pending.kind)
        if expected is not None and message.kind != expected:
            what = f"answered a {pending.kind} request with a {message.kind} message"
            failed = [self._fail(pending, "bad_protocol", what)]
            if pending.kind == "hello":
                failed.extend(self._fail_queued("bad_protocol", what))
            return failed
        if message.kind == "hello":
            if self.state == "lost":
                self.reconnects += 1
            self._set_state("connected")
            self.error_text = self.lost_reason = ""
            self._disconnects = getattr(self._client, "disconnects", 0)
            self.model_card = dict(message.model_card or {})
            self.server_name = message.server
            self._flush_queued()
            return [Outcome("connected", pending=pending)]
        if message.kind == "result":
            # wire.decode checked each array's dtype and shape; what it cannot know is whether the
            # numbers are rotations: checked here, once, before anything reaches Blender
            try:
                poses = [check_rotmats(pose["rotmat_smpl"]) for pose in message.poses]
            except ValueError as exc:
                return [self._fail(pending, "bad_model_output", str(exc))]
            if not poses:
                return [self._fail(pending, "no_pose", f"reply {message.text!r} has no pose")]
            return [Outcome("result", pending=pending, text=message.text, poses=poses,
                            note=_note(message))]
        return []                                                # reset acknowledgements, ...


def new_session_id() -> str:
    """A fresh id for a chat's backend session."""
    return f"blender-{uuid.uuid4().hex[:16]}"


def _note(result) -> str:
    """The line the chat shows under a reply when the server dropped old turns to make room."""
    trimmed = getattr(result, "history_trimmed", 0)
    if not trimmed:
        return ""
    return f"{trimmed} oldest turn{'s' if trimmed != 1 else ''} dropped to fit the model's context."
