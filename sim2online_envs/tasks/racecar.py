"""The race car parking task: drive an RC car to a goal and stay there, at 60 Hz.

Everything here is a function over arrays with a leading batch axis, shared by the single env,
the batched env and the real car. The robot state comes from a backend (the NumPy simulator in
:mod:`sim2online_envs.sim.racecar`, or motion capture on the real car) as (the keys, units and
frames are :mod:`sim2online_envs.robots.racecar`'s ``STATE_KEYS``):

- ``pose`` (B, 3): x, y (m) of the car's centre of mass in the arena frame, heading psi (rad);
- ``velocity`` (B, 3): vx, vy (m/s) in the car's body frame (forward, left), yaw rate (rad/s).

Reward (the study's, one function per term, weights in :class:`RaceCarTaskConfig`)::

    r_t = (d_{t-1} - d_t) + 1[d_t <= 0.3 m] - lambda_c ||a_t|| - lambda_l ||a_t - a_{t-1}||^2

with ``d`` the planar distance of the centre of mass to the goal. The paper gives the form, not
the weights: ``lambda_c = 0.005`` follows the action-cost weight of the ETH RC-car code the study's
car builds on; ``lambda_l = 0.01`` is this package's choice. Both are settings.

Episode ends. Reaching the goal does *not* terminate: parking means staying, and the bonus pays
for every step inside the radius (as in the study, whose car episodes run their full length).
Leaving the arena is no MDP end either: it is a safety matter for the wrappers (the real car's
geofence truncates with a reason), and ``info["out_of_arena"]`` reports it. So ``terminated`` is
always False and episodes end by the time limit (T = 250 steps, 4.2 s at 60 Hz).

Success (``info["is_success"]``): ``d_t <= success_radius`` (0.3 m), distance only, as the study's
reward; ``success_max_speed`` optionally also requires the car to be nearly stopped.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from sim2online_envs.config import coerce_config, replace_fields
from sim2online_envs.core import Batch, Task, Transition, sum_reward_rows
from sim2online_envs.robots import racecar as car_robot

__all__ = [
    "OBSERVATION_NAMES",
    "RaceCarTask",
    "RaceCarTaskConfig",
    "control_cost",
    "goal_bonus",
    "goal_distance",
    "goal_frame_observation",
    "progress_reward",
    "smoothness_cost",
]

#: The observation's components, in order.
OBSERVATION_NAMES = ("x", "y", "sin_psi", "cos_psi", "vx", "vy", "omega")


@dataclass(frozen=True)
class RaceCarTaskConfig:
    """Weights, timing, goal and start sampling of the parking task.

    Starts are drawn by the simulator (``start_distance_range`` from the arena centre, bearing and
    heading uniform); the goal by the task: at the arena centre plus a uniform offset of up to
    ``goal_position_range`` m per axis, heading uniform in ``goal_heading_range``. The reward
    ignores the goal heading; it sets the frame of the observation.
    """

    #: Seconds per control step (the paper's 60 Hz; the study's code ran at 30 Hz).
    control_dt: float = car_robot.CONTROL_DT
    #: Steps per episode (T).
    max_episode_steps: int = 250
    #: Radius of the goal region, m: the bonus and success threshold.
    success_radius: float = car_robot.PARKING_RADIUS
    #: If set, success also needs the planar speed below this (m/s); None: distance only.
    success_max_speed: float | None = None
    #: Weight of the progress term d_{t-1} - d_t (per metre).
    progress_weight: float = 1.0
    #: Reward per step inside the goal radius.
    goal_bonus_weight: float = 1.0
    #: lambda_c, weight of the action magnitude ||a_t||.
    control_weight: float = 0.005
    #: lambda_l, weight of the squared action change ||a_t - a_{t-1}||^2.
    smoothness_weight: float = 0.01
    #: Steering angle (rad) that action[0] = +1 asks for (the car's limit).
    max_steering: float = car_robot.MAX_STEERING
    #: Throttle duty cycle that action[1] = +1 asks for (the study caps it at 0.4).
    max_throttle: float = car_robot.MAX_THROTTLE
    #: Half the side of the square arena around the origin, m.
    arena_half_size: float = car_robot.ARENA_HALF_SIZE
    #: Distance of the start from the arena centre, m (drawn by the simulator).
    start_distance_range: tuple[float, float] = car_robot.START_DISTANCE_RANGE
    #: Half-width of the uniform goal offset from the arena centre, m, per axis.
    goal_position_range: float = 0.0
    #: Range of the goal heading, rad.
    goal_heading_range: tuple[float, float] = (-math.pi, math.pi)

    def __post_init__(self) -> None:
        positive = (
            "control_dt",
            "success_radius",
            "max_steering",
            "max_throttle",
            "arena_half_size",
        )
        for name in positive:
            _check_real(name, getattr(self, name), minimum=0.0, strict=True)
        for name in ("progress_weight", "goal_bonus_weight", "control_weight"):
            _check_real(name, getattr(self, name), minimum=0.0, strict=False)
        _check_real("smoothness_weight", self.smoothness_weight, minimum=0.0, strict=False)
        _check_real("goal_position_range", self.goal_position_range, minimum=0.0, strict=False)
        if self.success_max_speed is not None:
            _check_real("success_max_speed", self.success_max_speed, minimum=0.0, strict=True)
        steps = self.max_episode_steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ValueError(f"max_episode_steps must be an int >= 1, got {steps!r}")
        if self.max_steering >= math.pi / 2:
            raise ValueError(f"max_steering must be < pi/2 rad, got {self.max_steering}")
        if self.max_throttle > 1:
            raise ValueError(f"max_throttle must be <= 1 (a duty cycle), got {self.max_throttle}")
        for name in ("start_distance_range", "goal_heading_range"):
            low, high = _pair(name, getattr(self, name))
            if low > high:
                raise ValueError(f"{name} must satisfy low <= high, got {(low, high)}")
        if self.start_distance_range[0] < 0:
            raise ValueError(f"start_distance_range must be >= 0, got {self.start_distance_range}")
        reach = self.start_distance_range[1]
        if max(reach, self.goal_position_range) >= self.arena_half_size:
            raise ValueError(
                f"starts ({reach} m) and goals ({self.goal_position_range} m) must lie inside "
                f"the arena (arena_half_size={self.arena_half_size} m)"
            )

    def replace(self, **overrides: Any) -> RaceCarTaskConfig:
        """A copy with some fields changed; unknown names raise a TypeError naming them."""
        return replace_fields(self, overrides)


def _check_real(name: str, value: Any, minimum: float, strict: bool) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"RaceCarTaskConfig.{name} must be a finite number {bound}, got {value!r}")


def _pair(name: str, value: Any) -> tuple[float, float]:
    try:
        low, high = (float(item) for item in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"RaceCarTaskConfig.{name} must be a (low, high) pair, got {value!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"RaceCarTaskConfig.{name} must be finite, got {(low, high)}")
    return low, high


# -- task functions (batched) ---------------------------------------------------------------------


def goal_distance(pose: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """(B,) planar distance (m) from the car's centre of mass to the goal position."""
    return np.hypot(pose[:, 0] - goal[:, 0], pose[:, 1] - goal[:, 1])


