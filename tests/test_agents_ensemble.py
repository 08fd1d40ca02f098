"""REDQ-style critic ensemble: N LayerNorm critics, the target's minimum over a random subset of
M, the actor's mean over all N."""

from __future__ import annotations

import pathlib

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from sim2online_envs.agents import SAC, LayerNormCritic

N, M, BATCH = 5, 2, 4


def ensemble(**kwargs) -> SAC:
    return SAC(
        "MlpPolicy",
        gym.make("Pendulum-v1", max_episode_steps=50),
        policy_kwargs={"net_arch": [16, 16], "n_critics": N, "critic_layer_norm": True},
        target_subset_size=M,
        batch_size=16,
        learning_starts=20,
        seed=0,
        device="cpu",
        **kwargs,
    )


def constant_critics(batch: int = BATCH):
    """Stands in for a critic: critic i answers 10 * i for every (s, a)."""
    return lambda obs, actions: tuple(th.full((batch, 1), 10.0 * i) for i in range(N))


def batch_of(rewards: float = 1.0, dones: float = 0.0) -> ReplayBufferSamples:
    zeros = th.zeros(BATCH, 3)
    return ReplayBufferSamples(
        observations=zeros,
        actions=th.zeros(BATCH, 1),
        next_observations=zeros,
        dones=th.full((BATCH, 1), dones),
        rewards=th.full((BATCH, 1), rewards),
    )


def test_the_critics_are_n_layer_norm_networks() -> None:
    model = ensemble()
    for critic in (model.critic, model.critic_target):
        assert isinstance(critic, LayerNormCritic) and len(critic.q_networks) == N
        for q_net in critic.q_networks:
            norms = [m for m in q_net.modules() if isinstance(m, th.nn.LayerNorm)]
            assert [n.normalized_shape for n in norms] == [(16,), (16,)]


def test_the_target_is_the_minimum_over_a_random_subset_of_m_critics() -> None:
    model = ensemble(gamma=0.5)
    model.critic_target = constant_critics()
    next_log_prob = th.full((BATCH, 1), 0.25)
    ent_coef = th.tensor(2.0)
    minima = set()
    for seed in range(30):
        th.manual_seed(seed)
        subset = th.randperm(N)[:M]  # what the target draws from the same RNG state
        th.manual_seed(seed)
        target = model._critic_target_values(
            batch_of(), None, th.zeros(BATCH, 1), next_log_prob, ent_coef, model.gamma
        )
        expected = 1.0 + 0.5 * (10.0 * float(subset.min()) - 2.0 * 0.25)
        assert th.allclose(target, th.full((BATCH, 1), expected))
        minima.add(float(subset.min()))
    # A subset of M = 2 of 5 can have any minimum but the largest critic: all of them occur.
    assert minima == {0.0, 1.0, 2.0, 3.0}
    # Terminal transitions: the reward only.
    done = model._critic_target_values(
        batch_of(dones=1.0), None, th.zeros(BATCH, 1), next_log_prob, ent_coef, model.gamma
    )
    assert th.equal(done, th.ones(BATCH, 1))


def test_the_actor_maximises_the_mean_of_all_critics() -> None:
    model = ensemble()
    model.critic = constant_critics()
    q = model._actor_q(None, th.zeros(BATCH, 1))
    assert th.equal(q, th.full((BATCH, 1), 10.0 * (N - 1) / 2))
    single = SAC("MlpPolicy", gym.make("Pendulum-v1"), policy_kwargs={"n_critics": N})
    single.critic = constant_critics()
    assert th.equal(single._actor_q(None, th.zeros(BATCH, 1)), th.zeros(BATCH, 1))  # SB3: min


def test_an_ensemble_trains_saves_and_resumes(tmp_path: pathlib.Path) -> None:
    model = ensemble(gradient_steps=2)
    model.learn(60)
    assert model._n_updates == 2 * 40
    model.save(tmp_path / "redq")
    loaded = SAC.load(tmp_path / "redq", env=gym.make("Pendulum-v1", max_episode_steps=50))
    assert loaded.target_subset_size == M and len(loaded.critic.q_networks) == N
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, loaded.policy.state_dict()[key]), key
    obs = np.zeros((1, 3), np.float32)
    np.testing.assert_array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )


@pytest.mark.parametrize("size", [0, N + 1, 1.5])
def test_a_bad_subset_size_is_named(size: float) -> None:
    with pytest.raises(ValueError, match="target_subset_size"):
        SAC(
            "MlpPolicy",
            gym.make("Pendulum-v1"),
            policy_kwargs={"n_critics": N},
            target_subset_size=size,
        )
