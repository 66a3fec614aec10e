"""CURVE: posegpt-keys writes usable key pairs; with --curve only allow-listed clients get in."""
from __future__ import annotations

import io
import stat
import time

import pytest
import zmq
from PIL import Image

from backend.keys import generate_keys, main as keys_main
from backend.posegpt.tiny import build_tiny_checkpoint
from backend.server import ServerError, serve_in_thread
from posegpt_net.client import CurveKeys, PoseClient

REFUSAL_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    generate_keys(root / "server-side", ["artist"])
    generate_keys(root / "stranger", ["stranger"])           # a well-formed pair the server never saw
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, keys):
    checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", family="text")
    handle = serve_in_thread(checkpoint, curve=True, keys_dir=str(keys / "server-side"), device="cpu",
                             dtype="float32")
    yield handle
    handle.stop()


def test_keys_command_writes_pairs_allow_list_and_private_secrets(tmp_path, capsys):
    assert keys_main(["--dir", str(tmp_path / "k"), "--clients", "a", "b"]) == 0
    root = tmp_path / "k"
    for path in ("server.key", "server.key_secret", "clients/a.key", "clients/a.key_secret", "clients/b.key",
                 "allowed/a.key", "allowed/b.key"):
        assert (root / path).is_file(), path
    assert not list((root / "allowed").glob("*secret*"))
    assert stat.S_IMODE((root / "server.key_secret").stat().st_mode) == 0o600
    public, secret = zmq.auth.load_certificate(str(root / "clients" / "a.key_secret"))
    assert zmq.curve_public(secret) == public
    assert zmq.auth.load_certificate(str(root / "allowed" / "a.key"))[0] == public
    assert keys_main(["--dir", str(root)]) == 1                      # never overwrites silently
    assert "already exists" in capsys.readouterr().err


def test_allow_listed_key_works(server, keys):
    curve = CurveKeys.from_files(keys / "server-side" / "server.key",
                                 keys / "server-side" / "clients" / "artist.key_secret")
    with PoseClient(server.address, timeout_s=10, curve=curve) as client:
        assert client.request("ping").kind == "pong"
        event = client.request("chat", session_id="s", prompt="arms up")
        assert event.kind == "result" and event.poses[0]["rotmat"].shape == (24, 3, 3)
        # this checkpoint is text-only: the broker refuses images from the model card, before any decoding
        png = io.BytesIO()
        Image.new("RGB", (8, 8)).save(png, "PNG")
        refused = client.request("chat", session_id="s", prompt="this one", images=[png.getvalue()])
        assert (refused.kind, refused.code) == ("error", "images_not_supported")


def test_unknown_key_is_refused(server, keys):
    curve = CurveKeys.from_files(keys / "server-side" / "server.key",
                                 keys / "stranger" / "clients" / "stranger.key_secret")
    with PoseClient(server.address, timeout_s=REFUSAL_TIMEOUT_S, curve=curve) as client:
        start = time.monotonic()
        event = client.request("ping")
        assert event.kind == "error" and event.code == "auth_failed", event
        assert time.monotonic() - start < REFUSAL_TIMEOUT_S      # told at the handshake, not by a timeout


def test_plaintext_client_is_refused(server):
    with PoseClient(server.address, timeout_s=REFUSAL_TIMEOUT_S) as client:
        event = client.request("ping")
        assert event.kind == "error" and event.code == "auth_failed", event
        assert client.request("chat", session_id="s", prompt="arms up").kind == "error"


def test_wrong_server_key_is_refused(server, keys):
    curve = CurveKeys.from_files(keys / "stranger" / "server.key",      # not the key of this server
                                 keys / "server-side" / "clients" / "artist.key_secret")
    with PoseClient(server.address, timeout_s=REFUSAL_TIMEOUT_S, curve=curve) as client:
        event = client.request("ping")
        assert event.kind == "error" and event.code == "auth_failed", event


def test_curve_without_keys_refuses_to_start(tmp_path):
    with pytest.raises(ServerError, match="posegpt-keys"):
        serve_in_thread(tmp_path / "no-checkpoint-needed", curve=True, keys_dir=str(tmp_path / "nokeys"))
