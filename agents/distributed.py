"""Robot and learner in separate processes or machines, on Ray.

The **actor** (robot PC) runs the env and policy inference at the control rate: SB3's own
``learn`` loop with ``async_updates="process"`` (or :func:`attach_learner`). Each finished
episode is written to an on-disk spool and handed to a link thread, which sends it to the
learner; new weights are taken at episode boundaries only. The control thread never calls the
engine: a slow or lost learner cannot delay a step.

The **learner** (a Ray actor process: same machine, or a GPU server) holds both buffers, runs
the recipe's K gradient steps per received episode, publishes the policy's weights with a
version number and checkpoints its whole state with :func:`save_checkpoint`. Which episodes a
checkpoint holds is stored inside the checkpoint itself (the model's ``_distributed_ledger``),
so a restarted learner knows them; an actor deletes a spooled episode only once the learner
reports it *committed* (in a checkpoint). Duplicates are dropped by ``(actor_id, seq)``.

Wire data is plain: dicts of NumPy arrays (episodes, weights, counters) and lists of ints.
Ray itself serialises with pickle between cluster members; it is a trusted-cluster engine (see
``docs/distributed.md``). Everything received is checked to be arrays of numeric or string
dtype before use, and the spool is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import pathlib
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import RolloutReturn

from sim2online_envs.agents.checkpoint import (
    atomic_write,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
NAMESPACE = "sim2online"
#: The learner's actor name in server mode (``sim2online learner``).
LEARNER_NAME = "sim2online-learner"
#: Default port of ``sim2online learner --listen HOST`` (Ray Client's usual port).
DEFAULT_PORT = 10001
#: Modules whose classes a learner may be asked to build (no arbitrary import by name).
_ALLOWED_MODULE = "sim2online_envs.agents"

_ALLOWED_KINDS = "biufU"  # bool, int, uint, float, unicode


# -- the engine ----------------------------------------------------------------------------------


def loopback_environment() -> None:
    """Keep every Ray listener on 127.0.0.1 and usage stats off.

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when it is imported
    (``ray_constants.ENABLE_RAY_CLUSTER``); where Ray was imported before this ran, the constant
    is set as the variable would have set it. Without it Ray binds every interface (``*``) and
    the machine's own address even with ``_node_ip_address="127.0.0.1"``.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


# Before anything here imports Ray: this module's Ray instances are held to loopback.
loopback_environment()


def check_loopback_only() -> None:
    """RuntimeError (after stopping Ray) if a Ray process of this machine's instance listens
    beyond loopback."""
    ray = _ray()
    try:
        outside = [item for item in cluster_listeners() if not address_is_loopback(item[1])]
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("could not list Ray's sockets (%r): loopback not verified", error)
        return
    if outside:
        ray.shutdown()
        raise RuntimeError(f"Ray listened beyond loopback, stopped: {outside}")


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:  # pragma: no cover - the extra is missing
        raise ImportError(
            "the process-separated learner needs Ray: pip install 'sim2online-envs[distributed]'"
        ) from error
    return ray


def start_engine(num_cpus: int | None = None) -> str:
    """Start a single-machine Ray instance held to loopback (or reuse the running one); returns
    its GCS address. Every Ray process listens on 127.0.0.1 only (``cluster_listeners``)."""
    ray = _ray()
    if not ray.is_initialized():
        loopback_environment()
        ray.init(
            _node_ip_address=LOOPBACK,
            include_dashboard=False,
            namespace=NAMESPACE,
            log_to_driver=False,
            num_cpus=num_cpus,
            configure_logging=False,
        )
        check_loopback_only()
    return ray.get_runtime_context().gcs_address


def connect_engine(address: str) -> None:
    """Join a learner server as a Ray Client (``ray://HOST:PORT``); no-op when connected.

    Ray Client retries the connection for about 30 s before ``ray.init`` raises."""
    ray = _ray()
    if ray.is_initialized():
        return
    loopback_environment()
    host, port = parse_address(address)
    ray.init(f"ray://{host}:{port}", namespace=NAMESPACE)


