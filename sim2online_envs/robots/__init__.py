"""Robot modules: one per robot, the only place a fact about that robot is written.

Each module (:mod:`~sim2online_envs.robots.panda`, :mod:`~sim2online_envs.robots.go1`,
:mod:`~sim2online_envs.robots.racecar`) holds its robot's names and ids, joints and limits, home
pose, gains, workspace or arena, camera, the state and command keys with units and frames, the
default safety-limit numbers and the reset facts. Tasks, simulators (and their MJCF loading),
the step loop's limits, drivers and twins read them; the modules themselves import NumPy and the
standard library only, so a real env builds its task without a simulator.

The tables below are built from the modules, so adding a robot means adding its module to
:data:`ROBOT_MODULES` (plus its task and backends), and registration, ``make_env`` and the demo
find it here::

    from sim2online_envs import robots

    robots.resolve("car")            # -> "racecar"
    robots.get("franka").SIM_ID      # -> "SimPanda-v0"
    robots.SIM_IDS                   # {"panda": "SimPanda-v0", ...}
"""

from __future__ import annotations

from types import ModuleType

from sim2online_envs.robots import go1, panda, racecar
from sim2online_envs.robots.spec import CameraSpec, KeySpec

__all__ = [
    "ALIASES",
    "NAMES",
    "REAL_IDS",
    "ROBOT_MODULES",
    "SIM_IDS",
    "CameraSpec",
    "KeySpec",
    "get",
    "go1",
    "panda",
    "racecar",
    "resolve",
]

#: Robot name -> its module, in the package's usual order.
ROBOT_MODULES: dict[str, ModuleType] = {module.NAME: module for module in (panda, go1, racecar)}
#: The robot names.
NAMES: tuple[str, ...] = tuple(ROBOT_MODULES)
#: Alias -> robot name (the names themselves not included).
ALIASES: dict[str, str] = {
    alias: name for name, module in ROBOT_MODULES.items() for alias in module.ALIASES
}
#: Robot name -> simulator env id, and -> real env id.
SIM_IDS: dict[str, str] = {name: module.SIM_ID for name, module in ROBOT_MODULES.items()}
REAL_IDS: dict[str, str] = {name: module.REAL_ID for name, module in ROBOT_MODULES.items()}


def resolve(name: str) -> str:
    """The robot name for ``name`` or one of its aliases (case-insensitive); a ValueError naming
    the known robots otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"robot must be a string, got {type(name).__name__}")
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in ROBOT_MODULES:
        raise ValueError(f"unknown robot {name!r}; choose one of {sorted(ROBOT_MODULES)}")
    return key


def get(name: str) -> ModuleType:
    """The robot module for ``name`` or an alias."""
    return ROBOT_MODULES[resolve(name)]
