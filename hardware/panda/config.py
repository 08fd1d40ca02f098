"""Connection and safety settings of the real Panda: keyword arguments > environment > TOML.

Each field resolves, first found wins, from: the keyword argument to :func:`resolve_config` (or
``gym.make("RealPanda-v0", ...)``), the environment variable ``SIM2ONLINE_PANDA_<FIELD>``
(upper case), the table ``[panda]`` of the TOML file named by ``SIM2ONLINE_CONFIG`` (default
``~/.config/sim2online/hardware.toml``), the default below. An unknown key in any of them is an
error that lists the known ones.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim2online_envs.hardware.settings import env_prefix, resolve_settings
from sim2online_envs.robots.panda import (
    CUBE_SIZE,
    IMPEDANCE_ROTATIONAL_STIFFNESS,
    IMPEDANCE_TRANSLATIONAL_STIFFNESS,
    MARKER_DICTIONARY,
    MARKER_LENGTH,
)

__all__ = ["DRIVERS", "ENV_PREFIX", "PandaHardwareConfig", "resolve_config"]

#: Arm drivers: franky (libfranka 0.21, Franka Research 3) and panda-py (libfranka 0.9.2, the
#: older Panda / FER). See docs/hardware/panda.md for which arm takes which.
DRIVERS = ("franky", "panda_py")

ARM_MODES = ("joint", "impedance", "motion")
ENV_PREFIX = env_prefix("panda")
TABLE = "panda"


@dataclass(frozen=True)
class PandaHardwareConfig:
    """Everything that says how to reach and guard the real arm, hand, camera and cube."""

    #: FCI address of the arm (the robot's, not Desk's, network).
    robot_ip: str = "172.16.0.2"
    #: "franky" (FR3, libfranka 0.21) or "panda_py" (Panda/FER, libfranka 0.9.2).
    driver: str = "franky"
    #: Serial number of the D455 ("" takes the only RealSense connected).
    camera_serial: str = ""
    #: Calibration file (JSON) written by ``sim2online calibrate panda-camera``.
    calibration: str = "~/.config/sim2online/panda_calibration.json"
    #: Seconds to wait for the arm, the hand or the camera to answer when connecting.
    connect_timeout: float = 5.0
    #: Colour stream of the D455 (px, px, Hz); RGB8.
    camera_width: int = 1280
    camera_height: int = 720
    camera_fps: int = 30
    #: A camera frame older than this at a tick is stale (s): ``camera_stale``.
    camera_max_age: float = 0.2
    #: ArUco dictionary of the cube's markers, the black square's side (m), the cube's edge (m):
    #: the robot module's facts by default (a cube of your own may differ).
    marker_dictionary: str = MARKER_DICTIONARY
    marker_length: float = MARKER_LENGTH
    cube_size: float = CUBE_SIZE
    #: The marker held in the gripper by ``sim2online calibrate panda-camera``: its id in
    #: ``marker_dictionary`` (not one of the cube's 0-5) and its black square's side (m).
    calibration_marker_id: int = 10
    calibration_marker_length: float = MARKER_LENGTH
    #: The cube pose (from the newest frame that showed a marker) may be this much older (s)
    #: than ``camera_max_age`` before the reading becomes ``marker_lost``.
    marker_lost_grace: float = 0.25
    #: Collision reflex thresholds of the arm: joint torques (Nm) and Cartesian forces (N).
    collision_torque: float = 20.0
    collision_force: float = 30.0
    #: franky's arm control: "joint" (one damped-least-squares IK step per tick from
    #: libfranka's Jacobian, sent as a JointMotion that takes over the running one, as the
    #: simulator controls its arm), "impedance" (Cartesian impedance tracking, torque
    #: control) or "motion" (CartesianMotion targets). panda-py uses its impedance controller.
    arm_mode: str = "motion"
    #: The IK step: damping (m), largest position error it acts on (m), null-space gain.
    ik_damping: float = 0.02
    ik_max_error: float = 0.08
    ik_nullspace_gain: float = 0.3
    #: Cartesian impedance stiffness: translation (N/m) and rotation (Nm/rad); the study rig's
    #: compliance, the one the simulator's arm runs (the robot module's), by default.
    translational_stiffness: float = IMPEDANCE_TRANSLATIONAL_STIFFNESS
    rotational_stiffness: float = IMPEDANCE_ROTATIONAL_STIFFNESS
    #: Global speed scale of the arm's motions (libfranka's dynamics limits times this).
    relative_dynamics_factor: float = 0.3
    #: Gripper: speed (m/s), grasp force (N), the width it closes to (m) and the tolerances of
    #: a grasp (m): success when the fingers stop within [width - inner, width + outer].
    gripper_speed: float = 0.1
    grasp_force: float = 40.0
    grasp_width: float = 0.04
    grasp_epsilon_inner: float = 0.01
    grasp_epsilon_outer: float = 0.02
    #: The tip counts as stalled (fault ``ik_stall``) when it is farther than this from its
    #: target (m) and has not come closer by 1 mm for ``stall_time`` seconds.
    stall_distance: float = 0.01
    stall_time: float = 3.0
    #: Largest joint error after the reset motion (rad).
    home_tolerance: float = 0.01
    #: Seconds the joint motion to the reset pose may take.
    home_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.arm_mode not in ARM_MODES:
            raise ValueError(f"arm_mode must be one of {ARM_MODES}, got {self.arm_mode!r}")
        if self.driver not in DRIVERS:
            raise ValueError(f"driver must be one of {DRIVERS}, got {self.driver!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not value > 0:
                raise ValueError(f"{f.name} must be positive, got {value!r}")
            if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
                raise ValueError(f"{f.name} must be positive, got {value!r}")
        if self.marker_length >= self.cube_size:
            raise ValueError(
                f"marker_length {self.marker_length} must be smaller than the cube's edge "
                f"{self.cube_size} (the marker needs a white border)"
            )

    @property
    def calibration_path(self) -> Path:
        return Path(os.path.expanduser(self.calibration))


def resolve_config(**kwargs: Any) -> PandaHardwareConfig:
    """The settings from keyword arguments > environment > TOML > defaults
    (:func:`sim2online_envs.hardware.settings.resolve_settings`)."""
    return resolve_settings(PandaHardwareConfig, TABLE, kwargs)