def parse_address(address: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST[:PORT]`` (``ray://`` prefix allowed) as (host, port)."""
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit() or not host:
        raise ValueError(f"address must be HOST[:PORT], got {address!r}")
    return host, int(port)


def cluster_listeners(root_pid: int | None = None) -> list[tuple[str, str, int, str]]:
    """Listening sockets (TCP and UDP) of ``root_pid`` (default: this process) and every
    process below it, as (protocol, local address, pid, process name), read with ``ss``."""
    root = os.getpid() if root_pid is None else root_pid
    children: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, []))
    output = subprocess.run(
        ["ss", "-H", "-lnptu"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    found = []
    for line in output.splitlines():
        fields = line.split()
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if int(pid) in tree:
                found.append((fields[0], fields[4], int(pid), name))
    return found


def address_is_loopback(local: str) -> bool:
    """Whether an ``ss`` local address (``127.0.0.1:80``, ``[::ffff:127.0.0.1]:80``) is on
    loopback."""
    host = local.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "::1", "::ffff:127.0.0.1") or host.startswith("127.")


# -- plain wire data -----------------------------------------------------------------------------


def check_plain(data: Any, what: str) -> dict[str, np.ndarray]:
    """``data`` as a dict of arrays of numeric, bool or string dtype, else a ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected a dict of arrays, got {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise ValueError(f"{what}: {key!r} is not a str -> ndarray entry")
        if value.dtype.kind not in _ALLOWED_KINDS:
            raise ValueError(f"{what}: {key!r} has dtype {value.dtype} (object arrays refused)")
    return data


def _split(value: Any, prefix: str) -> dict[str, np.ndarray]:
    if isinstance(value, dict):
        return {f"{prefix}/{key}": np.asarray(item) for key, item in value.items()}
    return {prefix: np.asarray(value)}


def _join(data: dict[str, np.ndarray], prefix: str) -> Any:
    if prefix in data:
        return data[prefix]
    start = f"{prefix}/"
    return {key[len(start) :]: value for key, value in data.items() if key.startswith(start)}


class EpisodeRecorder:
    """Stands in for the replay buffer in ``collect_rollouts`` (it only calls ``add``): keeps the
    episode's transitions, stacked at the boundary into an episode dict of arrays."""

    def __init__(self) -> None:
        self.transitions: list[tuple[Any, ...]] = []

    @staticmethod
    def _copy(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: np.array(item[0], copy=True) for key, item in value.items()}
        return np.array(value[0], copy=True)

    def add(self, obs: Any, next_obs: Any, action: Any, reward: Any, done: Any, infos: Any):
        """One transition (n_envs = 1), as SB3's ``_store_transition`` gives it."""
        if np.shape(reward)[0] != 1:
            raise ValueError("the process-separated learner supports one env per actor")
        truncated = bool(infos[0].get("TimeLimit.truncated", False))
        self.transitions.append(
            (*(self._copy(v) for v in (obs, next_obs, action, reward, done)), truncated)
        )

    def __len__(self) -> int:
        return len(self.transitions)

    def pop_episode(
        self, actor_id: str, seq: int, version: int, progress_remaining: float
    ) -> dict[str, np.ndarray] | None:
        """The recorded transitions as an episode (None if empty); the recorder is emptied."""
        if not self.transitions:
            return None
        columns = list(zip(*self.transitions, strict=True))
        self.transitions = []
        n = len(columns[0])

        def stack(items: tuple[Any, ...]) -> Any:
            if isinstance(items[0], dict):
                return {key: np.stack([item[key] for item in items]) for key in items[0]}
            return np.stack(items)

        episode: dict[str, np.ndarray] = {}
        episode.update(_split(stack(columns[0]), "observations"))
        episode.update(_split(stack(columns[1]), "next_observations"))
        episode["actions"] = stack(columns[2])
        episode["rewards"] = np.asarray(columns[3], dtype=np.float32)
        episode["dones"] = np.asarray(columns[4], dtype=np.float32)
        episode["truncated"] = np.asarray(columns[5], dtype=bool)
        episode["policy_version"] = np.full(n, version, dtype=np.int64)
        episode["actor_id"] = np.full(n, actor_id)
        episode["seq"] = np.asarray(seq, dtype=np.int64)
        episode["progress_remaining"] = np.asarray(progress_remaining, dtype=np.float64)
        episode["sent_at"] = np.asarray(time.time(), dtype=np.float64)
        return episode


def episode_key(episode: dict[str, np.ndarray]) -> tuple[str, int]:
    """(actor id, sequence number) of an episode dict."""
    return str(episode["actor_id"][0]), int(episode["seq"])


# -- the actor's spool ---------------------------------------------------------------------------


def _replace_file(path: pathlib.Path, write: Any) -> None:
    """Write to a temporary file beside ``path`` and rename it over ``path`` (no fsync)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


class EpisodeSpool:
    """Finished episodes of one actor on disk until the learner has them in a checkpoint.

    ``directory/episode-<seq>.npz`` (written atomically, read with ``allow_pickle=False``) and
    ``next_seq`` (the counter, so that a restarted actor never reuses a number).
    """

    def __init__(self, directory: str | pathlib.Path):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        counter = self.directory / "next_seq"
        stored = int(counter.read_text()) if counter.is_file() else 0
        self._next = max([stored, *(seq + 1 for seq in self.pending())])

    def _path(self, seq: int) -> pathlib.Path:
        return self.directory / f"episode-{seq:08d}.npz"

    def take_seq(self) -> int:
        """The next sequence number, recorded before it is used."""
        seq = self._next
        self._next += 1
        _replace_file(
            self.directory / "next_seq", lambda file: file.write(str(self._next).encode())
        )
        return seq

    def put(self, episode: dict[str, np.ndarray]) -> None:
        """Write the episode (renamed into place; :meth:`make_durable` fsyncs it later, off the
        control thread: a process crash keeps it, a power cut may lose the newest)."""
        _, seq = episode_key(episode)
        _replace_file(self._path(seq), lambda file: np.savez(file, **episode))

    def make_durable(self, seq: int) -> None:
        """fsync the episode, the counter and the folder (before the episode is sent)."""
        for path in (self._path(seq), self.directory / "next_seq"):
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as file:
                os.fsync(file.fileno())
        with contextlib.suppress(OSError):
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def get(self, seq: int) -> dict[str, np.ndarray]:
        with np.load(self._path(seq), allow_pickle=False) as data:
            return check_plain({key: data[key] for key in data.files}, f"spooled episode {seq}")

    def pending(self) -> list[int]:
        """Sequence numbers of the episodes on disk, oldest first."""
        seqs = []
        for path in self.directory.glob("episode-*.npz"):
            with contextlib.suppress(ValueError):
                seqs.append(int(path.stem.split("-")[1]))
        return sorted(seqs)

    def remove(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            with contextlib.suppress(FileNotFoundError):
                self._path(seq).unlink()


# -- the learner ---------------------------------------------------------------------------------


def algorithm_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_algorithm(path: str) -> type:
    """The algorithm class named ``module:Class``; only this package's agents."""
    module_name, _, name = path.partition(":")
    if not (module_name == _ALLOWED_MODULE or module_name.startswith(f"{_ALLOWED_MODULE}.")):
        raise ValueError(f"algorithm {path!r} is not one of sim2online_envs.agents")
    return getattr(importlib.import_module(module_name), name)


@dataclass
class _Ledger:
    """Which episodes the learner has: received (queued or in the buffer) and committed (in the
    last checkpoint), with where each episode's transitions sit in the online buffer."""

    committed: dict[str, set[int]] = field(default_factory=dict)
    received: dict[str, set[int]] = field(default_factory=dict)
    # (actor_id, seq, first buffer index, length, policy version) per episode in the buffer
    log: list[list[Any]] = field(default_factory=list)


class LearnerCore:
    """The learner without the engine: episodes in, gradient steps, weights out, checkpoints.

    Built from a checkpoint directory (:func:`save_checkpoint`); the same object serves the Ray
    actor and a single-process reference. Not thread-safe by itself: :class:`_LearnerService`
    locks around it.
    """

    def __init__(
        self,
        algorithm: str,
        checkpoint_dir: str | pathlib.Path,
        checkpoint_every: int = 1,
        device: str = "auto",
        publish: str = "actor",
    ):
        self.checkpoint_dir = pathlib.Path(checkpoint_dir)
        self.checkpoint_every = max(int(checkpoint_every), 1)
        if publish not in ("actor", "policy"):
            raise ValueError(f"publish must be 'actor' or 'policy', got {publish!r}")
        #: "actor": the acting network only (what inference needs: ~0.3 MB for the paper's
        #: policy); "policy": critics and targets too (17 MB with BRO 512), for callbacks that
        #: read the critic on the actor's side
        self.publish_what = publish
        cls = resolve_algorithm(algorithm)
        self.model = load_checkpoint(cls, self.checkpoint_dir, device=device)
        self.model.set_logger(Logger(folder=None, output_formats=[]))
        self.ledger = _Ledger()
        stored = getattr(self.model, "_distributed_ledger", None) or {}
        for actor, seqs in stored.get("committed", {}).items():
            self.ledger.committed[actor] = set(seqs)
            self.ledger.received[actor] = set(seqs)
        self.ledger.log = [list(item) for item in stored.get("log", [])]
        self.incarnation = uuid.uuid4().hex[:8]
        self.episodes_processed = int(stored.get("episodes_processed", 0))
        self.gradient_steps_due = int(stored.get("gradient_steps_due", 0))
        self.since_checkpoint = 0
        self.version = max(self._stored_version(), int(stored.get("version", 0))) + 1
        self.weights: dict[str, np.ndarray] = {}
        self.publish()

    def _stored_version(self) -> int:
        path = self.checkpoint_dir / "version.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            return int(json.loads(path.read_text())["version"])
        return 0

    # -- episodes in ---------------------------------------------------------------------------

    def accept(self, episode: dict[str, np.ndarray]) -> bool:
        """Whether ``episode`` is new (not received or committed before); records it if so."""
        actor, seq = episode_key(episode)
        seen = self.ledger.received.setdefault(actor, set())
        if seq in seen:
            return False
        seen.add(seq)
        return True

    def process(self, episode: dict[str, np.ndarray]) -> int:
        """Add the episode to the online buffer and run the gradient steps it makes due (the
        recipe's K, none in warm start); publish the new weights. Returns the steps done."""
        model = self.model
        buffer = model.replay_buffer
        obs, next_obs = _join(episode, "observations"), _join(episode, "next_observations")
        actions, rewards, dones = episode["actions"], episode["rewards"], episode["dones"]
        truncated = episode["truncated"]
        n = int(rewards.shape[0])
        first = int(buffer.pos)
        for i in range(n):
            o = (
                {k: v[i : i + 1] for k, v in obs.items()}
                if isinstance(obs, dict)
                else obs[i : i + 1]
            )
            o2 = (
                {k: v[i : i + 1] for k, v in next_obs.items()}
                if isinstance(next_obs, dict)
                else next_obs[i : i + 1]
            )
            buffer.add(
                o,
                o2,
                actions[i : i + 1],
                rewards[i : i + 1],
                dones[i : i + 1],
                [{"TimeLimit.truncated": bool(truncated[i])}],
            )
        model.num_timesteps += n
        model._episode_num += 1
        model._current_progress_remaining = float(episode["progress_remaining"])
        actor, seq = episode_key(episode)
        self.ledger.log.append([actor, seq, first, n, int(episode["policy_version"][0])])
        steps = model._gradient_steps_due(RolloutReturn(n, 1, True))
        self.gradient_steps_due += steps
        if steps > 0:
            model.train(gradient_steps=steps, batch_size=model.batch_size)
        self.episodes_processed += 1
        self.since_checkpoint += 1
        self.version += 1
        self.publish()
        return steps

    # -- weights and checkpoints out -----------------------------------------------------------

    def publish(self) -> None:
        """The policy's weights as arrays, with version and counters (``meta/...``)."""
        text = json.dumps({"version": self.version}).encode()
        atomic_write(self.checkpoint_dir / "version.json", lambda file: file.write(text))
        weights = {
            f"policy/{key}": value.detach().cpu().numpy().copy()
            for key, value in self.model.policy.state_dict().items()
            if self.publish_what == "policy" or key.startswith("actor.")
        }
        meta = {
            "version": self.version,
            "n_updates": self.model._n_updates,
            "n_actor_updates": getattr(self.model, "_n_actor_updates", 0),
            "num_timesteps": self.model.num_timesteps,
            "episodes_processed": self.episodes_processed,
            "gradient_steps_due": self.gradient_steps_due,
        }
        weights.update(
            {f"meta/{key}": np.asarray(value, dtype=np.int64) for key, value in meta.items()}
        )
        weights["meta/published_at"] = np.asarray(time.time(), dtype=np.float64)
        self.weights = weights

    def due_checkpoint(self) -> bool:
        return self.since_checkpoint >= self.checkpoint_every

    def checkpoint(self) -> None:
        """Save the whole state; the episodes processed so far become committed."""
        processed: dict[str, set[int]] = {}
        for actor, seq, *_ in self.ledger.log:
            processed.setdefault(actor, set()).add(int(seq))
        self.model._distributed_ledger = {
            "committed": {actor: sorted(seqs) for actor, seqs in processed.items()},
            "log": self.ledger.log,
            "version": self.version,
            "episodes_processed": self.episodes_processed,
            "gradient_steps_due": self.gradient_steps_due,
        }
        try:
            save_checkpoint(self.model, self.checkpoint_dir)
        finally:
            del self.model._distributed_ledger
        self.ledger.committed = processed
        self.since_checkpoint = 0

    def status(self, actor: str, seqs: Iterable[int]) -> dict[str, list[int] | int | str]:
        """Which of ``seqs`` of ``actor`` the learner has received and committed."""
        asked = set(int(s) for s in seqs)
        return {
            "received": sorted(asked & self.ledger.received.get(actor, set())),
            "committed": sorted(asked & self.ledger.committed.get(actor, set())),
            "version": self.version,
            "incarnation": self.incarnation,
        }

    def provenance(self) -> dict[str, np.ndarray]:
        """Per online-buffer transition: actor id, episode seq and policy version."""
        size = int(self.model.replay_buffer.size())
        actors = np.full(size, "", dtype="<U64")
        seqs = np.full(size, -1, dtype=np.int64)
        versions = np.full(size, -1, dtype=np.int64)
        capacity = int(self.model.replay_buffer.buffer_size)
        for actor, seq, first, n, version in self.ledger.log:
            index = (np.arange(first, first + n) % capacity)[:size]
            actors[index], seqs[index], versions[index] = actor, seq, version
        return {"actor_id": actors, "seq": seqs, "policy_version": versions}


class _LearnerService:
    """The Ray actor's body: a trainer thread works through received episodes in order while
    actors submit, ask for status and fetch weights concurrently (``max_concurrency``)."""

    def __init__(
        self,
        algorithm: str,
        checkpoint_dir: str,
        checkpoint_every: int = 1,
        threads: int = 1,
        device: str = "auto",
        nice: int = 10,
        publish: str = "actor",
    ):
        th.set_num_threads(max(int(threads), 1))
        if nice:
            # Below the control loop where both share a machine: the robot's ticks come first.
            with contextlib.suppress(OSError):
                os.nice(nice)
        self.core = LearnerCore(algorithm, checkpoint_dir, checkpoint_every, device, publish)
        self._lock = threading.Lock()
        self._queue: queue.Queue[dict[str, np.ndarray]] = queue.Queue()
        self._busy = False
        self._error: str | None = None
        self._stop = threading.Event()
        self._published = threading.Condition()
        self._thread = threading.Thread(target=self._train_loop, name="learner", daemon=True)
        self._thread.start()

    def _train_loop(self) -> None:
        while not self._stop.is_set():
            try:
                episode = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._lock:
                self._busy = True
            try:
                self.core.process(episode)
                with self._published:
                    self._published.notify_all()
                if self.core.due_checkpoint():
                    self.core.checkpoint()
            except Exception as error:  # reported through stats(); the service keeps serving
                logger.exception("learner failed on an episode")
                self._error = repr(error)
            finally:
                with self._lock:
                    self._busy = False

    def pid(self) -> int:
        return os.getpid()

    def submit(self, episode: dict[str, np.ndarray]) -> bool:
        """Queue an episode (dict of arrays); False if it was received before."""
        check_plain(episode, "episode")
        with self._lock:
            new = self.core.accept(episode)
        if new:
            self._queue.put(episode)
        return new

    def status(self, actor: str, seqs: list[int]) -> dict[str, Any]:
        with self._lock:
            return self.core.status(str(actor), [int(s) for s in seqs])

    def version(self) -> int:
        return self.core.version

    def weights(self, newer_than: int = -1) -> dict[str, np.ndarray] | None:
        """The latest weights if their version is above ``newer_than``, else None."""
        current = self.core.weights
        return current if int(current["meta/version"]) > newer_than else None

    def wait_weights(self, newer_than: int, timeout_s: float) -> dict[str, np.ndarray] | None:
        """Like :meth:`weights`, waiting (at most ``timeout_s``) for a version above
        ``newer_than``: actors long-poll, so a publication reaches them at once."""
        with self._published:
            self._published.wait_for(
                lambda: int(self.core.weights["meta/version"]) > newer_than,
                timeout=min(max(timeout_s, 0.0), 5.0),
            )
        return self.weights(newer_than)

    def stats(self) -> dict[str, Any]:
        core = self.core
        return {
            "version": core.version,
            "episodes_processed": core.episodes_processed,
            "queued": self._queue.qsize(),
            "n_updates": int(core.model._n_updates),
            "gradient_steps_due": core.gradient_steps_due,
            "num_timesteps": int(core.model.num_timesteps),
            "buffer_size": int(core.model.replay_buffer.size()),
            "incarnation": core.incarnation,
            "error": self._error,
        }

    def provenance(self) -> dict[str, np.ndarray]:
        with self._lock:
            return self.core.provenance()

    def drain(self, timeout_s: float = 600.0) -> dict[str, Any]:
        """Wait (bounded) until every queued episode is processed, then checkpoint."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                idle = not self._busy and self._queue.empty()
            if idle:
                break
            time.sleep(0.02)
        else:
            raise TimeoutError(f"learner still busy after {timeout_s} s")
        with self._lock:
            if self.core.since_checkpoint:
                self.core.checkpoint()
        return self.stats()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def learner_actor_class() -> Any:
    """The Ray actor class of the learner (restarted by Ray after a crash: ``max_restarts``)."""
    ray = _ray()
    return ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=16, num_cpus=0)(
        _LearnerService
    )


def spawn_learner(
    model: Any,
    checkpoint_dir: str | pathlib.Path,
    *,
    name: str | None = None,
    checkpoint_every: int = 1,
    threads: int = 1,
    device: str = "auto",
    detached: bool = False,
    publish: str = "actor",
) -> Any:
    """Start a learner process from ``model`` (saved as the checkpoint's first generation unless
    ``checkpoint_dir`` already holds one: then that is resumed; ``model`` may then be the
    algorithm class). Returns the Ray actor handle."""
    checkpoint_dir = pathlib.Path(checkpoint_dir)
    cls = model if isinstance(model, type) else type(model)
    try:
        read_manifest(checkpoint_dir)
    except FileNotFoundError:
        if isinstance(model, type):
            raise
        save_checkpoint(model, checkpoint_dir)
    options: dict[str, Any] = {"name": name or f"{LEARNER_NAME}-{uuid.uuid4().hex[:8]}"}
    if detached:
        options["lifetime"] = "detached"
    return (
        learner_actor_class()
        .options(**options)
        .remote(
            algorithm_path(cls), str(checkpoint_dir), checkpoint_every, threads, device, 10, publish
        )
    )


# -- the actor's link ----------------------------------------------------------------------------


class LearnerLink:
    """The actor's side of the link, in a thread of its own: sends spooled episodes, learns
    which ones the learner has committed (and deletes them), fetches newer weights. Every engine
    call has a timeout; a lost learner is looked up again by name until it returns."""

    def __init__(
        self,
        learner_name: str,
        actor_id: str,
        spool: EpisodeSpool,
        poll_s: float = 0.01,
        long_poll_s: float = 0.3,
        call_timeout_s: float = 10.0,
        resend_after_s: float = 5.0,
    ):
        self.learner_name = learner_name
        self.actor_id = actor_id
        self.spool = spool
        self.poll_s = poll_s
        self.long_poll_s = long_poll_s
        self.call_timeout_s = call_timeout_s
        self.resend_after_s = resend_after_s
        self._handle: Any = None
        self._sent_at: dict[int, float] = {}
        self._weights: dict[str, np.ndarray] | None = None
        self._weights_version = -1
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.connected = False
        self.committed_total = 0
        self.errors = 0
        self.publish_latency_s: list[float] = []
        self._thread = threading.Thread(target=self._run, name="learner-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout_s)

    def send(self, episode: dict[str, np.ndarray]) -> None:
        """Keep the episode on disk and wake the link (returns at once)."""
        self.spool.put(episode)
        self._wake.set()

    def take_weights(self) -> dict[str, np.ndarray] | None:
        """The newest weights received since the last call, else None."""
        with self._lock:
            weights, self._weights = self._weights, None
        return weights

    def handle(self) -> Any:
        ray = _ray()
        if self._handle is None:
            self._handle = ray.get_actor(self.learner_name, namespace=NAMESPACE)
        return self._handle

    def _call(self, method: str, *args: Any) -> Any:
        ray = _ray()
        ref = getattr(self.handle(), method).remote(*args)
        return ray.get(ref, timeout=self.call_timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.poll_s)
            self._wake.clear()
            try:
                self._cycle()
                self.connected = True
            except Exception as error:  # the engine's errors: lost actor, timeout, no cluster
                self.errors += 1
                if self.connected:
                    logger.warning("link to the learner lost (%r); episodes stay spooled", error)
                self.connected = False
                self._handle = None
                self._stop.wait(timeout=min(0.5 * self.errors, 2.0))

    def _cycle(self) -> None:
        pending = self.spool.pending()
        status = self._call("status", self.actor_id, pending)
        committed = status["committed"]
        if committed:
            self.spool.remove(committed)
            self.committed_total += len(committed)
            for seq in committed:
                self._sent_at.pop(seq, None)
        received = set(status["received"])
        now = time.monotonic()
        for seq in pending:
            if seq in received or seq in committed:
                continue
            if now - self._sent_at.get(seq, -np.inf) < self.resend_after_s:
                continue
            try:
                self.spool.make_durable(seq)
                episode = self.spool.get(seq)
            except FileNotFoundError:
                continue
            self._call("submit", episode)
            self._sent_at[seq] = time.monotonic()
        # Long poll: returns as soon as the learner publishes, else after long_poll_s.
        weights = self._call("wait_weights", self._weights_version, self.long_poll_s)
        if weights is not None:
            check_plain(weights, "weights")
            self.publish_latency_s.append(time.time() - float(weights["meta/published_at"]))
            with self._lock:
                self._weights_version = int(weights["meta/version"])
                self._weights = weights

    def wait_committed(self, timeout_s: float) -> bool:
        """Block (bounded) until no episode is left in the spool."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.spool.pending():
                return True
            self._wake.set()
            time.sleep(0.05)
        return not self.spool.pending()


# -- the same user API: a learner process behind SB3's learn ------------------------------------


@dataclass
class LearnerOptions:
    """How ``async_updates="process"`` reaches its learner (see :func:`attach_learner`)."""

    address: str | None = None
    learner_name: str | None = None
    actor_id: str = "actor-0"
    spool_dir: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1
    learner_threads: int = 1
    publish: str = "actor"
    lockstep: bool = False
    first_weights_timeout_s: float = 30.0
    finish_timeout_s: float = 600.0


_OPTIONS: weakref.WeakKeyDictionary[Any, LearnerOptions] = weakref.WeakKeyDictionary()
_LAST: weakref.WeakKeyDictionary[Any, ProcessLearner] = weakref.WeakKeyDictionary()


def attach_learner(model: Any, **options: Any) -> LearnerOptions:
    """Make ``model.learn`` act here and learn in a learner process.

    Without ``address`` / ``learner_name`` a learner process is started on this machine for each
    ``learn`` call (Ray on loopback) from the model's current state; ``checkpoint_dir`` keeps its
    checkpoints (default: a temporary folder). With ``address="HOST:PORT"`` the model joins the
    learner that ``sim2online learner --listen HOST:PORT`` serves. ``actor_id`` names this
    actor's episodes, ``spool_dir`` keeps them until the learner has checkpointed them,
    ``lockstep=True`` waits at each boundary for the weights trained on the episode just sent;
    ``publish="policy"`` sends critics with the weights too (default ``"actor"``: what acting
    needs; the local learner's whole state still comes back at the end of ``learn``).
    """
    settings = LearnerOptions(**options)
    model.async_updates = "process"
    _OPTIONS[model] = settings
    return settings


def learner_options(model: Any) -> LearnerOptions:
    return _OPTIONS.get(model) or LearnerOptions()


def last_process_learner(model: Any) -> ProcessLearner:
    """The :class:`ProcessLearner` of ``model``'s last ``learn`` (versions acted with, the
    link's publish latencies, episodes sent)."""
    return _LAST[model]


def load_weights(model: Any, weights: dict[str, np.ndarray]) -> None:
    """Published weights into the acting model's policy, with the learner's counters."""
    state = {
        key[len("policy/") :]: th.from_numpy(np.array(value, copy=True))
        for key, value in weights.items()
        if key.startswith("policy/")
    }
    missing, unexpected = model.policy.load_state_dict(state, strict=False)
    if unexpected or not state or any(key.startswith("actor.") for key in missing):
        raise ValueError(f"weights do not fit the policy: missing {missing}, extra {unexpected}")
    model._n_updates = int(weights["meta/n_updates"])
    if hasattr(model, "_n_actor_updates"):
        model._n_actor_updates = int(weights["meta/n_actor_updates"])


class ProcessLearner:
    """The :class:`~sim2online_envs.agents.common.BackgroundLearner` interface over a learner
    process: ``learn`` records each episode here (``staging``), and at the boundary it is
    spooled and handed to the link; weights that have arrived are swapped in. Nothing at a
    boundary waits for the learner unless ``lockstep``."""

    def __init__(self, model: Any):
        self.model = model
        self.options = options = learner_options(model)
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        self._spawned = None
        if options.address is not None:
            connect_engine(options.address)
        else:
            start_engine()
        base = None
        if options.checkpoint_dir is None or options.spool_dir is None:
            self._temp = tempfile.TemporaryDirectory(prefix="sim2online-learner-")
            base = pathlib.Path(self._temp.name)
        name = options.learner_name
        if options.address is not None and name is None:
            name = LEARNER_NAME
        if name is None:
            name = f"{LEARNER_NAME}-{uuid.uuid4().hex[:8]}"
            checkpoint_dir = options.checkpoint_dir or str(base / "checkpoint")  # type: ignore[operator]
            self._spawned = spawn_learner(
                model,
                checkpoint_dir,
                name=name,
                checkpoint_every=options.checkpoint_every,
                threads=options.learner_threads,
                publish=options.publish,
            )
        self.learner_name = name
        spool_dir = options.spool_dir or str(base / "spool")  # type: ignore[operator]
        self.spool = EpisodeSpool(pathlib.Path(spool_dir))
        self.link = LearnerLink(name, options.actor_id, self.spool)
        self.staging = EpisodeRecorder()
        self.version = 0
        self.versions: list[int] = []
        #: the learner's gradient steps known at each boundary (what the acting policy has had)
        self.boundary_updates: list[int] = []
        self.episodes_sent = 0
        self.jobs_started = 0
        self.boundaries_busy = 0
        _LAST[model] = self
        self.link.start()
        self._first_weights(options.first_weights_timeout_s)

    def _first_weights(self, timeout_s: float) -> None:
        """An actor (re)starting takes the learner's latest weights before its first step."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            weights = self.link.take_weights()
            if weights is not None:
                self._swap(weights)
                return
            time.sleep(0.02)
        logger.warning(
            "no weights from the learner within %.0f s: acting with the model's own", timeout_s
        )

    def _swap(self, weights: dict[str, np.ndarray]) -> None:
        version = int(weights["meta/version"])
        if version <= self.version:
            return
        load_weights(self.model, weights)
        self.version = version
        self.versions.append(version)
        self.last_weights_meta = {k: v for k, v in weights.items() if k.startswith("meta/")}

    def on_boundary(self, gradient_steps: int) -> None:
        """After each episode: spool and send it, then take weights that have arrived."""
        del gradient_steps  # the learner counts the steps due itself, from the episodes
        seq = self.spool.take_seq() if len(self.staging) else None
        if seq is not None:
            episode = self.staging.pop_episode(
                self.options.actor_id, seq, self.version, self.model._current_progress_remaining
            )
            self.link.send(episode)  # type: ignore[arg-type]
            self.episodes_sent += 1
            self.jobs_started += 1
        if self.options.lockstep and seq is not None:
            self._wait_for_training(seq)
        weights = self.link.take_weights()
        if weights is not None:
            self._swap(weights)
        else:
            self.boundaries_busy += 1
        self.boundary_updates.append(int(self.model._n_updates))

    def _wait_for_training(self, seq: int, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            weights = self.link.take_weights()
            if weights is not None:
                self._swap(weights)
                if int(weights["meta/episodes_processed"]) >= self.episodes_sent:
                    return
            time.sleep(0.005)
        logger.warning("lockstep: no weights for episode %d within %.0f s", seq, timeout_s)

    def stats(self) -> dict[str, Any]:
        return self.link.handle().stats.remote()

    def finish(self, run_pending: bool = True) -> None:
        """Send the rest, wait (bounded) until the learner has trained on and checkpointed
        every episode, take its final state; stop the learner this object started."""
        ray = _ray()
        try:
            if len(self.staging):
                self.on_boundary(0)
            if not run_pending:
                return
            if not self.link.wait_committed(self.options.finish_timeout_s):
                logger.warning(
                    "learner has not checkpointed %d episodes within %.0f s (unreachable or "
                    "still training): they stay in %s and are sent when it returns",
                    len(self.spool.pending()),
                    self.options.finish_timeout_s,
                    self.spool.directory,
                )
                return
            handle = self.link.handle()
            ray.get(
                handle.drain.remote(self.options.finish_timeout_s),
                timeout=self.options.finish_timeout_s + 10,
            )
            weights = ray.get(handle.weights.remote(-1), timeout=60)
            self._swap(check_plain(weights, "weights"))
            if self._spawned is not None:
                self._adopt_final_state()
        finally:
            self.link.stop()
            if self._spawned is not None:
                with contextlib.suppress(Exception):
                    ray.kill(self._spawned, no_restart=True)
            if self._temp is not None:
                self._temp.cleanup()

    def _adopt_final_state(self) -> None:
        """The learner's whole state (optimisers, temperature, counters, buffer) into the model,
        from its last checkpoint on this machine."""
        directory = self.options.checkpoint_dir or str(pathlib.Path(self._temp.name) / "checkpoint")  # type: ignore[union-attr]
        final = load_checkpoint(
            type(self.model), directory, device=self.model.device, restore_rng=False
        )
        _copy_state(self.model, final)


def _copy_state(model: Any, final: Any) -> None:
    final.set_logger(Logger(folder=None, output_formats=[]))
    timesteps = model.num_timesteps
    model._copy_learner_state_from(final)
    model.replay_buffer = final.replay_buffer
    model.num_timesteps = timesteps


def copy_tree(source: str | pathlib.Path, target: str | pathlib.Path) -> None:
    """Copy a checkpoint directory (tests and tools)."""
    shutil.copytree(source, target, dirs_exist_ok=True)


# -- an actor process (tests, sim workers) --------------------------------------------------------


class _ActorService:
    """An actor in a process of its own: loads its policy from a model file of its own (never
    from the peer), makes the env, and fine-tunes through the learner named ``learner_name``."""

    def __init__(
        self,
        algorithm: str,
        model_path: str,
        env_id: str,
        learner_name: str,
        actor_id: str,
        spool_dir: str,
        env_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
    ):
        import gymnasium as gym

        import sim2online_envs  # noqa: F401  (registers the env ids)

        th.set_num_threads(1)
        self.env = gym.make(env_id, **(env_kwargs or {}))
        self.model = resolve_algorithm(algorithm).load(model_path, env=self.env, seed=seed)
        attach_learner(
            self.model,
            learner_name=learner_name,
            actor_id=actor_id,
            spool_dir=spool_dir,
        )

    def pid(self) -> int:
        return os.getpid()

    def run(self, total_timesteps: int) -> dict[str, Any]:
        """``learn(total_timesteps)``; returns the versions acted with and the link's figures."""
        self.model.learn(total_timesteps, reset_num_timesteps=False)
        learner = last_process_learner(self.model)
        return {
            "versions": list(learner.versions),
            "episodes_sent": learner.episodes_sent,
            "publish_latency_s": list(learner.link.publish_latency_s),
        }


def actor_process_class() -> Any:
    """The Ray actor class of an actor process (not restarted by Ray: a restart is the
    operator's, with the same ``actor_id`` and spool)."""
    ray = _ray()
    return ray.remote(max_restarts=0, max_concurrency=2, num_cpus=0)(_ActorService)


__all__ = [
    "LOOPBACK",
    "EpisodeRecorder",
    "EpisodeSpool",
    "LearnerCore",
    "LearnerLink",
    "LearnerOptions",
    "ProcessLearner",
    "attach_learner",
    "check_plain",
    "cluster_listeners",
    "connect_engine",
    "spawn_learner",
    "start_engine",
]
