"""The picture sent with a prompt: an image file, a Blender image, the 3D View, or a small camera render.

The viewport capture (Blender's Viewport Render, OpenGL) costs about one redraw; the camera render runs
the scene's engine and takes as long as that engine does (capped at 16 Cycles samples). A failure of
either is an ``AddonError`` with one sentence, never a traceback.

Every source ends as encoded file bytes (PNG/JPEG/WebP, what the wire format carries) plus the Blender
image the chat message keeps. A picture larger than the model reads (the model card's ``image_size``) is
scaled down before it is sent, keeping its aspect: a 4K photo would otherwise cross the network at up
to 16 MB for the server to shrink it anyway. A camera render is packed into the .blend so the chat still shows what
was sent after the file is reopened elsewhere.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
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
        except RuntimeError as exc:     # e.g. Cycles' denoiser missing from this build: a sentence, no traceback
            raise _problem(f"the camera render failed ({_first_line(exc)}); try the Viewport image source "
                           "or another render engine") from None
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


def _view3d(context):
    """The 3D View to capture: the one the operator runs in, else the largest in the window."""
    if context.area is not None and context.area.type == "VIEW_3D":
        return context.window, context.area
    for window in ([context.window] if context.window else []) + list(context.window_manager.windows):
        areas = [a for a in window.screen.areas if a.type == "VIEW_3D"]
        if areas:
            return window, max(areas, key=lambda a: a.width * a.height)
    return None, None


def capture_viewport(context, size_px: int = CAMERA_RENDER_SIZE_PX) -> tuple[bytes, bpy.types.Image]:
    """The 3D View as the artist sees it (Blender's Viewport Render: OpenGL, one frame's work), ``size_px``
    on the long side, as a PNG; packed as a Blender image named "PoseGPT viewport"."""
    window, area = _view3d(context)
    if area is None:
        raise _problem("there is no 3D View to capture: open one, or pick another image source")
    region = next(r for r in area.regions if r.type == "WINDOW")
    scene = context.scene
    render = scene.render
    saved = (render.resolution_x, render.resolution_y, render.resolution_percentage)
    scale = size_px / max(region.width, region.height, 1)
    with tempfile.TemporaryDirectory(prefix="posegpt_") as tmp:
        target = os.path.join(tmp, "viewport.png")
        try:
            render.resolution_x = max(1, round(region.width * scale))
            render.resolution_y = max(1, round(region.height * scale))
            render.resolution_percentage = 100
            with context.temp_override(window=window, area=area, region=region):
                bpy.ops.render.opengl(write_still=False, view_context=True)
            result = bpy.data.images.get("Render Result")
            if result is None:
                raise _problem("the viewport capture produced no image")
            result.save_render(target, scene=scene)
        except (RuntimeError, AttributeError, TypeError) as exc:
            raise _problem(f"the viewport could not be captured ({_first_line(exc)})") from None
        finally:
            render.resolution_x, render.resolution_y, render.resolution_percentage = saved
        data = Path(target).read_bytes()
        image = bpy.data.images.load(target)
        image.name = "PoseGPT viewport"
        image.pack()
    return data, image


def _first_line(exc: BaseException) -> str:
    """An exception as one short sentence part (Blender's operator errors carry "Error: ..." lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text.removeprefix("Error:").strip().rstrip(".")


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


def gather_image(context, image_size: int | None = None
                 ) -> tuple[list[bytes], bpy.types.Image | None, str]:
    """The images to send for the scene's current image source: (list of encoded images, image, path).
    ``context``: Blender's context (or a scene, for sources that need no 3D View); ``image_size``: the
    side the model reads (model card); larger pictures are scaled down to it."""
    scene = context if isinstance(context, bpy.types.Scene) else context.scene
    settings = scene.posegpt
    if settings.image_source == "NONE":
        return [], None, ""
    if settings.image_source == "FILE":
        data, image = image_from_file(settings.image_path)
        return [downscaled(data, image, image_size)], image, settings.image_path
    if settings.image_source == "BLENDER_IMAGE":
        data, image = image_from_datablock(settings.image)
        return [downscaled(data, image, image_size)], image, image.filepath
    if settings.image_source == "VIEWPORT":
        if isinstance(context, bpy.types.Scene):
            raise _problem("the viewport capture needs the 3D View: send from the sidebar")
        data, image = capture_viewport(context)
        return [data], image, ""
    data, image = render_camera(scene)
    return [data], image, ""


class CameraRenderJob:
    """The camera render run as Blender's own render job, so the window keeps drawing while it renders
    (its progress bar and Esc in the status bar, as for F12). Started by ``posegpt.send_prompt`` in the
    window; ``poll()`` (from the add-on's timer) says "rendering", "done" or "failed"; ``finish()`` restores
    every setting it touched and returns the PNG and the packed image. Background Blender (no window)
    renders in place instead (``render_camera``)."""

    def __init__(self, context, target: str, prompt: str, size_px: int = CAMERA_RENDER_SIZE_PX):
        scene = context.scene
        if scene.camera is None:
            raise _problem("the scene has no active camera: add one or pick another image source")
        self.scene_name, self.target, self.prompt = scene.name, target, prompt
        self.state, self.error, self.cancelled = "rendering", "", False
        self.started = time.monotonic()
        self.tmp = tempfile.mkdtemp(prefix="posegpt_")
        self.path = os.path.join(self.tmp, "camera.png")
        render = scene.render
        self.saved = dict(x=render.resolution_x, y=render.resolution_y, pct=render.resolution_percentage,
                          path=render.filepath, fmt=render.image_settings.file_format,
                          mode=render.image_settings.color_mode)
        self.cycles = render.engine == "CYCLES" and getattr(scene, "cycles", None) is not None
        self.saved_samples = scene.cycles.samples if self.cycles else None
        self.saved_display = context.preferences.view.render_display_type
        scale = size_px / max(render.resolution_x, render.resolution_y)
        render.resolution_x = max(1, round(render.resolution_x * scale))
        render.resolution_y = max(1, round(render.resolution_y * scale))
        render.resolution_percentage = 100
        render.filepath = self.path
        render.image_settings.file_format = "PNG"
        render.image_settings.color_mode = "RGB"
        if self.cycles:
            scene.cycles.samples = min(scene.cycles.samples, CYCLES_MAX_SAMPLES)
        context.preferences.view.render_display_type = "NONE"      # keep the artist's layout as it is
        bpy.app.handlers.render_complete.append(self._on_complete)
        bpy.app.handlers.render_cancel.append(self._on_cancel)
        try:
            started = bpy.ops.render.render("INVOKE_DEFAULT", write_still=True, scene=scene.name)
        except RuntimeError as exc:
            started, self.error = {"CANCELLED"}, _first_line(exc)
        if "RUNNING_MODAL" not in started:
            self._restore()
            raise _problem(f"the camera render could not start ({self.error or 'another render is running'}); "
                           "try the Viewport image source")

    def _on_complete(self, *args):
        self.state = "done"

    def _on_cancel(self, *args):
        self.state, self.error = "failed", "the render was cancelled"

    def poll(self) -> str:
        if self.state == "rendering" and os.path.isfile(self.path) and not _render_job_running():
            self.state = "done"
        return self.state

    def _restore(self) -> None:
        for handlers, callback in ((bpy.app.handlers.render_complete, self._on_complete),
                                   (bpy.app.handlers.render_cancel, self._on_cancel)):
            if callback in handlers:
                handlers.remove(callback)
        bpy.context.preferences.view.render_display_type = self.saved_display
        scene = bpy.data.scenes.get(self.scene_name)
        if scene is None:
            return
        render, saved = scene.render, self.saved
        render.resolution_x, render.resolution_y = saved["x"], saved["y"]
        render.resolution_percentage = saved["pct"]
        render.filepath = saved["path"]
        render.image_settings.file_format = saved["fmt"]
        render.image_settings.color_mode = saved["mode"]
        if self.cycles:
            scene.cycles.samples = self.saved_samples

    def finish(self) -> tuple[bytes, bpy.types.Image]:
        """Restore the settings; the rendered PNG and its packed image (AddonError when there is none)."""
        self._restore()
        try:
            if self.state != "done" or not os.path.isfile(self.path):
                raise _problem(f"the camera render produced no image ({self.error or 'see the console'}); "
                               "try the Viewport image source")
            data = Path(self.path).read_bytes()
            image = bpy.data.images.load(self.path)
            image.name = "PoseGPT camera"
            image.pack()
            return data, image
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _render_job_running() -> bool:
    is_running = getattr(bpy.app, "is_job_running", None)       # Blender ≥ 3.3
    return bool(is_running("RENDER")) if is_running is not None else False
