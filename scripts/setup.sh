#!/usr/bin/env bash
# Set up a fresh machine for sim2online-envs: system libraries, a virtual environment in .venv,
# the CPU build of torch, then this package with its hardware and test extras (editable).
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# System libraries: EGL/OSMesa for offscreen MuJoCo rendering, libusb for pyrealsense2; the race
# car's firmware toolchain (avr-gcc, avr-libc) and its twin (simavr's library and headers).
need_apt=()
for pkg in libegl1 libgl1 libosmesa6 libusb-1.0-0 \
    make gcc gcc-avr avr-libc binutils-avr simavr libsimavr-dev libelf-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Run a command quietly; on failure show its output (less pip's noise about local indexes).
quiet() {
    local log; log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then
        grep -v '^WARNING: Location' "$log" >&2; rm -f "$log"; return 1
    fi
    rm -f "$log"
}

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
quiet .venv/bin/python -m pip install --upgrade pip
# The CPU wheel first: a bare torch requirement would pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || quiet .venv/bin/python -m pip install "torch==2.13.0"
quiet .venv/bin/python -m pip install -e ".[test]"
# The hardware extra (driver libraries, twins) installs on its own: its tests skip with a reason
# where it is absent, and CI runs them because this script installs it.
quiet .venv/bin/python -m pip install -e ".[hardware]"
# Ray for the process-separated learner (tests/test_distributed.py skips without it).
quiet .venv/bin/python -m pip install -e ".[distributed]"
# The Go1's unitree_legged_sdk declares its own build and upload tools as dependencies (twine,
# auditwheel, pybind11, setuptools, wheel: 36 packages with keyring and cryptography, and newer
# setuptools and packaging than the venv's); its wheel needs none of them to run, and pip cannot
# skip one requirement's dependencies inside an extra, so it installs here, alone, --no-deps.
.venv/bin/python -c "import unitree_legged_sdk.robot_interface" 2>/dev/null \
    || quiet .venv/bin/python -m pip install --no-deps "unitree-legged-sdk==3.8.20231105"
echo "sim2online-envs is set up in .venv"
