"""Reward shaping: each term against hand-computed values; per-term values sum to the reward."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import sim2online_envs  # noqa: F401  (registers the ids)
from sim2online_envs.wrappers.rewards import (
    RewardConfig,
    RewardShapingWrapper,
    info_progress,
    progress_reward,
)


class ScriptedEnv(gym.Env):
    """Replays a list of (progress, is_success, reward) per step."""

    def __init__(self, script: list[tuple[float, bool, float]], start: float = 0.0):
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.script = script
        self.start = start
        self._t = 0

    def reset(self, *, seed: int | None = None, options: Any = None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(1, np.float32), {"progress": self.start}

    def step(self, action):
        progress, success, reward = self.script[self._t]
        self._t += 1
        done = self._t == len(self.script)
        info = {"progress": progress, "is_success": success}
        return np.zeros(1, np.float32), reward, False, done, info


def test_progress_pays_only_beyond_the_best_so_far() -> None:
    assert progress_reward(0.3, 0.5) == 0.0
    assert progress_reward(0.7, 0.5) == pytest.approx(0.2)
    script = [(0.2, False, 0.0), (0.1, False, 0.0), (0.15, False, 0.0), (0.5, False, 0.0)]
    config = RewardConfig(
        env_weight=0.0, progress_weight=2.0, progress_fn=info_progress("progress")
    )
    env = RewardShapingWrapper(ScriptedEnv(script, start=0.0), config)
    env.reset(seed=0)
    rewards = [env.step(np.zeros(2))[1] for _ in script]
    # best: 0 -> 0.2 -> 0.2 -> 0.2 -> 0.5; new progress 0.2, 0, 0, 0.3; times 2
    np.testing.assert_allclose(rewards, [0.4, 0.0, 0.0, 0.6])


def test_missing_progress_pays_nothing_instead_of_nan(caplog: pytest.LogCaptureFixture) -> None:
    """On hardware the progress may be unknown for a step (the cube's marker not seen): no NaN
    may reach the reward, and the best so far must survive it."""
    nan = float("nan")
    script = [(nan, False, 0.0), (0.2, False, 0.0), (nan, False, 0.0), (0.5, False, 0.0)]
    config = RewardConfig(
        env_weight=0.0, progress_weight=1.0, progress_fn=info_progress("progress")
    )
    env = RewardShapingWrapper(ScriptedEnv(script, start=nan), config)  # unknown at reset too
    env.reset(seed=0)
    with caplog.at_level("WARNING"):
        rewards = [env.step(np.zeros(2))[1] for _ in script]
    # best: unknown -> unknown -> 0.2 (first finite value, pays 0) -> 0.2 -> 0.5
    np.testing.assert_allclose(rewards, [0.0, 0.0, 0.0, 0.3])
    assert "progress is nan" in caplog.text
    with pytest.raises(ValueError, match="action_rate_weight"):
        RewardConfig(action_rate_weight=nan)


def test_success_bonus_once_or_every_step() -> None:
    script = [(0.0, True, 0.0), (0.0, True, 0.0), (0.0, False, 0.0)]
    once = RewardShapingWrapper(ScriptedEnv(script), RewardConfig(env_weight=0, success_bonus=5))
    once.reset(seed=0)
    assert [once.step(np.zeros(2))[1] for _ in script] == [5.0, 0.0, 0.0]
    every = RewardShapingWrapper(
        ScriptedEnv(script), RewardConfig(env_weight=0, success_bonus=5, success_once=False)
    )
    every.reset(seed=0)
    assert [every.step(np.zeros(2))[1] for _ in script] == [5.0, 5.0, 0.0]


def test_action_penalties_and_scale_with_terms_in_info() -> None:
    script = [(0.0, False, 1.0)] * 3
    config = RewardConfig(
        action_magnitude_weight=0.1, action_rate_weight=0.5, scale=2.0, env_weight=1.0
    )
    env = RewardShapingWrapper(ScriptedEnv(script), config)
    env.reset(seed=0)
    _, r0, *_, info0 = env.step(np.array([3.0, 4.0]))
    assert info0["reward_shaping"]["action_magnitude"] == pytest.approx(2 * -0.1 * 5.0)
    assert info0["reward_shaping"]["action_rate"] == 0.0  # no previous action yet
    assert r0 == pytest.approx(2 * (1.0 - 0.5))
    _, r1, *_, info1 = env.step(np.array([0.0, 4.0]))
    assert info1["reward_shaping"]["action_rate"] == pytest.approx(2 * -0.5 * 9.0)
    assert r1 == pytest.approx(sum(info1["reward_shaping"].values()))
    env.reset(seed=1)  # the previous action is forgotten at reset
    _, _, *_, info = env.step(np.array([0.0, 0.0]))
    assert info["reward_shaping"]["action_rate"] == 0.0


def test_penalties_use_the_action_the_step_loop_applied() -> None:
    safe = gym.make("SimRaceCar-v0", safety={"limits": None})
    env = RewardShapingWrapper(safe, RewardConfig(env_weight=0.0, action_magnitude_weight=1.0))
    env.reset(seed=0)
    *_, info = env.step(np.array([30.0, -40.0]))  # clipped to (1, -1)
    assert info["reward_shaping"]["action_magnitude"] == pytest.approx(-np.sqrt(2.0))


def test_car_distance_progress_on_the_real_env() -> None:
    env = RewardShapingWrapper(
        gym.make("SimRaceCar-v0"),
        RewardConfig(progress_weight=1.0, progress_fn=info_progress("distance", sign=-1.0)),
    )
    _, info = env.reset(seed=0)
    best = -info["distance"]
    for _ in range(30):
        _, reward, *_, info = env.step(np.array([0.0, 1.0], dtype=np.float32))
        expected = max(-info["distance"] - best, 0.0)
        best = max(best, -info["distance"])
        assert info["reward_shaping"]["progress"] == pytest.approx(expected)
        assert info["reward_shaping"]["env"] == pytest.approx(sum(info["reward_terms"].values()))
        assert reward == pytest.approx(sum(info["reward_shaping"].values()))


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="progress_fn"):
        RewardConfig(progress_weight=1.0)
    with pytest.raises(ValueError, match="action_rate_weight"):
        RewardConfig(action_rate_weight=-1.0)
    env = RewardShapingWrapper(
        ScriptedEnv([(0.0, False, 0.0)]),
        RewardConfig(progress_weight=1.0, progress_fn=info_progress("missing")),
    )
    with pytest.raises(KeyError, match="missing"):
        env.reset(seed=0)
