"""One suite over SAC, TD3, TQC and CrossQ: the additions live once (FineTuningMixin) and hold
for each algorithm: exact resume, mixing, warm start, delayed actor, background learner, bad
checkpoints, hand-off choices and the action-rate penalty."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from agent_fixtures import EPISODE, make_env, offline_data
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.noise import NormalActionNoise

from sim2online_envs.agents import (
    SAC,
    TD3,
    TQC,
    CheckpointCallback,
    CrossQ,
    MixingReplayBuffer,
    load_checkpoint,
    save_checkpoint,
)

ALGORITHMS = {"SAC": SAC, "TD3": TD3, "TQC": TQC, "CrossQ": CrossQ}
NAMES = list(ALGORITHMS)
POLICY_KWARGS: dict[str, dict[str, Any]] = {
    "SAC": {"net_arch": [16, 16]},
    "TD3": {"net_arch": [16, 16]},
    "TQC": {"net_arch": [16, 16], "n_quantiles": 5},
    "CrossQ": {"net_arch": [16, 16]},
}


def build(name: str, env: gym.Env | None = None, **overrides: Any) -> Any:
    """Every addition on: mixing, warm start, delayed actor, own actor rate, clipping."""
    settings: dict[str, Any] = dict(
        policy_kwargs=dict(POLICY_KWARGS[name]),
        buffer_size=1000,
        batch_size=16,
        train_freq=(1, "episode"),
        gradient_steps=12,
        learning_starts=0,
        warm_start_steps=EPISODE,
        learning_rate=1e-3,
        actor_learning_rate=lambda progress: 1e-4 * progress,
        max_grad_norm=1.0,
        policy_delay=3,
        replay_buffer_class=MixingReplayBuffer,
        replay_buffer_kwargs={"online_fraction": (0.5, 1.0, 50), "offline_data": offline_data()},
        seed=0,
        device="cpu",
    )
    if name == "TD3":
        settings["action_noise"] = NormalActionNoise(np.zeros(1), 0.2 * np.ones(1))
    settings.update(overrides)
    return ALGORITHMS[name]("MlpPolicy", env if env is not None else make_env(), **settings)


def plain(name: str, **overrides: Any) -> Any:
    """No addition: a tiny model for the unit-level tests."""
    settings: dict[str, Any] = dict(
        policy_kwargs=dict(POLICY_KWARGS[name]), batch_size=16, seed=0, device="cpu"
    )
    settings.update(overrides)
    return ALGORITHMS[name]("MlpPolicy", gym.make("Pendulum-v1", max_episode_steps=50), **settings)


def filled(model: Any, n: int = 200) -> Any:
    """n random transitions in the model's buffer, no training; a silent logger."""
    model.set_logger(configure(folder=None, format_strings=[]))
    env = model.get_env()
    obs = env.reset()
    for _ in range(n):
        action = np.array([env.action_space.sample()])
        next_obs, reward, done, infos = env.step(action)
        model.replay_buffer.add(obs, next_obs, action, reward, done, infos)
        obs = next_obs
    return model


def adam_steps(optimizer: th.optim.Optimizer) -> int:
    states = [s for s in optimizer.state.values() if "step" in s]
    return int(states[0]["step"]) if states else 0


def state_of(model: Any) -> dict[str, Any]:
    """Weights, targets, optimisers, temperature, counters and data: what resume must equal."""
    state: dict[str, Any] = {f"policy.{k}": v for k, v in model.policy.state_dict().items()}
    optimizers = {"actor": model.actor.optimizer, "critic": model.critic.optimizer}
    if getattr(model, "ent_coef_optimizer", None) is not None:
        optimizers["ent_coef"] = model.ent_coef_optimizer
        state["log_ent_coef"] = model.log_ent_coef.detach()
    for name, optimizer in optimizers.items():
        for index, values in optimizer.state_dict()["state"].items():
            for key, value in values.items():
                state[f"{name}.optimizer.{index}.{key}"] = value
    buffer = model.replay_buffer
    state["counters"] = (
        model.num_timesteps,
        model._n_updates,
        model.n_actor_updates,
        model._episode_num,
        getattr(buffer, "update_step", None),
        buffer.size(),
        getattr(buffer, "offline_size", None),
    )
    state["buffer.observations"] = buffer.observations.copy()
    state["buffer.actions"] = buffer.actions.copy()
    return copy.deepcopy(state)


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, th.Tensor):
            assert th.equal(value, b[key]), key
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, b[key], err_msg=key)
        else:
            assert value == b[key], key


