"""`make demo --prompt`: backend subprocess + headless Blender through the add-on, end to end.

The saved demo.blend must hold the mannequin keyed at frame 1 with exactly the pose the demo checkpoint
gives that prompt (PoseRuntime in this process, SMPL frame), and the PNG must show a body.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "posegpt-demo"
PROMPT = "The person is raising both arms above the head."

pytestmark = [pytest.mark.bpy, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_output")
    proc = subprocess.run([sys.executable, "-m", "demo.run_demo", "--prompt", PROMPT, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc, out


def test_demo_exits_zero_and_prints_the_reply_with_timings(demo_run):
    proc, _ = demo_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"you: {PROMPT}" in proc.stdout
    assert "PoseGPT: Sure, here is the pose" in proc.stdout and "ms round trip" in proc.stdout
    assert "backend stopped (exit code 0)" in proc.stdout


def test_render_shows_a_body_on_the_backdrop(demo_run):
    from PIL import Image

    _, out = demo_run
    (png,) = sorted(out.glob("*.png"))
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    backdrop = pixels[2, 2]
    body = np.abs(pixels - backdrop).sum(-1) > 60
    assert 0.03 < body[:480].mean() < 0.6, "the body should cover part, not none or all, of the picture"


def test_saved_blend_is_keyed_with_the_models_pose(demo_run):
    from backend.posegpt.runtime import PoseRuntime
    from smpl_rig import blender as rig

    _, out = demo_run
    expected = PoseRuntime.from_checkpoint(CHECKPOINT, device="cpu", dtype="float32").chat(
        "check", PROMPT).poses[0].rotmat_smpl
    bpy.ops.wm.open_mainfile(filepath=str(out / "demo.blend"))
    try:
        (obj,) = [o for o in bpy.data.objects if rig.is_smpl_armature(o)]
        bpy.context.scene.frame_set(1)
        np.testing.assert_allclose(rig.read_pose(obj), expected, atol=1e-4)
        assert obj.animation_data is not None and obj.animation_data.action is not None, "the pose was not keyed"
    finally:
        bpy.ops.wm.read_homefile(use_empty=True)
