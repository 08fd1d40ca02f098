"""Critic architecture and vision for the SAC/TD3 adapters, selected through ``policy_kwargs``.

===================== ===================================================================
``policy_kwargs`` key Meaning
===================== ===================================================================
critic_arch           ``"mlp"`` (SB3's critic, sized by ``net_arch``) or ``"bro"``: a BRO
                      critic (Nauman et al. 2024): Linear → LayerNorm → ReLU, then
                      ``critic_blocks`` residual blocks ``x + LN(W2 ReLU(LN(W1 x)))``,
                      then a linear head; ``net_arch``'s critic part is then unused.
                      Default ``"mlp"``.
critic_width          BRO hidden width (default 512, the study's value).
critic_blocks         BRO residual blocks (default 2).
critic_layer_norm     With ``critic_arch="mlp"``: LayerNorm after every hidden Linear of
                      each Q-network (Linear → LayerNorm → ReLU, as DroQ and REDQ-style
                      ensembles use); SB3's plain MLP otherwise. Default ``False``.
share_features_extractor
                      With ``True`` the actor and critic share one encoder which is trained
                      by the **critic loss only**; the actor reads detached features (DrQ,
                      SAC-AE). This differs from SB3, where a shared encoder follows the
                      actor loss. Default ``False`` (separate encoders, as SB3).
image_augmentation    ``None`` or ``"random_shift"``: DrQ's random shift of every image
                      observation in each sampled minibatch (pad ``random_shift_pad``
                      pixels by edge replication, random crop back). Default ``None``.
random_shift_pad      Pad of the random shift in pixels (default 4).
===================== ===================================================================

Image encoders: :class:`ImageEncoder` (conv 32/64/128/256, stride 2 → Linear 128 → LayerNorm →
tanh, the study's encoder) and :class:`MultiInputEncoder` (that encoder for each image key of a
Dict space, flattening the others), used as SB3's ``features_extractor_class``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel, ContinuousCritic
from stable_baselines3.common.preprocessing import (
    get_action_dim,
    get_flattened_obs_dim,
    is_image_space,
    is_image_space_channels_first,
)
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import Actor as _SB3SACActor
from stable_baselines3.sac.policies import SACPolicy as _SB3SACPolicy
from stable_baselines3.td3.policies import Actor as _SB3TD3Actor
from stable_baselines3.td3.policies import TD3Policy as _SB3TD3Policy
from torch import nn

CRITIC_ARCHS = ("mlp", "bro")
IMAGE_AUGMENTATIONS = (None, "random_shift")


# -- image encoders ------------------------------------------------------------------------------


class ImageEncoder(BaseFeaturesExtractor):
    """Conv encoder for one (C, H, W) image: the study's vision encoder.

    ``len(channels)`` 3×3 convolutions with stride 2 and ReLU, flatten, a linear layer to
    ``features_dim``, LayerNorm, tanh. Inputs are SB3-preprocessed (uint8 images scaled to
    [0, 1]).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        features_dim: int = 128,
        channels: Sequence[int] = (32, 64, 128, 256),
        normalized_image: bool = False,
    ):
        if not is_image_space(observation_space, normalized_image=normalized_image):
            raise ValueError(
                f"ImageEncoder needs an image space (3-D uint8 Box in [0, 255]), "
                f"got {observation_space}"
            )
        if not is_image_space_channels_first(observation_space):
            raise ValueError(
                f"ImageEncoder needs channel-first images (C, H, W), got shape "
                f"{observation_space.shape} (SB3's VecTransposeImage transposes env images)"
            )
        super().__init__(observation_space, features_dim)
        layers: list[nn.Module] = []
        in_channels = observation_space.shape[0]
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.ReLU()]
            in_channels = out_channels
        layers.append(nn.Flatten())
        self.cnn = nn.Sequential(*layers)
        with th.no_grad():
            n_flatten = self.cnn(th.zeros(1, *observation_space.shape)).shape[1]
        self.head = nn.Sequential(
            nn.Linear(n_flatten, features_dim), nn.LayerNorm(features_dim), nn.Tanh()
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.head(self.cnn(observations))


class MultiInputEncoder(BaseFeaturesExtractor):
    """Dict observations: :class:`ImageEncoder` per image key, flatten for the others, concat."""

    def __init__(
        self,
        observation_space: spaces.Dict,
        image_features_dim: int = 128,
        channels: Sequence[int] = (32, 64, 128, 256),
        normalized_image: bool = False,
    ):
        super().__init__(observation_space, features_dim=1)
        extractors: dict[str, nn.Module] = {}
        total = 0
        for key, subspace in observation_space.spaces.items():
            if is_image_space(subspace, normalized_image=normalized_image):
                extractors[key] = ImageEncoder(
                    subspace, image_features_dim, channels, normalized_image=normalized_image
                )
                total += image_features_dim
            else:
                extractors[key] = nn.Flatten()
                total += get_flattened_obs_dim(subspace)
        self.extractors = nn.ModuleDict(extractors)
        self._features_dim = total

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        return th.cat([net(observations[key]) for key, net in self.extractors.items()], dim=1)


# -- DrQ random shift ----------------------------------------------------------------------------


def random_shift(images: th.Tensor, pad: int = 4, channels_first: bool = True) -> th.Tensor:
    """DrQ augmentation: shift each image by a random integer offset in [-pad, pad]² with edge
    replication (pad by replicating borders, random crop back to the original size).

    Works on any dtype (uint8 images stay uint8) and on a batch (B, C, H, W) or, with
    ``channels_first=False``, (B, H, W, C). Uses the torch global RNG.
    """
    if pad < 0:
        raise ValueError(f"random_shift pad must be >= 0, got {pad}")
    if images.ndim != 4:
        raise ValueError(f"random_shift expects a batch of images (4-D), got {images.ndim}-D")
    if pad == 0:
        return images
    x = images if channels_first else images.permute(0, 3, 1, 2)
    batch, _, height, width = x.shape
    shifts = th.randint(-pad, pad + 1, (batch, 2), device=x.device)
    rows = (th.arange(height, device=x.device)[None, :] + shifts[:, :1]).clamp(0, height - 1)
    cols = (th.arange(width, device=x.device)[None, :] + shifts[:, 1:]).clamp(0, width - 1)
    batch_index = th.arange(batch, device=x.device)[:, None, None]
    # Advanced indices around a slice: the result is (B, H, W, C).
    shifted = x[batch_index, :, rows[:, :, None], cols[:, None, :]]
    return shifted.permute(0, 3, 1, 2) if channels_first else shifted


# -- BRO critic ----------------------------------------------------------------------------------


class BROBlock(nn.Module):
    """``x + LN(W2 act(LN(W1 x)))``: the residual block of BRO's critic."""

    def __init__(self, width: int, activation_fn: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, width),
            nn.LayerNorm(width),
            activation_fn(),
            nn.Linear(width, width),
            nn.LayerNorm(width),
        )

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x + self.net(x)


