"""Replay buffers that mix offline data D0 (simulation, earlier trials) into online minibatches.

:class:`MixingReplayBuffer` is an SB3 ``ReplayBuffer`` (``DictReplayBuffer`` for Dict
observations) whose own storage is the *online* part; beside it sits an *offline* part D0, an
append-only store of transitions. Every minibatch draws a fraction α from online data and the rest
from D0, α following a schedule over gradient steps (the study anneals 0.5 → 1 over 10k steps).

Use it like any SB3 buffer::

    from sim2online_envs.agents import SAC, MixingReplayBuffer

    model = SAC(
        "MlpPolicy",
        env,
        replay_buffer_class=MixingReplayBuffer,
        replay_buffer_kwargs={"online_fraction": (0.5, 1.0, 10_000), "offline_data": "sim.pkl"},
    )

D0 can be filled from a replay buffer saved with ``model.save_replay_buffer`` (any SB3 layout:
``optimize_memory_usage``, several envs, a previous trial's mixing buffer), from a buffer object,
or from transition arrays through :meth:`MixingReplayBuffer.add_offline_transitions` (which the
episode-recording loader calls).

Sample sizes: with ``B`` the batch size, the online count is ``floor(α·B)`` plus one with
probability ``α·B − floor(α·B)`` (stochastic rounding). It is exactly ``α·B`` whenever that is an
integer, unbiased otherwise (a plain ``round`` would turn α = 0.01 at B = 128 into 1/128), and has
far less variance than a binomial draw. α = 1 takes every sample online and never touches D0.
"""

from __future__ import annotations

import io
import logging
import math
import pathlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import cloudpickle
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.preprocessing import get_action_dim, get_obs_shape
from stable_baselines3.common.save_util import load_from_pkl
from stable_baselines3.common.type_aliases import DictReplayBufferSamples, ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from sim2online_envs.agents.schedules import StepScheduleLike, as_step_schedule

logger = logging.getLogger(__name__)

Observation = np.ndarray | dict[str, np.ndarray]
Samples = ReplayBufferSamples | DictReplayBufferSamples
#: What ``offline_data`` accepts: a saved buffer's path, a buffer, a dict of transition arrays.
OfflineSource = str | pathlib.Path | ReplayBuffer | Mapping[str, Any]

TRANSITION_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _check_observation_array(
    name: str, value: Any, space: spaces.Space, n: int | None
) -> tuple[np.ndarray, int]:
    """Validate one observation array (leading transition axis) against a Box space."""
    array = np.asarray(value)
    shape = get_obs_shape(space)
    if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != tuple(shape):
        raise ValueError(
            f"{name} must have shape (n_transitions, {', '.join(map(str, shape))}), "
            f"got {array.shape}"
        )
    if n is not None and array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} transitions, expected {n}")
    dtype = np.dtype(space.dtype)
    if np.issubdtype(dtype, np.integer):
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            raise TypeError(
                f"{name} has dtype {array.dtype}, the observation space {dtype} "
                "(integer images must be passed as integers, e.g. uint8, not normalised floats)"
            )
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError(
                f"{name} has values in [{array.min()}, {array.max()}], outside {dtype}'s range"
            )
    elif np.issubdtype(dtype, np.floating):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise TypeError(f"{name} has dtype {array.dtype}, expected a numeric array")
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or infinite values")
    return array, array.shape[0]


def _check_observations(
    name: str, value: Any, space: spaces.Space, n: int | None
) -> tuple[Observation, int]:
    """Validate an observation batch (an array, or a dict of arrays for Dict spaces)."""
    if isinstance(space, spaces.Dict):
        if not isinstance(value, Mapping):
            raise TypeError(
                f"{name} must be a dict of arrays for a Dict observation space, "
                f"got {type(value).__name__}"
            )
        expected, given = set(space.spaces), set(value)
        if expected != given:
            raise ValueError(
                f"{name} keys {sorted(given)} do not match the observation space keys "
                f"{sorted(expected)}"
            )
        out = {}
        for key, subspace in space.spaces.items():
            out[key], n = _check_observation_array(f"{name}[{key!r}]", value[key], subspace, n)
        assert n is not None
        return out, n
    if isinstance(value, Mapping):
        raise TypeError(f"{name} is a dict but the observation space is {space}")
    return _check_observation_array(name, value, space, n)


