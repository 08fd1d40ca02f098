"""A scripted parking controller for the RC race car, from the observation alone.

:class:`ParkingController` maps the ``SimRaceCar-v0`` observation (the car's pose in the goal
frame and its body-frame velocities) to an action, without privileged state, so it runs unchanged
on the real car and on batches of observations. It is a geometric pure-pursuit parker:

1. The goal in the rear-axle frame is ``(gx, gy)`` at distance ``r``. The circle through the rear
   axle, tangent to the car's heading and through the goal, has curvature ``k = 2 gy / r^2``;
   it serves driving forward (goal ahead, ``gx > 0``) and in reverse (goal behind) alike, because
   a kinematic car traces the same circle in both directions for one steering angle.
2. If that arc is too tight for the steering (``|k| > reach_margin * k_max``, goal beside the car
   inside a turning circle), the car backs off instead: it drives away along its axis (reverse if
   the goal is ahead, forward if behind) with full counter-steer, which turns the goal towards
   the axis until an arc reaches it (a three-point turn without memory).
3. Steering ``atan(L k)`` over the steering limit; speed target ``min(cruise_speed,
   distance_gain * d)`` in the driving direction, zero once within ``park_radius`` of the goal;
   duty = feed-forward duty for that speed (from the nominal motor model) plus a proportional
   term on the speed error, its gain an acceleration per m/s turned into duty through the
   nominal motor gain over mass (so one gain fits light and heavy cars), so the car brakes to a
   stop on the goal; action[1] is that duty over the task's ``max_throttle``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim2online_envs.controllers import ScriptedPolicy
from sim2online_envs.robots.racecar import MAX_STEERING, MAX_THROTTLE
from sim2online_envs.sim.racecar import CarParams

__all__ = ["ParkingController", "make_controller"]


@dataclass(frozen=True)
class ParkingController(ScriptedPolicy):
    """``controller(obs) -> action``: park the car at the goal (see the module docstring).

    :param params: the car's nominal parameters (geometry, steering limit, motor model).
    :param max_steering: steering angle (rad) of action[0] = 1 (the task's scale).
    :param max_throttle: duty cycle of action[1] = 1 (the task's scale).
    :param cruise_speed: top speed target, m/s.
    :param distance_gain: speed target per metre to the goal, 1/s (sets the approach).
    :param speed_gain: commanded acceleration per m/s of speed error, 1/s.
    :param park_radius: within this distance (m) of the goal the car only brakes to a stop.
    :param reach_margin: fraction of the tightest curvature an arc to the goal may use.
    :param curvature_gain: gain on the error between the arc's and the measured curvature
        ``omega / vx`` (0: open-loop steering).
    :param feedback_speed: the measured curvature counts above this forward speed, m/s.
    """

    params: CarParams = field(default_factory=CarParams)
    max_steering: float = MAX_STEERING
    max_throttle: float = MAX_THROTTLE
    cruise_speed: float = 1.8
    distance_gain: float = 2.0
    speed_gain: float = 4.2
    park_radius: float = 0.12
    reach_margin: float = 0.9
    curvature_gain: float = 2.0
    feedback_speed: float = 0.3

    def __post_init__(self) -> None:
        names = ("max_steering", "max_throttle", "cruise_speed", "distance_gain", "speed_gain")
        for name in (*names, "park_radius"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ParkingController.{name} must be > 0, got {value!r}")
        if not 0 < self.reach_margin <= 1:
            raise ValueError(f"reach_margin must be in (0, 1], got {self.reach_margin}")

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Action(s) for one (7,) observation or a batch (B, 7); float32, in [-1, 1]."""
        obs = np.asarray(obs, dtype=np.float64)
        single = obs.ndim == 1
        batch = obs.reshape(1, -1) if single else obs
        if batch.ndim != 2 or batch.shape[1] != 7:
            raise ValueError(f"race car observations have shape (7,) or (B, 7), got {obs.shape}")
        action = self._act(batch)
        return action[0] if single else action

    def _act(self, obs: np.ndarray) -> np.ndarray:
        p = self.params
        x, y, sin_psi, cos_psi, vx = obs[:, 0], obs[:, 1], obs[:, 2], obs[:, 3], obs[:, 4]
        # The goal (origin of the goal frame) seen from the car: body frame, then rear axle.
        goal_x = -(cos_psi * x + sin_psi * y)
        goal_y = sin_psi * x - cos_psi * y
        distance = np.hypot(goal_x, goal_y)
        goal_x = goal_x + p.lr
        reach_sq = np.maximum(goal_x * goal_x + goal_y * goal_y, 1e-9)
        curvature = 2.0 * goal_y / reach_sq
        max_curvature = math.tan(min(self.max_steering, p.max_steering)) / p.wheelbase
        ahead = np.where(goal_x >= 0.0, 1.0, -1.0)
        reachable = np.abs(curvature) <= self.reach_margin * max_curvature
        side = np.where(goal_y >= 0.0, 1.0, -1.0)
        direction = np.where(reachable, ahead, -ahead)
        curvature = np.where(reachable, curvature, -side * max_curvature)
        # Curvature feedback: the path's measured curvature omega / vx pulls the command, so a
        # steering trim or tyre slip bends the path less (only where vx says anything).
        moving = np.abs(vx) >= self.feedback_speed
        measured = np.where(moving, obs[:, 6] / np.where(moving, vx, 1.0), curvature)
        corrected = curvature + self.curvature_gain * (curvature - measured)
        corrected = np.clip(corrected, -max_curvature, max_curvature)
        steering = np.arctan(p.wheelbase * corrected) / self.max_steering

        speed = np.minimum(self.cruise_speed, self.distance_gain * distance)
        speed = np.where(distance <= self.park_radius, 0.0, direction * speed)
        duty = self._feedforward(speed) + (self.speed_gain * p.mass / p.motor_cm1) * (speed - vx)
        action = np.stack([steering, duty / self.max_throttle], axis=1)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _feedforward(self, speed: np.ndarray) -> np.ndarray:
        """Duty cycle that holds ``speed`` on the nominal motor model (zero for zero speed)."""
        p = self.params
        magnitude = np.abs(speed)
        resistance = p.rolling_resistance * np.tanh(magnitude / p.rolling_smoothing_speed)
        resistance += (p.drag * magnitude + p.viscous_drag) * magnitude
        duty = resistance / np.maximum(p.motor_cm1 - p.motor_cm2 * magnitude, 1e-6)
        return np.sign(speed) * duty


def make_controller(env: Any) -> ParkingController:
    """The parking controller matched to a ``SimRaceCar-v0`` env's car and steering scale."""
    env = getattr(env, "unwrapped", env)
    params = getattr(env, "params", CarParams())
    config = getattr(getattr(env, "task", None), "config", None)
    max_steering = getattr(config, "max_steering", params.max_steering)
    max_throttle = getattr(config, "max_throttle", MAX_THROTTLE)
    return ParkingController(params=params, max_steering=max_steering, max_throttle=max_throttle)
