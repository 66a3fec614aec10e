"""The live connection and the timer that pumps it (Blender side).

The connection is runtime state (a socket), so it lives in this module, never in the .blend. ``pump()``
is the ``bpy.app.timers`` callback: it reads what arrived without blocking and writes to Blender on the
main thread, where timers run. A reply becomes one chat message (its own undo step, so undo keeps the
conversation) and one pose application through ``posegpt.apply_pose`` / ``posegpt.key_pose`` called with
undo on: exactly one undo step per pose. Headless tests, where timers never fire, call ``pump()`` directly.
"""
from __future__ import annotations

import bpy

from .chat_state import pose_to_json
from .connection import Connection, Outcome, curve_settings
from .preferences import get_preferences

PUMP_INTERVAL_S = 0.1            # how often the timer looks for replies while requests are in flight

_state = {"connection": None, "status": "Not connected", "error": ""}


def connection() -> Connection | None:
    return _state["connection"]


def status_text() -> str:
    """One line for the panel: connected (and to what), connecting, or the last error."""
    return _state["status"]


def error_text() -> str:
    return _state["error"]


def is_connected() -> bool:
    conn = _state["connection"]
    return conn is not None and conn.state == "connected"


def online_access() -> bool:
    """Blender ≥ 4.2's "Allow Online Access"; older versions have no such switch (always allowed)."""
    return bool(getattr(bpy.app, "online_access", True))


def connect(context=None) -> Connection:
    """Open a connection with the preferences' address, timeout and keys; the hello is answered via pump()."""
    disconnect()
    prefs = get_preferences(context)
    curve = curve_settings(prefs.server_public_key, prefs.client_public_key, prefs.client_secret_key)
    conn = Connection(prefs.address, prefs.timeout_s, curve=curve, online_access=online_access())
    _state.update(connection=conn, status=f"Connecting to {conn.address}…", error="")
    start_timer()
    return conn


def disconnect() -> None:
    conn = _state["connection"]
    if conn is not None:
        conn.close()
    _state.update(connection=None, status="Not connected", error="")
    stop_timer()


def ensure_connection(context=None) -> Connection:
    """The open connection, or a new one (chats sent while it connects go out once the server answers).
    A changed backend address in the preferences reconnects."""
    conn = _state["connection"]
    if conn is None or conn.state in ("closed", "error") or conn.address != get_preferences(context).address.strip():
        conn = connect(context)
    return conn


def fail(message: str) -> None:
    """Record a failure for the panel's status line."""
    _state.update(status="Error", error=message)


def start_timer() -> None:
    if not bpy.app.timers.is_registered(pump):
        # persistent: a reply still arrives after File > Open (the armature is then looked up by name).
        bpy.app.timers.register(pump, first_interval=PUMP_INTERVAL_S, persistent=True)


def stop_timer() -> None:
    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)


def pump() -> float | None:
    """Timer callback: handle every reply that arrived; keep ticking only while something is in flight."""
    conn = _state["connection"]
    if conn is None:
        return None
    try:
        outcomes = conn.poll()
    except Exception as exc:                      # a timer that raises is silently dropped by Blender
        fail(f"PoseGPT connection failed: {exc}")
        conn.close()
        outcomes = []
    for outcome in outcomes:
        try:
            _handle(outcome)
        except Exception as exc:
            _report(f"PoseGPT could not use a reply: {exc}")
    _redraw()
    return PUMP_INTERVAL_S if conn.busy and conn.state not in ("closed", "error") else None


def _handle(outcome: Outcome) -> None:
    if outcome.kind == "connected":
        _state.update(status="Connected", error="")
    elif outcome.kind == "disconnected":
        _state.update(status="Disconnected by the server", error="")
    elif outcome.kind == "error":
        _on_error(outcome)
    elif outcome.kind == "result":
        _on_result(outcome)


def _chat_of(outcome: Outcome):
    obj = bpy.data.objects.get(outcome.pending.target) if outcome.pending else None
    return obj, (obj.posegpt_chat if obj is not None else None)


def _on_error(outcome: Outcome) -> None:
    conn = _state["connection"]
    if outcome.pending is None or outcome.pending.kind == "hello" or conn is None or conn.state != "connected":
        fail(outcome.error_text)                  # the connection itself failed: say so in the status line
    obj, chat = _chat_of(outcome)
    if chat is not None and outcome.pending.kind == "chat":
        message = chat.messages.add()
        message.role, message.text = "error", outcome.error_text
        chat.last_error = outcome.error_text
    _report(outcome.error_text)


def _on_result(outcome: Outcome) -> None:
    obj, chat = _chat_of(outcome)
    if chat is None:
        _report(f"PoseGPT reply for {outcome.pending.target!r} arrived, but that armature is gone")
        return
    first_index = len(chat.messages)
    for k, pose in enumerate(outcome.poses):
        message = chat.messages.add()
        message.role = "assistant"
        message.text = outcome.text if k == 0 else f"(pose {k + 1} of {len(outcome.poses)})"
        if k == 0 and outcome.note:
            message.text += f"\n({outcome.note})"
        message.pose_json = pose_to_json(pose)
    chat.last_error = ""
    _undo_push("PoseGPT reply")                   # the chat keeps the reply when the pose is undone
    apply_reply(obj, first_index)


def apply_reply(obj, index: int) -> None:
    """Pose ``obj`` with message ``index`` as one undo step; key it and advance when auto-key is on."""
    scene = bpy.context.scene
    settings = scene.posegpt
    if settings.auto_key:
        frame = scene.frame_current
        bpy.ops.posegpt.key_pose("EXEC_DEFAULT", True, armature=obj.name, index=index, frame=frame)
        scene.frame_set(frame + settings.key_step)
    else:
        bpy.ops.posegpt.apply_pose("EXEC_DEFAULT", True, armature=obj.name, index=index)


def _undo_push(message: str) -> None:
    if bpy.ops.ed.undo_push.poll():
        bpy.ops.ed.undo_push(message=message)


def _report(message: str) -> None:
    """Show ``message`` as an error report (status bar and Info log) from outside any operator."""
    print(f"PoseGPT: {message}")
    try:
        bpy.ops.posegpt.report_error("EXEC_DEFAULT", message=message)
    except RuntimeError:
        pass          # called from Python, an ERROR report also raises; the report itself was made


def _redraw() -> None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()