def _check_vector(name: str, value: Any, n: int, *, binary: bool = False) -> np.ndarray:
    """Validate a per-transition scalar field: shape (n,) or (n, 1), finite, 0/1 if binary."""
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {np.shape(value)}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(f"{name} has dtype {array.dtype}, expected a numeric or bool array")
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if binary and not np.all((array == 0.0) | (array == 1.0)):
        raise ValueError(f"{name} must hold only 0/1 (or bool) values")
    return array


class OfflineTransitions:
    """An append-only store of transitions (the D0 part of a mixing buffer).

    Transitions are stored flat, each with its own next observation, so that data from any source
    (another buffer's layout, recordings, several envs) fits. Observations keep their space's
    dtype (uint8 images stay uint8). With ``max_size`` the store is a ring that drops the oldest
    transitions; without it, it grows as needed.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        max_size: int | None = None,
    ):
        if max_size is not None and max_size < 1:
            raise ValueError(f"offline_buffer_size must be >= 1 or None, got {max_size}")
        self.observation_space = observation_space
        self.action_space = action_space
        self.action_dim = get_action_dim(action_space)
        self.max_size = max_size
        self.size = 0
        self.pos = 0
        self._capacity = 0
        self._data: dict[str, Any] = {}
        self._allocate(max_size if max_size is not None else 0)

    def _empty_observations(self, capacity: int) -> Observation:
        space = self.observation_space
        if isinstance(space, spaces.Dict):
            return {
                key: np.zeros((capacity, *get_obs_shape(sub)), dtype=sub.dtype)
                for key, sub in space.spaces.items()
            }
        return np.zeros((capacity, *get_obs_shape(space)), dtype=space.dtype)

    def _allocate(self, capacity: int) -> None:
        new = {
            "observations": self._empty_observations(capacity),
            "next_observations": self._empty_observations(capacity),
            "actions": np.zeros(
                (capacity, self.action_dim),
                dtype=ReplayBuffer._maybe_cast_dtype(self.action_space.dtype),
            ),
            "rewards": np.zeros(capacity, dtype=np.float32),
            "dones": np.zeros(capacity, dtype=np.float32),
            "timeouts": np.zeros(capacity, dtype=np.float32),
        }
        for name, old in self._data.items():
            if isinstance(old, dict):
                for key in old:
                    new[name][key][: self.size] = old[key][: self.size]
            else:
                new[name][: self.size] = old[: self.size]
        self._data = new
        self._capacity = capacity

    def add(self, fields: dict[str, Any]) -> None:
        """Append validated fields (see :meth:`MixingReplayBuffer.add_offline_transitions`)."""
        n = len(fields["rewards"])
        if n == 0:
            return
        if self.max_size is None:
            if self.size + n > self._capacity:
                self._allocate(max(self.size + n, 2 * self._capacity, 1024))
            index = np.arange(self.size, self.size + n)
        else:
            if n > self.max_size:
                logger.warning(
                    "adding %d offline transitions to an offline buffer of size %d: "
                    "only the last %d are kept",
                    n,
                    self.max_size,
                    self.max_size,
                )
                fields = _slice_fields(fields, slice(n - self.max_size, n))
                n = self.max_size
            index = (self.pos + np.arange(n)) % self.max_size
        for name in TRANSITION_FIELDS:
            value, store = fields[name], self._data[name]
            if isinstance(store, dict):
                for key in store:
                    store[key][index] = value[key]
            else:
                store[index] = value.reshape(store[index].shape)
        if self.max_size is None:
            self.size += n
        else:
            self.pos = int((self.pos + n) % self.max_size)
            self.size = min(self.size + n, self.max_size)

    def arrays(self) -> dict[str, Any]:
        """The stored transitions as arrays (views, oldest first when not wrapped)."""
        if self.max_size is not None and self.size == self.max_size and self.pos:
            order = np.concatenate([np.arange(self.pos, self.size), np.arange(self.pos)])
            return _slice_fields(self._data, order)
        return _slice_fields(self._data, slice(0, self.size))

    def sample_indices(self, batch_size: int) -> np.ndarray:
        return np.random.randint(0, self.size, size=batch_size)

    def get_samples(
        self,
        indices: np.ndarray,
        to_torch: Callable[[np.ndarray], th.Tensor],
        env: VecNormalize | None = None,
    ) -> Samples:
        data = self._data

        def observations(name: str) -> Any:
            store = data[name]
            if isinstance(store, dict):
                obs = {key: value[indices] for key, value in store.items()}
                obs = ReplayBuffer._normalize_obs(obs, env)
                return {key: to_torch(value) for key, value in obs.items()}
            return to_torch(ReplayBuffer._normalize_obs(store[indices], env))

        dones = data["dones"][indices] * (1.0 - data["timeouts"][indices])
        rewards = ReplayBuffer._normalize_reward(data["rewards"][indices].reshape(-1, 1), env)
        cls = (
            DictReplayBufferSamples
            if isinstance(data["observations"], dict)
            else (ReplayBufferSamples)
        )
        return cls(
            observations=observations("observations"),
            actions=to_torch(data["actions"][indices]),
            next_observations=observations("next_observations"),
            dones=to_torch(dones.reshape(-1, 1)),
            rewards=to_torch(rewards),
        )

    def __getstate__(self) -> dict[str, Any]:
        # Store only the filled part: a grown store may be twice as large as its content.
        state = self.__dict__.copy()
        if self.max_size is None:
            state["_data"] = _slice_fields(self._data, slice(0, self.size))
            state["_capacity"] = self.size
        return state


def _slice_fields(fields: dict[str, Any], index: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, dict):
            out[name] = {key: item[index] for key, item in value.items()}
        else:
            out[name] = value[index]
    return out


def _concat(first: Any, second: Any) -> Any:
    if isinstance(first, dict):
        return {key: th.cat([first[key], second[key]]) for key in first}
    return th.cat([first, second])


def buffer_transitions(buffer: ReplayBuffer) -> dict[str, Any]:
    """All valid transitions of an SB3 replay buffer as flat arrays, oldest first.

    Handles any ``n_envs``, ``optimize_memory_usage`` (next observations stored in the next row)
    and wrapped (full) buffers. For a :class:`MixingReplayBuffer` this is its online part.
    """
    from stable_baselines3.her.her_replay_buffer import HerReplayBuffer

    if isinstance(buffer, HerReplayBuffer):
        raise TypeError("HerReplayBuffer relabels goals on the fly; it cannot be used as D0")
    size, pos = buffer.buffer_size, buffer.pos
    optimize = getattr(buffer, "optimize_memory_usage", False)
    if buffer.full:
        rows = (pos + np.arange(size)) % size
        if optimize:
            rows = rows[1:]  # the transition at `pos` lost its next observation
    else:
        rows = np.arange(pos)
    n_envs = buffer.n_envs
    row_index = np.repeat(rows, n_envs)
    env_index = np.tile(np.arange(n_envs), len(rows))

    def take(array: np.ndarray, row: np.ndarray = row_index) -> np.ndarray:
        return array[row, env_index]

    def obs(next_: bool) -> Any:
        if optimize and next_:
            source, row = buffer.observations, (row_index + 1) % size
        else:
            source = buffer.next_observations if next_ else buffer.observations
            row = row_index
        if isinstance(source, dict):
            return {key: take(value, row) for key, value in source.items()}
        return take(source, row)

    timeouts = getattr(buffer, "timeouts", None)
    handle_timeouts = getattr(buffer, "handle_timeout_termination", True)
    return {
        "observations": obs(False),
        "next_observations": obs(True),
        "actions": take(buffer.actions),
        "rewards": take(buffer.rewards),
        "dones": take(buffer.dones),
        "timeouts": (
            take(timeouts)
            if timeouts is not None and handle_timeouts
            else np.zeros(len(row_index), dtype=np.float32)
        ),
    }


class MixingReplayBuffer(ReplayBuffer):
    """SB3 replay buffer with an offline part D0 mixed into every minibatch.

    ==================== ====================================================================
    Argument             Meaning
    ==================== ====================================================================
    buffer_size, …       As SB3's ``ReplayBuffer`` (these are the online part's settings;
                         ``optimize_memory_usage`` needs ``handle_timeout_termination=False``
                         and a Box observation space, as in SB3).
    online_fraction      α: a float in [0, 1], a callable ``n_gradient_steps -> α``, or
                         ``(start, end, n_steps)`` for a linear schedule. Default 0.5.
    offline_data         D0 to load at once: a saved buffer's path, a buffer, a dict of
                         transition arrays, or a list of these. Default: none (empty D0).
    offline_buffer_size  Cap on D0 (oldest dropped beyond it); default None: unbounded.
    ==================== ====================================================================

    For Dict observation spaces the constructor returns a :class:`DictMixingReplayBuffer`
    (the same class on SB3's ``DictReplayBuffer``), so ``replay_buffer_class=MixingReplayBuffer``
    works for every space.

    The schedule position ``update_step`` counts the minibatches drawn while the online part
    holds data (one per gradient step), so a schedule starts with the mixing, not with the
    agent's pretraining: neither a loaded prior's updates nor critic-only fitting on D0 before
    any online data (:meth:`~sim2online_envs.agents.SAC.train_critic`) move α. It is saved with
    the buffer.
    While the online part is empty every sample comes from D0 (offline pre-training); while D0 is
    empty every sample comes from the online part (with a one-time warning).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> MixingReplayBuffer:
        # Pickle and deepcopy call __new__ without arguments: keep the class they ask for.
        observation_space = args[1] if len(args) > 1 else kwargs.get("observation_space")
        target = cls
        if cls is MixingReplayBuffer and isinstance(observation_space, spaces.Dict):
            target = DictMixingReplayBuffer
        return super().__new__(target)

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        online_fraction: StepScheduleLike = 0.5,
        offline_data: OfflineSource | Iterable[OfflineSource] | None = None,
        offline_buffer_size: int | None = None,
    ):
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.online_fraction = online_fraction
        self.update_step = 0
        self.offline = OfflineTransitions(observation_space, action_space, offline_buffer_size)
        self._warned_empty_offline = False
        if offline_data is not None:
            sources = offline_data if isinstance(offline_data, (list, tuple)) else [offline_data]
            for source in sources:
                self.load_offline(source)

    # -- the online fraction -----------------------------------------------------------------

    @property
    def online_fraction(self) -> Callable[[int], float]:
        """The α schedule, a callable of the number of gradient steps."""
        return self._online_fraction

    @online_fraction.setter
    def online_fraction(self, value: StepScheduleLike) -> None:
        schedule = as_step_schedule(value, "online_fraction")
        start = float(schedule(0))
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"online_fraction must lie in [0, 1], got {start} at step 0")
        self._online_fraction = schedule

    def current_online_fraction(self) -> float:
        """α at the current schedule position (``update_step``)."""
        alpha = float(self._online_fraction(self.update_step))
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(
                f"online_fraction must lie in [0, 1], got {alpha} at step {self.update_step}"
            )
        return alpha

    @property
    def offline_size(self) -> int:
        """Number of transitions in D0."""
        return self.offline.size

    def online_transitions(self) -> int:
        """Number of transitions in the online part (rows times envs)."""
        return self.size() * self.n_envs

    # -- sampling ----------------------------------------------------------------------------

    def _online_count(self, alpha: float, batch_size: int) -> int:
        expected = alpha * batch_size
        count = math.floor(expected)
        remainder = expected - count
        if remainder > 0.0 and np.random.random() < remainder:
            count += 1
        return count

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> Samples:
        """A minibatch: ``n_online`` transitions from the online part first, then D0's.

        Advances the schedule position by one once the online part holds data.
        """
        alpha = self.current_online_fraction()
        online_empty = self.size() == 0 or (
            self.optimize_memory_usage and not self.full and self.pos < 1
        )
        if not online_empty:
            self.update_step += 1
        if online_empty:
            if self.offline.size == 0:
                raise RuntimeError("cannot sample: both the online part and D0 are empty")
            return self._sample_offline(batch_size, env)
        if self.offline.size == 0:
            if alpha < 1.0 and not self._warned_empty_offline:
                logger.warning(
                    "MixingReplayBuffer: D0 is empty, every sample comes from online data "
                    "(fill it with offline_data=..., load_offline() or add_offline_transitions())"
                )
                self._warned_empty_offline = True
            return super().sample(batch_size, env=env)
        n_online = self._online_count(alpha, batch_size)
        if n_online == batch_size:
            return super().sample(batch_size, env=env)
        if n_online == 0:
            return self._sample_offline(batch_size, env)
        online = super().sample(n_online, env=env)
        offline = self._sample_offline(batch_size - n_online, env)
        mixed = type(online)(
            observations=_concat(online.observations, offline.observations),
            actions=th.cat([online.actions, offline.actions]),
            next_observations=_concat(online.next_observations, offline.next_observations),
            dones=th.cat([online.dones, offline.dones]),
            rewards=th.cat([online.rewards, offline.rewards]),
        )
        # Per-sample discounts of an n-step online part (NStepMixingReplayBuffer).
        if getattr(online, "discounts", None) is not None:
            mixed = mixed._replace(discounts=th.cat([online.discounts, offline.discounts]))
        return mixed

    def _sample_offline(self, batch_size: int, env: VecNormalize | None) -> Samples:
        indices = self.offline.sample_indices(batch_size)
        return self.offline.get_samples(indices, self.to_torch, env)

    # -- filling D0 --------------------------------------------------------------------------

    def add_offline_transitions(
        self,
        observations: Observation,
        next_observations: Observation,
        actions: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
        timeouts: np.ndarray | None = None,
    ) -> int:
        """Append transitions to D0; every array has a leading transition axis.

        ``observations`` / ``next_observations``: arrays of the observation shape (a dict of
        arrays for Dict spaces), in the space's dtype family (uint8 images as integers).
        ``actions``: normalised to [-1, 1] as SB3 stores them (``policy.scale_action``),
        shape (n, action_dim). ``rewards``, ``dones``, ``timeouts``: shape (n,). ``dones`` marks
        episode ends; ``timeouts`` marks those that were truncations (bootstrapped in the
        target), default none. Returns the number of transitions added.

        Raises ValueError/TypeError naming the field on a shape, dtype or value mismatch; nothing
        is added then.
        """
        fields = self._checked_transitions(
            observations, next_observations, actions, rewards, dones, timeouts
        )
        self.offline.add(fields)
        return len(fields["rewards"])

    def _checked_transitions(
        self,
        observations: Observation,
        next_observations: Observation,
        actions: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
        timeouts: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """The validated fields of :meth:`add_offline_transitions`, without adding them."""
        obs, n = _check_observations("observations", observations, self.observation_space, None)
        next_obs, _ = _check_observations(
            "next_observations", next_observations, self.observation_space, n
        )
        action_array = np.asarray(actions)
        if action_array.ndim == 1 and self.action_dim == 1:
            action_array = action_array[:, None]
        if action_array.shape != (n, self.action_dim):
            raise ValueError(
                f"actions must have shape ({n}, {self.action_dim}), got {np.shape(actions)}"
            )
        if not np.issubdtype(action_array.dtype, np.number):
            raise TypeError(f"actions has dtype {action_array.dtype}, expected a numeric array")
        if np.issubdtype(action_array.dtype, np.floating):
            if not np.all(np.isfinite(action_array)):
                raise ValueError("actions contains NaN or infinite values")
            if isinstance(self.action_space, spaces.Box) and np.any(np.abs(action_array) > 1.0):
                raise ValueError(
                    "actions must be normalised to [-1, 1] (policy.scale_action), "
                    f"got values in [{action_array.min()}, {action_array.max()}]"
                )
        return {
            "observations": obs,
            "next_observations": next_obs,
            "actions": action_array,
            "rewards": _check_vector("rewards", rewards, n),
            "dones": _check_vector("dones", dones, n, binary=True),
            "timeouts": (
                np.zeros(n, dtype=np.float32)
                if timeouts is None
                else _check_vector("timeouts", timeouts, n, binary=True)
            ),
        }

    def add_offline_buffer(self, buffer: ReplayBuffer, include_offline: bool = False) -> int:
        """Append every transition of another SB3 buffer to D0 (for a mixing buffer: its D0 first
        with ``include_offline``, then its online part), oldest first. Returns the number added.

        All or nothing: every part is validated before any is added.
        """
        if not isinstance(buffer, ReplayBuffer):
            raise TypeError(f"expected an SB3 ReplayBuffer, got {type(buffer).__name__}")
        self._check_compatible(buffer)
        parts = []
        if include_offline and isinstance(buffer, MixingReplayBuffer):
            parts.append(buffer.offline.arrays())
        parts.append(buffer_transitions(buffer))
        checked = [self._checked_transitions(**part) for part in parts]
        for fields in checked:
            self.offline.add(fields)
        return sum(len(fields["rewards"]) for fields in checked)

    def load_offline(self, source: OfflineSource, include_offline: bool = True) -> int:
        """Fill D0 from a saved buffer (path), a buffer object or a dict of transition arrays.

        A saved :class:`MixingReplayBuffer` contributes its online part and (by default) its D0.
        """
        if isinstance(source, (str, pathlib.Path, io.BufferedIOBase)):
            loaded = load_from_pkl(source)
            if not isinstance(loaded, ReplayBuffer):
                raise TypeError(
                    f"{source} does not hold an SB3 replay buffer (got {type(loaded).__name__})"
                )
            source = loaded
        if isinstance(source, ReplayBuffer):
            return self.add_offline_buffer(source, include_offline=include_offline)
        if isinstance(source, Mapping):
            missing = {"observations", "next_observations", "actions", "rewards", "dones"} - set(
                source
            )
            if missing:
                raise ValueError(f"offline transition dict lacks fields {sorted(missing)}")
            return self.add_offline_transitions(**{k: source[k] for k in source})
        raise TypeError(
            "offline data must be a path, an SB3 ReplayBuffer or a dict of transition arrays, "
            f"got {type(source).__name__}"
        )

    def _check_compatible(self, buffer: ReplayBuffer) -> None:
        """Same observation layout and action dimension, else a ValueError naming the field."""
        if isinstance(self.observation_space, spaces.Dict) != isinstance(
            buffer.observation_space, spaces.Dict
        ):
            raise ValueError(
                f"observation space mismatch: this buffer has {self.observation_space}, "
                f"the offline buffer {buffer.observation_space}"
            )
        mine, theirs = (
            get_obs_shape(self.observation_space),
            get_obs_shape(buffer.observation_space),
        )
        if mine != theirs:
            raise ValueError(
                f"observation shape mismatch: this buffer has {mine}, the offline buffer {theirs}"
            )
        if buffer.action_dim != self.action_dim:
            raise ValueError(
                f"action dimension mismatch: this buffer has {self.action_dim}, "
                f"the offline buffer {buffer.action_dim}"
            )

    # -- pickling (save_replay_buffer) ---------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # A user's lambda schedule does not survive plain pickle; cloudpickle it.
        state = self.__dict__.copy()
        state["_online_fraction"] = cloudpickle.dumps(self._online_fraction)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["_online_fraction"] = cloudpickle.loads(state["_online_fraction"])
        self.__dict__.update(state)


class DictMixingReplayBuffer(MixingReplayBuffer, DictReplayBuffer):
    """:class:`MixingReplayBuffer` for Dict observation spaces (over SB3's DictReplayBuffer)."""


def retain_online_buffer(
    previous: ReplayBuffer | str | pathlib.Path | Any,
    target: ReplayBuffer | Any,
    include_offline: bool = False,
) -> int:
    """Carry a finished trial's online data into the next trial's D0 (data retention).

    ``previous``: the finished trial's model, replay buffer, or the path of its saved buffer.
    ``target``: the next trial's model or its :class:`MixingReplayBuffer`. With
    ``include_offline`` the previous D0 is carried too. Returns the number of transitions added.
    """
    if isinstance(previous, (str, pathlib.Path)):
        previous = load_from_pkl(previous)
    previous_buffer = getattr(previous, "replay_buffer", previous)
    target_buffer = getattr(target, "replay_buffer", target)
    if not isinstance(target_buffer, MixingReplayBuffer):
        raise TypeError(
            "the target must be a MixingReplayBuffer or a model using one "
            f"(replay_buffer_class=MixingReplayBuffer), got {type(target_buffer).__name__}"
        )
    if not isinstance(previous_buffer, ReplayBuffer):
        raise TypeError(
            f"the previous trial must be a model or a replay buffer, got {type(previous).__name__}"
        )
    return target_buffer.add_offline_buffer(previous_buffer, include_offline=include_offline)
