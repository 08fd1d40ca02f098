"""Differential inverse kinematics shared by the simulator's and the real arm's controllers.

:func:`dls_step` is the one damped-least-squares step that the Panda simulator
(:meth:`sim2online_envs.sim.panda.PandaVectorBackend.joint_targets`, Jacobians from MuJoCo's joint
axes) and the franky driver's ``arm_mode="joint"`` (libfranka's Jacobian) take toward a tip
target, over a leading batch axis. NumPy only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dls_step"]


def dls_step(
    q: np.ndarray,
    tip_pos: np.ndarray,
    tip_rot: np.ndarray,
    jacobian: np.ndarray,
    target: np.ndarray,
    desired_rot: np.ndarray,
    posture: np.ndarray,
    damping: float,
    max_error: float,
    nullspace_gain: float,
    orientation_gain: float = 1.0,
) -> np.ndarray:
    """(B, n) joint angles one damped-least-squares IK step from ``q`` toward ``target``.

    The 6-D task: the position error (its norm clipped to ``max_error``) and the rotation error
    to ``desired_rot`` (``0.5 * sum_i r_i x r_i^desired`` over the columns, times
    ``orientation_gain``); the pull ``nullspace_gain * (posture - q)`` projected into the task's
    null space.

    Args:
        q: (B, n) joint angles (rad).
        tip_pos: (B, 3) tip position (m).
        tip_rot: (B, 3, 3) tip rotation (columns: the tip's axes in the base frame).
        jacobian: (B, 6, n) geometric Jacobian of the tip (linear rows first).
        target: (B, 3) tip target (m).
        desired_rot: (3, 3) rotation the tip should hold.
        posture: (n,) joint angles the null space drifts toward (rad).
        damping: DLS damping (m).
        max_error: largest position error one step acts on (m).
        nullspace_gain: gain of the posture pull.
        orientation_gain: weight of the rotation error.
    """
    err_pos = target - tip_pos
    norm = np.linalg.norm(err_pos, axis=1, keepdims=True)
    err_pos = err_pos * np.minimum(1.0, max_error / np.maximum(norm, 1e-12))
    err_rot = 0.5 * np.cross(tip_rot, desired_rot[None], axis=1).sum(axis=2)
    err = np.concatenate([err_pos, orientation_gain * err_rot], axis=1)
    jac_t = jacobian.transpose(0, 2, 1)
    jjt = jacobian @ jac_t + damping**2 * np.eye(6)
    pinv = jac_t @ np.linalg.inv(jjt)  # (B, n, 6)
    dq = (pinv @ err[:, :, None])[:, :, 0]
    null = np.eye(q.shape[1]) - pinv @ jacobian
    dq += (null @ (nullspace_gain * (posture - q))[:, :, None])[:, :, 0]
    return q + dq
