"""Connection and safety settings of the real Go1 (and its twin).

Resolved per field as keyword arguments > environment variables ``SIM2ONLINE_GO1_<FIELD>`` > the
``[go1]`` table of a TOML file (``SIM2ONLINE_CONFIG``, else ``~/.config/sim2online/hardware.toml``)
> the defaults below. Unknown keys, wherever they come from, fail naming the known ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from sim2online_envs.hardware.settings import env_prefix, resolve_settings

__all__ = ["ENV_PREFIX", "Go1Config", "resolve_config"]

ENV_PREFIX = env_prefix("go1")
_TABLE = "go1"


@dataclasses.dataclass(frozen=True)
class Go1Config:
    """Settings of the Go1 low-level UDP link, its safety monitor and the twin.

    Network (the robot's defaults: the low-level controller answers at 192.168.123.10:8007):

    :param robot_ip: address of the Go1's motion controller.
    :param robot_port: its low-level UDP port.
    :param local_port: the UDP port this PC sends from and receives on (0: a free one).
    :param connect_timeout: seconds to wait for the first LowState before failing.

    Loop and motors:

    :param sdk_rate: LowCmd/LowState exchanges per second (the background thread's rate).
    :param damping_kd: Kd [N·m·s/rad] of damping mode (Kp = 0): the safe state.
    :param stand_duration: seconds of the stand-up and lie-down interpolations.
    :param lie_down_pose: (hip, thigh, calf) [rad] of every leg when lying down.
    :param power_level: the SDK's ``Safety.PowerProtect`` level, 1 (10 % of the power: too
        little to stand up from lying) .. 10 (all of it).

    Safety monitor (each trip switches to damping and names the fault):

    :param state_timeout: seconds without a valid LowState before ``udp_timeout``.
    :param loss_window: SDK ticks over which lost, bad or reordered packets are counted.
    :param max_packet_loss: fraction of ticks without a new LowState tolerated in the window
        (above it: ``packet_loss``).
    :param max_crc_errors: LowStates with a bad checksum tolerated in the window (``crc_error``).
    :param max_reordered: LowStates older than one already seen tolerated in the window
        (``udp_reordered``); they are never used.
    :param max_delay: seconds LowStates may arrive later than the fastest one seen (ten in a
        row), measured on the robot's own millisecond clock (``tick``), before ``udp_delay``.
    :param fall_up_z: a fall is the trunk's up axis having a world z below this (the env
        passes the task's value).
    :param soft_limit_factor: fraction of each joint's range, about its middle, a joint may
        reach (the env passes the task's value); beyond it: ``joint_limit``.
    :param remote_estop: treat the wireless remote's L2+B buttons (bytes in LowState) as an
        e-stop (``remote_estop``).

    State estimation:

    :param contact_force: foot-force reading above which a foot is in contact (sensor units:
        newtons in the twin; calibrate on the robot, see docs/hardware/go1.md).
    :param accel_noise: accelerometer noise density [m/s²] of the velocity filter's process.
    :param leg_velocity_noise: standard deviation [m/s] of one stance leg's velocity.
    :param trunk_contact_height: kinematic trunk height [m] below which the trunk is taken to
        touch the ground (the robot has no trunk contact sensor).

    Twin only:

    :param time_scale: wall-clock speed of the twin's physics (1: real time); the driver's
        rate and the backend's clock are slowed by the same factor so that the MDP stays the
        same on a machine too slow for 500 Hz.
    :param twin_friction: floor friction of the twin's "reality" (the sim's nominal is 1.0).
    :param twin_mass_scale: link mass scale of the twin's "reality".
    :param twin_trunk_added_mass: payload [kg] added to the twin's trunk.
    """

    robot_ip: str = "192.168.123.10"
    robot_port: int = 8007
    local_port: int = 8080
    connect_timeout: float = 2.0
    sdk_rate: float = 500.0
    damping_kd: float = 3.0
    stand_duration: float = 2.0
    lie_down_pose: tuple[float, float, float] = (0.0, 1.2, -2.7)
    power_level: int = 10
    state_timeout: float = 0.05
    loss_window: int = 500
    max_packet_loss: float = 0.05
    max_crc_errors: int = 0
    max_reordered: int = 2
    max_delay: float = 0.03
    fall_up_z: float = 0.5
    soft_limit_factor: float = 0.95
    remote_estop: bool = True
    contact_force: float = 20.0
    accel_noise: float = 0.5
    leg_velocity_noise: float = 0.1
    trunk_contact_height: float = 0.08
    time_scale: float = 1.0
    twin_friction: float = 0.6
    twin_mass_scale: float = 1.05
    twin_trunk_added_mass: float = 0.5

    def __post_init__(self) -> None:
        for name in ("robot_port", "local_port"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 0 <= value < 65536):
                raise ValueError(f"Go1Config.{name} must be a port number, got {value!r}")
        positive = (
            "connect_timeout", "sdk_rate", "damping_kd", "stand_duration", "state_timeout",
            "max_delay", "contact_force", "accel_noise", "leg_velocity_noise", "time_scale",
            "twin_friction", "twin_mass_scale",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"Go1Config.{name} must be a positive number, got {value!r}")
        if not (isinstance(self.power_level, int) and 1 <= self.power_level <= 10):
            # the SDK ends the process on a level outside 1..10
            raise ValueError(f"Go1Config.power_level must be 1..10, got {self.power_level!r}")
        if not (isinstance(self.loss_window, int) and self.loss_window >= 10):
            raise ValueError(f"Go1Config.loss_window must be an int >= 10, got {self.loss_window}")
        if not 0.0 <= self.max_packet_loss < 1.0:
            raise ValueError(
                f"Go1Config.max_packet_loss must be in [0, 1), got {self.max_packet_loss}"
            )
        if len(self.lie_down_pose) != 3:
            raise ValueError(
                f"Go1Config.lie_down_pose is (hip, thigh, calf), got {self.lie_down_pose}"
            )

    @property
    def sdk_dt(self) -> float:
        """Seconds of robot time between two LowCmds."""
        return 1.0 / self.sdk_rate

    @property
    def address(self) -> str:
        """The robot's address in words, for errors."""
        return f"{self.robot_ip}:{self.robot_port}"


def resolve_config(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Go1Config:
    """A Go1Config from keyword arguments > environment > TOML file > defaults
    (:func:`sim2online_envs.hardware.settings.resolve_settings`)."""
    return resolve_settings(Go1Config, _TABLE, overrides, environ)
