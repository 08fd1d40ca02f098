"""Whole-state checkpoints: atomic files, RNG states, and a model + buffer checkpoint directory.

``SAC.save`` / ``TD3.save`` (this package's) already store the full learner state through SB3's
zip format (weights, target networks, every optimiser, the temperature, schedules, counters) plus
the RNG states, and write atomically. :func:`save_checkpoint` adds the replay buffer (online part
and D0) beside the model so that the pair is replaced as one:

``directory/``
    ``checkpoint.json`` — the manifest, replaced last and atomically; it names the current files
    and their SHA-256. ``model-<generation>.zip``, ``replay_buffer-<generation>.pkl``.

A crash anywhere in :func:`save_checkpoint` leaves the manifest pointing at the previous, intact
generation; :func:`load_checkpoint` verifies sizes and checksums before unpickling anything, so a
truncated or foreign file gives a clear error instead of a half-restored learner.

:func:`load_replay_buffer_as_offline` reuses a checkpoint's replay buffer as the offline data D0
of a new run (e.g. a real-robot run's experience for the next one), with the same verification
and a check that the spaces match; a raw buffer path passed as ``offline_data`` skips both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pathlib
import random
import tempfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.save_util import load_from_pkl

from sim2online_envs.agents.buffers import MixingReplayBuffer

logger = logging.getLogger(__name__)

MANIFEST = "checkpoint.json"
FORMAT_VERSION = 1


# -- atomic files --------------------------------------------------------------------------------


def with_suffix_if_missing(path: str | pathlib.Path, suffix: str) -> pathlib.Path:
    """SB3's naming rule: ``"model"`` is saved as ``"model.zip"``, ``"a.b"`` stays ``"a.b"``."""
    path = pathlib.Path(path)
    return path if path.suffix else path.with_name(f"{path.name}.{suffix}")


