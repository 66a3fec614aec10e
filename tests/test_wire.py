"""posegpt_net.wire: every message round-trips, image sizes come from headers, limits fire before decoding."""
from __future__ import annotations

import io
import json
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from posegpt_net import wire


def _image(fmt: str, size=(64, 48), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buf, fmt, **save)
    return buf.getvalue()


def _pose(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, (_f, shape) in wire.POSE_ARRAYS.items()}


def _roundtrip(message):
    frames = wire.encode(message)
    assert all(isinstance(f, bytes) for f in frames)
    assert frames[0] == b"POSEGPT/1" and frames[1].decode() == type(message).__name__.lower()
    return wire.decode(frames, wire.CLIENT_LIMITS)


SIMPLE_MESSAGES = [
    wire.Hello("r1", client="blender 5.0"),
    wire.Hello("r2", server="posegpt-serve/0.1.0", model_card={"backbone": "Llava", "accepts_images": True},
               capabilities={"modes": ["direct", "chat"]}, limits={"max_images": 4}, ready=False),
    wire.Ping("r3"),
    wire.Pong("r4", server_time=1234.5, queued=3, workers=2),
    wire.Progress("r5", "generating", {"tokens": 7}),
    wire.Cancel("r6"),
    wire.Reset("r7", "session-α"),
    wire.Close("r8", "s"),
    wire.Closed("r9", "s", action="reset", existed=True),
    wire.Error("r10", "busy", "queue full", {"queued": 64}),
]


@pytest.mark.parametrize("message", SIMPLE_MESSAGES, ids=lambda m: type(m).__name__)
def test_simple_messages_roundtrip(message):
    assert _roundtrip(message) == message


def test_chat_roundtrip_with_every_image_format():
    images = [_image("PNG"), _image("JPEG", (1920, 1080)), _image("WEBP", (33, 17))]
    message = wire.Chat("c1", "s1", "she is proposing marriage", images, mode="chat", max_new_tokens=12,
                        temperature=0.7, top_p=0.9, seed=42)
    frames = wire.encode(message)
    header = json.loads(frames[3])
    assert [(m["format"], m["width"], m["height"]) for m in header["images"]] == \
        [("png", 64, 48), ("jpeg", 1920, 1080), ("webp", 33, 17)]
    assert frames[4:] == images              # image files travel as they are, never re-encoded
    assert wire.decode(frames) == message


def test_result_roundtrip_keeps_every_array_bit_exact():
    poses = [_pose(0), _pose(1)]
    message = wire.Result("q", "s", "Sure, here is the pose: <POSE> <POSE>", poses, {"model_ms": 12.5}, "worker-1")
    back = _roundtrip(message)
    assert back.text == message.text and back.timings == {"model_ms": 12.5} and back.worker == "worker-1"
    assert len(back.poses) == 2
    for got, want in zip(back.poses, poses):
        assert set(got) == set(wire.POSE_ARRAYS)
        for name in want:
            assert got[name].dtype == np.float32 and got[name].shape == wire.POSE_ARRAYS[name][1]
            np.testing.assert_array_equal(got[name], want[name])
    arrays = json.loads(wire.encode(message)[3])["arrays"]
    assert {a["name"]: a["frame"] for a in arrays[:6]} == {"rotmat": "camera", "rotvec": "camera", "d6": "camera",
                                                            "quat_wxyz": "camera", "rotmat_smpl": "smpl",
                                                            "rotmat_upright": "upright"}


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint8"])
@pytest.mark.parametrize("shape", [(), (5,), (2, 24, 3)])
def test_arrays_roundtrip(dtype, shape):
    array = (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape)
    descriptor, buf = wire.encode_array(array)
    assert descriptor == {"dtype": dtype, "shape": list(shape)}
    back = wire.decode_array(json.loads(json.dumps(descriptor)), buf)
    assert back.dtype == array.dtype and back.shape == shape
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("descriptor,size", [({"dtype": "object", "shape": [1]}, 8),
                                             ({"dtype": "float32", "shape": [3]}, 8),
                                             ({"dtype": "float32", "shape": [-1]}, 4),
                                             ({"dtype": "float32", "shape": "3"}, 12),
                                             ({"dtype": "float32", "shape": [1 << 20, 1 << 20]}, 4),
                                             ({"dtype": ["float32"], "shape": [1]}, 4),
                                             ({"dtype": "float32", "shape": [True]}, 4),
                                             ({"dtype": "float32", "shape": [1.0]}, 4)])
