"""The add-on's side of the conversation with posegpt-serve, without bpy.

``Connection`` wraps ``posegpt_net.client.PoseClient``: it remembers which armature each request is for,
turns the client's events into ``Outcome``s the Blender side applies on the main thread, and puts every
failure into words (``reply_handling.describe_error``). ``poll()`` never blocks: Blender calls it from a
``bpy.app.timers`` callback.
"""
from __future__ import annotations

import ipaddress
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .reply_handling import describe_error, pose_to_smpl_frame

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
DEFAULT_TIMEOUT_S = 10.0
CLIENT_NAME = "posegpt-blender"
# Extra seconds past the timeout before this side gives up on its own, in case no event says so.
LOCAL_TIMEOUT_GRACE_S = 1.0

_ADDRESS_RE = re.compile(r"^tcp://(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\s]+):(?P<port>\d{1,5})$")
_Z85_KEY_RE = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class ConnectionProblem(Exception):
    """A failure the artist must act on; ``code`` is a wire/runtime/add-on error code."""

    def __init__(self, code: str, message: str, *, address: str = "", timeout_s: float = 0.0):
        self.code = code
        self.message = message
        self.text = describe_error(code, message, address=address, timeout_s=timeout_s)
        super().__init__(self.text)


def address_host(address: str) -> str:
    """The host part of ``tcp://HOST:PORT`` (brackets stripped); raises ConnectionProblem when malformed."""
    if address.startswith(("ipc://", "inproc://")):
        return "localhost"
    match = _ADDRESS_RE.match(address.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ConnectionProblem("bad_address", f"cannot use backend address {address!r}", address=address)
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
        raise ConnectionProblem("online_access", f"online access is disabled, so {address} is not contacted",
                                address=address)


def read_curve_key(value: str, *, secret: bool) -> bytes:
    """A CURVE key given as a key file (zmq.auth certificate from `make keys`) or as 40 Z85 characters."""
    text = value.strip()
    if _Z85_KEY_RE.match(text):
        return text.encode("ascii")
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConnectionProblem("bad_keys", f"{text!r} is neither a key file nor a 40-character Z85 key")
    import zmq.auth  # here, not at the top: the bpy-free import test needs no pyzmq
    public, secret_key = zmq.auth.load_certificate(str(path))
    key = secret_key if secret else public
    if not key:
        raise ConnectionProblem("bad_keys", f"{path.name} holds no {'secret' if secret else 'public'} key")
    return key


def curve_settings(server_public_key: str, client_public_key: str, client_secret_key: str):
    """The client's ``curve`` argument (``posegpt_net.client.CurveKeys``) from the three preference
    fields; all empty → None (plaintext, fine on loopback)."""
    fields = (server_public_key.strip(), client_public_key.strip(), client_secret_key.strip())
    if not any(fields):
        return None
    if not all(fields):
        raise ConnectionProblem("bad_keys", "CURVE needs the server public key and the client public and "
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
    last_heard: float = 0.0
    stage: str = "sent"


@dataclass
class Outcome:
    """Something the Blender side must act on. ``kind``: "connected", "result", "error", "progress",
    "disconnected". ``poses`` are (24, 3, 3) float64 SMPL-frame rotations."""
    kind: str
    pending: Pending | None = None
    text: str = ""
    poses: list[np.ndarray] = field(default_factory=list)
    error_code: str = ""
    error_text: str = ""


class Connection:
    """One connection to a backend. States: "connecting", "connected", "error", "closed"."""

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
        self.model_card: dict = {}
        self.server_name = ""
        self.error_text = ""
        self.pending: dict[str, Pending] = {}
        self._queued: dict[str, tuple] = {}     # chats sent before the hello answered, by placeholder id
        self._clock = clock
        if client_factory is None:
            from posegpt_net.client import PoseClient as client_factory
        self._client = client_factory(address, timeout_s=self.timeout_s, curve=curve, client_name=CLIENT_NAME)
        now = clock()
        hello_id = self._client.submit("hello", client=CLIENT_NAME)
        self.pending[hello_id] = Pending(hello_id, "hello", started=now, last_heard=now)

    # --- requests ------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while any request waits for an answer (the timer keeps running)."""
        return bool(self.pending)

    def chats_for(self, target: str) -> list[Pending]:
        return [p for p in self.pending.values() if p.kind == "chat" and p.target == target]

    def send_chat(self, target: str, session_id: str, prompt: str, images: list[bytes] = (),
                  mode: str = "chat") -> str:
        """Send one turn for armature ``target``; returns the request id (the reply comes via poll())."""
        if self.state not in ("connecting", "connected"):
            raise ConnectionProblem("not_connected", f"not connected to {self.address}", address=self.address)
        if not prompt.strip():
            raise ConnectionProblem("empty_prompt", "the prompt is empty")
        now = self._clock()
        if self.state == "connecting":          # goes out once the server has said hello
            request_id = f"queued-{uuid.uuid4().hex[:12]}"
            self._queued[request_id] = (session_id, prompt, list(images), mode)
            self.pending[request_id] = Pending(request_id, "chat", target=target, prompt=prompt, started=now,
                                               last_heard=now, stage="waiting for the server")
            return request_id
        request_id = self._client.chat(session_id, prompt, images=list(images), mode=mode)
        self.pending[request_id] = Pending(request_id, "chat", target=target, prompt=prompt, started=now,
                                           last_heard=now)
        return request_id

    def _flush_queued(self) -> None:
        for placeholder, (session_id, prompt, images, mode) in list(self._queued.items()):
            pending = self.pending.pop(placeholder, None)
            del self._queued[placeholder]
            if pending is None:                  # cancelled while waiting
                continue
            pending.request_id = self._client.chat(session_id, prompt, images=images, mode=mode)
            pending.stage, pending.last_heard = "sent", self._clock()
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
            self.pending[request_id] = Pending(request_id, "reset", started=now, last_heard=now)

    def cancel(self, request_id: str) -> None:
        """Ask the server to stop a request; its reply then comes back as a ``cancelled`` error."""
        if request_id in self._queued:
            del self._queued[request_id]
            self.pending.pop(request_id, None)
        elif request_id in self.pending:
            self._client.cancel(request_id)

    def close(self) -> None:
        self.state = "closed"
        self.pending.clear()
        self._queued.clear()
        self._client.close()

    # --- events ----------------------------------------------------------------------------------------
    def poll(self) -> list[Outcome]:
        """Read whatever arrived (never blocks) and return what the Blender side must do."""
        if self.state in ("closed", "error"):
            return []
        outcomes: list[Outcome] = []
        for event in self._client.pump():
            outcomes.extend(self._handle(event))
        outcomes.extend(self._expire())
        return outcomes

    def _fail(self, pending: Pending | None, code: str, message: str) -> Outcome:
        text = describe_error(code, message, address=self.address, timeout_s=self.timeout_s)
        if pending is None or pending.kind == "hello":
            # The server never answered or refused us: stop the client's own retries right here.
            self.state, self.error_text = "error", text
            self._client.close()
        return Outcome("error", pending=pending, error_code=code, error_text=text)

    def _handle(self, event) -> list[Outcome]:
        pending = self.pending.get(event.request_id or "")
        if pending is not None:
            pending.last_heard = self._clock()
        if event.kind == "progress":
            if pending is None:
                return []
            pending.stage = str(event.header.get("stage", "running"))
            return [Outcome("progress", pending=pending)]
        if pending is not None:
            del self.pending[pending.request_id]
        if event.kind == "error":
            code, message = event.error_code or "internal", event.message or ""
            failed = [self._fail(pending, code, message)]
            if pending is None or pending.kind == "hello":
                failed.extend(self._fail_queued(code, message))
            return failed
        if event.kind == "hello":
            self.state, self.error_text = "connected", ""
            self.model_card = dict(event.header.get("model_card") or {})
            self.server_name = str(event.header.get("server", ""))
            self._flush_queued()
            return [Outcome("connected", pending=pending)]
        if event.kind == "result" and pending is not None and pending.kind == "chat":
            text = str(event.text or event.header.get("text", ""))
            try:
                poses = [pose_to_smpl_frame(p) for p in event.poses]
            except ValueError as exc:
                return [self._fail(pending, "bad_model_output", str(exc))]
            if not poses:
                return [self._fail(pending, "no_pose", f"reply {text!r} has no pose")]
            return [Outcome("result", pending=pending, text=text, poses=poses)]
        if event.kind == "closed" and pending is None:
            self.state = "closed"
            return [Outcome("disconnected")]
        return []                                                # pong, reset acknowledgements, ...

    def _expire(self) -> list[Outcome]:
        """Fail requests nothing was heard about for longer than the timeout (the client normally does
        this itself with a ``timeout`` error; this is the safety net)."""
        now, expired = self._clock(), []
        for pending in list(self.pending.values()):
            if pending.request_id in self._queued:
                continue                         # waits on the hello, which fails them all if it expires
            # The hello gets no grace: the client would resend it (lazy pirate) and the artist would wait
            # several timeouts to learn that no server is there.
            limit = self.timeout_s + (0.0 if pending.kind == "hello" else LOCAL_TIMEOUT_GRACE_S)
            if now - pending.last_heard > limit:
                del self.pending[pending.request_id]
                message = f"no answer from {self.address}"
                expired.append(self._fail(pending, "timeout", message))
                if pending.kind == "hello":
                    expired.extend(self._fail_queued("timeout", message))
        return expired


def new_session_id() -> str:
    """A fresh id for a chat's backend session."""
    return f"blender-{uuid.uuid4().hex[:16]}"
