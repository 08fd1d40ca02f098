"""Go1 joystick task: track a body-frame velocity command (vx, vy, ωz) at 50 Hz.

The task is written after MuJoCo Playground's ``locomotion/go1/joystick.py``: a config dataclass,
one small function per reward term with its weight, each weighted term reported in
``info["reward_terms"]``. Every function takes arrays with a leading batch axis, so the single
env, the batched vector env and the real robot share every line of it.

The robot's raw state (a dict of batched arrays) is what every Go1 backend reports:

=================  ===========  ==========================================================
key                shape        meaning (SI units)
=================  ===========  ==========================================================
``joint_pos``      (B, 12)      joint angles [rad], order FR, FL, RR, RL × hip, thigh, calf
``joint_vel``      (B, 12)      joint velocities [rad/s]
``torque``         (B, 12)      motor torques of the last physics step [N·m]
``base_quat``      (B, 4)       trunk orientation (w, x, y, z), IMU frame in world frame
``base_rot``       (B, 3, 3)    the same orientation as a rotation matrix, body to world
                                (:func:`rotation_matrix` of ``base_quat`` where the robot
                                reports only the quaternion; the simulator reads MuJoCo's)
``gyro``           (B, 3)       trunk angular velocity, body frame [rad/s]
``local_linvel``   (B, 3)       trunk linear velocity, body frame [m/s]
``accelerometer``  (B, 3)       specific force at the IMU, body frame [m/s²] (unused)
``foot_pos``       (B, 4, 3)    foot centres, world frame [m] (the z of each is used)
``foot_vel``       (B, 4, 3)    foot velocities, world frame [m/s]
``foot_contact``   (B, 4)       bool, foot touches the ground
``trunk_contact``  (B,)         bool, trunk touches the ground
=================  ===========  ==========================================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from gymnasium import spaces

from sim2online_envs.core import Batch, Task

__all__ = [
    "COMMAND_RANGES",
    "FOOT_NAMES",
    "HOME_JOINT_POS",
    "JOINT_LOWER",
    "JOINT_NAMES",
    "JOINT_UPPER",
    "OBS_SLICES",
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

#: Legs in the unitree_legged_sdk's motor order; each leg has a hip, thigh and calf joint.
FOOT_NAMES = ("FR", "FL", "RR", "RL")
JOINT_NAMES = tuple(
    f"{leg}_{part}_joint" for leg in FOOT_NAMES for part in ("hip", "thigh", "calf")
)
#: Standing pose [rad] (Menagerie's "home" keyframe): actions are offsets from it.
HOME_JOINT_POS = np.array([0.0, 0.9, -1.8] * 4)
#: Joint limits [rad] (unitree_legged_sdk / Menagerie go1.xml).
JOINT_LOWER = np.array([-0.863, -0.686, -2.818] * 4)
JOINT_UPPER = np.array([0.863, 4.501, -0.888] * 4)
#: Motor torque limits [N·m].
TORQUE_LIMITS = np.array([23.7, 23.7, 35.55] * 4)

#: Half-widths of the uniform command distribution (vx [m/s], vy [m/s], ωz [rad/s]).
COMMAND_RANGES: dict[str, tuple[float, float, float]] = {
    "narrow": (0.5, 0.8, 1.2),  # the study's prior (pretraining) range
    "full": (1.5, 0.8, 1.2),  # the full range, as in MuJoCo Playground
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
NUM_JOINTS = 12
NUM_FEET = 4


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
    :param episode_length: steps per episode before time-limit truncation.
    :param action_scale: joint-target offset [rad] per unit action: targets = home + 0.5·a.
    :param command_range: "narrow" ±(0.5, 0.8, 1.2), "full" ±(1.5, 0.8, 1.2), or your own
        three half-widths (vx [m/s], vy [m/s], ωz [rad/s]).
    :param command_resample_steps: a new command is drawn every this many steps (10 s).
    :param tracking_sigma: σ of the tracking rewards exp(−err²/σ).
    :param max_foot_height: swing height [m] the feet terms aim for (foot centre).
    :param soft_joint_limit_factor: fraction of each joint's range, about its middle, beyond
        which ``dof_pos_limits`` penalises.
    :param fall_up_z: a fall is the trunk's up axis having a world z below this (60° tilt).
    :param terminate_on_trunk_contact: also end the episode when the trunk touches the ground.
    :param clip_reward_at_zero: add a ``clip_at_zero`` term that lifts a negative reward to 0
        (Playground clips the reward to ≥ 0, so that ending an episode never pays).
    :param obs_noise: add uniform observation noise (off by default).
    :param noise: the noise scales used when ``obs_noise`` is on.
    :param weights: the reward weights.
    """

    control_dt: float = 0.02
    episode_length: int = 1000
    action_scale: float = 0.5
    command_range: str | tuple[float, float, float] = "narrow"
    command_resample_steps: int = 500
    tracking_sigma: float = 0.25
    max_foot_height: float = 0.1
    soft_joint_limit_factor: float = 0.95
    fall_up_z: float = 0.5
    terminate_on_trunk_contact: bool = True
    clip_reward_at_zero: bool = True
    obs_noise: bool = False
    noise: Go1ObsNoise = dataclasses.field(default_factory=Go1ObsNoise)
    weights: Go1RewardWeights = dataclasses.field(default_factory=Go1RewardWeights)

    def __post_init__(self) -> None:
        for name in ("control_dt", "action_scale", "tracking_sigma", "max_foot_height"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"Go1TaskConfig.{name} must be a positive number, got {value!r}")
        for name in ("episode_length", "command_resample_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Go1TaskConfig.{name} must be an int >= 1, got {value!r}")
        if not 0.0 < self.soft_joint_limit_factor <= 1.0:
            raise ValueError(
                "Go1TaskConfig.soft_joint_limit_factor must be in (0, 1], got "
                f"{self.soft_joint_limit_factor!r}"
            )
        if not -1.0 <= self.fall_up_z < 1.0:
            raise ValueError(f"Go1TaskConfig.fall_up_z must be in [-1, 1), got {self.fall_up_z!r}")
        self.command_half_widths  # noqa: B018  (validates command_range)

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

