"""paper_recipe / vanilla_recipe: the study's numbers, usable as SAC arguments."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer

from sim2online_envs.agents import SAC, BROCritic, MixingReplayBuffer, paper_recipe, vanilla_recipe
from sim2online_envs.agents.policies import MultiInputEncoder


class PandaLikeSpaces(gym.Env):
    """The Panda's spaces (64×64 grayscale image, tip, gripper), without any physics."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    observation_space = spaces.Dict(
        {
            "pixels": spaces.Box(0, 255, (64, 64, 1), np.uint8),
            "tip": spaces.Box(-np.inf, np.inf, (3,), np.float32),
            "gripper": spaces.Box(0.0, 1.0, (1,), np.float32),
        }
    )
    action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray):
        return self.observation_space.sample(), 0.0, False, False, {}


@pytest.mark.parametrize(
    ("robot", "k", "batch", "gamma", "mixing", "warm"),
    [
        ("panda", 1250, 128, 0.95, 10_000, 5000),
        ("go1", 1250, 512, 0.95, 15_000, 5000),
        ("racecar", 2500, 256, 0.99, 10_000, 1250),
    ],
)
def test_paper_recipe_numbers(
    robot: str, k: int, batch: int, gamma: float, mixing: int, warm: int
) -> None:
    recipe = paper_recipe(robot)
    assert recipe["gradient_steps"] == k and recipe["train_freq"] == (1, "episode")
    assert recipe["batch_size"] == batch and recipe["gamma"] == gamma
    assert recipe["policy_delay"] == 20
    assert (recipe["actor_learning_rate"], recipe["learning_rate"]) == (1e-5, 3e-4)
    assert recipe["warm_start_steps"] == warm and recipe["learning_starts"] == 0
    assert recipe["replay_buffer_class"] is MixingReplayBuffer
    assert recipe["replay_buffer_kwargs"]["online_fraction"] == (0.5, 1.0, mixing)
    assert recipe["max_grad_norm"] == 1.0 and recipe["tau"] == 0.005
    policy = recipe["policy_kwargs"]
    assert (policy["critic_arch"], policy["critic_width"], policy["critic_blocks"]) == (
        "bro",
        512,
        2,
    )
    assert policy["optimizer_class"] is th.optim.AdamW
    assert ("image_augmentation" in policy) == (robot == "panda")


def test_paper_recipe_builds_the_racecar_agent() -> None:
    import sim2online_envs  # noqa: F401  (registers the ids)

    model = SAC("MlpPolicy", "SimRaceCar-v0", **paper_recipe("racecar", buffer_size=1000))
    assert isinstance(model.critic, BROCritic)
    assert isinstance(model.replay_buffer, MixingReplayBuffer)
    assert isinstance(model.critic.optimizer, th.optim.AdamW)
    assert model.actor.optimizer.param_groups[0]["lr"] == 1e-5


def test_paper_recipe_builds_the_panda_vision_agent() -> None:
    recipe = paper_recipe("panda", buffer_size=100)
    model = SAC("MultiInputPolicy", PandaLikeSpaces(), **recipe)
    assert isinstance(model.actor.features_extractor, MultiInputEncoder)
    assert model.critic.features_extractor is model.actor.features_extractor
    assert model.policy.image_augmentation == "random_shift"
    assert model.replay_buffer.observations["pixels"].dtype == np.uint8


def test_fine_tune_a_prior_with_the_recipe(tmp_path) -> None:
    env = gym.make("Pendulum-v1")
    recipe = paper_recipe("racecar", buffer_size=1000)
    recipe["policy_kwargs"].update(critic_width=16, net_arch=[16])
    prior = SAC("MlpPolicy", env, **recipe)
    prior.save(tmp_path / "prior")
    offline = {
        "observations": np.zeros((10, 3)),
        "next_observations": np.zeros((10, 3)),
        "actions": np.zeros((10, 1)),
        "rewards": np.zeros(10),
        "dones": np.zeros(10),
    }
    model = SAC.load(
        tmp_path / "prior",
        env=env,
        **paper_recipe("racecar", offline_data=offline, buffer_size=1000, for_load=True),
    )
    assert model.policy_delay == 20 and model.warm_start_steps == 1250
    assert model.replay_buffer.offline_size == 10


def test_vanilla_recipe_is_the_unstable_baseline() -> None:
    recipe = vanilla_recipe()
    model = SAC("MlpPolicy", gym.make("Pendulum-v1"), buffer_size=100, **recipe)
    assert model.policy_delay == 1 and model.warm_start_steps == 0
    assert type(model.replay_buffer) is ReplayBuffer
    assert (
        model.actor.optimizer.param_groups[0]["lr"]
        == model.critic.optimizer.param_groups[0]["lr"]
        == pytest.approx(3e-4)
    )
    with_robot = vanilla_recipe("go1")
    assert with_robot["gradient_steps"] == 1250 and with_robot["batch_size"] == 512
    assert "policy_kwargs" not in vanilla_recipe("go1", for_load=True)


def test_unknown_robot() -> None:
    with pytest.raises(ValueError, match=r"robot must be one of \['go1', 'panda', 'racecar'\]"):
        paper_recipe("spot")


@pytest.mark.parametrize("algorithm", ["SAC", "TD3", "TQC", "CrossQ"])
def test_paper_recipe_builds_every_algorithm(algorithm: str) -> None:
    from sim2online_envs import agents

    recipe = paper_recipe("racecar", algorithm=algorithm, buffer_size=1000)
    recipe.update(gradient_steps=3, batch_size=8, warm_start_steps=20)
    model = getattr(agents, algorithm)(
        "MlpPolicy", gym.make("Pendulum-v1", max_episode_steps=20), **recipe
    )
    assert model.policy_delay == 20 and model.max_grad_norm == 1.0
    assert isinstance(model.replay_buffer, MixingReplayBuffer)
    assert model.actor.optimizer.param_groups[0]["lr"] == 1e-5
    assert isinstance(model.critic.optimizer, th.optim.AdamW)
    model.learn(40)
    assert model._n_updates == 2 * 3  # after each episode, the warm start included
    if algorithm == "SAC":
        assert isinstance(model.critic, BROCritic)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        paper_recipe("racecar", algorithm="PPO")


def test_crossq_has_no_image_recipe() -> None:
    with pytest.raises(ValueError, match="CrossQ has no image policy"):
        paper_recipe("panda", algorithm="CrossQ")
