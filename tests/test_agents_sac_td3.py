"""SAC/TD3 adapters: delayed actor, learning rates, warm start, background learner, hand-off."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3 as sb3
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.noise import NormalActionNoise

from sim2online_envs.agents import SAC, TD3, MixingReplayBuffer

TINY = {"net_arch": [16, 16]}  # copied per model: SB3 writes into policy_kwargs


@pytest.fixture(autouse=True)
def _one_thread():
    # Two shared cores: torch's thread pool makes tiny networks ten times slower.
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


def pendulum(steps: int = 50) -> gym.Env:
    return gym.make("Pendulum-v1", max_episode_steps=steps)


def filled(model, n: int = 200) -> None:
    """Put n random transitions in the model's replay buffer (no training); silent logger."""
    model.set_logger(configure(folder=None, format_strings=[]))
    env = model.get_env()
    obs = env.reset()
    for _ in range(n):
        action = np.array([env.action_space.sample()])
        next_obs, reward, done, infos = env.step(action)
        model.replay_buffer.add(obs, next_obs, action, reward, done, infos)
        obs = next_obs


def adam_steps(optimizer: th.optim.Optimizer) -> int:
    states = [s for s in optimizer.state.values() if "step" in s]
    return int(states[0]["step"]) if states else 0


def parameters(model) -> dict[str, th.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


# -- delayed actor and learning rates --------------------------------------------------------


@pytest.mark.parametrize(("delay", "rounds"), [(1, [12]), (4, [50]), (20, [7, 30, 26])])
def test_sac_actor_and_temperature_every_m_critic_updates(delay: int, rounds: list[int]) -> None:
    model = SAC(
        "MlpPolicy", pendulum(), policy_kwargs=dict(TINY), batch_size=16, policy_delay=delay
    )
    filled(model)
    grads_computed: list[th.Tensor] = []
    first_actor_param = next(iter(model.actor.latent_pi.parameters()))
    first_actor_param.register_hook(grads_computed.append)
    for k in rounds:
        model.train(gradient_steps=k, batch_size=16)
    total = sum(rounds)
    assert model._n_updates == total
    assert model.n_actor_updates == total // delay
    assert adam_steps(model.critic.optimizer) == total
    assert adam_steps(model.actor.optimizer) == total // delay
    assert adam_steps(model.ent_coef_optimizer) == total // delay
    # No actor gradient is computed on the skipped steps.
    assert len(grads_computed) == total // delay


def test_td3_actor_every_m_critic_updates_with_its_own_rate() -> None:
    model = TD3(
        "MlpPolicy",
        pendulum(),
        policy_kwargs=dict(TINY),
        batch_size=16,
        policy_delay=5,
        learning_rate=2e-3,
        actor_learning_rate=4e-5,
    )
    filled(model)
    model.train(gradient_steps=23, batch_size=16)
    assert model.n_actor_updates == 23 // 5
    assert adam_steps(model.actor.optimizer) == 4
    assert adam_steps(model.critic.optimizer) == 23
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(4e-5)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)


def test_sac_learning_rates_per_optimiser() -> None:
    model = SAC(
        "MlpPolicy",
        pendulum(),
        policy_kwargs=dict(TINY),
        batch_size=16,
        learning_rate=3e-4,
        actor_learning_rate=lambda progress: 1e-5 * progress,
        ent_coef_learning_rate=7e-4,
    )
    filled(model)
    model._current_progress_remaining = 0.5
    model.train(gradient_steps=2, batch_size=16)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-5)
    assert model.ent_coef_optimizer.param_groups[0]["lr"] == pytest.approx(7e-4)
    default = SAC("MlpPolicy", pendulum(), policy_kwargs=dict(TINY), learning_rate=1e-3)
    filled(default, 20)
    default.train(gradient_steps=1, batch_size=8)
    assert default.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_gradient_clipping_bounds_the_update() -> None:
    model = SAC(
        "MlpPolicy", pendulum(), policy_kwargs=dict(TINY), batch_size=16, max_grad_norm=1e-3
    )
    filled(model)
    norms = []

    def record(optimizer: th.optim.Optimizer) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(th.norm(th.stack([p.grad.norm() for p in params]))))

    original_step = model.critic.optimizer.step
    model.critic.optimizer.step = lambda *a, **k: (record(model.critic.optimizer), original_step())
    model.train(gradient_steps=5, batch_size=16)
    assert len(norms) == 5 and max(norms) <= 1e-3 * (1 + 1e-4)


