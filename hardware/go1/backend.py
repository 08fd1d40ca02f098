"""The Go1 as a :class:`~sim2online_envs.hardware.base.RealBackend`: one driver, one clock.

The backend owns the 50 Hz control clock (send the joint targets, wait for the tick, read the
newest state); the driver's thread keeps the 500 Hz link to the robot and its safety monitor.
The state has exactly the keys, shapes, units, frames and dtypes of the simulator's
(:data:`sim2online_envs.robots.go1.STATE_KEYS`), so the same task computes observation, reward
and episode end from it. A driver fault becomes an invalid reading whose ``fault`` names it
(``udp_timeout``, ``joint_limit``, ...), which truncates the episode with that reason. A fall
is the exception: the fallen state reaches the task once, valid, and the task terminates the
episode as it does in simulation (one MDP); the driver is damping by then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from sim2online_envs.hardware.base import ClockConfig, HardwareError, Reading, RealBackend
from sim2online_envs.hardware.go1.config import Go1Config
from sim2online_envs.hardware.go1.driver import Go1Driver
from sim2online_envs.robots.go1 import CONTROL_DT, STATE_KEYS

#: The driver's fault when the trunk tips past the task's fall tilt (a true end of the task).
FALL = "fall"

logger = logging.getLogger(__name__)

__all__ = ["Go1RealBackend"]


class Go1RealBackend(RealBackend):
    """The real Go1 (or its twin: pass ``twin``, which the backend then closes).

    :param config: connection and safety settings (``fall_up_z`` and ``soft_limit_factor``
        are the task's, passed in by the env).
    :param control_dt: the task's control period [s].
    :param soft_lower: (12,) the task's soft joint limits [rad] (default from the config).
    :param soft_upper: (12,) the upper ones.
    :param twin: a :class:`~sim2online_envs.hardware.go1.twin.Go1Twin` the driver talks to.
    :param stand_on_reset: stand up at every reset (the automatic reset); otherwise the reset
        checks the robot already stands (the operator stood it up).
    """

    kind: ClassVar[str] = "real"

    def __init__(
        self,
        config: Go1Config,
        control_dt: float = CONTROL_DT,
        soft_lower: np.ndarray | None = None,
        soft_upper: np.ndarray | None = None,
        twin: Any = None,
        stand_on_reset: bool = True,
    ):
        self.config = config
        self.name = f"Go1 at {config.address}"
        self.twin = twin
        self.stand_on_reset = bool(stand_on_reset)
        self._read_tick: int | None = None  # the controller tick of the LowState last read
        # a twin slower than real time slows the clock with it, so the MDP stays the same
        # no busy-wait before the tick: a spinning main thread holds the GIL from the SDK thread
        self._fall_delivered = False
        super().__init__(ClockConfig(control_dt=control_dt / config.time_scale, spin=0.0))
        self.driver = Go1Driver(config, soft_lower, soft_upper)
        try:
            self.driver.connect(config.connect_timeout)
        except BaseException:
            self.close()
            raise

    # -- RealBackend's device side -------------------------------------------------------------

    def send_command(self, command: Mapping[str, np.ndarray]) -> None:
        self.driver.send(command)

    def read(self, max_age: float) -> Reading:
        reading = self.driver.latest(max_age)
        self._read_tick = (reading.extra or {}).get("tick")
        if not reading.valid and reading.fault == FALL and not self._fall_delivered:
            # A fall is a true end of the task, as in simulation: the fallen state is measured
            # and finite, so it is delivered once as a valid reading and the task terminates
            # the episode (its own tilt test); the driver is already damping, and later
            # readings carry the fault.
            self._fall_delivered = True
            return Reading(reading.state, reading.stamp, extra=reading.extra)
        return reading

    def stop_devices(self) -> None:
        self.driver.stop()

    def close_devices(self) -> None:
        self.driver.close()
        if self.twin is not None:
            self.twin.close()

    def prepare_episode(self, options: Mapping[str, Any] | None) -> None:
        """Clear the last episode's fault (logged), check the link, stand up (or check the
        robot stands); errors name what is wrong."""
        options = dict(options or {})
        self._fall_delivered = False
        twin_reset = options.pop("twin_reset", self.twin is not None)
        stand = options.pop("stand_up", self.stand_on_reset)
        if options:
            raise ValueError(
                f"unknown Go1 reset options {sorted(options)}; known: 'stand_up', 'twin_reset'"
            )
        if self.twin is not None and twin_reset:
            self.twin.set_faults(reset=True)
            self.twin.reset()  # the operator puts the robot back on its feet
        # a fresh reading proves the link before anything moves
        self.driver.wait_fresh(self.config.connect_timeout)
        previous = self.driver.clear_fault()
        if previous:
            logger.info("%s: the last episode ended with %s", self.name, previous)
        if stand:
            self.driver.stand_up(wait=True)
        else:
            self._check_standing()

    def _check_standing(self) -> None:
        reading = self.driver.latest(4 * self.config.state_timeout / self.config.time_scale)
        if not reading.valid:
            raise HardwareError(self.name, f"cannot start an episode: {reading.fault}")
        quat = reading.state["base_quat"]
        up_z = 1.0 - 2.0 * (quat[1] ** 2 + quat[2] ** 2)
        if up_z < self.config.fall_up_z:
            raise HardwareError(
                self.name, f"the robot is not upright (up z {up_z:.2f}): stand it up"
            )

    # -- the Backend contract's extras ---------------------------------------------------------

    def home(self) -> None:
        """Stand up: interpolate from the current pose to home, then hold it."""
        self.driver.stand_up(wait=True)

    def stand_up(self) -> None:
        """The automatic reset (``robots.go1.AUTO_RESET_HOOK``)."""
        self.driver.stand_up(wait=True)

    def lie_down(self) -> None:
        """Interpolate to the lie-down pose, then damping."""
        self.driver.lie_down(wait=True)

    def telemetry(self) -> dict[str, float]:
        timing = super().telemetry()
        timing.update(self.driver.timing())
        return timing

    def privileged(self) -> dict[str, np.ndarray]:
        """The twin's ground truth (batched) of the state last read (the LowState it came in),
        or nothing on the robot."""
        if self.twin is None:
            return {}
        truth = self.twin.ground_truth(self._read_tick)
        return {key: np.asarray(value)[None] for key, value in truth.items()}

    @staticmethod
    def state_keys() -> tuple[str, ...]:
        return tuple(STATE_KEYS)
