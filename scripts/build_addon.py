"""Build the Blender add-on packages into dist/ (`make addon`).

    .venv/bin/python scripts/build_addon.py [--out dist] [--cache build/wheels]

Writes three zips, every file COPIED from this repository at build time (one source of truth; the tests
check the zipped bytes against the repo's):

- ``posegpt_for_blender-<v>-blender4.2-5.0.zip``: Blender extension for Blender 4.2–5.0 (Python 3.11),
  bundling pyzmq cp311 wheels for Linux (x64, arm64), macOS (universal2) and Windows (x64);
- ``posegpt_for_blender-<v>-blender5.1.zip``: the same for Blender 5.1+ (Python 3.13, pyzmq's abi3
  wheels). Two zips because mixing wheel tags makes Blender treat an extension as 3.11-only;
- ``posegpt_for_blender-<v>-legacy.zip``: a legacy add-on (folder + ``bl_info``) for Blender 3.4–4.1,
  e.g. Debian's packaged Blender, with pyzmq for Linux x64 CPython 3.11 unpacked in ``_vendor/``.

smpl_rig and posegpt_net travel in the extensions as one pure-Python wheel built here
(``posegpt_blender_libs``), and unpacked in the legacy zip's ``_vendor/``. Nothing is installed into the
user's Blender at run time. pyzmq wheels are fetched once with ``pip download --only-binary=:all:`` and
cached under build/wheels, so re-running works offline.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import io
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADDON_DIR = REPO / "blender_addon"
PACKAGE_NAME = "posegpt_for_blender"          # folder name of the legacy add-on = the extension id
LIBS_DIST = "posegpt_blender_libs"            # the wheel carrying smpl_rig and posegpt_net
ZIP_DATE = (2024, 1, 1, 0, 0, 0)              # fixed timestamps: the same sources give the same zip bytes

# Which repository files go in, relative to the repo root. smpl_rig: the pure-numpy rig and its bundled
# mannequin body (licence notice included); posegpt_net: the wire format, its socket helpers and the
# client (the package holds nothing else: the server lives in backend/).
ADDON_FILES_GLOB = "*.py"
SMPL_RIG_FILES = ("*.py", "data/mannequin.npz", "data/MANNEQUIN_LICENSE.txt")
POSEGPT_NET_FILES = ("*.py",)

# (Python version, pip --platform) pairs per extension zip. macosx_11_0_arm64 resolves to pyzmq's
# universal2 wheel, which Blender maps to both macOS platforms.
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_28_aarch64", "macosx_11_0_arm64", "win_amd64")
EXTENSION_TARGETS = (
    # (zip suffix, python version, blender_version_min, blender_version_max or None)
    ("blender4.2-5.0", "3.11", "4.2.0", "5.1.0"),
    ("blender5.1", "3.13", "5.1.0", None),
)
LEGACY_PYTHON, LEGACY_PLATFORM = "3.11", "manylinux_2_28_x86_64"


def repo_files() -> dict[str, list[Path]]:
    """The repository files each part ships, by part name ("addon", "smpl_rig", "posegpt_net")."""
    def collect(root: Path, patterns) -> list[Path]:
        found = {p for pattern in patterns for p in root.glob(pattern) if p.is_file()}
        return sorted(p for p in found if "__pycache__" not in p.parts)
    return {"addon": collect(ADDON_DIR, (ADDON_FILES_GLOB,)),
            "smpl_rig": collect(REPO / "smpl_rig", SMPL_RIG_FILES),
            "posegpt_net": collect(REPO / "posegpt_net", POSEGPT_NET_FILES)}


def addon_version() -> str:
    return tomllib.loads((ADDON_DIR / "blender_manifest.toml").read_text())["version"]


def _zip_write(zf: zipfile.ZipFile, arcname: str, data: bytes) -> None:
    info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


# --- wheels ------------------------------------------------------------------------------------------------

def fetch_pyzmq(python: str, platform: str, cache: Path) -> Path:
    """The pyzmq wheel for (python, platform), downloaded once into ``cache``."""
    version = importlib.metadata.version("pyzmq")       # the version pinned in pyproject.toml
    folder = cache / f"py{python}" / platform
    found = sorted(folder.glob(f"pyzmq-{version}-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
               "--python-version", python, "--platform", platform, "--dest", str(folder), f"pyzmq=={version}"]
    print(f"build_addon: downloading pyzmq {version} for Python {python} / {platform}")
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(folder.glob(f"pyzmq-{version}-*.whl"))
    if result.returncode != 0 or not found:
        raise SystemExit(f"build_addon: could not download pyzmq {version} for Python {python} / {platform} "
                         f"(needs PyPI once; cached in {folder} afterwards):\n{result.stderr.strip()}")
    return found[0]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_libs_wheel(files: dict[str, list[Path]], version: str) -> tuple[str, bytes]:
    """A py3-none-any wheel holding smpl_rig and posegpt_net exactly as in the repo: (filename, bytes)."""
    entries: list[tuple[str, bytes]] = []
    for part in ("smpl_rig", "posegpt_net"):
        for path in files[part]:
            entries.append((path.relative_to(REPO).as_posix(), path.read_bytes()))
    dist_info = f"{LIBS_DIST}-{version}.dist-info"
    entries.append((f"{dist_info}/METADATA", (
        f"Metadata-Version: 2.1\nName: {LIBS_DIST}\nVersion: {version}\n"
        "Summary: smpl_rig and posegpt_net as shipped inside the PoseGPT Blender add-on\n"
        "License: Apache-2.0\n").encode()))
    entries.append((f"{dist_info}/WHEEL", (
        "Wheel-Version: 1.0\nGenerator: posegpt build_addon.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    ).encode()))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries)
    record += f"{dist_info}/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries:
            _zip_write(zf, name, data)
        _zip_write(zf, f"{dist_info}/RECORD", record.encode())
    return f"{LIBS_DIST}-{version}-py3-none-any.whl", buffer.getvalue()


# --- manifests and zips ------------------------------------------------------------------------------------

def extension_manifest(wheel_names: list[str], version_min: str, version_max: str | None) -> str:
    """The repo's manifest with this zip's Blender range and bundled wheels filled in."""
    text = (ADDON_DIR / "blender_manifest.toml").read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith("blender_version_min"):
            lines.append(f'blender_version_min = "{version_min}"')
            if version_max is not None:
                lines.append(f'blender_version_max = "{version_max}"')
            lines.append("wheels = [")
            lines.extend(f'  "./wheels/{name}",' for name in wheel_names)
            lines.append("]")
        else:
            lines.append(line)
    manifest = "\n".join(lines) + "\n"
    tomllib.loads(manifest)                              # fail the build, not the user's install
    return manifest


def build_extension(out: Path, cache: Path, files, libs_wheel, suffix: str, python: str,
                    version_min: str, version_max: str | None) -> Path:
    version = addon_version()
    wheels = [(p.name, p.read_bytes()) for p in (fetch_pyzmq(python, plat, cache) for plat in WHEEL_PLATFORMS)]
    wheels = sorted(set(wheels)) + [libs_wheel]          # macOS x64/arm64 may share one universal2 wheel
    target = out / f"{PACKAGE_NAME}-{version}-{suffix}.zip"
    with zipfile.ZipFile(target, "w") as zf:
        _zip_write(zf, "blender_manifest.toml",
                   extension_manifest([name for name, _ in wheels], version_min, version_max).encode())
        for path in files["addon"]:
            _zip_write(zf, path.relative_to(ADDON_DIR).as_posix(), path.read_bytes())
        for name, data in wheels:
            _zip_write(zf, f"wheels/{name}", data)
    return target


def build_legacy(out: Path, cache: Path, files) -> Path:
    """Folder-style add-on zip for Blender < 4.2: libraries unpacked in _vendor/ (no manifest, so a
    Blender ≥ 4.2 installing it by mistake does not take it for an extension without its wheels)."""
    version = addon_version()
    target = out / f"{PACKAGE_NAME}-{version}-legacy.zip"
    pyzmq = fetch_pyzmq(LEGACY_PYTHON, LEGACY_PLATFORM, cache)
    with zipfile.ZipFile(target, "w") as zf:
        for path in files["addon"]:
            _zip_write(zf, f"{PACKAGE_NAME}/{path.relative_to(ADDON_DIR).as_posix()}", path.read_bytes())
        for part in ("smpl_rig", "posegpt_net"):
            for path in files[part]:
                _zip_write(zf, f"{PACKAGE_NAME}/_vendor/{path.relative_to(REPO).as_posix()}", path.read_bytes())
        with zipfile.ZipFile(pyzmq) as wheel:
            for name in wheel.namelist():
                if not name.endswith("/"):
                    _zip_write(zf, f"{PACKAGE_NAME}/_vendor/{name}", wheel.read(name))
    return target


def build_all(out: Path = REPO / "dist", cache: Path = REPO / "build" / "wheels") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = repo_files()
    libs_wheel = build_libs_wheel(files, addon_version())
    built = [build_extension(out, cache, files, libs_wheel, *target) for target in EXTENSION_TARGETS]
    built.append(build_legacy(out, cache, files))
    return built


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="where the zips go (default: dist)")
    parser.add_argument("--cache", type=Path, default=REPO / "build" / "wheels",
                        help="pyzmq wheel cache (default: build/wheels)")
    args = parser.parse_args(argv)
    for path in build_all(args.out, args.cache):
        print(f"build_addon: wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
              f"({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
