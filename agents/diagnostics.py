"""Q-error diagnostic: the critic's Q on the visited (s, a) against the episode's Monte-Carlo
return, per episode. A growing overestimation shows the "downward spiral" of online fine-tuning
before the return collapses.
"""

from __future__ import annotations

import csv
import logging
import math
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

logger = logging.getLogger(__name__)

_TB_ONLY = ("stdout", "log", "json", "csv")


@dataclass
class _Episode:
    observations: list[Any] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)

    def clear(self) -> None:
        self.observations.clear()
        self.actions.clear()
        self.rewards.clear()


def discounted_returns(
    rewards: Sequence[float], gamma: float, bootstrap: float = 0.0
) -> np.ndarray:
    """``G_t = r_t + γ G_{t+1}`` with ``G_T = bootstrap`` (0 at a true end, V(s_T) at a cut)."""
    returns = np.empty(len(rewards), dtype=np.float64)
    running = float(bootstrap)
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        returns[t] = running
    return returns


def trend_t_statistic(values: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of ``values`` against their index, and its t-statistic."""
    y = np.asarray(values, dtype=np.float64)
    n = len(y)
    if n < 3:
        return 0.0, 0.0
    x = np.arange(n, dtype=np.float64)
    x -= x.mean()
    slope = float(np.dot(x, y - y.mean()) / np.dot(x, x))
    residuals = y - y.mean() - slope * x
    dof = n - 2
    stderr = math.sqrt(float(np.dot(residuals, residuals)) / dof / float(np.dot(x, x)))
    if stderr == 0.0:
        return slope, math.inf if slope > 0 else (-math.inf if slope < 0 else 0.0)
    return slope, slope / stderr


class QErrorCallback(BaseCallback):
    """After each episode: Q(s_t, a_t) − (discounted Monte-Carlo return from t) over the episode.

    Q is the minimum over the critic ensemble (for TQC the mean of its quantiles), from
    the weights that acted in the episode. The return is bootstrapped with the critic,
    ``min_j Q_j(s_T, π(s_T))`` with the deterministic action, when the episode was truncated
    (``TimeLimit.truncated``); 0 after a true termination. For SAC, Q is the soft value, so the
    gap also holds the entropy bonus (constant-ish across episodes, the trend is what matters).

    ================== ======================================================================
    Logged key         Meaning (SB3 logger, averaged between dumps; TensorBoard histogram)
    ================== ======================================================================
    q_error/mean       mean of Q − G over the episode's steps (overestimation if > 0)
    q_error/abs_mean   mean |Q − G|
    q_error/pNN        quantiles of Q − G (``quantiles``)
    q_error/q_mean     mean Q; ``q_error/return_mean``: mean G
    q_error/histogram  the per-step errors (TensorBoard only)
    ================== ======================================================================

    ``csv_path``: one row per episode with the same numbers (appended, header when new).
    ``trend_window`` / ``trend_t``: a ``logging`` warning when, over the last ``trend_window``
    episodes, the mean error is positive and has risen with a trend t-statistic above
    ``trend_t``; :attr:`overestimation_growing` holds the current verdict.
    """

    def __init__(
        self,
        csv_path: str | pathlib.Path | None = None,
        quantiles: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95),
        trend_window: int = 10,
        trend_t: float = 2.0,
        gamma: float | None = None,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if trend_window < 3:
            raise ValueError(f"trend_window must be >= 3, got {trend_window}")
        if any(not 0.0 <= q <= 1.0 for q in quantiles):
            raise ValueError(f"quantiles must lie in [0, 1], got {tuple(quantiles)}")
        self.csv_path = None if csv_path is None else pathlib.Path(csv_path)
        self.quantiles = tuple(quantiles)
        self.trend_window = trend_window
        self.trend_t = trend_t
        self.gamma = gamma
        self.history: list[dict[str, float]] = []
        self.overestimation_growing = False
        self._episodes: list[_Episode] = []
        self._csv_file: IO[str] | None = None
        self._csv_writer: Any = None

    # -- SB3 callback hooks ------------------------------------------------------------------

    def _init_callback(self) -> None:
        self._episodes = [_Episode() for _ in range(self.training_env.num_envs)]

    def _on_step(self) -> bool:
        observations = self.model._last_obs  # s_t: _store_transition has not run yet
        actions = self.locals["buffer_actions"]  # a_t as the critic sees it ([-1, 1])
        rewards, dones, infos = self.locals["rewards"], self.locals["dones"], self.locals["infos"]
        for i, episode in enumerate(self._episodes):
            episode.observations.append(_index(observations, i))
            episode.actions.append(np.array(actions[i], dtype=np.float32, copy=True))
            episode.rewards.append(float(rewards[i]))
            if dones[i]:
                truncated = bool(infos[i].get("TimeLimit.truncated", False))
                self._finish_episode(episode, truncated, infos[i].get("terminal_observation"))
                episode.clear()
        return True

    def _on_training_end(self) -> None:
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = None
            self._csv_writer = None

    # -- computation -------------------------------------------------------------------------

    def _critic_min(self, observations: Any, actions: np.ndarray) -> np.ndarray:
        policy = self.model.policy
        obs_tensor, _ = policy.obs_to_tensor(observations)
        action_tensor = th.as_tensor(actions, device=policy.device, dtype=th.float32)
        with th.no_grad():
            value = getattr(self.model, "critic_value", None)
            if value is not None:  # this package's algorithms (TQC: the mean of its quantiles)
                q = value(obs_tensor, action_tensor)
            else:
                q = th.min(
                    th.cat(self.model.critic(obs_tensor, action_tensor), dim=1), dim=1
                ).values
            return q.reshape(-1).cpu().numpy().astype(np.float64)

    def _bootstrap_value(self, terminal_observation: Any) -> float:
        policy = self.model.policy
        batched = _stack([terminal_observation])
        obs_tensor, _ = policy.obs_to_tensor(batched)
        with th.no_grad():
            action = policy._predict(obs_tensor, deterministic=True)
        return float(self._critic_min(batched, action.cpu().numpy())[0])

    def episode_errors(
        self,
        observations: Any,
        actions: np.ndarray,
        rewards: Sequence[float],
        truncated: bool,
        terminal_observation: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-step (Q, G) for one episode (stacked observations and actions)."""
        gamma = self.model.gamma if self.gamma is None else self.gamma
        bootstrap = 0.0
        if truncated and terminal_observation is not None:
            bootstrap = self._bootstrap_value(terminal_observation)
        returns = discounted_returns(rewards, gamma, bootstrap)
        q = self._critic_min(observations, actions)
        return q, returns

    def _finish_episode(self, episode: _Episode, truncated: bool, terminal_obs: Any) -> None:
        if not episode.rewards:
            return
        q, returns = self.episode_errors(
            _stack(episode.observations),
            np.stack(episode.actions),
            episode.rewards,
            truncated,
            terminal_obs,
        )
        errors = q - returns
        row: dict[str, float] = {
            "episode": float(len(self.history)),
            "num_timesteps": float(self.num_timesteps),
            "n_updates": float(getattr(self.model, "_n_updates", 0)),
            "length": float(len(errors)),
            "truncated": float(truncated),
            "episode_return": float(np.sum(episode.rewards)),
            "q_mean": float(q.mean()),
            "return_mean": float(returns.mean()),
            "mean": float(errors.mean()),
            "abs_mean": float(np.abs(errors).mean()),
        }
        for quantile, value in zip(
            self.quantiles, np.quantile(errors, self.quantiles), strict=True
        ):
            row[f"p{round(quantile * 100):02d}"] = float(value)
        self.history.append(row)

        for key in ("mean", "abs_mean", "q_mean", "return_mean", *_quantile_keys(self.quantiles)):
            self.logger.record_mean(f"q_error/{key}", row[key])
        self.logger.record("q_error/histogram", th.as_tensor(errors), exclude=_TB_ONLY)
        self._write_csv(row)
        self._check_trend()

    def _check_trend(self) -> None:
        means = [row["mean"] for row in self.history[-self.trend_window :]]
        growing = False
        if len(means) == self.trend_window and means[-1] > 0.0:
            slope, t_stat = trend_t_statistic(means)
            growing = slope > 0.0 and t_stat > self.trend_t
        if growing and not self.overestimation_growing:
            logger.warning(
                "Q overestimation keeps growing: mean Q - return rose from %.3g to %.3g over the "
                "last %d episodes (a downward spiral often follows; consider more offline data, "
                "a slower actor or a lower learning rate)",
                means[0],
                means[-1],
                self.trend_window,
            )
        self.overestimation_growing = growing

    def _write_csv(self, row: dict[str, float]) -> None:
        if self.csv_path is None:
            return
        if self._csv_writer is None:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
            self._csv_file = open(self.csv_path, "a", newline="")  # noqa: SIM115 (kept open)
            self._csv_writer = csv.DictWriter(self._csv_file, fieldnames=list(row))
            if new:
                self._csv_writer.writeheader()
        self._csv_writer.writerow(row)
        assert self._csv_file is not None
        self._csv_file.flush()


def _quantile_keys(quantiles: Sequence[float]) -> list[str]:
    return [f"p{round(q * 100):02d}" for q in quantiles]


def _index(observations: Any, i: int) -> Any:
    if isinstance(observations, dict):
        return {key: np.array(value[i], copy=True) for key, value in observations.items()}
    return np.array(observations[i], copy=True)


def _stack(observations: list[Any]) -> Any:
    if isinstance(observations[0], dict):
        return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}
    return np.stack(observations)
