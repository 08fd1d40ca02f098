"""The serial link to the car's firmware (pyserial): commands out, status frames in.

:class:`SerialLink` is the race car's actuator :class:`~sim2online_envs.hardware.base.Driver`.
A reader thread reads the port with a short timeout, splits COBS frames and keeps the newest
:class:`~sim2online_envs.hardware.racecar.protocol.Status`; :meth:`send` writes one command frame
(with a sequence number) and returns; :meth:`stop` writes a stop frame (throttle neutral,
steering held) from any thread. The firmware's own failsafe is the second line: it stops the car
when our frames stop arriving.

Faults, by name (:meth:`sample`):

* ``serial_lost``: no valid status frame for ``status_timeout`` s, or the port failed (unplugged,
  closed);
* ``firmware_reboot``: the firmware booted since the episode began (its uptime went back);
* ``firmware_failsafe``: the firmware stopped the car on its command timeout;
* ``serial_bad_frames``: the firmware stopped on a streak of bad frames (garbage, bad CRCs), or
  the frames from the car fail their checks ``bad_frame_limit`` times in a row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from sim2online_envs.hardware.base import ConnectionTimeoutError, HardwareError, Reading
from sim2online_envs.hardware.racecar import protocol
from sim2online_envs.hardware.racecar.config import Calibration, RaceCarConfig
from sim2online_envs.hardware.racecar.protocol import FailsafeReason, Status

__all__ = [
    "FAULT_BAD_FRAMES",
    "FAULT_FAILSAFE",
    "FAULT_REBOOT",
    "FAULT_SERIAL_LOST",
    "SerialLink",
]

logger = logging.getLogger(__name__)

FAULT_SERIAL_LOST = "serial_lost"
FAULT_REBOOT = "firmware_reboot"
FAULT_FAILSAFE = "firmware_failsafe"
FAULT_BAD_FRAMES = "serial_bad_frames"
#: The firmware's failsafe reasons as fault names (while commands are being sent).
_REASON_FAULTS = {
    FailsafeReason.TIMEOUT: FAULT_FAILSAFE,
    FailsafeReason.BAD_FRAMES: FAULT_BAD_FRAMES,
    FailsafeReason.BOOT: FAULT_REBOOT,
}


def _after(seq: int, first: int) -> bool:
    """Whether 16-bit sequence number ``seq`` is ``first`` or later (modulo 2^16)."""
    return ((seq - first) & 0xFFFF) < 0x8000


class SerialLink:
    """The firmware over a serial port (a :class:`Driver`)."""

    def __init__(self, config: RaceCarConfig, calibration: Calibration):
        self.config = config
        self.calibration = calibration
        self.name = f"race car serial {config.port}"
        self._serial: Any = None
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        self._frames = protocol.FrameReader()
        self._status: Status | None = None
        self._status_time: float | None = None
        self._port_error = ""
        self._bad_streak = 0
        self._boots = 0
        self._seq = 0
        self._episode_seq: int | None = None
        self._episode_boots = 0
        self._latched = ""
        self._last_steer_us = protocol.NEUTRAL_US
        self.statuses = 0

    # -- connection -------------------------------------------------------------------------------

    def connect(self, timeout: float) -> None:
        """Open the port, set the failsafe, wait for the firmware's answer (bounded)."""
        import serial

        deadline = time.monotonic() + timeout
        try:
            self._serial = serial.Serial(
                self.config.port, self.config.baud, timeout=0.01, write_timeout=0.05
            )
        except (serial.SerialException, OSError) as error:
            raise ConnectionTimeoutError(self.name, f"cannot open the port: {error}") from None
        self._closing.clear()
        self._port_error = ""
        self._reader = threading.Thread(target=self._read_loop, name="racecar-serial", daemon=True)
        self._reader.start()
        seq = self._next_seq()
        config = protocol.Config(seq, self.config.failsafe_timeout_ms, self.config.bad_frame_limit)
        while True:
            self._write(config.encode())
            status = self._wait_status(seq, min(0.2, max(0.0, deadline - time.monotonic())))
            if (
                status is not None
                and status.configured
                and status.timeout_ms == self.config.failsafe_timeout_ms
            ):
                logger.info(
                    "%s: firmware %s answers (failsafe %s, %s)",
                    self.name,
                    ".".join(map(str, status.version)),
                    status.failsafe,
                    status.reason.name,
                )
                return
            if time.monotonic() >= deadline:
                detail = (
                    self._port_error
                    or "no status frame (is the firmware flashed and the baud rate right?)"
                )
                self.close()
                raise ConnectionTimeoutError(
                    self.name, f"the firmware did not answer within {timeout:.1f} s: {detail}"
                )

    def _wait_status(self, seq: int, timeout: float) -> Status | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._state_lock:
                status = self._status
            if status is not None and _after(status.seq, seq):
                return status
            time.sleep(0.002)
        return None

    def _read_loop(self) -> None:
        import serial

        port = self._serial
        while not self._closing.is_set():
            try:
                # One byte (waiting up to the port timeout), then whatever else has arrived:
                # read(n) would wait for n bytes, up to the whole timeout.
                data = port.read(1)
                if data and port.in_waiting:
                    data += port.read(port.in_waiting)
            except (serial.SerialException, OSError, TypeError, AttributeError) as error:
                if not self._closing.is_set():
                    with self._state_lock:
                        self._port_error = f"read failed: {error}"
                    logger.error("%s: %s", self.name, error)
                return
            if not data:
                continue
            bad_before = self._frames.bad_frames
            payloads = self._frames.feed(data)
            now = time.monotonic()
            with self._state_lock:
                if self._frames.bad_frames > bad_before:
                    self._bad_streak += self._frames.bad_frames - bad_before
                for payload in payloads:
                    try:
                        status = Status.decode(payload)
                    except protocol.FrameError:
                        self._bad_streak += 1
                        continue
                    self._bad_streak = 0
                    previous = self._status
                    if previous is not None and status.uptime_ms < previous.uptime_ms:
                        self._boots += 1
                        logger.warning("%s: the firmware rebooted", self.name)
                    self._status = status
                    self._status_time = now
                    self.statuses += 1
                    first = self._episode_seq
                    if (
                        not self._latched
                        and first is not None
                        and status.failsafe
                        and status.reason != FailsafeReason.HOST_STOP
                        and _after(status.seq, first)
                    ):
                        # Latched: the next armed command would clear the firmware's failsafe,
                        # and the episode must still end on it.
                        self._latched = _REASON_FAULTS.get(status.reason, FAULT_FAILSAFE)
                        logger.warning(
                            "%s: firmware failsafe (%s)", self.name, status.reason.name.lower()
                        )

    # -- commands ---------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _write(self, data: bytes) -> None:
        """Write one frame; a failed write is remembered as a port error (never raised)."""
        import serial

        port = self._serial
        if port is None:
            return
        with self._write_lock:
            try:
                port.write(data)
            except (serial.SerialException, serial.SerialTimeoutException, OSError) as error:
                with self._state_lock:
                    self._port_error = self._port_error or f"write failed: {error}"

    def begin_episode(self) -> None:
        """Mark the episode's start: faults from now on count (reboots, failsafes)."""
        with self._state_lock:
            self._episode_seq = None
            self._episode_boots = self._boots
            self._bad_streak = 0
            self._latched = ""

    def send(self, command: Mapping[str, np.ndarray]) -> None:
        """One armed command: steering (rad) and throttle (duty) as pulse widths."""
        steer_us = self.calibration.steering_pulse(float(np.asarray(command["steering"])))
        throttle_us = self.calibration.throttle_pulse(float(np.asarray(command["throttle"])))
        seq = self._next_seq()
        with self._state_lock:
            if self._episode_seq is None:
                self._episode_seq = seq
        self._last_steer_us = steer_us
        self._write(protocol.Command(seq, steer_us, throttle_us, arm=True).encode())

    def ping(self, timeout: float = 0.3) -> Status | None:
        """A ping and its answer (None if none came in ``timeout`` s)."""
        seq = self._next_seq()
        self._write(protocol.Ping(seq).encode())
        return self._wait_status(seq, timeout)

    def stop(self) -> None:
        """Throttle neutral, steering held: a stop frame now (fast, idempotent, any thread)."""
        steer = min(max(self._last_steer_us, protocol.PULSE_MIN_US), protocol.PULSE_MAX_US)
        self._write(
            protocol.Command(self._next_seq(), steer, protocol.NEUTRAL_US, arm=False).encode()
        )

    # -- readings ---------------------------------------------------------------------------------

    @property
    def status(self) -> Status | None:
        with self._state_lock:
            return self._status

    def fault(self, now: float | None = None) -> str:
        """The link's fault name now ("" when healthy)."""
        now = time.monotonic() if now is None else now
        with self._state_lock:
            if self._port_error or self._serial is None:
                return FAULT_SERIAL_LOST
            if self._status_time is None or now - self._status_time > self.config.status_timeout:
                return FAULT_SERIAL_LOST
            if self._boots > self._episode_boots:
                return FAULT_REBOOT
            if self._bad_streak >= self.config.bad_frame_limit:
                return FAULT_BAD_FRAMES
            return self._latched

    def sample(self) -> Reading:
        """What the firmware applies, as the task's ``steering`` and ``throttle``; or a fault."""
        now = time.monotonic()
        fault = self.fault(now)
        with self._state_lock:
            status, stamp = self._status, self._status_time
        if status is None:
            return Reading({}, now, valid=False, fault=fault or FAULT_SERIAL_LOST)
        state = {
            "steering": np.float64(self.calibration.steering_angle(status.steer_us)),
            "throttle": np.float64(self.calibration.throttle_duty(status.throttle_us)),
        }
        extra = {"supply_mv": status.supply_mv, "firmware_failsafe": status.failsafe}
        return Reading(state, stamp or now, valid=not fault, fault=fault, extra=extra)

    def latest(self, max_age: float) -> Reading:
        reading = self.sample()
        if not reading.valid:
            raise HardwareError(self.name, reading.fault)
        return reading

    def close(self) -> None:
        """Stop frame, then close the port (idempotent)."""
        port = self._serial
        if port is None:
            return
        self.stop()
        self._closing.set()
        if self._reader is not None:
            self._reader.join(timeout=1.0)
            self._reader = None
        try:
            port.close()
        except OSError as error:
            logger.warning("%s: close failed: %s", self.name, error)
        self._serial = None
