#!/usr/bin/env bash
# The fast test suite (what CI runs): every test but the slow ones.
#
# Two phases: first everything that does not run in real time, on two workers; then the twin
# tests (a real env's control clock against its twin process: the car's firmware in simavr, the
# Go1's UDP peer, franky-sim) one at a time, because a second worker on a 2-core machine starves
# their real-time loops. Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -m "not slow and not twin" -n 2 "$@"
.venv/bin/python -m pytest -m "twin and not slow" -p no:xdist "$@"
