"""Whole-state checkpoints: resume equals no interruption; hostile files give clear errors and
leave the previous checkpoint intact."""

from __future__ import annotations

import copy
import json
import pathlib
import zipfile
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from agent_fixtures import EPISODE, make_env, offline_data
from stable_baselines3.common.noise import NormalActionNoise

from sim2online_envs.agents import (
    SAC,
    TD3,
    MixingReplayBuffer,
    load_checkpoint,
    load_replay_buffer_as_offline,
    save_checkpoint,
)
from sim2online_envs.agents.checkpoint import MANIFEST, CheckpointCallback, atomic_write


@pytest.fixture(autouse=True)
def _one_thread():
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


def build(algo: str, env: gym.Env) -> SAC | TD3:
    common = dict(
        policy_kwargs={"net_arch": [16, 16]},
        buffer_size=1000,
        batch_size=16,
        train_freq=(1, "episode"),
        gradient_steps=12,
        learning_starts=0,
        warm_start_steps=EPISODE,
        learning_rate=1e-3,
        actor_learning_rate=lambda progress: 1e-4 * progress,
        max_grad_norm=1.0,
        replay_buffer_class=MixingReplayBuffer,
        replay_buffer_kwargs={"online_fraction": (0.5, 1.0, 50), "offline_data": offline_data()},
        seed=0,
        device="cpu",
    )
    if algo == "sac":
        return SAC("MlpPolicy", env, policy_delay=3, **common)
    noise = NormalActionNoise(np.zeros(1), 0.2 * np.ones(1))
    return TD3("MlpPolicy", env, policy_delay=3, action_noise=noise, **common)


def state_of(model: SAC | TD3) -> dict[str, Any]:
    """Everything that must match: weights, targets, optimisers, temperature, counters, data."""
    state: dict[str, Any] = {f"policy.{k}": v for k, v in model.policy.state_dict().items()}
    for name in ("actor", "critic"):
        optimizer = getattr(model, name).optimizer.state_dict()
        for index, values in optimizer["state"].items():
            for key, value in values.items():
                state[f"{name}.optimizer.{index}.{key}"] = value
    if getattr(model, "log_ent_coef", None) is not None:
        state["log_ent_coef"] = model.log_ent_coef.detach()
        for index, values in model.ent_coef_optimizer.state_dict()["state"].items():
            for key, value in values.items():
                state[f"ent_coef_optimizer.{index}.{key}"] = value
    state["counters"] = (
        model.num_timesteps,
        model._n_updates,
        model.n_actor_updates,
        model._episode_num,
        model.replay_buffer.update_step,
    )
    state["buffer"] = (
        model.replay_buffer.size(),
        model.replay_buffer.observations.copy(),
        model.replay_buffer.actions.copy(),
        model.replay_buffer.offline_size,
    )
    return copy.deepcopy(state)


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], th.Tensor):
            assert th.equal(a[key], b[key]), key
        elif key == "buffer":
            assert a[key][0] == b[key][0] and a[key][3] == b[key][3]
            np.testing.assert_array_equal(a[key][1], b[key][1])
            np.testing.assert_array_equal(a[key][2], b[key][2])
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_resume_equals_no_interruption(algo: str, tmp_path: pathlib.Path) -> None:
    """A run checkpointed every episode, "crashed" after 3 of 6 episodes and resumed from the
    checkpoint ends in exactly the state of the run that went on (CPU, same seeds)."""
    episodes_before, episodes_total = 3, 6
    run = build(algo, make_env())
    snapshots = CheckpointCallback(tmp_path / "ckpt", keep=episodes_total)
    run.learn(EPISODE * episodes_total, callback=snapshots)
    uninterrupted = state_of(run)

    directory = tmp_path / "ckpt"
    manifest = json.loads((directory / MANIFEST).read_text())
    generation = episodes_before - 1  # generation g is saved after episode g + 1
    assert generation in manifest["history"]
    model_file = directory / f"model-{generation:06d}.zip"
    buffer_file = directory / f"replay_buffer-{generation:06d}.pkl"
    del run
    th.manual_seed(999)  # whatever happens to the RNGs in between is undone by load
    np.random.seed(999)
    cls = SAC if algo == "sac" else TD3
    resumed = cls.load(model_file, env=make_env(episodes_before))
    resumed.load_replay_buffer(buffer_file)
    assert resumed.num_timesteps == EPISODE * episodes_before
    assert resumed._n_updates == 12 * episodes_before  # warm start: training from episode 1
    resumed.learn(
        EPISODE * episodes_total - resumed.num_timesteps,
        reset_num_timesteps=False,
    )
    assert_same_state(uninterrupted, state_of(resumed))


