#!/usr/bin/env bash
# Set up a fresh machine for sim2online-envs: system libraries, a virtual environment in .venv,
# the CPU build of torch, then this package with its hardware and test extras (editable).
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# System libraries: EGL/OSMesa for offscreen MuJoCo rendering, libusb for pyrealsense2.
need_apt=()
for pkg in libegl1 libgl1 libosmesa6 libusb-1.0-0; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel first: a bare torch requirement would pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e ".[hardware,test]" 2>&1 | grep -v "^WARNING: Location" || true
echo "sim2online-envs is set up in .venv"