class RecordActing(BaseCallback):
    """The policy's weights (a hash) and optimiser steps at every env step."""

    def __init__(self) -> None:
        super().__init__()
        self.policy_hash: list[float] = []
        self.actor_hash: list[float] = []
        self.optimizer_steps: list[tuple[int, int]] = []

    def _on_step(self) -> bool:
        self.policy_hash.append(weights_hash(self.model.policy.state_dict()))
        self.actor_hash.append(weights_hash(self.model.actor.state_dict()))
        self.optimizer_steps.append(
            (adam_steps(self.model.actor.optimizer), adam_steps(self.model.critic.optimizer))
        )
        return True


class RecordActingSlowly(RecordActing):
    """As a robot whose episodes outlast a job: each rollout ends once the running job is done,
    so every boundary publishes (on a loaded machine the job could otherwise span all episodes)."""

    def _on_rollout_end(self) -> None:
        learner = getattr(self.model, "_learner", None)
        thread = getattr(learner, "_thread", None)
        if thread is not None:
            thread.join(timeout=120)


def weights_hash(state: dict[str, th.Tensor]) -> float:
    return float(sum(v.detach().double().sum() * (i + 1) for i, v in enumerate(state.values())))


# -- whole-state checkpoints ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_resume_equals_no_interruption(name: str, tmp_path: pathlib.Path) -> None:
    """Checkpointed every episode, "crashed" after 2 of 4 episodes, resumed from the checkpoint
    with a fresh env: the end state equals the uninterrupted run's (CPU, same seeds)."""
    before, total = 2, 4
    run = build(name)
    run.learn(EPISODE * total, callback=CheckpointCallback(tmp_path / "ckpt", keep=total))
    uninterrupted = state_of(run)
    assert run._n_updates == 12 * total and run.n_actor_updates > 0
    del run
    th.manual_seed(999)  # undone by load
    np.random.seed(999)
    generation = before - 1
    cls = ALGORITHMS[name]
    resumed = cls.load(tmp_path / "ckpt" / f"model-{generation:06d}.zip", env=make_env(before))
    resumed.load_replay_buffer(tmp_path / "ckpt" / f"replay_buffer-{generation:06d}.pkl")
    assert resumed.num_timesteps == EPISODE * before
    resumed.learn(EPISODE * total - resumed.num_timesteps, reset_num_timesteps=False)
    assert_same_state(uninterrupted, state_of(resumed))


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_directory_round_trip(name: str, tmp_path: pathlib.Path) -> None:
    model = build(name)
    model.learn(EPISODE * 2)
    save_checkpoint(model, tmp_path / "ckpt")
    restored = load_checkpoint(ALGORITHMS[name], tmp_path / "ckpt", env=make_env(2))
    assert_same_state(state_of(model), state_of(restored))
    assert isinstance(restored.replay_buffer, MixingReplayBuffer)