#: ``_vecdot(a, b)``: Σ a_i b_i over the last axis, broadcasting the others (NumPy >= 2 has it as
#: one gufunc call; einsum on older NumPy).
_vecdot = getattr(np, "vecdot", None) or (lambda a, b: np.einsum("...i,...i->...", a, b))


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


# -- Reward terms: one function each, raw (unweighted) values of shape (B,) ----------------------
# Each takes the quantities it needs, some of them computed once per step for several terms by
# Go1JoystickTask.raw_reward_terms (the rotation matrix, the joint offsets from home, the feet's
# speeds and touchdowns), and uses as few NumPy calls as it can: at batch size 1 the calls are
# the cost.


def reward_tracking_lin_vel(
    command: np.ndarray, local_linvel: np.ndarray, sigma: float
) -> np.ndarray:
    """exp(−‖v_xy* − v_xy‖² / σ): follow the commanded body-frame planar velocity."""
    error = command[:, :2] - local_linvel[:, :2]
    return np.exp(_vecdot(error, error) / -sigma)


def reward_tracking_ang_vel(command: np.ndarray, gyro: np.ndarray, sigma: float) -> np.ndarray:
    """exp(−(ωz* − ωz)² / σ): follow the commanded yaw rate."""
    error = command[:, 2] - gyro[:, 2]
    return np.exp(error * error / -sigma)


def cost_lin_vel_z(rot: np.ndarray, local_linvel: np.ndarray) -> np.ndarray:
    """v_z²: vertical bouncing of the trunk (world frame; ``rot`` body to world, (B, 3, 3))."""
    world_z = _vecdot(rot[:, 2], local_linvel)
    return world_z * world_z