def _fsync_directory(directory: pathlib.Path) -> None:
    # Makes the rename itself durable; not every platform allows opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | pathlib.Path, write: Callable[[IO[bytes]], None]) -> pathlib.Path:
    """Write a file through ``write(file)`` so that ``path`` is either the old or the new file.

    The data goes to a temporary file in the same directory, is flushed and fsynced, then
    ``os.replace``-d over ``path`` (atomic on POSIX and Windows); on any error the temporary file
    is removed and ``path`` is untouched.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = pathlib.Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(path.parent)
    return path


def sha256_file(path: pathlib.Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- RNG states ----------------------------------------------------------------------------------


def capture_rng_state(action_space: Any = None) -> dict[str, Any]:
    """The global torch / numpy / python RNG states and the action space's generator state."""
    state: dict[str, Any] = {
        "torch": th.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if th.cuda.is_available() and th.cuda.is_initialized():
        state["torch_cuda"] = th.cuda.get_rng_state_all()
    np_random = getattr(action_space, "_np_random", None)
    if np_random is not None:
        state["action_space"] = np_random.bit_generator.state
    return state


def restore_rng_state(state: dict[str, Any], action_space: Any = None) -> None:
    """Inverse of :func:`capture_rng_state` (missing entries are left as they are)."""
    if "torch" in state:
        th.set_rng_state(th.as_tensor(state["torch"], dtype=th.uint8).cpu())
    if "torch_cuda" in state and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["torch_cuda"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "python" in state:
        random.setstate(state["python"])
    if "action_space" in state and action_space is not None:
        action_space.np_random.bit_generator.state = state["action_space"]


# -- checkpoint directories ----------------------------------------------------------------------


def read_manifest(directory: str | pathlib.Path) -> dict[str, Any]:
    """The manifest of a checkpoint directory, or a clear error if there is none or it is bad."""
    path = pathlib.Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {directory}: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"checkpoint manifest {path} is corrupt: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint manifest {path} has format {manifest.get('format')!r}, "
            f"expected {FORMAT_VERSION}"
            if isinstance(manifest, dict)
            else f"checkpoint manifest {path} is not a JSON object"
        )
    return manifest


def _verify(directory: pathlib.Path, entry: dict[str, Any], role: str) -> pathlib.Path:
    path = directory / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {role} file {path} is missing")
    size = path.stat().st_size
    if size != entry["size"]:
        raise ValueError(
            f"checkpoint {role} file {path} is truncated or altered: "
            f"{size} bytes, the manifest says {entry['size']}"
        )
    if sha256_file(path) != entry["sha256"]:
        raise ValueError(f"checkpoint {role} file {path} is corrupt: its SHA-256 does not match")
    return path


def _verified_replay_buffer(directory: pathlib.Path, manifest: dict[str, Any]) -> pathlib.Path:
    """The replay buffer file of the manifest's (current) generation, verified before use."""
    if "replay_buffer" not in manifest:
        raise ValueError(
            f"checkpoint in {directory} (generation {manifest.get('generation')}) has no replay "
            "buffer: it was saved with include_replay_buffer=False or by a model without one"
        )
    return _verify(directory, manifest["replay_buffer"], "replay buffer")


def save_checkpoint(
    model: Any,
    directory: str | pathlib.Path,
    include_replay_buffer: bool = True,
    keep: int = 1,
) -> pathlib.Path:
    """Save the model (whole learner state) and its replay buffer as one atomic generation.

    ``keep``: how many generations to keep on disk (older files are deleted after the manifest
    points at the new one). Returns the manifest's path. Call it between ``learn`` calls or from a
    callback at an episode end; with ``async_updates`` the saved state is that of the last episode
    boundary (see the agents' docs).
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    previous = None
    manifest_lost = False
    try:
        previous = read_manifest(directory)
    except FileNotFoundError:
        pass
    except ValueError as error:
        # Never let an unreadable manifest cost the checkpoints that are still on disk.
        manifest_lost = True
        logger.warning("%s; starting a new manifest, older files are kept", error)
    on_disk = _generations_on_disk(directory)
    generation = 1 + max([previous["generation"] if previous else -1, *on_disk])
    files: dict[str, dict[str, Any]] = {}

    model_path = directory / f"model-{generation:06d}.zip"
    model.save(model_path)
    files["model"] = {"file": model_path.name}
    if include_replay_buffer and getattr(model, "replay_buffer", None) is not None:
        buffer_path = directory / f"replay_buffer-{generation:06d}.pkl"
        model.save_replay_buffer(buffer_path)
        files["replay_buffer"] = {"file": buffer_path.name}
    for entry in files.values():
        path = directory / entry["file"]
        entry["size"] = path.stat().st_size
        entry["sha256"] = sha256_file(path)

    history = [*previous.get("history", []), previous["generation"]] if previous else []
    manifest = {
        "format": FORMAT_VERSION,
        "generation": generation,
        "algorithm": type(model).__name__,
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(getattr(model, "_n_updates", 0)),
        # Earlier generations still on disk (the newest keep - 1 of them).
        "history": history[-(keep - 1) :] if keep > 1 else [],
        **files,
    }
    text = json.dumps(manifest, indent=2).encode()
    manifest_path = atomic_write(directory / MANIFEST, lambda file: file.write(text))
    if not manifest_lost:
        _remove_old_generations(directory, {generation, *manifest["history"]})
    logger.info("checkpoint generation %d saved in %s", generation, directory)
    return manifest_path


def _generation_of(path: pathlib.Path) -> int | None:
    """The generation of a ``model-N.zip`` / ``replay_buffer-N.pkl`` file, else None."""
    stem = path.name.split(".")[0]
    prefix, _, number = stem.rpartition("-")
    if prefix in ("model", "replay_buffer") and number.isdigit():
        return int(number)
    return None


def _generations_on_disk(directory: pathlib.Path) -> list[int]:
    return [g for g in map(_generation_of, directory.iterdir()) if g is not None]


def _remove_old_generations(directory: pathlib.Path, keep: set[int]) -> None:
    for path in directory.iterdir():
        generation = _generation_of(path)
        if generation is not None and generation not in keep:
            with contextlib.suppress(OSError):
                path.unlink()


def load_checkpoint(
    cls: type,
    directory: str | pathlib.Path,
    env: Any = None,
    device: th.device | str = "auto",
    load_replay_buffer: bool = True,
    **kwargs: Any,
) -> Any:
    """Load a :func:`save_checkpoint` directory into a new ``cls`` model (``SAC`` or ``TD3``).

    Verifies the files against the manifest first; checks the model's spaces against ``env``
    (SB3) and the buffer's spaces against the model. ``kwargs`` go to ``cls.load``.
    """
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    saved_by = manifest.get("algorithm")
    if saved_by is not None and saved_by != cls.__name__:
        raise ValueError(
            f"checkpoint in {directory} was saved by {saved_by}, not {cls.__name__}: "
            f"load it with {saved_by}"
        )
    model_path = _verify(directory, manifest["model"], "model")
    buffer_path = None
    if load_replay_buffer and "replay_buffer" in manifest:
        buffer_path = _verified_replay_buffer(directory, manifest)
    model = cls.load(model_path, env=env, device=device, **kwargs)
    if buffer_path is not None:
        model.load_replay_buffer(buffer_path)
    return model


def _checkpoint_location(path: str | pathlib.Path) -> tuple[pathlib.Path, dict[str, Any]]:
    """The directory and manifest of a checkpoint given as its directory, its manifest file or
    one of its current generation's files."""
    path = pathlib.Path(path)
    if path.is_dir():
        return path, read_manifest(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: neither a directory nor a file")
    directory = path.parent
    if not (directory / MANIFEST).is_file():
        raise ValueError(
            f"{path} is not in a checkpoint directory (no {MANIFEST} beside it), so nothing "
            "records its checksum: pass a save_checkpoint directory (an unverified buffer file "
            "can still be read with model.replay_buffer.load_offline(path))"
        )
    manifest = read_manifest(directory)
    current = {entry["file"] for entry in manifest.values() if isinstance(entry, dict)}
    if path.name != MANIFEST and path.name not in current:
        raise ValueError(
            f"{path} is not a file of the current generation ({manifest['generation']}) of the "
            f"checkpoint in {directory}; the manifest records the checksums of that generation "
            "only: pass the directory"
        )
    return directory, manifest


def _check_same_spaces(
    buffer: Any, observation_space: spaces.Space, action_space: spaces.Space
) -> None:
    """ValueError naming the field where a saved buffer's spaces differ from the model's.

    Shapes and dtypes first (the common mistake), then bounds: D0 actions are stored normalised
    to [-1, 1], so other action bounds would silently mean other actions.
    """
    from sim2online_envs.agents.common import check_buffer_spaces  # common imports this module

    check_buffer_spaces(buffer, observation_space, action_space)
    if buffer.observation_space != observation_space:
        raise ValueError(
            f"observation space: buffer {buffer.observation_space}, model {observation_space}"
        )
    if buffer.action_space != action_space:
        raise ValueError(f"action space: buffer {buffer.action_space}, model {action_space}")


def load_replay_buffer_as_offline(
    model: Any,
    checkpoint: str | pathlib.Path,
    include_offline: bool = False,
) -> int:
    """Add the replay buffer of a :func:`save_checkpoint` checkpoint to ``model``'s D0.

    For starting a new run whose offline data is an earlier run's experience (e.g. the real
    robot's), with the checks that a raw buffer path skips: the buffer file is verified against
    the manifest's size and SHA-256 before it is unpickled (the manifest's current generation,
    as in :func:`load_checkpoint`), and its observation and action spaces must equal the
    model's (a ValueError names the field that differs). Its valid transitions (the filled part
    of the online buffer, oldest first, whether it wrapped around or used
    ``optimize_memory_usage``) are appended to D0; with ``include_offline`` the saved buffer's
    own D0 comes first. On any error nothing is added.

    ``model``: a model using a :class:`~sim2online_envs.agents.MixingReplayBuffer`, or the
    buffer itself; call it between ``learn`` calls. ``checkpoint``: the checkpoint directory,
    its ``checkpoint.json`` (what :func:`save_checkpoint` returns) or one of its current files.
    Returns the number of transitions added.
    """
    target = getattr(model, "replay_buffer", model)
    if not isinstance(target, MixingReplayBuffer):
        raise TypeError(
            "offline data needs a MixingReplayBuffer (replay_buffer_class=MixingReplayBuffer), "
            f"the target has {type(target).__name__}"
        )
    directory, manifest = _checkpoint_location(checkpoint)
    buffer_path = _verified_replay_buffer(directory, manifest)
    saved = load_from_pkl(buffer_path)
    if not isinstance(saved, ReplayBuffer):
        raise TypeError(f"{buffer_path} does not hold an SB3 replay buffer: {type(saved).__name__}")
    try:
        _check_same_spaces(saved, model.observation_space, model.action_space)
    except ValueError as error:
        raise ValueError(
            f"replay buffer of the checkpoint in {directory} (generation "
            f"{manifest['generation']}) does not fit this model: {error}"
        ) from error
    added = target.add_offline_buffer(saved, include_offline=include_offline)
    logger.info(
        "D0 += %d transitions from the replay buffer of checkpoint generation %d in %s",
        added,
        manifest["generation"],
        directory,
    )
    return added


class CheckpointCallback(BaseCallback):
    """:func:`save_checkpoint` at rollout boundaries, after the rollout's gradient steps.

    SB3's own ``CheckpointCallback`` saves inside a rollout (mid-episode); this one saves when the
    next rollout starts, i.e. after the previous episode's updates and before any action of the
    next one, so that resuming from it continues exactly where the run was (same RNG stream,
    same schedules if resumed with ``learn(total - model.num_timesteps,
    reset_num_timesteps=False)``).

    ``every_n_rollouts``: save every n-th boundary (episodes with ``train_freq=(1, "episode")``).
    When ``learn`` returns, the state it ends with is saved too (if a rollout came after the last
    save), so the last episode's data and updates are never lost with the process.
    With ``async_updates`` the saved state is the one published at the last boundary at which the
    background learner was idle; gradient steps still running, and transitions not yet handed
    to the buffer, are not in it.
    """

    def __init__(
        self,
        directory: str | pathlib.Path,
        every_n_rollouts: int = 1,
        keep: int = 1,
        include_replay_buffer: bool = True,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if every_n_rollouts < 1:
            raise ValueError(f"every_n_rollouts must be >= 1, got {every_n_rollouts}")
        self.directory = pathlib.Path(directory)
        self.every_n_rollouts = every_n_rollouts
        self.keep = keep
        self.include_replay_buffer = include_replay_buffer
        self._rollouts = 0
        self._unsaved = False

    def _save(self) -> None:
        save_checkpoint(self.model, self.directory, self.include_replay_buffer, self.keep)
        self._unsaved = False

    def _on_rollout_start(self) -> None:
        # The first rollout start of a learn() call has nothing new to save.
        if self._unsaved and self._rollouts % self.every_n_rollouts == 0:
            self._save()
        self._rollouts += 1
        self._unsaved = True

    def _on_training_end(self) -> None:
        # learn() has run the last rollout's gradient steps (and, with async_updates, waited
        # for the background learner): the run's final state.
        if self._unsaved:
            self._save()

    def _on_step(self) -> bool:
        return True


__all__ = [
    "CheckpointCallback",
    "atomic_write",
    "capture_rng_state",
    "load_checkpoint",
    "load_replay_buffer_as_offline",
    "read_manifest",
    "restore_rng_state",
    "save_checkpoint",
    "with_suffix_if_missing",
]
