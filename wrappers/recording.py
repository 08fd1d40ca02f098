"""Episode recording to disk, and loading recordings into the agents' offline buffer.

:class:`RecordEpisodes` writes every finished episode to one ``.npz`` file, atomically (a
temporary file in the same folder, flushed and fsynced, then ``os.replace``), so a crash or a
power cut never leaves a half-written episode under a real name. Files hold plain arrays only
and are read with ``allow_pickle=False``:

======================== ============== ===================================================
key                      shape          content
======================== ============== ===================================================
``observations``         (T+1, ...)     reset observation, then one per step; a Dict
                                        observation is stored as ``observations/<key>``
``actions``              (T, A)         the action the env executed (after the safety
                                        wrapper's sanitation and clipping, when present)
``rewards``              (T,)           float64
``terminated``           (T,)           bool
``truncated``            (T,)           bool
``info/<field>``         (T, ...)       chosen info fields; nested dicts flattened with
                                        ``/`` (``info/reward_terms/progress``); a value
                                        missing at a step is NaN (numbers) or "" (text)
``provenance``           ()             JSON text: robot, backend kind (sim/real), env id,
                                        policy version, config hash, package version,
                                        start and end time (UTC), seed, label, ...
======================== ============== ===================================================

Episodes the operator discarded (``info["discard_episode"]``, set by the reset prompt) are not
written unless ``keep_discarded``; an episode cut short by ``close()`` is written with
``"complete": false`` in its provenance.

:func:`load_episode` reads one file back (validating it), :func:`load_episodes` a folder, and
:func:`fill_offline_buffer` hands the transitions to
``MixingReplayBuffer.add_offline_transitions`` (``sim2online_envs.agents``). Recordings keep
the env's own image layout (the Panda's ``pixels`` are (64, 64, 1), channel-last); the buffer of
an SB3 model holds them channel-first, as SB3's ``VecTransposeImage`` hands them to the model,
so :func:`fill_offline_buffer` transposes image entries exactly as that wrapper does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

logger = logging.getLogger(__name__)

#: Version of the file layout; :func:`load_episode` refuses other versions.
FORMAT_VERSION = 1
#: Info fields recorded by default (missing ones are skipped for the whole episode).
DEFAULT_INFO_FIELDS = ("is_success", "reward_terms", "truncation_reason")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__name__, **_jsonable(dataclasses.asdict(value))}
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in sorted(value.items(), key=str)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def config_hash(config: Any) -> str:
    """A short, stable hash (16 hex digits of SHA-256) of a config's canonical JSON."""
    text = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def env_config(env: gym.Env) -> dict[str, Any]:
    """What defines an env for provenance: its id and kwargs, and the task's config."""
    spec = getattr(env, "spec", None)
    task = getattr(env.unwrapped, "task", None)
    return {
        "env_id": getattr(spec, "id", None),
        "kwargs": dict(getattr(spec, "kwargs", {}) or {}),
        "task": type(task).__name__ if task is not None else None,
        "task_config": getattr(task, "config", None),
    }


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}/{key}", item, out)
    else:
        out[prefix] = value


