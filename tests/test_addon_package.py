"""`make addon` output: manifests valid (documented schema and Blender's own validator), the right wheels
per Python, zipped files byte-identical to the repository's, a legacy zip for Blender 3.4, and the 4.2+
extension installing into Blender (bpy 5.0) with its wheels.

`blender --command extension validate` runs ``bl_pkg/cli/blender_ext.py validate``; the bpy module ships
that same script, so it is run directly here (the bpy module itself cannot run ``--command``)."""
from __future__ import annotations

import ast
import base64
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import build_addon  # noqa: E402

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
PERMISSION_KEYS = {"files", "network", "clipboard", "camera", "microphone"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    paths = build_addon.build_all(out, REPO / "build" / "wheels")
    return {zip_key(p): p for p in paths}


def zip_key(path: Path) -> str:
    """"blender4.2-5.0", "blender5.1" or "legacy" from a built zip's name."""
    return path.name.removesuffix(".zip").split(f"-{build_addon.addon_version()}-", 1)[1]


def _manifest(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as zf:
        return tomllib.loads(zf.read("blender_manifest.toml").decode())


def _blender_ext():
    try:
        import bpy  # noqa: F401  (only to locate the script)
    except ImportError:
        pytest.skip("the bpy module (which ships Blender's extension validator) is not installed")
    import bpy
    script = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core/bl_pkg/cli/blender_ext.py"
    if not script.is_file():
        pytest.skip(f"Blender's extension validator is not at {script}")
    return script


def test_repo_manifest_follows_the_documented_schema():
    check_manifest(tomllib.loads((REPO / "blender_addon/blender_manifest.toml").read_text()))


def check_manifest(m: dict) -> None:
    """The fields of docs.blender.org 'Extensions > Manifest' schema 1.0.0 this add-on relies on."""
    assert m["schema_version"] == "1.0.0"
    assert m["id"] == "posegpt_for_blender" and re.fullmatch(r"[a-z][a-z0-9_]*", m["id"])
    assert SEMVER.match(m["version"])
    assert m["name"].strip() and m["maintainer"].strip()
    assert m["type"] == "add-on"
    tagline = m["tagline"]
    assert 0 < len(tagline) <= 64 and tagline[-1] not in ".!?,;:"
    assert m["license"] == ["SPDX:Apache-2.0"]
    assert tuple(map(int, m["blender_version_min"].split("."))) >= (4, 2, 0)
    permissions = m["permissions"]
    assert isinstance(permissions, dict) and set(permissions) <= PERMISSION_KEYS
    assert {"network", "files"} <= set(permissions)
    for reason in permissions.values():
        assert isinstance(reason, str) and 0 < len(reason) <= 64 and reason[-1] not in ".!?,;:"
    for wheel in m.get("wheels", []):
        assert wheel.startswith("./wheels/") and wheel.endswith(".whl")


def test_extension_manifests_cover_the_right_blender_and_python(built):
    old, new = _manifest(built["blender4.2-5.0"]), _manifest(built["blender5.1"])
    for m in (old, new):
        check_manifest(m)
    assert (old["blender_version_min"], old["blender_version_max"]) == ("4.2.0", "5.1.0")
    assert new["blender_version_min"] == "5.1.0" and "blender_version_max" not in new
    pyzmq_old = [w for w in old["wheels"] if "pyzmq" in w]
    pyzmq_new = [w for w in new["wheels"] if "pyzmq" in w]
    assert all("-cp311-cp311-" in w for w in pyzmq_old)
    assert all("-cp312-abi3-" in w or "-cp313-cp313-" in w for w in pyzmq_new)
    for wheels in (pyzmq_old, pyzmq_new):      # Linux x64 + arm64, macOS, Windows
        assert any("x86_64" in w and "linux" in w for w in wheels) and any("aarch64" in w for w in wheels)
        assert any("macosx" in w for w in wheels) and any("win_amd64" in w for w in wheels)
    for name, zip_path in (("blender4.2-5.0", built["blender4.2-5.0"]), ("blender5.1", built["blender5.1"])):
        with zipfile.ZipFile(zip_path) as zf:
            listed = {w.removeprefix("./") for w in _manifest(zip_path)["wheels"]}
            assert listed == {n for n in zf.namelist() if n.startswith("wheels/")}, name


def test_blender_extension_validator_accepts_both_zips_and_reads_their_python(built):
    script = _blender_ext()
    for key in ("blender4.2-5.0", "blender5.1"):
        result = subprocess.run([sys.executable, str(script), "validate", str(built[key])],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "Success" in result.stdout, result.stdout + result.stderr
    spec = importlib.util.spec_from_file_location("blender_ext", script)
    blender_ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(blender_ext)
    versions = {key: blender_ext.python_versions_from_wheels(_manifest(built[key])["wheels"])
                for key in ("blender4.2-5.0", "blender5.1")}
    assert versions["blender4.2-5.0"] == {(3, 11)}
    assert (3, 11) not in versions["blender5.1"] and versions["blender5.1"] in ({(3,)}, {(3, 13)})


def _repo_bytes() -> dict[str, bytes]:
    files = build_addon.repo_files()
    return {"addon": {p.relative_to(REPO / "blender_addon").as_posix(): p.read_bytes() for p in files["addon"]},
            "libs": {p.relative_to(REPO).as_posix(): p.read_bytes()
                     for part in ("smpl_rig", "posegpt_net") for p in files[part]}}


def test_zipped_files_are_byte_identical_to_the_repository(built):
    repo = _repo_bytes()
    assert {"__init__.py", "operators.py", "panels.py", "chat_state.py"} <= set(repo["addon"])
    assert {"smpl_rig/blender.py", "smpl_rig/data/mannequin.npz", "smpl_rig/data/MANNEQUIN_LICENSE.txt",
            "posegpt_net/wire.py", "posegpt_net/client.py"} <= set(repo["libs"])
    every_addon_py = {p.name for p in (REPO / "blender_addon").glob("*.py")}
    assert every_addon_py == set(repo["addon"]), "a module of the add-on would be left out of the zip"
    for package in ("smpl_rig", "posegpt_net"):            # the client imports every module of its package
        every_py = {f"{package}/{p.name}" for p in (REPO / package).glob("*.py")}
        assert every_py <= set(repo["libs"]), f"a module of {package} would be left out of the libs wheel"
    for key in ("blender4.2-5.0", "blender5.1"):
        with zipfile.ZipFile(built[key]) as zf:
            for name, data in repo["addon"].items():
                assert zf.read(name) == data, f"{key}: {name} differs from the repo"
            (libs_name,) = [n for n in zf.namelist() if "posegpt_blender_libs" in n]
            with zipfile.ZipFile(zf.open(libs_name)) as wheel:
                for name, data in repo["libs"].items():
                    assert wheel.read(name) == data, f"{key}: {name} in the libs wheel differs"
                check_wheel_record(wheel)
    with zipfile.ZipFile(built["legacy"]) as zf:
        for name, data in repo["addon"].items():
            assert zf.read(f"posegpt_for_blender/{name}") == data
        for name, data in repo["libs"].items():
            assert zf.read(f"posegpt_for_blender/_vendor/{name}") == data


def check_wheel_record(wheel: zipfile.ZipFile) -> None:
    """Every file of the wheel is listed in RECORD with its sha256 and size (the wheel spec)."""
    (record_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/RECORD")]
    rows = [line.split(",") for line in wheel.read(record_name).decode().splitlines()]
    listed = {name: (digest, size) for name, digest, size in rows}
    assert set(listed) == set(wheel.namelist())
    for name, (digest, size) in listed.items():
        if name == record_name:
            continue
        data = wheel.read(name)
        expected = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert (digest, int(size)) == (expected, len(data)), name


def test_legacy_zip_is_a_folder_add_on_for_blender_3_4_with_pyzmq_unpacked(built):
    with zipfile.ZipFile(built["legacy"]) as zf:
        names = set(zf.namelist())
        init = zf.read("posegpt_for_blender/__init__.py").decode()
    assert all(n.startswith("posegpt_for_blender/") for n in names)
    assert "posegpt_for_blender/blender_manifest.toml" not in names
    assert "posegpt_for_blender/_vendor/zmq/__init__.py" in names
    assert any(n.startswith("posegpt_for_blender/_vendor/pyzmq.libs/") for n in names)
    assert any(re.search(r"_vendor/zmq/backend/cython/_zmq\.cpython-311-x86_64-linux-gnu\.so$", n) for n in names)
    bl_info = next(ast.literal_eval(node.value) for node in ast.parse(init).body
                   if isinstance(node, ast.Assign) and node.targets[0].id == "bl_info")
    assert bl_info["blender"] == (3, 4, 0) and bl_info["name"] == "PoseGPT for Blender"


def test_rebuilding_gives_the_same_bytes_offline(built, tmp_path, monkeypatch):
    """Fixed zip timestamps and the wheel cache: a second build runs no pip and changes no byte."""
    def no_download(*args, **kwargs):
        raise AssertionError(f"the rebuild tried to download: {args}")
    monkeypatch.setattr(build_addon.subprocess, "run", no_download)
    again = build_addon.build_all(tmp_path, REPO / "build" / "wheels")
    for path in again:
        assert path.read_bytes() == built[zip_key(path)].read_bytes(), path.name


def test_extension_installs_into_blender_and_registers(built, tmp_path):
    """Blender 5.0 (bpy module, Python 3.11) installs the 4.2–5.0 zip from disk, unpacks its wheels and
    enables it; the add-on then imports smpl_rig from the extension's own site-packages."""
    _blender_ext()
    code = (
        "import sys, bpy\n"
        f"result = bpy.ops.extensions.package_install_files(filepath={str(built['blender4.2-5.0'])!r}, "
        "repo='user_default', enable_on_install=True)\n"
        "assert result == {'FINISHED'}, result\n"
        "assert 'bl_ext.user_default.posegpt_for_blender' in bpy.context.preferences.addons\n"
        "assert hasattr(bpy.ops.posegpt, 'send_prompt') and hasattr(bpy.types.Object, 'posegpt_chat')\n"
        "import smpl_rig, posegpt_net.client\n"
        "print('SMPL_RIG', smpl_rig.__file__)\n"
    )
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender_user")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    location = next(line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("SMPL_RIG"))
    assert location.startswith(str(tmp_path / "blender_user")), location
