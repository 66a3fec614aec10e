"""Pictures for docs/addon.md, "Your own character": a generated Rigify rig and a Mixamo-style rig posed
from a prompt through the add-on, headless.

    python -m demo.own_rig_pictures              # writes demo_output/own_rig_{rigify,mixamo}.png

Starts the demo backend as ``make demo`` does, builds both rigs with ``tests/rig_fixtures.py`` (each with a
box mesh skinned to its deform bones), selects each rig and sends the prompt with ``posegpt.send_prompt``
(the add-on's body picker takes them as they are), keys the reply, and renders each rig alone with
Workbench. The rig's own pose applies with the panel's defaults (floor contact on).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from demo.run_demo import DEFAULT_CHECKPOINT, Backend, enable_addon, render, send, setup_stage  # noqa: E402

PROMPT = "He is kneeling on his right knee with both arms raised."
OUT = REPO / "demo_output"      # docs/images has the GUI test's screenshots of the same rigs


def main(argv=None) -> int:
    import bpy

    import rig_fixtures

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    backend = Backend(DEFAULT_CHECKPOINT, args.out / "own_rig_backend.log")
    try:
        backend.wait_hello()
        enable_addon(backend.address)
        rigs = {"rigify": rig_fixtures.rigify_generated(), "mixamo": rig_fixtures.mixamo_rig()}
        for kind, rig in rigs.items():
            send(rig, args.prompt, frame=1)
        for kind, rig in rigs.items():
            for obj in bpy.context.scene.objects:
                obj.hide_render = obj.type == "MESH" and obj.parent is not rig
            mesh = next(c for c in rig.children if c.type == "MESH")
            for old in [o for o in bpy.data.objects if o.name.startswith(("DemoCamera", "DemoSun"))]:
                bpy.data.objects.remove(old)
            setup_stage(mesh, [1])
            path = render(1, args.out / f"own_rig_{kind}.png", f"{rig.name} ({kind}): {args.prompt}")
            print(f"rendered {path}")
    finally:
        backend.stop()
        (args.out / "own_rig_backend.log").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
