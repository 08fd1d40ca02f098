"""``RealPanda-v0``: the pick-cube task of ``SimPanda-v0`` on a real Franka arm (or its twin).

Same task object and config as the simulator env (:class:`sim2online_envs.envs.panda.PandaEnv`
builds it): the same observation (64x64 grayscale + tip + opening), action, control period,
reward terms and episode ends. Only the backend differs: :class:`RealPandaBackend` over the
arm/hand driver, the D455 and the cube's ArUco markers.

``hardware="twin"`` starts the twin (:mod:`.twin`: franky-sim on loopback, the scene and a
software RealSense) and points the same drivers at it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from sim2online_envs.env import TaskEnv
from sim2online_envs.hardware.panda.arm import make_arm
from sim2online_envs.hardware.panda.backend import RealPandaBackend
from sim2online_envs.hardware.panda.calibration import load_calibration
from sim2online_envs.hardware.panda.camera import RealSenseCamera
from sim2online_envs.hardware.panda.config import resolve_config
from sim2online_envs.safety import PandaLimits, SafetyConfig

logger = logging.getLogger(__name__)

__all__ = ["HARDWARE", "RealPandaEnv"]

HARDWARE = ("real", "twin")


class RealPandaEnv(TaskEnv):
    """Pick a cube with a real Franka arm from 64x64 grayscale images (``RealPanda-v0``).

    Arguments: ``hardware`` ("real" or "twin"), the connection settings of
    :class:`~sim2online_envs.hardware.panda.config.PandaHardwareConfig` (``robot_ip``,
    ``driver`` = "franky" | "panda_py", ``camera_serial``, ``calibration``, ...; defaults from
    ``SIM2ONLINE_PANDA_*`` variables or the TOML file), and the task's ``control_dt``,
    ``image_size``, ``max_episode_steps``, ``task_config`` as in ``SimPanda-v0``.

    ``info["timing"]``-style telemetry is in ``env.unwrapped.backend.telemetry()`` (with the
    camera frame's and the marker pose's ages); the text of the last fault (libfranka's) is
    ``env.unwrapped.backend.fault_detail()``. After a fault, ``reset()`` refuses until
    ``env.unwrapped.backend.recover()`` has cleared the arm's error.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}
    limits_class = PandaLimits

    def __init__(
        self,
        hardware: str = "real",
        control_dt: float | None = None,
        image_size: int | None = None,
        max_episode_steps: int | None = None,
        task_config: Mapping[str, Any] | Any = None,
        render_mode: str | None = None,
        watchdog_periods: float | None = 5.0,
        safety: SafetyConfig | Mapping[str, Any] | None = None,
        **settings: Any,
    ):
        from sim2online_envs.envs.panda import PandaEnv

        if hardware not in HARDWARE:
            raise ValueError(f"hardware must be one of {HARDWARE}, got {hardware!r}")
        task = PandaEnv.build_task(control_dt, image_size, max_episode_steps, task_config)
        config = resolve_config(**settings)
        self.twin = None
        if hardware == "twin":
            from sim2online_envs.hardware.panda.twin import PandaTwin

            self.twin = PandaTwin(config)
            config = self.twin.start()
        try:
            calibration = load_calibration(config.calibration_path)
            arm = make_arm(config, realtime=hardware == "real")
            camera = RealSenseCamera(
                config.camera_serial,
                config.camera_width,
                config.camera_height,
                config.camera_fps,
                device=None if self.twin is None else self.twin.camera.device,
            )
            arm.connect(config.connect_timeout)
            camera.connect(config.connect_timeout)
            backend = RealPandaBackend(
                config,
                arm,
                camera,
                calibration,
                task.control_dt,
                task.config.image_size,
                observer=None if self.twin is None else self.twin.scene.follow,
                watchdog_periods=watchdog_periods,
            )
        except BaseException:
            if self.twin is not None:
                self.twin.close()
            raise
        self.hardware = hardware
        self.hardware_config = config
        super().__init__(task, backend, render_mode=render_mode, safety=safety)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        options = dict(options or {})
        if self.twin is not None:
            if seed is not None:
                self.twin.rng = np.random.default_rng(seed)
            options["twin_reset"] = self.twin.reset_scene
        return super().reset(seed=seed, options=options)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.twin is not None:
                self.twin.close()
                self.twin = None

    def with_settings(self) -> dict[str, Any]:
        """The resolved connection settings (for logs and provenance)."""
        return dataclasses.asdict(self.hardware_config)
