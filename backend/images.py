"""Image files → the RGB pixels a model worker needs, with the decoder itself checking what it decodes.

``wire.check_image`` refuses a file whose header declares too many pixels before anything is decoded,
but a file can declare one size to a header reader and another to the decoder (a PNG with two IHDR
chunks, a JPEG with two SOF markers, a WebP whose VP8X canvas and bitstream disagree). So the size that
counts is the one Pillow reports after opening the file, which is the size it will decode: it must match
the declared one and stay within the limits, else ``image_too_large``. Pillow's own decompression-bomb
check runs too, at the server's pixel limit.

Decoding is reduced to what the model reads (``draft_size``, the model card's ``image_size``): JPEGs
decode at the smallest DCT scale still that large (``Image.draft``), other formats are reduced right
after decoding (``Image.reduce``), so what is held afterwards is about ``draft_size``² pixels whatever
was sent.
"""
from __future__ import annotations

import io
import os
import time
import warnings

from posegpt_net import wire

__all__ = ["configure", "decode_image", "from_pixels", "serve_decoder", "DECODER_NICE"]

DECODER_NICE = 19        # a decoder process yields the CPU to the model and the broker on a busy machine


def configure(limits: wire.Limits) -> None:
    """Set Pillow's decompression-bomb limit (process-wide) to the server's pixel limit: Pillow then
    warns above it and refuses twice it; ``decode_image`` treats both as ``image_too_large``."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels


def decode_image(data, limits: wire.Limits = wire.DEFAULT_LIMITS, draft_size: int | None = None):
    """PNG/JPEG/WebP file bytes (or a buffer) → an RGB ``PIL.Image``, reduced towards ``draft_size``.

    Raises ``WireError``: ``image_too_large`` when the decoder sees another size than the header
    declares or more pixels than ``limits`` allow, ``bad_image`` for anything it cannot decode."""
    from PIL import Image

    fmt, width, height = wire.image_info(data)             # what the header declares (checked by wire)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=("PNG", "JPEG", "WEBP"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise wire.WireError("image_too_large", "the image decodes to more pixels than allowed") from None
    except Exception as exc:                    # Pillow raises many types for broken files
        raise wire.WireError("bad_image", f"the image could not be decoded ({type(exc).__name__})") from None
    decoded_w, decoded_h = image.size
    if (decoded_w, decoded_h) != (width, height):
        raise wire.WireError("image_too_large", f"the {fmt} header declares {width}×{height} but the image "
                                                f"decodes as {decoded_w}×{decoded_h}")
    if max(decoded_w, decoded_h) > limits.max_image_side or decoded_w * decoded_h > limits.max_image_pixels:
        raise wire.WireError("image_too_large", f"the image decodes to {decoded_w}×{decoded_h} pixels")
    try:
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))   # decode at 1/2, 1/4 or 1/8 scale
        image.load()
        if image.size[0] > max(decoded_w, 1) or image.size[1] > max(decoded_h, 1):
            raise wire.WireError("image_too_large", "the image decoded larger than it said")
        if draft_size:
            factor = min(image.size) // draft_size
            if factor >= 2:
                image = image.reduce(factor)            # box filter: fast, and the model resizes anyway
        return image.convert("RGB")
    except wire.WireError:
        raise
    except Exception as exc:
        raise wire.WireError("bad_image", f"the image could not be decoded ({type(exc).__name__})") from None


def from_pixels(width: int, height: int, buffer):
    """An RGB ``PIL.Image`` over ``width × height × 3`` bytes (a received frame's buffer, not copied)."""
    from PIL import Image

    if width < 1 or height < 1 or len(buffer) != width * height * 3:
        raise wire.WireError("bad_image", f"{len(buffer)} pixel bytes do not make a {width}×{height} RGB image")
    return Image.frombuffer("RGB", (width, height), buffer, "raw", "RGB", 0, 1)


# --- the decoder process (backend/broker.py runs a small pool of them) ----------------------------------
#
# Broker ↔ decoder messages over a private ipc:// endpoint (the broker's ROUTER puts the decoder's
# identity in front):
#     decoder → broker   [READY]  once, then per job:
#                        [tag, b"ok", json{sizes, ms}, *rgb_frames] | [tag, b"error", json{code, message, ms}]
#     broker → decoder   [tag, json{draft_size}, *file_frames]       (the client's frames, not copied)
# Files and pixels cross as ZeroMQ frames: no pickling, and no copy made while holding the server's GIL.

DECODER_POLL_MS = 200


def serve_decoder(endpoint: str, identity: bytes, limits: dict, parent_pid: int) -> None:
    """A decoder process: decode what the broker at ``endpoint`` sends until the broker is gone."""
    import json

    import zmq

    limits = wire.Limits(**limits)
    configure(limits)
    try:
        os.nice(DECODER_NICE)
    except OSError:
        pass
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.identity = identity
    sock.connect(endpoint)
    sock.send(b"READY")
    try:
        while os.getppid() == parent_pid:
            if not sock.poll(DECODER_POLL_MS):
                continue
            tag, options, *files = sock.recv_multipart(copy=False)
            start = time.perf_counter()
            draft = json.loads(options.bytes).get("draft_size")
            try:
                pictures = [decode_image(frame.buffer, limits, draft) for frame in files]
                head = json.dumps({"sizes": [p.size for p in pictures], "ms": (time.perf_counter() - start) * 1e3})
                sock.send_multipart([tag, b"ok", head.encode(), *(p.tobytes() for p in pictures)])
            except wire.WireError as err:
                head = {"code": err.code, "message": err.message, "ms": (time.perf_counter() - start) * 1e3}
                sock.send_multipart([tag, b"error", json.dumps(head).encode()])
            except Exception as exc:                 # never lose a request to a decoder bug
                head = {"code": "bad_image", "message": f"the image could not be decoded ({type(exc).__name__})",
                        "ms": (time.perf_counter() - start) * 1e3}
                sock.send_multipart([tag, b"error", json.dumps(head).encode()])
    finally:
        sock.close(0)
        context.term()
    if os.getppid() != parent_pid and endpoint.startswith("ipc://"):
        # the server was killed without its cleanup (SIGKILL): remove its private folder
        import shutil
        shutil.rmtree(os.path.dirname(endpoint[len("ipc://"):]), ignore_errors=True)
