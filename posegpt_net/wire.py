"""The PoseGPT wire format: the one module both the server and the Blender add-on's client use.

Transport: a client DEALER talks to the server ROUTER. Every message is one multipart message:

    [b"POSEGPT/1", type, request_id, json_header, *binary_frames]

(the ROUTER sees the client's identity frame in front). ``type`` is one of ``MESSAGE_TYPES``; ``request_id``
is chosen by the client (ASCII, at most ``Limits.max_request_id_bytes``) and echoed by every reply to that
request; ``json_header`` is a UTF-8 JSON object; binary frames carry images (PNG / JPEG / WebP bytes, as
files store them) or arrays (raw little-endian buffers described by ``{"dtype", "shape"}`` in the header).
Nothing is ever pickled. docs/protocol.md shows an example of every message.

Decoding checks every limit (frame count, header size, image bytes and pixels read from the image's own
header, prompt length) BEFORE it parses JSON or touches image data, and raises ``WireError`` carrying a
stable error code that the server sends back as an ``error`` message. Only numpy and the standard library
are used here: the add-on ships this file inside Blender.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import numpy as np

__all__ = [
    "PROTOCOL_NAME", "PROTOCOL_VERSION", "PROTOCOL", "MESSAGE_TYPES", "ERROR_CODES", "CANCELLED_MESSAGE",
    "POSE_ARRAYS",
    "Limits", "DEFAULT_LIMITS", "CLIENT_LIMITS", "WireError",
    "Hello", "Ping", "Pong", "Chat", "Progress", "Result", "Cancel", "Reset", "Close", "Closed", "Error",
    "Message", "MessageType", "REQUEST_TYPES", "REPLY_TYPES", "FINAL_TYPES", "encode", "decode", "route", "peek_request_id",
    "image_info", "declared_sizes", "check_image", "encode_array", "decode_array",
]

PROTOCOL_NAME = b"POSEGPT"
PROTOCOL_VERSION = 1
PROTOCOL = PROTOCOL_NAME + b"/" + str(PROTOCOL_VERSION).encode()


# Stable error codes (the runtime's own codes from backend.posegpt.errors pass through unchanged).
ERROR_CODES = {
    "bad_protocol": "the first frame is not a PoseGPT protocol tag",
    "unsupported_version": "the protocol version is not spoken by this peer",
    "unknown_type": "the message type is unknown or not a request",
    "too_many_frames": "the message has more frames than allowed",
    "too_few_frames": "the message lacks its request id or header frame",
    "bad_request_id": "the request id is empty, too long or not ASCII",
    "header_too_large": "the JSON header is larger than allowed",
    "bad_header": "the JSON header is not a valid object of the expected fields",
    "too_many_images": "more images than allowed",
    "image_too_large": "an image has more bytes than allowed",
    "image_too_many_pixels": "an image has more pixels (or a longer side) than allowed",
    "bad_image": "an image is not a readable PNG, JPEG or WebP file",
    "bad_array": "an array frame does not match its dtype and shape",
    "empty_prompt": "the prompt is empty",
    "prompt_too_long": "the prompt is longer than allowed",
    "image_required": "this model needs an image",
    "images_not_supported": "this model does not accept images",
    "unknown_session": "no such session",
    "bad_model_output": "the model did not produce a usable pose",
    "cancelled": "the request was cancelled",
    "bad_request": "a request argument is malformed",
    "bad_checkpoint": "the model checkpoint could not be loaded",
    "busy": "the server queue is full; try again later",
    "not_ready": "the model is still loading",
    "duplicate_request": "a request with this id is already in flight",
    "worker_failed": "the model worker stopped while handling the request",
    "server_shutdown": "the server is shutting down",
    "internal": "unexpected server error",
    # produced by the client itself, never sent by a server
    "timeout": "no reply (or heartbeat) from the server within the timeout",
    "connection_lost": "the connection was lost while the request was in flight; it was not re-run",
    "auth_failed": "the server refused the connection (CURVE keys or plaintext)",
}

CANCELLED_MESSAGE = "the request was cancelled"      # the message of every "cancelled" error

# The arrays of one pose in a result, the frame each is expressed in, and its shape.
POSE_ARRAYS = {
    "rotmat": ("camera", (24, 3, 3)),
    "rotvec": ("camera", (24, 3)),
    "d6": ("camera", (24, 6)),
    "quat_wxyz": ("camera", (24, 4)),
    "rotmat_smpl": ("smpl", (24, 3, 3)),
    "rotmat_upright": ("upright", (24, 3, 3)),
}

_ALLOWED_DTYPES = {"float32": "<f4", "float64": "<f8", "int32": "<i4", "int64": "<i8", "uint8": "u1"}
# looked up per array on every result: dtype.name is slow Python in numpy, a dict of dtypes is not
_WIRE_DTYPE = {name: np.dtype(code) for name, code in _ALLOWED_DTYPES.items()}            # on the wire
_NATIVE_DTYPE = {name: np.dtype(name) for name in _ALLOWED_DTYPES}                       # once received
_NAME_OF_NATIVE = {dtype: name for name, dtype in _NATIVE_DTYPE.items()}
_MODES = ("direct", "chat")


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts; everything is checked before JSON parsing or image decoding."""

    max_frames: int = 8                    # protocol, type, id, header + binary frames
    max_header_bytes: int = 64 * 1024
    max_request_id_bytes: int = 64
    max_session_id_chars: int = 128
    max_images: int = 4
    max_image_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 40_000_000     # e.g. 8000 × 5000
    max_image_side: int = 16384
    max_prompt_chars: int = 8000
    max_new_tokens: int = 1024
    max_array_bytes: int = 1024 * 1024

    def __post_init__(self):
        for name, value in self.__dict__.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")
        if self.max_frames < 4:
            raise ValueError("Limits.max_frames must allow at least the 4 fixed frames")


