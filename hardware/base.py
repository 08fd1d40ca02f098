"""The hardware half of the Backend contract: one clock, drivers with timeouts, named errors.

A real robot is a :class:`RealBackend` (one world) made of one or more drivers. The backend owns
the control clock, so there is exactly one in the whole stack::

    apply(command):  send now ──► wait for the end of the control period ──► read ──► state
                     (non-blocking)  (fixed rate, phase kept)                (latest, max age)

Every state it returns carries the reserved keys ``valid``, ``stamp`` and ``fault``
(:data:`sim2online_envs.core.READING_KEYS`). A stale or failed reading is never raised into the
step loop: it is a reading with ``valid=False`` and a fault name, so the loop truncates the
episode with that reason before the task computes anything from it. The robot is put in its safe
state (:meth:`RealBackend.stop`) first.

``stop()`` is fast, idempotent and callable from any thread (the command watchdog's and
Ctrl-C's target). It latches: until the next :meth:`reset_worlds`, :meth:`apply` sends nothing
and returns an invalid reading (``fault="stopped"``). A command watchdog, owned by the backend,
calls ``stop()`` when no command has arrived for ``watchdog_periods`` control periods after
one did: inside an episode, and after its last command (the robot may still be moving while the
learner trains or the operator resets the scene). A reset disarms it: the robot rests or holds
as the reset left it until the next episode's first command arms it again.

Telemetry of the clock is in :meth:`RealBackend.telemetry` (``info["timing"]`` in the env):

==================== ==========================================================================
key                  meaning
==================== ==========================================================================
``period``           seconds between this command and the previous one (NaN on the first)
``target_period``    the control period
``lateness``         seconds the command came after the end of its control period (0 when on
                     time: the policy's work after a reading is inside the period)
``late_ticks``       ticks in this episode whose command came later than ``miss_tolerance``
``latency``          seconds from sending the command to the reading's timestamp
``reading_age``      seconds from the reading's timestamp to its return
==================== ==========================================================================
"""

from __future__ import annotations

import abc
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from sim2online_envs.core import FAULT, STAMP, VALID, Backend, Batch

logger = logging.getLogger(__name__)

#: Fault names that :class:`RealBackend` itself reports (drivers add their own).
FAULT_STOPPED = "stopped"
FAULT_WATCHDOG = "watchdog_timeout"
FAULT_STALE = "stale_reading"
FAULT_DRIVER = "driver_error"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class HardwareError(RuntimeError):
    """A hardware failure, with the device it happened on in the message."""

    def __init__(self, device: str, message: str):
        super().__init__(f"{device}: {message}")
        self.device = device
        self.detail = message


class ConnectionTimeoutError(HardwareError, TimeoutError):
    """A device did not answer within the connection timeout."""


class StaleReadingError(HardwareError):
    """The latest reading is older than allowed (or none has arrived yet)."""


class DeviceFaultError(HardwareError):
    """The device reported an error of its own (a reflex, a failsafe, a bad checksum streak)."""


