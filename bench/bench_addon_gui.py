"""What the add-on adds to the server's reply time in a real Blender window: Send → pose drawn.

    .venv/bin/python bench/bench_addon_gui.py           # reads test_output/gui_latency.json (make test-gui)
    .venv/bin/python bench/bench_addon_gui.py --run     # runs the GUI test first (Blender 3.4 + Xvfb, ~1.5 min)

The GUI test (tests/gui/run_gui_test.py) times each turn of a 10-turn chat in Blender's window, from Send
to the first 3D View draw that shows the reply, and keeps the server's own reply time (``server_ms``) of
the same chat. Right after each turn it puts the same pose on the body again without the add-on (no
network, no chat, no undo step) and times that change to the 3D View's first draw showing it: one redraw,
measured in the same window, run and load. Issue 16's target: Send → pose drawn ≤ 1.5 × the server's
reply time + one redraw.

Prints, medians over the text-only turns:
``gui_send_to_pose_ms``, ``gui_server_reply_ms``, ``gui_pose_redraw_ms`` (one redraw), the parts of the
first — ``gui_reply_received_ms`` (Send → reply read), ``gui_addon_own_ms`` (the add-on's own Python: the
Send operator, then reading the reply, writing the chat and posing the body), ``gui_applied_to_drawn_ms``
(pose on the body → drawn) —, ``addon_latency_over_server`` (Send → pose drawn over the server's time),
``addon_latency_target`` (1.5 + one redraw over the server's time: what that ratio may reach),
``addon_latency_over_server_less_one_redraw`` (one redraw taken off first: ≤ 1.5 meets the target),
``addon_latency_target_met``, and the same per turn against the redraw measured right after it
(``gui_paired_over_redraw_ms``, ``addon_latency_paired_over_server_less_one_redraw``: medians of Send →
pose drawn less that redraw, and of that over the turn's server time; steadier while the machine's load
drifts within a run). Without a measurement (no GUI test run, no Blender here) it says so and exits 0.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LATENCY_FILE = REPO / "test_output" / "gui_latency.json"
TARGET_RATIO = 1.5


def main(argv: list[str]) -> int:
    if "--run" in argv:
        subprocess.run([sys.executable, str(REPO / "tests" / "gui" / "run_gui_test.py")], cwd=REPO, check=False)
    if not LATENCY_FILE.is_file():
        print("addon_latency_over_server: n/a (no GUI measurement: run `make test-gui` or this script with --run)")
        return 0
    summary = json.loads(LATENCY_FILE.read_text()).get("summary") or {}
    if not summary.get("gui_server_reply_ms") or not summary.get("gui_pose_redraw_ms"):
        print("addon_latency_over_server: n/a (the last GUI test measured no complete turn)")
        return 0
    send_to_pose, server, redraw = (summary[k] for k in ("gui_send_to_pose_ms", "gui_server_reply_ms",
                                                         "gui_pose_redraw_ms"))
    for key in ("gui_send_to_pose_ms", "gui_server_reply_ms", "gui_pose_redraw_ms", "gui_reply_received_ms",
                "gui_addon_own_ms", "gui_applied_to_drawn_ms", "gui_view_draw_ms"):
        print(f"{key}: {summary.get(key, float('nan')):.1f}")
    print(f"gui_turns_measured: {summary.get('gui_turns_measured', 0)}")
    print(f"addon_latency_over_server: {send_to_pose / server:.2f}")
    print(f"addon_latency_target: {TARGET_RATIO + redraw / server:.2f}")
    print(f"addon_latency_over_server_less_one_redraw: {(send_to_pose - redraw) / server:.2f}")
    print(f"addon_latency_target_met: {int(send_to_pose <= TARGET_RATIO * server + redraw)}")
    if summary.get("gui_paired_over_redraw_per_server") is not None:     # robust to the load drifting
        print(f"gui_paired_over_redraw_ms: {summary['gui_paired_over_redraw_ms']:.1f}")
        print(f"addon_latency_paired_over_server_less_one_redraw: {summary['gui_paired_over_redraw_per_server']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
