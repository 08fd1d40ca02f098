"""Build the race car firmware and its simavr harness (``make`` in hardware/firmware/racecar).

The twin runs the firmware ELF that avr-gcc builds from the repository's sources, in simavr,
through the harness ``racecar-twin``. :func:`build` runs the Makefile into a cache folder named
by a hash of the sources (``SIM2ONLINE_FIRMWARE_CACHE``, default ``~/.cache/sim2online``), under
a file lock, so tests running in parallel build once and a changed source rebuilds.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FIRMWARE_DIR", "FirmwareBuild", "FirmwareBuildError", "build", "missing_tools"]

#: The firmware's sources (shipped as package data of sim2online_envs.hardware).
FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware" / "racecar"
#: Programs the build needs, and the Debian packages that have them.
TOOLS = {"make": "make", "avr-gcc": "gcc-avr", "avr-objcopy": "binutils-avr", "cc": "gcc"}
SIMAVR_HEADER = Path("/usr/include/simavr/sim_avr.h")


class FirmwareBuildError(RuntimeError):
    """The firmware or the harness did not build (the compiler's output in the message)."""


@dataclass(frozen=True)
class FirmwareBuild:
    """Paths of one build."""

    elf: Path
    hex: Path
    harness: Path


def missing_tools(twin: bool = True) -> list[str]:
    """Debian packages whose programs (or simavr headers) are missing for a build."""
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if twin and not SIMAVR_HEADER.is_file():
        missing.append("libsimavr-dev")
    return missing


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(FIRMWARE_DIR.rglob("*")):
        if path.is_file() and "build" not in path.relative_to(FIRMWARE_DIR).parts:
            digest.update(str(path.relative_to(FIRMWARE_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build(twin: bool = True, cache: str | os.PathLike[str] | None = None) -> FirmwareBuild:
    """Build (if needed) the firmware and, with ``twin``, the simavr harness; return the paths."""
    missing = missing_tools(twin)
    if missing:
        raise FirmwareBuildError(
            f"cannot build the race car firmware: install the Debian packages {missing} "
            "(scripts/setup.sh does)"
        )
    root = Path(
        cache or os.environ.get("SIM2ONLINE_FIRMWARE_CACHE", "~/.cache/sim2online")
    ).expanduser()
    out = root / f"racecar-firmware-{_source_hash()}"
    out.mkdir(parents=True, exist_ok=True)
    result = FirmwareBuild(out / "racecar.elf", out / "racecar.hex", out / "racecar-twin")
    targets = ["firmware", "twin"] if twin else ["firmware"]
    with (out / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result.hex.is_file() and (not twin or result.harness.is_file()):
            return result
        process = subprocess.run(
            ["make", "-C", str(FIRMWARE_DIR), f"BUILD={out}", *targets],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if process.returncode != 0:
            raise FirmwareBuildError(
                f"make {' '.join(targets)} failed ({process.returncode}):\n"
                f"{process.stdout[-2000:]}\n{process.stderr[-4000:]}"
            )
    return result
