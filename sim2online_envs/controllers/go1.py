"""Scripted Go1 controller: stand at the home pose.

Zero action means joint targets at the home pose, which the motors' PD loop holds, but softly
(Kp 35 N·m/rad): with the trunk's centre of mass moved several centimetres to one side (the
domain randomisation's range), the loaded legs sag and a Go1 given the zero action can roll
over. The controller therefore stiffens the legs with the observed joint angles: the target of
each joint moves away from home opposite to the joint's offset, ``stiffening`` times it, so the
PD loop acts like one (1 + stiffening) times as stiff. It stands for a whole episode with the
default randomisation and observation noise (the tests check it) but does not walk, so it earns
the pose and regulariser terms and whatever tracking reward a standing robot gets. It is the
baseline a learned policy must beat, and the controller of the package's demo.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from sim2online_envs.controllers import ScriptedPolicy
from sim2online_envs.robots.go1 import NUM_JOINTS
from sim2online_envs.tasks.go1 import OBS_DIM, OBS_SLICES, Go1TaskConfig

__all__ = ["Go1StandController", "make_controller"]


class Go1StandController(ScriptedPolicy):
    """Hold the home pose, for one observation (48,) or a batch (B, 48).

    Callable as ``policy(obs)``, and with SB3's ``predict(obs, state, episode_start,
    deterministic) -> (action, state)`` so that it can stand in for a policy.

    :param stiffening: joint targets = home − stiffening · (observed angle − home); 0 gives the
        zero action. Much larger gains make the legs shake with the observation noise and the
        one-period delay of the loop.
    :param action_scale: the task's joint-target offset [rad] per unit action.
    """

    action_dim = NUM_JOINTS
    obs_dim = OBS_DIM

    def __init__(
        self, stiffening: float = 0.75, action_scale: float = Go1TaskConfig.action_scale
    ) -> None:
        if not (np.isfinite(stiffening) and stiffening >= 0):
            raise ValueError(f"stiffening must be a number >= 0, got {stiffening!r}")
        if not (np.isfinite(action_scale) and action_scale > 0):
            raise ValueError(f"action_scale must be a positive number, got {action_scale!r}")
        self.stiffening = float(stiffening)
        self.action_scale = float(action_scale)

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        observation = np.asarray(observation)
        if observation.shape[-1:] != (self.obs_dim,) or observation.ndim > 2:
            raise ValueError(
                f"observation must have shape ({self.obs_dim},) or (B, {self.obs_dim}), "
                f"got {observation.shape}"
            )
        offset = observation[..., OBS_SLICES["joint_pos"]].astype(np.float64)
        action = -(self.stiffening / self.action_scale) * offset
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def make_controller(env: gym.Env) -> Go1StandController:
    """The Go1's scripted controller for ``env`` (a SimGo1 env, possibly wrapped)."""
    space = env.action_space
    if getattr(space, "shape", None) != (Go1StandController.action_dim,):
        raise ValueError(f"expected a Go1 env with a ({NUM_JOINTS},) action space, got {space}")
    task = getattr(getattr(env, "unwrapped", env), "task", None)
    config = getattr(task, "config", None)
    if isinstance(config, Go1TaskConfig):
        return Go1StandController(action_scale=config.action_scale)
    return Go1StandController()
