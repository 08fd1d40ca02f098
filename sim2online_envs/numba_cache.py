"""numba's on-disk cache in a folder it can write, for every compiled module of the package.

The compiled kernels (the Go1 task, the safety limits, the race car's substeps) are cached on
disk after their first compilation. numba caches next to each module (``__pycache__``), else in
the user's cache folder; a read-only install without a writable home has neither, and numba
would fail at import. Each compiled module calls :func:`use_a_writable_numba_cache` before its
first ``njit``; this module imports nothing of the package, so using it costs no other import.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numba
import numba.misc.appdirs

logger = logging.getLogger(__name__)


def _writable(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def use_a_writable_numba_cache() -> str | None:
    """Where numba can cache nowhere, point it at the temp folder rather than fail at import;
    returns the folder chosen, or None (a user's ``NUMBA_CACHE_DIR`` wins)."""
    if numba.config.CACHE_DIR:
        return None
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    user = numba.misc.appdirs.user_cache_dir(appname="numba", appauthor=False)
    if _writable(here) or _writable(user):
        return None
    folder = os.path.join(tempfile.gettempdir(), "sim2online_envs-numba-cache")
    numba.config.CACHE_DIR = folder
    logger.warning("numba cannot cache next to the package or in %s; caching in %s", user, folder)
    return folder


__all__ = ["use_a_writable_numba_cache"]
