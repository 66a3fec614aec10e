"""The live connection and the timer that pumps it (Blender side).

The connection is runtime state (a socket), so it lives in this module, never in the .blend. ``pump()``
is the ``bpy.app.timers`` callback: it reads what arrived without blocking and writes to Blender on the
main thread, where timers run. A reply becomes one chat turn (its own undo step, so undo keeps the
conversation) and one pose application (``apply_reply``): exactly one undo step per pose. Headless
tests, where timers never fire, call ``pump()`` directly.

Cost in the window: the timer pumps at once after Send, then every ``PUMP_BUSY_S`` while a request is in
flight (a reply is handled within one tick of Blender's event loop, which itself sleeps 5 ms when idle)
and every ``PUMP_IDLE_S`` while idle (liveness pings). It redraws only the sidebar, and only when what the
panel shows changed (a reply, an error, the status line, the waiting row's seconds); the waiting row of a
prompt is first drawn once it has been out ``WAITING_ROW_AFTER_S``, so a reply faster than that costs no
window redraw before the one that shows the pose (in a window without a GPU each redraw of the window
costs more than a small model's answer). The 3D View's main region is redrawn once, when a pose went on a
body. Redrawing every 3D View 10 times a second while waiting used to cost more than the server took.
"""
from __future__ import annotations

import time

import bpy

from . import rig_mapping
from .chat_state import PoseFormatError, pose_from_json, pose_to_json
from .connection import Connection, Outcome, curve_settings
from .reply_handling import AddonError
from .pose_previews import pose_preview
from .preferences import get_preferences

PUMP_BUSY_S = 0.005              # how often the timer looks for replies while requests are in flight
PUMP_AWAKE_S = 0.0005            # ... in the first AWAKE_FOR_S after a Send, while the event loop is kept awake
AWAKE_FOR_S = 1.0                # how long after a Send Blender's event loop skips its idle sleep (see stay_awake)
WAITING_ROW_AFTER_S = 0.1        # a prompt out this long gets its waiting row drawn (faster feels instant)
PUMP_IDLE_S = 0.5                # ... while connected and idle (liveness: pings, a dropped connection)
PUMP_INTERVAL_S = PUMP_BUSY_S

_state = {"connection": None, "status": "Not connected", "error": "", "shown": None, "render": None,
          "writing_prompt": False, "last_send": None, "awake": None, "undo_due": None,
          "icons_due": set()}


def writing_prompt() -> bool:
    """True while the add-on itself writes the prompt field (its update must not send it)."""
    return _state["writing_prompt"]


def note_send(target: str, prompt: str) -> None:
    """Remember the last prompt sent (or rendered for) for ``target``: a second Send of it is ignored."""
    _state["last_send"] = (target, prompt, time.monotonic())


def last_send_time() -> float:
    last = _state["last_send"]
    return last[2] if last is not None else float("-inf")


def already_sent(target: str, prompt: str) -> bool:
    """Whether ``prompt`` for ``target`` is on its way: its reply (or camera render) is still awaited.
    (Confirming the prompt field sends it; the click on Send that confirmed it then sends nothing.)"""
    conn = _state["connection"]
    waiting = [p.prompt for p in conn.chats_for(target)] if conn is not None else []
    render = render_for(target)
    if render is not None and not render.cancelled:
        waiting.append(render.prompt)
    return prompt in waiting


def connection() -> Connection | None:
    return _state["connection"]


def status_text() -> str:
    """One line for the panel: connected, connecting, lost and retrying, or that the last attempt failed."""
    conn = _state["connection"]
    if conn is not None and conn.state in ("connecting", "connected", "lost"):
        return conn.status_line()
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
    _state.update(connection=conn, status=conn.status_line(), error="")
    start_timer()
    return conn


def disconnect() -> None:
    after_pose_drawn()
    conn = _state["connection"]
    if conn is not None:
        conn.close()
    _state.update(connection=None, status="Not connected", error="")
    stop_timer()
    end_awake()


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
    """Pump at once and then from the timer: a timer ticking at the idle rate (0.5 s) is restarted, so a
    reply is looked for within PUMP_BUSY_S of a Send, not up to half a second later; in a window the event
    loop is kept awake for the first AWAKE_FOR_S (``stay_awake``)."""
    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)
    # persistent: a reply still arrives after File > Open (the armature is then looked up by name).
    bpy.app.timers.register(pump, first_interval=0.0, persistent=True)
    stay_awake()


