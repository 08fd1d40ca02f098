"""RealBackend's contract, on a trivial robot implemented in the test: a point mass on a rail.

The device integrates its own physics in real time (between calls, from the monotonic clock),
so the backend's clock, watchdog, latched stop and invalid readings are exercised as a driver
would meet them. Time bounds are generous: the machine is shared and noisy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from sim2online_envs.core import FAULT, STAMP, VALID, Batch, Task
from sim2online_envs.env import TaskEnv
from sim2online_envs.hardware.base import (
    FAULT_DRIVER,
    FAULT_STALE,
    FAULT_STOPPED,
    FAULT_WATCHDOG,
    ClockConfig,
    DeviceFaultError,
    Reading,
    RealBackend,
    StaleReadingError,
)

TELEMETRY_KEYS = {"period", "target_period", "lateness", "late_ticks", "latency", "reading_age"}


class PointMass(RealBackend):
    """A 1 kg mass on a frictionless rail, pushed by a force (N); the safe state is a brake.

    ``sensor_alive`` False freezes the sensor (its last sample ages until it is stale);
    ``read_error`` is raised by the next read; ``send_error`` by the next send.
    """

    name = "point mass rail"

    def __init__(
        self,
        control_dt: float = 0.02,
        watchdog_periods: float | None = None,
        miss_tolerance: float | None = None,
    ) -> None:
        super().__init__(
            ClockConfig(
                control_dt=control_dt,
                watchdog_periods=watchdog_periods,
                miss_tolerance=miss_tolerance,
            )
        )
        self._lock = threading.Lock()
        self.position = 0.0
        self.velocity = 0.0
        self.force = 0.0
        self.braked = False
        self._updated = time.monotonic()
        self._sample: tuple[float, float, float] = (self.position, self.velocity, self._updated)
        self.sensor_alive = True
        self.read_error: BaseException | None = None
        self.send_error: BaseException | None = None
        #: perf_counter time and force of each command received.
        self.received: list[tuple[float, float]] = []
        self.stops: list[float] = []
        self.closed_devices = 0

    def _integrate(self) -> None:
        now = time.monotonic()
        dt = now - self._updated
        if self.braked:
            self.velocity = 0.0
        else:
            self.position += self.velocity * dt + 0.5 * self.force * dt * dt
            self.velocity += self.force * dt
        self._updated = now
        if self.sensor_alive:
            self._sample = (self.position, self.velocity, now)

    def send_command(self, command: Mapping[str, np.ndarray]) -> None:
        if self.send_error is not None:
            raise self.send_error
        with self._lock:
            self._integrate()
            self.braked = False
            self.force = float(command["force"])
            self.received.append((time.perf_counter(), self.force))

    def read(self, max_age: float) -> Reading:
        if self.read_error is not None:
            raise self.read_error
        with self._lock:
            self._integrate()
            position, velocity, stamp = self._sample
        if time.monotonic() - stamp > max_age:
            raise StaleReadingError(self.name, f"newest sample is older than {max_age:.3f} s")
        return Reading({"pos": np.array([position, velocity])}, stamp=stamp)

    def stop_devices(self) -> None:
        with self._lock:
            self._integrate()
            self.force = 0.0
            self.braked = True
            self.stops.append(time.perf_counter())

    def prepare_episode(self, options: Mapping[str, Any] | None) -> None:
        with self._lock:
            self._integrate()
            self.position = float((options or {}).get("position", 0.0))
            self.velocity = 0.0
            self._integrate()

    def close_devices(self) -> None:
        self.closed_devices += 1


class PushTask(Task):
    """Bring the mass to the origin: action = force / 2 N, reward = -|position|."""

    robot = "point_mass"
    reward_term_names = ("distance",)

    def __init__(self, control_dt: float) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.control_dt = control_dt
        self.max_episode_steps = 1000

    def initial_task_state(self, state: Batch, rngs: list[np.random.Generator]) -> Batch:
        return {}

    def command(self, action: np.ndarray, state: Batch, task_state: Batch) -> Batch:
        return {"force": 2.0 * action[:, 0]}

    def observe(self, state: Batch, task_state: Batch) -> np.ndarray:
        return state["pos"].copy()

    def reward_terms(
        self, prev_state: Batch, state: Batch, action: np.ndarray, task_state: Batch
    ) -> dict[str, np.ndarray]:
        return {"distance": -np.abs(state["pos"][:, 0])}

    def terminated(self, state: Batch, task_state: Batch) -> np.ndarray:
        return np.zeros(1, dtype=bool)

    def success(self, state: Batch, task_state: Batch) -> np.ndarray:
        return np.abs(state["pos"][:, 0]) < 0.01


def push(force: float) -> Batch:
    return {"force": np.array([force])}


@pytest.fixture
def robot() -> Iterator[PointMass]:
    backend = PointMass()
    yield backend
    backend.close()


def start(backend: RealBackend) -> Batch:
    return backend.reset_worlds(np.zeros(1, dtype=np.int64), [np.random.default_rng(0)])


def wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# -- readings -------------------------------------------------------------------------------------


def test_a_reading_carries_valid_stamp_and_fault_and_the_physics_moves(robot: PointMass) -> None:
    state = start(robot)
    assert state[VALID].tolist() == [True] and state[FAULT].tolist() == [""]
    assert state["pos"].shape == (1, 2) and state[STAMP].shape == (1,)
    for _ in range(5):
        state = robot.apply(push(1.0))
    assert state[VALID][0] and state["pos"][0, 0] > 0.0 and state["pos"][0, 1] > 0.0
    assert state[STAMP][0] <= time.monotonic()
    assert [force for _, force in robot.received] == [1.0] * 5


# -- one clock ------------------------------------------------------------------------------------


def test_apply_returns_after_about_one_period_and_keeps_the_phase() -> None:
    dt = 0.05
    # The policy's (or a learner's) work between steps is inside the control period.
    robot = PointMass(control_dt=dt)
    try:
        start(robot)
        returns = []
        for _ in range(12):
            robot.apply(push(0.0))
            returns.append(time.perf_counter())
            time.sleep(0.4 * dt)
        sends = np.array([stamp for stamp, _ in robot.received])
        # The work is inside the period, not added to it (one clock, phase kept).
        assert 0.9 * dt <= float(np.median(np.diff(sends))) < 1.15 * dt
        # apply returns at the tick after its send.
        assert float(np.median(np.array(returns) - sends)) >= 0.5 * dt
        telemetry = robot.telemetry()
        assert set(telemetry) == TELEMETRY_KEYS
        assert telemetry["target_period"] == dt
        assert telemetry["latency"] >= 0.0 and telemetry["reading_age"] >= 0.0
    finally:
        robot.close()


def test_a_late_command_counts_a_late_tick_and_restarts_the_schedule(robot: PointMass) -> None:
    dt = robot.clock.control_dt
    start(robot)
    first = robot.apply(push(0.0))
    assert first[VALID][0]
    assert np.isnan(robot.telemetry()["period"])
    time.sleep(4 * dt)
    began = time.perf_counter()
    robot.apply(push(0.0))
    took = time.perf_counter() - began
    telemetry = robot.telemetry()
    assert telemetry["late_ticks"] >= 1.0
    assert telemetry["lateness"] >= 2 * dt
    assert telemetry["period"] >= 4 * dt
    # Restarted from the late command: a full period, not a hurried catch-up tick.
    assert took >= 0.8 * dt
    start(robot)
    robot.apply(push(0.0))
    assert robot.telemetry()["late_ticks"] == 0.0  # counted per episode


# -- the latched stop -----------------------------------------------------------------------------


def test_stop_is_idempotent_latched_and_cleared_by_reset(robot: PointMass) -> None:
    start(robot)
    robot.apply(push(1.0))
    robot.stop()
    robot.stop()
    assert robot.stopped and robot.braked and robot.force == 0.0 and len(robot.stops) >= 1
    sent = len(robot.received)
    state = robot.apply(push(1.0))
    assert len(robot.received) == sent  # nothing is sent while stopped
    assert state[VALID].tolist() == [False] and state[FAULT].tolist() == [FAULT_STOPPED]
    assert np.all(np.isfinite(state["pos"]))
    state = start(robot)
    assert not robot.stopped and state[VALID][0]
    robot.apply(push(1.0))
    assert len(robot.received) == sent + 1 and not robot.braked


def test_stop_from_another_thread_while_apply_waits() -> None:
    robot = PointMass(control_dt=0.3)
    try:
        start(robot)
        stop_returned: list[float] = []

        def stop_soon() -> None:
            time.sleep(0.05)
            robot.stop()
            stop_returned.append(time.perf_counter())

        thread = threading.Thread(target=stop_soon)
        thread.start()
        state = robot.apply(push(1.0))
        apply_returned = time.perf_counter()
        thread.join(timeout=10.0)
        # stop() did not wait for the tick: it returned while apply was still waiting.
        assert stop_returned and stop_returned[0] < apply_returned
        assert robot.stops and robot.stops[0] < apply_returned
        assert state[VALID].tolist() == [False] and state[FAULT].tolist() == [FAULT_STOPPED]
        assert robot.braked
    finally:
        robot.close()


def test_the_first_stop_reason_wins_until_reset(robot: PointMass) -> None:
    start(robot)
    robot.stop("operator")
    robot.stop()
    assert robot.apply(push(0.0))[FAULT].tolist() == ["operator"]


# -- the watchdog ---------------------------------------------------------------------------------


def test_the_watchdog_stops_the_robot_without_commands() -> None:
    robot = PointMass(control_dt=0.01, watchdog_periods=3)
    try:
        start(robot)
        robot.apply(push(1.0))
        assert wait_for(lambda: robot.stopped), "the watchdog never called stop()"
        assert robot.braked and robot.stops
        sent = len(robot.received)
        state = robot.apply(push(1.0))
        assert state[FAULT].tolist() == [FAULT_WATCHDOG] and not state[VALID][0]
        assert len(robot.received) == sent
        # After a reset it waits for the episode's first command: the robot rests or holds as
        # the reset left it however long the learner trains, and the first step is valid.
        start(robot)
        stops = len(robot.stops)
        time.sleep(10 * 3 * 0.01)
        assert not robot.stopped and len(robot.stops) == stops
        assert robot.apply(push(0.0))[VALID][0]
        # ... and armed again by that command: after the episode's last one, it stops the robot.
        assert wait_for(lambda: robot.stopped and len(robot.stops) > stops)
    finally:
        robot.close()


def test_the_watchdog_stays_quiet_while_commands_arrive() -> None:
    robot = PointMass(control_dt=0.01, watchdog_periods=50)
    try:
        start(robot)
        for _ in range(20):
            assert robot.apply(push(0.5))[VALID][0]
        assert not robot.stopped and robot.stops == []
    finally:
        robot.close()


# -- failures become invalid readings, never exceptions in the loop ------------------------------


def test_a_stale_reading_is_invalid_and_stops_the_robot(robot: PointMass) -> None:
    start(robot)
    last = robot.apply(push(1.0))
    robot.sensor_alive = False
    time.sleep(3 * robot.clock.control_dt)
    state = robot.apply(push(1.0))
    assert state[VALID].tolist() == [False] and state[FAULT].tolist() == [FAULT_STALE]
    np.testing.assert_array_equal(state["pos"], last["pos"])  # the last valid values
    assert robot.stopped and robot.braked
    assert robot.apply(push(1.0))[FAULT].tolist() == [FAULT_STALE]  # latched


def test_a_hardware_error_is_a_driver_error_reading(robot: PointMass) -> None:
    start(robot)
    robot.apply(push(1.0))
    robot.read_error = DeviceFaultError(robot.name, "encoder checksum streak")
    state = robot.apply(push(1.0))
    assert state[VALID].tolist() == [False] and state[FAULT].tolist() == [FAULT_DRIVER]
    assert robot.stopped and robot.braked


def test_an_invalid_reading_names_its_own_fault(robot: PointMass) -> None:
    start(robot)
    robot.apply(push(1.0))
    original = robot.read

    def lost(max_age: float) -> Reading:
        reading = original(max_age)
        return Reading(reading.state, reading.stamp, valid=False, fault="pose_lost")

    robot.read = lost  # type: ignore[method-assign]
    state = robot.apply(push(1.0))
    assert state[FAULT].tolist() == ["pose_lost"] and robot.stopped


@pytest.mark.parametrize("error", [RuntimeError("driver bug"), KeyboardInterrupt()])
def test_an_exception_in_send_stops_the_device_and_propagates(
    robot: PointMass, error: BaseException
) -> None:
    start(robot)
    robot.apply(push(1.0))
    robot.send_error = error
    with pytest.raises(type(error)):
        robot.apply(push(1.0))
    assert robot.stopped and robot.braked and robot.force == 0.0


def test_close_is_idempotent_and_stops() -> None:
    robot = PointMass(watchdog_periods=5)
    start(robot)
    robot.apply(push(1.0))
    watchdogs = {t for t in threading.enumerate() if t.name == f"{robot.name}-watchdog"}
    robot.close()
    robot.close()
    assert robot.braked and robot.closed_devices == 1
    for thread in watchdogs:
        thread.join(timeout=5.0)
        assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        robot.apply(push(1.0))
    with pytest.raises(RuntimeError, match="closed"):
        start(robot)


def test_clock_config_refuses_bad_numbers() -> None:
    with pytest.raises(ValueError, match="control_dt"):
        ClockConfig(control_dt=float("nan"))
    with pytest.raises(ValueError, match="watchdog_periods"):
        ClockConfig(control_dt=0.01, watchdog_periods=0.0)


# -- a TaskEnv over the robot ---------------------------------------------------------------------


class PointMassEnv(TaskEnv):
    def __init__(self, backend: PointMass) -> None:
        super().__init__(PushTask(backend.clock.control_dt), backend)


@pytest.mark.parametrize("fault", [FAULT_STOPPED, FAULT_STALE, FAULT_DRIVER])
def test_a_task_env_truncates_with_the_fault_and_keeps_the_last_valid_observation(
    robot: PointMass, fault: str
) -> None:
    env = PointMassEnv(robot)
    obs, info = env.reset(seed=0, options={"position": 0.5})
    assert obs[0] == pytest.approx(0.5) and info["safety"]["abort"] is None
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(np.array([-1.0], dtype=np.float32))
        assert not (terminated or truncated)
    assert set(info["timing"]) == TELEMETRY_KEYS
    if fault == FAULT_STOPPED:
        threading.Thread(target=env.stop).start()
        assert wait_for(lambda: robot.stopped)
    elif fault == FAULT_STALE:
        robot.sensor_alive = False
        time.sleep(3 * robot.clock.control_dt)
    else:
        robot.read_error = DeviceFaultError(robot.name, "amplifier fault")
    last = obs.copy()
    obs, reward, terminated, truncated, info = env.step(np.array([-1.0], dtype=np.float32))
    assert truncated and not terminated
    assert info["truncation_reason"] == fault
    assert reward == 0.0 and np.isfinite(reward)
    np.testing.assert_array_equal(obs, last)
    assert robot.braked
    robot.sensor_alive, robot.read_error = True, None
    obs, _ = env.reset(seed=1, options={"position": -0.2})
    _, _, _, truncated, _ = env.step(np.array([1.0], dtype=np.float32))
    assert not truncated and not robot.stopped
    env.close()
    env.close()
    assert robot.closed_devices == 1
