"""The add-on inside Blender (bpy 5.0 module), driving the real operators against a real backend.

A tiny random-weight LLaVA checkpoint is served on loopback by ``backend.server.serve_in_thread``.
Timers never fire headless, so the tests call the timer callback ``session.pump()`` themselves, exactly
as Blender would between redraws.
"""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))   # blender_addon/ from this checkout, whatever the editable install says

import addon_utils  # noqa: E402  (ships with bpy)

from smpl_rig import blender as rig  # noqa: E402
from smpl_rig import frames  # noqa: E402
from smpl_rig.kinematics import forward_kinematics  # noqa: E402

pytestmark = [pytest.mark.bpy, pytest.mark.slow]

ADDON = "blender_addon"
REPLY_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from backend.posegpt.tiny import build_tiny_checkpoint
    from backend.server import serve_in_thread
    checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", family="llava", seed=0)
    handle = serve_in_thread(checkpoint)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def addon(server):
    module = addon_utils.enable(ADDON, default_set=True)
    assert module is not None, "the add-on did not enable"
    yield module
    from blender_addon import session
    session.disconnect()
    addon_utils.disable(ADDON, default_set=True)


@pytest.fixture()
def prefs(addon, server):
    """Fresh empty file, no connection, preferences pointing at the test server."""
    from blender_addon import session
    session.disconnect()
    bpy.ops.wm.read_homefile(use_empty=True)
    preferences = bpy.context.preferences.addons[ADDON].preferences
    preferences.address = server.address
    preferences.timeout_s = 10.0
    yield preferences
    session.disconnect()


def create_body(name="SMPL"):
    assert bpy.ops.posegpt.create_body(name=name) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


class MessageRecorder:
    """An observer of the live connection: the wire messages the add-on received, as they arrived."""

    def __init__(self):
        from blender_addon import session
        self.messages = []
        session.connection().add_observer(self.messages.append)

    def results(self):
        return [m for m in self.messages if m.kind == "result"]


def send_and_wait(obj, prompt, *, expect="assistant", timeout=REPLY_TIMEOUT_S):
    """Send through the operator, then run the timer callback until a reply (or error) lands in the chat."""
    from blender_addon import session
    bpy.context.view_layer.objects.active = obj
    bpy.context.scene.posegpt.prompt = prompt
    count = len(obj.posegpt_chat.messages)
    assert bpy.ops.posegpt.send_prompt(armature=obj.name) == {"FINISHED"}
    assert len(obj.posegpt_chat.messages) == count           # the turn goes into the chat with its reply
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        session.pump()
        obj = bpy.data.objects[obj.name]                     # undo/redo may have replaced the datablock
        if len(obj.posegpt_chat.messages) > count + 1:
            break
        time.sleep(0.02)
    message = obj.posegpt_chat.messages[-1]
    assert message.role == expect, (message.role, message.text)
    assert obj.posegpt_chat.messages[count].role == "user" and obj.posegpt_chat.messages[count].text == prompt
    assert bpy.context.scene.posegpt.prompt == ""
    return message, time.monotonic() - start


def stored_pose(message):
    from blender_addon.chat_state import pose_from_json
    return pose_from_json(message.pose_json)


def assert_armature_shows(obj, pose, tol_frac=1e-5):
    """FK check: every posed bone head equals smpl_rig FK of ``pose`` mapped to Blender by C."""
    rest = rig.rest_joints(obj)
    expected = frames.smpl_points_to_blender(forward_kinematics(rest, pose).joints)
    height = obj["smpl_rig"]["height"]
    shown = rig.world_joint_positions(obj)
    lift = np.array([0.0, 0.0, (shown - expected)[:, 2].mean()])   # floor contact (on by default) moves it up/down
    error = np.abs(shown - lift - expected).max()
    assert error <= tol_frac * height, f"joint error {error:.3g} m > {tol_frac} × height {height:.3f}"