DEFAULT_LIMITS = Limits()
# A client receives results: up to 16 poses × 6 arrays.
CLIENT_LIMITS = Limits(max_frames=4 + 16 * len(POSE_ARRAYS), max_header_bytes=1024 * 1024)


class WireError(ValueError):
    """A message that cannot be accepted; ``code`` is one of ``ERROR_CODES``."""

    def __init__(self, code: str, message: str, request_id: str = ""):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


# --- messages ------------------------------------------------------------------------------------------
# Each class also has ``kind`` (its type name, frame 1) and ``final`` (a reply that ends its request),
# set from the one table of message types at the end of this module.

@dataclass
class Hello:
    """Client → server: ``client`` names the client. Server → client: ``server``, the model card
    (backbone, family, accepts_images, ...), ``capabilities`` and the server's ``limits``."""

    request_id: str
    client: str = ""
    server: str = ""
    protocol_versions: list[int] = field(default_factory=lambda: [PROTOCOL_VERSION])
    model_card: dict | None = None
    capabilities: dict | None = None
    limits: dict | None = None
    ready: bool = True


@dataclass
class Ping:
    request_id: str


@dataclass
class Pong:
    request_id: str
    server_time: float = 0.0
    queued: int = 0
    workers: int = 0


@dataclass
class Chat:
    """One turn: ``images`` are encoded files (PNG/JPEG/WebP bytes), never decoded pixels."""

    request_id: str
    session_id: str
    prompt: str
    images: list[bytes] = field(default_factory=list)
    mode: str = "direct"
    max_new_tokens: int = 512  # chat mode stops at the end token first; the published script's cap
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def options(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed}


@dataclass
class Progress:
    """Heartbeat / progress of a request: ``stage`` is "queued", "running" or "generating"."""

    request_id: str
    stage: str
    info: dict = field(default_factory=dict)