def stay_awake() -> None:
    """Keep Blender's event loop from sleeping while a fresh request is in flight.

    Blender runs ``bpy.app.timers`` once per pass of its event loop and sleeps 5 ms after every pass that
    had no event, so a reply waited up to 5 ms for the pump whatever PUMP_BUSY_S said: measured in the
    window, Send → reply read came 4–6 ms after the server's own time. A window-manager event timer that
    is due on every pass is an event, so the loop does not sleep while the ``posegpt.stay_awake`` modal
    operator holds one (measured: 2 ms after the server's time). It lets every event through and ends
    itself once nothing is in flight or AWAKE_FOR_S after the last Send: spinning costs a CPU core, and a
    reply that takes longer than that does not notice 5 ms. Without a window (background Blender, tests)
    there is no loop to keep awake."""
    if AWAKE_FOR_S <= 0 or is_awake() or getattr(bpy.context, "window", None) is None:
        return
    try:
        bpy.ops.posegpt.stay_awake("INVOKE_DEFAULT")
    except (AttributeError, RuntimeError):        # not registered (add-on being unloaded) or no window
        pass


def begin_awake(timer) -> None:
    """Hold ``timer`` (the modal operator's event timer) here, so disconnecting or unloading the add-on can
    remove it even if Blender drops the operator without cancelling it: a timer left behind would keep the
    loop spinning for good."""
    _state["awake"] = timer


def end_awake() -> None:
    timer, _state["awake"] = _state["awake"], None
    if timer is not None:
        try:
            bpy.context.window_manager.event_timer_remove(timer)
        except (AttributeError, ReferenceError, TypeError, ValueError, RuntimeError):
            pass                                         # already gone with its window


def is_awake() -> bool:
    return _state["awake"] is not None


def wants_awake() -> bool:
    """Whether the event loop should stay awake: a request is in flight and the last Send is fresh."""
    conn = _state["connection"]
    fresh = time.monotonic() - last_send_time() < AWAKE_FOR_S
    return fresh and (_state["render"] is not None or (conn is not None and conn.busy))


def stop_timer() -> None:
    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)


def begin_render(job, target: str, session_id: str, mode: str) -> None:
    """A camera render job whose picture goes out with ``job.prompt`` once it is done (see pump)."""
    _state["render"] = {"job": job, "target": target, "session_id": session_id, "mode": mode}
    start_timer()


def render_for(target: str):
    """The camera render job running for armature ``target``, or None."""
    render = _state["render"]
    return render["job"] if render is not None and render["target"] == target else None


def cancel_render(target: str) -> bool:
    """Stop waiting for ``target``'s camera render (Blender's own job runs on; Esc stops it): noted."""
    render = _state["render"]
    if render is None or render["target"] != target or render["job"].cancelled:
        return False
    render["job"].cancelled = True
    obj = bpy.data.objects.get(target)
    if obj is not None:
        add_message(obj.posegpt_chat, "user", render["job"].prompt)
        add_message(obj.posegpt_chat, "note", "Cancelled", prompt=render["job"].prompt)
    return True


def _check_render() -> bool:
    """Send the camera render's picture once the job is done; a failure becomes an error entry."""
    render = _state["render"]
    if render is None or render["job"].poll() == "rendering":
        return False
    _state["render"] = None
    job, obj = render["job"], bpy.data.objects.get(render["target"])
    try:
        data, image = job.finish()
        if job.cancelled or obj is None:
            return True
        conn = ensure_connection()
        conn.send_chat(obj.name, render["session_id"], job.prompt, [data], mode=render["mode"], image=image.name)
    except AddonError as exc:
        if obj is not None and not job.cancelled:
            add_message(obj.posegpt_chat, "user", job.prompt)
            add_message(obj.posegpt_chat, "error", exc.text, prompt=job.prompt)
        _report(exc.text)
    return True


