"""The one step loop: every env, single or batched, sim or real, steps through :class:`StepLoop`.

::

    action ─► sanitise ─► Task.command ─► limits ─► Backend.apply ─► valid? ─► Task.transition
              NaN, clip    SI units        SI units   one clock        no: truncate  ─► aborts,
                                                                       with fault       time limit

One step of ``N`` worlds, in this order:

1. **Sanitise** the (N, A) actions: wrong shape or dtype raises; NaN or inf raises a
   ``ValueError`` naming the world and the action (or, with ``SafetyConfig(non_finite=
   "replace")``, is replaced by the safe action and counted); then clipped to the action space.
2. **Command**: the task maps actions to robot commands in SI units.
3. **Limits**: the env's :class:`~sim2online_envs.safety.CommandLimits` bound the command (joint
   limits, workspace, speed cap); a non-finite command is refused before the backend.
4. **Apply**: the backend runs one control period and returns every world's state.
5. **Validity**: a world whose reading is invalid (``state["valid"]`` False: a diverged
   simulation, a stale or lost measurement) keeps its last valid state; its episode is truncated
   with ``state["fault"]`` as the reason, its observation is the last valid one and its reward
   0.0. A transition that still came out non-finite is treated the same way
   (``"non_finite_transition"``). No NaN reaches an observation, a reward or a replay buffer.
6. **Transition**: the task's rewards, termination, success, next task state and observation.
7. **Ends**: ``terminated`` only for the task's true MDP ends; a safety abort of the limits
   (``"safety_arena"``, ...) or the time limit (``"time_limit"``) truncates, with the reason.

:class:`~sim2online_envs.core.TaskEnv` (one world) and :class:`~sim2online_envs.vec.TaskVecEnv`
(N worlds) only format what this returns; neither re-implements a rule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from gymnasium import spaces

from sim2online_envs.core import FAULT, READING_KEYS, TIME_LIMIT, VALID, Backend, Batch, Task
from sim2online_envs.safety import (
    REASON_DTYPE,
    SANITATION_NAMES,
    CommandLimits,
    SafetyConfig,
    UnsafeCommandError,
    all_finite,
    no_reasons,
    reasons_from_masks,
)

logger = logging.getLogger(__name__)

#: ``truncation_reason`` when the task produced a non-finite observation or reward from a
#: reading the backend called valid.
NON_FINITE_TRANSITION = "non_finite_transition"
#: ``truncation_reason`` for an invalid reading that named no fault.
INVALID_READING = "invalid_reading"
#: The intervention counted when the limits abort an episode.
ABORT = "abort"


class StepResult(NamedTuple):
    """What one step of ``N`` worlds produced, for the envs to format."""

    #: Observation after the step (an (N, ...) array or a dict of them); the last valid one for
    #: worlds whose reading was invalid.
    observation: np.ndarray | Batch
    #: (N,) float64, finite.
    reward: np.ndarray
    #: (K, N) float64: the weighted reward terms (0 for invalid worlds).
    reward_terms: np.ndarray
    #: (N,) bool: true MDP ends.
    terminated: np.ndarray
    #: (N,) bool: time limit, safety abort or invalid reading.
    truncated: np.ndarray
    #: (N,) str: the truncation reason ("" where not truncated).
    reasons: np.ndarray
    #: (N,) str: the limits' abort reason ("" where none).
    aborts: np.ndarray
    #: (N,) bool: the reading (or the transition made from it) was invalid.
    invalid: np.ndarray
    #: (N,) bool: solved in the new state.
    success: np.ndarray
    #: The task's extra batched diagnostics.
    task_info: dict[str, np.ndarray]
    #: (N, I) int64: interventions of this step, columns :attr:`StepLoop.intervention_names`.
    interventions: np.ndarray
    #: (N, A) float64: the actions after sanitation, as the task received them.
    applied_action: np.ndarray


def _rows_finite(value: np.ndarray) -> np.ndarray:
    """(N,) bool: every entry of each world's row is finite (integer arrays always are)."""
    value = np.asarray(value)
    if value.dtype.kind not in "fc":
        return np.ones(len(value), dtype=bool)
    finite = np.isfinite(value)
    if finite.ndim > 1:
        finite = finite.reshape(len(finite), -1).all(axis=1)
    return finite


