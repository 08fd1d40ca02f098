"""Go1 state from what the robot measures: leg kinematics and a linear Kalman filter.

The robot measures joint angles, velocities and torques, the IMU (orientation, gyro,
accelerometer) and four foot-force sensors. The task also reads the trunk's linear velocity,
the feet's world positions and velocities and the trunk's contact, which no sensor gives:

* ``local_linvel``: :class:`VelocityFilter`, a linear Kalman filter on the trunk's world-frame
  velocity v (3 states). Prediction: v += (R a + g) dt from the accelerometer (specific force a,
  body frame) and the IMU orientation R, process noise ``accel_noise``² dt² per axis. Update:
  every foot in contact (foot force above the threshold) is taken to stand still, so the leg
  gives v = -R (ω × p + J(q) q̇), with p the foot in the trunk frame (the robot module's leg
  kinematics) and J its Jacobian; each stance leg is one 3-D measurement with standard deviation
  ``leg_velocity_noise``. With no foot in contact the filter integrates the IMU alone.
* ``foot_pos`` (world): the feet in the trunk frame rotated by R, with the trunk at x = y = 0
  (no odometry) and at the kinematic height above flat ground (the lowest foot on the ground):
  the task reads only the feet's heights, which this gets right on flat ground.
* ``foot_vel`` (world): v + R (ω × p + J q̇).
* ``trunk_contact``: the kinematic trunk height below ``trunk_contact_height`` (no sensor).
"""

from __future__ import annotations

import numpy as np

from sim2online_envs.robots.go1 import FOOT_RADIUS, NUM_FEET, feet_in_trunk

__all__ = ["GRAVITY", "VelocityFilter", "feet_and_jacobians", "kinematic_state", "quat_to_rot"]

#: Gravitational acceleration in the world frame [m/s²].
GRAVITY = np.array([0.0, 0.0, -9.81])
_STEP = 1e-6


def quat_to_rot(quat: np.ndarray) -> np.ndarray:
    """The rotation matrix (3, 3), body to world, of a quaternion (w, x, y, z) (normalised)."""
    w, x, y, z = np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def feet_and_jacobians(joint_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Feet in the trunk frame (4, 3) and each leg's Jacobian (4, 3, 3) d foot / d (its joints).

    Central differences of the robot module's kinematics, all legs at once (one call of 7).
    """
    q = np.asarray(joint_pos, dtype=np.float64).reshape(12)
    batch = np.repeat(q[None], 7, axis=0)
    for k in range(3):
        batch[1 + 2 * k, k::3] += _STEP
        batch[2 + 2 * k, k::3] -= _STEP
    feet = feet_in_trunk(batch)  # (7, 4, 3)
    jacobians = np.empty((NUM_FEET, 3, 3))
    for k in range(3):
        jacobians[:, :, k] = (feet[1 + 2 * k] - feet[2 + 2 * k]) / (2 * _STEP)
    return feet[0], jacobians


class VelocityFilter:
    """Linear Kalman filter of the trunk's world-frame velocity (see the module docstring)."""

    def __init__(self, accel_noise: float, leg_velocity_noise: float):
        self.accel_noise = float(accel_noise)
        self.leg_variance = float(leg_velocity_noise) ** 2
        self.reset()

    def reset(self, velocity: np.ndarray | None = None) -> None:
        """Start again at ``velocity`` (world frame; default zero: a robot at rest)."""
        self.v = np.zeros(3) if velocity is None else np.asarray(velocity, dtype=np.float64)
        self.P = np.eye(3) * 0.01

    def step(
        self,
        dt: float,
        rot: np.ndarray,
        accelerometer: np.ndarray,
        leg_velocities: np.ndarray,
        contact: np.ndarray,
    ) -> np.ndarray:
        """Predict over ``dt`` then update with the stance legs; returns v (world frame).

        ``leg_velocities`` (4, 3): each foot's velocity relative to the trunk, world frame
        (R (ω × p + J q̇)); a stance foot standing still measures v = -that.
        """
        self.v = self.v + (rot @ accelerometer + GRAVITY) * dt
        self.P = self.P + np.eye(3) * (self.accel_noise * dt) ** 2
        stance = np.flatnonzero(contact)
        if len(stance):
            # n independent measurements of v with the same isotropic noise: their mean, with
            # variance leg_variance / n, is the same update in closed form
            measured = -leg_velocities[stance].mean(axis=0)
            gain = self.P @ np.linalg.inv(self.P + np.eye(3) * (self.leg_variance / len(stance)))
            self.v = self.v + gain @ (measured - self.v)
            self.P = (np.eye(3) - gain) @ self.P
        return self.v


def kinematic_state(
    joint_pos: np.ndarray,
    joint_vel: np.ndarray,
    rot: np.ndarray,
    gyro: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Feet relative to the trunk in the world frame (4, 3), their velocities relative to the
    trunk in the world frame (4, 3), and the trunk's height above flat ground [m]."""
    feet, jacobians = feet_and_jacobians(joint_pos)
    dq = np.asarray(joint_vel, dtype=np.float64).reshape(NUM_FEET, 3)
    relative_vel = np.cross(gyro, feet) + np.einsum("fij,fj->fi", jacobians, dq)
    feet_world = feet @ rot.T
    height = float(-feet_world[:, 2].min() + FOOT_RADIUS)
    return feet_world, relative_vel @ rot.T, height