def bro_network(
    input_dim: int, width: int, num_blocks: int, activation_fn: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """Linear → LayerNorm → act, ``num_blocks`` :class:`BROBlock` s, linear head to one value."""
    if width < 1 or num_blocks < 0:
        raise ValueError(
            f"BRO critic needs critic_width >= 1 and critic_blocks >= 0, got {width}, {num_blocks}"
        )
    layers: list[nn.Module] = [nn.Linear(input_dim, width), nn.LayerNorm(width), activation_fn()]
    layers += [BROBlock(width, activation_fn) for _ in range(num_blocks)]
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def layer_norm_mlp(
    input_dim: int, net_arch: Sequence[int], activation_fn: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """SB3's critic MLP with a LayerNorm after every hidden Linear, then a linear head."""
    layers: list[nn.Module] = []
    width = input_dim
    for hidden in net_arch:
        layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), activation_fn()]
        width = hidden
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class LayerNormCritic(ContinuousCritic):
    """SB3's ``ContinuousCritic`` (``n_critics`` Q-networks sized by ``net_arch``) with LayerNorm
    in each hidden layer: the critic of a REDQ-style ensemble."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = True,
    ):
        BaseModel.__init__(
            self,
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        action_dim = get_action_dim(self.action_space)
        self.share_features_extractor = share_features_extractor
        self.n_critics = n_critics
        self.q_networks: list[nn.Module] = []
        for idx in range(n_critics):
            q_net = layer_norm_mlp(features_dim + action_dim, net_arch, activation_fn)
            self.add_module(f"qf{idx}", q_net)
            self.q_networks.append(q_net)


class BROCritic(ContinuousCritic):
    """SB3's ``ContinuousCritic`` with BRO Q-networks (same forward, ``q1_forward``, n_critics)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = True,
        width: int = 512,
        num_blocks: int = 2,
    ):
        del net_arch  # sized by width / num_blocks
        BaseModel.__init__(
            self,
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        action_dim = get_action_dim(self.action_space)
        self.share_features_extractor = share_features_extractor
        self.n_critics = n_critics
        self.q_networks: list[nn.Module] = []
        for idx in range(n_critics):
            q_net = bro_network(features_dim + action_dim, width, num_blocks, activation_fn)
            self.add_module(f"qf{idx}", q_net)
            self.q_networks.append(q_net)


# -- actors that read detached encoder features ----------------------------------------------


class _DetachedFeaturesMixin:
    """With ``detach_features`` the actor's encoder features carry no gradient (DrQ)."""

    detach_features: bool = False

    def extract_features(self, obs: PyTorchObs, features_extractor: nn.Module) -> th.Tensor:
        if self.detach_features:
            with th.no_grad():
                return super().extract_features(obs, features_extractor)  # type: ignore[misc]
        return super().extract_features(obs, features_extractor)  # type: ignore[misc]


class SACActor(_DetachedFeaturesMixin, _SB3SACActor):
    """SB3's SAC actor; features detached when the encoder is the critic's."""


class TD3Actor(_DetachedFeaturesMixin, _SB3TD3Actor):
    """SB3's TD3 actor; features detached when the encoder is the critic's."""


# -- the shared policy extras --------------------------------------------------------------------


class _PolicyExtrasMixin:
    """Critic choice, critic-trained shared encoder and image augmentation for SAC/TD3 policies."""

    observation_space: spaces.Space
    critic_kwargs: dict[str, Any]
    share_features_extractor: bool

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        *args: Any,
        critic_arch: str = "mlp",
        critic_width: int = 512,
        critic_blocks: int = 2,
        critic_layer_norm: bool = False,
        image_augmentation: str | None = None,
        random_shift_pad: int = 4,
        residual_scale: float | None = None,
        **kwargs: Any,
    ):
        #: ResFiT: the actor is a residual over a frozen base (SAC only; see agents.methods).
        self.residual_scale = residual_scale
        self._extras = (
            critic_arch,
            critic_width,
            critic_blocks,
            critic_layer_norm,
            image_augmentation,
            random_shift_pad,
        )
        super().__init__(  # type: ignore[call-arg]
            observation_space, action_space, lr_schedule, net_arch, *args, **kwargs
        )

    def _init_extras(
        self,
        critic_arch: str,
        critic_width: int,
        critic_blocks: int,
        critic_layer_norm: bool,
        image_augmentation: str | None,
        random_shift_pad: int,
    ) -> None:
        if critic_arch not in CRITIC_ARCHS:
            raise ValueError(f"critic_arch must be one of {CRITIC_ARCHS}, got {critic_arch!r}")
        if image_augmentation not in IMAGE_AUGMENTATIONS:
            raise ValueError(
                f"image_augmentation must be one of {IMAGE_AUGMENTATIONS}, "
                f"got {image_augmentation!r}"
            )
        if random_shift_pad < 0:
            raise ValueError(f"random_shift_pad must be >= 0, got {random_shift_pad}")
        self.critic_arch = critic_arch
        self.critic_width = int(critic_width)
        self.critic_blocks = int(critic_blocks)
        self.critic_layer_norm = bool(critic_layer_norm)
        self.image_augmentation = image_augmentation
        self.random_shift_pad = int(random_shift_pad)
        # Which observation entries are images, and their layout, for the augmentation.
        space = self.observation_space
        entries = space.spaces.items() if isinstance(space, spaces.Dict) else [(None, space)]
        self._image_keys: dict[str | None, bool] = {
            key: bool(is_image_space_channels_first(sub))
            for key, sub in entries
            if is_image_space(sub, check_channels=False)
        }
        if image_augmentation is not None and not self._image_keys:
            raise ValueError(
                f"image_augmentation={image_augmentation!r} needs image observations, "
                f"the observation space {space} has none"
            )

    def _critic_class_kwargs(self) -> tuple[type[ContinuousCritic], dict[str, Any]]:
        # The critic always backpropagates into its encoder: a shared encoder is the critic's.
        kwargs = {**self.critic_kwargs, "share_features_extractor": False}
        if self.critic_arch == "bro":
            kwargs.update(width=self.critic_width, num_blocks=self.critic_blocks)
            return BROCritic, kwargs
        if self.critic_layer_norm:
            return LayerNormCritic, kwargs
        return ContinuousCritic, kwargs

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> Any:
        cls, kwargs = self._critic_class_kwargs()
        kwargs = self._update_features_extractor(kwargs, features_extractor)  # type: ignore[attr-defined]
        return cls(**kwargs).to(self.device)  # type: ignore[attr-defined]

    def augment(self, observations: PyTorchObs) -> PyTorchObs:
        """The training-time augmentation of a sampled observation batch (identity if none)."""
        if self.image_augmentation is None:
            return observations
        pad = self.random_shift_pad
        if isinstance(observations, dict):
            return {
                key: (
                    random_shift(value, pad, self._image_keys[key])
                    if key in self._image_keys
                    else value
                )
                for key, value in observations.items()
            }
        return random_shift(observations, pad, self._image_keys[None])

    def _extras_constructor_parameters(self) -> dict[str, Any]:
        return dict(
            critic_arch=self.critic_arch,
            critic_width=self.critic_width,
            critic_blocks=self.critic_blocks,
            critic_layer_norm=self.critic_layer_norm,
            image_augmentation=self.image_augmentation,
            random_shift_pad=self.random_shift_pad,
            share_features_extractor=self.share_features_extractor,
            residual_scale=self.residual_scale,
        )


