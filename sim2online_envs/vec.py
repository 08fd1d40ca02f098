"""Many simulated worlds of one robot as one Stable-Baselines3 ``VecEnv``.

:func:`make_vec` builds the robot's :class:`~sim2online_envs.core.Task` and its simulator as a
:class:`~sim2online_envs.core.Backend` with ``num_envs`` worlds (``mujoco.batch.Batch`` on a
thread pool for the MuJoCo robots, NumPy over an ``(N, ...)`` state for the race car), and
:class:`TaskVecEnv` runs every observation, reward and termination computation once over the batch
axis. The single env (``gym.make``) runs the same task code and the same simulator with one world,
so the batched env equals the single env world by world::

    import sim2online_envs

    venv = sim2online_envs.make_vec("SimGo1-v0", num_envs=1024, seed=0)
    obs = venv.reset()                       # (1024, 48) float32
    obs, rewards, dones, infos = venv.step(actions)

World ``i`` of a vec env made with ``seed=s`` draws its resets (domain randomisation, initial
state, goal or command) from a generator seeded like a single env reset with ``seed=s + i``, and
keeps drawing from it across auto-resets exactly as a single env reset without a seed does.

Episode semantics follow SB3's ``DummyVecEnv`` over the single env: ``dones = terminated |
truncated``; on a time limit ``infos[i]["TimeLimit.truncated"]`` is True and
``infos[i]["truncation_reason"] == "time_limit"``; a finished world is reset at once and its last
observation is kept in ``infos[i]["terminal_observation"]`` for bootstrapping. Every step's info
holds ``reward_terms`` (each weighted term) and ``is_success``, as in the single env; the same
values for all worlds at once, as (N,) arrays, are in :attr:`TaskVecEnv.last_reward_terms`.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from sim2online_envs.core import Backend, Task, sum_reward_terms, unbatch
from sim2online_envs.loop import LoopViews, StepLoop, StepResult, take_rows
from sim2online_envs.safety import CommandLimits, SafetyConfig

logger = logging.getLogger(__name__)

__all__ = ["TaskVecEnv", "make_vec", "sum_reward_terms"]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while thousands of info dicts are built.

    Every new dict counts toward the next collection and every collection walks all tracked
    objects: at 4096 worlds the collections that the infos triggered tripled their cost
    (3.7 against 1.0 µs per world). The dicts hold no reference cycles, and the collector runs
    as usual at the next allocation after the pause.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _same_options(first: Any, second: Any) -> bool:
    """Whether two reset options (dicts that may hold arrays) are equal, value by value.

    ``==`` on dicts holding NumPy arrays raises ("truth value of an array is ambiguous"), and
    reset options such as a start pose are naturally arrays.
    """
    if first is second:
        return True
    if isinstance(first, Mapping) and isinstance(second, Mapping):
        return first.keys() == second.keys() and all(
            _same_options(first[key], second[key]) for key in first
        )
    if isinstance(first, Mapping) or isinstance(second, Mapping):
        return False
    if isinstance(first, (np.ndarray, list, tuple)) or isinstance(
        second, (np.ndarray, list, tuple)
    ):
        try:
            return bool(np.array_equal(np.asarray(first), np.asarray(second)))
        except (TypeError, ValueError):
            return False
    try:
        return bool(first == second)
    except (TypeError, ValueError):
        return False


class _WorldView:
    """What ``get_attr``, ``set_attr`` and ``env_method`` see as world ``index``'s env.

    The worlds share one task and one simulator, so this view answers the per-world questions
    itself (generator, elapsed steps, render) and hands other attribute reads to the task.
    """

    def __init__(self, venv: TaskVecEnv, index: int):
        self._venv = venv
        self.index = index

    @property
    def render_mode(self) -> str | None:
        return self._venv._render_mode

    @property
    def np_random(self) -> np.random.Generator:
        return self._venv._generator(self.index)

    @np_random.setter
    def np_random(self, value: np.random.Generator) -> None:
        if not isinstance(value, np.random.Generator):
            raise TypeError(f"np_random must be a numpy.random.Generator, got {type(value)}")
        self._venv._rngs[self.index] = value

    @property
    def elapsed_steps(self) -> int:
        return int(self._venv.loop.steps[self.index])

    @property
    def task(self) -> Task:
        return self._venv.task

    @property
    def spec(self) -> gym.envs.registration.EnvSpec | None:
        return self._venv.spec

    @property
    def observation_space(self) -> gym.Space:
        return self._venv.observation_space

    @property
    def action_space(self) -> gym.Space:
        return self._venv.action_space

    @property
    def control_dt(self) -> float:
        return self._venv.task.control_dt

    @property
    def max_episode_steps(self) -> int:
        return self._venv.task.max_episode_steps

    @property
    def unwrapped(self) -> _WorldView:
        return self

    def render(self) -> np.ndarray | None:
        """An RGB frame of this world, from the simulator's renderer."""
        return self._venv._render_world(self.index)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return getattr(self._venv.task, name)
        except AttributeError:
            raise AttributeError(
                f"world {self.index} of {type(self._venv).__name__} has no attribute {name!r} "
                f"(neither the vec env's per-world attributes nor {type(self._venv.task).__name__})"
            ) from None


