"""The picture sent with a prompt: an image file, a Blender image, or a small render of the camera.

Every source ends as encoded file bytes (PNG/JPEG/WebP, what the wire format carries) plus the Blender
image the chat message keeps. A picture larger than the model reads (the model card's ``image_size``) is
scaled down before it is sent, keeping its aspect: a 4K photo would otherwise cross the network at up
to 16 MB for the server to shrink it anyway. A camera render is packed into the .blend so the chat still shows what
was sent after the file is reopened elsewhere.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import bpy

from .reply_handling import AddonError

CAMERA_RENDER_SIZE_PX = 256            # long side of the render sent to the model
CYCLES_MAX_SAMPLES = 16                # enough for a silhouette; the scene's own count is restored after


def _problem(message: str) -> AddonError:
    return AddonError("bad_image", message)


def image_from_file(path: str) -> tuple[bytes, bpy.types.Image]:
    """Read an image file; returns its bytes and the (possibly already loaded) Blender image."""
    abspath = bpy.path.abspath(path) if path else ""
    if not abspath or not os.path.isfile(abspath):
        raise _problem(f"image file {path!r} not found: choose an existing PNG or JPEG")
    image = bpy.data.images.load(abspath, check_existing=True)
    return Path(abspath).read_bytes(), image


def image_from_datablock(image: bpy.types.Image | None) -> tuple[bytes, bpy.types.Image]:
    """Encoded bytes of a Blender image: its packed or on-disk file, else a PNG saved from its pixels."""
    if image is None:
        raise _problem("no Blender image chosen: pick one next to the image source")
    if image.packed_file is not None:
        return bytes(image.packed_file.data), image
    abspath = bpy.path.abspath(image.filepath) if image.filepath else ""
    if abspath and os.path.isfile(abspath):
        return Path(abspath).read_bytes(), image
    with tempfile.TemporaryDirectory(prefix="posegpt_") as tmp:
        target = os.path.join(tmp, "image.png")
        image.save_render(target)
        return Path(target).read_bytes(), image


def render_camera(scene: bpy.types.Scene, size_px: int = CAMERA_RENDER_SIZE_PX) -> tuple[bytes, bpy.types.Image]:
    """Render the scene's active camera at ``size_px`` on the long side into a PNG, restoring every
    render setting it touched; the PNG is also packed as a Blender image named "PoseGPT camera"."""
    if scene.camera is None:
        raise _problem("the scene has no active camera: add one or pick another image source")
    render = scene.render
    saved = dict(x=render.resolution_x, y=render.resolution_y, pct=render.resolution_percentage,
                 path=render.filepath, fmt=render.image_settings.file_format,
                 mode=render.image_settings.color_mode)
    cycles = getattr(scene, "cycles", None) if render.engine == "CYCLES" else None
    saved_samples = cycles.samples if cycles is not None else None
    scale = size_px / max(render.resolution_x, render.resolution_y)
    with tempfile.TemporaryDirectory(prefix="posegpt_") as tmp:
        target = os.path.join(tmp, "camera.png")
        try:
            render.resolution_x = max(1, round(render.resolution_x * scale))
            render.resolution_y = max(1, round(render.resolution_y * scale))
            render.resolution_percentage = 100
            render.filepath = target
            render.image_settings.file_format = "PNG"
            render.image_settings.color_mode = "RGB"
            if cycles is not None:
                cycles.samples = min(cycles.samples, CYCLES_MAX_SAMPLES)
            bpy.ops.render.render(write_still=True, scene=scene.name)
        finally:
            render.resolution_x, render.resolution_y = saved["x"], saved["y"]
            render.resolution_percentage = saved["pct"]
            render.filepath = saved["path"]
            render.image_settings.file_format = saved["fmt"]
            render.image_settings.color_mode = saved["mode"]
            if cycles is not None:
                cycles.samples = saved_samples
        if not os.path.isfile(target):
            raise _problem("the camera render produced no image (see the console)")
        data = Path(target).read_bytes()
        image = bpy.data.images.load(target)
        image.name = "PoseGPT camera"
        image.pack()                     # the temp file goes away; the .blend keeps the pixels
    return data, image


def scaled_size(width: int, height: int, image_size: int | None) -> tuple[int, int] | None:
    """The size to send a ``width`` × ``height`` picture at so its short side is ``image_size`` (what the
    model reads), keeping the aspect; None when it is already that small or the model names no size."""
    if not image_size or image_size < 1 or min(width, height) <= image_size:
        return None
    scale = image_size / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def downscaled(data: bytes, image: bpy.types.Image, image_size: int | None) -> bytes:
    """``data`` (the encoded ``image``) as a PNG scaled down by ``scaled_size``, or ``data`` itself."""
    width, height = image.size
    size = scaled_size(width, height, image_size)
    if size is None:
        return data
    copy = image.copy()
    try:
        copy.scale(*size)
        with tempfile.TemporaryDirectory(prefix="posegpt_") as tmp:
            target = os.path.join(tmp, "scaled.png")
            copy.filepath_raw = target
            copy.file_format = "PNG"
            copy.save()
            return Path(target).read_bytes()
    finally:
        bpy.data.images.remove(copy)


def gather_image(scene: bpy.types.Scene, image_size: int | None = None
                 ) -> tuple[list[bytes], bpy.types.Image | None, str]:
    """The images to send for the scene's current image source: (list of encoded images, image, path).
    ``image_size``: the side the model reads (model card); larger pictures are scaled down to it."""
    settings = scene.posegpt
    if settings.image_source == "NONE":
        return [], None, ""
    if settings.image_source == "FILE":
        data, image = image_from_file(settings.image_path)
        return [downscaled(data, image, image_size)], image, settings.image_path
    if settings.image_source == "BLENDER_IMAGE":
        data, image = image_from_datablock(settings.image)
        return [downscaled(data, image, image_size)], image, image.filepath
    data, image = render_camera(scene)
    return [data], image, ""