def keyed_frames(obj, bone: str) -> list[int]:
    """Frames keyed on a bone's rotation_quaternion (slotted actions on Blender ≥ 4.4, plain before)."""
    anim = obj.animation_data
    path = f'pose.bones["{bone}"].rotation_quaternion'
    if hasattr(anim, "action_slot") and hasattr(anim.action, "layers"):
        curves = [c for layer in anim.action.layers for strip in layer.strips
                  for c in strip.channelbag(anim.action_slot).fcurves if c.data_path == path]
    else:
        curves = [c for c in anim.action.fcurves if c.data_path == path]
    assert len(curves) == 4, f"{bone}: expected 4 quaternion curves, found {len(curves)}"
    frames_ = {tuple(round(k.co[0]) for k in c.keyframe_points) for c in curves}
    assert len(frames_) == 1, "all four channels must be keyed on the same frames"
    return list(frames_.pop())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_send_prompt_poses_the_armature_with_the_returned_rotations(prefs):
    from blender_addon import session
    obj = create_body()
    assert bpy.ops.posegpt.connect() == {"FINISHED"}
    recorder = MessageRecorder()
    message, _ = send_and_wait(obj, "she is proposing marriage")
    assert session.is_connected() and session.status_text() == "Connected"
    assert session.connection().model_card["accepts_images"] is True

    (result,) = recorder.results()
    returned = result.poses[0]
    pose = stored_pose(message)
    # The chat stores the SMPL-frame rotations: the server's rotmat_smpl, i.e. the camera-frame
    # global orientation left-multiplied by Rx(180°), the body joints unchanged.
    np.testing.assert_allclose(pose, returned["rotmat_smpl"], atol=1e-6)
    np.testing.assert_allclose(pose[0], frames.CAMERA_TO_SMPL @ returned["rotmat"][0], atol=1e-5)
    np.testing.assert_allclose(pose[1:], returned["rotmat"][1:], atol=1e-6)
    np.testing.assert_allclose(rig.read_pose(obj), pose, atol=1e-5)
    assert_armature_shows(obj, pose)
    # Idle: the timer slows down (liveness pings only); a request in flight makes it fast again.
    assert session.pump() == session.PUMP_IDLE_S
    bpy.context.scene.posegpt.prompt = "now she waves"
    bpy.ops.posegpt.send_prompt(armature=obj.name)
    assert bpy.app.timers.is_registered(session.pump)
    # The pump keeps asking to be called often while the request is out (a fast reply may already be in).
    assert session.pump() in (session.PUMP_BUSY_S, session.PUMP_IDLE_S)


def test_upright_option_replaces_the_global_orientation(prefs):
    obj = create_body()
    bpy.context.scene.posegpt.orientation = "UPRIGHT"
    message, _ = send_and_wait(obj, "a person sitting")        # connects on its own: Send needs no Connect
    pose = stored_pose(message)
    upright = pose.copy()
    upright[0] = np.eye(3)
    np.testing.assert_allclose(rig.read_pose(obj), upright, atol=1e-5)
    assert_armature_shows(obj, upright)


def test_three_turns_each_keyed_give_three_keys_with_those_poses(prefs):
    obj = create_body()
    scene = bpy.context.scene
    scene.posegpt.auto_key, scene.posegpt.key_step = True, 7
    scene.frame_set(3)
    prompts = ["she is proposing marriage", "now make her look tired", "now she waves"]
    poses = [stored_pose(send_and_wait(obj, p)[0]) for p in prompts]
    assert scene.frame_current == 3 + 3 * 7
    assert not np.allclose(poses[0], poses[1], atol=1e-4), "the tiny model should vary with the chat"

    for bone in ("pelvis", "left_hip", "right_wrist"):
        assert keyed_frames(obj, bone) == [3, 10, 17]
    messages = [m for m in obj.posegpt_chat.messages if m.role == "assistant"]
    assert [m.keyed_frame for m in messages] == [3, 10, 17]
    for frame, pose in zip((3, 10, 17), poses):
        scene.frame_set(frame)
        np.testing.assert_allclose(rig.read_pose(obj), pose, atol=1e-5)
        assert_armature_shows(obj, pose)


def test_no_server_gives_a_clear_error_within_the_timeout_and_leaves_the_armature(prefs):
    from blender_addon import session
    prefs.address, prefs.timeout_s = f"tcp://127.0.0.1:{free_port()}", 1.0
    obj = create_body()
    before = rig.read_pose(obj)
    message, elapsed = send_and_wait(obj, "she is proposing marriage", expect="error", timeout=5.0)
    assert elapsed <= prefs.timeout_s + 0.5, f"the error took {elapsed:.2f} s for a {prefs.timeout_s} s timeout"
    assert "make serve" in message.text and prefs.address in message.text
    assert "make serve" in session.error_text() and not session.is_connected()
    assert obj.posegpt_chat.last_error == message.text
    np.testing.assert_array_equal(rig.read_pose(obj), before)
    assert obj.animation_data is None


def test_send_without_an_armature_or_prompt_reports_what_to_do(prefs):
    bpy.context.scene.posegpt.prompt = "hello"
    with pytest.raises(RuntimeError, match="Create Body"):
        bpy.ops.posegpt.send_prompt()
    obj = create_body()
    bpy.context.scene.posegpt.prompt = "   "
    with pytest.raises(RuntimeError, match="Type a prompt"):
        bpy.ops.posegpt.send_prompt(armature=obj.name)
    assert len(obj.posegpt_chat.messages) == 0