@pytest.mark.parametrize("name", NAMES)
def test_bad_checkpoints_give_clear_errors(name: str, tmp_path: pathlib.Path) -> None:
    model = build(name)
    model.learn(EPISODE)
    save_checkpoint(model, tmp_path / "ckpt")
    model_file = tmp_path / "ckpt" / "model-000000.zip"
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    cls = ALGORITHMS[name]
    with pytest.raises(ValueError, match="truncated"):
        cls.load(truncated)
    buffer_file = tmp_path / "ckpt" / "replay_buffer-000000.pkl"
    (tmp_path / "truncated.pkl").write_bytes(buffer_file.read_bytes()[:1000])
    own = model.replay_buffer
    with pytest.raises(ValueError, match="truncated, corrupt"):
        model.load_replay_buffer(tmp_path / "truncated.pkl")
    assert model.replay_buffer is own
    buffer_file.write_bytes(buffer_file.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated or altered"):
        load_checkpoint(cls, tmp_path / "ckpt", env=make_env())
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        cls.load(model_file, env=gym.make("MountainCarContinuous-v0"))
    # Every other algorithm's file is named as such, through load_checkpoint and load.
    for other_name, other in ALGORITHMS.items():
        if other is cls:
            continue
        with pytest.raises(ValueError, match=f"saved by {name}, not {other_name}"):
            load_checkpoint(other, tmp_path / "ckpt", env=make_env())
        with pytest.raises(ValueError, match="saved by another algorithm"):
            other.load(model_file, env=make_env())


# -- mixing, warm start, delayed actor ----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_mixing_schedule_follows_the_gradient_steps(name: str) -> None:
    model = build(name, warm_start_steps=0)
    model.learn(EPISODE * 2)
    buffer = model.replay_buffer
    assert buffer.offline_size == 100 and buffer.update_step == model._n_updates == 24
    assert buffer.current_online_fraction() == pytest.approx(0.5 + 0.5 * 24 / 50)


@pytest.mark.parametrize("name", NAMES)
def test_warm_start_acts_with_the_policy_and_does_not_train(name: str) -> None:
    model = build(name, warm_start_steps=2 * EPISODE, learning_starts=EPISODE + 5)
    recorder = RecordActing()
    model.learn(2 * EPISODE, callback=recorder)
    assert model._n_updates == 12  # trained once the N*-th transition was in, not before
    during = recorder.policy_hash[: 2 * EPISODE]
    assert all(h == during[0] for h in during)
    assert recorder.optimizer_steps == [(0, 0)] * (2 * EPISODE)
    # learning_starts only delays training (no uniform-random actions: test_agents_sac_td3).
    assert model.replay_buffer.size() == 2 * EPISODE


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("delay", "rounds"), [(1, [7]), (4, [9, 14])])
def test_actor_every_m_critic_updates(name: str, delay: int, rounds: list[int]) -> None:
    model = filled(plain(name, policy_delay=delay))
    grads: list[th.Tensor] = []
    next(iter(model.actor.parameters())).register_hook(grads.append)
    for k in rounds:
        model.train(gradient_steps=k, batch_size=16)
    total = sum(rounds)
    assert model._n_updates == total and model.n_actor_updates == total // delay
    assert adam_steps(model.critic.optimizer) == total
    assert adam_steps(model.actor.optimizer) == total // delay
    if getattr(model, "ent_coef_optimizer", None) is not None:
        assert adam_steps(model.ent_coef_optimizer) == total // delay
    assert len(grads) == total // delay  # no actor gradient on the skipped steps


@pytest.mark.parametrize("name", NAMES)
def test_own_learning_rates(name: str) -> None:
    model = filled(plain(name, learning_rate=2e-3, actor_learning_rate=4e-5))
    model.train(gradient_steps=2, batch_size=16)
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(4e-5)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)


# -- background learner --------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_background_learner_keeps_weights_fixed_within_episodes(name: str) -> None:
    model = build(name, warm_start_steps=0, async_updates=True, policy_delay=2)
    recorder = RecordActingSlowly()
    episodes = 4
    model.learn(EPISODE * episodes, callback=recorder)
    hashes = np.array(recorder.actor_hash).reshape(episodes, EPISODE)
    assert np.all(hashes == hashes[:, :1])
    assert len(set(hashes[:, 0])) >= 2
    assert model._n_updates == 12 * episodes
    assert model.n_actor_updates == 12 * episodes // 2
    assert adam_steps(model.critic.optimizer) == 12 * episodes


# -- hand-off choices ----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_train_critic_and_reset_critic(name: str) -> None:
    model = filled(plain(name, policy_delay=2))
    actor = {k: v.clone() for k, v in model.actor.state_dict().items()}
    critic = {k: v.clone() for k, v in model.critic.state_dict().items()}
    model.train_critic(gradient_steps=6)
    assert model._n_updates == 6 and model.n_actor_updates == 0
    assert all(th.equal(v, model.actor.state_dict()[k]) for k, v in actor.items())
    assert any(not th.equal(v, model.critic.state_dict()[k]) for k, v in critic.items())
    model.reset_critic()
    assert not model.critic.optimizer.state
    target = getattr(model, "critic_target", None)
    if target is not None:
        for key, value in model.critic.state_dict().items():
            assert th.equal(value, target.state_dict()[key]), key
    model.train(gradient_steps=4, batch_size=16)  # back to normal: actor every 2nd update
    assert model.n_actor_updates == 2


