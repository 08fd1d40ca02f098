"""The real race car as a Backend: the firmware over serial, the pose from motion capture.

:class:`RealRaceCarBackend` is a :class:`~sim2online_envs.hardware.base.RealBackend` (its clock,
watchdog and latched stop) over two drivers, :class:`~.serial_link.SerialLink` and
:class:`~.mocap.NatNetMocap`. Its state has the simulator's keys, units and frames
(:data:`sim2online_envs.robots.racecar.STATE_KEYS`): ``pose`` and ``velocity`` from the mocap,
``steering`` and ``throttle`` from what the firmware reports it applies (through the
calibration; the simulator reports its actuators' lagged states, the real car cannot measure
those). Any fault of either driver makes the reading invalid with the driver's fault name, and
the base class stops the car and truncates the episode with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from sim2online_envs.hardware.base import (
    ClockConfig,
    ConnectionTimeoutError,
    HardwareError,
    Reading,
    RealBackend,
)
from sim2online_envs.hardware.racecar.config import Calibration, RaceCarConfig, load_calibration
from sim2online_envs.hardware.racecar.mocap import FAULT_MOCAP_STALE, NatNetMocap
from sim2online_envs.hardware.racecar.serial_link import FAULT_SERIAL_LOST, SerialLink
from sim2online_envs.robots import racecar as robot

__all__ = ["RealRaceCarBackend"]

logger = logging.getLogger(__name__)


class RealRaceCarBackend(RealBackend):
    """The car (or its twin): serial commands out, mocap pose in, on the backend's clock.

    :param config: connection settings (:class:`RaceCarConfig`).
    :param control_dt: the task's control period, s.
    :param twin: a started :class:`~.twin.RaceCarTwin` the backend owns (closes) and asks to
        place the car at each reset, as the operator does on the real car; None on hardware.
    :param calibration: overrides ``config.calibration``'s file.
    """

    name = "race car"

    def __init__(
        self,
        config: RaceCarConfig,
        control_dt: float = robot.CONTROL_DT,
        twin: Any = None,
        calibration: Calibration | None = None,
    ):
        super().__init__(
            ClockConfig(control_dt=control_dt, watchdog_periods=config.watchdog_periods)
        )
        self.config = config
        self.calibration = calibration or load_calibration(config.calibration or None)
        self.twin = twin
        self.serial = SerialLink(config, self.calibration)
        self.mocap = NatNetMocap(config, self.calibration)
        self._last_reading: Reading | None = None
        try:
            self.serial.connect(config.connect_timeout)
            self.mocap.connect(config.connect_timeout)
        except BaseException:
            self.close()
            raise

    # -- RealBackend ----------------------------------------------------------------------------

    def send_command(self, command: Mapping[str, np.ndarray]) -> None:
        self.serial.send(command)

    def read(self, max_age: float) -> Reading:
        """Mocap pose and velocity with the firmware's applied steering and throttle."""
        link = self.serial.sample()
        if not link.valid:
            return Reading({}, time.monotonic(), valid=False, fault=link.fault)
        pose = self.mocap.sample()
        if not pose.valid:
            return Reading({}, time.monotonic(), valid=False, fault=pose.fault)
        if pose.age() > max(max_age, self.config.mocap_max_age):
            return Reading({}, time.monotonic(), valid=False, fault=FAULT_MOCAP_STALE)
        state = {**pose.state, **link.state}
        if not all(np.isfinite(np.asarray(value, dtype=float)).all() for value in state.values()):
            return Reading({}, time.monotonic(), valid=False, fault="reading_not_finite")
        reading = Reading(state, pose.stamp, extra={**pose.extra, **link.extra})
        self._last_reading = reading
        return reading

    def stop_devices(self) -> None:
        self.serial.stop()

    def prepare_episode(self, options: Mapping[str, Any] | None) -> None:
        """Link healthy (reconnect a lost port), failsafe configured, car placed, pose tracked."""
        options = dict(options or {})
        unknown = sorted(set(options) - {"start_pose"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; known: ['start_pose']")
        self.serial.stop()
        self._ensure_serial()
        if self.twin is not None:
            self.twin.place(options.get("start_pose"))
        elif "start_pose" in options:
            logger.warning("%s: start_pose is for the twin; place the real car by hand", self.name)
        self.mocap.reset_filter()
        deadline = time.monotonic() + self.config.connect_timeout
        # A fresh velocity window: wait for it to fill with poses of the car at rest.
        time.sleep(self.config.velocity_window / self.config.mocap_rate)
        while True:
            reading = self.mocap.sample()
            if reading.valid:
                break
            if time.monotonic() > deadline:
                raise HardwareError(self.mocap.name, f"not ready for an episode: {reading.fault}")
            time.sleep(0.01)
        self.serial.begin_episode()

    def _ensure_serial(self) -> None:
        status = self.serial.ping()
        if status is None or self.serial.fault() == FAULT_SERIAL_LOST:
            for attempt in range(1, self.config.reconnect_attempts + 1):
                logger.warning("%s: reconnecting (attempt %d)", self.serial.name, attempt)
                self.serial.close()
                try:
                    self.serial.connect(self.config.connect_timeout)
                except ConnectionTimeoutError as error:
                    logger.error("%s", error)
                    continue
                status = self.serial.status
                break
            else:
                raise HardwareError(
                    self.serial.name,
                    f"the firmware does not answer after {self.config.reconnect_attempts} "
                    "reconnects; check the cable and the board's power",
                )
        if status is not None and (
            not status.configured or status.timeout_ms != self.config.failsafe_timeout_ms
        ):
            # The board rebooted since the connect and lost its settings: connect again.
            logger.warning("%s: the firmware was reset; configuring it again", self.serial.name)
            self.serial.close()
            self.serial.connect(self.config.connect_timeout)

    def home(self) -> None:
        """The car's rest state: throttle neutral (driving back is the reset wrapper's job)."""
        self.serial.stop()

    def telemetry(self) -> dict[str, float]:
        telemetry = super().telemetry()
        reading = self._last_reading
        if reading is not None:
            telemetry["mocap_latency"] = float(reading.extra.get("latency", float("nan")))
        return telemetry

    def privileged(self) -> dict[str, np.ndarray]:
        """The twin's ground truth (pose, velocity, speed); nothing on the real car."""
        if self.twin is None:
            return {}
        truth = self.twin.state()
        return {
            "pose": np.array([truth["pose"]]),
            "velocity": np.array([truth["velocity"]]),
            "speed": np.array([truth["speed"]]),
        }

    def render_world(
        self, world: int, task_state: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray | None:
        """A top-down picture from the last valid pose (the simulator's drawing)."""
        del world
        if self._last_reading is None:
            return None
        from sim2online_envs.sim.racecar import CarParams, draw_topdown

        state = self._last_reading.state
        goal = None if task_state is None else task_state.get("goal")
        return draw_topdown(
            pose=np.asarray(state["pose"]),
            steering=float(state["steering"]),
            params=CarParams(),
            arena_half_size=robot.ARENA_HALF_SIZE,
            goal=None if goal is None else np.asarray(goal),
        )

    def close_devices(self) -> None:
        for closer in (self.serial.close, self.mocap.close):
            try:
                closer()
            except Exception:
                logger.exception("%s: closing a device failed", self.name)
        if self.twin is not None:
            self.twin.close()
