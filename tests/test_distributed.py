"""Actor and learner in separate processes (agents.distributed, Ray), loopback only.

One Ray instance for the module (ray.init costs ~8 s and ~400 MB here); SimRaceCar-v0 with
small networks and a few gradient steps per episode, so that the module stays near a minute.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

# Ray reads these when it is imported: every listener on 127.0.0.1, no usage stats.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
ray = pytest.importorskip("ray", reason="the distributed extra (ray) is not installed")

from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402

import sim2online_envs  # noqa: E402, F401  (registers the env ids)
from sim2online_envs.agents import SAC, load_checkpoint, save_checkpoint  # noqa: E402
from sim2online_envs.agents.distributed import (  # noqa: E402
    LOOPBACK,
    EpisodeRecorder,
    EpisodeSpool,
    LearnerCore,
    LearnerLink,
    actor_process_class,
    address_is_loopback,
    algorithm_path,
    attach_learner,
    check_plain,
    cluster_listeners,
    last_process_learner,
    spawn_learner,
    start_engine,
)

EPISODE = 250  # SimRaceCar-v0's episode length (a car that leaves the track ends sooner)
K = 4  # gradient steps per episode (the recipe's K, small for the tests)


@pytest.fixture(scope="module")
def cluster() -> Any:
    start_engine(num_cpus=2)
    yield
    ray.shutdown()


def make_model(seed: int = 0, **kwargs: Any) -> SAC:
    return SAC(
        "MlpPolicy",
        gym.make("SimRaceCar-v0"),
        policy_kwargs={"net_arch": [16, 16]},
        batch_size=32,
        learning_starts=0,
        train_freq=(1, "episode"),
        gradient_steps=K,
        buffer_size=5_000,
        seed=seed,
        **kwargs,
    )


def random_episodes(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Episodes of random actions on the car, recorded as an actor sends them."""
    env = gym.make("SimRaceCar-v0")
    env.action_space.seed(seed)
    episodes = []
    for seq in range(count):
        recorder = EpisodeRecorder()
        obs, _ = env.reset(seed=seed + seq)
        done = False
        while not done:
            action = env.action_space.sample()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            recorder.add(
                obs[None],
                next_obs[None],
                action[None],
                np.array([reward]),
                np.array([terminated]),
                [{"TimeLimit.truncated": truncated and not terminated}],
            )
            obs = next_obs
        episodes.append(recorder.pop_episode("ref", seq, 1, 1.0))
    return episodes


def final_ledger(directory: pathlib.Path) -> dict[str, Any]:
    return load_checkpoint(SAC, directory, load_replay_buffer=False)._distributed_ledger


class KillLearnerAfter(BaseCallback):
    """SIGKILLs the learner process once ``episodes`` episodes have ended."""

    def __init__(self, episodes: int):
        super().__init__()
        self.episodes, self.ended, self.killed_pid = episodes, 0, None

    def _on_step(self) -> bool:
        if self.locals["dones"][0]:
            self.ended += 1
            if self.ended == self.episodes:
                handle = self.model._learner.link.handle()
                self.killed_pid = ray.get(handle.pid.remote(), timeout=30)
                os.kill(self.killed_pid, signal.SIGKILL)
        return True


def test_every_ray_listener_is_on_loopback(cluster: Any, tmp_path: pathlib.Path) -> None:
    learner = spawn_learner(make_model(), tmp_path / "ckpt")
    assert ray.get(learner.version.remote(), timeout=120) >= 1
    listeners = cluster_listeners()
    names = {name for *_, name in listeners}
    assert {"gcs_server", "raylet"} <= names, listeners
    outside = [item for item in listeners if not address_is_loopback(item[1])]
    assert not outside, f"Ray listens beyond loopback: {outside}"
    ray.kill(learner, no_restart=True)