class TaskVecEnv(LoopViews, VecEnv):
    """An SB3 ``VecEnv`` of ``N`` worlds: one :class:`Task` over one :class:`Backend`.

    Each step runs ``task.command`` on the (N, A) actions, one ``vector_backend.apply`` for the
    control period of every world, then ``reward_terms``, ``success``, ``terminated``,
    ``advance`` and ``observe`` once over the batch axis; finished worlds are reset together with
    one ``reset_worlds`` call.

    :param task: the robot's task (spaces, rewards, episode ends).
    :param vector_backend: the simulator of ``N`` worlds.
    :param seed: world ``i`` is seeded ``seed + i`` at the first ``reset()``; None draws fresh
        entropy, as a single env reset without a seed does.
    :param render_mode: None or "rgb_array" (``get_images``/``render`` draw each world).
    :param spec: the registered env spec, reported through ``get_attr("spec")``.
    :param full_infos: True: every step's info of every world holds what the single env's info
        holds (``reward_terms``, ``is_success``, the task's extra keys), about 1 µs per world per
        step. False: only worlds whose episode ended get their info (all the keys SB3 and
        ``VecMonitor`` read, which they read only then) and the others get ``{}``; the batched
        values are always in :attr:`last_reward_terms`, :attr:`last_is_success` and
        :attr:`last_task_info`. Use False for thousands of cheap worlds.
    """

    def __init__(
        self,
        task: Task,
        vector_backend: Backend,
        seed: int | None = None,
        render_mode: str | None = None,
        spec: gym.envs.registration.EnvSpec | None = None,
        full_infos: bool = True,
        safety: SafetyConfig | Mapping[str, Any] | None = None,
        limits_class: type[CommandLimits] | None = None,
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        num_envs = int(vector_backend.num_worlds)
        if num_envs < 1:
            raise ValueError(f"the vector backend must have at least one world, got {num_envs}")
        self.task = task
        self.vector_backend = vector_backend
        #: The step loop shared with the single env (sanitation, limits, validity, ends).
        self.loop = StepLoop(task, vector_backend, safety, limits_class)
        self._render_mode = render_mode
        self.spec = spec
        self._views = [_WorldView(self, i) for i in range(num_envs)]
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._actions: np.ndarray | None = None
        self._closed = False
        self.full_infos = bool(full_infos)
        #: Each weighted reward term of the last step, (N,) arrays (cheap batched logging).
        self.last_reward_terms: dict[str, np.ndarray] = {}
        #: Whether each world's task was solved after the last step, (N,) bool.
        self.last_is_success = np.zeros(num_envs, dtype=bool)
        #: The task's extra info of the last step (``Task.info``), batched.
        self.last_task_info: dict[str, np.ndarray] = {}
        #: The last step's truncation reasons, (N,) str ("" where not truncated).
        self.last_truncation_reasons = np.zeros(num_envs, dtype="<U32")
        super().__init__(num_envs, task.observation_space, task.action_space)
        self._action_dim = int(np.prod(task.action_space.shape))
        self.metadata = {**self.metadata, "render_fps": round(1.0 / task.control_dt)}
        if seed is not None:
            self.seed(seed)

    @property
    def control_dt(self) -> float:
        """Seconds of simulated time per step (the task's control period)."""
        return self.task.control_dt

    @property
    def max_episode_steps(self) -> int:
        """Steps after which an episode is truncated (the task's time limit)."""
        return self.task.max_episode_steps

    # -- state ---------------------------------------------------------------------------------

    @property
    def elapsed_steps(self) -> np.ndarray:
        """Steps taken in each world's current episode, (N,) int64 (a copy)."""
        return self.loop.steps.copy()

    def _generator(self, index: int) -> np.random.Generator:
        rng = self._rngs[index]
        if rng is None:
            rng, _ = seeding.np_random(None)
            self._rngs[index] = rng
        return rng

    # -- VecEnv API ----------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        """Reset every world (seeds and options set by ``seed``/``set_options`` apply once)."""
        self._check_open()
        for i, seed in enumerate(self._seeds):
            if seed is not None:
                self._rngs[i], _ = seeding.np_random(seed)
        rngs = [self._generator(i) for i in range(self.num_envs)]
        loop = self.loop
        obs = loop.reset_all(self._option_groups(), rngs)
        self._reset_seeds()
        self._reset_options()
        assert loop.state is not None and loop.task_state is not None
        self.last_is_success = np.asarray(
            self.task.success(loop.state, loop.task_state), dtype=bool
        )
        self.last_task_info = self.task.info(loop.state, loop.task_state)
        self.last_reward_terms = {}
        self.last_truncation_reasons = np.zeros(self.num_envs, dtype="<U32")
        self.reset_infos = self._make_infos(None, self.last_is_success, self.last_task_info)
        return obs

    def _option_groups(self) -> list[tuple[dict[str, Any] | None, np.ndarray]]:
        """Worlds grouped by equal reset options (SB3 keeps one options dict per world)."""
        groups: list[tuple[dict[str, Any] | None, list[int]]] = []
        for i, options in enumerate(self._options):
            options = options or None
            for group_options, ids in groups:
                if _same_options(group_options, options):
                    ids.append(i)
                    break
            else:
                groups.append((options, [i]))
        return [(options, np.asarray(ids, dtype=np.int64)) for options, ids in groups]

    def step_async(self, actions: np.ndarray) -> None:
        self._check_open()
        # No dtype conversion here: the step loop refuses bool, complex and object actions
        # exactly as the single env does.
        actions = np.asarray(actions)
        action_dim = self._action_dim
        if actions.shape == (self.num_envs,) and action_dim == 1:
            actions = actions.reshape(self.num_envs, 1)
        if actions.shape != (self.num_envs, action_dim):
            raise ValueError(
                f"actions must have shape ({self.num_envs}, {action_dim}) "
                f"(num_envs, action dim), got {actions.shape}"
            )
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self.loop.state is None:
            raise RuntimeError("call reset() before step()")
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        task = self.task
        actions, self._actions = self._actions, None
        rngs: list[np.random.Generator] = self._rngs  # type: ignore[assignment]  # set by reset
        result = self.loop.step(actions, rngs)
        terms = dict(zip(task.reward_term_names, result.reward_terms, strict=True))
        self.last_reward_terms, self.last_is_success = terms, result.success
        self.last_task_info = result.task_info
        self.last_truncation_reasons = result.reasons
        dones = result.terminated | result.truncated

        done_ids = np.flatnonzero(dones)
        with _gc_paused():
            if self.full_infos:
                infos = self._make_infos(None, result.success, result.task_info, result)
            else:
                infos = [{} for _ in range(self.num_envs)]
                for i, info in zip(
                    done_ids.tolist(),
                    self._make_infos(done_ids, result.success, result.task_info, result),
                    strict=True,
                ):
                    infos[i] = info
        obs = result.observation
        if done_ids.size:
            obs = self._auto_reset(done_ids, obs, infos)
        return obs, result.reward.astype(np.float32), dones, infos

    def _auto_reset(
        self, ids: np.ndarray, obs: VecEnvObs, infos: list[dict[str, Any]]
    ) -> VecEnvObs:
        """Reset the finished worlds ``ids``; keep their last observation in their infos."""
        for i in ids.tolist():
            if isinstance(obs, dict):
                infos[i]["terminal_observation"] = {k: np.array(v[i]) for k, v in obs.items()}
            else:
                infos[i]["terminal_observation"] = np.array(obs[i])
        rngs = [self._generator(i) for i in ids.tolist()]
        loop = self.loop
        rows = loop.reset_some(ids, rngs)
        assert loop.task_state is not None
        new_task_state = take_rows(loop.task_state, ids)
        reset_infos = self._make_infos(
            None,
            self.task.success(rows, new_task_state),
            self.task.info(rows, new_task_state),
            worlds=ids,
        )
        for i, info in zip(ids.tolist(), reset_infos, strict=True):
            self.reset_infos[i] = info
        return loop.observation  # type: ignore[return-value]

    def _make_infos(
        self,
        rows: np.ndarray | None,
        success: np.ndarray,
        extra: Mapping[str, np.ndarray],
        result: StepResult | None = None,
        worlds: np.ndarray | None = None,
    ) -> list[dict[str, Any]]:
        """Info dicts of ``rows`` (None: all) with the single env's keys, values and types.

        ``worlds``: the world of each info when the arrays hold those worlds only (resets).
        """

        def pick(values: np.ndarray) -> np.ndarray:
            values = np.asarray(values)
            return values if rows is None else values[rows]

        if worlds is not None:
            world_ids = worlds.tolist()
        else:
            world_ids = list(range(self.num_envs)) if rows is None else rows.tolist()
        success_list = pick(success).astype(bool).tolist()
        if result is None:
            infos: list[dict[str, Any]] = [{"is_success": flag} for flag in success_list]
        else:
            names, matrix = self.task.reward_term_names, result.reward_terms
            per_world = (matrix if rows is None else matrix[:, rows]).T.tolist()
            infos = [
                {"reward_terms": dict(zip(names, values, strict=True)), "is_success": flag}
                for flag, values in zip(success_list, per_world, strict=True)
            ]
        for key, value in extra.items():
            # Iterating an array yields what the single env's ``value[0]`` gives: a NumPy scalar,
            # or a row of a multi-dimensional value.
            for info, item in zip(infos, pick(value), strict=True):
                info[key] = item
        ids = worlds if worlds is not None else rows
        for info, safety in zip(infos, self.loop.safety_infos(ids, result), strict=True):
            info["safety"] = safety
            info["timing"] = {}
        if result is not None:
            truncated = pick(result.truncated)
            for info, flag in zip(infos, truncated.tolist(), strict=True):
                info["TimeLimit.truncated"] = flag
            # reasons only for the worlds that end (the rest have none to read)
            for k in np.flatnonzero(truncated).tolist():
                world = world_ids[k]
                info = infos[k]
                info["truncation_reason"] = str(result.reasons[world])
                if result.invalid[world]:
                    info["fault_detail"] = self.vector_backend.fault_detail(world)
        return infos

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.vector_backend.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed")

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One RGB frame per world (``render_mode="rgb_array"``)."""
        if self._render_mode != "rgb_array":
            logger.warning(
                "get_images() needs render_mode='rgb_array', this vec env has %r", self._render_mode
            )
            return [None] * self.num_envs
        return [self._render_world(i) for i in range(self.num_envs)]

    def _render_world(self, world: int) -> np.ndarray | None:
        """World ``world``'s frame, drawn with its task variables (a goal) as the single env's."""
        task_state = self.loop.task_state
        rows = None if task_state is None else unbatch(take_rows(task_state, np.array([world])))
        return self.vector_backend.render_world(world, rows)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self._views[i], attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set a per-world attribute (``np_random``), or a task attribute for all worlds."""
        targets = list(self._get_indices(indices))
        prop = getattr(_WorldView, attr_name, None)
        if isinstance(prop, property) and prop.fset is not None:
            for i in targets:
                setattr(self._views[i], attr_name, value)
            return
        if prop is not None and not hasattr(self.task, attr_name):
            raise AttributeError(f"{attr_name!r} of a world is read-only")
        if sorted(targets) != list(range(self.num_envs)):
            raise ValueError(
                f"{attr_name!r} belongs to the task that all {self.num_envs} worlds share; "
                f"set it for all worlds (indices=None), not for {targets}"
            )
        setattr(self.task, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        return [
            getattr(self._views[i], method_name)(*method_args, **method_kwargs)
            for i in self._get_indices(indices)
        ]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Worlds are not Gymnasium envs, so no Gymnasium wrapper wraps them (use VecMonitor)."""
        del wrapper_class
        return [False for _ in self._get_indices(indices)]


def _check_optional_int(name: str, value: Any, minimum: int) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum
    ):
        raise ValueError(f"{name} must be None or an int >= {minimum}, got {value!r}")


def make_vec(
    env_id: str,
    num_envs: int,
    seed: int | None = None,
    num_threads: int | None = None,
    render_mode: str | None = None,
    full_infos: bool = True,
    max_episode_steps: int | None = None,
    **kwargs: Any,
) -> TaskVecEnv:
    """``num_envs`` worlds of a registered sim env as one SB3 ``VecEnv``.

    :param env_id: a registered simulator id, e.g. "SimGo1-v0".
    :param num_envs: number of worlds, stepped together.
    :param seed: world ``i`` starts like ``gym.make(env_id).reset(seed=seed + i)``.
    :param num_threads: threads of the MuJoCo batch (None: the simulator's default, all CPUs);
        ignored by NumPy simulators.
    :param render_mode: None or "rgb_array" (``get_images``/``render``).
    :param full_infos: False fills per-world info dicts only at episode ends (see
        :class:`TaskVecEnv`); the batched values stay in ``last_reward_terms`` and friends.
    :param max_episode_steps: a time limit in steps replacing the task's, as ``gym.make``'s
        argument of that name does (which gymnasium keeps from the env class).
    :param kwargs: the env class's keyword arguments (the same as for ``gym.make``).
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)):
        raise TypeError(f"num_envs must be an int, got {type(num_envs).__name__}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    _check_optional_int("num_threads", num_threads, minimum=0)
    _check_optional_int("max_episode_steps", max_episode_steps, minimum=1)
    import sim2online_envs  # noqa: F401  (registers the ids)

    spec = gym.spec(env_id)
    env_kwargs = {**spec.kwargs, **kwargs}
    backend = env_kwargs.pop("backend", "sim")
    if backend != "sim":
        raise ValueError(
            f"make_vec batches simulators only: {env_id} has backend={backend!r}, expected 'sim'"
        )
    entry_point = spec.entry_point
    env_cls = (
        gym.envs.registration.load_env_creator(entry_point)
        if isinstance(entry_point, str)
        else entry_point
    )
    build = getattr(env_cls, "build_vector", None)
    if build is None:
        raise TypeError(
            f"{env_id}: {getattr(env_cls, '__name__', env_cls)} has no build_vector(num_worlds, "
            "num_threads, **kwargs) -> (task, vector_backend), which make_vec needs"
        )
    if "render_mode" in inspect.signature(build).parameters:
        # Simulators that draw more when rendering (the race car's trail) build for it, as the
        # single env does from its render_mode.
        env_kwargs["render_mode"] = render_mode
    safety = env_kwargs.pop("safety", None)
    task, vector_backend = build(num_worlds=int(num_envs), num_threads=num_threads, **env_kwargs)
    if max_episode_steps is not None:
        task.max_episode_steps = int(max_episode_steps)
    if vector_backend.num_worlds != num_envs:
        raise RuntimeError(
            f"{env_id}: build_vector made {vector_backend.num_worlds} worlds, asked for {num_envs}"
        )
    return TaskVecEnv(
        task,
        vector_backend,
        seed=seed,
        render_mode=render_mode,
        spec=spec,
        full_infos=full_infos,
        safety=safety,
        limits_class=getattr(env_cls, "limits_class", None),
    )
