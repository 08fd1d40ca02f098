"""The Panda facts the hardware half reads, from the robot module (never written here)."""

from __future__ import annotations

from sim2online_envs.robots.panda import (
    CAMERA,
    HOME_QPOS,
    HOME_TIP_POS,
    MAX_GRIPPER_OPENING,
    STATE_KEYS,
    TIP_DOWN_ROTATION,
)

__all__ = [
    "CAMERA",
    "HOME_QPOS",
    "HOME_TIP_POS",
    "MAX_GRIPPER_OPENING",
    "STATE_KEYS",
    "TIP_DOWN_ROTATION",
]