def test_remote_address_is_refused_while_online_access_is_off(prefs):
    from blender_addon import session
    if getattr(bpy.app, "online_access", True):
        pytest.skip("this Blender allows online access; the refusal needs it off (the bpy module's default)")
    prefs.address = "tcp://192.0.2.10:5555"                      # TEST-NET-1: never contacted
    with pytest.raises(RuntimeError, match="online access"):
        bpy.ops.posegpt.connect()
    assert session.connection() is None and "Network" in session.error_text()


def test_save_and_reopen_keeps_both_chats_their_poses_and_the_image(prefs, tmp_path):
    first, second = create_body("Alice"), create_body("Bob")
    image = bpy.data.images.new("reference", 24, 32)
    image.pixels = np.random.default_rng(0).random(24 * 32 * 4).astype(np.float32).tolist()
    image.pack()
    scene = bpy.context.scene
    scene.posegpt.image_source, scene.posegpt.image = "BLENDER_IMAGE", image
    alice_reply, _ = send_and_wait(first, "she is proposing marriage")
    scene.posegpt.image_source = "NONE"
    bob_reply, _ = send_and_wait(second, "he is jumping")
    saved = {o.name: ([(m.role, m.text, m.pose_json) for m in o.posegpt_chat.messages], rig.read_pose(o),
                      o.posegpt_chat.session_id) for o in (first, second)}
    assert saved["Alice"][0] != saved["Bob"][0] and saved["Alice"][2] != saved["Bob"][2]

    path = tmp_path / "chat.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_homefile(use_empty=True)
    assert "Alice" not in bpy.data.objects
    bpy.ops.wm.open_mainfile(filepath=str(path))

    for name, (messages, pose, session_id) in saved.items():
        obj = bpy.data.objects[name]
        chat = obj.posegpt_chat
        assert [(m.role, m.text, m.pose_json) for m in chat.messages] == messages
        assert chat.session_id == session_id
        np.testing.assert_allclose(rig.read_pose(obj), pose, atol=1e-6)
        np.testing.assert_allclose(rig.read_pose(obj), stored_pose(chat.messages[-1]), atol=1e-5)
    sent = bpy.data.objects["Alice"].posegpt_chat.messages[0].image
    assert sent is not None and sent.name == "reference" and sent.packed_file is not None
    assert tuple(sent.size) == (24, 32)


def test_undo_reverts_exactly_one_applied_pose_and_keeps_the_chat(prefs):
    obj = create_body()
    # Background Blender starts without an undo stack; an explicit push creates it (ed_undo.cc, #60934).
    bpy.ops.ed.undo_push(message="test start")
    first = stored_pose(send_and_wait(obj, "she is proposing marriage")[0])
    second = stored_pose(send_and_wait(obj, "now she sits down")[0])
    np.testing.assert_allclose(rig.read_pose(bpy.data.objects[obj.name]), second, atol=1e-5)

    window = bpy.context.window_manager.windows[0]
    area = next(a for a in window.screen.areas if a.type == "VIEW_3D")
    with bpy.context.temp_override(window=window, screen=window.screen, area=area):
        assert bpy.ops.ed.undo() == {"FINISHED"}
        obj = bpy.data.objects["SMPL"]
        np.testing.assert_allclose(rig.read_pose(obj), first, atol=1e-5)
        assert [m.role for m in obj.posegpt_chat.messages] == ["user", "assistant"] * 2
        assert bpy.ops.ed.redo() == {"FINISHED"}
        np.testing.assert_allclose(rig.read_pose(bpy.data.objects["SMPL"]), second, atol=1e-5)


def test_a_reply_poses_the_body_without_running_the_apply_operator(prefs):
    """Issue 16: a reply's pose goes on straight through ``rig_mapping``: the registered *Apply* operator,
    run from the timer, only stored itself as the window's last operation and redrew its history. The
    pose is still one undo step (test_undo_reverts_exactly_one_applied_pose_and_keeps_the_chat)."""
    obj = create_body()
    operators = bpy.context.window_manager.operators
    before = len(operators)
    message, _ = send_and_wait(obj, "she is proposing marriage")
    assert [op.bl_idname for op in operators][before:] == []
    np.testing.assert_allclose(rig.read_pose(bpy.data.objects["SMPL"]), stored_pose(message), atol=1e-5)


