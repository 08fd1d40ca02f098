"""The Task/Backend contract: episode semantics every robot env inherits from TaskEnv."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from gymnasium import spaces

from sim2online_envs.core import TIME_LIMIT, Backend, Batch, Task, TaskEnv


class PointTask(Task):
    """A 1-D point that must reach x = 1; falls off (terminates) beyond x = -1."""

    robot = "point"
    reward_term_names = ("progress", "effort")

    def __init__(self, max_episode_steps: int = 5):
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.control_dt = 0.1
        self.max_episode_steps = max_episode_steps

    def initial_task_state(self, state: Batch, rngs: list[np.random.Generator]) -> Batch:
        return {"goal": np.array([rng.uniform(0.5, 1.0) for rng in rngs])}

    def command(self, action: np.ndarray, state: Batch, task_state: Batch) -> Batch:
        return {"velocity": np.clip(action[:, 0], -1.0, 1.0)}

    def observe(self, state: Batch, task_state: Batch) -> np.ndarray:
        return np.stack([state["x"], task_state["goal"]], axis=1).astype(np.float32)

    def reward_terms(self, prev_state, state, action, task_state) -> dict[str, np.ndarray]:
        return {
            "progress": np.abs(prev_state["x"] - task_state["goal"])
            - np.abs(state["x"] - task_state["goal"]),
            "effort": -0.1 * action[:, 0] ** 2,
        }

    def terminated(self, state: Batch, task_state: Batch) -> np.ndarray:
        return state["x"] < -1.0

    def success(self, state: Batch, task_state: Batch) -> np.ndarray:
        return np.abs(state["x"] - task_state["goal"]) < 0.05


class PointBackend(Backend):
    def __init__(self, num_worlds: int = 1):
        self.num_worlds = num_worlds
        self.x = np.zeros(num_worlds)

    def reset_worlds(self, ids, rngs, options=None) -> Batch:
        self.x[ids] = [rng.uniform(-0.1, 0.1) for rng in rngs]
        return {"x": self.x.copy()}

    def apply(self, command: Batch) -> Batch:
        self.x += 0.1 * command["velocity"]
        return {"x": self.x.copy()}


def make_env(max_episode_steps: int = 5) -> TaskEnv:
    return TaskEnv(PointTask(max_episode_steps), PointBackend())


def test_time_limit_is_truncation_with_reason() -> None:
    env = make_env(max_episode_steps=3)
    env.reset(seed=0)
    for _ in range(2):
        _, _, terminated, truncated, info = env.step(np.zeros(1))
        assert not terminated and not truncated and "truncation_reason" not in info
    _, _, terminated, truncated, info = env.step(np.zeros(1))
    assert truncated and not terminated
    assert info["truncation_reason"] == TIME_LIMIT


def test_true_end_is_termination_not_truncation() -> None:
    env = make_env(max_episode_steps=100)
    env.reset(seed=0)
    terminated = False
    for _ in range(20):
        _, _, terminated, truncated, info = env.step(-np.ones(1))
        assert not truncated
        if terminated:
            break
    assert terminated and "truncation_reason" not in info


def test_reward_is_sum_of_reported_terms() -> None:
    env = make_env()
    obs, _ = env.reset(seed=3)
    goal = obs[1]
    x0 = env.state["x"][0]
    _, reward, _, _, info = env.step(np.array([0.5]))
    expected_progress = abs(x0 - goal) - abs(x0 + 0.05 - goal)
    assert info["reward_terms"]["progress"] == pytest.approx(expected_progress, abs=1e-6)
    assert info["reward_terms"]["effort"] == pytest.approx(-0.025)
    assert reward == pytest.approx(sum(info["reward_terms"].values()))


def test_seeding_reproduces_episode() -> None:
    first, second = make_env(), make_env()
    obs_a, _ = first.reset(seed=11)
    obs_b, _ = second.reset(seed=11)
    np.testing.assert_array_equal(obs_a, obs_b)
    obs_c, _ = second.reset(seed=12)
    assert not np.array_equal(obs_a, obs_c)


def test_bad_action_shape_names_the_problem() -> None:
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action has 2 components"):
        env.step(np.zeros(2))
    # The right number of components in the wrong shape is no action either (no silent reshape).
    with pytest.raises(ValueError, match=r"in shape \(1, 1\), the action space 1 in shape \(1,\)"):
        env.step(np.zeros((1, 1)))
    env.step(np.zeros(1))


def test_step_before_reset_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        make_env().step(np.zeros(1))


def test_task_env_needs_one_world() -> None:
    with pytest.raises(ValueError, match="one-world backend, got 2 worlds"):
        TaskEnv(PointTask(), PointBackend(num_worlds=2))


class _Unused(Task):
    robot = "unused"
    reward_term_names: ClassVar[tuple[str, ...]] = ()


def test_task_is_abstract() -> None:
    with pytest.raises(TypeError):
        _Unused()  # type: ignore[abstract]


def test_transition_refuses_reward_terms_other_than_the_declared_names() -> None:
    """A task whose reward_terms disagree with reward_term_names gets an error naming both, not
    rewards silently summed from the wrong terms."""

    class Misnamed(PointTask):
        reward_term_names = ("progress", "effort", "bonus")

    env = TaskEnv(Misnamed(), PointBackend())
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"returned \['progress', 'effort'\].*'bonus'"):
        env.step(np.zeros(1))