def test_bad_arrays_are_refused(descriptor, size):
    with pytest.raises(wire.WireError) as err:
        wire.decode_array(descriptor, b"\0" * size)
    assert err.value.code == "bad_array"


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")])
@pytest.mark.parametrize("size", [(1, 1), (640, 480), (1080, 1920), (4000, 3)])
def test_image_info_reads_sizes_from_headers(fmt, ext, size):
    assert wire.image_info(_image(fmt, size)) == (ext, *size)


def test_image_info_handles_progressive_jpeg_lossless_webp_and_extended_webp():
    assert wire.image_info(_image("JPEG", (300, 200), progressive=True)) == ("jpeg", 300, 200)
    assert wire.image_info(_image("WEBP", (77, 55), lossless=True)) == ("webp", 77, 55)
    rgba = io.BytesIO()
    Image.new("RGBA", (91, 13), (1, 2, 3, 100)).save(rgba, "WEBP")       # alpha → VP8X container
    assert wire.image_info(rgba.getvalue()) == ("webp", 91, 13)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a size; its pixel data is a few bytes (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("blob,code", [
    (b"GIF89a" + b"\0" * 20, "bad_image"),
    (b"\x89PNG\r\n\x1a\n\0\0", "bad_image"),
    (b"\xff\xd8\xff\xe0\0\x10JFIF", "bad_image"),                 # JPEG cut before its frame header
    (b"RIFF\0\0\0\0WEBPVP8 ", "bad_image"),
    (_png_claiming(0, 10), "bad_image"),
    (_png_claiming(20000, 20000), "image_too_many_pixels"),
    (_png_claiming(20000, 2), "image_too_many_pixels"),          # side limit
])
def test_bad_or_huge_images_are_refused_from_the_header(blob, code):
    with pytest.raises(wire.WireError) as err:
        wire.decode(wire._frames("chat", "r", {"session_id": "s", "prompt": "p",
                                               "images": [{"bytes": len(blob)}]}, [blob]))
    assert err.value.code == code and err.value.request_id == "r"


def _chat_frames(header=None, images=(), **overrides):
    base = {"session_id": "s", "prompt": "hello", "mode": "direct", "options": {}, "images": []}
    base.update(header or {})
    frames = wire._frames("chat", "rid-1", base, list(images))
    for index, value in overrides.items():
        frames[int(index[1:])] = value
    return frames


@pytest.mark.parametrize("frames,code", [
    ([b"POSEGPT/2", b"ping", b"r", b"{}"], "unsupported_version"),
    ([b"HTTP/1.1", b"ping", b"r", b"{}"], "bad_protocol"),
    ([b"POSEGPT/1", b"dance", b"r", b"{}"], "unknown_type"),
    ([b"POSEGPT/1", b"ping", b"", b"{}"], "bad_request_id"),
    ([b"POSEGPT/1", b"ping", b"r" * 65, b"{}"], "bad_request_id"),
    ([b"POSEGPT/1", b"ping", b"r\n", b"{}"], "bad_request_id"),
    ([b"POSEGPT/1", b"ping", b"r"], "too_few_frames"),
    ([b"POSEGPT/1", b"ping", b"r", b"{}", b"x"], "too_many_frames"),
    ([b"POSEGPT/1", b"ping", b"r", b"{}"] + [b""] * 10, "too_many_frames"),
    ([b"POSEGPT/1", b"ping", b"r", b"[1]"], "bad_header"),
    ([b"POSEGPT/1", b"ping", b"r", b"{\xff}"], "bad_header"),
    ([b"POSEGPT/1", b"ping", b"r", b"{" * 100000], "header_too_large"),
    ([b"POSEGPT/1", b"ping", b"r", b"[" * 60000], "bad_header"),              # deep nesting
    ([b"POSEGPT/1", b"reset", b"r", b"{}"], "bad_header"),
    ([b"POSEGPT/1", b"reset", b"r", b'{"session_id": 5}'], "bad_header"),
    ([b"POSEGPT/1", b"reset", b"r", b'{"session_id": ""}'], "bad_header"),
    (_chat_frames({"prompt": "x" * 8001}), "prompt_too_long"),
    (_chat_frames({"prompt": "  "}), "empty_prompt"),
    (_chat_frames({"prompt": None}), "bad_header"),
    (_chat_frames({"mode": "poem"}), "bad_header"),
    (_chat_frames({"options": {"max_new_tokens": 0}}), "bad_header"),
    (_chat_frames({"options": {"max_new_tokens": True}}), "bad_header"),
    (_chat_frames({"options": {"temperature": -1}}), "bad_header"),
    (_chat_frames({"options": {"top_p": 0}}), "bad_header"),
    (_chat_frames({"options": {"seed": -3}}), "bad_header"),
    (_chat_frames({"images": [{}]}), "bad_header"),                           # described, not sent
    (_chat_frames(images=[b"\x89PNG\r\n\x1a\n" + b"\0" * (16 * 1024 * 1024)]), "image_too_large"),
    (_chat_frames(images=[_image("PNG")] * 5), "too_many_frames"),
])
def test_malformed_messages_raise_wire_errors_with_stable_codes(frames, code):
    with pytest.raises(wire.WireError) as err:
        wire.decode(frames)
    assert err.value.code == code
    assert code in wire.ERROR_CODES


def test_limits_are_configurable_and_validated():
    small = wire.Limits(max_prompt_chars=10, max_images=1, max_frames=5)
    with pytest.raises(wire.WireError, match="prompt_too_long"):
        wire.decode(_chat_frames({"prompt": "x" * 11}), small)
    with pytest.raises(ValueError):
        wire.Limits(max_frames=0)


def test_error_replies_may_carry_an_empty_request_id():
    frames = wire.encode(wire.Error("", "bad_protocol", "nope"))
    assert wire.decode(frames) == wire.Error("", "bad_protocol", "nope")
    assert wire.peek_request_id([b"junk", b"ping", b"abc"]) == "abc"
    assert wire.peek_request_id([b"junk", b"ping", b"\xff"]) == ""


def test_result_descriptors_of_any_json_type_raise_wire_errors():
    """A broken or hostile server cannot crash the client's decoder with unhashable or odd JSON values."""
    frames = wire.encode(wire.Result("q", "s", "t", [_pose(3)]))
    header = json.loads(frames[3])
    for index in range(len(header["arrays"])):
        for key in ("pose", "name", "dtype", "shape"):
            for value in (None, [], [1], {}, {"a": 1}, True, 1.5, "x", -1):
                broken = json.loads(frames[3])
                broken["arrays"][index][key] = value
                with pytest.raises(wire.WireError) as err:
                    wire.decode([*frames[:3], json.dumps(broken).encode(), *frames[4:]], wire.CLIENT_LIMITS)
                assert err.value.code == "bad_array", (key, value)


def test_random_corruption_only_ever_raises_wire_errors():
    """Truncated, bit-flipped and shuffled versions of valid messages never crash the decoder."""
    rng = random.Random(0)
    valid = [wire.encode(m) for m in SIMPLE_MESSAGES] + [
        wire.encode(wire.Chat("c", "s", "p", [_image("PNG"), _image("JPEG")])),
        wire.encode(wire.Result("q", "s", "t", [_pose(2)]))]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        frames = [bytearray(f) for f in rng.choice(valid)]
        for _ in range(rng.randint(1, 4)):
            frame = rng.randrange(len(frames))
            action = rng.random()
            if action < 0.4 and frames[frame]:
                frames[frame][rng.randrange(len(frames[frame]))] ^= 1 << rng.randrange(8)
            elif action < 0.7:
                frames[frame] = frames[frame][:rng.randint(0, len(frames[frame]))]
            elif action < 0.85:
                del frames[frame]
                if not frames:
                    frames = [bytearray()]
            else:
                frames.insert(frame, bytearray(rng.randbytes(rng.randint(0, 40))))
        try:
            wire.decode([bytes(f) for f in frames], wire.CLIENT_LIMITS)
            outcomes["ok"] += 1
        except wire.WireError as err:
            assert err.code in wire.ERROR_CODES
            outcomes["error"] += 1
    assert outcomes["error"] > 1000