def test_checkpoint_directory_round_trip(tmp_path: pathlib.Path) -> None:
    model = build("sac", make_env())
    model.learn(EPISODE * 2)
    save_checkpoint(model, tmp_path / "ckpt")
    before = state_of(model)
    restored = load_checkpoint(SAC, tmp_path / "ckpt", env=make_env(2))
    assert_same_state(before, state_of(restored))
    assert isinstance(restored.replay_buffer, MixingReplayBuffer)


def test_checkpoint_for_other_spaces_is_rejected(tmp_path: pathlib.Path) -> None:
    model = build("sac", make_env())
    model.learn(EPISODE * 2)
    save_checkpoint(model, tmp_path / "ckpt")
    other = gym.make("MountainCarContinuous-v0")
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        load_checkpoint(SAC, tmp_path / "ckpt", env=other)
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        SAC.load(tmp_path / "ckpt" / "model-000000.zip", env=other)

    # A replay buffer saved for other spaces is refused; the model keeps its own buffer.
    other_model = SAC("MlpPolicy", other, policy_kwargs={"net_arch": [8]}, learning_starts=0)
    other_model.learn(5)
    other_model.save_replay_buffer(tmp_path / "other_buffer")
    own = model.replay_buffer
    with pytest.raises(ValueError, match=r"does not fit this model: observation shape"):
        model.load_replay_buffer(tmp_path / "other_buffer")
    assert model.replay_buffer is own


def test_a_checkpoint_of_the_other_algorithm_is_named(tmp_path: pathlib.Path) -> None:
    save_checkpoint(build("td3", make_env()), tmp_path / "ckpt")
    with pytest.raises(ValueError, match="saved by TD3, not SAC"):
        load_checkpoint(SAC, tmp_path / "ckpt", env=make_env())
    with pytest.raises(ValueError, match=r"not a policy of SAC .*saved by another algorithm"):
        SAC.load(tmp_path / "ckpt" / "model-000000.zip", env=make_env())


def test_truncated_files_give_clear_errors(tmp_path: pathlib.Path) -> None:
    model = build("sac", make_env())
    model.learn(EPISODE * 2)
    save_checkpoint(model, tmp_path / "ckpt")
    manifest = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())

    model_file = tmp_path / "ckpt" / manifest["model"]["file"]
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated"):
        SAC.load(truncated)

    buffer_file = tmp_path / "ckpt" / manifest["replay_buffer"]["file"]
    truncated_buffer = tmp_path / "truncated.pkl"
    truncated_buffer.write_bytes(buffer_file.read_bytes()[:1000])
    own = model.replay_buffer
    with pytest.raises(ValueError, match="truncated, corrupt"):
        model.load_replay_buffer(truncated_buffer)
    assert model.replay_buffer is own

    # In a checkpoint directory the manifest catches it before anything is unpickled.
    intact = buffer_file.read_bytes()
    buffer_file.write_bytes(intact[:-10])
    with pytest.raises(ValueError, match="truncated or altered"):
        load_checkpoint(SAC, tmp_path / "ckpt", env=make_env())
    buffer_file.write_bytes(intact[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="SHA-256"):
        load_checkpoint(SAC, tmp_path / "ckpt", env=make_env())
    with pytest.raises(FileNotFoundError, match=r"checkpoint\.json is missing"):
        load_checkpoint(SAC, tmp_path / "nowhere")


def test_a_crash_mid_save_leaves_the_previous_checkpoint(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build("sac", make_env())
    model.learn(EPISODE * 2)
    save_checkpoint(model, tmp_path / "ckpt")
    saved = state_of(model)
    files_before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}

    model.learn(EPISODE, reset_num_timesteps=False)  # the learner moves on, then saving fails
    original_writestr = zipfile.ZipFile.writestr

    def crash(self: zipfile.ZipFile, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "_stable_baselines3_version":  # late in the archive: data already written
            raise OSError("disk full")
        original_writestr(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, tmp_path / "ckpt")
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "ckpt" / files_before_model(files_before))
    monkeypatch.undo()

    files_after = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}
    assert files_after == files_before  # no partial file, no temporary file left behind
    restored = load_checkpoint(SAC, tmp_path / "ckpt", env=make_env(2))
    assert_same_state(saved, state_of(restored))