def _stack_field(name: str, values: list[Any]) -> np.ndarray | None:
    """Stack one info field over an episode; None (with a warning) when it is not array-like."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, str) for v in present):
        return np.array(["" if v is None else v for v in values], dtype=str)
    if any(v is None for v in values):
        template = np.asarray(present[0], dtype=np.float64)
        values = [np.full_like(template, np.nan) if v is None else v for v in values]
    try:
        array = np.asarray(values)
    except ValueError:
        array = np.empty(0, dtype=object)
    if array.dtype.kind not in "biufU":
        logger.warning(
            "info field %r is not a fixed-shape number or text array: not recorded", name
        )
        return None
    return array


@dataclass(frozen=True)
class RecordingConfig:
    """Settings of :class:`RecordEpisodes`.

    Attributes:
        directory: Folder for the episode files (created if missing).
        info_fields: Info keys to record (nested dicts are recorded whole).
        policy_version: Written to provenance; update it with
            :meth:`RecordEpisodes.set_policy_version` as the policy changes.
        config: What the config hash covers; default: the env's id, kwargs and task config.
        keep_discarded: Also write episodes the operator discarded (flagged in provenance).
        compress: ``np.savez_compressed`` (images compress well) instead of ``np.savez``.
        prefix: File name prefix.
    """

    directory: str | os.PathLike[str]
    info_fields: Sequence[str] = DEFAULT_INFO_FIELDS
    policy_version: str | None = None
    config: Any = None
    keep_discarded: bool = False
    compress: bool = True
    prefix: str = "episode"


class RecordEpisodes(gym.Wrapper):
    """Writes each finished episode atomically to ``config.directory`` (see module doc).

    Example::

        env = RecordEpisodes(gym.make("SimRaceCar-v0"), RecordingConfig("runs/car"))
    """

    def __init__(self, env: gym.Env, config: RecordingConfig):
        super().__init__(env)
        if not isinstance(config, RecordingConfig):
            raise TypeError(f"config must be a RecordingConfig, got {type(config).__name__}")
        self.config = config
        self.directory = Path(config.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.policy_version = config.policy_version
        base = env.unwrapped
        self._static = {
            "robot": getattr(getattr(base, "task", None), "robot", None),
            "backend": getattr(getattr(base, "backend", None), "kind", None),
            "env_id": getattr(getattr(env, "spec", None), "id", None),
            "config_hash": config_hash(
                config.config if config.config is not None else env_config(env)
            ),
            "package_version": _package_version(),
            "format_version": FORMAT_VERSION,
        }
        self.written: list[Path] = []
        self._episodes = 0
        self._clear()

    def set_policy_version(self, version: str | None) -> None:
        """The policy version written with the following episodes."""
        self.policy_version = version

    def _clear(self) -> None:
        self._observations: list[Any] = []
        self._actions: list[np.ndarray] = []
        self._rewards: list[float] = []
        self._terminated: list[bool] = []
        self._truncated: list[bool] = []
        self._infos: list[dict[str, Any]] = []
        self._seed: int | None = None
        self._started: str | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if self._actions:
            self._write(complete=False, final_info={})
        self._clear()
        obs, info = self.env.reset(seed=seed, options=options)
        self._observations.append(obs)
        self._seed = seed
        self._started = _now()
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if not self._observations:
            raise RuntimeError("call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        applied = (
            info.get("safety", {}).get("applied_action")
            if isinstance(info.get("safety"), Mapping)
            else None
        )
        self._actions.append(np.asarray(applied if applied is not None else action))
        self._observations.append(obs)
        self._rewards.append(float(reward))
        self._terminated.append(bool(terminated))
        self._truncated.append(bool(truncated))
        fields: dict[str, Any] = {}
        for key in self.config.info_fields:
            if key in info:
                _flatten(f"info/{key}", info[key], fields)
        self._infos.append(fields)
        if terminated or truncated:
            info["recording"] = self._write(complete=True, final_info=info)
            self._clear()
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        try:
            if self._actions:
                self._write(complete=False, final_info={})
                self._clear()
        finally:  # a failed write must not keep the robot's env open
            super().close()

    # -- writing ---------------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        first = self._observations[0]
        if isinstance(first, Mapping):
            for key in first:
                arrays[f"observations/{key}"] = np.stack(
                    [np.asarray(o[key]) for o in self._observations]
                )
        else:
            arrays["observations"] = np.stack([np.asarray(o) for o in self._observations])
        arrays["actions"] = np.stack(self._actions)
        arrays["rewards"] = np.asarray(self._rewards, dtype=np.float64)
        arrays["terminated"] = np.asarray(self._terminated, dtype=bool)
        arrays["truncated"] = np.asarray(self._truncated, dtype=bool)
        names = sorted({name for step in self._infos for name in step})
        for name in names:
            stacked = _stack_field(name, [step.get(name) for step in self._infos])
            if stacked is not None:
                arrays[name] = stacked
        return arrays

    def _write(self, complete: bool, final_info: Mapping[str, Any]) -> str | None:
        operator = (
            final_info.get("operator") if isinstance(final_info.get("operator"), Mapping) else {}
        )
        discarded = bool(final_info.get("discard_episode", False))
        index = self._episodes
        self._episodes += 1
        if discarded and not self.config.keep_discarded:
            logger.info("episode %d discarded by the operator: not recorded", index)
            return None
        provenance = {
            **self._static,
            "policy_version": self.policy_version,
            "episode_index": index,
            "seed": self._seed,
            "steps": len(self._actions),
            "complete": complete,
            "discarded": discarded,
            "label": operator.get("label"),
            "started": self._started,
            "finished": _now(),
        }
        arrays = self._arrays()
        arrays["provenance"] = np.array(json.dumps(_jsonable(provenance), sort_keys=True))
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.directory / f"{self.config.prefix}-{stamp}-{index:06d}.npz"
        write_npz_atomic(path, arrays, compress=self.config.compress)
        self.written.append(path)
        logger.info("episode %d (%d steps) recorded to %s", index, len(self._actions), path)
        return str(path)


def write_npz_atomic(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], compress: bool = True
) -> None:
    """Write ``arrays`` to ``path`` so that the file appears whole or not at all."""
    path = Path(path)
    for key, value in arrays.items():
        if np.asarray(value).dtype.kind == "O":
            raise TypeError(f"array {key!r} has dtype object; only plain arrays are written")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            (np.savez_compressed if compress else np.savez)(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _package_version() -> str:
    from sim2online_envs import __version__

    return __version__


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass
class Episode:
    """One recorded episode (arrays as written; see the module doc)."""

    observations: np.ndarray | dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.actions)

    def transitions(self) -> dict[str, Any]:
        """The episode as transitions, in the offline buffer's argument names.

        ``dones`` is true at the last step of a finished episode (terminated or truncated, as
        SB3 stores it); ``timeouts`` marks truncations without termination, so the learner
        still bootstraps there (SB3's ``handle_timeout_termination``).
        """

        def cut(values: np.ndarray, start: int, stop: int | None) -> np.ndarray:
            return values[start:stop]

        if isinstance(self.observations, dict):
            observations = {k: cut(v, 0, -1) for k, v in self.observations.items()}
            next_observations = {k: cut(v, 1, None) for k, v in self.observations.items()}
        else:
            observations = cut(self.observations, 0, -1)
            next_observations = cut(self.observations, 1, None)
        dones = self.terminated | self.truncated
        return {
            "observations": observations,
            "next_observations": next_observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "dones": dones,
            "timeouts": self.truncated & ~self.terminated,
        }


class RecordingError(ValueError):
    """A recording file that is not a valid episode (names the file and the problem)."""


def load_episode(path: str | os.PathLike[str]) -> Episode:
    """Read and validate one episode file (no pickle)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise RecordingError(f"{path}: not a readable episode file ({error})") from error
    missing = [
        k
        for k in ("actions", "rewards", "terminated", "truncated", "provenance")
        if k not in arrays
    ]
    if missing:
        raise RecordingError(f"{path}: missing arrays {missing}")
    try:
        provenance = json.loads(str(arrays.pop("provenance")))
    except json.JSONDecodeError as error:
        raise RecordingError(f"{path}: provenance is not JSON ({error})") from error
    version = provenance.get("format_version")
    if version != FORMAT_VERSION:
        raise RecordingError(
            f"{path}: format_version {version}, this loader reads {FORMAT_VERSION}"
        )
    obs_keys = [k for k in arrays if k.startswith("observations/")]
    if "observations" in arrays:
        observations: Any = arrays.pop("observations")
        lengths = {len(observations)}
    elif obs_keys:
        observations = {k.split("/", 1)[1]: arrays.pop(k) for k in obs_keys}
        lengths = {len(v) for v in observations.values()}
    else:
        raise RecordingError(f"{path}: no observations")
    steps = len(arrays["actions"])
    if lengths != {steps + 1}:
        raise RecordingError(
            f"{path}: {sorted(lengths)} observations for {steps} actions (need T+1)"
        )
    for key in ("rewards", "terminated", "truncated"):
        if arrays[key].shape != (steps,):
            raise RecordingError(
                f"{path}: {key} has shape {arrays[key].shape}, expected ({steps},)"
            )
    infos = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("info/")}
    return Episode(
        observations=observations,
        actions=arrays["actions"],
        rewards=arrays["rewards"],
        terminated=arrays["terminated"].astype(bool),
        truncated=arrays["truncated"].astype(bool),
        infos=infos,
        provenance=provenance,
        path=path,
    )