def test_apply_key_export_import_operators(prefs, tmp_path):
    obj = create_body()
    first = stored_pose(send_and_wait(obj, "she is proposing marriage")[0])
    second = stored_pose(send_and_wait(obj, "now she waves")[0])
    assert bpy.ops.posegpt.apply_pose(armature=obj.name, index=1) == {"FINISHED"}
    np.testing.assert_allclose(rig.read_pose(obj), first, atol=1e-5)
    assert bpy.ops.posegpt.key_pose(armature=obj.name, index=3, frame=12) == {"FINISHED"}
    assert obj.posegpt_chat.messages[3].keyed_frame == 12
    for suffix in ("npz", "json"):
        path = tmp_path / f"pose.{suffix}"
        assert bpy.ops.posegpt.export_pose(filepath=str(path), file_format=suffix.upper(),
                                           armature=obj.name) == {"FINISHED"}
        assert bpy.ops.posegpt.apply_pose(armature=obj.name, index=1) == {"FINISHED"}
        assert bpy.ops.posegpt.import_pose(filepath=str(path), armature=obj.name) == {"FINISHED"}
        np.testing.assert_allclose(rig.read_pose(obj), second, atol=1e-5)
    with pytest.raises(RuntimeError, match="carries no pose"):
        bpy.ops.posegpt.apply_pose(armature=obj.name, index=0)          # a user message


def test_reset_chat_clears_messages_and_starts_a_new_session(prefs):
    obj = create_body()
    send_and_wait(obj, "she is proposing marriage")
    old_session = obj.posegpt_chat.session_id
    assert bpy.ops.posegpt.reset_chat(armature=obj.name) == {"FINISHED"}
    assert len(obj.posegpt_chat.messages) == 0 and obj.posegpt_chat.session_id != old_session


def test_camera_render_is_small_and_restores_the_render_settings(prefs):
    from blender_addon import capture
    scene = bpy.context.scene
    create_body()
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    scene.camera, camera.location, camera.rotation_euler = camera, (0, -4, 1), (1.5708, 0, 0)
    render = scene.render
    render.engine = "CYCLES"
    scene.cycles.samples = 1
    render.resolution_x, render.resolution_y, render.resolution_percentage = 1920, 1080, 50
    render.filepath, render.image_settings.file_format = "//frames/", "JPEG"
    data, image = capture.render_camera(scene)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert tuple(image.size) == (256, 144) and image.packed_file is not None
    assert (render.resolution_x, render.resolution_y, render.resolution_percentage) == (1920, 1080, 50)
    assert (render.filepath, render.image_settings.file_format, scene.cycles.samples) == ("//frames/", "JPEG", 1)


def test_a_photo_larger_than_the_model_reads_is_scaled_down_before_sending(prefs, tmp_path):
    from blender_addon import capture
    from posegpt_net import wire
    from PIL import Image
    path = tmp_path / "photo.png"
    Image.new("RGB", (1200, 800), (200, 120, 40)).save(path)
    scene = bpy.context.scene
    scene.posegpt.image_source, scene.posegpt.image_path = "FILE", str(path)
    (data,), image, _ = capture.gather_image(scene, 336)
    assert wire.image_info(data) == ("png", 504, 336)               # short side = image_size, aspect kept
    assert tuple(image.size) == (1200, 800)                          # the chat keeps the original
    (small,), _, _ = capture.gather_image(scene, 2000)
    assert small == path.read_bytes()                                # never scaled up
    assert capture.scaled_size(300, 200, None) is None


def test_unregister_removes_everything_it_added(addon):
    addon_utils.disable(ADDON, default_set=True)
    try:
        assert not hasattr(bpy.types.Object, "posegpt_chat") and not hasattr(bpy.types.Scene, "posegpt")
        assert not hasattr(bpy.types, "POSEGPT_PT_chat") and not hasattr(bpy.types, "POSEGPT_OT_send_prompt")
        with pytest.raises(AttributeError):
            bpy.ops.posegpt.send_prompt()
    finally:
        addon_utils.enable(ADDON, default_set=True)
    assert hasattr(bpy.types.Object, "posegpt_chat")


@pytest.fixture(scope="module")
def curve_server(tmp_path_factory, server):
    from backend.keys import generate_keys
    from backend.server import serve_in_thread
    keys = tmp_path_factory.mktemp("keys")
    written = generate_keys(keys, clients=["artist"])
    handle = serve_in_thread(server.server.options.checkpoint, curve=True, keys_dir=str(keys))
    yield handle, written, keys
    handle.stop()