def goal_frame_observation(pose: np.ndarray, velocity: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """(B, 7) float32: the car's pose in the goal frame and its body-frame velocities.

    ``x, y``: the car's position in the goal frame (x along the goal heading); ``sin psi, cos
    psi``: its heading relative to the goal heading; ``vx, vy, omega``: body-frame velocities
    (invariant to the goal frame, and what a controller needs: forward speed, side slip, yaw rate).
    """
    cos_g, sin_g = np.cos(goal[:, 2]), np.sin(goal[:, 2])
    dx, dy = pose[:, 0] - goal[:, 0], pose[:, 1] - goal[:, 1]
    heading = pose[:, 2] - goal[:, 2]
    obs = np.empty((pose.shape[0], 7), dtype=np.float32)
    obs[:, 0] = cos_g * dx + sin_g * dy
    obs[:, 1] = cos_g * dy - sin_g * dx
    obs[:, 2] = np.sin(heading)
    obs[:, 3] = np.cos(heading)
    obs[:, 4:7] = velocity
    return obs


def planar_speed(state: Batch) -> np.ndarray:
    """(B,) planar speed (m/s) from the body-frame velocities (vx, vy, omega)."""
    velocity = state["velocity"]
    return np.hypot(velocity[:, 0], velocity[:, 1])


def progress_reward(prev_distance: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """d_{t-1} - d_t: metres gained toward the goal this step."""
    return prev_distance - distance


def goal_bonus(distance: np.ndarray, radius: float) -> np.ndarray:
    """1[d_t <= radius] as float."""
    return (distance <= radius).astype(np.float64)


def control_cost(action: np.ndarray) -> np.ndarray:
    """||a_t||: the Euclidean norm of the normalised action (a cost, positive)."""
    return np.sqrt(np.einsum("bi,bi->b", action, action))


def smoothness_cost(action: np.ndarray, prev_action: np.ndarray) -> np.ndarray:
    """||a_t - a_{t-1}||^2: the squared change of the normalised action (a cost, positive)."""
    change = action - prev_action
    return np.einsum("bi,bi->b", change, change)


class RaceCarTask(Task):
    """Park the RC car at a goal: spaces, command mapping, reward terms and episode ends.

    ``task_state``: ``goal`` (B, 3) x, y, psi of the goal in the arena frame; ``prev_action``
    (B, 2) the last action applied (zeros at reset), for the smoothness term.
    """

    robot: ClassVar[str] = car_robot.NAME
    reward_term_names: ClassVar[tuple[str, ...]] = ("progress", "goal", "control", "smoothness")

    def __init__(self, config: RaceCarTaskConfig | Mapping[str, Any] | None = None):
        config = coerce_config(RaceCarTaskConfig, config, "config")
        self.config = config
        self.control_dt = float(config.control_dt)
        self.max_episode_steps = int(config.max_episode_steps)
        high = np.array([np.inf, np.inf, 1.0, 1.0, np.inf, np.inf, np.inf], dtype=np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def initial_task_state(self, state: Batch, rngs: list[np.random.Generator]) -> Batch:
        """Goal per world from its generator: 3 uniforms (x offset, y offset, heading)."""
        count = state["pose"].shape[0]
        if len(rngs) != count:
            raise ValueError(f"initial_task_state got {count} worlds but {len(rngs)} generators")
        draws = np.array([rng.random(3) for rng in rngs]).reshape(count, 3)
        cfg = self.config
        low, high = cfg.goal_heading_range
        goal = np.empty((count, 3))
        goal[:, :2] = cfg.goal_position_range * (2.0 * draws[:, :2] - 1.0)
        goal[:, 2] = low + (high - low) * draws[:, 2]
        return {"goal": goal, "prev_action": np.zeros((count, 2))}

    def command(self, action: np.ndarray, state: Batch, task_state: Batch) -> Batch:
        """Steering angle (rad) and throttle duty cycle; the goal rides along for drawing."""
        action = self._clipped(action)
        return {
            "steering": action[:, 0] * self.config.max_steering,
            "throttle": action[:, 1] * self.config.max_throttle,
            "goal": task_state["goal"],
        }

    def observe(self, state: Batch, task_state: Batch) -> np.ndarray:
        return goal_frame_observation(state["pose"], state["velocity"], task_state["goal"])

    def reward_terms(
        self, prev_state: Batch, state: Batch, action: np.ndarray, task_state: Batch
    ) -> dict[str, np.ndarray]:
        goal = task_state["goal"]
        return self._weighted_terms(
            goal_distance(prev_state["pose"], goal),
            goal_distance(state["pose"], goal),
            self._clipped(action),
            task_state["prev_action"],
        )

    def _weighted_terms(
        self,
        prev_distance: np.ndarray,
        distance: np.ndarray,
        clipped_action: np.ndarray,
        prev_action: np.ndarray,
    ) -> dict[str, np.ndarray]:
        cfg = self.config
        return {
            "progress": cfg.progress_weight * progress_reward(prev_distance, distance),
            "goal": cfg.goal_bonus_weight * goal_bonus(distance, cfg.success_radius),
            "control": -cfg.control_weight * control_cost(clipped_action),
            "smoothness": -cfg.smoothness_weight * smoothness_cost(clipped_action, prev_action),
        }

    def terminated(self, state: Batch, task_state: Batch) -> np.ndarray:
        """Never: parking means staying, and leaving the arena is the wrappers' truncation."""
        return np.zeros(state["pose"].shape[0], dtype=bool)

    def success(self, state: Batch, task_state: Batch) -> np.ndarray:
        return self._success(goal_distance(state["pose"], task_state["goal"]), planar_speed(state))

    def _success(self, distance: np.ndarray, speed: np.ndarray) -> np.ndarray:
        cfg = self.config
        inside = distance <= cfg.success_radius
        if cfg.success_max_speed is not None:
            inside &= speed <= cfg.success_max_speed
        return inside

    def advance(
        self,
        task_state: Batch,
        state: Batch,
        action: np.ndarray,
        step: np.ndarray,
        rngs: list[np.random.Generator],
    ) -> Batch:
        """Remember the action for the next smoothness term (the goal stays)."""
        del state, step, rngs
        return {"goal": task_state["goal"], "prev_action": self._clipped(action)}

    def info(self, state: Batch, task_state: Batch) -> dict[str, np.ndarray]:
        """``distance`` to the goal (m), planar ``speed`` (m/s), ``out_of_arena`` (bool)."""
        pose = state["pose"]
        return self._info(pose, goal_distance(pose, task_state["goal"]), planar_speed(state))

    def _info(self, pose: np.ndarray, distance: np.ndarray, speed: np.ndarray) -> Batch:
        return {
            "distance": distance,
            "speed": speed,
            "out_of_arena": car_robot.out_of_arena(pose, self.config.arena_half_size),
        }

    def transition(
        self,
        prev_state: Batch,
        state: Batch,
        action: np.ndarray,
        task_state: Batch,
        step: np.ndarray,
        rngs: list[np.random.Generator],
    ) -> Transition:
        """:meth:`Task.transition` with the distance, speed and clipped action computed once
        (the default computes the distance four times): the same functions, the same bits."""
        del step, rngs
        pose, goal = state["pose"], task_state["goal"]
        clipped = self._clipped(action)
        distance, speed = goal_distance(pose, goal), planar_speed(state)
        terms = self._weighted_terms(
            goal_distance(prev_state["pose"], goal), distance, clipped, task_state["prev_action"]
        )
        matrix = np.stack([terms[name] for name in self.reward_term_names])
        next_task_state = {"goal": goal, "prev_action": clipped}
        return Transition(
            observation=goal_frame_observation(pose, state["velocity"], goal),
            reward_terms=matrix,
            reward=sum_reward_rows(matrix),
            terminated=np.zeros(pose.shape[0], dtype=bool),
            success=self._success(distance, speed),
            task_state=next_task_state,
            info=self._info(pose, distance, speed),
        )

    def _clipped(self, action: np.ndarray) -> np.ndarray:
        """(B, 2) float64 action clipped to [-1, 1]; a ValueError for bad shapes or NaN."""
        action = np.asarray(action, dtype=np.float64)
        if action.ndim != 2 or action.shape[1] != 2:
            raise ValueError(f"race car actions must have shape (B, 2), got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"race car action holds non-finite values: {action.tolist()}")
        return np.clip(action, -1.0, 1.0)
