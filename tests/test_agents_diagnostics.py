"""QErrorCallback: Q(s, a) against the episode's Monte-Carlo return; logs, CSV, spiral warning."""

from __future__ import annotations

import csv
import logging
import pathlib
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.logger import configure

from sim2online_envs.agents import SAC, TD3, TQC, CrossQ, QErrorCallback
from sim2online_envs.agents.diagnostics import discounted_returns, trend_t_statistic


@pytest.fixture(autouse=True)
def _one_thread():
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


class Countdown(gym.Env):
    """Observation (t/10, x); reward 1 - |a|; terminates at x ≥ 1 when ``can_end``, else runs
    into the time limit (a truncation)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, can_end: bool):
        self.observation_space = spaces.Box(-10.0, 10.0, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.can_end = can_end
        self._t, self._x = 0, 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self._t / 10, self._x], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t, self._x = 0, float(self.np_random.uniform(-0.5, 0.5))
        return self._obs(), {}

    def step(self, action: np.ndarray):
        self._t += 1
        self._x += 0.3 * float(action[0])
        terminated = self.can_end and self._x >= 1.0
        return self._obs(), 1.0 - abs(float(action[0])), terminated, False, {}


def critic_value(model: Any, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """The critics' minimum; TQC's Q is the mean of all its quantiles."""
    if isinstance(model, TQC):
        return model.critic(obs, actions).mean(dim=(1, 2))
    return th.cat(model.critic(obs, actions), dim=1).min(dim=1).values


def expected_episode_stats(model: SAC | TD3) -> list[tuple[float, float]]:
    """(mean Q, mean MC return) per episode, recomputed from the replay buffer."""
    rb = model.replay_buffer
    n = rb.size()
    obs = th.as_tensor(rb.observations[:n, 0])
    actions = th.as_tensor(rb.actions[:n, 0])
    with th.no_grad():
        q = critic_value(model, obs, actions).numpy()
    stats, start = [], 0
    for t in range(n):
        if rb.dones[t, 0]:
            bootstrap = 0.0
            if rb.timeouts[t, 0]:
                next_obs = th.as_tensor(rb.next_observations[t : t + 1, 0])
                with th.no_grad():
                    action = model.policy._predict(next_obs, deterministic=True)
                    bootstrap = float(critic_value(model, next_obs, action)[0])
            rewards = rb.rewards[start : t + 1, 0]
            returns = discounted_returns(rewards, model.gamma, bootstrap)
            stats.append((float(q[start : t + 1].mean()), float(returns.mean())))
            start = t + 1
    return stats


@pytest.mark.parametrize(
    ("algo", "can_end"), [(SAC, False), (SAC, True), (TD3, False), (TQC, False), (CrossQ, True)]
)
def test_q_and_returns_per_episode(algo: type, can_end: bool, tmp_path: pathlib.Path) -> None:
    env = gym.wrappers.TimeLimit(Countdown(can_end), max_episode_steps=12)
    # No training (learning_starts beyond the run): the critic that acted is the one to compare.
    model = algo(
        "MlpPolicy", env, policy_kwargs={"net_arch": [8]}, learning_starts=10_000, seed=1, gamma=0.9
    )
    callback = QErrorCallback(csv_path=tmp_path / "q_error.csv")
    model.learn(120, callback=callback)
    expected = expected_episode_stats(model)
    assert len(callback.history) == len(expected) >= 10
    if can_end:
        assert any(row["length"] < 12 for row in callback.history)
    for row, (q_mean, return_mean) in zip(callback.history, expected, strict=True):
        assert row["q_mean"] == pytest.approx(q_mean, rel=1e-5, abs=1e-6)
        assert row["return_mean"] == pytest.approx(return_mean, rel=1e-5, abs=1e-6)
        assert row["mean"] == pytest.approx(q_mean - return_mean, rel=1e-4, abs=1e-5)
        assert row["p05"] <= row["p50"] <= row["p95"]

    with open(tmp_path / "q_error.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(callback.history)
    assert float(rows[-1]["mean"]) == pytest.approx(callback.history[-1]["mean"])
    assert {"episode", "num_timesteps", "n_updates", "p50", "episode_return"} <= set(rows[0])


def test_logs_scalars_and_a_tensorboard_histogram(tmp_path: pathlib.Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = gym.make("Pendulum-v1", max_episode_steps=20)
    model = SAC("MlpPolicy", env, policy_kwargs={"net_arch": [8]}, learning_starts=10_000)
    model.set_logger(configure(str(tmp_path / "tb"), ["tensorboard", "csv"]))
    model.learn(80, callback=QErrorCallback(), log_interval=1)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0}).Reload()
    assert "q_error/histogram" in events.Tags()["histograms"]
    assert {"q_error/mean", "q_error/p95", "q_error/abs_mean"} <= set(events.Tags()["scalars"])
    header = (tmp_path / "tb" / "progress.csv").read_text().splitlines()[0].split(",")
    assert "q_error/mean" in header and "q_error/histogram" not in header


def test_discounted_returns() -> None:
    np.testing.assert_allclose(
        discounted_returns([1.0, 2.0, 3.0], 0.5, bootstrap=8.0),
        [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 8, 2 + 0.5 * 3 + 0.25 * 8, 3 + 0.5 * 8],
    )
    assert discounted_returns([], 0.9).shape == (0,)


def growing_history(callback: QErrorCallback, means: list[float]) -> None:
    for mean in means:
        callback.history.append({"mean": mean})
        callback._check_trend()


def test_warns_when_overestimation_keeps_growing(caplog: pytest.LogCaptureFixture) -> None:
    callback = QErrorCallback(trend_window=6)
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING, logger="sim2online_envs.agents.diagnostics"):
        growing_history(callback, list(0.1 * rng.normal(size=10)))  # noise: no warning
        assert not callback.overestimation_growing and not caplog.records
        growing_history(callback, [0.5, 1.0, 1.6, 2.0, 2.9, 3.5])  # a spiral
    assert callback.overestimation_growing
    warnings = [r for r in caplog.records if "keeps growing" in r.getMessage()]
    assert len(warnings) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sim2online_envs.agents.diagnostics"):
        growing_history(callback, [4.0])  # still growing: no repeated warning
        assert not caplog.records
        growing_history(callback, [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0])  # underestimation
    assert not callback.overestimation_growing and not caplog.records


def test_trend_statistic_and_arguments() -> None:
    slope, t = trend_t_statistic([1.0, 2.0, 3.0, 4.0])
    assert slope == pytest.approx(1.0) and t == np.inf
    slope, t = trend_t_statistic([1.0, 3.0, 2.0, 4.0])
    assert slope > 0 and 0 < t < 10
    with pytest.raises(ValueError, match="trend_window"):
        QErrorCallback(trend_window=2)
    with pytest.raises(ValueError, match="quantiles"):
        QErrorCallback(quantiles=(0.5, 1.5))
