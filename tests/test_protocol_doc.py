"""docs/protocol.md agrees with the server: every example in it is walked against a live posegpt-serve.

Each example block (``POSEGPT/1  type  id`` then its JSON header) is parsed from the document; request
examples are sent as written (a chat gets a real JPEG of the described size), and the server's replies
must carry every field the documented reply shows, with the documented values where the document gives
exact words (the cancel, the error examples). The table of error codes must be ``wire.ERROR_CODES``."""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest
import zmq
from PIL import Image

from backend.posegpt.tiny import build_tiny_checkpoint
from backend.server import serve_in_thread
from posegpt_net import wire

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
_HEAD = re.compile(r"^    POSEGPT/1  (\w+)  (\S+)\s*$")


def examples() -> list[tuple[str, str, dict]]:
    """(type, request id, header) of every example block, in document order; ``...`` elisions dropped."""
    out, lines = [], DOC.read_text().splitlines()
    for i, line in enumerate(lines):
        match = _HEAD.match(line)
        if not match:
            continue
        body = []
        for follow in lines[i + 1:]:
            if not follow.startswith("    ") or _HEAD.match(follow) or follow.strip().startswith("+ "):
                break
            body.append(follow.strip())
        text = re.sub(r",\s*\.\.\.\s*([}\]])", r"\1", " ".join(body))
        out.append((match[1], match[2], json.loads(text)))
    return out


def documented(kind: str, index: int = 0) -> tuple[str, dict]:
    found = [(rid, header) for k, rid, header in examples() if k == kind]
    return found[index]


def assert_has_documented_fields(actual: dict, doc: dict, where: str) -> None:
    for key, value in doc.items():
        assert key in actual, f"{where}: the server sends no {key!r}, the document shows it"
        if isinstance(value, dict) and key not in ("options", "details", "info"):
            assert isinstance(actual[key], dict), f"{where}.{key}"
            assert_has_documented_fields(actual[key], value, f"{where}.{key}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llava", family="llava", seed=0)
    handle = serve_in_thread(checkpoint, device="cpu", dtype="float32")
    yield handle
    handle.stop()


@pytest.fixture
def sock(server):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.connect(server.address)
    yield s
    s.close()


def send(sock, kind: str, rid: str, header: dict, blobs=()) -> None:
    sock.send_multipart([wire.PROTOCOL, kind.encode(), rid.encode(), json.dumps(header).encode(), *blobs])


_early: dict = {}        # final replies that arrived while another was awaited