#: ``np.add.reduce``: ``ndarray.sum`` without its Python wrapper.
_sum = np.add.reduce
#: The ufunc ``np.clip`` calls (the same NaN rules and bits) without its Python wrapper, a
#: third of the cost at batch size 1; ``np.clip`` where a NumPy release moves it.
_clip = getattr(getattr(getattr(np, "_core", None), "umath", None), "clip", np.clip)


def _all_finite(value: Any) -> bool:
    """Every entry of an array is finite (integer and bool arrays always are): one sum, as in
    :func:`~sim2online_envs.safety.all_finite` (written out here: this runs several times a
    step)."""
    if type(value) is not np.ndarray:
        value = np.asarray(value)
    kind = value.dtype.kind
    if kind == "f":
        return math.isfinite(_sum(value, None)) or bool(np.isfinite(value).all())
    return kind != "c" or bool(np.isfinite(value).all())


def _command_finite(value: Any) -> bool:
    """Every entry of a command value is finite, as float64 (what the backend gets): one sum
    for float arrays; anything else converted as before (a string raises)."""
    if type(value) is np.ndarray:
        kind = value.dtype.kind
        if kind == "f":
            return math.isfinite(_sum(value, None)) or bool(np.isfinite(value).all())
        if kind in "biu":
            return True
    return bool(np.isfinite(np.asarray(value, dtype=np.float64)).all())


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def take_rows(batch: Mapping[str, np.ndarray], ids: np.ndarray) -> Batch:
    """The rows ``ids`` of every array in a batched dict."""
    return {key: np.asarray(value)[ids] for key, value in batch.items()}


def put_rows(batch: Mapping[str, np.ndarray], ids: np.ndarray, rows: Mapping[str, Any]) -> Batch:
    """A copy of ``batch`` with rows ``ids`` replaced by ``rows`` (the same keys)."""
    if rows.keys() != batch.keys():
        raise ValueError(
            f"rows have keys {sorted(rows)}, the batch has {sorted(batch)}; a task's "
            "initial_task_state must return the keys of its running task state"
        )
    out: Batch = {}
    for key, value in batch.items():
        merged = np.array(value, copy=True)
        merged[ids] = rows[key]
        out[key] = merged
    return out