# --------------------------------------------------------------------------------------------
# Readings and drivers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One timestamped measurement from a driver.

    ``state`` holds unbatched arrays (the backend adds the batch axis). ``stamp`` is
    ``time.monotonic()`` at the moment the measurement was taken (or received, when the device
    has no clock of its own). An invalid reading names why in ``fault``.
    """

    state: Mapping[str, np.ndarray]
    stamp: float
    valid: bool = True
    fault: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def age(self, now: float | None = None) -> float:
        """Seconds since the measurement (``time.monotonic`` clock)."""
        return (time.monotonic() if now is None else now) - self.stamp


@runtime_checkable
class Driver(Protocol):
    """What a backend needs of one device (arm, camera, serial link, motion capture, ...).

    Every method returns within a bounded time: ``connect`` raises
    :class:`ConnectionTimeoutError` naming the device after ``timeout`` seconds, ``latest``
    never waits for data, ``stop`` never blocks on the device.
    """

    #: The device in words, used in every error ("race car serial /dev/ttyACM0").
    name: str

    def connect(self, timeout: float) -> None:
        """Open the link and check the device answers; raise ConnectionTimeoutError if not."""

    def send(self, command: Mapping[str, np.ndarray]) -> None:
        """Queue a command for the device and return at once."""

    def latest(self, max_age: float) -> Reading:
        """The newest reading; raise StaleReadingError if it is older than ``max_age`` s."""

    def stop(self) -> None:
        """Put the device in its safe state now (fast, idempotent, thread-safe)."""

    def close(self) -> None:
        """Safe state, then release the link (idempotent)."""


def wait_until(deadline: float, spin: float = 0.002) -> None:
    """Sleep until ``time.perf_counter()`` reaches ``deadline``: a coarse sleep, then a spin.

    ``time.sleep`` alone overshoots by up to a millisecond or more; spinning for the last
    ``spin`` seconds holds the tick to tens of microseconds.
    """
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        if remaining > spin:
            time.sleep(remaining - spin)


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockConfig:
    """Timing of a real backend's control loop.

    Attributes:
        control_dt: The control period in seconds (the task's).
        max_reading_age: A reading older than this at the tick is stale (default: 2 periods).
        miss_tolerance: Lateness that counts as a late tick (default: a tenth of the period).
        watchdog_periods: Control periods without a command before the watchdog calls
            ``stop()``; None turns the watchdog off (never on a robot that can move).
        spin: Seconds before each tick spent busy-waiting instead of sleeping.
    """

    control_dt: float
    max_reading_age: float | None = None
    miss_tolerance: float | None = None
    watchdog_periods: float | None = 5.0
    spin: float = 0.002

    def __post_init__(self) -> None:
        if not (math.isfinite(self.control_dt) and self.control_dt > 0):
            raise ValueError(f"control_dt must be a positive number, got {self.control_dt!r}")
        for name in ("max_reading_age", "miss_tolerance", "watchdog_periods"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")

    @property
    def reading_age_limit(self) -> float:
        return self.max_reading_age if self.max_reading_age is not None else 2 * self.control_dt

    @property
    def late_tolerance(self) -> float:
        return self.miss_tolerance if self.miss_tolerance is not None else 0.1 * self.control_dt


class RealBackend(Backend):
    """One real robot (or its twin): owns the clock, the watchdog and the safe stop.

    Subclasses implement the device side: :meth:`send_command` (non-blocking), :meth:`read`
    (the newest :class:`Reading`, never waiting), :meth:`stop_devices` (fast, idempotent),
    and optionally :meth:`prepare_episode` (checks and moves before an episode: clear nothing
    silently), :meth:`home` and :meth:`close_devices`.

    ``reset_worlds`` and ``apply`` follow the simulators' signatures with one world; the
    generators are unused (hardware draws no randomisation) and the options go to
    :meth:`prepare_episode`.
    """

    kind: ClassVar[str] = "real"
    #: Device name used in errors and logs.
    name: str = "robot"

    def __init__(self, clock: ClockConfig):
        self.num_worlds = 1
        self.clock = clock
        # Re-entrant: a Ctrl-C handler may call stop() while this thread is inside stop().
        self._stop_lock = threading.RLock()
        self._stopped = threading.Event()
        self._stop_reason = FAULT_STOPPED
        self._closed = False
        self._next_tick: float | None = None
        self._last_send: float | None = None
        self._late_ticks = 0
        self._telemetry: dict[str, float] = {}
        self._last_state: Batch | None = None
        self._watchdog: _Watchdog | None = None
        if clock.watchdog_periods is not None:
            self._watchdog = _Watchdog(
                clock.watchdog_periods * clock.control_dt,
                _weak_call(self._watchdog_stop),
                name=f"{self.name}-watchdog",
            )

    # -- the device side, for subclasses ---------------------------------------------------------

    @abc.abstractmethod
    def send_command(self, command: Mapping[str, np.ndarray]) -> None:
        """Send an unbatched command (SI units, after the limits) and return at once."""

    @abc.abstractmethod
    def read(self, max_age: float) -> Reading:
        """The newest reading of every device combined; raise StaleReadingError if too old."""

    @abc.abstractmethod
    def stop_devices(self) -> None:
        """Command the safe state on every device (fast, idempotent, thread-safe)."""

    def prepare_episode(self, options: Mapping[str, Any] | None) -> None:
        """Before an episode: check the devices are ready (errors named, none cleared silently).

        Default: nothing. ``options`` are the env's reset options.
        """
        del options

    def close_devices(self) -> None:
        """Release every device after :meth:`stop_devices` (idempotent)."""

    # -- the Backend contract --------------------------------------------------------------------

    def reset_worlds(
        self,
        ids: np.ndarray,
        rngs: list[np.random.Generator],
        options: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Start an episode: prepare the devices, clear the stop latch, read the first state."""
        del rngs
        ids = np.asarray(ids, dtype=np.int64)
        if ids.tolist() not in ([0], []):
            raise ValueError(f"a real robot is one world (id 0), got ids {ids.tolist()}")
        self._check_open()
        if self._watchdog is not None:
            self._watchdog.disarm()
        self.prepare_episode(options)
        self._stopped.clear()
        self._stop_reason = FAULT_STOPPED
        self._late_ticks = 0
        self._next_tick = None
        self._last_send = None
        self._telemetry = {}
        # The watchdog stays disarmed until the episode's first command: the robot rests or holds
        # as prepare_episode left it (car idle, Go1 standing, arm at home) for as long as the
        # learner trains before that command; stopping it there (the Go1: damping) would spoil
        # the episode before it starts.
        return self._read_state(time.monotonic())

    def apply(self, command: Batch) -> Batch:
        """Send now, wait for the tick, read: one control period on the robot."""
        self._check_open()
        watchdog = self._watchdog  # close() from another thread may clear the attribute
        if watchdog is not None:
            watchdog.disarm()
        try:
            return self._apply(command)
        except BaseException:
            # Ctrl-C, a driver bug, anything: the robot is not left moving.
            self.stop()
            raise
        finally:
            if watchdog is not None and not self._closed:
                watchdog.arm()

    def _apply(self, command: Batch) -> Batch:
        config = self.clock
        period = config.control_dt
        now = time.perf_counter()
        if self._next_tick is None:
            self._next_tick = now + period
        # The command belongs to the period that ends at the next tick: the policy's work since
        # the last reading is inside the period. It is late only if it comes after that tick.
        lateness = max(0.0, now - self._next_tick)
        if lateness > config.late_tolerance:
            # Restart the schedule from this command: two quick commands would be worse for
            # the robot than one late one.
            self._late_ticks += 1
            self._next_tick = now + period
        if not self._stopped.is_set():
            self.send_command({key: np.asarray(value)[0] for key, value in command.items()})
            if self._stopped.is_set():
                # stop() came from another thread while the command went out: the safe
                # state must be the last thing the device got (the first reason is kept).
                self.stop()
        send, send_stamp = time.perf_counter(), time.monotonic()
        previous, self._last_send = self._last_send, send
        wait_until(self._next_tick, config.spin)
        self._next_tick += period
        state = self._read_state(send_stamp)
        self._telemetry.update(
            period=float("nan") if previous is None else send - previous,
            target_period=period,
            lateness=lateness,
            late_ticks=float(self._late_ticks),
        )
        return state

    def _read_state(self, send_stamp: float) -> Batch:
        """The reading as a batch-1 state; any failure becomes an invalid reading."""
        if self._stopped.is_set():
            return self._invalid(self._stop_reason)
        try:
            reading = self.read(self.clock.reading_age_limit)
        except StaleReadingError as error:
            logger.warning("%s", error)
            self.stop(FAULT_STALE)
            return self._invalid(FAULT_STALE)
        except HardwareError as error:
            logger.error("%s", error)
            self.stop(FAULT_DRIVER)
            return self._invalid(FAULT_DRIVER)
        if not reading.valid:
            fault = reading.fault or FAULT_DRIVER
            logger.warning("%s: invalid reading (%s); stopping", self.name, fault)
            self.stop(fault)
            return self._invalid(fault)
        self._telemetry.update(
            latency=reading.stamp - send_stamp, reading_age=time.monotonic() - reading.stamp
        )
        state: Batch = {key: np.asarray(value)[None] for key, value in reading.state.items()}
        state[VALID] = np.ones(1, dtype=bool)
        state[STAMP] = np.array([reading.stamp], dtype=np.float64)
        state[FAULT] = np.array([""])
        self._last_state = state
        return state

    def _invalid(self, fault: str) -> Batch:
        """An invalid reading: the last valid state's values (finite) flagged with ``fault``."""
        if self._last_state is None:
            raise StaleReadingError(self.name, f"no valid reading yet ({fault})")
        state = dict(self._last_state)
        state[VALID] = np.zeros(1, dtype=bool)
        state[STAMP] = np.array([time.monotonic()], dtype=np.float64)
        state[FAULT] = np.array([fault])
        return state

    def stop(self, reason: str = FAULT_STOPPED) -> None:
        """Safe state now; latch until the next reset (fast, idempotent, any thread).

        ``reason`` becomes the fault of every reading until the reset (the first one wins).
        """
        with self._stop_lock:
            if not self._stopped.is_set():
                self._stop_reason = reason
            self._stopped.set()
            try:
                self.stop_devices()
            except Exception:
                logger.exception("%s: stop failed; the robot may still be moving", self.name)

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called since the last reset."""
        return self._stopped.is_set()

    def telemetry(self) -> dict[str, float]:
        return dict(self._telemetry)

    def _watchdog_stop(self) -> None:
        logger.warning(
            "%s: no command for %.3f s; stopping the robot",
            self.name,
            (self.clock.watchdog_periods or 0.0) * self.clock.control_dt,
        )
        self.stop(FAULT_WATCHDOG)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.name}: this backend is closed")

    def close(self) -> None:
        """Stop the robot, end the watchdog, release the devices (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None
        self.stop()
        try:
            self.close_devices()
        except Exception:
            logger.exception("%s: closing the devices failed", self.name)

    def __del__(self) -> None:
        watchdog = self.__dict__.get("_watchdog")
        if watchdog is not None:
            watchdog.close()


# --------------------------------------------------------------------------------------------
# Watchdog
# --------------------------------------------------------------------------------------------


class _Watchdog:
    """Calls ``on_timeout`` from a background thread when :meth:`arm` is not renewed in time.

    The hook runs at most once per arming and outside the lock; :meth:`disarm` waits until a
    running hook has returned (no command overtakes a stop).
    """

    def __init__(self, timeout: float, on_timeout: Callable[[], None], name: str):
        self.timeout = float(timeout)
        self._on_timeout = on_timeout
        self._condition = threading.Condition()
        self._deadline: float | None = None
        self._running = False
        self._closed = False
        self.fire_count = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def arm(self) -> None:
        with self._condition:
            self._deadline = time.monotonic() + self.timeout
            self._condition.notify_all()

    def disarm(self, wait: float = 10.0) -> None:
        with self._condition:
            self._deadline = None
            self._condition.notify_all()
            if threading.current_thread() is not self._thread and not self._condition.wait_for(
                lambda: not self._running, timeout=wait
            ):
                raise TimeoutError(
                    f"the safe-stop hook has not returned after {wait} s; no command is sent"
                )

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._deadline = None
            self._condition.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._closed:
                    if self._deadline is None:
                        self._condition.wait()
                        continue
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._condition.wait(timeout=remaining)
                if self._closed:
                    return
                self._deadline = None
                self.fire_count += 1
                self._running = True
            try:
                self._on_timeout()
            except Exception:
                logger.exception("watchdog stop hook failed; the robot may still be moving")
            finally:
                with self._condition:
                    self._running = False
                    self._condition.notify_all()


def _weak_call(method: Callable[[], None]) -> Callable[[], None]:
    """Call the bound ``method`` while its object lives (the thread must not keep it alive)."""
    reference = weakref.WeakMethod(method)

    def call() -> None:
        bound = reference()
        if bound is not None:
            bound()

    return call