# -- action-rate penalty -------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_action_rate_penalty_is_the_mean_squared_change_of_the_actions(name: str) -> None:
    model = filled(plain(name, action_rate_penalty=0.5))
    data = model.replay_buffer.sample(16)
    model.policy.set_training_mode(False)
    with th.no_grad():
        loss = model._action_rate_loss(data.observations, data.next_observations)
        first = model.policy._predict(data.observations, deterministic=True)
        second = model.policy._predict(data.next_observations, deterministic=True)
    expected = 0.5 * (second - first).pow(2).sum(dim=1).mean()
    assert th.allclose(loss, expected, rtol=1e-6, atol=0)
    assert plain(name)._action_rate_loss(data.observations, data.next_observations) is None


@pytest.mark.parametrize("name", NAMES)
def test_action_rate_penalty_enters_the_actor_update_only(name: str) -> None:
    """Same seed with and without the penalty: the critic's first step is the same, the actor's
    is not, and the penalty is logged."""
    states = []
    for penalty in (0.0, 5.0):
        model = filled(plain(name, action_rate_penalty=penalty, policy_delay=1))
        th.manual_seed(0)
        model.replay_buffer.sample  # noqa: B018  (the same buffer: the same seeds)
        model.train(gradient_steps=1, batch_size=16)
        states.append(
            (
                {k: v.clone() for k, v in model.critic.state_dict().items()},
                {k: v.clone() for k, v in model.actor.state_dict().items()},
                dict(model.logger.name_to_value),
            )
        )
    (critic0, actor0, log0), (critic1, actor1, log1) = states
    assert all(th.equal(v, critic1[k]) for k, v in critic0.items())
    assert any(not th.equal(v, actor1[k]) for k, v in actor0.items())
    assert "train/action_rate_loss" in log1 and "train/action_rate_loss" not in log0


def test_action_rate_penalty_smooths_the_policy() -> None:
    """Trained only by the penalty (actor loss of the critic made zero), the policy's action
    change between consecutive observations shrinks."""
    model = filled(plain("TD3", action_rate_penalty=1.0, policy_delay=1, learning_rate=1e-2))
    model.critic.q1_forward = lambda obs, actions: 0.0 * actions.sum(dim=1, keepdim=True)
    data = model.replay_buffer.sample(64)
    with th.no_grad():
        before = model._action_rate_loss(data.observations, data.next_observations)
    model.train(gradient_steps=60, batch_size=64)
    with th.no_grad():
        after = model._action_rate_loss(data.observations, data.next_observations)
    assert after < 0.5 * before


def test_bad_action_rate_penalty_is_named() -> None:
    with pytest.raises(ValueError, match="action_rate_penalty"):
        plain("SAC", action_rate_penalty=-1.0)


@pytest.mark.parametrize("name", NAMES)
def test_an_sb3_prior_loads_with_the_stabilisers(name: str, tmp_path: pathlib.Path) -> None:
    import sb3_contrib
    import stable_baselines3 as sb3

    original = getattr(sb3, name, None) or getattr(sb3_contrib, name)
    prior = original(
        "MlpPolicy", gym.make("Pendulum-v1"), policy_kwargs=dict(POLICY_KWARGS[name]), seed=0
    )
    prior.save(tmp_path / "prior")
    model = ALGORITHMS[name].load(
        tmp_path / "prior",
        env=make_env(),
        policy_delay=4,
        actor_learning_rate=1e-5,
        batch_size=16,
        learning_starts=0,
        train_freq=(1, "episode"),
        gradient_steps=8,
    )
    for key, value in prior.policy.state_dict().items():
        assert th.equal(value, model.policy.state_dict()[key]), key
    model.learn(2 * EPISODE)
    assert model._n_updates == 16 and model.n_actor_updates == 4
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
