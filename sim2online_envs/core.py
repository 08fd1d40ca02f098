"""The contract every robot follows, in sim and on hardware.

A :class:`Task` owns everything that makes the problem what it is: spaces, units, control period,
episode length, reward terms, termination and success. Its methods are pure functions over NumPy
arrays with a leading batch axis, so the single env (batch 1), the batched vector env (batch N)
and the real env share every line of task logic.

A :class:`Backend` applies commands and reports raw robot state: a MuJoCo model, a NumPy
simulator, a real driver, or a twin speaking the driver's wire format. ``SimX-v0`` and
``RealX-v0`` differ only in their backend.

:class:`TaskEnv` joins one task and one backend into a Gymnasium env with the package's episode
semantics: ``terminated`` only for true MDP ends (success, fall, cube lost); time limits and
aborts are ``truncated`` with ``info["truncation_reason"]``.

Randomness: every random draw of a reset or an episode (initial state, goal, command, domain
randomisation) comes from the one ``numpy.random.Generator`` handed in, and functions that draw
for one world take that world's generator. The batched env gives world ``i`` a generator seeded
like a single env seeded ``seed + i``, so the two produce the same worlds.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: Raw robot state or a task's per-episode variables: named arrays with a leading batch axis.
Batch = dict[str, np.ndarray]

#: ``info["truncation_reason"]`` values used across the package.
TIME_LIMIT = "time_limit"


class Transition(NamedTuple):
    """What one step of a batch of worlds produced (:meth:`Task.transition`)."""

    #: Batched observation after the step (an array, or a dict of arrays for Dict spaces).
    observation: np.ndarray | Batch
    #: (K, B) float64: row k is the weighted term ``task.reward_term_names[k]``.
    reward_terms: np.ndarray
    #: (B,) float64: the rows added one by one, in order (:func:`sum_reward_rows`).
    reward: np.ndarray
    #: (B,) bool: true MDP ends.
    terminated: np.ndarray
    #: (B,) bool: solved in the new state.
    success: np.ndarray
    #: The task's per-episode variables after the step.
    task_state: Batch
    #: Extra batched diagnostics (:meth:`Task.info` of the new state).
    info: dict[str, np.ndarray]


class Task(abc.ABC):
    """Spaces, timing, rewards and episode ends of one robot's task, over batched arrays.

    Subclasses set the class attributes and implement the abstract methods. ``task_state`` holds
    per-episode variables the task owns (goal, velocity command, previous action, previous
    distance); it is created by :meth:`initial_task_state` and advanced by :meth:`advance`.
    """

    #: Robot name used in ids and provenance: "panda", "go1", "racecar".
    robot: ClassVar[str]
    #: Names of the reward terms, in the order they are reported.
    reward_term_names: ClassVar[tuple[str, ...]]

    observation_space: spaces.Space
    action_space: spaces.Box
    control_dt: float
    max_episode_steps: int

    @abc.abstractmethod
    def initial_task_state(self, state: Batch, rngs: list[np.random.Generator]) -> Batch:
        """Per-episode task variables for the worlds in ``state``, one generator per world."""

    @abc.abstractmethod
    def command(self, action: np.ndarray, state: Batch, task_state: Batch) -> Batch:
        """Map a batch of normalised actions to the backend's robot commands (SI units)."""

    @abc.abstractmethod
    def observe(self, state: Batch, task_state: Batch) -> np.ndarray | Batch:
        """Batched observation (an array, or a dict of arrays for Dict spaces)."""

    @abc.abstractmethod
    def reward_terms(
        self, prev_state: Batch, state: Batch, action: np.ndarray, task_state: Batch
    ) -> dict[str, np.ndarray]:
        """Weighted reward terms, each of shape (B,); the reward is their sum."""

    @abc.abstractmethod
    def terminated(self, state: Batch, task_state: Batch) -> np.ndarray:
        """(B,) bool: true MDP ends only (success, fall, object lost)."""

    @abc.abstractmethod
    def success(self, state: Batch, task_state: Batch) -> np.ndarray:
        """(B,) bool: the task is solved in this state."""

    def advance(
        self,
        task_state: Batch,
        state: Batch,
        action: np.ndarray,
        step: np.ndarray,
        rngs: list[np.random.Generator],
    ) -> Batch:
        """Task variables after a step (previous action, resampled commands); default: same."""
        del state, action, step, rngs
        return task_state

    def info(self, state: Batch, task_state: Batch) -> dict[str, np.ndarray]:
        """Extra batched per-step diagnostics for ``info`` (same keys in sim and real)."""
        del state, task_state
        return {}

    def transition(
        self,
        prev_state: Batch,
        state: Batch,
        action: np.ndarray,
        task_state: Batch,
        step: np.ndarray,
        rngs: list[np.random.Generator],
    ) -> Transition:
        """Everything the envs need after the backend stepped: one call per step.

        The single env, the batched env and the real env all call this, so they share the order
        of the random draws and of the reward additions. The default composes
        :meth:`reward_terms`, :meth:`success`, :meth:`terminated`, :meth:`advance`,
        :meth:`observe` and :meth:`info`; a task may override it with a fused version that gives
        the same results (the Go1 task does, in one compiled call, because at batch size 1 the
        cost of a step is the number of NumPy calls).
        """
        terms = self.reward_terms(prev_state, state, action, task_state)
        missing = [name for name in self.reward_term_names if name not in terms]
        if missing or len(terms) != len(self.reward_term_names):
            raise ValueError(
                f"{type(self).__name__}.reward_terms returned {list(terms)}, expected "
                f"{list(self.reward_term_names)}"
            )
        matrix = np.array([terms[name] for name in self.reward_term_names], dtype=np.float64)
        success = np.asarray(self.success(state, task_state), dtype=bool)
        terminated = np.asarray(self.terminated(state, task_state), dtype=bool)
        next_task_state = self.advance(task_state, state, action, step, rngs)
        return Transition(
            observation=self.observe(state, next_task_state),
            reward_terms=matrix,
            reward=sum_reward_rows(matrix),
            terminated=terminated,
            success=success,
            task_state=next_task_state,
            info=self.info(state, next_task_state),
        )


