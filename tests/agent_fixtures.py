"""What the agent tests share: a Pendulum whose episodes start from fixed seeds, and offline data.

"The same seeds" on resume is on the env side too: episode k starts from seed 1000 + k whatever
reset is asked, so an interrupted run resumed with a fresh env sees the episodes the
uninterrupted run saw.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

#: Steps per Pendulum episode in the agent tests.
EPISODE = 30


class EpisodeSeeded(gym.Wrapper):
    """Episode k starts from seed 1000 + k, whatever reset is asked."""

    def __init__(self, env: gym.Env, first_episode: int = 0):
        super().__init__(env)
        self.episode = first_episode

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        del seed
        obs, info = self.env.reset(seed=1000 + self.episode, options=options)
        self.episode += 1
        return obs, info


def make_env(first_episode: int = 0) -> gym.Env:
    """Pendulum-v1 cut at :data:`EPISODE` steps, its episodes seeded from ``first_episode`` on."""
    return EpisodeSeeded(gym.make("Pendulum-v1", max_episode_steps=EPISODE), first_episode)


def offline_data(n: int = 100) -> dict[str, np.ndarray]:
    """``n`` Pendulum-shaped offline transitions (a D0 for mixing and warm-start tests)."""
    rng = np.random.default_rng(5)
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    return {
        "observations": obs,
        "next_observations": obs + 0.01,
        "actions": rng.uniform(-1, 1, (n, 1)),
        "rewards": rng.normal(size=n),
        "dones": np.zeros(n),
    }