def files_before_model(files: dict[str, bytes]) -> str:
    return next(name for name in files if name.startswith("model-"))


def test_crash_in_the_buffer_write_keeps_the_old_pair(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build("td3", make_env())
    model.learn(EPISODE * 2)
    save_checkpoint(model, tmp_path / "ckpt")
    manifest_before = (tmp_path / "ckpt" / MANIFEST).read_text()
    model.learn(EPISODE, reset_num_timesteps=False)

    def crash(path: Any) -> None:
        atomic_write(path, lambda file: (file.write(b"partial"), _raise()))

    monkeypatch.setattr(model, "save_replay_buffer", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / MANIFEST).read_text() == manifest_before
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.endswith(".tmp")]
    restored = load_checkpoint(TD3, tmp_path / "ckpt", env=make_env(2))
    assert restored.num_timesteps == EPISODE * 2


def _raise() -> None:
    raise KeyboardInterrupt  # e.g. the operator stops the run mid-save


def test_keep_several_generations(tmp_path: pathlib.Path) -> None:
    model = build("sac", make_env())
    model.learn(EPISODE)
    for _ in range(4):
        save_checkpoint(model, tmp_path / "ckpt", keep=2)
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == [
        MANIFEST,
        "model-000002.zip",
        "model-000003.zip",
        "replay_buffer-000002.pkl",
        "replay_buffer-000003.pkl",
    ]


def test_keep_holds_while_fewer_generations_exist(tmp_path: pathlib.Path) -> None:
    # The history was cut from a negative index: with keep=6 the fourth save kept only two
    # earlier generations and deleted generation 0.
    model = build("sac", make_env())
    for generation in range(4):
        save_checkpoint(model, tmp_path / "ckpt", keep=6)
        manifest = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())
        assert manifest["history"] == list(range(generation))
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.name.startswith("model-"))
    assert names == [f"model-{g:06d}.zip" for g in range(4)]


def test_an_unreadable_manifest_never_costs_the_checkpoints_on_disk(
    tmp_path: pathlib.Path,
) -> None:
    model = build("sac", make_env())
    save_checkpoint(model, tmp_path / "ckpt")
    (tmp_path / "ckpt" / MANIFEST).write_text("{ not json")  # e.g. edited by hand
    with pytest.raises(ValueError, match=r"manifest .* is corrupt"):
        load_checkpoint(SAC, tmp_path / "ckpt")
    save_checkpoint(model, tmp_path / "ckpt")  # the next save starts a new manifest ...
    manifest = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())
    assert manifest["generation"] == 1  # ... after the files on disk, not over them
    assert (tmp_path / "ckpt" / "model-000000.zip").is_file()  # and deletes nothing
    assert load_checkpoint(SAC, tmp_path / "ckpt", env=make_env()).num_timesteps == 0


def test_rng_states_are_restored(tmp_path: pathlib.Path) -> None:
    model = build("sac", make_env())
    th.manual_seed(42)
    np.random.seed(42)
    model.action_space.seed(42)
    model.save(tmp_path / "model")
    expected = (th.rand(3), np.random.rand(3), model.action_space.sample())
    th.manual_seed(0)
    np.random.seed(0)
    loaded = SAC.load(tmp_path / "model")
    got = (th.rand(3), np.random.rand(3), loaded.action_space.sample())
    assert th.equal(expected[0], got[0])
    np.testing.assert_array_equal(expected[1], got[1])
    np.testing.assert_array_equal(expected[2], got[2])


def test_the_final_state_of_learn_is_checkpointed(tmp_path: pathlib.Path) -> None:
    """Saves happen at rollout starts; the state learn() ends with (the last episode's data and
    gradient steps) is saved when it returns, not lost with the process."""
    model = build("sac", make_env())
    model.learn(EPISODE * 3, callback=CheckpointCallback(tmp_path / "ckpt", every_n_rollouts=2))
    manifest = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())
    assert manifest["num_timesteps"] == EPISODE * 3
    restored = load_checkpoint(SAC, tmp_path / "ckpt", env=make_env(3))
    assert_same_state(state_of(model), state_of(restored))