def pump() -> float | None:
    """Timer callback: handle every reply that arrived; fast while a request (or a camera render) is in
    flight, slow while idle, stopped once the connection is closed or failed."""
    after_pose_drawn()              # the modal operator normally has (the event loop's next pass)
    rendered = _check_render()
    conn = _state["connection"]
    if conn is None:
        return PUMP_BUSY_S if _state["render"] is not None else None
    try:
        outcomes = conn.poll()
    except Exception as exc:                      # a timer that raises is silently dropped by Blender
        fail(f"PoseGPT connection failed: {exc}")
        conn.close()
        outcomes = []
    posed = False
    for outcome in outcomes:
        try:
            posed |= _handle(outcome)
        except Exception as exc:
            _report(f"PoseGPT could not use a reply: {exc}")
    changed = _panel_changed(conn)             # always: what the panel shows now is what the next check compares with
    # a progress message changes only the waiting row's stage, which _panel_changed already compares
    if changed or rendered or any(outcome.kind != "progress" for outcome in outcomes):
        _redraw(view=posed)
    if _state["render"] is not None:
        return PUMP_BUSY_S
    if not conn.alive:
        return None
    if not conn.busy:
        return PUMP_IDLE_S
    return PUMP_AWAKE_S if is_awake() else PUMP_BUSY_S


def _panel_changed(conn: Connection) -> bool:
    """Whether the sidebar shows something new: the status line or a waiting row's stage and whole
    seconds (a prompt counts once it has been out ``WAITING_ROW_AFTER_S``)."""
    now = time.monotonic()
    waiting = tuple((int(now - p.started), p.stage) for p in conn.pending.values()
                    if p.kind == "chat" and now - p.started >= WAITING_ROW_AFTER_S)
    shown = (status_text(), waiting)
    changed, _state["shown"] = shown != _state["shown"], shown
    return changed


def _handle(outcome: Outcome) -> bool:
    """Act on one outcome; True when a pose went on a body."""
    if outcome.kind == "connected":
        _state.update(error="")
    elif outcome.kind == "lost":
        print(f"PoseGPT: lost the connection ({outcome.error_text}); retrying")
    elif outcome.kind == "error":
        _on_error(outcome)
    elif outcome.kind == "result":
        return _on_result(outcome)
    return False


def _chat_of(outcome: Outcome):
    obj = bpy.data.objects.get(outcome.pending.target) if outcome.pending else None
    return obj, (obj.posegpt_chat if obj is not None else None)


def _on_error(outcome: Outcome) -> None:
    conn = _state["connection"]
    if conn is None or conn.state == "error":
        fail(outcome.error_text)                  # the connection itself failed: say so in the status line
    obj, chat = _chat_of(outcome)
    if chat is not None and outcome.pending.kind == "chat":
        write_turn(chat, outcome.pending, "error", outcome.error_text)
        chat.last_error = outcome.error_text
    _report(outcome.error_text)


def write_turn(chat, pending, role: str, text: str):
    """Write a finished turn into the chat: its prompt (with the image sent) and what answered it. The
    prompt field is cleared when it still holds the prompt sent (not what the artist typed since)."""
    user = add_message(chat, "user", pending.prompt)
    image = bpy.data.images.get(pending.image) if pending.image else None
    if image is not None:
        user.image, user.image_path = image, pending.image_path
    settings = bpy.context.scene.posegpt
    if settings.prompt.strip() == pending.prompt:
        set_quietly(settings, "prompt", "")
    return add_message(chat, role, text, prompt=pending.prompt)


def _stored_properties(struct):
    """The ID-property group holding ``struct``'s ``bpy.props`` values: the struct itself before Blender
    5.0, its system properties from 5.0 on (kept apart from the artist's custom properties there)."""
    get = getattr(struct, "bl_system_properties_get", None)
    return get(do_create=True) if get is not None else struct


def set_quietly(struct, name: str, value) -> None:
    """Set a ``bpy.props`` string, int or float property without its RNA update. The prompt has an update
    callback, and a property with one, written from Python, makes Blender tag its owner (here the Scene)
    for transform, geometry and animation re-evaluation and redraw every region of every window: on the
    reply path that put a whole-window redraw and a scene re-evaluation in front of the pose's first draw.
    Writing the stored value does neither (the sidebar, which shows it, is redrawn with the reply).
    Checked by reading it back through RNA; where the storage differs it falls back to the plain
    assignment (the prompt's update then ignores the add-on's own write)."""
    try:
        _stored_properties(struct)[name] = value
    except (AttributeError, KeyError, TypeError):
        pass
    if getattr(struct, name) != value:
        _state["writing_prompt"] = True
        try:
            setattr(struct, name, value)
        finally:
            _state["writing_prompt"] = False


def add_message(chat, role: str, text: str, prompt: str = ""):
    """Append one message to an armature's chat; ``prompt``: the prompt a reply, error or note answers."""
    message = chat.messages.add()
    message.role, message.text, message.prompt = role, text, prompt
    return message