def test_curve_keys_from_the_preferences_connect_and_a_wrong_key_is_explained(prefs, curve_server, tmp_path):
    import zmq.auth
    from blender_addon import session
    handle, written, _ = curve_server
    prefs.address, prefs.timeout_s = handle.address, 3.0
    prefs.server_public_key = str(written["server"])
    prefs.client_public_key = str(written["client:artist"])
    prefs.client_secret_key = str(written["client_secret:artist"])
    obj = create_body()
    message, _ = send_and_wait(obj, "she is proposing marriage")
    assert message.pose_json and session.is_connected()

    session.disconnect()
    stranger_public, stranger_secret = zmq.auth.create_certificates(str(tmp_path), "stranger")  # not allowed
    prefs.client_public_key, prefs.client_secret_key = stranger_public, stranger_secret
    message, elapsed = send_and_wait(obj, "now she waves", expect="error", timeout=10.0)
    assert "client key pair" in message.text and elapsed <= prefs.timeout_s + 0.5, (message.text, elapsed)
    assert not session.is_connected()


def test_names_tooltips_and_property_metadata_follow_blender_conventions(addon):
    import blender_addon
    from blender_addon import operators
    for cls in blender_addon._classes():
        assert (cls.__doc__ or "").strip(), f"{cls.__name__} needs a docstring (its tooltip)"
        if issubclass(cls, bpy.types.Operator):
            prefix, _, verb_noun = cls.__name__.partition("_OT_")
            assert prefix == "POSEGPT" and cls.bl_idname == f"posegpt.{verb_noun}", cls.__name__
            rna = getattr(bpy.ops.posegpt, verb_noun).get_rna_type()
        elif issubclass(cls, bpy.types.Panel):
            assert cls.__name__.startswith("POSEGPT_PT_") and cls.bl_idname == cls.__name__
            continue
        else:
            rna = cls.bl_rna
        own = [p for p in rna.properties if p.identifier not in ("rna_type", "name", "bl_idname")]
        for prop in own:
            assert prop.name and prop.description, f"{cls.__name__}.{prop.identifier} lacks a name/description"
    assert operators.POSEGPT_OT_apply_pose.bl_options >= {"REGISTER", "UNDO"}
    assert operators.POSEGPT_OT_key_pose.bl_options >= {"REGISTER", "UNDO"}
    secret = bpy.context.preferences.addons[ADDON].preferences.bl_rna.properties["client_secret_key"]
    assert secret.subtype == "PASSWORD"
    assert bpy.context.preferences.addons[ADDON].preferences.bl_rna.properties["smpl_model_path"].subtype == "FILE_PATH"


def _send_to(prefs, address, prompt="arms up", timeout_s=10.0):
    """Point the add-on at ``address`` and send ``prompt`` for a new body; returns the body."""
    prefs.address, prefs.timeout_s = address, timeout_s
    prefs.server_public_key = prefs.client_public_key = prefs.client_secret_key = ""    # plaintext fake server
    obj = create_body()
    bpy.context.scene.posegpt.prompt = prompt
    assert bpy.ops.posegpt.send_prompt(armature=obj.name) == {"FINISHED"}
    return obj


def _connected_to(prefs, address):
    """Point the add-on at ``address``, make a body and connect, pumping until the handshake is done;
    returns the body."""
    from blender_addon import session
    prefs.address = address
    prefs.server_public_key = prefs.client_public_key = prefs.client_secret_key = ""    # plaintext fake server
    obj = create_body()
    assert bpy.ops.posegpt.connect() == {"FINISHED"}
    _pump_until(lambda: session.is_connected(), 5.0)
    return obj


def _pump_until(done, limit_s):
    from blender_addon import session
    start = time.monotonic()
    while time.monotonic() - start < limit_s and not done():
        session.pump()
        time.sleep(0.01)
    return time.monotonic() - start


HANG_CASES = {
    # issue 16, point 6: each used to leave the chat pending for ever
    "handshake answered with a pong": ({"hello": lambda r: [wire_pong(r)]}, "not a PoseGPT server"),
    "error with an empty request id": ({"hello": lambda r: [wire_hello(r)],
                                        "chat": lambda r: [wire_error_without_id()]}, "unreadable"),
    "a server that only sends heartbeats": ({"hello": lambda r: [wire_hello(r)], "chat": lambda r: ["beat"],
                                             "ping": lambda r: [wire_pong(r)]}, "No answer"),
}


def wire_hello(request):
    from test_addon_liveness import hello
    return hello(request)[0]


def wire_pong(request):
    from test_addon_liveness import pong
    return pong(request)[0]


def wire_error_without_id():
    from posegpt_net import wire
    return wire.Error("", "bad_header", "unreadable header")


@pytest.mark.parametrize("case", list(HANG_CASES))
def test_every_hang_against_a_bad_server_ends_in_an_error_entry(prefs, case):
    from test_addon_liveness import FakeServer
    script, words = HANG_CASES[case]
    fake = FakeServer(script)
    try:
        obj = _send_to(prefs, fake.address, timeout_s=1.0)
        chat = lambda: bpy.data.objects[obj.name].posegpt_chat.messages      # noqa: E731
        seconds = _pump_until(lambda: len(chat()) >= 2, 5.0)
        assert [m.role for m in chat()] == ["user", "error"], [(m.role, m.text) for m in chat()]
        assert words in chat()[1].text and seconds <= 1.0 + 0.5, (chat()[1].text, seconds)
    finally:
        fake.stop()


