"""BRO critic, DrQ random shift, and an image encoder trained by the critic loss only."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.logger import configure

from sim2online_envs.agents import SAC, TD3, BROCritic, ImageEncoder, MultiInputEncoder
from sim2online_envs.agents.policies import BROBlock, random_shift


@pytest.fixture(autouse=True)
def _one_thread():
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


class TinyImageEnv(gym.Env):
    """A 16×16 grayscale (channel-last, uint8) view of a dot to steer to the centre, plus the
    dot's position: a Dict-image env small enough for unit tests."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, max_steps: int = 20):
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (16, 16, 1), np.uint8),
                "position": spaces.Box(-1.0, 1.0, (2,), np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.max_steps = max_steps
        self._position = np.zeros(2)
        self._steps = 0

    def _obs(self) -> dict[str, np.ndarray]:
        image = np.zeros((16, 16, 1), np.uint8)
        row, col = ((self._position + 1) * 7.5).round().astype(int)
        image[row, col, 0] = 255
        return {"image": image, "position": self._position.astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._position = self.np_random.uniform(-1, 1, 2)
        self._steps = 0
        return self._obs(), {}

    def step(self, action: np.ndarray):
        self._position = np.clip(self._position + 0.2 * np.asarray(action), -1, 1)
        self._steps += 1
        reward = -float(np.linalg.norm(self._position))
        return self._obs(), reward, False, self._steps >= self.max_steps, {}


IMAGE_POLICY = {
    "net_arch": {"pi": [16], "qf": [16]},
    "features_extractor_class": MultiInputEncoder,
    "features_extractor_kwargs": {"image_features_dim": 8, "channels": (4, 8)},
    "share_features_extractor": True,
    "image_augmentation": "random_shift",
}


def image_sac(**kwargs: Any) -> SAC:
    policy_kwargs = {**IMAGE_POLICY, **kwargs.pop("policy_kwargs", {})}
    model = SAC(
        "MultiInputPolicy",
        TinyImageEnv(),
        policy_kwargs=policy_kwargs,
        batch_size=8,
        learning_starts=0,
        seed=0,
        **kwargs,
    )
    model.set_logger(configure(folder=None, format_strings=[]))
    return model


def encoder_parameters(module: th.nn.Module) -> list[th.Tensor]:
    return [p.detach().clone() for p in module.features_extractor.parameters()]


# -- DrQ random shift ------------------------------------------------------------------------


def reference_shift(image: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    """Replicate-pad by ``pad`` then crop the original size at offset (pad + dy, pad + dx)."""
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    h, w = image.shape[1:]
    return padded[:, pad + dy : pad + dy + h, pad + dx : pad + dx + w]


@pytest.mark.parametrize("channels_first", [True, False])
def test_random_shift_is_a_replicate_padded_crop(channels_first: bool) -> None:
    th.manual_seed(0)
    images = th.randint(0, 256, (32, 2, 12, 10), dtype=th.uint8)
    batch = images if channels_first else images.permute(0, 2, 3, 1)
    shifted = random_shift(batch, pad=4, channels_first=channels_first)
    assert shifted.dtype == th.uint8 and shifted.shape == batch.shape
    if not channels_first:
        shifted = shifted.permute(0, 3, 1, 2)
    offsets = set()
    for original, out in zip(images.numpy(), shifted.numpy(), strict=True):
        matches = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if np.array_equal(out, reference_shift(original, dy, dx, 4))
        ]
        assert matches, "output is not a shifted crop of its input"
        offsets.add(matches[0])
    assert len(offsets) > 5  # each image gets its own random offset
    assert th.equal(random_shift(images, pad=0), images)


# -- BRO critic ------------------------------------------------------------------------------


def test_bro_critic_width_depth_and_residual_blocks() -> None:
    model = SAC(
        "MlpPolicy",
        gym.make("Pendulum-v1"),
        policy_kwargs={"critic_arch": "bro", "critic_width": 32, "critic_blocks": 3},
    )
    critic = model.critic
    assert isinstance(critic, BROCritic) and isinstance(model.critic_target, BROCritic)
    assert len(critic.q_networks) == 2
    q_net = critic.q_networks[0]
    blocks = [m for m in q_net if isinstance(m, BROBlock)]
    assert len(blocks) == 3
    assert q_net[0].out_features == 32 and isinstance(q_net[1], th.nn.LayerNorm)
    assert sum(isinstance(m, th.nn.LayerNorm) for m in q_net.modules()) == 1 + 2 * 3
    # Residual: with the block's last LayerNorm zeroed, the block is the identity.
    block = blocks[0]
    with th.no_grad():
        block.net[-1].weight.zero_()
        block.net[-1].bias.zero_()
    x = th.randn(5, 32)
    assert th.equal(block(x), x)


def test_bro_critic_trains_and_loads(tmp_path) -> None:
    model = TD3(
        "MlpPolicy",
        gym.make("Pendulum-v1", max_episode_steps=20),
        policy_kwargs={"net_arch": [8], "critic_arch": "bro", "critic_width": 16},
        learning_starts=0,
        batch_size=8,
    )
    model.learn(40)
    model.save(tmp_path / "bro")
    loaded = TD3.load(tmp_path / "bro")
    assert isinstance(loaded.critic, BROCritic)
    for a, b in zip(model.critic.parameters(), loaded.critic.parameters(), strict=True):
        assert th.equal(a, b)


@pytest.mark.parametrize(
    ("policy_kwargs", "match"),
    [
        ({"critic_arch": "transformer"}, "critic_arch must be one of"),
        ({"image_augmentation": "random_shift"}, "needs image observations"),
        ({"image_augmentation": "cutout"}, "image_augmentation must be one of"),
        ({"critic_arch": "bro", "critic_width": 0}, "critic_width >= 1"),
    ],
)
def test_bad_policy_kwargs_are_named(policy_kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SAC("MlpPolicy", gym.make("Pendulum-v1"), policy_kwargs=policy_kwargs)


# -- vision: encoder trained by the critic only ----------------------------------------------


def test_image_encoder_matches_the_study() -> None:
    space = spaces.Box(0, 255, (1, 64, 64), np.uint8)
    encoder = ImageEncoder(space)
    convs = [m for m in encoder.cnn if isinstance(m, th.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert all(c.stride == (2, 2) for c in convs)
    assert isinstance(encoder.head[1], th.nn.LayerNorm) and isinstance(encoder.head[2], th.nn.Tanh)
    features = encoder(th.rand(3, 1, 64, 64))
    assert features.shape == (3, 128) and features.abs().max() <= 1.0
    with pytest.raises(ValueError, match="channel-first"):
        ImageEncoder(spaces.Box(0, 255, (64, 64, 1), np.uint8))


def test_shared_encoder_is_trained_by_the_critic_loss_only() -> None:
    model = image_sac(policy_delay=1)
    encoder = model.actor.features_extractor
    assert model.critic.features_extractor is encoder
    assert model.critic_target.features_extractor is not encoder
    encoder_ids = {id(p) for p in encoder.parameters()}
    actor_ids = {id(p) for g in model.actor.optimizer.param_groups for p in g["params"]}
    critic_ids = {id(p) for g in model.critic.optimizer.param_groups for p in g["params"]}
    assert not encoder_ids & actor_ids and encoder_ids <= critic_ids

    model.learn(40)  # fills the buffer and trains
    data = model.replay_buffer.sample(8)
    observations = model.policy.augment(data.observations)
    before_encoder = encoder_parameters(model.actor)
    before_mu = model.actor.mu.weight.detach().clone()
    model.actor.optimizer.zero_grad()
    model.critic.optimizer.zero_grad()  # clears the encoder's gradients from the last update
    actions_pi, log_prob = model.actor.action_log_prob(observations)
    model._actor_step(
        observations,
        observations,
        actions_pi,
        log_prob.reshape(-1, 1),
        model._ent_coef(),
        defaultdict(list),
    )
    # The actor step moved the actor's head but neither wrote gradients to nor moved the encoder.
    assert not th.equal(before_mu, model.actor.mu.weight)
    assert all(p.grad is None for p in model.critic.parameters())
    for a, b in zip(before_encoder, encoder.parameters(), strict=True):
        assert th.equal(a, b)
    # A critic step moves the encoder.
    model.train(gradient_steps=1, batch_size=8)
    assert any(
        not th.equal(a, b) for a, b in zip(before_encoder, encoder.parameters(), strict=True)
    )


def test_augmentation_is_applied_to_each_sampled_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = image_sac(policy_delay=2)
    model.learn(20)
    calls = []
    original = model.policy.augment

    def counting(observations: Any) -> Any:
        out = original(observations)
        calls.append(out["image"].dtype)
        assert out["image"].shape == observations["image"].shape
        return out

    monkeypatch.setattr(model.policy, "augment", counting)
    model.train(gradient_steps=3, batch_size=8)
    assert calls == [th.uint8] * 6  # observations and next observations, every step


def test_td3_with_images_keeps_images_uint8_in_the_buffer() -> None:
    model = TD3(
        "MultiInputPolicy",
        TinyImageEnv(),
        policy_kwargs=dict(IMAGE_POLICY),
        batch_size=8,
        learning_starts=10,
        policy_delay=2,
    )
    model.learn(30)
    assert model.replay_buffer.observations["image"].dtype == np.uint8
    assert model.replay_buffer.observations["image"].shape[-3:] == (1, 16, 16)  # transposed
    assert model._n_updates > 0
