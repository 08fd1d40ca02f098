"""The Go1 driver: unitree_legged_sdk's low-level UDP loop in a background thread.

The loop exchanges one LowCmd and one LowState per SDK period (500 Hz by default, the rate of
Unitree's low-level examples: each motor driver runs its own PD loop between commands, so
500 Hz gives the stand-up and lie-down interpolations ten steps per 50 Hz policy period while
one Python thread costs a few percent of a core; 1 kHz buys nothing the 50 Hz policy can use).
Each tick: send the command, wait for the answer until the next tick is due (its round trip
is measured), update the state estimate, run the safety monitor, compose the next command.

Every motor gets ``q = target, dq = 0, Kp, Kd, tau = 0`` with the robot module's gains (the
twin and the simulator use the same ones); the SDK's own ``Safety`` clamps the targets to its
position limits and applies its power protection before every send.

Modes: ``damping`` (Kp = 0, Kd = ``damping_kd``: the safe state, where the loop starts and where
every fault puts it), ``position`` (the policy's targets), ``stand_up`` and ``lie_down``
(smooth interpolations from the current pose, then holding home, or damping on the floor).

The safety monitor latches the first fault, switches to damping at once (from this thread, not
at the next policy tick) and names it: ``udp_timeout`` (no LowState for ``state_timeout``),
``packet_loss``, ``crc_error``, ``udp_reordered``, ``udp_delay``, ``fall``, ``joint_limit``,
``remote_estop``, ``sdk_error``. Until :meth:`Go1Driver.clear_fault`, :meth:`Go1Driver.latest`
returns invalid readings with that name.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from sim2online_envs.hardware.base import (
    ConnectionTimeoutError,
    HardwareError,
    Reading,
    StaleReadingError,
)
from sim2online_envs.hardware.go1.config import Go1Config
from sim2online_envs.hardware.go1.estimator import VelocityFilter, kinematic_state, quat_to_rot
from sim2online_envs.hardware.go1.protocol import LOWLEVEL
from sim2online_envs.robots.go1 import (
    HOME_JOINT_POS,
    JOINT_LOWER,
    JOINT_UPPER,
    KD,
    KP,
    NUM_JOINTS,
)

logger = logging.getLogger(__name__)

__all__ = ["FAULTS", "Go1Driver"]

#: Every fault name the driver reports.
FAULTS = (
    "udp_timeout", "packet_loss", "crc_error", "udp_reordered", "udp_delay", "fall",
    "joint_limit", "remote_estop", "sdk_error",
)  # fmt: skip

DAMPING, POSITION, STAND_UP, LIE_DOWN = "damping", "position", "stand_up", "lie_down"
#: How fast the robot-clock offset's floor may rise [s/s] (clock drift, a slow twin), so that
#: only a sudden delay trips ``udp_delay``.
_OFFSET_DRIFT = 0.005
#: Consecutive late LowStates that make ``udp_delay``.
_DELAY_STREAK = 10
#: Motor mode "servo" of the Go1's motors.
_SERVO = 0x0A
#: Wireless remote: L2 (byte 2, bit 5) with B (byte 3, bit 1) is the e-stop chord, as on
#: Unitree's own controller (its damping chord).
_REMOTE_L2 = (2, 0x20)
_REMOTE_B = (3, 0x02)


def _load_sdk() -> Any:
    try:
        from unitree_legged_sdk import robot_interface
    except ImportError as error:  # the SDK is an optional dependency
        raise ImportError(
            "the Go1 driver needs unitree_legged_sdk: pip install --no-deps "
            "unitree-legged-sdk==3.8.20231105 (scripts/setup.sh does)"
        ) from error
    return robot_interface


class _Window:
    """Counts of events over the last ``size`` ticks (a ring of small ints)."""

    def __init__(self, size: int):
        self.ring = np.zeros(size, dtype=np.int8)
        self.index = 0
        self.total = 0
        self.filled = 0

    def push(self, value: int) -> None:
        self.total += value - int(self.ring[self.index])
        self.ring[self.index] = value
        self.index = (self.index + 1) % len(self.ring)
        self.filled = min(self.filled + 1, len(self.ring))


class Go1Driver:
    """One Go1 over low-level UDP (see the module docstring).

    :param config: connection and safety settings.
    :param soft_lower: (12,) joint angles [rad] below which ``joint_limit`` trips (default:
        the joint limits shrunk by ``config.soft_limit_factor`` about their middles).
    :param soft_upper: (12,) the upper ones.
    """

    def __init__(
        self,
        config: Go1Config,
        soft_lower: np.ndarray | None = None,
        soft_upper: np.ndarray | None = None,
    ):
        self.config = config
        self.name = f"Go1 at {config.address}"
        middle = 0.5 * (JOINT_LOWER + JOINT_UPPER)
        half = 0.5 * (JOINT_UPPER - JOINT_LOWER) * config.soft_limit_factor
        self.soft_lower = middle - half if soft_lower is None else np.asarray(soft_lower, float)
        self.soft_upper = middle + half if soft_upper is None else np.asarray(soft_upper, float)
        self.period = config.sdk_dt / config.time_scale
        self._lock = threading.Lock()
        self._mode = DAMPING
        self._fault = ""
        self._target = HOME_JOINT_POS.copy()
        self._ramp: tuple[np.ndarray, np.ndarray, float, float, str] | None = None
        self._reading: Reading | None = None
        self._filter = VelocityFilter(config.accel_noise, config.leg_velocity_noise)
        self._running = False
        self._thread: threading.Thread | None = None
        self._udp: Any = None
        self._connected = threading.Event()
        window = config.loss_window
        self._missing = _Window(window)
        self._crc = _Window(window)
        self._reordered = _Window(window)
        self._last_valid = math.nan
        self._last_tick: int | None = None
        self._offset_floor: float | None = None
        self._offset_time = 0.0
        self._delay_streak = 0
        self._q = HOME_JOINT_POS.copy()
        self._rtt: collections.deque[float] = collections.deque(maxlen=20000)
        self._periods: collections.deque[float] = collections.deque(maxlen=20000)
        self.counts = {"ticks": 0, "states": 0, "missing": 0, "crc": 0, "reordered": 0, "late": 0}
        self.battery: float = math.nan

    # -- life cycle ----------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Open the SDK's UDP link, start the loop (in damping) and wait for the first
        LowState; raise ConnectionTimeoutError naming the address if none comes in time."""
        timeout = self.config.connect_timeout if timeout is None else timeout
        if self._thread is None:
            sdk = _load_sdk()
            cfg = self.config
            self._sdk = sdk
            self._udp = sdk.UDP(LOWLEVEL, cfg.local_port, cfg.robot_ip, cfg.robot_port)
            self._safety = sdk.Safety(sdk.LeggedType.Go1)
            self._cmd = sdk.LowCmd()
            self._state = sdk.LowState()
            self._udp.InitCmdData(self._cmd)
            self._running = True
            self._thread = threading.Thread(target=self._run, name="go1-sdk", daemon=True)
            self._thread.start()
        if not self._connected.wait(timeout):
            self.close()
            raise ConnectionTimeoutError(
                self.name,
                f"no LowState within {timeout:.1f} s (is the robot on, in low-level mode, and "
                f"this PC on 192.168.123.x?)",
            )

    def close(self) -> None:
        """Damping, then stop the loop and release the link (idempotent)."""
        self.stop()
        thread, self._thread = self._thread, None
        if thread is not None:
            time.sleep(5 * self.period)  # a few damping commands reach the robot
            self._running = False
            thread.join(timeout=1.0)
        self._udp = None

    # -- commands ------------------------------------------------------------------------------

    def send(self, command: Mapping[str, np.ndarray]) -> None:
        """Track ``command["joint_targets"]`` (12,) [rad] from the next tick (non-blocking);
        ignored while a fault is latched or the robot is stopped."""
        targets = np.clip(
            np.asarray(command["joint_targets"], dtype=np.float64).reshape(NUM_JOINTS),
            JOINT_LOWER,
            JOINT_UPPER,
        )
        if not np.all(np.isfinite(targets)):
            self.trip("sdk_error", "non-finite joint targets")
            return
        with self._lock:
            if self._fault or self._mode == DAMPING:
                return
            self._target = targets
            self._mode = POSITION
            self._ramp = None

    def stop(self) -> None:
        """Damping now (fast, idempotent, thread-safe): the next tick sends Kp = 0."""
        with self._lock:
            self._mode = DAMPING
            self._ramp = None

    def stand_up(self, wait: bool = True) -> None:
        """Interpolate from the current pose to home (``stand_duration`` for a lying robot,
        less when closer), then hold home; ``wait`` blocks until done (bounded)."""
        self._start_ramp(HOME_JOINT_POS, STAND_UP, wait)

    def lie_down(self, wait: bool = True) -> None:
        """Interpolate to the lie-down pose, then damping."""
        self._start_ramp(np.tile(self.config.lie_down_pose, 4), LIE_DOWN, wait)

    def _start_ramp(self, goal: np.ndarray, mode: str, wait: bool) -> None:
        with self._lock:
            if self._fault:
                raise HardwareError(self.name, f"cannot {mode.replace('_', ' ')}: {self._fault}")
            start = self._q.copy()
            distance = float(np.max(np.abs(goal - start)))
            duration = self.config.stand_duration * min(1.0, max(0.1, distance))
            self._ramp = (
                start,
                goal.copy(),
                time.monotonic(),
                duration / self.config.time_scale,
                mode,
            )
            self._mode = mode
        if wait:
            deadline = time.monotonic() + duration / self.config.time_scale + 1.0
            while time.monotonic() < deadline:
                with self._lock:
                    done, fault = self._ramp is None, self._fault
                if fault:
                    raise HardwareError(self.name, f"{mode.replace('_', ' ')} aborted: {fault}")
                if done:
                    return
                time.sleep(0.01)
            raise HardwareError(self.name, f"{mode.replace('_', ' ')} did not finish in time")

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def fault(self) -> str:
        return self._fault

    def trip(self, fault: str, detail: str = "") -> None:
        """Latch ``fault`` (the first wins) and switch to damping."""
        with self._lock:
            first = not self._fault
            if first:
                self._fault = fault
            self._mode = DAMPING
            self._ramp = None
        if first:
            logger.warning("%s: %s%s; damping", self.name, fault, f" ({detail})" if detail else "")

    def clear_fault(self) -> str:
        """Clear the latched fault (logged) and the monitor's counts; returns the fault."""
        with self._lock:
            fault, self._fault = self._fault, ""
            for window in (self._missing, self._crc, self._reordered):
                window.ring[:] = 0
                window.total = window.filled = 0
            self._offset_floor = None
            self._delay_streak = 0
        if fault:
            logger.warning("%s: clearing the fault %r for a new episode", self.name, fault)
        return fault

    # -- readings ------------------------------------------------------------------------------

    def latest(self, max_age: float) -> Reading:
        """The newest state; invalid with the fault's name while one is latched, or with
        ``udp_timeout`` (latched, damping) when older than ``max_age`` wall-clock seconds;
        raises StaleReadingError only before the first LowState."""
        with self._lock:
            reading, fault = self._reading, self._fault
        if reading is None:
            raise StaleReadingError(self.name, f"no LowState yet{f' ({fault})' if fault else ''}")
        if not fault and reading.age() > max_age:
            self.trip("udp_timeout", f"newest LowState is {reading.age() * 1e3:.0f} ms old")
            fault = self._fault
        if fault:
            return Reading(reading.state, reading.stamp, valid=False, fault=fault)
        return reading

    def wait_fresh(self, timeout: float) -> Reading:
        """Wait (bounded) for a LowState that arrives after this call, fault or not; raise
        ConnectionTimeoutError naming the address when none comes within ``timeout`` s."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            with self._lock:
                reading = self._reading
            if reading is not None and reading.stamp > start:
                return reading
            if time.monotonic() >= deadline:
                raise ConnectionTimeoutError(
                    self.name,
                    f"no fresh LowState within {timeout:.1f} s: the robot stopped answering",
                )
            time.sleep(0.005)

    def timing(self) -> dict[str, float]:
        """Loop statistics: SDK period mean/std/max, round trip median/99th percentile [s]."""
        periods = np.array(self._periods)
        rtt = np.array(self._rtt)
        stats = {f"sdk_{key}": float(value) for key, value in self.counts.items()}
        if len(periods):
            stats.update(
                sdk_period_mean=float(periods.mean()),
                sdk_period_std=float(periods.std()),
                sdk_period_max=float(periods.max()),
            )
        if len(rtt):
            stats.update(rtt_median=float(np.median(rtt)), rtt_p99=float(np.percentile(rtt, 99)))
        return stats

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.perf_counter()
        previous = math.nan
        try:
            while self._running:
                now = time.perf_counter()
                if not math.isnan(previous):
                    self._periods.append(now - previous)
                previous = now
                next_tick += self.period
                self._tick(next_tick)
                now = time.perf_counter()
                if now - next_tick > self.period:
                    self.counts["late"] += 1
                    next_tick = now
                remaining = next_tick - time.perf_counter()
                if remaining > 0:
                    time.sleep(remaining)
        except Exception as error:
            logger.exception("%s: the SDK loop failed", self.name)
            self.trip("sdk_error", repr(error))

    def _tick(self, deadline: float) -> None:
        """Send this tick's LowCmd, then wait for its answer until the next tick is due."""
        udp = self._udp
        self._compose()
        udp.SetSend(self._cmd)
        udp.Send()
        sent = time.perf_counter()
        self.counts["ticks"] += 1
        # a late tick still waits half a period: a late thread is not a lost answer
        deadline = max(deadline, sent + 0.5 * self.period)
        got = False
        crc = 0
        while True:
            result = udp.Recv()
            if result == 0:
                got = True
                break
            if result == -3:
                crc += 1
            if time.perf_counter() >= deadline:
                break
            time.sleep(0.0001)
        arrival = time.perf_counter()
        self._crc.push(crc)
        self.counts["crc"] += crc
        reordered = 0
        if got:
            self._rtt.append(arrival - sent)
            udp.GetRecv(self._state)
            reordered = int(not self._accept(time.monotonic()))
        self._missing.push(int(not got))
        self.counts["missing"] += int(not got)
        self._reordered.push(reordered)
        self.counts["reordered"] += reordered
        self._monitor(time.monotonic())

    def _accept(self, stamp: float) -> bool:
        """Take the LowState just received; False if it is older than one already used."""
        state, cfg = self._state, self.config
        tick = int(state.tick)
        if self._last_tick is not None and tick < self._last_tick:
            return False
        dt = 0.0 if self._last_tick is None else (tick - self._last_tick) / 1000.0
        self._last_tick = tick
        # the robot's clock against ours: a sudden rise of the offset is a delayed link
        offset = stamp * cfg.time_scale - tick / 1000.0
        if self._offset_floor is None or offset < self._offset_floor:
            self._offset_floor = offset
        else:
            self._offset_floor = min(
                offset, self._offset_floor + _OFFSET_DRIFT * (stamp - self._offset_time)
            )
        self._offset_time = stamp
        delay = offset - self._offset_floor
        motors = state.motorState
        q = np.array([motors[j].q for j in range(NUM_JOINTS)])
        dq = np.array([motors[j].dq for j in range(NUM_JOINTS)])
        tau = np.array([motors[j].tauEst for j in range(NUM_JOINTS)])
        imu = state.imu
        quat = np.array(imu.quaternion, dtype=np.float64)
        gyro = np.array(imu.gyroscope, dtype=np.float64)
        accel = np.array(imu.accelerometer, dtype=np.float64)
        force = np.array(state.footForce, dtype=np.float64)
        remote = state.wirelessRemote
        values = (q, dq, tau, quat, gyro, accel)
        if not all(np.all(np.isfinite(v)) for v in values) or np.linalg.norm(quat) < 0.5:
            self.trip("sdk_error", "non-finite or invalid LowState")
            return True
        rot = quat_to_rot(quat)
        contact = force > cfg.contact_force
        feet, feet_rel_vel, height = kinematic_state(q, dq, rot, gyro)
        if 0.0 < dt < 0.1:
            velocity = self._filter.step(dt, rot, accel, feet_rel_vel, contact)
        else:
            velocity = self._filter.v
        foot_pos = feet + np.array([0.0, 0.0, height])
        foot_vel = feet_rel_vel + velocity
        reading_state = {
            "joint_pos": q,
            "joint_vel": dq,
            "torque": tau,
            "base_quat": quat / np.linalg.norm(quat),
            "base_rot": rot,
            "gyro": gyro,
            "local_linvel": rot.T @ velocity,
            "accelerometer": accel,
            "foot_pos": foot_pos,
            "foot_vel": foot_vel,
            "foot_contact": contact,
            "trunk_contact": np.array(height < cfg.trunk_contact_height),
        }
        extra = {
            "tick": tick,
            "foot_force": force,
            "battery": float(state.bms.SOC),
            "delay": delay,
            "remote_estop": bool(
                remote[_REMOTE_L2[0]] & _REMOTE_L2[1] and remote[_REMOTE_B[0]] & _REMOTE_B[1]
            ),
        }
        with self._lock:
            self._q = q
            self._reading = Reading(reading_state, stamp, extra=extra)
            self._last_valid = stamp
        self.battery = extra["battery"]
        self.counts["states"] += 1
        if not self._connected.is_set():
            self._filter.reset()
            self._connected.set()
        self._check_state(reading_state, extra)
        return True

    def _check_state(self, state: Mapping[str, np.ndarray], extra: Mapping[str, Any]) -> None:
        cfg = self.config
        if cfg.remote_estop and extra["remote_estop"]:
            self.trip("remote_estop", "L2+B on the wireless remote")
        # one late LowState is this PC's scheduler (the thread ran late); a link that delays
        # keeps doing so
        self._delay_streak = self._delay_streak + 1 if extra["delay"] > cfg.max_delay else 0
        if self._delay_streak >= _DELAY_STREAK:
            self.trip("udp_delay", f"LowStates {extra['delay'] * 1e3:.0f} ms late")
        if self._mode == DAMPING:
            return
        quat = state["base_quat"]
        up_z = 1.0 - 2.0 * (quat[1] ** 2 + quat[2] ** 2)
        if up_z < cfg.fall_up_z:
            self.trip("fall", f"trunk up axis at z = {up_z:.2f}")
        q = state["joint_pos"]
        beyond = np.flatnonzero((q < self.soft_lower) | (q > self.soft_upper))
        if len(beyond):
            self.trip(
                "joint_limit", f"joints {beyond.tolist()} at {q[beyond].round(3).tolist()} rad"
            )

    def _monitor(self, now: float) -> None:
        cfg = self.config
        if not self._connected.is_set():
            return
        if now - self._last_valid > cfg.state_timeout / cfg.time_scale:
            self.trip("udp_timeout", f"no LowState for {(now - self._last_valid) * 1e3:.0f} ms")
        window = self._missing
        if window.filled >= len(window.ring) and window.total > cfg.max_packet_loss * window.filled:
            self.trip("packet_loss", f"{window.total} of {window.filled} LowStates missing")
        if self._crc.total > cfg.max_crc_errors:
            self.trip("crc_error", f"{self._crc.total} LowStates with a bad checksum")
        if self._reordered.total > cfg.max_reordered:
            self.trip("udp_reordered", f"{self._reordered.total} LowStates out of order")

    def _compose(self) -> None:
        """The LowCmd of this tick from the mode (under the lock), through the SDK's Safety."""
        with self._lock:
            mode, q_now = self._mode, self._q
            if mode in (STAND_UP, LIE_DOWN) and self._ramp is not None:
                start, goal, began, duration, _ = self._ramp
                s = min(1.0, (time.monotonic() - began) / duration)
                s = s * s * (3.0 - 2.0 * s)  # smoothstep: no jerk at either end
                target = start + s * (goal - start)
                if s >= 1.0:
                    self._ramp = None
                    if mode == STAND_UP:
                        self._mode, self._target = POSITION, goal.copy()
                    else:
                        self._mode = DAMPING
            else:
                target = self._target
        motors = self._cmd.motorCmd
        damping = mode == DAMPING
        kp = 0.0 if damping else KP
        kd = self.config.damping_kd if damping else KD
        for j in range(NUM_JOINTS):
            motor = motors[j]
            motor.mode = _SERVO
            motor.q = float(q_now[j] if damping else target[j])
            motor.dq = 0.0
            motor.Kp = kp
            motor.Kd = kd
            motor.tau = 0.0
        self._cmd.motorCmd = motors
        self._safety.PositionLimit(self._cmd)
        self._safety.PowerProtect(self._cmd, self._state, self.config.power_level)