def test_learner_process_fine_tunes_the_car(cluster: Any, tmp_path: pathlib.Path) -> None:
    model = make_model(async_updates="process")
    attach_learner(model, checkpoint_dir=str(tmp_path / "ckpt"), spool_dir=str(tmp_path / "s"))
    model.learn(3 * EPISODE)
    process = last_process_learner(model)
    ledger = final_ledger(tmp_path / "ckpt")
    episodes = len(ledger["log"])
    assert episodes >= 3 and ledger["committed"] == {"actor-0": list(range(episodes))}
    # the learner's whole state came back: K steps per episode, its buffer with every transition
    assert model._n_updates == episodes * K
    assert model.replay_buffer.size() == sum(n for *_, n, _ in ledger["log"]) == model.num_timesteps
    assert process.versions == sorted(set(process.versions))
    assert not EpisodeSpool(tmp_path / "s").pending()  # all committed, so deleted


def test_learner_process_equals_single_process_learner(
    cluster: Any, tmp_path: pathlib.Path
) -> None:
    """The same episodes in the same order: the Ray learner's weights equal, bit for bit, those
    of the same learner code run in this process (the engine moves the arrays exactly)."""
    episodes = random_episodes(2, seed=3)
    save_checkpoint(make_model(seed=5), tmp_path / "a")
    save_checkpoint(make_model(seed=5), tmp_path / "b")
    learner = spawn_learner(make_model(), tmp_path / "a")
    for episode in episodes:
        assert ray.get(learner.submit.remote(episode), timeout=60)
    assert not ray.get(learner.submit.remote(episodes[0]), timeout=60)  # a duplicate is dropped
    stats = ray.get(learner.drain.remote(120), timeout=130)
    remote = check_plain(ray.get(learner.weights.remote(-1), timeout=60), "weights")
    ray.kill(learner, no_restart=True)

    local = LearnerCore(algorithm_path(SAC), tmp_path / "b")
    for episode in episodes:
        assert local.accept(episode)
        local.process(episode)
    assert stats["n_updates"] == local.model._n_updates == 2 * K
    keys = [key for key in remote if key.startswith("policy/")]
    assert keys
    for key in keys:
        np.testing.assert_array_equal(remote[key], local.weights[key], err_msg=key)


def test_learner_killed_mid_run_resumes_without_loss(cluster: Any, tmp_path: pathlib.Path) -> None:
    model = make_model(async_updates="process")
    attach_learner(model, checkpoint_dir=str(tmp_path / "ckpt"), spool_dir=str(tmp_path / "s"))
    kill = KillLearnerAfter(episodes=2)
    model.learn(5 * EPISODE, callback=kill)
    assert kill.killed_pid is not None
    process = last_process_learner(model)
    assert process.versions == sorted(set(process.versions)), process.versions
    ledger = final_ledger(tmp_path / "ckpt")
    seqs = [seq for _, seq, *_ in ledger["log"]]
    assert len(seqs) >= 5 and sorted(seqs) == list(range(len(seqs)))  # none lost, none twice
    assert model.replay_buffer.size() == sum(n for *_, n, _ in ledger["log"]) == model.num_timesteps
    assert model._n_updates == len(seqs) * K


def test_actor_killed_and_restarted_two_actors_one_learner(
    cluster: Any, tmp_path: pathlib.Path
) -> None:
    prior = make_model(seed=1)
    prior.save(tmp_path / "prior.zip")
    learner = spawn_learner(prior, tmp_path / "ckpt", name="test-learner")
    Actor = actor_process_class()

    def actor(actor_id: str) -> Any:
        return Actor.remote(
            algorithm_path(SAC),
            str(tmp_path / "prior.zip"),
            "SimRaceCar-v0",
            "test-learner",
            actor_id,
            str(tmp_path / actor_id),
        )

    first = actor("car-a")
    pid = ray.get(first.pid.remote(), timeout=120)
    first.run.remote(20 * EPISODE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ray.get(learner.status.remote("car-a", [0, 1]), timeout=30)["received"] == [0, 1]:
            break
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)  # the actor dies mid-episode
    before = ray.get(learner.stats.remote(), timeout=30)["version"]

    again, other = actor("car-a"), actor("car-b")
    runs = [again.run.remote(2 * EPISODE), other.run.remote(2 * EPISODE)]
    seen_again, seen_other = ray.get(runs, timeout=300)
    ray.get(learner.drain.remote(120), timeout=130)
    provenance = ray.get(learner.provenance.remote(), timeout=60)
    ray.kill(learner, no_restart=True)

    assert seen_again["versions"][0] >= before  # the restarted actor took the latest weights
    ledger = final_ledger(tmp_path / "ckpt")
    for actor_id in ("car-a", "car-b"):
        seqs = sorted(seq for who, seq, *_ in ledger["log"] if who == actor_id)
        assert seqs == list(range(len(seqs))), (actor_id, seqs)  # no gap, no duplicate
        assert not EpisodeSpool(tmp_path / actor_id).pending()
    sent = {who: 0 for who in ("car-a", "car-b")}
    for who, _, _, n, _ in ledger["log"]:
        sent[who] += n
    assert len([1 for who, *_ in ledger["log"] if who == "car-a"]) >= 4
    assert len([1 for who, *_ in ledger["log"] if who == "car-b"]) == seen_other["episodes_sent"]
    # both actors' transitions are in the one buffer, with their ids and policy versions
    ids, counts = np.unique(provenance["actor_id"], return_counts=True)
    assert dict(zip(ids.tolist(), counts.tolist(), strict=True)) == sent
    assert (provenance["policy_version"] >= 1).all()


