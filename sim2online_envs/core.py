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


#: Reserved state keys every backend reports for every world, beside the robot's own keys.
#: (B,) bool: the reading can be used (finite, fresh, from a healthy device or simulation).
VALID = "valid"
#: (B,) float64 seconds: when the reading was taken (sim time in simulators, ``time.monotonic``
#: on hardware).
STAMP = "stamp"
#: (B,) str: why a reading is not valid ("" when it is), e.g. "sim_diverged", "pose_lost".
FAULT = "fault"
#: The reserved keys, which tasks never read.
READING_KEYS = (VALID, STAMP, FAULT)


def valid_reading(num_worlds: int, stamp: np.ndarray | float) -> Batch:
    """The reserved keys of ``num_worlds`` valid readings taken at ``stamp``."""
    return {
        VALID: np.ones(num_worlds, dtype=bool),
        STAMP: np.broadcast_to(np.asarray(stamp, dtype=np.float64), (num_worlds,)).copy(),
        FAULT: np.zeros(num_worlds, dtype="<U32"),
    }


#: ``fault`` of a simulated world whose physics went numerically unstable (MuJoCo then resets
#: it to the model's default pose: a teleport that must not become a transition).
SIM_DIVERGED = "sim_diverged"


class SimReadings:
    """The reserved keys of a simulator's worlds: simulated time, and which worlds diverged.

    A simulator calls :meth:`reset` for the worlds it resets, :meth:`advance` once per control
    period, marks unstable worlds in :attr:`diverged` (they stay invalid until their reset) and
    adds :meth:`keys` to every state it returns.
    """

    def __init__(self, num_worlds: int, control_dt: float):
        self.control_dt = float(control_dt)
        self.time = np.zeros(num_worlds, dtype=np.float64)
        self.diverged = np.zeros(num_worlds, dtype=bool)

    def reset(self, ids: np.ndarray) -> None:
        self.time[ids] = 0.0
        self.diverged[ids] = False

    def advance(self) -> None:
        self.time += self.control_dt

    def keys(self) -> Batch:
        diverged = self.diverged
        fault = np.zeros(len(diverged), dtype="<U32")  # zero-filled: cheap for many worlds
        fault[diverged] = SIM_DIVERGED
        return {VALID: ~diverged, STAMP: self.time.copy(), FAULT: fault}


class Backend(abc.ABC):
    """Applies commands and reports raw robot state for ``num_worlds`` worlds.

    One class for every backend. A simulator steps N worlds together (``mujoco.batch.Batch``
    on a thread pool, or NumPy over an ``(N, ...)`` state); the single env is the same
    simulator with one world, so ``gym.make`` and ``make_vec`` share every line of physics,
    randomisation and state extraction. A real robot (:mod:`sim2online_envs.hardware`) is a
    backend with one world that owns the control clock. Having one class (rather than a
    single-world backend, a vector backend and an adapter between them) keeps one signature per
    method, so the step loop, the limits and the tasks never ask which kind they hold.

    The contract:

    * :meth:`apply` sends the command now and returns the state at the end of the control
      period: simulators integrate one period of physics; a real backend sends, waits for its
      tick and reads. There is one clock in the stack, the backend's.
    * Every state holds :data:`VALID`, :data:`STAMP` and :data:`FAULT` for each world. A world
      whose reading is invalid (a diverged simulation, a stale or lost measurement) must still
      hold finite values (the last valid ones): the step loop truncates its episode with the
      fault as the reason before any task code runs on it.
    * The state echoes the command as applied (after the limits) under the command's own keys
      where the task needs it (the Panda task integrates its next target from ``tip_target``).
    * :meth:`stop` puts every world in its safe state: fast, idempotent, callable from any
      thread (a watchdog's or Ctrl-C's target). :meth:`home` moves to the reset pose.
    """

    #: "sim" for simulators, "real" for hardware drivers (and their twins).
    kind: ClassVar[str] = "sim"
    #: Worlds stepped together (1 for a real robot).
    num_worlds: int = 1

    @abc.abstractmethod
    def reset_worlds(
        self,
        ids: np.ndarray,
        rngs: list[np.random.Generator],
        options: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Reset worlds ``ids`` (one generator each, all randomisation drawn from it); return
        every world's state."""

    @abc.abstractmethod
    def apply(self, command: Batch) -> Batch:
        """Apply a command to every world for one control period; return every world's state."""

    def stop(self) -> None:
        """Put every world in its safe state now (fast, idempotent, thread-safe).

        Simulators have nothing to stop; real backends override this.
        """

    def home(self) -> None:
        """Move to the reset pose (Panda home, Go1 stand up, car idle); simulators place the
        world at reset instead, so the default does nothing."""

    def telemetry(self) -> dict[str, float]:
        """Timing of the last step (real backends: period, lateness, latency); sims: none."""
        return {}

    def fault_detail(self, world: int = 0) -> str:
        """The device's own words on the last fault of ``world`` (a libfranka error text), for
        ``info["fault_detail"]`` when an invalid reading ends an episode; "" when none."""
        del world
        return ""

    def render_world(
        self, world: int, task_state: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray | None:
        """An RGB frame (H, W, 3) uint8 of one world, or None if unsupported.

        ``task_state`` holds that world's task variables (unbatched), e.g. a goal to draw.
        """
        del world, task_state
        return None

    def privileged(self) -> dict[str, np.ndarray]:
        """Ground truth for every world (batched), for scripted controllers and tests."""
        return {}

    def close(self) -> None:
        """Release resources; for real robots, leave the robot in a safe state."""


#: Batches narrower than this are summed with one ``np.add.accumulate`` call.
_ACCUMULATE_BELOW = 128


def sum_reward_rows(matrix: np.ndarray) -> np.ndarray:
    """The (B,) reward of a (K, B) matrix of terms: the rows added one by one, in order.

    Every env sums through here (or through a fused task's identical loop), so rewards agree
    bit for bit whatever the batch size: row after row is sequential, whereas NumPy's ``sum``
    is pairwise and Python's built-in ``sum`` is compensated from 3.12 on. A running sum
    (``np.add.accumulate``) is one call for a few worlds; for many it strides across memory, so
    the rows are added in place instead (the same additions in the same order, the same bits).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"need a (K, B) matrix of K >= 1 reward terms, got shape {matrix.shape}")
    if matrix.shape[1] < _ACCUMULATE_BELOW:
        return np.add.accumulate(matrix, axis=0)[-1]
    total = matrix[0].copy()
    for row in matrix[1:]:
        total += row
    return total


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


def __getattr__(name: str) -> Any:
    # TaskEnv lives in sim2online_envs.env (it runs the step loop, which imports this module);
    # ``core.TaskEnv`` stays importable.
    if name == "TaskEnv":
        from sim2online_envs.env import TaskEnv

        return TaskEnv
    raise AttributeError(f"module 'sim2online_envs.core' has no attribute {name!r}")
