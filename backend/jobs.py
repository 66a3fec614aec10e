"""The broker ↔ worker protocol (internal: clients never see it), written once for both ends.

Every message on the broker's worker-facing ROUTER is one multipart message; the broker's ROUTER puts
the worker's identity in front of what the worker sends and routes on the identity it puts in front:

    worker → broker   [READY, json{model_card, pid}]
                      [FAILED, json{code, message}]                   the model could not load
                      [OUT, client_identity, summary, *wire_frames]    a reply, passed to the client as is
    broker → worker   [JOB, client_identity, request_id, json job, *pixel_frames]
                      [CANCEL, client_identity, request_id]
                      [STOP]

``summary`` is json{status, model_ms} of a final reply (the broker's log line), empty for progress. The
broker decodes a chat's image files itself (off the model's thread); a job carries each picture as raw
RGB bytes, one frame per image, its size in ``Job.images``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["READY", "FAILED", "OUT", "JOB", "CANCEL", "STOP", "Job", "job_frames", "parse_job",
           "ready_frames", "failed_frames", "out_frames", "cancel_frames", "parse_info", "summary",
           "parse_summary"]

READY = b"READY"
FAILED = b"FAILED"
OUT = b"OUT"
JOB = b"JOB"
CANCEL = b"CANCEL"
STOP = b"STOP"


@dataclass
class Job:
    """What a worker is asked to do: one chat turn, or a reset / close of a session.

    ``received_at``/``dispatched_at``: the broker's times on the machine-wide monotonic clock, from which
    the worker reports ``queue_ms`` and ``server_ms`` itself (its reply passes the broker untouched)."""

    kind: str                                  # "chat" | "reset" | "close"
    session_id: str
    prompt: str = ""
    mode: str = "direct"
    options: dict[str, Any] = field(default_factory=dict)   # max_new_tokens, temperature, top_p, seed
    images: list[list[int]] = field(default_factory=list)   # [width, height] of each RGB pixel frame
    image_decode_ms: float = 0.0                              # the broker's decoding of the client's files
    received_at: float = 0.0
    dispatched_at: float = 0.0

    @property
    def batchable(self) -> bool:
        """A direct-mode turn: may share one padded forward pass with other sessions' turns."""
        return self.kind == "chat" and self.mode == "direct"


_JOB_FIELDS = frozenset(Job.__dataclass_fields__)


def job_frames(identity: bytes, request_id: str, job: Job, images: list = ()) -> list:
    """The frames after the worker's identity that hand it ``job`` for ``(identity, request_id)``."""
    return [JOB, identity, request_id.encode(), json.dumps(asdict(job), separators=(",", ":")).encode(),
            *images]


def parse_job(frames: list) -> tuple[bytes, str, Job, list]:
    """(client identity, request id, job, image frames) from the frames after ``JOB``."""
    identity, request_id, spec = (bytes(frame) for frame in frames[:3])
    data = json.loads(spec)
    return identity, request_id.decode(), Job(**{k: v for k, v in data.items() if k in _JOB_FIELDS}), \
        list(frames[3:])


def ready_frames(model_card: dict, pid: int) -> list[bytes]:
    """A worker's announcement that its model is loaded (``model_card`` already JSON-safe)."""
    return [READY, json.dumps({"model_card": model_card, "pid": pid}).encode()]


def failed_frames(code: str, message: str) -> list[bytes]:
    """A worker's announcement that its model could not load."""
    return [FAILED, json.dumps({"code": code, "message": message[:500]}).encode()]


def parse_info(raw: bytes) -> dict:
    """The JSON object of a READY or FAILED message."""
    info = json.loads(raw)
    return info if isinstance(info, dict) else {}


def out_frames(identity: bytes, wire_frames: list, status: str | None = None, model_ms: float = 0.0) -> list:
    """A reply for the client at ``identity``; ``status`` (final replies only) feeds the broker's log."""
    return [OUT, identity, b"" if status is None else summary(status, model_ms), *wire_frames]


def cancel_frames(identity: bytes, request_id: str) -> list[bytes]:
    return [CANCEL, identity, request_id.encode()]


def summary(status: str, model_ms: float) -> bytes:
    """The log-line summary of a final reply (formatted by hand: it is on every reply's path)."""
    return b'{"status":"%s","model_ms":%.3f}' % (status.encode("ascii", "replace"), model_ms)


def parse_summary(raw: bytes) -> tuple[str, float]:
    data = json.loads(raw) if raw else {}
    return str(data.get("status", "ok")), float(data.get("model_ms", 0.0))