def episode_paths(source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Episode files of a folder (sorted, i.e. in recording order) or of a list of paths."""
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if root.is_dir():
            return sorted(p for p in root.glob("*.npz") if not p.name.startswith("."))
        return [root]
    return [Path(p) for p in source]


def load_episodes(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    robot: str | None = None,
    include_discarded: bool = False,
    include_incomplete: bool = True,
) -> list[Episode]:
    """Load episodes from a folder or paths; ``robot`` refuses recordings of another robot."""
    episodes = []
    for path in episode_paths(source):
        episode = load_episode(path)
        if robot is not None and episode.provenance.get("robot") != robot:
            raise RecordingError(
                f"{path}: recorded on robot {episode.provenance.get('robot')!r}, expected {robot!r}"
            )
        if episode.provenance.get("discarded") and not include_discarded:
            continue
        if not episode.provenance.get("complete", True) and not include_incomplete:
            continue
        episodes.append(episode)
    return episodes


def fill_offline_buffer(
    buffer: Any,
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Iterable[Episode],
    robot: str | None = None,
) -> int:
    """Add recorded episodes to ``buffer.add_offline_transitions``; return the transition count.

    ``buffer`` is a ``sim2online_envs.agents`` ``MixingReplayBuffer`` (anything with the same
    ``add_offline_transitions(observations, next_observations, actions, rewards, dones,
    timeouts)`` method). Channel-last images recorded on the env go into a buffer built for an
    SB3 model on that env (channel-first, ``VecTransposeImage``) transposed: see
    :func:`match_image_layout`.

    Raises:
        RecordingError: an observation entry fits neither the buffer's shape nor, as a
            channel-last image, its channel-first transpose (names the file, key and shapes).
    """
    adder = getattr(buffer, "add_offline_transitions", None)
    if not callable(adder):
        raise TypeError(
            f"{type(buffer).__name__} has no add_offline_transitions(); use the agents' "
            "MixingReplayBuffer"
        )
    if not isinstance(source, (str, os.PathLike)):
        source = list(source)
    if not isinstance(source, (str, os.PathLike)) and source and isinstance(source[0], Episode):
        episodes = list(source)
    else:
        episodes = load_episodes(source, robot=robot)
    space = getattr(buffer, "action_space", None)
    observation_space = getattr(buffer, "observation_space", None)
    total = 0
    for episode in episodes:
        if len(episode) == 0:
            continue
        if observation_space is not None:
            where = str(episode.path) if episode.path is not None else "episode"
            episode = dataclasses.replace(
                episode,
                observations=match_image_layout(episode.observations, observation_space, where),
            )
        transitions = episode.transitions()
        transitions["actions"] = normalize_actions(transitions["actions"], space)
        adder(**transitions)
        total += len(episode)
    return total


def match_image_layout(
    observations: np.ndarray | Mapping[str, np.ndarray],
    space: gym.Space,
    where: str = "recording",
) -> np.ndarray | dict[str, np.ndarray]:
    """Observations (leading time axis) in the layout of ``space``, a buffer's observation space.

    SB3 wraps an env with channel-last image observations in ``VecTransposeImage``, so a model's
    buffer stores them channel-first, while a recording keeps the env's layout. An entry (the
    array, or each key of a Dict) whose per-step shape differs from its Box space is transposed
    with ``VecTransposeImage.transpose_image`` when ``space`` is exactly
    ``VecTransposeImage.transpose_space`` of the recorded layout, i.e. the recorded frames form a
    channel-last image space by SB3's ``is_image_space`` (uint8, 3-D; uint8 data always lies in
    SB3's [0, 255] image bounds). Entries that already match, non-Box spaces and keys the space
    lacks are passed on unchanged (the buffer checks those).

    Raises:
        RecordingError: a Box entry whose shape is neither the space's nor the recorded image's
            channel-first transpose (names ``where``, the key and both shapes).
    """
    if isinstance(observations, Mapping):
        if not isinstance(space, gym.spaces.Dict):
            return dict(observations)
        return {
            key: (
                _match_entry(value, space.spaces[key], f"{where}: observations {key!r}")
                if key in space.spaces
                else value
            )
            for key, value in observations.items()
        }
    if isinstance(space, gym.spaces.Dict):
        return observations
    return _match_entry(observations, space, f"{where}: observations")


def _match_entry(array: np.ndarray, space: gym.Space, name: str) -> np.ndarray:
    """One observation array (leading time axis) in ``space``'s layout, else a RecordingError."""
    array = np.asarray(array)
    if not isinstance(space, gym.spaces.Box) or array.shape[1:] == space.shape:
        return array
    from stable_baselines3.common.preprocessing import (
        is_image_space,
        is_image_space_channels_first,
    )
    from stable_baselines3.common.vec_env import VecTransposeImage

    recorded = tuple(array.shape[1:])
    # uint8 first: SB3's image spaces are uint8 only, and a narrower dtype (int8, bool) cannot
    # even hold the [0, 255] bounds of the Box below.
    if array.ndim == 4 and array.dtype == np.uint8 and is_image_space(space):
        # The space SB3 would have seen on the env: the recorded frames as an image Box.
        source = gym.spaces.Box(0, 255, recorded, dtype=array.dtype)
        if (
            is_image_space(source)
            and not is_image_space_channels_first(source)
            and VecTransposeImage.transpose_space(source) == space
        ):
            return VecTransposeImage.transpose_image(array)
    raise RecordingError(
        f"{name} has shape {recorded} ({array.dtype}) per step, the buffer's observation space "
        f"{space.shape} ({space.dtype}); it is neither that layout nor the channel-first "
        "transpose of a channel-last uint8 image (was the buffer built for another env?)"
    )


def normalize_actions(actions: np.ndarray, space: gym.Space | None) -> np.ndarray:
    """Actions in the env's units to [-1, 1], as SB3 stores them (``policy.scale_action``).

    The identity for the package's robots (their action spaces are [-1, 1] already).
    """
    if not isinstance(space, gym.spaces.Box):
        return actions
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return actions
    if np.all(low == -1.0) and np.all(high == 1.0):
        return actions
    scaled = 2.0 * (np.asarray(actions, dtype=np.float64) - low) / (high - low) - 1.0
    return scaled.astype(actions.dtype if actions.dtype.kind == "f" else np.float32)
