"""``RealGo1-v0``: the Go1 joystick task on the real robot (or on its twin on loopback).

Same task object and config as ``SimGo1-v0`` (:meth:`Go1Env.build_task`), same spaces, same
50 Hz control period, same reward terms and episode ends; only the backend differs.

```python
import gymnasium as gym
import sim2online_envs

env = gym.make("RealGo1-v0", robot_ip="192.168.123.10")    # the robot
env = gym.make("RealGo1-v0", hardware="twin")              # the driver against its twin
```

Connection settings (:class:`~sim2online_envs.hardware.go1.config.Go1Config` fields) are
keyword arguments, with defaults from ``SIM2ONLINE_GO1_*`` environment variables or the
``[go1]`` table of ``~/.config/sim2online/hardware.toml``. Each reset stands the robot up
(``stand_on_reset=False``: it only checks the robot stands; ``reset(options={"stand_up":
False})`` per episode). Faults of the link or the robot (``udp_timeout``, ``packet_loss``,
``crc_error``, ``udp_reordered``, ``udp_delay``, ``fall``, ``joint_limit``, ``remote_estop``)
put the motors in damping and truncate the episode with that ``truncation_reason``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Any

from sim2online_envs.env import TaskEnv
from sim2online_envs.envs.go1 import Go1Env
from sim2online_envs.hardware.go1.backend import Go1RealBackend
from sim2online_envs.hardware.go1.config import resolve_config
from sim2online_envs.tasks.go1 import Go1TaskConfig

__all__ = ["HARDWARE", "RealGo1Env", "build_backend"]

HARDWARE = ("real", "twin")


def build_backend(
    task: Any, hardware: str = "real", stand_on_reset: bool = True, **settings: Any
) -> Go1RealBackend:
    """The Go1 backend for ``task``: the robot, or a twin on loopback the driver talks to."""
    if hardware not in HARDWARE:
        raise ValueError(f"hardware must be one of {HARDWARE}, got {hardware!r}")
    config = resolve_config(settings)
    # the safety monitor trips where the task's own limits are
    config = dataclasses.replace(
        config,
        fall_up_z=task.config.fall_up_z,
        soft_limit_factor=task.config.soft_joint_limit_factor,
    )
    twin = None
    if hardware == "twin":
        from sim2online_envs.hardware.go1.twin import Go1Twin

        ip = config.robot_ip if ipaddress.ip_address(config.robot_ip).is_loopback else "127.0.0.1"
        port = settings.get("robot_port", 0)
        config = dataclasses.replace(config, robot_ip=ip, robot_port=port, local_port=0)
        twin = Go1Twin(config)
        config = dataclasses.replace(config, robot_port=twin.port)
    try:
        return Go1RealBackend(
            config,
            control_dt=task.control_dt,
            soft_lower=task.soft_lower,
            soft_upper=task.soft_upper,
            twin=twin,
            stand_on_reset=stand_on_reset,
        )
    except BaseException:
        if twin is not None:
            twin.close()
        raise


class RealGo1Env(TaskEnv):
    """The Unitree Go1 tracking a joystick velocity command at 50 Hz, on hardware.

    See :class:`~sim2online_envs.envs.go1.Go1Env` for spaces, rewards and episode ends (the
    same task) and this module's docstring for the settings.

    :param hardware: "real" (the robot) or "twin" (the driver against a MuJoCo twin on
        loopback, with another floor friction and heavier links than the simulator's).
    :param command_range: as ``SimGo1-v0``.
    :param obs_noise: as ``SimGo1-v0``.
    :param task_config: as ``SimGo1-v0``.
    :param stand_on_reset: stand the robot up at every reset.
    :param render_mode: None (the robot has no renderer here).
    :param safety: as ``SimGo1-v0``.
    :param settings: connection and safety settings (Go1Config fields).
    """

    limits_class = Go1Env.limits_class

    def __init__(
        self,
        hardware: str = "real",
        *,
        command_range: str | tuple[float, float, float] | None = None,
        obs_noise: bool | None = None,
        task_config: Go1TaskConfig | Mapping[str, Any] | None = None,
        stand_on_reset: bool = True,
        render_mode: str | None = None,
        safety: Any = None,
        **settings: Any,
    ):
        task = Go1Env.build_task(
            command_range=command_range, obs_noise=obs_noise, task_config=task_config
        )
        backend = build_backend(task, hardware, stand_on_reset=stand_on_reset, **settings)
        self.hardware = hardware
        try:
            super().__init__(task, backend, render_mode=render_mode, safety=safety)
        except BaseException:
            backend.close()
            raise

    @property
    def twin(self) -> Any:
        """The twin (``hardware="twin"``), else None."""
        return self.backend.twin
