"""``RealRaceCar-v0``: the parking task of ``SimRaceCar-v0`` on the real car, or on its twin."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from sim2online_envs.env import TaskEnv
from sim2online_envs.envs.racecar import RaceCarEnv
from sim2online_envs.hardware.racecar.backend import RealRaceCarBackend
from sim2online_envs.hardware.racecar.config import resolve_config
from sim2online_envs.safety import RaceCarLimits, SafetyConfig
from sim2online_envs.tasks.racecar import RaceCarTaskConfig

__all__ = ["HARDWARE", "RealRaceCarEnv"]

#: Values of ``hardware=``.
HARDWARE = ("real", "twin")


class RealRaceCarEnv(TaskEnv):
    """Park the real RC car at a goal: ``SimRaceCar-v0``'s task, spaces and rewards.

    The car's firmware takes steering and throttle over a serial port; its pose comes from
    OptiTrack motion capture (NatNet). Episodes truncate with ``info["truncation_reason"]`` =
    the fault's name when a device fails (``serial_lost``, ``firmware_reboot``,
    ``firmware_failsafe``, ``serial_bad_frames``, ``mocap_stale``, ``body_lost``,
    ``mocap_late``), after the car was stopped.

    :param hardware: "real" (the car) or "twin" (the firmware in simavr and a simulated car
        streaming NatNet on loopback; the same driver code).
    :param render_mode: None or "rgb_array" (top-down, from the measured pose).
    :param safety: the step loop's limits and action handling (``SafetyConfig`` or a dict).
    :param control_dt: seconds per step (default: the task's 1/60).
    :param task_config: ``RaceCarTaskConfig`` or a dict of overrides (as ``SimRaceCar-v0``).
    :param seed: seeds the twin's random starts (twin only).
    :param settings: connection settings, :class:`~.config.RaceCarConfig` fields (``port=``,
        ``baud=``, ``mocap_host=``, ``rigid_body=``, ``calibration=``, ...); the rest come
        from ``SIM2ONLINE_RACECAR_*`` variables, the TOML file, the defaults.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 60}
    limits_class = RaceCarLimits

    def __init__(
        self,
        hardware: str = "real",
        render_mode: str | None = None,
        safety: SafetyConfig | Mapping[str, Any] | None = None,
        control_dt: float | None = None,
        task_config: RaceCarTaskConfig | Mapping[str, Any] | None = None,
        seed: int | None = None,
        **settings: Any,
    ):
        if hardware not in HARDWARE:
            raise ValueError(f"hardware must be one of {HARDWARE}, got {hardware!r}")
        task = RaceCarEnv.build_task(control_dt=control_dt, task_config=task_config)
        config = resolve_config(settings)
        twin = None
        if hardware == "twin":
            from sim2online_envs.hardware.racecar.twin import RaceCarTwin

            twin = RaceCarTwin(config, seed=seed)
            config = dataclasses.replace(
                config,
                port=twin.port,
                mocap_host="127.0.0.1",
                mocap_local="127.0.0.1",
                mocap_command_port=twin.natnet_port,
            )
        self.config = config
        backend = RealRaceCarBackend(config, task.control_dt, twin=twin)
        super().__init__(task, backend, render_mode=render_mode, safety=safety)

    @property
    def twin(self) -> Any:
        """The twin (``hardware="twin"``), for fault injection and ground truth; else None."""
        return self.backend.twin

    def render(self) -> Any:
        if self.render_mode != "rgb_array":
            return None
        task_state = None
        if self.loop.task_state is not None:
            task_state = {key: value[0] for key, value in self.loop.task_state.items()}
        return self.backend.render_world(0, task_state)