def test_offline_data_stays_out_of_the_model_file(tmp_path: pathlib.Path) -> None:
    """D0 is saved with the replay buffer. The model file used to carry the offline_data
    argument: the whole D0 as base64 in its JSON, or a path that load() re-read, failing once
    the sim data had moved."""
    sim = build("sac", make_env())
    sim.learn(EPISODE * 2)
    sim.save_replay_buffer(tmp_path / "sim_data.pkl")
    kwargs = {"online_fraction": (0.5, 1.0, 50), "offline_data": str(tmp_path / "sim_data.pkl")}
    model = SAC(
        "MlpPolicy",
        make_env(),
        policy_kwargs={"net_arch": [16]},
        batch_size=16,
        replay_buffer_class=MixingReplayBuffer,
        replay_buffer_kwargs=kwargs,
    )
    assert "offline_data" in kwargs  # the caller's dict is left alone
    d0 = model.replay_buffer.offline.arrays()
    assert model.replay_buffer.offline_size == EPISODE * 2 + 100  # its online part and its D0
    save_checkpoint(model, tmp_path / "ckpt")
    with zipfile.ZipFile(tmp_path / "ckpt" / "model-000000.zip") as archive:
        data = json.loads(archive.read("data"))
    assert "offline_data" not in json.dumps(data["replay_buffer_kwargs"])
    (tmp_path / "sim_data.pkl").unlink()
    restored = load_checkpoint(SAC, tmp_path / "ckpt", env=make_env())
    restored_d0 = restored.replay_buffer.offline.arrays()
    for name in ("observations", "next_observations", "actions", "rewards", "dones"):
        np.testing.assert_array_equal(restored_d0[name], d0[name])
    assert restored.replay_buffer.current_online_fraction() == 0.5


def test_a_plain_buffer_does_not_replace_the_mixing_buffer(tmp_path: pathlib.Path) -> None:
    plain = SAC("MlpPolicy", make_env(), policy_kwargs={"net_arch": [8]}, learning_starts=0)
    plain.learn(EPISODE)
    plain.save_replay_buffer(tmp_path / "plain")
    model = build("sac", make_env())
    own = model.replay_buffer
    with pytest.raises(ValueError, match=r"plain ReplayBuffer.*load_offline"):
        model.load_replay_buffer(tmp_path / "plain")
    assert model.replay_buffer is own and own.offline_size == 100
    assert own.load_offline(tmp_path / "plain") == EPISODE  # the way to use it as D0


@pytest.mark.parametrize(
    ("argument", "value"),
    [("policy_delay", 0), ("warm_start_steps", -5), ("max_grad_norm", 0.0)],
)
def test_load_checks_the_arguments_it_is_given(
    tmp_path: pathlib.Path, argument: str, value: Any
) -> None:
    build("sac", make_env()).save(tmp_path / "model")
    with pytest.raises(ValueError, match=argument):
        SAC.load(tmp_path / "model", env=make_env(), **{argument: value})


# -- a checkpoint's replay buffer as the next run's D0 -------------------------------------------

UNIT = (np.full(1, -1.0, np.float32), np.full(1, 1.0, np.float32))
BUFFER_SIZE = 100  # smaller than the steps taken: the saved buffer has wrapped around


def recorded_adds(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, np.ndarray]]:
    """Every transition handed to a MixingReplayBuffer from now on, in order: the reference the
    loaded D0 must equal (independent of how the buffer lays them out)."""
    log: list[dict[str, np.ndarray]] = []
    original = MixingReplayBuffer.add

    def add(self: MixingReplayBuffer, obs: Any, next_obs: Any, *rest: Any) -> None:
        action, reward, done, infos = rest
        log.append(
            {
                "observations": np.array(obs[0]),
                "next_observations": np.array(next_obs[0]),
                "actions": np.array(action[0]),
                "rewards": np.float32(reward[0]),
                "dones": np.float32(done[0]),
                "timeouts": np.float32(infos[0].get("TimeLimit.truncated", False)),
            }
        )
        original(self, obs, next_obs, *rest)

    monkeypatch.setattr(MixingReplayBuffer, "add", add)
    return log