@dataclass
class Result:
    """``poses[i]`` maps every name of ``POSE_ARRAYS`` to a float32 array; ``POSE_ARRAYS`` says the frame."""

    request_id: str
    session_id: str
    text: str
    poses: list[dict[str, np.ndarray]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    worker: str = ""            # which model worker answered
    history_trimmed: int = 0    # oldest whole turns the server dropped so this one fits the context


@dataclass
class Cancel:
    """Cancels the request whose id is ``request_id``; that request then ends with error "cancelled"
    (or with its result, when it finished first)."""

    request_id: str


@dataclass
class Reset:
    request_id: str
    session_id: str


@dataclass
class Close:
    request_id: str
    session_id: str


@dataclass
class Closed:
    """Reply to reset / close; ``existed`` says whether the session held any state."""

    request_id: str
    session_id: str
    action: str = "close"
    existed: bool = False


@dataclass
class Error:
    request_id: str
    code: str
    message: str
    details: dict = field(default_factory=dict)


Message = Union[Hello, Ping, Pong, Chat, Progress, Result, Cancel, Reset, Close, Closed, Error]


# --- arrays --------------------------------------------------------------------------------------------

def encode_array(array: np.ndarray) -> tuple[dict, bytes]:
    """(descriptor {"dtype", "shape"}, raw little-endian bytes) for an array of an allowed dtype."""
    array = np.asarray(array)
    name = _NAME_OF_NATIVE.get(array.dtype) or array.dtype.name       # the slow path: byte-swapped input
    if name not in _ALLOWED_DTYPES:
        raise ValueError(f"dtype {name} cannot be sent; allowed: {sorted(_ALLOWED_DTYPES)}")
    data = array.astype(_WIRE_DTYPE[name], order="C", copy=False)      # no copy when it is already so
    return {"dtype": name, "shape": list(array.shape)}, data.tobytes()


def decode_array(descriptor: Any, buffer: bytes, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """The array a descriptor and buffer describe; ``WireError("bad_array")`` on any mismatch."""
    if not isinstance(descriptor, dict):
        raise WireError("bad_array", "array descriptor is not an object")
    dtype, shape = descriptor.get("dtype"), descriptor.get("shape")
    wire_dtype = _WIRE_DTYPE.get(dtype) if isinstance(dtype, str) else None
    if wire_dtype is None:
        raise WireError("bad_array", f"dtype {dtype!r:.40} not allowed")
    if type(shape) is not list or len(shape) > 8:
        raise WireError("bad_array", f"bad shape {shape!r:.80}")
    expected = wire_dtype.itemsize
    for size in shape:                   # JSON integers only (not bools), each at most 2**24
        if type(size) is not int or not 0 <= size <= 1 << 24:
            raise WireError("bad_array", f"bad shape {shape!r:.80}")
        expected *= size
    if expected > limits.max_array_bytes or expected != len(buffer):
        raise WireError("bad_array", f"{dtype}{shape} needs {expected} bytes, frame has {len(buffer)}")
    # astype copies: the array owns writable memory in native byte order, not the frame's buffer
    return np.frombuffer(buffer, dtype=wire_dtype).reshape(shape).astype(_NATIVE_DTYPE[dtype])


# --- image headers (sizes read without decoding pixels) -------------------------------------------------

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_info(data: bytes) -> tuple[str, int, int]:
    """(format "png"|"jpeg"|"webp", width, height) read from the file header only.

    Raises ``WireError("bad_image")`` for anything else or a truncated header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise WireError("bad_image", "PNG without an IHDR chunk")
        width, height = struct.unpack(">II", data[16:24])
        return _checked("png", width, height)
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_info(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_info(data)
    raise WireError("bad_image", "not a PNG, JPEG or WebP file")


def _checked(fmt: str, width: int, height: int) -> tuple[str, int, int]:
    if width < 1 or height < 1:
        raise WireError("bad_image", f"{fmt} header says {width}×{height}")
    return fmt, width, height


def _jpeg_info(data: bytes) -> tuple[str, int, int]:
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            raise WireError("bad_image", "JPEG marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:                       # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:   # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2:
            raise WireError("bad_image", "JPEG segment length < 2")
        if marker in _JPEG_SOF:
            if pos + 9 > end:
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return _checked("jpeg", width, height)
        if marker in (0xDA, 0xD9):               # scan data or end before any frame header
            break
        pos += 2 + length
    raise WireError("bad_image", "JPEG without a frame header")


def _webp_info(data: bytes) -> tuple[str, int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return _checked("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return _checked("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return _checked("webp", width, height)
    raise WireError("bad_image", "WebP without a readable VP8/VP8L/VP8X header")


_MAX_HEADER_CHUNKS = 64      # chunks / markers scanned for a second size declaration (bounded work)


def declared_sizes(data: bytes) -> set[tuple[int, int]]:
    """Every (width, height) the file's headers declare before its pixel data: a PNG's IHDR chunks, a
    JPEG's SOF markers, a WebP's VP8X canvas and its VP8/VP8L bitstream. A well-formed file declares one;
    a decoder may believe a later one than ``image_info`` reads, so more than one is refused."""
    sizes = {image_info(data)[1:]}
    mv = memoryview(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        pos = 8
        for _ in range(_MAX_HEADER_CHUNKS):
            if pos + 8 > len(data):
                break
            (length,), kind = struct.unpack(">I", mv[pos:pos + 4]), bytes(mv[pos + 4:pos + 8])
            if kind == b"IDAT":
                break
            if kind == b"IHDR" and length >= 8 and pos + 16 <= len(data):
                sizes.add(struct.unpack(">II", mv[pos + 8:pos + 16]))
            pos += 12 + length
    elif data[:3] == b"\xff\xd8\xff":
        pos = 2
        for _ in range(_MAX_HEADER_CHUNKS):
            if pos + 4 > len(data) or data[pos] != 0xFF:
                break
            marker = data[pos + 1]
            if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:
                pos += 1 if marker == 0xFF else 2
                continue
            if marker in (0xDA, 0xD9):
                break
            (length,) = struct.unpack(">H", mv[pos + 2:pos + 4])
            if marker in _JPEG_SOF and pos + 9 <= len(data):
                height, width = struct.unpack(">HH", mv[pos + 5:pos + 9])
                sizes.add((width, height))
            pos += 2 + max(length, 2)
    elif data[12:16] == b"VP8X":
        canvas = next(iter(sizes))
        pos = 30
        for _ in range(_MAX_HEADER_CHUNKS):
            if pos + 8 > len(data):
                break
            kind, (length,) = bytes(mv[pos:pos + 4]), struct.unpack("<I", mv[pos + 4:pos + 8])
            if kind in (b"VP8 ", b"VP8L"):
                try:
                    sizes.add(_webp_info(b"RIFF\0\0\0\0WEBP" + bytes(mv[pos:pos + 18]))[1:])
                except WireError:
                    pass
                break
            if kind == b"ANMF" and pos + 20 <= len(data):
                x, y, w, h = (int.from_bytes(mv[pos + 8 + 3 * k:pos + 11 + 3 * k], "little") for k in range(4))
                if 2 * x + w + 1 > canvas[0] or 2 * y + h + 1 > canvas[1]:
                    sizes.add((2 * x + w + 1, 2 * y + h + 1))       # a frame outside the canvas
            pos += 8 + length + (length & 1)
    return sizes


def check_image(data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str, int, int]:
    """``image_info`` plus the byte and pixel limits; a file declaring two sizes is ``image_too_large``."""
    if len(data) > limits.max_image_bytes:
        raise WireError("image_too_large", f"image has {len(data)} bytes, limit {limits.max_image_bytes}")
    fmt, width, height = image_info(data)
    sizes = declared_sizes(data)
    if len(sizes) > 1:
        raise WireError("image_too_large", f"the {fmt} file declares {len(sizes)} different sizes "
                                           f"({', '.join(f'{w}×{h}' for w, h in sorted(sizes))})")
    if max(width, height) > limits.max_image_side or width * height > limits.max_image_pixels:
        raise WireError("image_too_many_pixels",
                        f"{width}×{height} image exceeds {limits.max_image_pixels} pixels "
                        f"or {limits.max_image_side} per side")
    return fmt, width, height


# --- encoding ------------------------------------------------------------------------------------------

def _frames(kind: str, request_id: str, header: dict, blobs: list[bytes] = ()) -> list[bytes]:
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return [PROTOCOL, kind.encode(), request_id.encode("ascii"), head, *blobs]


def encode(message: Message) -> list[bytes]:
    """The frames of one message (without any ROUTER identity)."""
    kind = getattr(type(message), "kind", None)
    if kind not in _TYPES:
        raise ValueError(f"not a wire message: {type(message).__name__}")
    rid = message.request_id
    if isinstance(message, Hello):
        header = {"client": message.client, "server": message.server,
                  "protocol_versions": list(message.protocol_versions), "ready": message.ready}
        for key in ("model_card", "capabilities", "limits"):
            if getattr(message, key) is not None:
                header[key] = getattr(message, key)
        return _frames(kind, rid, header)
    if isinstance(message, Ping) or isinstance(message, Cancel):
        return _frames(kind, rid, {})
    if isinstance(message, Pong):
        return _frames(kind, rid, {"server_time": message.server_time, "queued": message.queued,
                                   "workers": message.workers})
    if isinstance(message, Chat):
        images = []
        for blob in message.images:
            fmt, width, height = image_info(bytes(blob))
            images.append({"format": fmt, "width": width, "height": height, "bytes": len(blob)})
        header = {"session_id": message.session_id, "prompt": message.prompt, "mode": message.mode,
                  "options": message.options(), "images": images}
        return _frames(kind, rid, header, [bytes(b) for b in message.images])
    if isinstance(message, Progress):
        return _frames(kind, rid, {"stage": message.stage, "info": message.info})
    if isinstance(message, Result):
        arrays, blobs = [], []
        for index, pose in enumerate(message.poses):
            for name, (frame, _shape) in POSE_ARRAYS.items():
                descriptor, blob = encode_array(np.asarray(pose[name], dtype=np.float32))
                arrays.append({"pose": index, "name": name, "frame": frame, **descriptor})
                blobs.append(blob)
        header = {"session_id": message.session_id, "text": message.text, "num_poses": len(message.poses),
                  "arrays": arrays, "timings": message.timings, "worker": message.worker,
                  "history_trimmed": message.history_trimmed}
        return _frames(kind, rid, header, blobs)
    if isinstance(message, (Reset, Close)):
        return _frames(kind, rid, {"session_id": message.session_id})
    if isinstance(message, Closed):
        return _frames(kind, rid, {"session_id": message.session_id, "action": message.action,
                                   "existed": message.existed})
    return _frames(kind, rid, {"code": message.code, "message": message.message, "details": message.details})


# --- decoding ------------------------------------------------------------------------------------------

def peek_request_id(frames: list[bytes], limits: Limits = DEFAULT_LIMITS) -> str:
    """The request id of a (possibly malformed) message when it is usable, else ""; for error replies."""
    if len(frames) >= 3:
        try:
            return _request_id(frames[2], limits)
        except WireError:
            pass
    return ""


def _request_id(raw: bytes, limits: Limits) -> str:
    if not raw or len(raw) > limits.max_request_id_bytes:
        raise WireError("bad_request_id", f"request id must have 1..{limits.max_request_id_bytes} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise WireError("bad_request_id", "request id is not ASCII") from None
    if not text.isprintable():
        raise WireError("bad_request_id", "request id has control characters")
    return text


def _check_protocol(tag: bytes, rid: str = "") -> None:
    name, slash, version = tag.partition(b"/")
    if name != PROTOCOL_NAME or not slash:
        raise WireError("bad_protocol", f"expected {PROTOCOL!r}, got {tag[:32]!r}", rid)
    if version != str(PROTOCOL_VERSION).encode():
        raise WireError("unsupported_version",
                        f"protocol version {version[:16]!r} is not supported; this peer speaks {PROTOCOL_VERSION}",
                        rid)


def _get(header: dict, key: str, kinds, default=..., rid: str = ""):
    value = header.get(key, default)
    if value is ...:
        raise WireError("bad_header", f"header lacks {key!r}", rid)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds)):
        raise WireError("bad_header", f"header field {key!r} has the wrong type", rid)
    return value


def _as_tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _is_unicode(text: str) -> bool:
    """False for text JSON let through that UTF-8 cannot hold (a lone surrogate from a \\udXXX escape)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _session_id(header: dict, limits: Limits, rid: str) -> str:
    session = _get(header, "session_id", str, rid=rid)
    if not session or len(session) > limits.max_session_id_chars or not session.isprintable():
        raise WireError("bad_header", f"session_id must be 1..{limits.max_session_id_chars} printable "
                                      "characters", rid)
    return session


def decode(frames: list[bytes], limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse one message (without ROUTER identity); ``WireError`` (with ``request_id`` when known) if bad."""
    if len(frames) > limits.max_frames:
        raise WireError("too_many_frames", f"{len(frames)} frames, limit {limits.max_frames}",
                        peek_request_id(frames, limits))
    if len(frames) < 4:
        if frames:
            _check_protocol(bytes(frames[0]), peek_request_id(frames, limits))
        raise WireError("too_few_frames", f"{len(frames)} frames; at least 4 needed",
                        peek_request_id(frames, limits))
    tag, kind_raw, rid_raw, head = (bytes(f) for f in frames[:4])
    # binary frames (images of up to megabytes) are read in place, never copied here
    blobs = [b if isinstance(b, (bytes, memoryview)) else memoryview(b) for b in frames[4:]]
    _check_protocol(tag, peek_request_id(frames, limits))
    kind = kind_raw.decode("ascii", "replace")
    # an error about a message whose id was unreadable carries an empty id
    rid = "" if kind == "error" and not rid_raw else _request_id(rid_raw, limits)
    if kind not in _TYPES:
        raise WireError("unknown_type", f"unknown message type {kind[:32]!r}", rid)
    if len(head) > limits.max_header_bytes:
        raise WireError("header_too_large", f"header has {len(head)} bytes, limit {limits.max_header_bytes}",
                        rid)
    if kind == "chat":
        # images are checked from their own headers before the JSON header is parsed
        if len(blobs) > limits.max_images:
            raise WireError("too_many_images", f"{len(blobs)} images, limit {limits.max_images}", rid)
        infos = []
        for blob in blobs:
            try:
                infos.append(check_image(blob, limits))
            except WireError as err:
                raise WireError(err.code, err.message, rid) from None
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WireError("bad_header", "header is not UTF-8 JSON", rid) from None
    if not isinstance(header, dict):
        raise WireError("bad_header", "header is not a JSON object", rid)
    return _TYPES[kind].decode(rid, header, blobs, limits, *([infos] if kind == "chat" else []))


def _no_blobs(rid: str, blobs: list[bytes]) -> None:
    if blobs:
        raise WireError("too_many_frames", "this message type carries no binary frames", rid)


def _decode_hello(rid, header, blobs, limits):
    _no_blobs(rid, blobs)
    versions = _get(header, "protocol_versions", list, [PROTOCOL_VERSION], rid)
    optional = {}
    for key in ("model_card", "capabilities", "limits"):
        optional[key] = _get(header, key, dict, None, rid) if header.get(key) is not None else None
    return Hello(rid, client=_get(header, "client", str, "", rid)[:256], server=_get(header, "server", str, "", rid),
                 protocol_versions=[v for v in versions if isinstance(v, int)][:16],
                 ready=_get(header, "ready", bool, True, rid), **optional)


def _decode_ping(rid, header, blobs, limits):
    _no_blobs(rid, blobs)
    return Ping(rid)


def _decode_pong(rid, header, blobs, limits):
    _no_blobs(rid, blobs)
    return Pong(rid, float(_get(header, "server_time", (int, float), 0.0, rid)),
                _get(header, "queued", int, 0, rid), _get(header, "workers", int, 0, rid))


def _decode_chat(rid, header, blobs, limits, infos):
    session = _session_id(header, limits, rid)
    prompt = _get(header, "prompt", str, rid=rid)
    if len(prompt) > limits.max_prompt_chars:
        raise WireError("prompt_too_long", f"the prompt has {len(prompt)} characters, limit "
                                           f"{limits.max_prompt_chars}", rid)
    if not prompt.strip():
        raise WireError("empty_prompt", "the prompt is empty", rid)
    if not _is_unicode(prompt):
        raise WireError("bad_request", "the prompt holds a lone UTF-16 surrogate (\\ud800-\\udfff escape); "
                                       "send valid Unicode", rid)
    mode = _get(header, "mode", str, "direct", rid)
    if mode not in _MODES:
        raise WireError("bad_header", f"mode must be one of {_MODES}, got {mode[:32]!r}", rid)
    described = _get(header, "images", list, [], rid)
    if len(described) != len(blobs):
        raise WireError("bad_header", f"header describes {len(described)} images, message carries "
                                      f"{len(blobs)}", rid)
    for meta, (fmt, width, height), blob in zip(described, infos, blobs):
        if not isinstance(meta, dict) or meta.get("bytes", len(blob)) != len(blob) \
                or meta.get("format", fmt) != fmt:
            raise WireError("bad_image", "image description does not match the image frame", rid)
    options = _get(header, "options", dict, {}, rid)
    max_new_tokens = _get(options, "max_new_tokens", int, 512, rid)
    temperature = _get(options, "temperature", (int, float), 0.0, rid)
    top_p = _get(options, "top_p", (int, float), 1.0, rid)
    seed = options.get("seed")
    if not 1 <= max_new_tokens <= limits.max_new_tokens:
        raise WireError("bad_header", f"max_new_tokens must be in 1..{limits.max_new_tokens}", rid)
    if not (math.isfinite(temperature) and 0.0 <= temperature <= 10.0):
        raise WireError("bad_header", "temperature must be in [0, 10]", rid)
    if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
        raise WireError("bad_header", "top_p must be in (0, 1]", rid)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63):
        raise WireError("bad_header", "seed must be null or an integer in [0, 2**63)", rid)
    return Chat(rid, session, prompt, list(blobs), mode, max_new_tokens, float(temperature), float(top_p), seed)


def _decode_progress(rid, header, blobs, limits):
    _no_blobs(rid, blobs)
    return Progress(rid, _get(header, "stage", str, rid=rid), _get(header, "info", dict, {}, rid))


def _decode_result(rid, header, blobs, limits):
    num_poses = _get(header, "num_poses", int, rid=rid)
    arrays = _get(header, "arrays", list, rid=rid)
    if len(arrays) != len(blobs) or len(arrays) != num_poses * len(POSE_ARRAYS):
        raise WireError("bad_array", f"{num_poses} poses need {num_poses * len(POSE_ARRAYS)} arrays; header "
                                     f"lists {len(arrays)}, message carries {len(blobs)}", rid)
    poses: list[dict[str, np.ndarray]] = [{} for _ in range(num_poses)]
    for descriptor, blob in zip(arrays, blobs):
        try:
            array = decode_array(descriptor, blob, limits)
        except WireError as err:
            raise WireError(err.code, err.message, rid) from None
        index, name = descriptor.get("pose"), descriptor.get("name")
        if (type(index) is not int or not 0 <= index < num_poses or not isinstance(name, str)
                or name not in POSE_ARRAYS or array.shape != POSE_ARRAYS[name][1] or name in poses[index]):
            raise WireError("bad_array", f"unexpected pose array {name!r} of pose {index!r}", rid)
        poses[index][name] = array
    timings = _get(header, "timings", dict, {}, rid)
    return Result(rid, _get(header, "session_id", str, rid=rid), _get(header, "text", str, rid=rid), poses,
                  {k: float(v) for k, v in timings.items() if isinstance(v, (int, float))},
                  _get(header, "worker", str, "", rid), _get(header, "history_trimmed", int, 0, rid))


def _decode_cancel(rid, header, blobs, limits):
    _no_blobs(rid, blobs)
    return Cancel(rid)


def _decode_session_op(cls):
    def decoder(rid, header, blobs, limits):
        _no_blobs(rid, blobs)
        return cls(rid, _session_id(header, limits, rid))
    return decoder


def _decode_closed(rid, header, blobs, limits):
    _no_blobs(rid, blobs)
    return Closed(rid, _get(header, "session_id", str, rid=rid), _get(header, "action", str, "close", rid),
                  _get(header, "existed", bool, False, rid))


def _decode_error(rid, header, blobs, limits):
    _no_blobs(rid, blobs)
    return Error(rid, _get(header, "code", str, rid=rid), _get(header, "message", str, "", rid),
                 _get(header, "details", dict, {}, rid))


# --- the one table of message types ---------------------------------------------------------------------

@dataclass(frozen=True)
class MessageType:
    """One message type: its class, who sends it, whether it ends its request, how it is decoded."""

    cls: type
    request: bool            # a client sends it to the server
    reply: bool              # the server sends it to a client
    final: bool              # a reply that ends its request (everything but progress)
    decode: Callable


_TYPES = {
    "hello": MessageType(Hello, True, True, True, _decode_hello),
    "ping": MessageType(Ping, True, False, False, _decode_ping),
    "pong": MessageType(Pong, False, True, True, _decode_pong),
    "chat": MessageType(Chat, True, False, False, _decode_chat),
    "progress": MessageType(Progress, False, True, False, _decode_progress),
    "result": MessageType(Result, False, True, True, _decode_result),
    "cancel": MessageType(Cancel, True, False, False, _decode_cancel),
    "reset": MessageType(Reset, True, False, False, _decode_session_op(Reset)),
    "close": MessageType(Close, True, False, False, _decode_session_op(Close)),
    "closed": MessageType(Closed, False, True, True, _decode_closed),
    "error": MessageType(Error, False, True, True, _decode_error),
}
MESSAGE_TYPES = tuple(_TYPES)
REQUEST_TYPES = tuple(name for name, t in _TYPES.items() if t.request)
REPLY_TYPES = tuple(name for name, t in _TYPES.items() if t.reply)
FINAL_TYPES = frozenset(name for name, t in _TYPES.items() if t.final)
_FINAL_RAW = frozenset(name.encode() for name in FINAL_TYPES)
for _name, _type in _TYPES.items():
    _type.cls.kind = _name                                   # e.g. Result.kind == "result"
    _type.cls.final = _type.final                            # a reply that ends its request


def route(frames: list) -> tuple[str, str, bool]:
    """(type, request id, final) of a well-formed message without parsing its header: what a broker
    needs to pass a worker's reply on. Raises ``WireError`` when the frames are not a message."""
    if len(frames) < 4:
        raise WireError("too_few_frames", f"{len(frames)} frames; at least 4 needed")
    kind, rid = bytes(frames[1]), bytes(frames[2])
    try:
        return kind.decode("ascii"), rid.decode("ascii"), kind in _FINAL_RAW
    except UnicodeDecodeError:
        raise WireError("bad_request_id", "type or request id is not ASCII") from None