@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_bad_arguments_are_named(value: float) -> None:
    with pytest.raises(ValueError, match="policy_delay"):
        SAC("MlpPolicy", pendulum(), policy_delay=value)
    with pytest.raises(ValueError, match="warm_start_steps"):
        SAC("MlpPolicy", pendulum(), warm_start_steps=value if value != 0 else -3)


# -- warm start ------------------------------------------------------------------------------


class RecordActing(BaseCallback):
    """Observations the policy acted on, the actions sent, and the actor weights used."""

    def __init__(self) -> None:
        super().__init__()
        self.observations: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.actor_hash: list[float] = []
        self.policy_hash: list[float] = []
        self.optimizer_steps: list[tuple[int, int]] = []

    def _on_step(self) -> bool:
        self.observations.append(np.array(self.model._last_obs))
        self.actions.append(np.array(self.locals["actions"]))
        self.actor_hash.append(policy_hash(self.model.actor.state_dict()))
        self.policy_hash.append(policy_hash(self.model.policy.state_dict()))
        self.optimizer_steps.append(
            (adam_steps(self.model.actor.optimizer), adam_steps(self.model.critic.optimizer))
        )
        return True


class RecordActingSlowly(RecordActing):
    """As a robot whose episodes outlast a background job: each rollout ends once the running
    job is done, so every boundary publishes (on a loaded machine one job could otherwise span
    every episode and the test would see one set of weights)."""

    def _on_rollout_end(self) -> None:
        thread = getattr(getattr(self.model, "_learner", None), "_thread", None)
        if thread is not None:
            thread.join(timeout=120)


def policy_hash(state: dict[str, th.Tensor]) -> float:
    return float(sum(v.detach().double().sum() * (i + 1) for i, v in enumerate(state.values())))


def test_sac_warm_start_acts_with_the_prior_and_does_not_train(tmp_path) -> None:
    prior = SAC("MlpPolicy", pendulum(), policy_kwargs=dict(TINY), seed=3)
    prior.save(tmp_path / "prior")
    model = SAC.load(
        tmp_path / "prior",
        env=pendulum(),
        warm_start_steps=120,
        learning_starts=100,  # must not cause uniform-random actions during warm start
        gradient_steps=3,
        train_freq=1,
        batch_size=16,
    )
    before = parameters(model)
    recorder = RecordActing()
    th.manual_seed(123)
    assert model.in_warm_start
    model.learn(120, callback=recorder)
    assert not model.in_warm_start
    # During warm start (every step of it) no parameter and no optimiser moved ...
    assert all(h == recorder.policy_hash[0] for h in recorder.policy_hash)
    assert recorder.policy_hash[0] == policy_hash(before)
    assert recorder.optimizer_steps == [(0, 0)] * 120
    # ... and training started exactly when the N*-th transition was in.
    assert model._n_updates == 3
    assert model.replay_buffer.size() == 120

    # The same actions as the prior's stochastic policy on the same observations and RNG.
    reference = SAC.load(tmp_path / "prior")
    th.manual_seed(123)
    for obs, action in zip(recorder.observations, recorder.actions, strict=True):
        expected, _ = reference.predict(obs, deterministic=False)
        np.testing.assert_allclose(action, expected, rtol=0, atol=1e-6)

    model.learn(10, reset_num_timesteps=False)
    assert model._n_updates == 33
    assert any(not th.equal(before[k], v) for k, v in parameters(model).items())


def test_td3_warm_start_uses_the_prior_with_its_exploration_noise() -> None:
    noise = NormalActionNoise(np.zeros(1), 0.3 * np.ones(1))
    model = TD3(
        "MlpPolicy",
        pendulum(),
        policy_kwargs=dict(TINY),
        action_noise=noise,
        warm_start_steps=60,
        learning_starts=1000,
        seed=1,
    )
    reference = {k: v.clone() for k, v in model.actor.state_dict().items()}
    recorder = RecordActing()
    np.random.seed(7)
    model.learn(60, callback=recorder)
    assert model._n_updates == 0
    assert all(th.equal(v, model.actor.state_dict()[k]) for k, v in reference.items())
    np.random.seed(7)
    for obs, action in zip(recorder.observations, recorder.actions, strict=True):
        deterministic, _ = model.predict(obs, deterministic=True)
        scaled = np.clip(model.policy.scale_action(deterministic) + noise(), -1, 1)
        np.testing.assert_allclose(action, model.policy.unscale_action(scaled), atol=1e-6)