def online_run(episode_steps: int, optimize_memory_usage: bool = False) -> SAC:
    """A tiny SAC on Pendulum, updating every step once past learning_starts, with a D0 of its
    own (100 transitions) and an online buffer of BUFFER_SIZE."""
    return SAC(
        "MlpPolicy",
        gym.make("Pendulum-v1", max_episode_steps=episode_steps),
        policy_kwargs={"net_arch": [16, 16]},
        buffer_size=BUFFER_SIZE,
        batch_size=16,
        learning_starts=50,
        optimize_memory_usage=optimize_memory_usage,
        replay_buffer_class=MixingReplayBuffer,
        replay_buffer_kwargs={
            "online_fraction": 0.5,
            "offline_data": offline_data(),
            "handle_timeout_termination": not optimize_memory_usage,
        },
        seed=0,
        device="cpu",
    )


def fresh_target(env: gym.Env | None = None) -> SAC:
    """The next run's model: a mixing buffer with an empty D0."""
    return SAC(
        "MlpPolicy",
        env if env is not None else gym.make("Pendulum-v1"),
        policy_kwargs={"net_arch": [8]},
        replay_buffer_class=MixingReplayBuffer,
        device="cpu",
    )


def assert_d0_equals(d0: dict[str, Any], transitions: list[dict[str, np.ndarray]]) -> None:
    assert len(d0["rewards"]) == len(transitions)
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        expected = np.stack([t[name] for t in transitions])
        np.testing.assert_array_equal(d0[name].reshape(expected.shape), expected, err_msg=name)


