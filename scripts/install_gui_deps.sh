#!/usr/bin/env bash
# Installs what `make test-gui` needs: Debian's packaged Blender (3.4 on bookworm), a virtual X server
# (xvfb-run + xauth), ImageMagick's `import` for screenshots taken from outside Blender, xdotool, and the system
# numpy that Debian's Blender runs on.
# Idempotent: a tool already on PATH is not installed again, and apt is touched only when one is missing.
set -euo pipefail

need=()
command -v blender  >/dev/null 2>&1 || need+=(blender)
command -v xvfb-run >/dev/null 2>&1 || need+=(xvfb)
command -v xauth    >/dev/null 2>&1 || need+=(xauth)
command -v import   >/dev/null 2>&1 || need+=(imagemagick)
# Blender 3.4 has no Python API for the sidebar's active tab; the GUI test clicks it with xdotool.
command -v xdotool  >/dev/null 2>&1 || need+=(xdotool)
# Software OpenGL for Blender under Xvfb (mesa's llvmpipe); a missing libGL makes Blender exit at start.
dpkg -s libgl1-mesa-dri >/dev/null 2>&1 || need+=(libgl1-mesa-dri)
# Debian's blender links libpython3.11 but does not pull numpy, which smpl_rig and the add-on need.
dpkg -s python3-numpy >/dev/null 2>&1 || need+=(python3-numpy)

if [ ${#need[@]} -eq 0 ]; then
    echo "install_gui_deps: blender, xvfb-run, xauth, import, xdotool, mesa and python3-numpy already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install_gui_deps: need root (or sudo) to install: ${need[*]}"; exit 1; }
    SUDO="sudo"
fi
echo "install_gui_deps: installing ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