class StepLoop:
    """One task over one backend of ``N`` worlds, with the env's safety rules (module docstring).

    :param task: the robot's task.
    :param backend: the simulator or the robot (``num_worlds`` worlds).
    :param safety: action handling and limits (:class:`SafetyConfig`).
    :param limits_class: the env's own limits, used when ``safety.limits == "auto"``.
    """

    def __init__(
        self,
        task: Task,
        backend: Backend,
        safety: SafetyConfig | Mapping[str, Any] | None = None,
        limits_class: type[CommandLimits] | None = None,
    ):
        self.task = task
        self.backend = backend
        self.safety = safety = SafetyConfig.coerce(safety)
        self.limits: CommandLimits | None = safety.resolve_limits(limits_class, task)
        if self.limits is None:
            logger.warning("%s: command limits are off", type(task).__name__)
        self.num_worlds = int(backend.num_worlds)
        space = task.action_space
        if not isinstance(space, spaces.Box):
            raise TypeError(f"the step loop needs a Box action space, got {space}")
        self._low = np.asarray(space.low, dtype=np.float64)
        self._high = np.asarray(space.high, dtype=np.float64)
        self._shape = (self.num_worlds, *space.shape)
        self._safe_action = self._make_safe_action(safety.safe_action)
        self._kinds = "fiu" if safety.allow_integer_actions else "f"
        limit_names = self.limits.intervention_names if self.limits is not None else ()
        #: Column names of :attr:`StepResult.interventions` and :attr:`episode_interventions`.
        self.intervention_names: tuple[str, ...] = (*SANITATION_NAMES, *limit_names, ABORT)
        self._limit_columns = [(self.intervention_names.index(name), name) for name in limit_names]
        self._interventions_shape = (self.num_worlds, len(self.intervention_names))
        self._abort_column = self.intervention_names.index(ABORT)
        n = self.num_worlds
        self.state: Batch | None = None
        self.task_state: Batch | None = None
        self.observation: np.ndarray | Batch | None = None
        #: Steps taken in each world's episode.
        self.steps = np.zeros(n, dtype=np.int64)
        #: Interventions so far in each world's episode, (N, I).
        self.episode_interventions = np.zeros((n, len(self.intervention_names)), dtype=np.int64)
        self._previous_command: Batch | None = None
        self._fresh = np.ones(n, dtype=bool)
        self._any_fresh = True
        # What a step returns for worlds where nothing happened, shared by every such step
        # (read-only): no reason strings and no per-world flags are allocated for them.
        self._no_reasons = _read_only(no_reasons(n))
        self._no_worlds = _read_only(np.zeros(n, dtype=bool))

    # -- actions ---------------------------------------------------------------------------------

    def _make_safe_action(self, safe_action: Sequence[float] | None) -> np.ndarray:
        if safe_action is None:
            return np.clip(np.zeros_like(self._low), self._low, self._high)
        action = np.asarray(safe_action, dtype=np.float64)
        if action.shape != self._low.shape:
            raise ValueError(
                f"safe_action has shape {action.shape}, the action space {self._low.shape}"
            )
        if (
            not np.all(np.isfinite(action))
            or np.any(action < self._low)
            or np.any(action > self._high)
        ):
            raise ValueError(f"safe_action {action.tolist()} is not inside the action space")
        return action

    def sanitize(self, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        """The (N, A) float64 actions the task will get, and the (N, 2) sanitation counts."""
        array, replaced, clipped = self._sanitize(actions)
        counts = np.zeros((self.num_worlds, len(SANITATION_NAMES)), dtype=np.int64)
        if replaced is not None:
            counts[replaced, 0] = 1
        if clipped is not None:
            counts[:, 1] = clipped
        return array, counts

    def _sanitize(self, actions: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """:meth:`sanitize` with the counts as the worlds whose action was replaced and the
        (N,) bool clipped flags, each None where none (nothing allocated for them)."""
        try:
            array = np.asarray(actions)
        except (ValueError, TypeError) as error:
            raise TypeError(f"action must be an array of numbers, got {actions!r}") from error
        if array.dtype.kind not in self._kinds:
            raise TypeError(
                f"action dtype must be a real {'number' if 'i' in self._kinds else 'float'} "
                f"type, got {array.dtype} (from {type(actions).__name__})"
            )
        if array.shape != self._shape:
            raise ValueError(
                f"actions must have shape {self._shape} (worlds, action dims), got {array.shape}"
            )
        array = array.astype(np.float64)
        replaced = clipped = None
        if not all_finite(array):
            bad = np.flatnonzero(~_rows_finite(array))
            if self.safety.non_finite == "raise":
                world = int(bad[0])
                where = "" if self.num_worlds == 1 else f" of world {world}"
                raise ValueError(
                    f"action{where} contains NaN or inf: {array[world].tolist()}; nothing was "
                    "sent. Pass safety={'non_finite': 'replace'} to send the safe action instead"
                )
            logger.warning("non-finite actions of worlds %s replaced by the safe action", bad)
            array[bad] = self._safe_action
            replaced = bad
        if self.safety.clip:
            bounded = _clip(array, self._low, self._high)
            changed = bounded != array
            if np.count_nonzero(changed):
                clipped = changed.reshape(self.num_worlds, -1).any(axis=1)
            array = bounded
        elif np.any(array < self._low) or np.any(array > self._high):
            raise ValueError(
                f"action {array.tolist()} is outside the action space [{self._low.tolist()}, "
                f"{self._high.tolist()}] and clipping is off"
            )
        return array, replaced, clipped

    # -- resets ----------------------------------------------------------------------------------

    def reset_all(
        self,
        groups: Sequence[tuple[Mapping[str, Any] | None, np.ndarray]],
        rngs: list[np.random.Generator],
    ) -> np.ndarray | Batch:
        """Reset every world (grouped by equal reset options); return the observation."""
        state: Batch | None = None
        for options, ids in groups:
            state = self.backend.reset_worlds(ids, [rngs[i] for i in ids.tolist()], options)
        if state is None:
            raise ValueError("reset_all needs at least one group of worlds")
        self._check_reset_reading(state, np.arange(self.num_worlds))
        self.state = state
        self.task_state = self.task.initial_task_state(state, rngs)
        self.steps[:] = 0
        self.episode_interventions[:] = 0
        self._previous_command = None
        self._fresh[:] = True
        self._any_fresh = True
        self.observation = self.task.observe(state, self.task_state)
        return self.observation

    def reset_some(self, ids: np.ndarray, rngs: list[np.random.Generator]) -> Batch:
        """Reset worlds ``ids`` (one generator each) after their episode ended; return the
        new state rows of those worlds (for their reset infos)."""
        if self.state is None or self.task_state is None or self.observation is None:
            raise RuntimeError("call reset_all() first")
        state = self.backend.reset_worlds(ids, rngs, None)
        self._check_reset_reading(state, ids)
        rows = take_rows(state, ids)
        self.task_state = put_rows(self.task_state, ids, self.task.initial_task_state(rows, rngs))
        self.state = state
        self.steps[ids] = 0
        self.episode_interventions[ids] = 0
        self._fresh[ids] = True
        self._any_fresh = True
        new_obs = self.task.observe(rows, take_rows(self.task_state, ids))
        if isinstance(self.observation, dict):
            observation = {
                key: np.array(value, copy=True) for key, value in self.observation.items()
            }
            for key, value in observation.items():
                value[ids] = new_obs[key]
        else:
            observation = np.array(self.observation, copy=True)
            observation[ids] = new_obs
        self.observation = observation
        return rows

    def _check_reset_reading(self, state: Batch, ids: np.ndarray) -> None:
        valid = state.get(VALID)
        if valid is not None and not np.all(valid[ids]):
            bad = ids[~np.asarray(valid)[ids]]
            faults = np.asarray(state.get(FAULT, np.full(self.num_worlds, "")))[bad].tolist()
            raise RuntimeError(
                f"{type(self.backend).__name__}: the reading after reset is invalid for worlds "
                f"{bad.tolist()} ({faults}); the episode cannot start"
            )

    # -- the step --------------------------------------------------------------------------------

    def step(self, actions: Any, rngs: list[np.random.Generator]) -> StepResult:
        """One control period of every world (module docstring).

        Where nothing unusual happens (every reading valid and finite, no abort, no episode
        end) the step allocates no reason strings and no per-world flags: at batch size 1 its
        cost is the number of NumPy calls, so the rare cases pay for themselves.
        """
        state, task_state, last_observation = self.state, self.task_state, self.observation
        if state is None or task_state is None or last_observation is None:
            raise RuntimeError("call reset() before step()")
        task, n = self.task, self.num_worlds
        actions, replaced, clipped = self._sanitize(actions)
        interventions = np.zeros(self._interventions_shape, dtype=np.int64)
        if replaced is not None:
            interventions[replaced, 0] = 1
        if clipped is not None:
            interventions[:, 1] = clipped

        command = task.command(actions, state, task_state)
        limits = self.limits
        if limits is not None:
            command, counts = limits.limit(command, state, self._previous_command, self._fresh)
            for column, name in self._limit_columns:
                interventions[:, column] = counts[name]
        for key, value in command.items():
            if not _command_finite(value):
                raise UnsafeCommandError(
                    f"command {key!r} is not finite ({np.asarray(value).tolist()}); refused "
                    "before the backend"
                )
        new_state = self.backend.apply(command)
        self._previous_command = command
        if self._any_fresh:
            self._fresh[:] = False
            self._any_fresh = False
        steps = self.steps
        steps += 1

        valid = np.asarray(new_state[VALID], dtype=bool) if VALID in new_state else None
        # np.count_nonzero: a fifth of the cost of .all() / .any() on a few worlds
        all_valid = valid is None or np.count_nonzero(valid) == valid.size
        if not all_valid:
            new_state = self._keep_last_valid(new_state, state, ~valid)

        outcome = task.transition(state, new_state, actions, task_state, steps.copy(), rngs)
        reward, observation = outcome.reward, outcome.observation
        terms, terminated = outcome.reward_terms, outcome.terminated
        success, next_task_state = outcome.success, outcome.task_state
        if all_valid and _all_finite(reward) and self._observation_finite(observation):
            invalid = broken = self._no_worlds
            any_invalid = False
        else:
            if valid is None:
                valid = np.ones(n, dtype=bool)
            finite = _rows_finite(reward)
            if isinstance(observation, dict):
                for value in observation.values():
                    finite &= _rows_finite(value)
            else:
                finite &= _rows_finite(observation)
            broken = valid & ~finite
            invalid = ~valid | broken
            any_invalid = np.count_nonzero(invalid) > 0
        if any_invalid:
            bad_ids = np.flatnonzero(invalid)
            if broken.any():
                logger.error(
                    "worlds %s: the task produced a non-finite observation or reward from a "
                    "reading marked valid; truncated",
                    np.flatnonzero(broken).tolist(),
                )
                new_state = self._keep_last_valid(new_state, state, broken)
            observation = self._replace_rows(observation, last_observation, bad_ids)
            reward = np.array(reward, copy=True)
            reward[bad_ids] = 0.0
            terms = np.array(terms, copy=True)
            terms[:, bad_ids] = 0.0
            terminated = np.array(terminated, copy=True)
            terminated[bad_ids] = False
            success = np.array(success, copy=True)
            success[bad_ids] = False
            next_task_state = put_rows(next_task_state, bad_ids, take_rows(task_state, bad_ids))

        masks = limits.abort_masks(new_state) if limits is not None else {}
        aborted = _union(masks.values())
        if aborted is not None and any_invalid:
            aborted = aborted & ~invalid
        any_aborted = aborted is not None and np.count_nonzero(aborted) > 0
        if any_aborted:
            interventions[:, self._abort_column] = aborted
        time_up = steps >= task.max_episode_steps
        if any_aborted or any_invalid:
            ended = time_up | invalid
            if any_aborted:
                ended |= aborted
            truncated = ~terminated & ended
        else:
            truncated = time_up & ~terminated
        aborts = reasons = self._no_reasons
        if any_aborted:
            aborts = reasons_from_masks(masks, n)
            aborts[~aborted] = ""
        if np.count_nonzero(truncated):
            # Strings only for the worlds that end: invalid reading > safety abort > time limit.
            reasons = no_reasons(n)
            reasons[time_up & truncated] = TIME_LIMIT
            if any_aborted:
                reasons[aborted & truncated] = aborts[aborted & truncated]
            if any_invalid:
                faults = np.asarray(new_state.get(FAULT, reasons), dtype=REASON_DTYPE)[invalid]
                faults[faults == ""] = INVALID_READING
                faults[broken[invalid]] = NON_FINITE_TRANSITION
                reasons[invalid] = faults

        self.state = new_state
        self.task_state = next_task_state
        self.observation = observation
        self.episode_interventions += interventions
        return StepResult(
            observation=observation,
            reward=reward,
            reward_terms=terms,
            terminated=terminated,
            truncated=truncated,
            reasons=reasons,
            aborts=aborts,
            invalid=invalid,
            success=success,
            task_info=outcome.info,
            interventions=interventions,
            applied_action=actions,
        )

    @staticmethod
    def _observation_finite(observation: np.ndarray | Batch) -> bool:
        if isinstance(observation, dict):
            return all(_all_finite(value) for value in observation.values())
        return _all_finite(observation)

    @staticmethod
    def _keep_last_valid(new_state: Batch, state: Batch, bad: np.ndarray) -> Batch:
        """``new_state`` with the rows ``bad`` of every robot key taken from ``state`` (the last
        valid reading); the reading keys keep the new values (the fault)."""
        kept: Batch = {}
        for key, value in new_state.items():
            if key in READING_KEYS or key not in state:
                kept[key] = value
            else:
                merged = np.array(value, copy=True)
                merged[bad] = state[key][bad]
                kept[key] = merged
        return kept

    @staticmethod
    def _replace_rows(
        observation: np.ndarray | Batch, previous: np.ndarray | Batch, ids: np.ndarray
    ) -> np.ndarray | Batch:
        if isinstance(observation, dict):
            out = {key: np.array(value, copy=True) for key, value in observation.items()}
            for key, value in out.items():
                value[ids] = previous[key][ids]  # type: ignore[index]
            return out
        out_array = np.array(observation, copy=True)
        out_array[ids] = previous[ids]  # type: ignore[index]
        return out_array

    def safety_info(self, world: int, result: StepResult | None) -> dict[str, Any]:
        """``info["safety"]`` of one world: this step's and the episode's interventions by
        name, the limits' abort reason (None if none) and the action as applied."""
        names = self.intervention_names
        totals = dict(zip(names, self.episode_interventions[world].tolist(), strict=True))
        if result is None:
            return {
                "interventions": dict.fromkeys(names, 0),
                "episode_interventions": totals,
                "abort": None,
                "applied_action": None,
            }
        counts = result.interventions[world].tolist()
        return {
            "interventions": dict(zip(names, counts, strict=True)),
            "episode_interventions": totals,
            "abort": str(result.aborts[world]) if counts[self._abort_column] else None,
            "applied_action": result.applied_action[world].astype(np.float32),
        }

    def safety_infos(
        self, worlds: np.ndarray | None, result: StepResult | None
    ) -> list[dict[str, Any]]:
        """:meth:`safety_info` of the worlds ``worlds`` (None: all), from one ``tolist`` of
        each batched array (a row view of one float32 array is each world's applied action)."""
        names = self.intervention_names
        episode = (
            self.episode_interventions if worlds is None else self.episode_interventions[worlds]
        )
        if result is None:
            return [
                {
                    "interventions": dict.fromkeys(names, 0),
                    "episode_interventions": totals,
                    "abort": None,
                    "applied_action": None,
                }
                for totals in _count_dicts(names, episode.tolist())
            ]
        step = result.interventions if worlds is None else result.interventions[worlds]
        actions = result.applied_action if worlds is None else result.applied_action[worlds]
        if np.count_nonzero(step[:, self._abort_column]):
            aborts = (result.aborts if worlds is None else result.aborts[worlds]).tolist()
        else:
            aborts = [""] * len(step)
        return [
            {
                "interventions": counts,
                "episode_interventions": totals,
                "abort": abort or None,
                "applied_action": action,
            }
            for counts, totals, abort, action in zip(
                _count_dicts(names, step.tolist()),
                _count_dicts(names, episode.tolist()),
                aborts,
                actions.astype(np.float32),
                strict=True,
            )
        ]


def _count_dicts(names: tuple[str, ...], rows: list[list[int]]) -> list[dict[str, int]]:
    """One ``{name: count}`` dict per row. Rows repeat (mostly all zeros), so for many worlds
    each distinct row is zipped once and copied: half the cost of a zip per world."""
    if len(rows) < 8:
        return [dict(zip(names, row, strict=True)) for row in rows]
    built: dict[tuple[int, ...], dict[str, int]] = {}
    out = []
    for row in rows:
        key = tuple(row)
        counts = built.get(key)
        if counts is None:
            counts = built[key] = dict(zip(names, row, strict=True))
        out.append(counts.copy())
    return out


def _union(masks: Any) -> np.ndarray | None:
    """(N,) bool: the worlds any of the abort masks holds; None when there are no masks."""
    union = None
    for mask in masks:
        union = np.asarray(mask, dtype=bool) if union is None else union | mask
    return union


class LoopViews:
    """What the single and the batched env show of their step loop (shared properties)."""

    loop: StepLoop

    @property
    def state(self) -> Batch:
        """The backend's last raw state of every world (for tests and scripted controllers)."""
        if self.loop.state is None:
            raise RuntimeError("call reset() first")
        return self.loop.state

    @property
    def task_state(self) -> Batch:
        """The task's per-episode variables of every world."""
        if self.loop.task_state is None:
            raise RuntimeError("call reset() first")
        return self.loop.task_state

    @property
    def limits(self) -> CommandLimits | None:
        """The command limits the loop applies (the same in the single and the batched env)."""
        return self.loop.limits
