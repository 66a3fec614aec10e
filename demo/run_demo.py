"""`make demo`: words in, a posed 3D body out, with nothing but this checkout and its venv.

    python -m demo.run_demo                      # the 3-turn chat below, keyed at frames 1, 20, 40
    python -m demo.run_demo --prompt "..."       # one custom prompt, keyed at frame 1

1. Starts the backend (``posegpt-serve``, i.e. ``python -m backend.server``) on a free loopback port with the
   demo checkpoint the project trained itself (checkpoints/posegpt-demo) and waits for its hello.
2. Runs Blender headless through the ``bpy`` module and drives the add-on exactly as an artist would: the
   add-on from blender_addon/ is enabled, its preferences point at the port, ``posegpt.create_body`` builds
   the mannequin, ``posegpt.send_prompt`` sends each turn of one chat, and ``posegpt.key_pose`` applies and
   keys each reply. Blender's timers never fire headless, so this script calls the add-on's timer callback
   (``session.pump``) itself, as Blender would between redraws.
3. Renders every keyed pose with Workbench (fast, no GPU) to demo_output/*.png, saves demo_output/demo.blend,
   prints the replies with their timings, stops the backend and exits 0 (1 when anything failed).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "checkpoints" / "posegpt-demo"
ADDON = "blender_addon"

# (prompt, frame): an explicit description, a speculative prompt, a follow-up edit of the same chat.
CHAT = (
    ("She is holding both arms out to the sides in a T, with the feet wide apart.", 1),
    ("He is surrendering.", 20),
    ("Now she is sitting down with both hands on her hips.", 40),
)
SERVER_START_TIMEOUT_S = 180.0     # imports + loading the model on a busy two-core machine
REPLY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- 1. the backend -------------------------------------------------------------------------------------

class Backend:
    """``posegpt-serve`` as a subprocess on loopback; ``stop()`` sends SIGINT (graceful, exit 0)."""

    def __init__(self, checkpoint: Path, log_path: Path):
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        cmd = [sys.executable, "-m", "backend.server", "--checkpoint", str(checkpoint), "--bind", self.address,
               "--device", "cpu", "--log-level", "INFO"]
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO))

    def wait_hello(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> dict:
        """Block until the server answers a hello; returns its model card. Raises if it died or timed out."""
        from posegpt_net.client import PoseClient

        deadline = time.monotonic() + timeout_s
        with PoseClient(self.address, timeout_s=5.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the backend exited with code {self.process.returncode}; "
                                       f"see {self.log_path}:\n{self.log_path.read_text()[-2000:]}")
                reply = client.request("hello", timeout_s=5.0)
                if reply.kind == "hello" and reply.model_card:
                    return dict(reply.model_card)
                time.sleep(0.5)
        raise TimeoutError(f"the backend did not answer within {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


# --- 2. Blender, through the add-on ---------------------------------------------------------------------

def enable_addon(address: str):
    """Enable the add-on from this checkout and point its preferences at ``address``."""
    import addon_utils
    import bpy

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    bpy.ops.wm.read_homefile(use_empty=True)
    if addon_utils.enable(ADDON, default_set=True) is None:
        raise RuntimeError("the PoseGPT add-on did not enable (see the messages above)")
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.address, prefs.timeout_s = address, 60.0
    return prefs


class ReplyTimings:
    """Keeps each result the add-on's connection receives (an observer), for the server's timings."""

    def __init__(self):
        from blender_addon import session
        self.results = []
        session.connection().add_observer(self.observe)

    def observe(self, message):
        if message.kind == "result":
            self.results.append(message)


def send(obj, prompt: str, frame: int) -> dict:
    """One chat turn through the add-on: send, pump until the reply lands, key it at ``frame``."""
    import bpy

    from blender_addon import session

    scene = bpy.context.scene
    bpy.context.view_layer.objects.active = obj
    scene.posegpt.prompt = prompt
    count = len(obj.posegpt_chat.messages)
    started = time.monotonic()
    if bpy.ops.posegpt.send_prompt(armature=obj.name) != {"FINISHED"}:
        raise RuntimeError(f"sending {prompt!r} failed: {session.error_text()}")
    while len(bpy.data.objects[obj.name].posegpt_chat.messages) <= count + 1:
        session.pump()
        if time.monotonic() - started > REPLY_TIMEOUT_S:
            raise TimeoutError(f"no reply to {prompt!r} within {REPLY_TIMEOUT_S:.0f} s")
        time.sleep(0.02)
    wall = time.monotonic() - started
    obj = bpy.data.objects[obj.name]
    index = len(obj.posegpt_chat.messages) - 1
    reply = obj.posegpt_chat.messages[index]
    if reply.role != "assistant" or not reply.pose_json:
        raise RuntimeError(f"the backend answered {prompt!r} with an error: {reply.text}")
    scene.frame_set(frame)
    if bpy.ops.posegpt.key_pose(armature=obj.name, index=index, frame=frame) != {"FINISHED"}:
        raise RuntimeError(f"keying the reply to {prompt!r} at frame {frame} failed")
    return {"prompt": prompt, "reply": reply.text, "frame": frame, "wall_s": wall}


# --- 3. pictures ----------------------------------------------------------------------------------------

def mesh_bounds(mesh_obj, frames: list[int]):
    """(min, max) world corners of the posed mesh over ``frames`` (one framing for every picture)."""
    import bpy
    import numpy as np

    lows, highs = [], []
    for frame in frames:
        bpy.context.scene.frame_set(frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = mesh_obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        co = np.empty(len(mesh.vertices) * 3)
        mesh.vertices.foreach_get("co", co)
        evaluated.to_mesh_clear()
        world = np.asarray(mesh_obj.matrix_world)
        points = co.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
        lows.append(points.min(0))
        highs.append(points.max(0))
    return np.min(lows, 0), np.max(highs, 0)


def setup_stage(mesh_obj, frames: list[int], resolution: int = 480):
    """Workbench render settings, a light grey backdrop, a 3/4 front orthographic camera and a sun."""
    import bpy
    from mathutils import Vector

    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    shading = scene.display.shading
    shading.light, shading.color_type = "STUDIO", "SINGLE"
    shading.single_color = (0.85, 0.62, 0.45)
    shading.show_shadows, shading.show_cavity = True, True
    if scene.world is None:
        scene.world = bpy.data.worlds.new("DemoWorld")
    scene.world.color = (0.93, 0.93, 0.91)

    low, high = mesh_bounds(mesh_obj, frames)
    centre = Vector(((low + high) / 2).tolist())
    extent = float(max(high - low))
    camera_data = bpy.data.cameras.new("DemoCamera")
    camera_data.type, camera_data.ortho_scale = "ORTHO", extent * 1.2
    camera = bpy.data.objects.new("DemoCamera", camera_data)
    scene.collection.objects.link(camera)
    # The body faces -Y (Blender's Front view): look from the front, 30° toward its left, a little above.
    direction = Vector((0.5, -0.866, 0.25)).normalized()
    camera.location = centre + direction * (extent * 3.0)
    camera.rotation_euler = (centre - camera.location).to_track_quat("-Z", "Y").to_euler()
    camera_data.clip_end = extent * 10.0
    scene.camera = camera
    sun = bpy.data.objects.new("DemoSun", bpy.data.lights.new("DemoSun", "SUN"))
    sun.rotation_euler = (0.7, 0.2, 0.5)
    scene.collection.objects.link(sun)
    return camera


def render(frame: int, path: Path, label: str) -> Path:
    """Render ``frame`` to ``path`` and write the prompt under the picture."""
    import bpy
    from PIL import Image, ImageDraw, ImageFont

    scene = bpy.context.scene
    scene.frame_set(frame)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    with Image.open(path) as image:
        picture = image.convert("RGB")
    font = ImageFont.load_default(size=15)
    lines, line = [], ""
    for word in label.split():             # wrap to the picture's width
        if line and font.getlength(line + " " + word) > picture.width - 12:
            lines.append(line)
            line = word
        else:
            line = (line + " " + word).strip()
    lines.append(line)
    strip = 10 + 19 * len(lines)
    canvas = Image.new("RGB", (picture.width, picture.height + strip), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(lines):
        draw.text((6, picture.height + 5 + 19 * k), text, fill=(20, 20, 20), font=font)
    canvas.save(path)
    return path


# --- the demo -------------------------------------------------------------------------------------------

def run(chat, checkpoint: Path, out_dir: Path) -> list[dict]:
    import bpy

    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    backend = Backend(checkpoint, out_dir / "backend.log")
    try:
        card = backend.wait_hello()
        print(f"backend up at {backend.address} in {time.monotonic() - t0:.1f} s: "
              f"{card.get('backbone', '?')} ({card.get('description', '')})", flush=True)
        enable_addon(backend.address)
        from blender_addon import session

        if bpy.ops.posegpt.create_body(name="Mannequin") != {"FINISHED"}:
            raise RuntimeError("posegpt.create_body failed")
        obj = bpy.context.view_layer.objects.active
        if bpy.ops.posegpt.connect() != {"FINISHED"}:
            raise RuntimeError(f"posegpt.connect failed: {session.error_text()}")
        timings = ReplyTimings()
        turns = []
        for prompt, frame in chat:
            turn = send(obj, prompt, frame)
            turn["server"] = dict(timings.results[-1].timings) if timings.results else {}
            turns.append(turn)
            print(f"[frame {frame:>2}] you: {prompt}\n           PoseGPT: {turn['reply']}  "
                  f"({turn['wall_s'] * 1000:.0f} ms round trip, model "
                  f"{1000 * turn['server'].get('total_s', float('nan')):.0f} ms)", flush=True)
        session.disconnect()

        mesh_obj = next(c for c in obj.children if c.type == "MESH")
        setup_stage(mesh_obj, [t["frame"] for t in turns])
        for k, turn in enumerate(turns, 1):
            path = render(turn["frame"], out_dir / f"turn{k}_frame{turn['frame']:03d}.png",
                          f"{turn['frame']}: {turn['prompt']}")
            turn["png"] = path
            print(f"rendered {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", flush=True)
        bpy.context.scene.frame_set(turns[0]["frame"])
        blend = out_dir / "demo.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))
        print(f"saved {blend}", flush=True)
    finally:
        code = backend.stop()
        print(f"backend stopped (exit code {code})", flush=True)
    print(f"demo finished in {time.monotonic() - t0:.1f} s", flush=True)
    return turns


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="PoseGPT demo: backend + headless Blender + the add-on.")
    parser.add_argument("--prompt", help="pose one custom prompt instead of the 3-turn chat")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="project checkpoint directory")
    parser.add_argument("--out", default=str(REPO / "demo_output"), help="folder for the PNGs and demo.blend")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    if not (checkpoint / "manifest.json").is_file():
        print(f"no checkpoint at {checkpoint} (expected the committed demo model, or train one with "
              "`make train CONFIG=training/configs/demo.yaml`)", file=sys.stderr)
        return 1
    chat = ((args.prompt, 1),) if args.prompt else CHAT
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        run(chat, checkpoint, Path(args.out))
    except Exception as exc:  # one clear line, not a Blender traceback wall
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
