"""Image files that lie about their size, and decoding only as large as the model reads
(backend/images.py, wire.check_image): a header reader and the decoder must agree on the size."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from backend.images import decode_image, from_pixels
from posegpt_net import wire


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _ihdr(width: int, height: int) -> bytes:
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def two_ihdr_png(big=(3000, 3000)) -> bytes:
    """Declares 64×64 to a reader of the first IHDR, then ``big`` to Pillow (which keeps the last)."""
    rows = zlib.compress(b"\0" * (1 + big[0] * 3) * 8, 9)
    return b"\x89PNG\r\n\x1a\n" + _ihdr(64, 64) + _ihdr(*big) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def two_sof_jpeg(big=(3000, 3000)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buf, "JPEG")
    data = buf.getvalue()
    at = data.index(b"\xff\xc0")
    length = struct.unpack(">H", data[at + 2:at + 4])[0]
    sof = bytearray(data[at:at + 2 + length])
    second = bytearray(sof)
    second[5:9] = struct.pack(">HH", big[1], big[0])
    return data[:at] + bytes(sof) + bytes(second) + data[at + 2 + length:]


def lying_webp(canvas=(64, 64), real=(3000, 2000)) -> bytes:
    """A VP8X canvas of ``canvas`` around a VP8 bitstream of ``real``."""
    buf = io.BytesIO()
    Image.new("RGB", real, (1, 2, 3)).save(buf, "WEBP")
    vp8 = buf.getvalue()[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (canvas[0] - 1).to_bytes(3, "little") \
        + (canvas[1] - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + vp8
    return b"RIFF" + struct.pack("<I", len(body)) + body


LIARS = {"png-two-ihdr": two_ihdr_png, "jpeg-two-sof": two_sof_jpeg, "webp-canvas-vs-bitstream": lying_webp}


@pytest.mark.parametrize("name", sorted(LIARS))
def test_a_file_declaring_two_sizes_is_refused_before_decoding(name):
    data = LIARS[name]()
    assert wire.image_info(data)[1:] == (64, 64)          # what a first-header reader sees
    with pytest.raises(wire.WireError) as info:
        wire.check_image(data)
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize("name", ["png-two-ihdr", "jpeg-two-sof"])
@pytest.mark.parametrize("big", [(3000, 3000), (12000, 12000)])
def test_the_decoder_itself_refuses_a_size_other_than_declared(name, big):
    # even past the header check (a reader that missed the second size), the decoder's own size decides
    with pytest.raises(wire.WireError) as info:
        decode_image(LIARS[name](big))
    assert info.value.code == "image_too_large"


def test_the_decoder_holds_the_pixel_limit_itself():
    buf = io.BytesIO()
    Image.new("RGB", (400, 300)).save(buf, "PNG")
    with pytest.raises(wire.WireError) as info:
        decode_image(buf.getvalue(), wire.Limits(max_image_pixels=100_000))
    assert info.value.code == "image_too_large"


def test_an_undecodable_image_says_so_without_internals():
    broken = b"\x89PNG\r\n\x1a\n" + _ihdr(64, 64) + b"not a png at all"
    with pytest.raises(wire.WireError) as info:
        decode_image(broken)
    assert info.value.code == "bad_image"
    assert "0x" not in info.value.message and "BytesIO" not in info.value.message


def _photo(size=(1920, 1080)) -> np.ndarray:
    y, x = np.mgrid[0:size[1], 0:size[0]]
    return np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_format_is_decoded_only_as_large_as_the_model_reads(fmt):
    pixels = _photo()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **({"quality": 90} if fmt != "PNG" else {}))
    reduced = decode_image(buf.getvalue(), draft_size=64)
    assert reduced.mode == "RGB" and 64 <= min(reduced.size) < 128     # never below what the model reads
    assert abs(reduced.size[0] / reduced.size[1] - 1920 / 1080) < 0.05   # aspect kept
    full = decode_image(buf.getvalue())
    assert full.size == (1920, 1080)
    reference = np.asarray(full.resize(reduced.size, Image.BOX), dtype=np.float32)
    assert np.abs(np.asarray(reduced, dtype=np.float32) - reference).mean() < 8.0
    small = io.BytesIO()
    Image.new("RGB", (40, 36)).save(small, fmt)
    assert decode_image(small.getvalue(), draft_size=32).size == (40, 36)


def test_pixels_travel_as_raw_rgb_and_come_back_the_same():
    image = Image.fromarray(_photo((50, 30)))
    back = from_pixels(50, 30, memoryview(image.tobytes()))
    np.testing.assert_array_equal(np.asarray(back), np.asarray(image))
    with pytest.raises(wire.WireError):
        from_pixels(50, 31, image.tobytes())
