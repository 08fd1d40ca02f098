"""Reward shaping: progress, sparse success, action-magnitude and action-rate penalties, scaling.

:class:`RewardShapingWrapper` returns::

    reward = scale · (env_weight · r_env + progress + success + action_magnitude + action_rate)

with one small function per term (:func:`progress_reward`, :func:`success_reward`,
:func:`action_magnitude_penalty`, :func:`action_rate_penalty`) and every term's value, after
scaling, in ``info["reward_shaping"]`` (their sum is the returned reward). The env's own terms
stay in ``info["reward_terms"]``.

The progress reward pays only for new progress: with ``p_t`` the task's total progress (e.g.
the negative distance to the goal, or a staged approach + lift + carry score),
``max(p_t − max_{s<t} p_s, 0)`` (the best so far starts at ``p_0`` after reset). Moving back and
forth earns nothing; only improving on the best state does. A step whose progress is NaN or
infinite (on hardware: the cube's marker not seen) earns no progress reward and leaves the best
unchanged, with a warning, instead of writing a NaN reward into the replay buffer; the best so far
then starts at the first finite value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

logger = logging.getLogger(__name__)

#: Reads a task's total progress from the env and the step's info (higher is better).
ProgressFn = Callable[[gym.Env, dict[str, Any]], float]


def info_progress(key: str, sign: float = 1.0) -> ProgressFn:
    """A progress function reading ``sign · info[key]`` (e.g. ``info_progress("distance", -1)``)."""

    def read(env: gym.Env, info: dict[str, Any]) -> float:
        del env
        if key not in info:
            raise KeyError(f"progress key {key!r} not in info; info keys are {sorted(info)}")
        return sign * float(np.asarray(info[key]).reshape(()))

    return read


def progress_reward(progress: float, best: float) -> float:
    """New progress beyond the best so far: ``max(progress − best, 0)``."""
    return max(progress - best, 0.0)


def success_reward(is_success: bool, bonus: float) -> float:
    """``bonus`` when the task is solved in this step."""
    return bonus if is_success else 0.0


def action_magnitude_penalty(action: np.ndarray, weight: float, squared: bool) -> float:
    """``−weight · ‖a‖`` (or ``‖a‖²``)."""
    norm = float(np.linalg.norm(action))
    return -weight * (norm * norm if squared else norm)


def action_rate_penalty(action: np.ndarray, previous: np.ndarray | None, weight: float) -> float:
    """``−weight · ‖a − a_prev‖²``; zero on the first step of an episode."""
    if previous is None:
        return 0.0
    return -weight * float(np.sum((action - previous) ** 2))


@dataclass(frozen=True)
class RewardConfig:
    """Settings of :class:`RewardShapingWrapper` (every term off by default).

    Attributes:
        env_weight: Weight of the env's own reward (0 replaces it).
        progress_weight: Weight of the progress reward; needs ``progress_fn``.
        progress_fn: Total progress from ``(env, info)``, e.g. :func:`info_progress`.
        success_bonus: Sparse reward when ``info["is_success"]`` is true.
        success_once: Pay the success bonus once per episode (else on every successful step).
        action_magnitude_weight: λc of ``−λc‖a‖``.
        action_magnitude_squared: Use ``‖a‖²`` instead of ``‖a‖``.
        action_rate_weight: λl of ``−λl‖a − a_prev‖²``.
        scale: Multiplies the whole reward.
    """

    env_weight: float = 1.0
    progress_weight: float = 0.0
    progress_fn: ProgressFn | None = None
    success_bonus: float = 0.0
    success_once: bool = True
    action_magnitude_weight: float = 0.0
    action_magnitude_squared: bool = False
    action_rate_weight: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.progress_weight != 0.0 and self.progress_fn is None:
            raise ValueError("progress_weight is set but progress_fn is None")
        for name in ("action_magnitude_weight", "action_rate_weight"):
            if not getattr(self, name) >= 0:  # NaN too
                raise ValueError(
                    f"{name} is a penalty weight and must be >= 0, got {getattr(self, name)}"
                )
        values = [
            getattr(self, n) for n in ("env_weight", "progress_weight", "success_bonus", "scale")
        ]
        if not np.all(np.isfinite(values)):
            raise ValueError(f"reward weights must be finite, got {values}")


class RewardShapingWrapper(gym.Wrapper):
    """Adds progress, success and action-penalty terms to the env's reward (see module doc)."""

    TERMS = ("env", "progress", "success", "action_magnitude", "action_rate")

    def __init__(self, env: gym.Env, config: RewardConfig | None = None):
        super().__init__(env)
        self.config = config if config is not None else RewardConfig()
        self._best: float | None = None  # None until a finite progress has been seen
        self._previous_action: np.ndarray | None = None
        self._succeeded = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._previous_action = None
        self._succeeded = False
        self._best = None
        if self.config.progress_fn is not None:
            self._best = self._finite_progress(info, "reset")
        return obs, info

    def _finite_progress(self, info: dict[str, Any], when: str) -> float | None:
        assert self.config.progress_fn is not None
        progress = float(self.config.progress_fn(self.env, info))
        if math.isfinite(progress):
            return progress
        logger.warning("progress is %s at %s: no progress reward for this step", progress, when)
        return None

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        cfg = self.config
        applied = info.get("safety", {}).get("applied_action")
        a = np.asarray(applied if applied is not None else action, dtype=np.float64).ravel()
        terms = dict.fromkeys(self.TERMS, 0.0)
        terms["env"] = cfg.env_weight * float(env_reward)
        if cfg.progress_fn is not None:
            progress = self._finite_progress(info, "a step")
            if progress is not None and self._best is not None:
                terms["progress"] = cfg.progress_weight * progress_reward(progress, self._best)
                self._best = max(self._best, progress)
            elif progress is not None:
                self._best = progress
        solved = bool(info.get("is_success", False))
        if not (cfg.success_once and self._succeeded):
            terms["success"] = success_reward(solved, cfg.success_bonus)
        self._succeeded = self._succeeded or solved
        terms["action_magnitude"] = action_magnitude_penalty(
            a, cfg.action_magnitude_weight, cfg.action_magnitude_squared
        )
        terms["action_rate"] = action_rate_penalty(a, self._previous_action, cfg.action_rate_weight)
        self._previous_action = a
        terms = {name: cfg.scale * value for name, value in terms.items()}
        info["reward_shaping"] = terms
        return obs, float(sum(terms.values())), terminated, truncated, info
