"""Connection settings of the real race car (and its twin), and the car's calibration file.

:class:`RaceCarConfig` is resolved per field as keyword arguments > environment variables
``SIM2ONLINE_RACECAR_<FIELD>`` > the ``[racecar]`` table of a TOML file (``SIM2ONLINE_CONFIG``,
else ``~/.config/sim2online/hardware.toml``) > the defaults. Unknown keys, wherever they come
from, fail naming the known ones.

:class:`Calibration` (a separate TOML file, ``calibration=`` path; the defaults without one) is
what was measured on the car and in the arena: where the arena frame lies in the motion-capture
frame, where the centre of mass and the forward axis lie in the rigid body, and how pulse widths
map to steering angle and throttle. docs/hardware/racecar.md says how to measure each.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib

from sim2online_envs.hardware.settings import env_prefix, resolve_settings
from sim2online_envs.robots import racecar as robot

__all__ = ["ENV_PREFIX", "Calibration", "RaceCarConfig", "load_calibration", "resolve_config"]

ENV_PREFIX = env_prefix("racecar")
_TABLE = "racecar"
MOCAP_SYSTEMS = ("natnet",)


@dataclasses.dataclass(frozen=True)
class RaceCarConfig:
    """Settings of the serial link, the motion capture and the twin.

    Serial link to the firmware:

    :param port: the microcontroller's serial device (Uno: /dev/ttyACM0, Nano: /dev/ttyUSB0).
    :param baud: the firmware's baud rate (its ``BAUD``).
    :param connect_timeout: seconds to open the port and get a status frame, and to get the
        first mocap frame, before a :class:`ConnectionTimeoutError` naming the device.
    :param status_timeout: seconds without a valid status frame before ``serial_lost`` (the
        firmware answers every command and sends a heartbeat every 100 ms).
    :param failsafe_timeout_ms: the firmware's command timeout, sent at connect (20-5000).
    :param bad_frame_limit: bad frames in a row after which the firmware stops (1-255).
    :param reconnect_attempts: times the driver reopens a port that failed, between episodes.
    :param watchdog_periods: control periods without a command after which the backend's
        watchdog stops the car (the firmware's timeout is the second line).

    Motion capture:

    :param mocap_system: the client library: "natnet" (OptiTrack Motive, unicast).
    :param mocap_host: the mocap server's address.
    :param mocap_local: this PC's address on the mocap network.
    :param mocap_command_port: the server's NatNet command port (Motive: 1510).
    :param rigid_body: the car's rigid body: its name in Motive, or its streaming id.
    :param mocap_rate: the expected frame rate, Hz (the check compares it).
    :param mocap_max_age: seconds without a new frame before ``mocap_stale``.
    :param mocap_max_latency: the server's reported latency (camera mid-exposure to transmit)
        above which a frame is ``mocap_late``.
    :param mocap_clock_hz: ticks per second of the server's high-resolution timestamps.
    :param lost_frames: consecutive frames without the body tracked before ``body_lost``.
    :param velocity_window: poses in the least-squares velocity fit (latency: half the span).
    :param velocity_jump_speed: m/s; a pose farther from the previous one than this speed allows
        restarts the velocity window (a stale frame from before a reset, a glitch, the car
        carried) instead of reading as a huge velocity.
    :param calibration: path of the calibration TOML ("" = the defaults of :class:`Calibration`).

    Twin only:

    :param twin_latency: seconds the twin's mocap frames are held before they are sent.
    :param twin_supply_mv: the supply voltage the twin puts on ADC0, mV.
    """

    port: str = "/dev/ttyACM0"
    baud: int = 115200
    connect_timeout: float = 3.0
    status_timeout: float = 0.15
    failsafe_timeout_ms: int = 100
    bad_frame_limit: int = 3
    reconnect_attempts: int = 2
    watchdog_periods: float = 5.0
    mocap_system: str = "natnet"
    mocap_host: str = "127.0.0.1"
    mocap_local: str = "127.0.0.1"
    mocap_command_port: int = 1510
    rigid_body: str = "racecar"
    mocap_rate: float = 120.0
    mocap_max_age: float = 0.05
    mocap_max_latency: float = 0.03
    mocap_clock_hz: float = 1e7
    lost_frames: int = 3
    velocity_window: int = 5
    velocity_jump_speed: float = 20.0
    calibration: str = ""
    twin_latency: float = 0.004
    twin_supply_mv: int = 7400

    def __post_init__(self) -> None:
        positive = (
            "baud", "connect_timeout", "status_timeout", "watchdog_periods", "mocap_rate",
            "mocap_max_age",
            "mocap_max_latency", "mocap_clock_hz", "velocity_jump_speed",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"RaceCarConfig.{name} must be a positive number, got {value!r}")
        if not 20 <= self.failsafe_timeout_ms <= 5000:
            raise ValueError(
                "RaceCarConfig.failsafe_timeout_ms must be 20..5000, got "
                f"{self.failsafe_timeout_ms}"
            )
        if not 1 <= self.bad_frame_limit <= 255:
            raise ValueError(
                f"RaceCarConfig.bad_frame_limit must be 1..255, got {self.bad_frame_limit}"
            )
        if self.mocap_system not in MOCAP_SYSTEMS:
            raise ValueError(
                f"RaceCarConfig.mocap_system must be one of {MOCAP_SYSTEMS}, "
                f"got {self.mocap_system!r}"
            )
        if not (isinstance(self.velocity_window, int) and self.velocity_window >= 2):
            raise ValueError(
                f"RaceCarConfig.velocity_window must be an int >= 2, got {self.velocity_window}"
            )
        if not (isinstance(self.lost_frames, int) and self.lost_frames >= 1):
            raise ValueError(
                f"RaceCarConfig.lost_frames must be an int >= 1, got {self.lost_frames}"
            )
        if not 0 <= self.twin_latency < 1:
            raise ValueError(
                f"RaceCarConfig.twin_latency must be in [0, 1) s, got {self.twin_latency}"
            )


def resolve_config(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> RaceCarConfig:
    """A RaceCarConfig from keyword arguments > environment > TOML file > defaults
    (:func:`sim2online_envs.hardware.settings.resolve_settings`)."""
    return resolve_settings(RaceCarConfig, _TABLE, overrides, environ)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What was measured on the car and in the arena (TOML sections in brackets).

    ``[arena]`` the arena frame in the mocap frame: ``up_axis`` ("y": Motive's default Y-up,
    the floor is mocap x-z and arena y = -mocap z; "z": Z-up, the floor is mocap x-y), then the
    arena origin ``origin`` (x, y) [m] and heading ``yaw`` [rad] in those floor coordinates.

    ``[body]`` the rigid body on the car: ``com_offset`` (x, y) [m] of the centre of mass in
    the body's floor frame, ``yaw_offset`` [rad] of the car's forward axis from the body's x.

    ``[steering]`` servo pulse ``center_us`` for straight wheels and ``us_per_rad`` (signed:
    negative when a longer pulse turns right); ``[throttle]`` ESC ``neutral_us``, pulse change
    ``forward_us`` at full throttle and ``reverse_us`` at full reverse, ``deadband`` (duty
    below which the ESC gives nothing).
    """

    up_axis: str = "y"
    origin: tuple[float, float] = (0.0, 0.0)
    yaw: float = 0.0
    com_offset: tuple[float, float] = (0.0, 0.0)
    yaw_offset: float = 0.0
    steering_center_us: float = 1500.0
    steering_us_per_rad: float = 500.0 / robot.MAX_STEERING
    throttle_neutral_us: float = 1500.0
    throttle_forward_us: float = 500.0
    throttle_reverse_us: float = 500.0
    throttle_deadband: float = 0.0

    def __post_init__(self) -> None:
        if self.up_axis not in ("y", "z"):
            raise ValueError(f"calibration up_axis must be 'y' or 'z', got {self.up_axis!r}")
        if self.steering_us_per_rad == 0:
            raise ValueError("calibration steering us_per_rad must not be 0")
        if self.throttle_forward_us <= 0 or self.throttle_reverse_us <= 0:
            raise ValueError("calibration throttle forward_us and reverse_us must be > 0")

    # -- pulses ------------------------------------------------------------------------------

    def steering_pulse(self, angle: float) -> int:
        """Servo pulse (µs, rounded) for a steering angle (rad)."""
        return round(self.steering_center_us + angle * self.steering_us_per_rad)

    def throttle_pulse(self, duty: float) -> int:
        """ESC pulse (µs, rounded) for a duty cycle in [-1, 1]."""
        duty = max(-1.0, min(1.0, float(duty)))
        span = self.throttle_forward_us if duty >= 0 else self.throttle_reverse_us
        return round(self.throttle_neutral_us + duty * span)

    def steering_angle(self, pulse_us: float) -> float:
        """Steering angle (rad) a servo pulse gives (the inverse of :meth:`steering_pulse`)."""
        return (pulse_us - self.steering_center_us) / self.steering_us_per_rad

    def throttle_duty(self, pulse_us: float) -> float:
        """Duty cycle an ESC pulse gives, in [-1, 1], zero inside the deadband."""
        offset = pulse_us - self.throttle_neutral_us
        span = self.throttle_forward_us if offset >= 0 else self.throttle_reverse_us
        duty = max(-1.0, min(1.0, offset / span))
        return 0.0 if abs(duty) < self.throttle_deadband else duty


_CALIBRATION_KEYS = {
    "arena": {"up_axis": "up_axis", "origin": "origin", "yaw": "yaw"},
    "body": {"com_offset": "com_offset", "yaw_offset": "yaw_offset"},
    "steering": {"center_us": "steering_center_us", "us_per_rad": "steering_us_per_rad"},
    "throttle": {
        "neutral_us": "throttle_neutral_us",
        "forward_us": "throttle_forward_us",
        "reverse_us": "throttle_reverse_us",
        "deadband": "throttle_deadband",
    },
}


def load_calibration(path: str | os.PathLike[str] | None) -> Calibration:
    """The calibration in the TOML file at ``path`` (None or "": the defaults)."""
    if not path:
        return Calibration()
    path = Path(path).expanduser()
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise FileNotFoundError(f"race car calibration {path}: {error.strerror}") from None
    values: dict[str, Any] = {}
    unknown_sections = sorted(set(data) - set(_CALIBRATION_KEYS))
    if unknown_sections:
        raise ValueError(
            f"{path}: unknown sections {unknown_sections}; known: {sorted(_CALIBRATION_KEYS)}"
        )
    for section, keys in _CALIBRATION_KEYS.items():
        table = data.get(section, {})
        unknown = sorted(set(table) - set(keys))
        if unknown:
            raise ValueError(f"{path} [{section}]: unknown keys {unknown}; known: {sorted(keys)}")
        for key, value in table.items():
            values[keys[key]] = tuple(value) if isinstance(value, list) else value
    return Calibration(**values)