def cost_ang_vel_xy(rot: np.ndarray, gyro: np.ndarray) -> np.ndarray:
    """ω_x² + ω_y²: roll and pitch rates of the trunk (world frame)."""
    world_xy = _vecdot(rot[:, :2], gyro[:, None, :])
    return _vecdot(world_xy, world_xy)


def cost_orientation(rot: np.ndarray) -> np.ndarray:
    """x² + y² of the trunk's up axis in the world frame: zero when level."""
    up_xy = rot[:, :2, 2]
    return _vecdot(up_xy, up_xy)


def cost_dof_pos_limits(
    joint_pos: np.ndarray, soft_lower: np.ndarray, soft_upper: np.ndarray
) -> np.ndarray:
    """Σ distance beyond the soft joint limits [rad]."""
    # a joint is beyond one limit at most, so the larger distance is the one (or neither)
    beyond = np.maximum(np.maximum(soft_lower - joint_pos, joint_pos - soft_upper), 0.0)
    return beyond.sum(axis=1)


def reward_pose(joint_offset: np.ndarray, joint_weights: np.ndarray) -> np.ndarray:
    """exp(−Σ w (q − q_home)²): stay near the standing pose (calves weighted 0.1)."""
    return np.exp(-_vecdot(joint_offset * joint_offset, joint_weights))


def cost_termination(terminated: np.ndarray) -> np.ndarray:
    """1 on a fall."""
    return terminated.astype(np.float64)


def cost_stand_still(command_active: np.ndarray, joint_offset: np.ndarray) -> np.ndarray:
    """Σ |q − q_home| while the command is (nearly) zero: stand still when told to."""
    return np.where(command_active, 0.0, np.abs(joint_offset).sum(axis=1))


def cost_torques(torque: np.ndarray) -> np.ndarray:
    """‖τ‖₂ + ‖τ‖₁ [N·m]."""
    return np.sqrt(_vecdot(torque, torque)) + np.abs(torque).sum(axis=1)


def cost_action_rate(action: np.ndarray, last_action: np.ndarray) -> np.ndarray:
    """‖a − a_prev‖²: smooth actions."""
    change = action - last_action
    return _vecdot(change, change)


def cost_energy(joint_vel: np.ndarray, torque: np.ndarray) -> np.ndarray:
    """Σ |q̇| |τ| [W]: mechanical power."""
    return np.abs(joint_vel * torque).sum(axis=1)


def foot_speed_sq(foot_vel: np.ndarray) -> np.ndarray:
    """‖v_xy‖² of each foot, (B, 4)."""
    xy = foot_vel[:, :, :2]
    return _vecdot(xy, xy)


def cost_feet_clearance(
    foot_height: np.ndarray, foot_speed_sq: np.ndarray, max_foot_height: float
) -> np.ndarray:
    """Σ |z_foot − h| √‖v_foot,xy‖: moving feet should move at the swing height."""
    return _vecdot(np.abs(foot_height - max_foot_height), np.sqrt(np.sqrt(foot_speed_sq)))


def cost_feet_height(
    swing_peak: np.ndarray,
    first_contact: np.ndarray,
    command_active: np.ndarray,
    max_foot_height: float,
) -> np.ndarray:
    """Σ (peak/h − 1)² at touchdown: each swing should reach the swing height."""
    error = swing_peak / max_foot_height - 1.0
    return _vecdot(error * error, first_contact) * command_active


def cost_feet_slip(
    foot_speed_sq: np.ndarray, contact: np.ndarray, command_active: np.ndarray
) -> np.ndarray:
    """Σ ‖v_foot,xy‖² of feet on the ground: no slipping."""
    return _vecdot(foot_speed_sq, contact) * command_active


