"""sim2online-envs: one Gymnasium env per robot, in MuJoCo and on hardware.

Importing the package registers the env ids::

    import gymnasium as gym
    import sim2online_envs  # noqa: F401  (registers the ids)

    env = gym.make("SimPanda-v0")   # also SimGo1-v0, SimRaceCar-v0
    env = gym.make("RealPanda-v0", hardware="twin")  # the real driver against its twin
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

# Headless Linux (robot PCs, CI): render offscreen through EGL unless the user chose a backend.
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
# Mesa's software rasteriser (llvmpipe, where there is no GPU) splits each frame over helper
# threads; for the Panda's 128 px camera frames that costs ~27 % more CPU per frame than drawing
# on the calling thread (docs/performance.md). GPU drivers ignore it; a user's value wins.
os.environ.setdefault("LP_NUM_THREADS", "0")

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

from sim2online_envs import robots as _robots

#: Env id -> entry point, from the robot modules. Episode length is enforced by the env itself
#: (so that ``info["truncation_reason"]`` is set), hence no ``max_episode_steps`` here.
SIM_ENV_IDS = {module.SIM_ID: module.SIM_ENTRY_POINT for module in _robots.ROBOT_MODULES.values()}
#: Real robots (``hardware="real"``, or ``"twin"`` for the driver against its twin on loopback).
REAL_ENV_IDS = {
    module.REAL_ID: module.REAL_ENTRY_POINT for module in _robots.ROBOT_MODULES.values()
}

for _env_id, _entry_point in SIM_ENV_IDS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, kwargs={"backend": "sim"})
for _env_id, _entry_point in REAL_ENV_IDS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point)

# Heavier entry points load on first use, so `import sim2online_envs` stays cheap.
_LAZY = {
    "make_env": "sim2online_envs.make",
    "make_vec": "sim2online_envs.vec",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sim2online_envs' has no attribute {name!r}")


__all__ = ["REAL_ENV_IDS", "SIM_ENV_IDS", "__version__", "make_env", "make_vec"]