# -- episodic updates, synchronous and in the background --------------------------------------


@pytest.mark.parametrize("async_updates", [False, True])
def test_episodic_updates_keep_weights_fixed_within_an_episode(async_updates: bool) -> None:
    model = SAC(
        "MlpPolicy",
        pendulum(40),
        policy_kwargs=dict(TINY),
        batch_size=16,
        train_freq=(1, "episode"),
        gradient_steps=25,
        learning_starts=0,
        policy_delay=2,
        async_updates=async_updates,
        seed=0,
    )
    recorder = RecordActingSlowly()
    model.learn(40 * 6, callback=recorder)
    hashes = np.array(recorder.actor_hash).reshape(6, 40)
    # Fixed acting weights within every episode ...
    assert np.all(hashes == hashes[:, :1])
    # ... that change between episodes once training has produced new weights (in the
    # background mode at every boundary: RecordActingSlowly's episodes outlast the job).
    assert len(set(hashes[:, 0])) >= (2 if async_updates else 6)
    # Every episode's K gradient steps were made (the last ones when learn() returns), and the
    # model holds the learner's final state.
    assert model._n_updates == 25 * 6
    assert model.n_actor_updates == 25 * 6 // 2
    assert adam_steps(model.critic.optimizer) == 25 * 6
    assert model.replay_buffer.size() == 240


def test_async_updates_with_step_boundaries_warn(caplog: pytest.LogCaptureFixture) -> None:
    # Rollout boundaries every step are not episode boundaries: the acting weights would change
    # mid-episode, which the background learner is meant to prevent.
    model = SAC(
        "MlpPolicy", pendulum(20), policy_kwargs=dict(TINY), batch_size=8, async_updates=True
    )
    with caplog.at_level("WARNING"):
        model.learn(10)
    assert "not episode boundaries" in caplog.text
    caplog.clear()
    episodic = SAC(
        "MlpPolicy",
        pendulum(20),
        policy_kwargs=dict(TINY),
        batch_size=8,
        async_updates=True,
        train_freq=(1, "episode"),
    )
    with caplog.at_level("WARNING"):
        episodic.learn(20)
    assert "not episode boundaries" not in caplog.text


def test_background_learner_failure_surfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SAC(
        "MlpPolicy",
        pendulum(20),
        policy_kwargs=dict(TINY),
        batch_size=8,
        train_freq=(1, "episode"),
        gradient_steps=5,
        learning_starts=0,
        async_updates=True,
    )

    def broken(self, gradient_steps: int, batch_size: int = 64) -> None:
        raise FloatingPointError("nan in the critic")

    monkeypatch.setattr(SAC, "train", broken)
    with pytest.raises(RuntimeError, match="background learner failed") as info:
        model.learn(100)
    assert isinstance(info.value.__cause__, FloatingPointError)


def test_mixing_buffer_schedule_follows_the_learner_and_works_with_plain_sb3() -> None:
    kwargs = dict(
        policy_kwargs=dict(TINY),
        batch_size=16,
        learning_starts=0,
        replay_buffer_class=MixingReplayBuffer,
        replay_buffer_kwargs={"online_fraction": (0.5, 1.0, 40)},
    )
    ours = SAC("MlpPolicy", pendulum(), **kwargs)
    plain = sb3.SAC("MlpPolicy", pendulum(), **kwargs)
    for model in (ours, plain):
        rng = np.random.default_rng(0)
        n = 64
        obs = rng.normal(size=(n, 3)).astype(np.float32)
        model.replay_buffer.add_offline_transitions(
            obs, obs, rng.uniform(-1, 1, (n, 1)), np.zeros(n), np.zeros(n)
        )
        model.learn(60)
        assert model.replay_buffer.update_step == model._n_updates
    assert ours.replay_buffer.current_online_fraction() == 1.0