class Backend(abc.ABC):
    """Applies commands and reports raw robot state for one world.

    Sim backends advance one control period of physics in :meth:`apply`; real backends send the
    command and return the state read at the next control tick.
    """

    #: "sim" for simulators, "real" for hardware drivers (and their twins).
    kind: ClassVar[str] = "sim"

    @abc.abstractmethod
    def reset(self, rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> Batch:
        """Start an episode; draw all randomisation from ``rng``; return the batch-1 state."""

    @abc.abstractmethod
    def apply(self, command: Batch) -> Batch:
        """Apply a batch-1 command for one control period and return the new batch-1 state."""

    def render(self) -> np.ndarray | None:
        """An RGB frame (H, W, 3) uint8 of the current state, or None if unsupported."""
        return None

    def privileged(self) -> dict[str, np.ndarray]:
        """Ground-truth quantities for scripted controllers and tests (never for the policy)."""
        return {}

    def close(self) -> None:
        """Release resources; for real robots, leave the robot in a safe state."""


class VectorBackend(abc.ABC):
    """N simulated worlds of one robot, stepped together (``mujoco.batch.Batch`` or NumPy).

    Every MuJoCo and NumPy simulator in the package is a vector backend; the single env runs it
    with ``num_worlds=1`` through :class:`SingleWorld`, and ``make_vec`` with many worlds, so the
    two share every line of physics, randomisation and state extraction.
    """

    kind: ClassVar[str] = "sim"
    num_worlds: int

    @abc.abstractmethod
    def reset_worlds(
        self,
        ids: np.ndarray,
        rngs: list[np.random.Generator],
        options: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Re-randomise and reset worlds ``ids`` (one generator each); return all worlds' state."""

    @abc.abstractmethod
    def apply(self, command: Batch) -> Batch:
        """Apply a command to every world for one control period; return all worlds' state."""

    def render_world(self, world: int) -> np.ndarray | None:
        """An RGB frame (H, W, 3) uint8 of one world, or None if unsupported."""
        del world
        return None

    def privileged(self) -> dict[str, np.ndarray]:
        """Ground truth for every world (batched), for scripted controllers and tests."""
        return {}

    def close(self) -> None:
        """Release threads, renderers and other resources."""


class SingleWorld(Backend):
    """A :class:`Backend` over a one-world :class:`VectorBackend`."""

    def __init__(self, vector_backend: VectorBackend):
        if vector_backend.num_worlds != 1:
            raise ValueError(f"SingleWorld needs num_worlds=1, got {vector_backend.num_worlds}")
        self.vector_backend = vector_backend
        self.kind = vector_backend.kind

    def reset(self, rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> Batch:
        return self.vector_backend.reset_worlds(np.zeros(1, dtype=np.int64), [rng], options)

    def apply(self, command: Batch) -> Batch:
        return self.vector_backend.apply(command)

    def render(self) -> np.ndarray | None:
        return self.vector_backend.render_world(0)

    def privileged(self) -> dict[str, np.ndarray]:
        return self.vector_backend.privileged()

    def close(self) -> None:
        self.vector_backend.close()


def sum_reward_rows(matrix: np.ndarray) -> np.ndarray:
    """The (B,) reward of a (K, B) matrix of terms: the rows added one by one, in order.

    Every env sums through here (or through a fused task's identical loop), so rewards agree
    bit for bit whatever the batch size: a running sum (``np.add.accumulate``) is sequential,
    whereas NumPy's ``sum`` is pairwise and Python's built-in ``sum`` is compensated from 3.12 on.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"need a (K, B) matrix of K >= 1 reward terms, got shape {matrix.shape}")
    return np.add.accumulate(matrix, axis=0)[-1]


def sum_reward_terms(terms: Mapping[str, np.ndarray]) -> np.ndarray:
    """The (B,) float64 reward: the terms added one by one, in their reporting order."""
    if not terms:
        raise ValueError("the task reported no reward terms")
    return sum_reward_rows(np.array([np.asarray(v, dtype=np.float64) for v in terms.values()]))


def unbatch(value: np.ndarray | Mapping[str, np.ndarray]) -> Any:
    """Strip the leading batch axis (of size 1) from an array or a dict of arrays."""
    if isinstance(value, Mapping):
        return {key: unbatch(item) for key, item in value.items()}
    return value[0]


class TaskEnv(gym.Env):
    """A Gymnasium env made of one :class:`Task` and one :class:`Backend`.

    ``info`` on every step holds ``reward_terms`` (each term's weighted value), ``is_success``,
    and on truncation ``truncation_reason``. Robot env classes subclass this and document their
    spaces, rewards and arguments in their docstring.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, task: Task, backend: Backend, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.task = task
        self.backend = backend
        self.render_mode = render_mode
        self.observation_space = task.observation_space
        self.action_space = task.action_space
        self.control_dt = task.control_dt
        self.max_episode_steps = task.max_episode_steps
        self.metadata = {**self.metadata, "render_fps": round(1.0 / task.control_dt)}
        self._state: Batch | None = None
        self._task_state: Batch | None = None
        self._steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self._state = self.backend.reset(self.np_random, options)
        self._task_state = self.task.initial_task_state(self._state, [self.np_random])
        self._steps = 0
        obs = self.task.observe(self._state, self._task_state)
        info = {"is_success": bool(self.task.success(self._state, self._task_state)[0])}
        info.update(unbatch(self.task.info(self._state, self._task_state)))
        return unbatch(obs), info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._state is None or self._task_state is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float64)
        expected = self.action_space.shape
        if action.shape != expected:
            # No silent reshape: a (2, 2) array is not a 4-D action, nor a (1, A) batch one.
            raise ValueError(
                f"action has {action.size} components in shape {action.shape}, the action "
                f"space {int(np.prod(expected))} in shape {expected}"
            )
        batched_action = action.reshape(1, -1)
        prev_state = self._state
        command = self.task.command(batched_action, prev_state, self._task_state)
        self._state = self.backend.apply(command)
        self._steps += 1
        outcome = self.task.transition(
            prev_state,
            self._state,
            batched_action,
            self._task_state,
            np.array([self._steps]),
            [self.np_random],
        )
        self._task_state = outcome.task_state
        terminated = bool(outcome.terminated[0])
        truncated = not terminated and self._steps >= self.max_episode_steps
        info: dict[str, Any] = {
            "reward_terms": dict(
                zip(self.task.reward_term_names, outcome.reward_terms[:, 0].tolist(), strict=True)
            ),
            "is_success": bool(outcome.success[0]),
        }
        for key, value in outcome.info.items():
            info[key] = unbatch(value)
        if truncated:
            info["truncation_reason"] = TIME_LIMIT
        obs = outcome.observation
        reward = float(outcome.reward[0])
        return unbatch(obs), reward, terminated, truncated, info

    @property
    def state(self) -> Batch:
        """The backend's last raw state (batch 1), for tests and scripted controllers."""
        if self._state is None:
            raise RuntimeError("call reset() first")
        return self._state

    @property
    def task_state(self) -> Batch:
        """The task's per-episode variables (batch 1)."""
        if self._task_state is None:
            raise RuntimeError("call reset() first")
        return self._task_state

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self.backend.render()

    def close(self) -> None:
        self.backend.close()
        super().close()
