"""The other methods' defining behaviours: ResFiT's residual, SGFT's shaping, batch online RL's
Q-guided selection and correlated noise, n-step mixing, critic warm-up, and their recipes."""

from __future__ import annotations

import pathlib
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sim2online_envs.agents import (
    METHODS,
    SAC,
    ColoredActionNoise,
    NStepMixingReplayBuffer,
    ResidualSACActor,
    ou_noise,
    q_guided_actions,
    recipe,
)


def pendulum() -> gym.Env:
    return gym.make("Pendulum-v1", max_episode_steps=50)


def small(**kwargs: Any) -> dict[str, Any]:
    settings: dict[str, Any] = dict(
        policy_kwargs={"net_arch": [16, 16]},
        batch_size=16,
        learning_starts=40,
        seed=0,
        device="cpu",
    )
    settings.update(kwargs)
    return settings


@pytest.fixture(scope="module")
def prior(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    model = SAC("MlpPolicy", pendulum(), **small())
    model.learn(120)
    path = tmp_path_factory.mktemp("prior") / "prior.zip"
    model.save(path)
    return path


def observations(n: int = 32) -> np.ndarray:
    space = pendulum().observation_space
    space.seed(1)
    return np.stack([space.sample() for _ in range(n)])


# -- ResFiT -------------------------------------------------------------------------------------


def test_residual_with_zero_last_layer_reproduces_the_base_policy(prior: pathlib.Path) -> None:
    obs = observations()
    base = SAC.load(prior, env=pendulum())
    model = SAC.load(prior, env=pendulum(), residual_scale=0.1)
    assert model.hand_off()
    assert isinstance(model.actor, ResidualSACActor)
    np.testing.assert_array_equal(
        model.predict(obs, deterministic=True)[0], base.predict(obs, deterministic=True)[0]
    )
    # Sampled actions stay within scale of the base action (in [-1, 1] units; Pendulum ×2).
    sampled = model.predict(obs, deterministic=False)[0]
    gap = np.abs(sampled - base.predict(obs, deterministic=True)[0]) / 2.0
    assert gap.max() <= 0.1 + 1e-6 and gap.max() > 0


def test_residual_trains_only_the_residual_and_round_trips(
    prior: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    model = SAC.load(prior, env=pendulum(), residual_scale=0.1)
    model.hand_off()
    frozen = {k: v.clone() for k, v in model.actor.base.state_dict().items()}
    optimised = {id(p) for group in model.actor.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in model.actor.base.parameters())
    mu_before = model.actor.mu.weight.clone()
    model.learn(80, reset_num_timesteps=False)
    assert all(th.equal(frozen[k], v) for k, v in model.actor.base.state_dict().items())
    assert not th.equal(mu_before, model.actor.mu.weight)
    model.save(tmp_path / "residual.zip")
    loaded = SAC.load(tmp_path / "residual.zip", env=pendulum())
    assert isinstance(loaded.actor, ResidualSACActor)
    assert not loaded.hand_off()  # applied before the save: not repeated on resume
    obs = observations()
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )


def test_critic_warmup_keeps_the_actor_still(prior: pathlib.Path) -> None:
    model = SAC.load(prior, env=pendulum(), critic_warmup_steps=30)
    actor_before = {k: v.clone() for k, v in model.actor.state_dict().items()}
    updates = model.n_actor_updates
    model.learn(30, reset_num_timesteps=False)  # 30 gradient steps, all critic-only
    assert model.n_actor_updates == updates
    assert all(th.equal(actor_before[k], v) for k, v in model.actor.state_dict().items())
    model.learn(10, reset_num_timesteps=False)
    assert model.n_actor_updates == updates + 10


# -- SGFT ---------------------------------------------------------------------------------------


def pendulum_reward(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    theta = np.arctan2(obs[:, 1], obs[:, 0])
    torque = np.clip(2.0 * action[:, 0], -2.0, 2.0)
    return -(theta**2 + 0.1 * obs[:, 2] ** 2 + 0.001 * torque**2)


def test_sgft_stores_shaped_rewards_as_terminals(prior: pathlib.Path) -> None:
    original = SAC.load(prior, env=pendulum())
    model = SAC.load(
        prior,
        env=pendulum(),
        value_shaping=True,
        reset_critic_at_hand_off=True,
        ent_coef_at_hand_off=0.01,
        warm_start_steps=100,  # no gradient step: the guide and buffer alone
    )
    model.learn(100)
    assert float(model.ent_coef_tensor) == pytest.approx(0.01) and model.log_ent_coef is None
    # The critic was re-initialised; the guide kept the prior's.
    assert not th.equal(
        model.critic.q_networks[0][0].weight, original.critic.q_networks[0][0].weight
    )
    buffer = model.replay_buffer
    obs, next_obs = buffer.observations[:100, 0], buffer.next_observations[:100, 0]
    actions, rewards = buffer.actions[:100, 0], buffer.rewards[:100, 0]

    def value(x: np.ndarray) -> np.ndarray:
        with th.no_grad():
            t = th.as_tensor(x)
            return original.critic_value(t, original.actor(t, deterministic=True)).numpy()

    expected = pendulum_reward(obs, actions) + 0.99 * value(next_obs) - value(obs)
    np.testing.assert_allclose(rewards, expected, rtol=1e-4, atol=1e-4)
    assert buffer.dones[:100].all() and not buffer.timeouts[:100].any()


# -- batch online RL ----------------------------------------------------------------------------


def test_q_guided_selection_picks_the_argmax_of_the_sampled_set(prior: pathlib.Path) -> None:
    model = SAC.load(prior, env=pendulum())
    obs = observations(4)
    th.manual_seed(7)
    chosen = q_guided_actions(model, obs, 16)
    th.manual_seed(7)
    with th.no_grad():
        repeated = th.as_tensor(obs).repeat_interleave(16, dim=0)
        samples = model.actor(repeated, deterministic=False)
        q = model.critic_value(repeated, samples).reshape(4, 16)
    best = samples.reshape(4, 16, -1)[th.arange(4), q.argmax(dim=1)].numpy()
    np.testing.assert_array_equal(chosen, best)
    # Better than a single sample on average, by construction.
    assert (q.max(dim=1).values >= q[:, 0]).all()


def test_collection_executes_q_guided_actions(prior: pathlib.Path) -> None:
    model = SAC.load(prior, env=pendulum(), action_selection_samples=8)
    model.learn(5, reset_num_timesteps=False)
    calls: list[int] = []
    import sim2online_envs.agents.methods as methods

    real = methods.q_guided_actions

    def spy(m: Any, o: Any, n: int) -> np.ndarray:
        calls.append(n)
        return real(m, o, n)

    methods.q_guided_actions = spy
    try:
        model.learn(5, reset_num_timesteps=False)
    finally:
        methods.q_guided_actions = real
    assert calls == [8] * 5


def lag1_autocorrelation(x: np.ndarray) -> float:
    x = x - x.mean()
    return float(np.dot(x[:-1], x[1:]) / np.dot(x, x))


def test_ou_noise_is_temporally_correlated() -> None:
    np.random.seed(0)
    noise = ou_noise(1, theta=5.0, sigma=0.05, dt=1 / 60)
    x = np.array([noise()[0] for _ in range(20_000)])
    # OU: lag-1 autocorrelation 1 − θ·dt; white noise: 0.
    assert lag1_autocorrelation(x) == pytest.approx(1 - 5.0 / 60, abs=0.02)
    assert x.std() == pytest.approx(0.05 / np.sqrt(2 * 5.0), rel=0.15)


@pytest.mark.parametrize(("beta", "low", "high"), [(0.0, -0.05, 0.05), (1.0, 0.5, 1.0)])
def test_colored_noise_autocorrelation(beta: float, low: float, high: float) -> None:
    noise = ColoredActionNoise(2, beta=beta, sigma=0.2, seq_len=4000, rng=np.random.default_rng(0))
    x = np.stack([noise() for _ in range(4000)])
    assert low < lag1_autocorrelation(x[:, 0]) < high
    assert x.std() == pytest.approx(0.2, rel=0.05)


# -- n-step mixing ------------------------------------------------------------------------------


def test_nstep_mixing_buffer_discounts() -> None:
    env = pendulum()
    buffer = NStepMixingReplayBuffer(
        100,
        env.observation_space,
        env.action_space,
        device="cpu",
        n_steps=3,
        gamma=0.9,
        online_fraction=0.5,
    )
    obs = np.zeros((1, 3), np.float32)
    for t in range(10):
        buffer.add(
            obs + t, obs + t + 1, np.zeros((1, 1)), np.array([1.0]), np.array([t == 9]), [{}]
        )
    buffer.add_offline_transitions(
        observations=np.zeros((5, 3), np.float32),
        next_observations=np.zeros((5, 3), np.float32),
        actions=np.zeros((5, 1), np.float32),
        rewards=np.full(5, 7.0, np.float32),
        dones=np.zeros(5, np.float32),
    )
    sample = buffer.sample(64)
    rewards, discounts = sample.rewards[:, 0].numpy(), sample.discounts[:, 0].numpy()
    offline = rewards == 7.0
    assert offline.any() and (~offline).any()
    np.testing.assert_allclose(discounts[offline], 0.9)
    # Online: 3-step returns 1 + .9 + .81 with discount .9³, shorter at the episode's end.
    full = np.isclose(rewards, 2.71)
    assert full.any()
    np.testing.assert_allclose(discounts[full], 0.729, rtol=1e-6)


# -- recipes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_every_method_recipe_builds_a_sac(method: str) -> None:
    env = gym.make("SimRaceCar-v0")
    kwargs = recipe("racecar", method, buffer_size=1000)
    if kwargs.get("policy_kwargs"):
        kwargs["policy_kwargs"] = {**kwargs["policy_kwargs"], "critic_width": 16}
    model = SAC("MlpPolicy", env, device="cpu", **kwargs)
    assert model.gamma == kwargs["gamma"]
    env.close()


def test_recipe_paper_is_paper_recipe_and_rejects_unknown() -> None:
    from sim2online_envs.agents import paper_recipe

    assert recipe("racecar") == paper_recipe("racecar")
    with pytest.raises(ValueError, match="method"):
        recipe("racecar", "dreamer")
    with pytest.raises(ValueError, match="SAC"):
        recipe("racecar", "resfit", algorithm="TD3")
