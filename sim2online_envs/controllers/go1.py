"""Scripted Go1 controller: stand at the home pose.

Zero action means joint targets at the home pose, which the motors' PD loop holds: the Go1
stands for a whole episode (the tests check it) but does not walk, so it earns the pose and
regulariser terms and whatever tracking reward a standing robot gets. It is the baseline a
learned policy must beat, and the controller of the package's demo.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from sim2online_envs.controllers import ScriptedPolicy
from sim2online_envs.robots.go1 import NUM_JOINTS
from sim2online_envs.tasks.go1 import OBS_DIM

__all__ = ["Go1StandController", "make_controller"]


class Go1StandController(ScriptedPolicy):
    """Hold the home pose: the zero action, for one observation (48,) or a batch (B, 48).

    Callable as ``policy(obs)``, and with SB3's ``predict(obs, state, episode_start,
    deterministic) -> (action, state)`` so that it can stand in for a policy.
    """

    action_dim = NUM_JOINTS
    obs_dim = OBS_DIM

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        observation = np.asarray(observation)
        if observation.shape[-1:] != (self.obs_dim,) or observation.ndim > 2:
            raise ValueError(
                f"observation must have shape ({self.obs_dim},) or (B, {self.obs_dim}), "
                f"got {observation.shape}"
            )
        return np.zeros((*observation.shape[:-1], self.action_dim), dtype=np.float32)


def make_controller(env: gym.Env) -> Go1StandController:
    """The Go1's scripted controller for ``env`` (a SimGo1 env, possibly wrapped)."""
    space = env.action_space
    if getattr(space, "shape", None) != (Go1StandController.action_dim,):
        raise ValueError(f"expected a Go1 env with a ({NUM_JOINTS},) action space, got {space}")
    return Go1StandController()