def test_mixing_schedule_starts_with_fine_tuning_not_pretraining(tmp_path) -> None:
    prior = SAC("MlpPolicy", pendulum(), policy_kwargs=dict(TINY), batch_size=8, learning_starts=0)
    prior.learn(60)
    assert prior._n_updates > 50
    prior.save(tmp_path / "prior")
    model = SAC.load(
        tmp_path / "prior",
        env=pendulum(),
        replay_buffer_class=MixingReplayBuffer,
        replay_buffer_kwargs={"online_fraction": (0.5, 1.0, 100)},
        learning_starts=0,
        batch_size=8,
    )
    pretraining_updates = model._n_updates
    model.learn(30)
    fine_tuning_updates = model._n_updates - pretraining_updates
    assert model.replay_buffer.update_step == fine_tuning_updates
    expected = 0.5 + 0.5 * fine_tuning_updates / 100
    assert model.replay_buffer.current_online_fraction() == pytest.approx(expected)


def test_sac_with_several_envs() -> None:
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = SAC("MlpPolicy", env, policy_kwargs=dict(TINY), batch_size=16, learning_starts=20)
    model.learn(60)
    assert model.num_timesteps == 60 and model._n_updates > 0


# -- hand-off choices ------------------------------------------------------------------------


def test_reset_critic_and_fixed_temperature(tmp_path) -> None:
    model = SAC("MlpPolicy", pendulum(), policy_kwargs=dict(TINY), batch_size=16)
    filled(model)
    model.train(gradient_steps=5, batch_size=16)
    actor = {k: v.clone() for k, v in model.actor.state_dict().items()}
    q_before = [p.clone() for p in model.critic.qf0.parameters()]
    model.reset_critic()
    assert all(
        not th.equal(a, b) for a, b in zip(q_before, model.critic.qf0.parameters(), strict=True)
    )
    for q, q_target in zip(model.critic.q_networks, model.critic_target.q_networks, strict=True):
        assert all(
            th.equal(a, b) for a, b in zip(q.parameters(), q_target.parameters(), strict=True)
        )
    assert not model.critic.optimizer.state
    assert all(th.equal(v, model.actor.state_dict()[k]) for k, v in actor.items())

    model.fix_ent_coef(0.01)
    model.train(gradient_steps=4, batch_size=16)
    assert model.log_ent_coef is None and model.ent_coef_optimizer is None
    model.save(tmp_path / "fixed")
    loaded = SAC.load(tmp_path / "fixed", env=pendulum())
    assert float(loaded.ent_coef_tensor) == pytest.approx(0.01)


def test_an_sb3_prior_loads_with_the_stabilisers(tmp_path) -> None:
    prior = sb3.SAC("MlpPolicy", pendulum(), policy_kwargs=dict(TINY), seed=0)
    prior.save(tmp_path / "sb3_prior")
    model = SAC.load(
        tmp_path / "sb3_prior",
        env=pendulum(),
        policy_delay=4,
        actor_learning_rate=1e-5,
        batch_size=16,
        learning_starts=0,
        train_freq=(1, "episode"),
        gradient_steps=8,
    )
    model.learn(100)
    assert model._n_updates == 16 and model.n_actor_updates == 4
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_train_critic_leaves_the_actor_alone(algo: type) -> None:
    model = algo("MlpPolicy", pendulum(), policy_kwargs=dict(TINY), batch_size=16, policy_delay=2)
    filled(model)
    actor = {k: v.clone() for k, v in model.actor.state_dict().items()}
    critic = {k: v.clone() for k, v in model.critic.state_dict().items()}
    target = {k: v.clone() for k, v in model.critic_target.state_dict().items()}
    model.train_critic(gradient_steps=10)
    assert model._n_updates == 10 and model.n_actor_updates == 0
    assert adam_steps(model.actor.optimizer) == 0 and adam_steps(model.critic.optimizer) == 10
    assert all(th.equal(v, model.actor.state_dict()[k]) for k, v in actor.items())
    assert any(not th.equal(v, model.critic.state_dict()[k]) for k, v in critic.items())
    assert any(not th.equal(v, model.critic_target.state_dict()[k]) for k, v in target.items())
    model.train(gradient_steps=4, batch_size=16)  # back to normal: actor every 2nd update
    assert model.n_actor_updates == 2