def _on_result(outcome: Outcome) -> bool:
    obj, chat = _chat_of(outcome)
    if chat is None:
        _report(f"PoseGPT reply for {outcome.pending.target!r} arrived, but that armature is gone")
        return False
    after_pose_drawn()                   # a previous pose (two replies in one pass) gets its step first
    first_index = len(chat.messages) + 1                   # after the prompt written with it
    for k, pose in enumerate(outcome.poses):
        text = outcome.text if k == 0 else f"(pose {k + 1} of {len(outcome.poses)})"
        if k == 0 and outcome.note:
            text += f"\n({outcome.note})"
        if k == 0:
            message = write_turn(chat, outcome.pending, "assistant", text)
        else:
            message = add_message(chat, "assistant", text, prompt=outcome.pending.prompt)
        message.pose_json = pose_to_json(pose)
        if is_awake():                                     # its stick figure is made after the pose's draw
            _state["icons_due"].add(message.pose_json)
    chat.last_error = ""
    _undo_push("PoseGPT reply")                   # the chat keeps the reply when the pose is undone
    apply_reply(obj, first_index)
    return True


def apply_reply(obj, index: int) -> None:
    """Pose ``obj`` with message ``index`` (key it and advance when auto-key is on) as one undo step.

    Straight through ``rig_mapping`` rather than the *Apply* / *Key* operators: called from the timer, a
    registered operator also stores itself as the last operator and tells the window's history to
    redraw, which buys nothing here. Its undo step is pushed once the pose is drawn when it can be
    (``push_undo_after_draw``)."""
    scene = bpy.context.scene
    settings = scene.posegpt
    try:
        pose = pose_from_json(obj.posegpt_chat.messages[index].pose_json)
        rig_mapping.apply_pose(bpy.context, obj, pose)
        if settings.auto_key:
            frame = scene.frame_current
            rig_mapping.key_pose(obj, frame)
            obj.posegpt_chat.messages[index].keyed_frame = frame
            scene.frame_set(frame + settings.key_step)
    except (AddonError, PoseFormatError, IndexError) as exc:
        _report(exc.text if isinstance(exc, AddonError) else f"PoseGPT could not use a reply: {exc}")
        return
    push_undo_after_draw("PoseGPT pose")


def push_undo_after_draw(message: str) -> None:
    """Push the pose's undo step once the window has drawn it, not in front of that draw.

    Blender's global undo writes the whole file into memory: ~2.5 ms for the test scene, far more for a
    production one, all of it between the reply and the pose showing. Deferred, the push must still come
    before anything the artist does next, or that operation's own undo step would hold the reply's pose
    and one Ctrl+Z would take back both. While the loop is kept awake (``stay_awake``) the
    ``posegpt.stay_awake`` modal operator sees every event of the window first, in the event loop's next
    pass (after this pass's draw) and before the event reaches anything else, and pushes there
    (``after_pose_drawn``); a Ctrl+Z pressed during the draw is then an undo of exactly this pose. Without
    it (a reply that took longer than AWAKE_FOR_S, background Blender, tests) the step is pushed at once."""
    if is_awake():
        if _state["undo_due"]:                # an earlier pose still due (two replies in one pass) first
            _undo_push(_state["undo_due"])
        _state["undo_due"] = message
    else:
        _undo_push(message)


def icon_waits(pose_json: str) -> bool:
    """Whether a reply's stick figure waits for its pose's draw: made in the sidebar's draw, in front of
    the 3D View's, it cost ~9 ms of the window's first frame with the pose (pose_previews.pose_preview). That frame
    shows the turn with its plain icon; the figure follows in the next redraw of the sidebar."""
    return pose_json in _state["icons_due"]


def after_pose_drawn() -> None:
    """What a reply's pose is owed once the window has drawn it: its undo step (``push_undo_after_draw``)
    and its stick figures (``icon_waits``), then a redraw of the sidebar that shows them."""
    message, _state["undo_due"] = _state["undo_due"], None
    if message:
        _undo_push(message)
    icons, _state["icons_due"] = _state["icons_due"], set()
    if icons:
        for pose_json in icons:
            pose_preview(pose_json)
        _redraw(view=False)


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


def _redraw(view: bool = False) -> None:
    """Redraw the 3D Views' sidebars (where the panel is), and their main regions only when ``view``."""
    wanted = ("UI", "WINDOW") if view else ("UI",)
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type in wanted:
                        region.tag_redraw()



def redraw_sidebar() -> None:
    """Redraw the panel now (after an operator changed what it shows)."""
    _redraw(view=False)