def _encoder_free(module: nn.Module) -> list[nn.Parameter]:
    """Parameters of an actor without its (critic-trained) features extractor."""
    return [p for n, p in module.named_parameters() if not n.startswith("features_extractor.")]


class SACPolicy(_PolicyExtrasMixin, _SB3SACPolicy):
    """SB3's SAC policy plus BRO critic, critic-trained shared encoder and DrQ augmentation.

    Accepts every SB3 ``SACPolicy`` argument and the keys in this module's table.
    """

    def _build(self, lr_schedule: Schedule) -> None:
        self._init_extras(*self._extras)
        del self._extras
        self.actor = self.make_actor()
        if self.share_features_extractor:
            self.actor.detach_features = True
            actor_parameters = _encoder_free(self.actor)
            self.critic = self.make_critic(features_extractor=self.actor.features_extractor)
        else:
            actor_parameters = self._actor_parameters()
            self.critic = self.make_critic(features_extractor=None)
        self.actor.optimizer = self.optimizer_class(
            actor_parameters,
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )
        self.critic_target = self.make_critic(features_extractor=None)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic.optimizer = self.optimizer_class(
            self.critic.parameters(),
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )
        self.critic_target.set_training_mode(False)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> SACActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        if self.residual_scale is not None:
            from sim2online_envs.agents.methods import ResidualSACActor

            if self.share_features_extractor:
                raise ValueError("residual_scale does not support share_features_extractor=True")
            return ResidualSACActor(**actor_kwargs, residual_scale=self.residual_scale).to(
                self.device
            )
        return SACActor(**actor_kwargs).to(self.device)

    def _actor_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.actor.named_parameters() if not n.startswith("base.")]

    def make_residual_actor(self, scale: float) -> None:
        """ResFiT's hand-off: the actor becomes a residual over a frozen copy of the current one
        (its last layer zero: the same actions at first), with a new actor optimiser."""
        if self.share_features_extractor:
            raise ValueError("residual_scale does not support share_features_extractor=True")
        previous = self.actor
        self.residual_scale = float(scale)
        self.actor = self.make_actor()
        self.actor.load_base(previous)
        lr = previous.optimizer.param_groups[0]["lr"]
        self.actor.optimizer = self.optimizer_class(
            self._actor_parameters(),
            lr=lr,  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self._extras_constructor_parameters())
        return data