def test_link_down_keeps_episodes_on_disk_and_sends_them_when_it_returns(
    cluster: Any, tmp_path: pathlib.Path
) -> None:
    model = make_model()
    learner = spawn_learner(model, tmp_path / "ckpt", name="flaky-learner")
    ray.get(learner.version.remote(), timeout=120)
    ray.kill(learner, no_restart=True)  # the link is down before the run starts
    attach_learner(
        model,
        learner_name="flaky-learner",
        spool_dir=str(tmp_path / "spool"),
        first_weights_timeout_s=0.5,
        finish_timeout_s=1.0,
    )
    started = time.monotonic()
    model.learn(2 * EPISODE)
    assert time.monotonic() - started < 60  # the robot drove on
    spool = EpisodeSpool(tmp_path / "spool")
    assert spool.pending() == [0, 1]

    back = spawn_learner(model, tmp_path / "ckpt", name="flaky-learner")  # resumes its checkpoint
    link = LearnerLink("flaky-learner", "actor-0", spool)
    link.start()
    try:
        assert link.wait_committed(120)
    finally:
        link.stop()
    stats = ray.get(back.stats.remote(), timeout=30)
    ray.kill(back, no_restart=True)
    assert stats["episodes_processed"] == 2 and stats["n_updates"] == 2 * K


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((LOOPBACK, port)) == 0


@pytest.mark.slow
def test_learner_and_actor_commands_over_loopback(cluster: Any, tmp_path: pathlib.Path) -> None:
    """``sim2online learner --listen`` and ``sim2online actor --learner`` as two processes (a
    second Ray instance, held to loopback, and a Ray Client)."""
    with socket.socket() as free:
        free.bind((LOOPBACK, 0))
        port = free.getsockname()[1]
    make_model(seed=2).save(tmp_path / "prior.zip")
    command = [sys.executable, "-m", "sim2online_envs"]
    server = subprocess.Popen(
        [
            *command,
            "learner",
            "--listen",
            f"{LOOPBACK}:{port}",
            "--model",
            "prior.zip",
            "--checkpoint-dir",
            "ckpt",
            "--report-every",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while not _port_open(port) and time.monotonic() < deadline:
            assert server.poll() is None, "the learner server exited"
            time.sleep(0.5)
        outside = [
            item for item in cluster_listeners(server.pid) if not address_is_loopback(item[1])
        ]
        assert not outside, outside
        actor = subprocess.run(
            [
                *command,
                "actor",
                "SimRaceCar-v0",
                "--learner",
                f"{LOOPBACK}:{port}",
                "--model",
                "prior.zip",
                "--actor-id",
                "robot-pc",
                "--spool",
                "spool",
                "--steps",
                str(2 * EPISODE),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert actor.returncode == 0, actor.stderr[-3000:]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=180)
    ledger = final_ledger(tmp_path / "ckpt")
    seqs = [seq for who, seq, *_ in ledger["log"] if who == "robot-pc"]
    assert len(seqs) >= 2 and seqs == list(range(len(seqs)))
    assert not EpisodeSpool(tmp_path / "spool").pending()