def test_a_server_killed_mid_request_reads_lost_in_the_panel_within_2_s(prefs):
    from blender_addon import session
    from test_addon_liveness import FakeServer, hello, pong
    fake = FakeServer({"hello": hello, "chat": lambda r: ["beat"], "ping": pong})
    try:
        obj = _send_to(prefs, fake.address)
        _pump_until(lambda: fake.beat, 5.0)
        assert session.status_text() == "Connected"
        fake.stop()                                   # as a killed process: its socket closes
        chat = lambda: bpy.data.objects[obj.name].posegpt_chat.messages      # noqa: E731
        seconds = _pump_until(lambda: session.status_text().startswith("Lost connection") and len(chat()) >= 2, 5.0)
        assert session.status_text().startswith("Lost connection — retrying") and seconds < 2.0, seconds
        assert [m.role for m in chat()] == ["user", "error"] and "lost" in chat()[1].text
    finally:
        fake.stop()


def test_cancel_writes_a_note_in_the_chat(prefs):
    from test_addon_liveness import FakeServer, hello, pong
    fake = FakeServer({"hello": hello, "chat": lambda r: ["beat"], "ping": pong})
    try:
        obj = _send_to(prefs, fake.address)
        _pump_until(lambda: fake.beat, 5.0)
        assert bpy.ops.posegpt.cancel_request(armature=obj.name) == {"FINISHED"}
        messages = bpy.data.objects[obj.name].posegpt_chat.messages
        assert [(m.role, m.text, m.prompt) for m in messages] == [("user", "arms up", ""),
                                                                  ("note", "Cancelled", "arms up")]
    finally:
        fake.stop()


def test_send_redraws_nothing_until_the_prompt_waits_and_a_reply_redraws_the_view_once(prefs, server, monkeypatch):
    """Issue 16: a fast reply's pose is the first thing the window redraws after Send (each window redraw
    costs more than a small model's answer without a GPU); a prompt still out after
    ``WAITING_ROW_AFTER_S`` gets its waiting row drawn once a second; the pose redraws the 3D View once."""
    from blender_addon import session
    from test_addon_liveness import FakeServer, hello, pong
    redraws = []
    monkeypatch.setattr(session, "_redraw", lambda view=False: redraws.append("view" if view else "sidebar"))
    fake = FakeServer({"hello": hello, "chat": lambda r: ["beat"], "ping": pong})      # never answers
    try:
        obj = _connected_to(prefs, fake.address)
        redraws.clear()
        bpy.context.scene.posegpt.prompt = "arms up"
        assert bpy.ops.posegpt.send_prompt(armature=obj.name) == {"FINISHED"}
        assert session.pump() == session.PUMP_BUSY_S and redraws == []          # the Send: no redraw
        for pending in session.connection().pending.values():
            pending.started -= session.WAITING_ROW_AFTER_S                    # the prompt has waited
        session.pump()
        session.pump()
        assert redraws == ["sidebar"]                                         # its waiting row, once
    finally:
        fake.stop()
        session.disconnect()
    prefs.address = server.address
    redraws.clear()
    send_and_wait(obj, "she is proposing marriage")
    assert redraws.count("view") == 1 and redraws[-1] == "view", redraws


def test_the_event_loop_is_kept_awake_only_while_a_fresh_request_is_out(prefs, monkeypatch):
    """Issue 16: Blender's loop sleeps 5 ms after each pass without an event, and the pump runs once per pass;
    ``posegpt.stay_awake`` (a modal operator, so a window only) keeps it spinning for AWAKE_FOR_S after a Send
    while the request is out, and the pump then looks every PUMP_AWAKE_S. Background Blender has no window:
    nothing spins there."""
    from blender_addon import session
    from test_addon_liveness import FakeServer, hello, pong
    fake = FakeServer({"hello": hello, "chat": lambda r: ["beat"], "ping": pong})      # never answers
    try:
        obj = _connected_to(prefs, fake.address)
        assert not session.wants_awake()                                      # connected, idle
        bpy.context.scene.posegpt.prompt = "arms up"
        assert bpy.ops.posegpt.send_prompt(armature=obj.name) == {"FINISHED"}
        assert not session.is_awake()                                         # no window, no modal operator
        assert session.wants_awake() and session.pump() == session.PUMP_BUSY_S
        monkeypatch.setitem(session._state, "awake", object())                # a timer, as the modal operator holds
        assert session.pump() == session.PUMP_AWAKE_S
        target, prompt, sent = session._state["last_send"]
        monkeypatch.setitem(session._state, "last_send", (target, prompt, sent - session.AWAKE_FOR_S))
        assert not session.wants_awake()                                      # a slow reply: the loop may sleep
        session.disconnect()
        assert not session.is_awake()                                         # disconnecting lets it sleep
    finally:
        fake.stop()
        session.disconnect()