class TD3Policy(_PolicyExtrasMixin, _SB3TD3Policy):
    """SB3's TD3 policy plus BRO critic, critic-trained shared encoder and DrQ augmentation."""

    def _build(self, lr_schedule: Schedule) -> None:
        if self.residual_scale is not None:
            raise ValueError("residual_scale is a SAC policy setting (TD3's actor has none)")
        self._init_extras(*self._extras)
        del self._extras
        self.actor = self.make_actor(features_extractor=None)
        self.actor_target = self.make_actor(features_extractor=None)
        self.actor_target.load_state_dict(self.actor.state_dict())
        if self.share_features_extractor:
            self.actor.detach_features = True
            self.actor_target.detach_features = True
            actor_parameters = _encoder_free(self.actor)
            self.critic = self.make_critic(features_extractor=self.actor.features_extractor)
        else:
            actor_parameters = list(self.actor.parameters())
            self.critic = self.make_critic(features_extractor=None)
        self.critic_target = self.make_critic(features_extractor=None)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor.optimizer = self.optimizer_class(
            actor_parameters,
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )
        self.critic.optimizer = self.optimizer_class(
            self.critic.parameters(),
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )
        self.actor_target.set_training_mode(False)
        self.critic_target.set_training_mode(False)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> TD3Actor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return TD3Actor(**actor_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self._extras_constructor_parameters())
        return data


class SACCnnPolicy(SACPolicy):
    """:class:`SACPolicy` defaulting to SB3's ``NatureCNN`` (what SB3's ``CnnPolicy`` uses)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)


class SACMultiInputPolicy(SACPolicy):
    """:class:`SACPolicy` with SB3's MultiInputPolicy extractor, ``CombinedExtractor``."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(*args, **kwargs)


class TD3CnnPolicy(TD3Policy):
    """:class:`TD3Policy` defaulting to SB3's ``NatureCNN`` (what SB3's ``CnnPolicy`` uses)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)


class TD3MultiInputPolicy(TD3Policy):
    """:class:`TD3Policy` with SB3's MultiInputPolicy extractor, ``CombinedExtractor``."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(*args, **kwargs)


__all__ = [
    "BROBlock",
    "BROCritic",
    "ImageEncoder",
    "LayerNormCritic",
    "MultiInputEncoder",
    "SACCnnPolicy",
    "SACMultiInputPolicy",
    "SACPolicy",
    "TD3CnnPolicy",
    "TD3MultiInputPolicy",
    "TD3Policy",
    "bro_network",
    "layer_norm_mlp",
    "random_shift",
]