def final(sock, rid: str, timeout_s: float = 30.0) -> tuple[str, dict, list]:
    """The final reply to ``rid`` as (type, raw JSON header, binary frames)."""
    if (id(sock), rid) in _early:
        return _early.pop((id(sock), rid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not sock.poll(100):
            continue
        frames = sock.recv_multipart()
        kind, reply_rid, header = frames[1].decode(), frames[2].decode(), json.loads(frames[3])
        if kind == "progress":
            continue
        if reply_rid == rid:
            return kind, header, frames[4:]
        _early[(id(sock), reply_rid)] = (kind, header, frames[4:])
    raise AssertionError(f"no final reply to {rid}")


def test_every_example_is_a_valid_message_of_its_type():
    kinds = [k for k, _, _ in examples()]
    assert set(kinds) == set(wire.MESSAGE_TYPES)            # an example of every message
    for kind, rid, header in examples():
        blobs = []
        if kind == "chat":
            blobs = [_jpeg_like(header["images"][0])]
            header = {**header, "images": [{**header["images"][0], "bytes": len(blobs[0])}]}
        if kind == "result":
            continue                                          # its arrays are checked against the server
        wire.decode([wire.PROTOCOL, kind.encode(), rid.encode(), json.dumps(header).encode(), *blobs])


def test_the_error_table_is_the_wire_modules():
    text = DOC.read_text()
    table = text[text.index("Stable error codes"):text.index("## Messages")]
    codes = set(re.findall(r"`(\w+)`", "\n".join(line.split("|")[1] for line in table.splitlines()
                                                  if line.startswith("| `"))))
    assert codes == set(wire.ERROR_CODES)


def _jpeg_like(description: dict) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (description["width"], description["height"]), (90, 120, 150)).save(buf, "JPEG")
    return buf.getvalue()


def test_hello_ping_chat_reset_close_as_documented(sock):
    rid, request = documented("hello", 0)
    send(sock, "hello", rid, request)
    kind, header, _ = final(sock, rid)
    assert kind == "hello"
    assert_has_documented_fields(header, documented("hello", 1)[1], "hello")

    rid, request = documented("ping")
    send(sock, "ping", rid, request)
    kind, header, _ = final(sock, rid)
    assert kind == "pong"
    assert_has_documented_fields(header, documented("pong")[1], "pong")

    rid, request = documented("chat")
    image = _jpeg_like(request["images"][0])
    request = {**request, "images": [{**request["images"][0], "bytes": len(image)}]}
    send(sock, "chat", rid, request, [image])
    kind, header, arrays = final(sock, rid)
    assert kind == "result", header
    doc = documented("result")[1]
    assert_has_documented_fields(header, doc, "result")
    assert header["arrays"] == doc["arrays"] and len(arrays) == len(doc["arrays"])
    assert [len(a) for a in arrays] == [864, 288, 576, 384, 864, 864]     # "+ 6 binary frames (...)"

    for kind_sent, action in (("reset", "reset"), ("close", "close")):
        rid, request = documented(kind_sent)
        send(sock, kind_sent, rid, request)
        kind, header, _ = final(sock, rid)
        assert kind == "closed" and header == {"session_id": request["session_id"], "action": action,
                                               "existed": True}
    assert documented("closed")[1] == {"session_id": "b2c1-session", "action": "close", "existed": True}


def test_cancel_ends_the_request_with_the_documented_error(sock):
    rid, _ = documented("cancel")
    send(sock, "chat", rid, {"session_id": "doc-cancel", "prompt": "talk for a long time", "mode": "chat",
                             "options": {"max_new_tokens": 1000}})
    time.sleep(0.3)
    send(sock, "cancel", rid, documented("cancel")[1])
    kind, header, _ = final(sock, rid)
    assert (kind, header) == ("error", documented("error", 0)[1])


def test_the_error_examples_are_what_the_server_sends(sock):
    rid, doc = documented("error", 1)
    send(sock, "chat", rid, {"session_id": "doc-errors", "prompt": "x" * 9000})
    assert final(sock, rid)[:2] == ("error", doc)

    rid, doc = documented("error", 2)
    long = {"session_id": "doc-busy", "prompt": "talk", "mode": "chat", "options": {"max_new_tokens": 1000}}
    held = [f"busy-{i}" for i in range(1 + 8)]             # one runs, the quota of 8 waits
    for other in held:
        send(sock, "chat", other, long)
    time.sleep(0.2)
    send(sock, "chat", rid, long)
    kind, header, _ = final(sock, rid)
    assert kind == "error" and {k: header[k] for k in ("code", "message")} == {k: doc[k] for k in ("code", "message")}
    assert set(header["details"]) == set(doc["details"]) and header["details"]["reason"] == "client_quota"
    for other in held:
        send(sock, "cancel", other, {})
    for other in held:
        assert final(sock, other)[1]["code"] == "cancelled"


def test_progress_stages_are_the_documented_ones(sock):
    text = DOC.read_text()
    stages = set(re.findall(r"`(\w+)`", text[text.index("Stages:"):text.index("### result")]))
    assert {"decoding", "queued", "running", "generating"} <= stages
    documented_infos = [h for k, _, h in examples() if k == "progress"]
    seen = set()
    long = {"session_id": "doc-stages", "prompt": "talk", "mode": "chat", "options": {"max_new_tokens": 1000}}
    for rid in ("stages-1", "stages-2"):                  # the second waits: queued, then running
        send(sock, "chat", rid, long)
    ended = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(ended) < 2:
        if sock.poll(100):
            frames = sock.recv_multipart()
            if frames[1] == b"progress":
                header = json.loads(frames[3])
                seen.add(header["stage"])
                twin = [d for d in documented_infos if d["stage"] == header["stage"]]
                if twin:
                    assert set(twin[0]["info"]) <= set(header["info"]), header
                if len(seen) >= 2:
                    for rid in ("stages-1", "stages-2"):
                        send(sock, "cancel", rid, {})
            else:
                ended.add(frames[2])
    assert seen and seen <= stages