def test_a_reply_s_undo_step_waits_for_the_draw_and_goes_in_before_the_next_event(prefs, monkeypatch):
    """Issue 16: the pose's undo step (Blender's global undo writes the whole file into memory) and its
    stick figure are made after the window draws the pose, by the ``posegpt.stay_awake`` modal operator,
    which sees the window's next event before anything else does: undo then takes back exactly that pose
    and keeps the chat. Without the operator (no window, a slow reply) the step is pushed at once."""
    from types import SimpleNamespace

    from blender_addon import session
    from blender_addon.operators import POSEGPT_OT_stay_awake
    obj = create_body()
    name = obj.name
    bpy.ops.ed.undo_push(message="test start")
    pushed = []
    push = session._undo_push
    monkeypatch.setattr(session, "_undo_push", lambda message: (pushed.append(message), push(message)))
    first = stored_pose(send_and_wait(obj, "she is proposing marriage")[0])
    assert pushed == ["PoseGPT reply", "PoseGPT pose"]                     # no window: at once

    monkeypatch.setitem(session._state, "awake", object())                 # the modal operator's timer (a window)
    second = stored_pose(send_and_wait(obj, "now she sits down")[0])
    np.testing.assert_allclose(rig.read_pose(bpy.data.objects[name]), second, atol=1e-5)
    assert pushed[2:] == ["PoseGPT reply"]                                 # the pose is on, its step is due
    reply = bpy.data.objects[name].posegpt_chat.messages[-1].pose_json
    assert session.icon_waits(reply)                                       # and its stick figure
    ctrl_z = SimpleNamespace(type="Z", value="PRESS", ctrl=True)
    assert POSEGPT_OT_stay_awake.modal(None, bpy.context, ctrl_z) == {"PASS_THROUGH"}
    assert pushed[2:] == ["PoseGPT reply", "PoseGPT pose"]                 # pushed before the key does anything
    assert not session.icon_waits(reply)

    window = bpy.context.window_manager.windows[0]
    area = next(a for a in window.screen.areas if a.type == "VIEW_3D")
    with bpy.context.temp_override(window=window, screen=window.screen, area=area):
        assert bpy.ops.ed.undo() == {"FINISHED"}
        undone = bpy.data.objects[name]                                    # undo reloads the data
        np.testing.assert_allclose(rig.read_pose(undone), first, atol=1e-5)
        assert [m.role for m in undone.posegpt_chat.messages] == ["user", "assistant"] * 2
        assert bpy.ops.ed.redo() == {"FINISHED"}
        np.testing.assert_allclose(rig.read_pose(bpy.data.objects[name]), second, atol=1e-5)

    session.push_undo_after_draw("PoseGPT pose")                           # owed when the add-on disconnects
    session.disconnect()
    assert pushed[-1] == "PoseGPT pose" and session._state["undo_due"] is None


def test_a_reply_clears_the_prompt_without_re_evaluating_the_scene(prefs):
    """Issue 16: the reply's chat turn is written without RNA updates that reach the depsgraph. Clearing the
    prompt through ``settings.prompt = ""`` ran the prompt's update, and Blender then tagged the Scene for
    re-evaluation and redrew every region of the window ahead of the pose's first draw."""
    from blender_addon import session
    obj = create_body()
    settings = bpy.context.scene.posegpt
    settings.prompt = "she is proposing marriage"
    bpy.context.view_layer.update()                          # the artist's typing is evaluated before Send
    updated = []

    def note(scene, depsgraph):
        updated.extend(type(u.id).__name__ for u in depsgraph.updates)
    bpy.app.handlers.depsgraph_update_post.append(note)
    try:
        assert bpy.ops.posegpt.send_prompt(armature=obj.name) == {"FINISHED"}
        _pump_until(lambda: len(bpy.data.objects["SMPL"].posegpt_chat.messages) == 2, REPLY_TIMEOUT_S)
        bpy.context.view_layer.update()
    finally:
        bpy.app.handlers.depsgraph_update_post.remove(note)
    assert settings.prompt == "" and bpy.data.objects["SMPL"].posegpt_chat.messages[1].role == "assistant"
    assert "Object" in updated and "Scene" not in updated, updated       # the body moved, the scene did not


