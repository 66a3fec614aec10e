"""The add-on's bpy-free core: imports without Blender, pose storage, pose files, addresses, advice,
and the connection's behaviour against an address where no server listens."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from smpl_rig import rotations

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from blender_addon import chat_state, connection, pose_files, reply_handling  # noqa: E402

CORE_MODULES = ("blender_addon", "blender_addon.chat_state", "blender_addon.reply_handling",
                "blender_addon.connection", "blender_addon.pose_files")


def random_pose(seed=0) -> np.ndarray:
    rotvec = np.random.default_rng(seed).normal(scale=0.6, size=(24, 3))
    return rotations.rotvec_to_rotmat(rotvec)


def test_core_imports_without_bpy():
    """A fresh interpreter that cannot import bpy still imports the core modules."""
    code = ("import sys\n"
            "class NoBpy:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'bpy' or name.startswith(('bpy.', 'bpy_', 'mathutils')):\n"
            "            raise ImportError('bpy is blocked in this test')\n"
            "sys.meta_path.insert(0, NoBpy())\n"
            f"sys.path.insert(0, {str(REPO)!r})\n"
            f"for name in {CORE_MODULES!r}:\n"
            "    __import__(name)\n"
            "assert 'bpy' not in sys.modules\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pose_json_round_trip_is_exact(dtype):
    pose = random_pose(1).astype(dtype)
    back = chat_state.pose_from_json(chat_state.pose_to_json(pose))
    assert back.shape == (24, 3, 3) and back.dtype == np.float64
    np.testing.assert_array_equal(back, pose.astype(np.float64))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((23, 3, 3)), "shape"),
    (np.full((24, 3, 3), np.nan), "NaN"),
    (np.tile(np.diag([1.0, 1.0, -1.0]), (24, 1, 1)), "not rotations"),
    (np.tile(2 * np.eye(3), (24, 1, 1)), "not rotations"),
])
def test_bad_poses_are_refused_with_a_reason(bad, message):
    with pytest.raises(chat_state.PoseFormatError, match=message):
        chat_state.pose_to_json(bad)


def test_stored_pose_in_another_frame_is_refused():
    data = json.loads(chat_state.pose_to_json(random_pose()))
    data["frame"] = "camera"
    with pytest.raises(chat_state.PoseFormatError, match="SMPL frame"):
        chat_state.pose_from_json(json.dumps(data))


def test_wrap_text_fits_the_columns_and_keeps_every_word():
    text = "she is proposing marriage on one knee\nwith a ring " + "x" * 50
    for columns in (12, 20, 40):
        lines = chat_state.wrap_text(text, columns)
        assert all(len(line) <= columns for line in lines)
        assert "".join(text.split()) == "".join("".join(lines).split())
    assert chat_state.wrap_columns(300, 1.0) > chat_state.wrap_columns(300, 2.0) >= chat_state.MIN_WRAP_COLUMNS


def test_display_text_hides_the_pose_token():
    assert chat_state.display_text("Sure, here is the pose: <POSE>") == "Sure, here is the pose"
    assert chat_state.display_text("<POSE>") == "(pose)"
    assert chat_state.display_text("Kneeling [P] now", pose_token="[P]") == "Kneeling now"


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_pose_file_round_trip(tmp_path, suffix):
    pose = random_pose(2)
    path = pose_files.save_pose(tmp_path / f"pose{suffix}", pose)
    np.testing.assert_allclose(pose_files.load_pose(path), pose, atol=1e-12)


def test_pose_file_layouts_other_tools_write(tmp_path):
    pose = random_pose(3)
    rotvec = rotations.rotmat_to_rotvec(pose)
    np.savez(tmp_path / "amass_like.npz", poses=np.tile(rotvec.reshape(1, 72), (5, 1)), trans=np.zeros((5, 3)))
    np.testing.assert_allclose(pose_files.load_pose(tmp_path / "amass_like.npz"), pose, atol=1e-9)
    np.savez(tmp_path / "rotmat.npz", rotmat=pose)
    np.testing.assert_allclose(pose_files.load_pose(tmp_path / "rotmat.npz"), pose, atol=1e-12)
    np.savez(tmp_path / "nothing.npz", betas=np.zeros(10))
    with pytest.raises(pose_files.PoseFormatError, match="no pose found"):
        pose_files.load_pose(tmp_path / "nothing.npz")
    # Pickled object arrays are never loaded (allow_pickle=False).
    np.savez(tmp_path / "objects.npz", poses=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        pose_files.load_pose(tmp_path / "objects.npz")
    with pytest.raises(pose_files.PoseFormatError, match=".npz or .json"):
        pose_files.load_pose(tmp_path / "pose.npy")


class FakeClient:
    """Stands in for PoseClient: hands ``Connection`` the wire messages a test queues."""

    def __init__(self, address, **kw):
        self.inbox, self.sent, self.observers = [], [], []

    def submit(self, kind, **fields):
        self.sent.append((kind, fields))
        return f"r{len(self.sent)}"

    def chat(self, session_id, prompt, images=(), mode="direct"):
        return self.submit("chat", session_id=session_id, prompt=prompt)

    def add_observer(self, callback):
        self.observers.append(callback)

    def pump(self):
        messages, self.inbox = self.inbox, []
        for message in messages:
            for observer in self.observers:
                observer(message)
        return messages

    def close(self):
        pass


def _connected():
    from posegpt_net import wire
    conn = connection.Connection("tcp://127.0.0.1:5555", client_factory=FakeClient)
    conn._client.inbox.append(wire.Hello("r1", server="test", model_card={"image_size": 336}))
    assert [o.kind for o in conn.poll()] == ["connected"]
    return conn


def _result(rid, rotmat_smpl, **fields):
    from posegpt_net import wire
    pose = {name: np.zeros(shape, np.float32) for name, (_frame, shape) in wire.POSE_ARRAYS.items()}
    pose["rotmat_smpl"] = np.asarray(rotmat_smpl, np.float32)
    return wire.Result(rid, "s", "Sure <POSE>", [pose], **fields)


def test_a_result_reaches_the_armature_as_validated_smpl_rotations():
    conn = _connected()
    seen = []
    conn.add_observer(seen.append)
    rid = conn.send_chat("SMPL", "s", "arms up")
    pose = random_pose(4)
    conn._client.inbox.append(_result(rid, pose))
    (outcome,) = conn.poll()
    assert outcome.kind == "result" and outcome.pending.target == "SMPL" and outcome.note == ""
    assert outcome.poses[0].dtype == np.float64 and outcome.poses[0].shape == (24, 3, 3)
    np.testing.assert_allclose(outcome.poses[0], pose, atol=1e-6)
    assert [m.kind for m in seen] == ["result"]                 # the observer saw the wire message


def test_a_result_whose_numbers_are_not_rotations_is_refused_where_it_enters():
    conn = _connected()
    rid = conn.send_chat("SMPL", "s", "arms up")
    conn._client.inbox.append(_result(rid, np.tile(2 * np.eye(3), (24, 1, 1))))
    (outcome,) = conn.poll()
    assert outcome.kind == "error" and outcome.error_code == "bad_model_output"


def test_a_trimmed_history_is_told_with_the_reply():
    conn = _connected()
    rid = conn.send_chat("SMPL", "s", "arms up")
    conn._client.inbox.append(_result(rid, random_pose(), history_trimmed=3))
    (outcome,) = conn.poll()
    assert outcome.kind == "result" and "3 oldest turns dropped" in outcome.note


@pytest.mark.parametrize("address, loopback", [
    ("tcp://127.0.0.1:5555", True), ("tcp://localhost:1", True), ("tcp://[::1]:5555", True),
    ("tcp://127.8.9.10:5555", True), ("ipc:///tmp/posegpt.sock", True),
    ("tcp://192.168.1.20:5555", False), ("tcp://gpu-box.example.org:5555", False), ("tcp://[2001:db8::1]:9", False),
])
def test_loopback_detection(address, loopback):
    assert connection.is_loopback(address) is loopback


@pytest.mark.parametrize("address", ["127.0.0.1:5555", "tcp://127.0.0.1", "tcp://host:99999", "http://x:1"])
def test_malformed_address_says_what_it_should_look_like(address):
    with pytest.raises(reply_handling.AddonError, match="tcp://HOST:PORT"):
        connection.Connection(address, 1.0)


def test_online_access_off_refuses_remote_but_not_loopback():
    with pytest.raises(reply_handling.AddonError, match="online access") as info:
        connection.check_online_access("tcp://10.0.0.5:5555", online_access=False)
    assert info.value.code == "online_access" and "Preferences > System > Network" in info.value.text
    connection.check_online_access("tcp://127.0.0.1:5555", online_access=False)
    connection.check_online_access("tcp://10.0.0.5:5555", online_access=True)


@pytest.mark.parametrize("code, words", [
    ("timeout", "make serve"), ("auth_failed", "key"), ("unsupported_version", "Update"),
    ("unknown_session", "Reset Chat"), ("images_not_supported", "None"), ("image_required", "image"),
    ("connection_lost", "send again"), ("some_new_code", "server log"),
])
def test_every_error_says_what_to_do(code, words):
    text = reply_handling.describe_error(code, "it failed", address="tcp://127.0.0.1:5555", timeout_s=3)
    assert text.startswith("it failed — ") and words in text


def test_curve_keys_all_or_nothing(tmp_path):
    assert connection.curve_settings("", "", "") is None
    with pytest.raises(reply_handling.AddonError, match="CURVE needs"):
        connection.curve_settings("x" * 40, "", "")
    with pytest.raises(reply_handling.AddonError, match="neither a key file"):
        connection.curve_settings(str(tmp_path / "missing.key"), "a" * 40, "b" * 40)


def test_curve_keys_from_key_files_and_text(tmp_path):
    zmq_auth = pytest.importorskip("zmq.auth")
    server_public, _ = zmq_auth.create_certificates(tmp_path, "server")
    client_public, client_secret = zmq_auth.create_certificates(tmp_path, "client")
    keys = connection.curve_settings(server_public, client_public, client_secret)
    public, secret = zmq_auth.load_certificate(client_secret)
    assert keys.client_public == public and keys.client_secret == secret
    text_keys = connection.curve_settings(keys.server_public.decode(), public.decode(), secret.decode())
    assert text_keys == keys


def test_no_server_fails_hello_and_queued_chat_within_the_timeout():
    pytest.importorskip("zmq")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = connection.Connection(f"tcp://127.0.0.1:{port}", timeout_s=0.5)
    queued = conn.send_chat("SMPL", "s1", "she is proposing marriage")    # sent once the hello answers
    start, outcomes = time.monotonic(), []
    while conn.busy and time.monotonic() - start < 5:
        outcomes += conn.poll()
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    assert elapsed <= 0.5 + 0.3, elapsed
    errors = [o for o in outcomes if o.kind == "error"]
    assert {o.pending.kind for o in errors} == {"hello", "chat"}
    assert next(o for o in errors if o.pending.kind == "chat").pending.request_id == queued
    assert all(o.error_code == "timeout" and "make serve" in o.error_text for o in errors)
    assert conn.state == "error" and "make serve" in conn.error_text and conn.poll() == []
    with pytest.raises(reply_handling.AddonError, match="press Connect"):
        conn.send_chat("SMPL", "s1", "again")


def test_a_chat_cancelled_while_connecting_is_never_sent():
    pytest.importorskip("zmq")
    conn = connection.Connection("tcp://127.0.0.1:9", timeout_s=5.0)
    queued = conn.send_chat("SMPL", "s1", "she is proposing marriage")
    assert [p.kind for p in conn.pending.values()] == ["hello", "chat"] and conn.chats_for("SMPL")
    conn.cancel(queued)
    assert [p.kind for p in conn.pending.values()] == ["hello"] and not conn.chats_for("SMPL")
    conn.close()
    assert not conn.busy and conn.poll() == []