@pytest.fixture(scope="module")
def trained_checkpoint(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[pathlib.Path, list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A run of 250 steps (episodes of 60) checkpointed twice (keep=2): after 230 steps and at
    the end. Returns the directory, every transition added, and the run's D0."""
    directory = tmp_path_factory.mktemp("online") / "ckpt"
    with pytest.MonkeyPatch.context() as monkeypatch:
        adds = recorded_adds(monkeypatch)
        model = online_run(episode_steps=60)
        model.learn(230)
        save_checkpoint(model, directory, keep=2)
        model.learn(20, reset_num_timesteps=False)
        save_checkpoint(model, directory, keep=2)
    buffer = model.replay_buffer
    assert buffer.full and buffer.pos == 250 % BUFFER_SIZE  # wrapped, oldest row mid-array
    assert sum(t["timeouts"] for t in adds[-BUFFER_SIZE:]) >= 1  # episode ends inside
    return directory, adds, copy.deepcopy(buffer.offline.arrays())


def test_a_checkpoints_buffer_becomes_d0_exactly(
    trained_checkpoint: tuple[pathlib.Path, list[dict[str, np.ndarray]], dict[str, np.ndarray]],
) -> None:
    """The newest generation's valid transitions, oldest first, equal to what the run added."""
    directory, adds, saved_d0 = trained_checkpoint
    assert len(adds) == 250
    target = fresh_target()
    assert load_replay_buffer_as_offline(target, directory) == BUFFER_SIZE
    assert_d0_equals(target.replay_buffer.offline.arrays(), adds[-BUFFER_SIZE:])
    assert target.replay_buffer.online_transitions() == 0  # the online part is left alone

    # The old run's own D0 first, with include_offline; the checkpoint given by its manifest
    # (what save_checkpoint returns) or a current file works as the directory does.
    target = fresh_target()
    added = load_replay_buffer_as_offline(
        target.replay_buffer, directory / MANIFEST, include_offline=True
    )
    assert added == 100 + BUFFER_SIZE
    d0 = target.replay_buffer.offline.arrays()
    for name in ("observations", "next_observations", "actions", "rewards", "dones"):
        np.testing.assert_array_equal(d0[name][:100], saved_d0[name], err_msg=name)
    assert_d0_equals({k: v[100:] for k, v in d0.items()}, adds[-BUFFER_SIZE:])
    target = fresh_target()
    load_replay_buffer_as_offline(target, directory / "replay_buffer-000001.pkl")
    assert_d0_equals(target.replay_buffer.offline.arrays(), adds[-BUFFER_SIZE:])

    # An older generation's file has no recorded checksum: refused, not read unverified.
    with pytest.raises(ValueError, match=r"not a file of the current generation \(1\)"):
        load_replay_buffer_as_offline(target, directory / "replay_buffer-000000.pkl")


def test_optimize_memory_usage_buffer_becomes_d0_exactly(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrapped buffer with optimize_memory_usage (next observations in the next row) gives its
    BUFFER_SIZE - 1 complete transitions. One long episode: SB3's layout cannot keep a terminal
    observation there."""
    adds = recorded_adds(monkeypatch)
    model = online_run(episode_steps=1000, optimize_memory_usage=True)
    model.learn(230)
    assert model.replay_buffer.full and model.replay_buffer.pos == 30
    save_checkpoint(model, tmp_path / "ckpt")
    monkeypatch.undo()
    target = fresh_target()
    assert load_replay_buffer_as_offline(target, tmp_path / "ckpt") == BUFFER_SIZE - 1
    assert_d0_equals(target.replay_buffer.offline.arrays(), adds[-(BUFFER_SIZE - 1) :])


def test_a_corrupt_buffer_file_adds_nothing(
    trained_checkpoint: tuple[pathlib.Path, list[dict[str, np.ndarray]], dict[str, np.ndarray]],
    tmp_path: pathlib.Path,
) -> None:
    directory = tmp_path / "ckpt"
    directory.mkdir()
    for path in trained_checkpoint[0].iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    buffer_file = directory / "replay_buffer-000001.pkl"
    data = bytearray(buffer_file.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, same size
    buffer_file.write_bytes(bytes(data))
    target = fresh_target()
    with pytest.raises(ValueError, match=r"replay buffer file .*SHA-256 does not match"):
        load_replay_buffer_as_offline(target, directory)
    assert target.replay_buffer.offline_size == 0

    # The raw file, outside a checkpoint, has nothing to be verified against.
    (tmp_path / "raw.pkl").write_bytes(
        trained_checkpoint[0].joinpath(buffer_file.name).read_bytes()
    )
    with pytest.raises(ValueError, match="not in a checkpoint directory"):
        load_replay_buffer_as_offline(target, tmp_path / "raw.pkl")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_replay_buffer_as_offline(target, tmp_path / "nowhere")
    assert target.replay_buffer.offline_size == 0

    # Intact file, invalid content (a NaN reward online): refused before its valid D0 goes in.
    poisoned = online_run(episode_steps=60)
    poisoned.learn(10)
    poisoned.replay_buffer.rewards[3] = np.nan
    save_checkpoint(poisoned, tmp_path / "poisoned")
    with pytest.raises(ValueError, match="rewards contains NaN"):
        load_replay_buffer_as_offline(target, tmp_path / "poisoned", include_offline=True)
    assert target.replay_buffer.offline_size == 0


def test_a_buffer_for_other_spaces_is_refused(
    trained_checkpoint: tuple[pathlib.Path, list[dict[str, np.ndarray]], dict[str, np.ndarray]],
    tmp_path: pathlib.Path,
) -> None:
    directory = trained_checkpoint[0]
    other_obs = fresh_target(gym.make("MountainCarContinuous-v0"))
    with pytest.raises(
        ValueError,
        match=r"generation 1\) does not fit this model: observation shape: buffer \(3,\), "
        r"model \(2,\)",
    ):
        load_replay_buffer_as_offline(other_obs, directory)
    # Same shapes, other action bounds: the stored normalised actions would mean other torques.
    rescaled = fresh_target(gym.wrappers.RescaleAction(gym.make("Pendulum-v1"), UNIT[0], UNIT[1]))
    with pytest.raises(ValueError, match=r"does not fit this model: action space: buffer Box"):
        load_replay_buffer_as_offline(rescaled, directory)
    for model in (other_obs, rescaled):
        assert model.replay_buffer.offline_size == 0

    plain = SAC("MlpPolicy", gym.make("Pendulum-v1"), policy_kwargs={"net_arch": [8]})
    with pytest.raises(TypeError, match="needs a MixingReplayBuffer"):
        load_replay_buffer_as_offline(plain, directory)
    save_checkpoint(fresh_target(), tmp_path / "no_buffer", include_replay_buffer=False)
    with pytest.raises(ValueError, match="has no replay buffer"):
        load_replay_buffer_as_offline(fresh_target(), tmp_path / "no_buffer")