def reward_feet_air_time(
    air_time: np.ndarray, first_contact: np.ndarray, command_active: np.ndarray
) -> np.ndarray:
    """Σ (t_air − 0.1 s) at touchdown: take steps rather than shuffle."""
    return _vecdot(air_time - 0.1, first_contact) * command_active


class Go1JoystickTask(Task):
    """Velocity tracking for the Unitree Go1, over batched arrays.

    Observation (48,) float32: body-frame linear velocity (3), gyro (3), gravity in the body
    frame (3), joint positions − home (12), joint velocities (12), last action (12), command (3);
    see :data:`OBS_SLICES`. Action (12,) in [−1, 1]: joint targets = home + ``action_scale``·a,
    tracked by the motors' PD loop (Kp 35, Kd 0.5). Commands (vx, vy, ωz) are drawn uniformly
    within ``command_range`` at reset and every ``command_resample_steps`` steps.

    Task state (per world): ``command`` (3), ``last_action`` (12), ``feet_air_time`` (4),
    ``last_contact`` (4), ``swing_peak`` (4), ``obs_noise`` (48, zero unless noise is on).

    Random draws, from each world's generator: at reset the command (3 uniforms), then with
    noise on the observation noise (48); after each step, on a resampling step the command,
    then with noise on the next observation's noise.
    """

    robot: ClassVar[str] = "go1"
    reward_term_names: ClassVar[tuple[str, ...]] = (
        *(field.name for field in dataclasses.fields(Go1RewardWeights)),
        "clip_at_zero",
    )

    def __init__(self, config: Go1TaskConfig | None = None):
        self.config = config if config is not None else Go1TaskConfig()
        if not isinstance(self.config, Go1TaskConfig):
            raise TypeError(f"config must be a Go1TaskConfig, got {type(self.config).__name__}")
        cfg = self.config
        self.control_dt = float(cfg.control_dt)
        self.max_episode_steps = int(cfg.episode_length)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(NUM_JOINTS,), dtype=np.float32)
        self.command_half_widths = cfg.command_half_widths
        middle = 0.5 * (JOINT_LOWER + JOINT_UPPER)
        half_range = 0.5 * (JOINT_UPPER - JOINT_LOWER) * cfg.soft_joint_limit_factor
        self.soft_lower = middle - half_range
        self.soft_upper = middle + half_range
        self._pose_weights = np.array([1.0, 1.0, 0.1] * 4)
        # weight * control_dt for each term, in reporting order
        self._weight_column = np.array(
            [
                [getattr(cfg.weights, field.name) * self.control_dt]
                for field in dataclasses.fields(Go1RewardWeights)
            ]
        )
        noise = cfg.noise
        self._noise_half_widths = np.zeros(OBS_DIM)
        for name in ("local_linvel", "gyro", "gravity", "joint_pos", "joint_vel"):
            self._noise_half_widths[OBS_SLICES[name]] = getattr(noise, name) * noise.level

    # -- episode variables ---------------------------------------------------------------------

    def _draw_command(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-self.command_half_widths, self.command_half_widths)

    def _draw_noise(self, rngs: list[np.random.Generator]) -> np.ndarray:
        if not self.config.obs_noise:
            return np.zeros((len(rngs), OBS_DIM))
        return np.stack([rng.uniform(-1.0, 1.0, OBS_DIM) for rng in rngs]) * self._noise_half_widths

    def initial_task_state(self, state: Batch, rngs: list[np.random.Generator]) -> Batch:
        count = state["joint_pos"].shape[0]
        if len(rngs) != count:
            raise ValueError(f"got {len(rngs)} generators for {count} worlds")
        command = np.stack([self._draw_command(rng) for rng in rngs])
        return {
            "command": command,
            "last_action": np.zeros((count, NUM_JOINTS)),
            "feet_air_time": np.zeros((count, NUM_FEET)),
            "last_contact": np.zeros((count, NUM_FEET), dtype=bool),
            "swing_peak": np.zeros((count, NUM_FEET)),
            "obs_noise": self._draw_noise(rngs),
        }

    def advance(
        self,
        task_state: Batch,
        state: Batch,
        action: np.ndarray,
        step: np.ndarray,
        rngs: list[np.random.Generator],
    ) -> Batch:
        contact = state["foot_contact"]
        command = task_state["command"]
        step = np.asarray(step)
        if not (step % self.config.command_resample_steps).all():  # some world may be due
            due = (step % self.config.command_resample_steps == 0) & (step > 0)
            if due.any():
                command = command.copy()
                for world in np.flatnonzero(np.broadcast_to(due, (len(rngs),))):
                    command[world] = self._draw_command(rngs[world])
        swing_peak = np.maximum(task_state["swing_peak"], state["foot_pos"][:, :, 2])
        # a foot on the ground starts its next swing from zero
        return {
            "command": command,
            "last_action": np.minimum(np.maximum(action, -1.0), 1.0),
            "feet_air_time": np.where(contact, 0.0, task_state["feet_air_time"] + self.control_dt),
            "last_contact": contact,
            "swing_peak": np.where(contact, 0.0, swing_peak),
            "obs_noise": self._draw_noise(rngs),
        }

    # -- action, observation -------------------------------------------------------------------

    def command(self, action: np.ndarray, state: Batch, task_state: Batch) -> Batch:
        action = np.asarray(action, dtype=np.float64)
        if action.ndim != 2 or action.shape[1] != NUM_JOINTS:
            raise ValueError(f"action must have shape (B, {NUM_JOINTS}), got {action.shape}")
        clipped = np.minimum(np.maximum(action, -1.0), 1.0)
        return {"joint_targets": HOME_JOINT_POS + self.config.action_scale * clipped}

    def observe(self, state: Batch, task_state: Batch) -> np.ndarray:
        parts = (
            state["local_linvel"],
            state["gyro"],
            np.negative(state["base_rot"][:, 2]),  # gravity in the body frame: R^T (0, 0, -1)
            state["joint_pos"] - HOME_JOINT_POS,
            state["joint_vel"],
            task_state["last_action"],
            task_state["command"],
        )
        obs = np.concatenate(parts, axis=1, dtype=np.float32)  # the layout of OBS_SLICES
        if self.config.obs_noise:
            obs += task_state["obs_noise"]
        return obs

    # -- rewards and episode ends --------------------------------------------------------------

    def _fallen(self, rot: np.ndarray, trunk_contact: np.ndarray) -> np.ndarray:
        fallen = rot[:, 2, 2] < self.config.fall_up_z  # the world z of the trunk's up axis
        if self.config.terminate_on_trunk_contact:
            fallen |= trunk_contact
        return fallen

    def terminated(self, state: Batch, task_state: Batch) -> np.ndarray:
        return self._fallen(state["base_rot"], state["trunk_contact"])

    def success(self, state: Batch, task_state: Batch) -> np.ndarray:
        """Velocity tracking has no success state: always False."""
        return np.zeros(state["joint_pos"].shape[0], dtype=bool)

    def raw_reward_terms(
        self, state: Batch, action: np.ndarray, task_state: Batch
    ) -> dict[str, np.ndarray]:
        """Every term's unweighted value, (B,) each, in :attr:`reward_term_names` order."""
        cfg = self.config
        # what several terms share, computed once
        command = task_state["command"]
        command_active = _vecdot(command, command) > 0.01**2  # ‖command‖ > 0.01
        action = np.minimum(np.maximum(action, -1.0), 1.0)
        rot = state["base_rot"]
        local_linvel, gyro = state["local_linvel"], state["gyro"]
        joint_offset = state["joint_pos"] - HOME_JOINT_POS
        torque = state["torque"]
        contact = state["foot_contact"]
        foot_height = state["foot_pos"][:, :, 2]
        speed_sq = foot_speed_sq(state["foot_vel"])
        # feet bookkeeping as in Playground: a touchdown after time in the air
        air_time = task_state["feet_air_time"]
        first_contact = (air_time > 0.0) & (contact | task_state["last_contact"])
        swing_peak = np.maximum(task_state["swing_peak"], foot_height)
        return {
            "tracking_lin_vel": reward_tracking_lin_vel(command, local_linvel, cfg.tracking_sigma),
            "tracking_ang_vel": reward_tracking_ang_vel(command, gyro, cfg.tracking_sigma),
            "lin_vel_z": cost_lin_vel_z(rot, local_linvel),
            "ang_vel_xy": cost_ang_vel_xy(rot, gyro),
            "orientation": cost_orientation(rot),
            "dof_pos_limits": cost_dof_pos_limits(
                state["joint_pos"], self.soft_lower, self.soft_upper
            ),
            "pose": reward_pose(joint_offset, self._pose_weights),
            "termination": cost_termination(self._fallen(rot, state["trunk_contact"])),
            "stand_still": cost_stand_still(command_active, joint_offset),
            "torques": cost_torques(torque),
            "action_rate": cost_action_rate(action, task_state["last_action"]),
            "energy": cost_energy(state["joint_vel"], torque),
            "feet_clearance": cost_feet_clearance(foot_height, speed_sq, cfg.max_foot_height),
            "feet_height": cost_feet_height(
                swing_peak, first_contact, command_active, cfg.max_foot_height
            ),
            "feet_slip": cost_feet_slip(speed_sq, contact, command_active),
            "feet_air_time": reward_feet_air_time(
                air_time + self.control_dt, first_contact, command_active
            ),
        }

    def reward_terms(
        self, prev_state: Batch, state: Batch, action: np.ndarray, task_state: Batch
    ) -> dict[str, np.ndarray]:
        del prev_state
        raw = self.raw_reward_terms(state, action, task_state)
        count = state["joint_pos"].shape[0]
        # weight all terms at once: row k is term k, the last row the clip
        weighted = np.empty((len(raw) + 1, count))
        np.multiply(
            np.concatenate(list(raw.values())).reshape(len(raw), count),
            self._weight_column,
            out=weighted[:-1],
        )
        if self.config.clip_reward_at_zero:
            # the running sum adds the terms one by one, in reporting order, as the envs do
            np.maximum(-np.add.accumulate(weighted[:-1], axis=0)[-1], 0.0, out=weighted[-1])
        else:
            weighted[-1] = 0.0
        return dict(zip(self.reward_term_names, weighted, strict=True))

    def info(self, state: Batch, task_state: Batch) -> dict[str, np.ndarray]:
        return {"command": task_state["command"].copy()}


def check_state(state: Mapping[str, np.ndarray]) -> None:
    """Raise a ValueError naming the first missing or mis-shaped key of a Go1 state.

    For backends (the simulator, the real robot's driver, its twin): every key listed in this
    module's docstring, with a leading batch axis.
    """
    shapes = {
        "joint_pos": (NUM_JOINTS,),
        "joint_vel": (NUM_JOINTS,),
        "torque": (NUM_JOINTS,),
        "base_quat": (4,),
        "base_rot": (3, 3),
        "gyro": (3,),
        "local_linvel": (3,),
        "accelerometer": (3,),
        "foot_pos": (NUM_FEET, 3),
        "foot_vel": (NUM_FEET, 3),
        "foot_contact": (NUM_FEET,),
        "trunk_contact": (),
    }
    for key, shape in shapes.items():
        if key not in state:
            raise ValueError(f"Go1 state lacks {key!r}")
        if np.shape(state[key])[1:] != shape:
            raise ValueError(
                f"Go1 state[{key!r}] must have shape (B, {', '.join(map(str, shape))}), "
                f"got {np.shape(state[key])}"
            )
