"""Go1 joystick task: track a body-frame velocity command (vx, vy, ωz) at 50 Hz.

The task is written after MuJoCo Playground's ``locomotion/go1/joystick.py``: a config dataclass,
one small function per reward term with its weight, each weighted term reported in
``info["reward_terms"]``. Every function takes arrays with a leading batch axis, so the single
env, the batched vector env and the real robot share every line of it.

The robot's raw state (a dict of batched arrays: ``joint_pos``, ``base_rot``, ``gyro``, the feet,
...) and the command (``joint_targets``) are the robot's facts, listed with their shapes, units and
frames in :mod:`sim2online_envs.robots.go1` (``STATE_KEYS``, ``COMMAND_KEYS``), with the joint
names, limits, home pose, PD gains and torque limits this module re-exports.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar, NoReturn

import numba
import numpy as np
from gymnasium import spaces

from sim2online_envs.config import coerce_config, replace_fields
from sim2online_envs.core import Batch, Task, Transition
from sim2online_envs.numba_cache import use_a_writable_numba_cache
from sim2online_envs.robots import go1 as go1_robot
from sim2online_envs.robots.go1 import (
    FOOT_NAMES,
    HOME_JOINT_POS,
    JOINT_LOWER,
    JOINT_NAMES,
    JOINT_UPPER,
    NUM_FEET,
    NUM_JOINTS,
    TORQUE_LIMITS,
)

logger = logging.getLogger(__name__)

__all__ = [
    "COMMAND_RANGES",
    "FOOT_NAMES",
    "HOME_JOINT_POS",
    "JOINT_LOWER",
    "JOINT_NAMES",
    "JOINT_UPPER",
    "OBS_SLICES",
    "PRESETS",
    "TORQUE_LIMITS",
    "Go1JoystickTask",
    "Go1ObsNoise",
    "Go1RewardWeights",
    "Go1TaskConfig",
    "check_state",
    "gravity_in_body",
    "rotate_to_world",
    "rotation_matrix",
    "up_z",
]

#: Half-widths of the uniform command distribution (vx [m/s], vy [m/s], ωz [rad/s]).
COMMAND_RANGES: dict[str, tuple[float, float, float]] = {
    # MuJoCo Playground's command_config.a (mujoco_playground/_src/locomotion/go1/joystick.py)
    "full": (1.5, 0.8, 1.2),
    # the study's narrow-command prior of the sim-to-sim gap (DESIGN.md, "prior vs reality")
    "narrow": (0.5, 0.8, 1.2),
}

#: Named task set-ups: the Go1TaskConfig fields each changes from the defaults.
#: "playground" is MuJoCo Playground's Go1 joystick task (the defaults, every value sourced in
#: docs/parameters.md); "study_prior" is it with the study's narrow-command prior.
PRESETS: dict[str, dict[str, Any]] = {
    "playground": {},
    "study_prior": {"command_range": "narrow"},
}

#: Where each part of the 48-D observation lies.
OBS_SLICES: dict[str, slice] = {
    "local_linvel": slice(0, 3),
    "gyro": slice(3, 6),
    "gravity": slice(6, 9),
    "joint_pos": slice(9, 21),
    "joint_vel": slice(21, 33),
    "last_action": slice(33, 45),
    "command": slice(45, 48),
}
OBS_DIM = 48


@dataclasses.dataclass(frozen=True)
class Go1RewardWeights:
    """Weight of each reward term (MuJoCo Playground's Go1 joystick scales).

    A term's reported value is ``weight * raw_value * control_dt``, as in Playground, so a step
    of perfect tracking earns ``(1.0 + 0.5) * 0.02``. Set a weight to 0 to switch a term off.
    """

    tracking_lin_vel: float = 1.0
    tracking_ang_vel: float = 0.5
    lin_vel_z: float = -0.5
    ang_vel_xy: float = -0.05
    orientation: float = -5.0
    dof_pos_limits: float = -1.0
    pose: float = 0.5
    termination: float = -1.0
    stand_still: float = -1.0
    torques: float = -0.0002
    action_rate: float = -0.01
    energy: float = -0.001
    feet_clearance: float = -2.0
    feet_height: float = -0.2
    feet_slip: float = -0.1
    feet_air_time: float = 0.1


@dataclasses.dataclass(frozen=True)
class Go1ObsNoise:
    """Half-widths of uniform observation noise, times ``level`` (Playground's scales)."""

    level: float = 1.0
    local_linvel: float = 0.1
    gyro: float = 0.2
    gravity: float = 0.05
    joint_pos: float = 0.03
    joint_vel: float = 1.5


@dataclasses.dataclass(frozen=True)
class Go1TaskConfig:
    """Everything that defines the Go1 joystick task.

    :param control_dt: control period [s] (50 Hz).
    :param max_episode_steps: steps per episode before time-limit truncation.
    :param action_scale: joint-target offset [rad] per unit action: targets = home + 0.5·a.
    :param command_range: "full" ±(1.5, 0.8, 1.2) (Playground's), "narrow" ±(0.5, 0.8, 1.2)
        (the study's prior), or your own three half-widths (vx [m/s], vy [m/s], ωz [rad/s]).
        The command at reset is uniform in this range.
    :param command_resample_mean_time: mean [s] of the exponentially distributed time between
        command resamples (Playground's: a new interval is drawn at reset and at each resample).
    :param command_resample_steps: resample on a fixed clock of this many steps instead (None:
        the random interval).
    :param command_change_probability: at a resample, each component of the command is replaced
        with this probability and otherwise kept.
    :param command_nonzero_probability: a replaced component (vx, vy, ωz) is a uniform draw in
        ``command_range`` with this probability and otherwise zero (Playground's ``b``).
    :param tracking_sigma: σ of the tracking rewards exp(−err²/σ).
    :param max_foot_height: swing height [m] the feet terms aim for (foot centre).
    :param soft_joint_limit_factor: fraction of each joint's range, about its middle, beyond
        which ``dof_pos_limits`` penalises.
    :param fall_up_z: a fall is the trunk's up axis having a world z below this (60° tilt).
    :param terminate_on_trunk_contact: also end the episode when the trunk touches the ground.
    :param clip_reward_at_zero: add a ``clip_at_zero`` term that lifts a negative reward to 0
        (Playground clips the reward to ≥ 0, so that ending an episode never pays).
    :param obs_noise: add uniform observation noise (on, as in Playground).
    :param noise: the noise scales used when ``obs_noise`` is on.
    :param weights: the reward weights.
    """

    control_dt: float = go1_robot.CONTROL_DT
    max_episode_steps: int = 1000
    action_scale: float = 0.5
    command_range: str | tuple[float, float, float] = "full"
    command_resample_mean_time: float = 5.0
    command_resample_steps: int | None = None
    command_change_probability: float = 0.5
    command_nonzero_probability: tuple[float, float, float] = (0.9, 0.25, 0.5)
    tracking_sigma: float = 0.25
    max_foot_height: float = 0.1
    soft_joint_limit_factor: float = 0.95
    fall_up_z: float = 0.5
    terminate_on_trunk_contact: bool = True
    clip_reward_at_zero: bool = True
    obs_noise: bool = True
    noise: Go1ObsNoise = dataclasses.field(default_factory=Go1ObsNoise)
    weights: Go1RewardWeights = dataclasses.field(default_factory=Go1RewardWeights)

    def __post_init__(self) -> None:
        for name in (
            "control_dt",
            "action_scale",
            "tracking_sigma",
            "max_foot_height",
            "command_resample_mean_time",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"Go1TaskConfig.{name} must be a positive number, got {value!r}")
        for name in ("max_episode_steps", "command_resample_steps"):
            value = getattr(self, name)
            if name == "command_resample_steps" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Go1TaskConfig.{name} must be an int >= 1, got {value!r}")
        probabilities = np.asarray(
            [self.command_change_probability, *np.ravel(self.command_nonzero_probability)],
            dtype=np.float64,
        )
        if probabilities.shape != (4,) or not np.all((probabilities >= 0) & (probabilities <= 1)):
            raise ValueError(
                "Go1TaskConfig.command_change_probability must be a probability and "
                "command_nonzero_probability three, got "
                f"{self.command_change_probability!r}, {self.command_nonzero_probability!r}"
            )
        if not 0.0 < self.soft_joint_limit_factor <= 1.0:
            raise ValueError(
                "Go1TaskConfig.soft_joint_limit_factor must be in (0, 1], got "
                f"{self.soft_joint_limit_factor!r}"
            )
        if not -1.0 <= self.fall_up_z < 1.0:
            raise ValueError(f"Go1TaskConfig.fall_up_z must be in [-1, 1), got {self.fall_up_z!r}")
        self.command_half_widths  # noqa: B018  (validates command_range)

    @classmethod
    def from_preset(cls, name: str = "playground") -> Go1TaskConfig:
        """The config of a named set-up (:data:`PRESETS`)."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return replace_fields(cls(), PRESETS[name], f"Go1 preset {name!r}")

    @property
    def command_half_widths(self) -> np.ndarray:
        """The (3,) half-widths of the command distribution."""
        if isinstance(self.command_range, str):
            if self.command_range not in COMMAND_RANGES:
                raise ValueError(
                    f"command_range must be one of {sorted(COMMAND_RANGES)} or three half-widths, "
                    f"got {self.command_range!r}"
                )
            return np.array(COMMAND_RANGES[self.command_range])
        widths = np.asarray(self.command_range, dtype=np.float64)
        if widths.shape != (3,) or not np.all(np.isfinite(widths)) or np.any(widths < 0):
            raise ValueError(
                "command_range as numbers must be three finite half-widths >= 0 (vx, vy, wz), "
                f"got {self.command_range!r}"
            )
        return widths


# -- Frames --------------------------------------------------------------------------------------
# Two constraints shape all of the task's array code. It must give bit-identical results for a
# world whatever the batch size, so that the batched env equals the single env world by world:
# hence element-wise ufuncs, reductions along a row and row-wise dot products (``np.vecdot``: one
# dot product per row, the same kernel whatever the number of rows) only, no 2-D matrix products
# (BLAS picks other kernels, and other rounding, for other sizes). And at batch size 1 its cost
# is the number of NumPy calls, about 0.5-1 µs each whatever the array size (more right after the
# physics has evicted NumPy from the caches), so it uses few.
#
# The task reads the trunk's rotation matrix from the state (``base_rot``: MuJoCo has it for
# free, as Playground reads the IMU's ``site_xmat``). The functions below are for backends that
# measure only the IMU's quaternion, and for tests: every entry of a unit quaternion's rotation
# matrix is a sum of signed products q_i q_j, so all entries are one row-wise product of the ten
# distinct q_i q_j with a constant coefficient matrix.

#: ``_vecdot(a, b)``: Σ a_i b_i over the last axis, broadcasting the others (one gufunc call).
_vecdot = np.vecdot


#: The ten distinct products q_i q_j of a quaternion (w, x, y, z): indices i and j of each.
_PAIR_I = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
_PAIR_J = np.array([0, 1, 2, 3, 1, 2, 3, 2, 3, 3])


def _quadratic_form(*entries: str) -> np.ndarray:
    """(n, 10) coefficients on the products q_i q_j (:data:`_PAIR_I`, :data:`_PAIR_J`) of n
    entries written like "+ww -xx +yy -zz"."""
    axis = {"w": 0, "x": 1, "y": 2, "z": 3}
    pairs = zip(_PAIR_I.tolist(), _PAIR_J.tolist(), strict=True)
    column = {(i, j): k for k, (i, j) in enumerate(pairs)}
    coefficients = np.zeros((len(entries), len(column)))
    for row, entry in enumerate(entries):
        for term in entry.split():
            i, j = sorted((axis[term[1]], axis[term[2]]))
            coefficients[row, column[i, j]] += 1.0 if term[0] == "+" else -1.0
    return coefficients


_ROTATION = _quadratic_form(
    "+ww +xx -yy -zz", "+xy +yx -wz -zw", "+xz +zx +wy +yw",
    "+xy +yx +wz +zw", "+ww -xx +yy -zz", "+yz +zy -wx -xw",
    "+xz +zx -wy -yw", "+yz +zy +wx +xw", "+ww -xx -yy +zz",
)  # fmt: skip
# gravity in the body frame, R^T (0, 0, -1): minus the rotation matrix's third row
_GRAVITY = _quadratic_form("-xz -zx +wy +yw", "-yz -zy -wx -xw", "-ww +xx +yy -zz")


def _evaluate(quat: np.ndarray, form: np.ndarray) -> np.ndarray:
    """(B, n) values of the quadratic forms ``form`` (n, 10) of quaternions (B, 4)."""
    pairs = quat.take(_PAIR_I, axis=1) * quat.take(_PAIR_J, axis=1)
    return _vecdot(pairs[:, None, :], form)


def rotation_matrix(quat: np.ndarray) -> np.ndarray:
    """Rotation matrices (B, 3, 3), body to world, of unit quaternions (B, 4) in wxyz order."""
    return _evaluate(quat, _ROTATION).reshape(quat.shape[0], 3, 3)


def rotate_to_world(rot: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """Body-frame vectors (B, 3) in the world frame, by rotation matrices (B, 3, 3)."""
    return _vecdot(rot, vec[:, None, :])


def gravity_in_body(quat: np.ndarray) -> np.ndarray:
    """The unit gravity direction in the body frame, (B, 3): (0, 0, −1) when upright."""
    return _evaluate(quat, _GRAVITY)


def up_z(quat: np.ndarray) -> np.ndarray:
    """World z of the trunk's up axis, (B,): 1 when upright, 0 on its side, −1 upside down."""
    x, y = quat[:, 1], quat[:, 2]
    return 1.0 - 2.0 * (x * x + y * y)


# -- Reward terms: one function each, of one world ----------------------------------------------
# The terms, the fall test, the task-state update and the observation are compiled (numba,
# cached on disk after the first use) and run world by world: at batch size 1 a NumPy version
# costs about 1 µs per call and the step needed ~70 calls, more than half the physics; compiled,
# the whole task step is one call whatever the batch size. Each world's numbers come from the
# same scalar code whatever the batch, so the batched env equals the single env bit for bit.
# Each term function takes one world's arrays (1-D, or (4, 3) for the feet) and returns the raw,
# unweighted value.


use_a_writable_numba_cache()
_compiled = numba.njit(cache=True, nogil=True)

# The batched entry points are compiled for one signature each, when this module is imported:
# any memory layout ("A") and read-only allowed, so the single env's contiguous one-row arrays,
# the batch's strided column views and read-only inputs (broadcast or memory-mapped actions)
# share one machine code (about 7-10 s the first time, then loaded from numba's on-disk cache in
# a fraction of a second; on a cold cache every process compiles its own). Backends must report
# float64 arrays and bool contacts (check_state says which key is off otherwise).
_F8 = numba.float64


def _array(dtype: numba.types.Type, ndim: int) -> numba.types.Array:
    return numba.types.Array(dtype, ndim, "A", readonly=True)


_F8_1D, _F8_2D, _F8_3D = (_array(numba.float64, ndim) for ndim in (1, 2, 3))
_B1_1D, _B1_2D = _array(numba.boolean, 1), _array(numba.boolean, 2)
#: The kernels take the robot state, the task state and the task's constants as three tuples
#: (Go1JoystickTask._kernel_inputs): local_linvel, gyro, base_rot, joint_pos, joint_vel, torque,
#: foot_pos, foot_vel, foot_contact, trunk_contact; command, last_action, feet_air_time,
#: last_contact, swing_peak; params, weights_dt, home, soft_lower, soft_upper, pose_weights.
_STATE = numba.types.Tuple(
    (_F8_2D, _F8_2D, _F8_3D, _F8_2D, _F8_2D, _F8_2D, _F8_3D, _F8_3D, _B1_2D, _B1_1D)
)
_TASK_STATE = numba.types.Tuple((_F8_2D, _F8_2D, _F8_2D, _B1_2D, _F8_2D))
_CONSTANTS = numba.types.Tuple((_F8_1D,) * 6)


def _kernel(*arg_types: numba.types.Type):
    """Compile a batched entry point for these argument types, cached on disk."""
    return numba.njit(tuple(arg_types), cache=True, nogil=True)


@_compiled
def reward_tracking_lin_vel(command: np.ndarray, local_linvel: np.ndarray, sigma: float) -> float:
    """exp(−‖v_xy* − v_xy‖² / σ): follow the commanded body-frame planar velocity."""
    ex = command[0] - local_linvel[0]
    ey = command[1] - local_linvel[1]
    return math.exp(-(ex * ex + ey * ey) / sigma)


@_compiled
def reward_tracking_ang_vel(command: np.ndarray, gyro: np.ndarray, sigma: float) -> float:
    """exp(−(ωz* − ωz)² / σ): follow the commanded yaw rate."""
    error = command[2] - gyro[2]
    return math.exp(-(error * error) / sigma)


@_compiled
def cost_lin_vel_z(rot: np.ndarray, local_linvel: np.ndarray) -> float:
    """v_z²: vertical bouncing of the trunk (world frame; ``rot`` body to world, (3, 3))."""
    world_z = rot[2, 0] * local_linvel[0] + rot[2, 1] * local_linvel[1]
    world_z += rot[2, 2] * local_linvel[2]
    return world_z * world_z


@_compiled
def cost_ang_vel_xy(rot: np.ndarray, gyro: np.ndarray) -> float:
    """ω_x² + ω_y²: roll and pitch rates of the trunk (world frame)."""
    world_x = rot[0, 0] * gyro[0] + rot[0, 1] * gyro[1] + rot[0, 2] * gyro[2]
    world_y = rot[1, 0] * gyro[0] + rot[1, 1] * gyro[1] + rot[1, 2] * gyro[2]
    return world_x * world_x + world_y * world_y


@_compiled
def cost_orientation(rot: np.ndarray) -> float:
    """x² + y² of the trunk's up axis in the world frame: zero when level."""
    return rot[0, 2] * rot[0, 2] + rot[1, 2] * rot[1, 2]


@_compiled
def cost_dof_pos_limits(
    joint_pos: np.ndarray, soft_lower: np.ndarray, soft_upper: np.ndarray
) -> float:
    """Σ distance beyond the soft joint limits [rad]."""
    total = 0.0
    for j in range(joint_pos.shape[0]):
        # a joint is beyond one limit at most, so the larger distance is the one (or neither)
        total += max(soft_lower[j] - joint_pos[j], joint_pos[j] - soft_upper[j], 0.0)
    return total


@_compiled
def reward_pose(joint_pos: np.ndarray, home: np.ndarray, joint_weights: np.ndarray) -> float:
    """exp(−Σ w (q − q_home)²): stay near the standing pose (calves weighted 0.1)."""
    total = 0.0
    for j in range(joint_pos.shape[0]):
        offset = joint_pos[j] - home[j]
        total += joint_weights[j] * (offset * offset)
    return math.exp(-total)


@_compiled
def cost_termination(fallen: bool) -> float:
    """1 on a fall."""
    return 1.0 if fallen else 0.0


@_compiled
def cost_stand_still(command_active: bool, joint_pos: np.ndarray, home: np.ndarray) -> float:
    """Σ |q − q_home| while the command is (nearly) zero: stand still when told to."""
    if command_active:
        return 0.0
    total = 0.0
    for j in range(joint_pos.shape[0]):
        total += abs(joint_pos[j] - home[j])
    return total


@_compiled
def cost_torques(torque: np.ndarray) -> float:
    """‖τ‖₂ + ‖τ‖₁ [N·m]."""
    squares = 0.0
    absolutes = 0.0
    for j in range(torque.shape[0]):
        squares += torque[j] * torque[j]
        absolutes += abs(torque[j])
    return math.sqrt(squares) + absolutes


@_compiled
def cost_action_rate(action: np.ndarray, last_action: np.ndarray) -> float:
    """‖a − a_prev‖²: smooth actions (``action`` clipped to [−1, 1] as the robot gets it)."""
    total = 0.0
    for j in range(action.shape[0]):
        change = min(max(action[j], -1.0), 1.0) - last_action[j]
        total += change * change
    return total


@_compiled
def cost_energy(joint_vel: np.ndarray, torque: np.ndarray) -> float:
    """Σ |q̇| |τ| [W]: mechanical power."""
    total = 0.0
    for j in range(joint_vel.shape[0]):
        total += abs(joint_vel[j] * torque[j])
    return total


@_compiled
def foot_speed_sq(foot_vel: np.ndarray, foot: int) -> float:
    """‖v_xy‖² of one foot (``foot_vel`` (4, 3), world frame)."""
    return foot_vel[foot, 0] * foot_vel[foot, 0] + foot_vel[foot, 1] * foot_vel[foot, 1]


@_compiled
def cost_feet_clearance(
    foot_pos: np.ndarray, foot_vel: np.ndarray, max_foot_height: float
) -> float:
    """Σ |z_foot − h| √‖v_foot,xy‖: moving feet should move at the swing height."""
    total = 0.0
    for foot in range(foot_pos.shape[0]):
        speed = math.sqrt(math.sqrt(foot_speed_sq(foot_vel, foot)))
        total += abs(foot_pos[foot, 2] - max_foot_height) * speed
    return total


@_compiled
def touchdown(
    air_time: np.ndarray, contact: np.ndarray, last_contact: np.ndarray, foot: int
) -> bool:
    """The foot lands after time in the air (Playground's bookkeeping: contact now or at the
    last step, so that one missed contact reading does not hide a landing)."""
    return air_time[foot] > 0.0 and (contact[foot] or last_contact[foot])


@_compiled
def cost_feet_height(
    swing_peak: np.ndarray,
    foot_pos: np.ndarray,
    air_time: np.ndarray,
    contact: np.ndarray,
    last_contact: np.ndarray,
    command_active: bool,
    max_foot_height: float,
) -> float:
    """Σ (peak/h − 1)² at touchdown: each swing should reach the swing height (the peak
    includes the foot's height now)."""
    if not command_active:
        return 0.0
    total = 0.0
    for foot in range(contact.shape[0]):
        if touchdown(air_time, contact, last_contact, foot):
            peak = max(swing_peak[foot], foot_pos[foot, 2])
            error = peak / max_foot_height - 1.0
            total += error * error
    return total


@_compiled
def cost_feet_slip(foot_vel: np.ndarray, contact: np.ndarray, command_active: bool) -> float:
    """Σ ‖v_foot,xy‖² of feet on the ground: no slipping."""
    if not command_active:
        return 0.0
    total = 0.0
    for foot in range(contact.shape[0]):
        if contact[foot]:
            total += foot_speed_sq(foot_vel, foot)
    return total


@_compiled
def reward_feet_air_time(
    air_time: np.ndarray,
    contact: np.ndarray,
    last_contact: np.ndarray,
    command_active: bool,
    control_dt: float,
) -> float:
    """Σ (t_air − 0.1 s) at touchdown, the air time counting this step: take steps rather
    than shuffle."""
    if not command_active:
        return 0.0
    total = 0.0
    for foot in range(contact.shape[0]):
        if touchdown(air_time, contact, last_contact, foot):
            total += (air_time[foot] + control_dt) - 0.1
    return total


# -- One world's step, and the batched kernels -------------------------------------------------
#: Positions in the ``params`` vector handed to the kernels (from Go1TaskConfig).
_P_SIGMA, _P_FOOT_HEIGHT, _P_DT, _P_FALL_UP_Z, _P_TRUNK_CONTACT, _P_CLIP = range(6)
_NUM_TERMS = len(dataclasses.fields(Go1RewardWeights))


@_compiled
def _fallen(rot: np.ndarray, trunk_contact: bool, params: np.ndarray) -> bool:
    """A fall: the trunk's up axis below ``fall_up_z`` in world z, or (if on) trunk contact."""
    if rot[2, 2] < params[_P_FALL_UP_Z]:
        return True
    return params[_P_TRUNK_CONTACT] != 0.0 and trunk_contact


@_compiled
def _world_raw_terms(
    out: np.ndarray, b: int, state: tuple, task_state: tuple, action: np.ndarray, constants: tuple
) -> None:
    """World ``b``'s raw terms into ``out[:, b]``, in Go1RewardWeights' order."""
    local_linvel, gyro, rot, joint_pos, joint_vel, torque, foot_pos, foot_vel = state[:8]
    foot_contact, trunk_contact = state[8], state[9]
    command, last_action, feet_air_time, last_contact, swing_peak = task_state
    params, _, home, soft_lower, soft_upper, pose_weights = constants
    c = command[b]
    command_active = c[0] * c[0] + c[1] * c[1] + c[2] * c[2] > 0.01**2  # ‖command‖ > 0.01
    sigma, foot_height = params[_P_SIGMA], params[_P_FOOT_HEIGHT]
    out[0, b] = reward_tracking_lin_vel(c, local_linvel[b], sigma)
    out[1, b] = reward_tracking_ang_vel(c, gyro[b], sigma)
    out[2, b] = cost_lin_vel_z(rot[b], local_linvel[b])
    out[3, b] = cost_ang_vel_xy(rot[b], gyro[b])
    out[4, b] = cost_orientation(rot[b])
    out[5, b] = cost_dof_pos_limits(joint_pos[b], soft_lower, soft_upper)
    out[6, b] = reward_pose(joint_pos[b], home, pose_weights)
    out[7, b] = cost_termination(_fallen(rot[b], trunk_contact[b], params))
    out[8, b] = cost_stand_still(command_active, joint_pos[b], home)
    out[9, b] = cost_torques(torque[b])
    out[10, b] = cost_action_rate(action[b], last_action[b])
    out[11, b] = cost_energy(joint_vel[b], torque[b])
    out[12, b] = cost_feet_clearance(foot_pos[b], foot_vel[b], foot_height)
    out[13, b] = cost_feet_height(
        swing_peak[b], foot_pos[b], feet_air_time[b], foot_contact[b], last_contact[b],
        command_active, foot_height,
    )  # fmt: skip
    out[14, b] = cost_feet_slip(foot_vel[b], foot_contact[b], command_active)
    out[15, b] = reward_feet_air_time(
        feet_air_time[b], foot_contact[b], last_contact[b], command_active, params[_P_DT]
    )


@_compiled
def _world_observation(
    out: np.ndarray,
    b: int,
    local_linvel: np.ndarray,
    gyro: np.ndarray,
    rot: np.ndarray,
    joint_pos: np.ndarray,
    joint_vel: np.ndarray,
    last_action: np.ndarray,
    command: np.ndarray,
    noise: np.ndarray,
    home: np.ndarray,
) -> None:
    """World ``b``'s observation into ``out[b]`` (float32, the layout of OBS_SLICES), plus its
    noise row when ``noise`` has rows."""
    row = out[b]
    for i in range(3):
        row[i] = local_linvel[b, i]
        row[3 + i] = gyro[b, i]
        row[6 + i] = -rot[b, 2, i]  # gravity in the body frame: R^T (0, 0, -1)
        row[45 + i] = command[b, i]
    for j in range(joint_pos.shape[1]):
        row[9 + j] = joint_pos[b, j] - home[j]
        row[21 + j] = joint_vel[b, j]
        row[33 + j] = last_action[b, j]
    if noise.shape[0] > 0:
        for i in range(row.shape[0]):
            row[i] = row[i] + noise[b, i]  # float32 + float64, rounded back to float32


@_kernel(*([_F8_2D] * 2), _F8_3D, *([_F8_2D] * 5), _F8_1D)
def _observe_kernel(
    local_linvel, gyro, rot, joint_pos, joint_vel, last_action, command, noise, home
):
    count = joint_pos.shape[0]
    obs = np.empty((count, OBS_DIM), dtype=np.float32)
    for b in range(count):
        _world_observation(
            obs, b, local_linvel, gyro, rot, joint_pos, joint_vel, last_action, command, noise, home
        )
    return obs


@_kernel(_F8_3D, _B1_1D, _F8_1D)
def _fallen_kernel(rot, trunk_contact, params):
    out = np.empty(rot.shape[0], dtype=np.bool_)
    for b in range(rot.shape[0]):
        out[b] = _fallen(rot[b], trunk_contact[b], params)
    return out


@_kernel(_F8_2D, _F8_3D, _B1_2D, _F8_2D, _F8_2D, _F8)
def _advance_kernel(action, foot_pos, foot_contact, feet_air_time, swing_peak, control_dt):
    """Clipped last action, air times and swing peaks after a step (a foot on the ground starts
    its next swing from zero)."""
    count, num_feet = foot_contact.shape
    last_action = np.empty(action.shape)
    air_time = np.empty((count, num_feet))
    peak = np.empty((count, num_feet))
    for b in range(count):
        for j in range(action.shape[1]):
            last_action[b, j] = min(max(action[b, j], -1.0), 1.0)
        for foot in range(num_feet):
            if foot_contact[b, foot]:
                air_time[b, foot] = 0.0
                peak[b, foot] = 0.0
            else:
                air_time[b, foot] = feet_air_time[b, foot] + control_dt
                peak[b, foot] = max(swing_peak[b, foot], foot_pos[b, foot, 2])
    return last_action, air_time, peak


@_kernel(_F8_2D, _F8, _F8_1D)
def _joint_targets(action, action_scale, home):
    """Joint targets [rad]: home + action_scale · clip(action, −1, 1)."""
    targets = np.empty(action.shape)
    for b in range(action.shape[0]):
        for j in range(action.shape[1]):
            targets[b, j] = home[j] + action_scale * min(max(action[b, j], -1.0), 1.0)
    return targets


@_kernel(_F8_2D, _F8_1D, numba.boolean)
def _weigh(raw, weights_dt, clip):
    """(K+1, B) weighted terms, the last row the clip at zero, and (B,) rewards: the terms
    added one by one, in order, as :func:`~sim2online_envs.core.sum_reward_rows` adds them."""
    num_terms, count = raw.shape
    terms = np.empty((num_terms + 1, count))
    reward = np.empty(count)
    for b in range(count):
        total = 0.0
        for k in range(num_terms):
            terms[k, b] = raw[k, b] * weights_dt[k]
            total = terms[k, b] if k == 0 else total + terms[k, b]
        lift = -total
        terms[num_terms, b] = lift if clip and lift > 0.0 else 0.0
        reward[b] = total + terms[num_terms, b]
    return terms, reward


@_kernel(_STATE, _TASK_STATE, _F8_2D, _CONSTANTS)
def _raw_terms_kernel(state, task_state, action, constants):
    count = action.shape[0]
    raw = np.empty((_NUM_TERMS, count))
    for b in range(count):
        _world_raw_terms(raw, b, state, task_state, action, constants)
    return raw


@_kernel(_STATE, _TASK_STATE, _F8_2D, _F8_2D, _F8_2D, _CONSTANTS)
def _transition_kernel(state, task_state, action, next_command, noise, constants):
    """The whole task step in one call: the terms as :meth:`Go1JoystickTask.reward_terms`, the
    fall as ``terminated``, the task state as ``advance`` and the observation as ``observe``
    compute them (the same compiled functions, so the same bits)."""
    local_linvel, gyro, rot, joint_pos, joint_vel, _, foot_pos, _, foot_contact = state[:9]
    trunk_contact = state[9]
    _, _, feet_air_time, _, swing_peak = task_state
    params, weights_dt, home = constants[0], constants[1], constants[2]
    raw = _raw_terms_kernel(state, task_state, action, constants)
    terms, reward = _weigh(raw, weights_dt, params[_P_CLIP] != 0.0)
    terminated = _fallen_kernel(rot, trunk_contact, params)
    new_last_action, air_time, peak = _advance_kernel(
        action, foot_pos, foot_contact, feet_air_time, swing_peak, params[_P_DT]
    )
    obs = _observe_kernel(
        local_linvel, gyro, rot, joint_pos, joint_vel, new_last_action, next_command, noise, home
    )
    return terms, reward, terminated, obs, new_last_action, air_time, peak


def _next_task_state(
    command: np.ndarray,
    countdown: np.ndarray,
    last_action: np.ndarray,
    air_time: np.ndarray,
    state: Batch,
    swing_peak: np.ndarray,
    noise: np.ndarray,
) -> Batch:
    """The task state after a step (the keys of ``Go1JoystickTask.initial_task_state``)."""
    return {
        "command": command,
        "command_countdown": countdown,
        "last_action": last_action,
        "feet_air_time": air_time,
        "last_contact": state["foot_contact"],
        "swing_peak": swing_peak,
        "obs_noise": noise,
    }


class Go1JoystickTask(Task):
    """Velocity tracking for the Unitree Go1, over batched arrays.

    Observation (48,) float32: body-frame linear velocity (3), gyro (3), gravity in the body
    frame (3), joint positions − home (12), joint velocities (12), last action (12), command (3);
    see :data:`OBS_SLICES`. Action (12,) in [−1, 1]: joint targets = home + ``action_scale``·a,
    tracked by the motors' PD loop (Kp 35, Kd 0.5). The command (vx, vy, ωz) is drawn uniformly
    within ``command_range`` at reset and resampled after an exponentially distributed interval
    (mean ``command_resample_mean_time``; or every ``command_resample_steps`` steps): at a
    resample each component is kept with probability 1 − ``command_change_probability``, else
    replaced by a uniform draw (probability ``command_nonzero_probability``) or by zero, as
    MuJoCo Playground's ``Joystick.sample_command``.

    Task state (per world): ``command`` (3), ``command_countdown`` (int64: steps to the next
    resample), ``last_action`` (12), ``feet_air_time`` (4), ``last_contact`` (4),
    ``swing_peak`` (4), ``obs_noise`` (48, zero unless noise is on).

    Random draws, from each world's generator: at reset the command (3 uniforms), the interval
    (1 exponential, random-interval mode only), then with noise on the observation noise (48);
    after each step, at a resample 3 uniforms, 3 uniforms deciding zeros, 3 deciding changes and
    (random-interval mode) the next interval, then with noise on the next observation's noise.
    """

    robot: ClassVar[str] = go1_robot.NAME
    reward_term_names: ClassVar[tuple[str, ...]] = (
        *(field.name for field in dataclasses.fields(Go1RewardWeights)),
        "clip_at_zero",
    )

    def __init__(self, config: Go1TaskConfig | Mapping[str, Any] | None = None):
        self.config = coerce_config(Go1TaskConfig, config, "config")
        cfg = self.config
        self.control_dt = float(cfg.control_dt)
        self.max_episode_steps = int(cfg.max_episode_steps)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(NUM_JOINTS,), dtype=np.float32)
        self.command_half_widths = cfg.command_half_widths
        self._command_nonzero = np.asarray(cfg.command_nonzero_probability, dtype=np.float64)
        middle = 0.5 * (JOINT_LOWER + JOINT_UPPER)
        half_range = 0.5 * (JOINT_UPPER - JOINT_LOWER) * cfg.soft_joint_limit_factor
        self.soft_lower = middle - half_range
        self.soft_upper = middle + half_range
        self._pose_weights = np.array([1.0, 1.0, 0.1] * 4)
        # weight * control_dt for each term, in reporting order
        self._weights_dt = np.array(
            [
                getattr(cfg.weights, field.name) * self.control_dt
                for field in dataclasses.fields(Go1RewardWeights)
            ]
        )
        params = np.empty(6)
        params[_P_SIGMA] = cfg.tracking_sigma
        params[_P_FOOT_HEIGHT] = cfg.max_foot_height
        params[_P_DT] = self.control_dt
        params[_P_FALL_UP_Z] = cfg.fall_up_z
        params[_P_TRUNK_CONTACT] = float(cfg.terminate_on_trunk_contact)
        params[_P_CLIP] = float(cfg.clip_reward_at_zero)
        self._params = params
        self._constants = (
            params,
            self._weights_dt,
            HOME_JOINT_POS,
            self.soft_lower,
            self.soft_upper,
            self._pose_weights,
        )
        self._no_noise = np.zeros((0, OBS_DIM))
        noise = cfg.noise
        self._noise_half_widths = np.zeros(OBS_DIM)
        for name in ("local_linvel", "gyro", "gravity", "joint_pos", "joint_vel"):
            self._noise_half_widths[OBS_SLICES[name]] = getattr(noise, name) * noise.level

    # -- episode variables ---------------------------------------------------------------------

    def _draw_command(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-self.command_half_widths, self.command_half_widths)

    def _draw_countdown(self, rng: np.random.Generator) -> int:
        """Steps until the next resample: Playground's round(Exp(mean) / dt), or the clock."""
        every = self.config.command_resample_steps
        if every is not None:
            return every
        return round(rng.exponential(self.config.command_resample_mean_time) / self.control_dt)

    def _resample_command(self, rng: np.random.Generator, command: np.ndarray) -> np.ndarray:
        """A resampled command (Playground's sample_command): each component replaced with the
        change probability, by a uniform draw or (1 − nonzero probability) by zero."""
        drawn = self._draw_command(rng)
        nonzero = rng.random(3) < self._command_nonzero
        change = rng.random(3) < self.config.command_change_probability
        return np.where(change, np.where(nonzero, drawn, 0.0), command)

    def _draw_noise(self, rngs: list[np.random.Generator]) -> np.ndarray:
        """Each world's ``rng.uniform(-1, 1, 48)`` times the half-widths: NumPy's uniform is
        ``low + (high - low) * random()``, so the same draws into one array, without the
        per-call cost of ``uniform`` (three times that of ``random``), give the same bits."""
        if not self.config.obs_noise:
            return np.zeros((len(rngs), OBS_DIM))
        noise = np.empty((len(rngs), OBS_DIM))
        for row, rng in zip(noise, rngs, strict=True):
            rng.random(out=row)
        noise *= 2.0
        noise -= 1.0
        noise *= self._noise_half_widths
        return noise

    def initial_task_state(self, state: Batch, rngs: list[np.random.Generator]) -> Batch:
        count = state["joint_pos"].shape[0]
        if len(rngs) != count:
            raise ValueError(f"got {len(rngs)} generators for {count} worlds")
        command = np.empty((count, 3))
        countdown = np.empty(count, dtype=np.int64)
        for world, rng in enumerate(rngs):
            command[world] = self._draw_command(rng)
            countdown[world] = self._draw_countdown(rng)
        return {
            "command": command,
            "command_countdown": countdown,
            "last_action": np.zeros((count, NUM_JOINTS)),
            "feet_air_time": np.zeros((count, NUM_FEET)),
            "last_contact": np.zeros((count, NUM_FEET), dtype=bool),
            "swing_peak": np.zeros((count, NUM_FEET)),
            "obs_noise": self._draw_noise(rngs),
        }

    def _next_command_and_noise(
        self, task_state: Batch, rngs: list[np.random.Generator]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The step's random draws, in the documented order: a new command (and interval) for
        worlds whose countdown runs out, then (noise on) the next observation's noise."""
        command = task_state["command"]
        countdown = task_state["command_countdown"] - 1
        due = np.flatnonzero(countdown <= 0)
        if len(due):
            command = command.copy()
            for world in due.tolist():
                rng = rngs[world]
                command[world] = self._resample_command(rng, command[world])
                countdown[world] = self._draw_countdown(rng)
        noise = self._draw_noise(rngs) if self.config.obs_noise else task_state["obs_noise"]
        return command, countdown, noise

    def advance(
        self,
        task_state: Batch,
        state: Batch,
        action: np.ndarray,
        step: np.ndarray,
        rngs: list[np.random.Generator],
    ) -> Batch:
        del step  # the countdown in the task state decides the resamples
        command, countdown, noise = self._next_command_and_noise(task_state, rngs)
        try:
            last_action, air_time, swing_peak = _advance_kernel(
                np.asarray(action, dtype=np.float64),
                state["foot_pos"],
                state["foot_contact"],
                task_state["feet_air_time"],
                task_state["swing_peak"],
                self.control_dt,
            )
        except TypeError as error:
            _explain_kernel_error(error, state, task_state)
        return _next_task_state(command, countdown, last_action, air_time, state, swing_peak, noise)

    # -- action, observation -------------------------------------------------------------------

    def command(self, action: np.ndarray, state: Batch, task_state: Batch) -> Batch:
        action = np.asarray(action, dtype=np.float64)
        if action.ndim != 2 or action.shape[1] != NUM_JOINTS:
            raise ValueError(f"action must have shape (B, {NUM_JOINTS}), got {action.shape}")
        return {"joint_targets": _joint_targets(action, self.config.action_scale, HOME_JOINT_POS)}

    def observe(self, state: Batch, task_state: Batch) -> np.ndarray:
        try:
            return _observe_kernel(
                state["local_linvel"],
                state["gyro"],
                state["base_rot"],
                state["joint_pos"],
                state["joint_vel"],
                task_state["last_action"],
                task_state["command"],
                task_state["obs_noise"] if self.config.obs_noise else self._no_noise,
                HOME_JOINT_POS,
            )
        except TypeError as error:
            _explain_kernel_error(error, state, task_state)

    # -- rewards and episode ends --------------------------------------------------------------

    def terminated(self, state: Batch, task_state: Batch) -> np.ndarray:
        try:
            return _fallen_kernel(state["base_rot"], state["trunk_contact"], self._params)
        except TypeError as error:
            _explain_kernel_error(error, state, task_state)

    def success(self, state: Batch, task_state: Batch) -> np.ndarray:
        """Velocity tracking has no success state: always False."""
        return np.zeros(state["joint_pos"].shape[0], dtype=bool)

    def _kernel_inputs(self, state: Batch, task_state: Batch) -> tuple[tuple, tuple]:
        """The state and task-state tuples the compiled kernels take (order of ``_STATE`` and
        ``_TASK_STATE``)."""
        return (
            (
                state["local_linvel"],
                state["gyro"],
                state["base_rot"],
                state["joint_pos"],
                state["joint_vel"],
                state["torque"],
                state["foot_pos"],
                state["foot_vel"],
                state["foot_contact"],
                state["trunk_contact"],
            ),
            (
                task_state["command"],
                task_state["last_action"],
                task_state["feet_air_time"],
                task_state["last_contact"],
                task_state["swing_peak"],
            ),
        )

    def raw_reward_terms(
        self, state: Batch, action: np.ndarray, task_state: Batch
    ) -> dict[str, np.ndarray]:
        """Every term's unweighted value, (B,) each, in :attr:`reward_term_names` order."""
        try:
            raw = _raw_terms_kernel(
                *self._kernel_inputs(state, task_state),
                np.asarray(action, dtype=np.float64),
                self._constants,
            )
        except TypeError as error:
            _explain_kernel_error(error, state, task_state)
        return dict(zip(self.reward_term_names[:_NUM_TERMS], raw, strict=True))

    def reward_terms(
        self, prev_state: Batch, state: Batch, action: np.ndarray, task_state: Batch
    ) -> dict[str, np.ndarray]:
        del prev_state
        raw = np.array(list(self.raw_reward_terms(state, action, task_state).values()))
        terms, _ = _weigh(raw, self._weights_dt, self.config.clip_reward_at_zero)
        return dict(zip(self.reward_term_names, terms, strict=True))

    def transition(
        self,
        prev_state: Batch,
        state: Batch,
        action: np.ndarray,
        task_state: Batch,
        step: np.ndarray,
        rngs: list[np.random.Generator],
    ) -> Transition:
        """:meth:`Task.transition` as one compiled call (same results, bit for bit)."""
        del prev_state, step  # the countdown in the task state decides the resamples
        command, countdown, noise = self._next_command_and_noise(task_state, rngs)
        try:
            terms, reward, terminated, obs, last_action, air_time, swing_peak = _transition_kernel(
                *self._kernel_inputs(state, task_state),
                np.asarray(action, dtype=np.float64),
                command,
                noise if self.config.obs_noise else self._no_noise,
                self._constants,
            )
        except TypeError as error:
            _explain_kernel_error(error, state, task_state, action)
        next_task_state = _next_task_state(
            command, countdown, last_action, air_time, state, swing_peak, noise
        )
        return Transition(
            observation=obs,
            reward_terms=terms,
            reward=reward,
            terminated=terminated,
            success=np.zeros(len(reward), dtype=bool),
            task_state=next_task_state,
            info={"command": command.copy()},
        )

    def info(self, state: Batch, task_state: Batch) -> dict[str, np.ndarray]:
        return {"command": task_state["command"].copy()}


def check_state(state: Mapping[str, np.ndarray]) -> None:
    """Raise a ValueError naming the first missing, mis-shaped or mis-typed key of a Go1 state.

    For backends (the simulator, the real robot's driver, its twin): every key of
    :data:`sim2online_envs.robots.go1.STATE_KEYS`, with a leading batch axis, float64 (the
    contacts bool).
    """
    shapes = {key: spec.shape for key, spec in go1_robot.STATE_KEYS.items()}
    for key, shape in shapes.items():
        if key not in state:
            raise ValueError(f"Go1 state lacks {key!r}")
        if np.shape(state[key])[1:] != shape:
            raise ValueError(
                f"Go1 state[{key!r}] must have shape (B, {', '.join(map(str, shape))}), "
                f"got {np.shape(state[key])}"
            )
        dtype = np.dtype(go1_robot.STATE_KEYS[key].dtype)
        if np.asarray(state[key]).dtype != dtype:
            raise ValueError(
                f"Go1 state[{key!r}] must be {np.dtype(dtype).name}, got "
                f"{np.asarray(state[key]).dtype}"
            )


#: The state keys the compiled kernels read, with their number of dimensions (batch axis first).
_KERNEL_STATE_NDIM = {
    "local_linvel": 2, "gyro": 2, "base_rot": 3, "joint_pos": 2, "joint_vel": 2, "torque": 2,
    "foot_pos": 3, "foot_vel": 3, "foot_contact": 2, "trunk_contact": 1,
}  # fmt: skip


def _explain_kernel_error(
    error: TypeError, state: Batch, task_state: Batch, action: Any = None
) -> NoReturn:
    """Turn numba's "no matching definition" for a bad input into an error naming the input."""
    inputs = [(f"state[{key!r}]", key, state.get(key), n) for key, n in _KERNEL_STATE_NDIM.items()]
    inputs += [
        (f"task_state[{key!r}]", key, value, 2)
        for key, value in task_state.items()
        if key != "command_countdown"  # read in Python, not by the kernels
    ]
    if action is not None:
        inputs.append(("action", "action", action, 2))
    for name, key, value, ndim in inputs:
        if value is None:
            raise ValueError(f"Go1 {name} is missing") from error
        array = np.asarray(value)
        expected = np.bool_ if key.endswith("_contact") else np.float64
        if array.dtype != expected:
            raise ValueError(
                f"Go1 {name} must be {np.dtype(expected).name}, got {array.dtype}"
            ) from error
        if array.ndim != ndim:
            raise ValueError(
                f"Go1 {name} must have {ndim} dimensions (batch first), got shape {array.shape}"
            ) from error
    raise error