def test_return_in_the_prompt_field_sends_it_and_a_script_setting_the_prompt_does_not(prefs, monkeypatch):
    """Issue 16, point 5: Blender calls the prompt's update when an edit in the field is confirmed
    (Return, Tab or a click elsewhere); Return in a 3D View's sidebar or popup sends the prompt, Tab and a
    click away keep it, the Send click that confirmed it sends nothing more, and scripts (no 3D View in
    their context) or the add-on clearing the field send nothing. (The key comes from the event of an
    invoked operator, which needs a window: here it is given by hand, the GUI test presses the keys.)"""
    from types import SimpleNamespace
    from blender_addon import operators, properties, session
    ended_by = ["RET"]
    monkeypatch.setattr(properties, "invoke_return_check", lambda: operators.send_if_return(ended_by[0]))
    from test_addon_liveness import FakeServer, hello, pong
    fake = FakeServer({"hello": hello, "chat": lambda r: ["beat"], "ping": pong})      # holds the chat
    try:
        prefs.address = fake.address
        prefs.server_public_key = prefs.client_public_key = prefs.client_secret_key = ""
        obj = create_body()
        settings = bpy.context.scene.posegpt
        settings.prompt = "arms up"                    # a script (no window here): nothing is sent
        assert session.connection() is None

        def confirmed_in(area_type, region_type):
            context = SimpleNamespace(area=SimpleNamespace(type=area_type), region=SimpleNamespace(type=region_type))
            properties.prompt_confirmed(settings, context)

        confirmed_in("CONSOLE", "WINDOW")              # typed into the Python console
        assert session.connection() is None
        for key in ("TAB", "LEFTMOUSE"):               # Tab, or a click away, in the sidebar's field
            ended_by[0] = key
            confirmed_in("VIEW_3D", "UI")
            assert session.connection() is None and settings.prompt == "arms up"
        ended_by[0] = "RET"
        confirmed_in("VIEW_3D", "UI")                  # Return in the sidebar's field
        sent = lambda: [p.prompt for p in session.connection().chats_for(obj.name)]      # noqa: E731
        assert sent() == ["arms up"]
        assert bpy.ops.posegpt.send_prompt(armature=obj.name) == {"FINISHED"}            # the Send click after
        assert sent() == ["arms up"]
        settings.prompt = "now wave"
        confirmed_in("VIEW_3D", "UI")
        assert sent() == ["arms up", "now wave"]
        settings.prompt = ""                           # an emptied field sends nothing
        confirmed_in("VIEW_3D", "UI")
        assert sent() == ["arms up", "now wave"] and len(obj.posegpt_chat.messages) == 0
        settings.prompt = "she sits"                   # while the add-on writes the field (write_turn)
        monkeypatch.setitem(session._state, "writing_prompt", True)
        confirmed_in("VIEW_3D", "UI")
        assert sent() == ["arms up", "now wave"]
    finally:
        fake.stop()
        session.disconnect()


def test_each_turn_is_labelled_with_a_stick_figure_of_its_pose(addon):
    """Issue 16: a reply's prompt row carries a small stick figure of the pose it got (a preview made once
    per pose from pose_icon.stick_figure; background Blender has no icon ids, the GUI test's screenshot shows
    them); a pose that does not decode gets no icon, not an error."""
    from blender_addon import pose_icon, pose_previews
    from blender_addon.chat_state import pose_to_json
    from smpl_rig import rotations as rot
    rotvec = np.zeros((24, 3))
    rotvec[16] = [0.0, 0.0, 1.3]                                  # the left arm raised
    stored = pose_to_json(rot.rotvec_to_rotmat(rotvec))
    preview = pose_previews.pose_preview(stored)
    assert preview is not None and pose_previews.pose_preview(stored) == preview      # made once, then reused
    expected = pose_icon.stick_figure(rot.rotvec_to_rotmat(rotvec))
    assert tuple(preview.icon_size) == tuple(preview.image_size) == (pose_icon.ICON_PX, pose_icon.ICON_PX)
    # Blender keeps preview pixels as 8-bit RGBA
    np.testing.assert_allclose(np.asarray(preview.icon_pixels_float[:]), expected.ravel(), atol=1 / 255)
    np.testing.assert_allclose(np.asarray(preview.image_pixels_float[:]), expected.ravel(), atol=1 / 255)
    other = pose_previews.pose_preview(pose_to_json(np.eye(3)[None].repeat(24, 0)))
    assert other is not None and other != preview
    assert pose_previews.pose_preview('{"format": "something else"}') is None
    assert pose_previews.pose_preview("") is None
    assert pose_previews.pose_icon_id('{"format": "something else"}') == 0
