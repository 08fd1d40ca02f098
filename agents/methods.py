"""The field's other ways across the sim-to-real gap, as small pieces the agents compose.

=============================== ===========================================================
Piece                           Method (paper)
=============================== ===========================================================
:class:`ResidualSACActor`       ResFiT (Ankile et al.): action = base(s) + scale·tanh(u),
                                base the frozen prior, u the residual's squashed Gaussian
                                sample, its mean head zero-initialised
:class:`ValueGuide`             SGFT (Yin, Westenbroek et al.): V_sim(s) = min_j
                                Q_sim,j(s, μ_sim(s)) of the frozen prior, for the shaped
                                reward r + γ·V_sim(s′) − V_sim(s)
:func:`q_guided_actions`        batch online RL (Dong et al.): execute the argmax-Q action
                                among N samples of the policy
:class:`ColoredActionNoise`,    batch online RL's temporally correlated exploration noise
:func:`ou_noise`                (Ornstein-Uhlenbeck), and coloured (1/f^β) noise
:class:`NStepMixingReplayBuffer` ResFiT's n-step returns beside 50/50 offline/online sampling
=============================== ===========================================================

The agents' constructor arguments switch them on (``residual_scale``, ``value_shaping``,
``critic_warmup_steps``, ``action_selection_samples``; see :class:`~sim2online_envs.agents.SAC`)
and :func:`~sim2online_envs.agents.recipe` gives each method's published settings.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.noise import ActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from sim2online_envs.agents.buffers import MixingReplayBuffer
from sim2online_envs.agents.policies import SACActor

#: ResFiT's residual scale (``action_scale`` in its code; its paper runs use 0.2).
RESFIT_RESIDUAL_SCALE = 0.1
#: Std of the residual's pre-tanh Gaussian at the start: ``scale``·0.5 = 0.05 on the action, the
#: exploration std of ResFiT's TD3 (``stddev_min = stddev_max = 0.05``).
RESIDUAL_INIT_STD = 0.5


# -- ResFiT: residual actor over a frozen base -------------------------------------------------


class ResidualSACActor(SACActor):
    """SAC actor whose action is ``clip(base(s) + scale·tanh(u), -1, 1)``.

    ``base`` is a frozen SAC actor (the prior, deterministic: tanh of its mean); the residual's
    network sees the features and the base action (ResFiT's π(s, a_base)), its mean head is
    zero-initialised and its log-std head starts at log(:data:`RESIDUAL_INIT_STD`) everywhere,
    so at the start the deterministic action is the base's exactly. The log-probability is the
    residual's in its own [-1, 1] space (SB3's squashed Gaussian), so SAC's entropy target
    applies to the residual. The critic sees the combined action.
    """

    def __init__(self, *args: Any, residual_scale: float = RESFIT_RESIDUAL_SCALE, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not 0.0 < residual_scale <= 2.0:
            raise ValueError(f"residual_scale must lie in (0, 2], got {residual_scale!r}")
        if self.use_sde:
            raise ValueError("a residual actor does not support use_sde")
        self.residual_scale = float(residual_scale)
        base_kwargs = dict(kwargs)
        base_kwargs["features_extractor"] = copy.deepcopy(kwargs["features_extractor"])
        self.base = SACActor(*args, **base_kwargs)
        self.base.requires_grad_(False)
        action_dim = int(np.prod(self.action_space.shape))
        net_arch = kwargs.get("net_arch", args[2] if len(args) > 2 else [256, 256])
        activation_fn = kwargs.get("activation_fn", nn.ReLU)
        self.latent_pi = nn.Sequential(
            *create_mlp(self.features_dim + action_dim, -1, net_arch, activation_fn)
        )
        with th.no_grad():
            self.mu.weight.zero_()
            self.mu.bias.zero_()
            self.log_std.weight.zero_()
            self.log_std.bias.fill_(math.log(RESIDUAL_INIT_STD))

    def load_base(self, actor: nn.Module) -> None:
        """Make ``actor``'s weights (an SB3 SAC actor of the same shape) the frozen base."""
        self.base.load_state_dict(actor.state_dict())
        self.base.requires_grad_(False)

    def base_action(self, obs: Any) -> th.Tensor:
        """The frozen base's deterministic action in [-1, 1]."""
        with th.no_grad():
            return self.base(obs, deterministic=True)

    def _residual_params(self, obs: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        base = self.base_action(obs)
        features = self.extract_features(obs, self.features_extractor)
        latent = self.latent_pi(th.cat([features, base], dim=1))
        log_std = th.clamp(self.log_std(latent), -20, 2)  # SB3's LOG_STD_MIN / MAX
        return base, self.mu(latent), log_std

    def _combine(self, base: th.Tensor, residual: th.Tensor) -> th.Tensor:
        return th.clamp(base + self.residual_scale * residual, -1.0, 1.0)

    def get_action_dist_params(self, obs: Any) -> tuple[th.Tensor, th.Tensor, dict]:
        _, mean, log_std = self._residual_params(obs)
        return mean, log_std, {}

    def forward(self, obs: Any, deterministic: bool = False) -> th.Tensor:
        base, mean, log_std = self._residual_params(obs)
        residual = self.action_dist.actions_from_params(mean, log_std, deterministic=deterministic)
        return self._combine(base, residual)

    def action_log_prob(self, obs: Any) -> tuple[th.Tensor, th.Tensor]:
        base, mean, log_std = self._residual_params(obs)
        residual, log_prob = self.action_dist.log_prob_from_params(mean, log_std)
        return self._combine(base, residual), log_prob

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["residual_scale"] = self.residual_scale
        return data


# -- SGFT: the frozen sim value ----------------------------------------------------------------


class ValueGuide(nn.Module):
    """Frozen copies of the prior's actor and critic: V_sim(s) = Q_sim(s, μ_sim(s)), Q the
    minimum over the critics (TQC: the mean of its quantiles), μ the deterministic action."""

    def __init__(self, model: Any):
        super().__init__()
        self.actor = copy.deepcopy(model.actor)
        self.critic = copy.deepcopy(model.critic)
        self.requires_grad_(False)
        self.actor.set_training_mode(False)
        self.critic.set_training_mode(False)

    def value(self, model: Any, observations: Any) -> np.ndarray:
        """V_sim of a batch of (unnormalised) observations, shape (batch,)."""
        obs, _ = model.policy.obs_to_tensor(observations)
        with th.no_grad():
            actions = model._deterministic_actions_of(self.actor, obs)
            values = model.critic_value(obs, actions, critic=self.critic)
        return values.cpu().numpy().astype(np.float32)


class ShapedStorage:
    """What ``_store_transition`` writes into: SGFT's reward r + γ·V_sim(s′)·(1 − terminal) −
    V_sim(s) (V_sim(s′) = 0 after a true termination), and with ``horizon=1`` every transition
    a true terminal (its time-limit flag cleared), so the critic's target is the shaped reward
    alone and only V_sim bootstraps."""

    def __init__(self, buffer: Any, model: Any, guide: ValueGuide, horizon: int | None):
        self.buffer = buffer
        self.model = model
        self.guide = guide
        self.horizon = horizon

    def add(
        self,
        obs: Any,
        next_obs: Any,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        truncated = np.array([info.get("TimeLimit.truncated", False) for info in infos])
        terminal = np.logical_and(done, np.logical_not(truncated)).astype(np.float32)
        v_s = self.guide.value(self.model, obs)
        v_next = self.guide.value(self.model, next_obs)
        gamma = float(self.model.gamma)
        shaped = (
            np.asarray(reward, dtype=np.float32) + gamma * v_next * (1.0 - terminal) - v_s
        ).astype(np.float32)
        if self.horizon == 1:
            done = np.ones_like(np.asarray(done), dtype=bool)
            infos = [{**info, "TimeLimit.truncated": False} for info in infos]
        self.buffer.add(obs, next_obs, action, shaped, done, infos)


# -- batch online RL: Q-guided action selection ------------------------------------------------


def _repeat(obs: Any, n: int) -> Any:
    if isinstance(obs, dict):
        return {key: value.repeat_interleave(n, dim=0) for key, value in obs.items()}
    return obs.repeat_interleave(n, dim=0)


def q_guided_actions(model: Any, observations: Any, n_samples: int) -> np.ndarray:
    """For each observation: N actions sampled from the policy, the one with the highest Q
    (the agent's :meth:`critic_value`), in the policy's [-1, 1] space, shape (batch, A)."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    obs, _ = model.policy.obs_to_tensor(observations)
    batch = next(iter(obs.values())).shape[0] if isinstance(obs, dict) else obs.shape[0]
    with th.no_grad():
        repeated = _repeat(obs, n_samples)
        actions = model.actor(repeated, deterministic=False)
        q = model.critic_value(repeated, actions).reshape(batch, n_samples)
        best = q.argmax(dim=1)
        chosen = actions.reshape(batch, n_samples, -1)[th.arange(batch), best]
    return chosen.cpu().numpy()


# -- temporally correlated exploration noise ---------------------------------------------------


def ou_noise(
    action_dim: int, theta: float = 5.0, sigma: float = 0.05, dt: float = 1.0 / 60.0
) -> OrnsteinUhlenbeckActionNoise:
    """SB3's Ornstein-Uhlenbeck noise, x ← x + θ(0 − x)·dt + σ·√dt·ε, zero mean.

    Defaults: (θ, σ) = (5, 0.05), the values the batch online RL paper lists for most of its
    tasks (its text lost the parameters' names; read as rate and scale), at the race car's
    60 Hz: correlation time 1/θ = 0.2 s, stationary std σ/√(2θ) ≈ 0.016.
    """
    return OrnsteinUhlenbeckActionNoise(
        mean=np.zeros(action_dim), sigma=sigma * np.ones(action_dim), theta=theta, dt=dt
    )


class ColoredActionNoise(ActionNoise):
    """Gaussian noise with power spectrum ∝ 1/f^β along time (β = 0 white, 1 pink, 2 red), one
    sequence of ``seq_len`` steps per episode, drawn at :meth:`reset` by shaping white noise in
    the frequency domain (Eberhard et al. 2023, "Pink noise is all you need"); each dimension
    has standard deviation ``sigma``. Reset at each episode start (SB3 does for done envs)."""

    def __init__(
        self,
        action_dim: int,
        beta: float = 1.0,
        sigma: float = 0.1,
        seq_len: int = 1000,
        rng: np.random.Generator | None = None,
    ):
        super().__init__()
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        self.action_dim = int(action_dim)
        self.beta = float(beta)
        self.sigma = float(sigma)
        self.seq_len = int(seq_len)
        self._rng = rng if rng is not None else np.random.default_rng()
        self.reset()

    def _sequence(self) -> np.ndarray:
        freqs = np.fft.rfftfreq(self.seq_len)
        scale = np.ones_like(freqs)
        scale[1:] = freqs[1:] ** (-self.beta / 2.0)
        scale[0] = scale[1]  # no infinite DC power
        shape = (self.action_dim, len(freqs))
        spectrum = (
            self._rng.standard_normal(shape) + 1j * self._rng.standard_normal(shape)
        ) * scale
        signal = np.fft.irfft(spectrum, n=self.seq_len, axis=1)
        signal /= signal.std(axis=1, keepdims=True) + 1e-12
        return (self.sigma * signal).T  # (seq_len, action_dim)

    def reset(self) -> None:
        self._buffer = self._sequence()
        self._t = 0

    def __call__(self) -> np.ndarray:
        if self._t >= self.seq_len:
            self.reset()
        value = self._buffer[self._t]
        self._t += 1
        return value.astype(np.float32)

    def __repr__(self) -> str:
        return f"ColoredActionNoise(beta={self.beta}, sigma={self.sigma}, seq_len={self.seq_len})"


# -- n-step returns beside the offline data ----------------------------------------------------


class NStepMixingReplayBuffer(MixingReplayBuffer):
    """:class:`MixingReplayBuffer` whose online part gives n-step returns (SB3's
    ``NStepReplayBuffer`` sampling: truncated at episode ends and time limits, per-sample
    ``discounts`` = γ^k). D0's transitions stay one-step (discount γ): a sim buffer mixes worlds
    and episodes without their order. Box observations only (as SB3's n-step buffer)."""

    def __init__(self, *args: Any, n_steps: int = 3, gamma: float = 0.99, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.observation_space, spaces.Dict):
            raise ValueError("NStepMixingReplayBuffer supports Box observation spaces only")
        if self.optimize_memory_usage:
            raise ValueError("NStepMixingReplayBuffer does not support optimize_memory_usage")
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
        self.n_steps = n_steps
        self.gamma = float(gamma)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> Any:
        return NStepReplayBuffer._get_samples(self, batch_inds, env)  # type: ignore[arg-type]

    def _sample_offline(self, batch_size: int, env: VecNormalize | None) -> Any:
        samples = super()._sample_offline(batch_size, env)
        discounts = th.full_like(samples.rewards, self.gamma)
        return samples._replace(discounts=discounts)


def is_plain_replay_buffer(buffer: Any) -> bool:
    """Whether ``buffer`` is a plain SB3 ``ReplayBuffer`` (no mixing, no n-step)."""
    return type(buffer) is ReplayBuffer


__all__ = [
    "RESFIT_RESIDUAL_SCALE",
    "ColoredActionNoise",
    "NStepMixingReplayBuffer",
    "ResidualSACActor",
    "ShapedStorage",
    "ValueGuide",
    "ou_noise",
    "q_guided_actions",
]
