"""TD3 for sim-to-online fine-tuning: SB3's TD3 with its own actor learning rate and the
package's stabilisers. A user's SB3 script changes by one import."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import numpy as np
import stable_baselines3.td3.policies as sb3_td3_policies
import torch as th
from stable_baselines3 import TD3 as SB3TD3
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import get_parameters_by_name, polyak_update
from torch.nn import functional

from sim2online_envs.agents.common import FineTuningMixin, frozen
from sim2online_envs.agents.policies import TD3CnnPolicy, TD3MultiInputPolicy, TD3Policy


class TD3(FineTuningMixin, SB3TD3):
    """Twin Delayed DDPG (SB3) with the stabilisers for the sim-to-real jump.

    Every SB3 ``TD3`` argument keeps its meaning (``policy_delay`` is TD3's own: actor and
    target updates every M-th critic update, counted over the whole run); these are added:

    ======================== ================================================================
    Argument                 Meaning
    ======================== ================================================================
    actor_learning_rate      The actor optimiser's rate (float or SB3 schedule); default:
                             ``learning_rate``, which sets the critics'.
    warm_start_steps         N*: the first N* transitions come from the policy itself (with
                             ``action_noise`` as a trained agent acts), no gradient step until
                             they are in; ``learning_starts`` then never makes uniform-random
                             actions. Default 0.
    async_updates            Background learner, weights published at rollout boundaries
                             (see :class:`~sim2online_envs.agents.SAC`). Default False.
    max_grad_norm            Clip actor and critic gradients to this global norm; default None.
    action_rate_penalty      λ ≥ 0: the actor loss gains λ · mean ‖π(s′) − π(s)‖² (actions in
                             [-1, 1]); see :class:`~sim2online_envs.agents.SAC`. Default 0.
    ======================== ================================================================

    With the added arguments at their defaults the run is SB3's ``TD3``'s bit for bit. One
    difference with ``share_features_extractor=True`` only: the shared encoder is trained by the
    critic (see :mod:`sim2online_envs.agents.policies`) and the target critic has an encoder of
    its own, Polyak-averaged from the critic's; SB3 shares the actor target's encoder with the
    target critic (which then moves at 2τ).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": TD3Policy,
        "CnnPolicy": TD3CnnPolicy,
        "MultiInputPolicy": TD3MultiInputPolicy,
    }
    _sb3_policy_classes: ClassVar[dict[type, type]] = {
        TD3Policy: sb3_td3_policies.TD3Policy,
        TD3CnnPolicy: sb3_td3_policies.CnnPolicy,
        TD3MultiInputPolicy: sb3_td3_policies.MultiInputPolicy,
    }
    _policy_base: ClassVar[type | None] = sb3_td3_policies.TD3Policy

    def __init__(
        self,
        policy: str | type[TD3Policy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        policy_delay: int = 2,
        target_policy_noise: float = 0.2,
        target_noise_clip: float = 0.5,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
        *,
        actor_learning_rate: float | Schedule | None = None,
        warm_start_steps: int = 0,
        async_updates: bool = False,
        max_grad_norm: float | None = None,
        action_rate_penalty: float = 0.0,
    ):
        if not isinstance(policy_delay, int) or policy_delay < 1:
            raise ValueError(f"policy_delay must be an int >= 1, got {policy_delay!r}")
        self._init_fine_tuning(
            actor_learning_rate, warm_start_steps, async_updates, max_grad_norm, action_rate_penalty
        )
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_delay=policy_delay,
            target_policy_noise=target_policy_noise,
            target_noise_clip=target_noise_clip,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _setup_model(self) -> None:
        self._adopt_own_policy_class()
        super()._setup_model()
        self._setup_fine_tuning()

    def _deterministic_actions(self, observations: Any) -> th.Tensor:
        return self.actor(observations)

    def _create_aliases(self) -> None:
        super()._create_aliases()
        self.actor_batch_norm_stats = get_parameters_by_name(self.actor, ["running_"])
        self.critic_batch_norm_stats = get_parameters_by_name(self.critic, ["running_"])
        self.actor_batch_norm_stats_target = get_parameters_by_name(self.actor_target, ["running_"])
        self.critic_batch_norm_stats_target = get_parameters_by_name(
            self.critic_target, ["running_"]
        )

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """``gradient_steps`` critic updates; actor and targets every ``policy_delay``-th."""
        self.policy.set_training_mode(True)
        self._set_learning_rates()
        self._log_online_fraction()
        metrics: dict[str, list[float]] = defaultdict(list)

        for _ in range(gradient_steps):
            self._n_updates += 1
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = data.discounts if data.discounts is not None else self.gamma
            observations = self._augment(data.observations)
            next_observations = self._augment(data.next_observations)

            with th.no_grad():
                noise = data.actions.clone().data.normal_(0, self.target_policy_noise)
                noise = noise.clamp(-self.target_noise_clip, self.target_noise_clip)
                next_actions = (self.actor_target(next_observations) + noise).clamp(-1, 1)
                next_q = th.cat(self.critic_target(next_observations, next_actions), dim=1)
                next_q, _ = th.min(next_q, dim=1, keepdim=True)
                target_q = data.rewards + (1 - data.dones) * discounts * next_q

            current_q = self.critic(observations, data.actions)
            critic_loss = sum(functional.mse_loss(q, target_q) for q in current_q)
            assert isinstance(critic_loss, th.Tensor)
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self._clip_gradients(self.critic.optimizer)
            self.critic.optimizer.step()
            metrics["critic_loss"].append(critic_loss.item())

            if self._n_updates % self.policy_delay == 0:
                # TD3's delayed step: the actor (unless critic-only) and the target networks.
                if not self._critic_only:
                    with frozen(self.critic):
                        q = self.critic.q1_forward(observations, self.actor(observations))
                    actor_loss = -q.mean()
                    metrics["actor_loss"].append(actor_loss.item())
                    rate_loss = self._action_rate_loss(observations, next_observations)
                    if rate_loss is not None:
                        metrics["action_rate_loss"].append(rate_loss.item())
                        actor_loss = actor_loss + rate_loss
                    self.actor.optimizer.zero_grad()
                    actor_loss.backward()
                    self._clip_gradients(self.actor.optimizer)
                    self.actor.optimizer.step()
                    self._n_actor_updates += 1
                    polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.tau)
                    polyak_update(
                        self.actor_batch_norm_stats, self.actor_batch_norm_stats_target, 1.0
                    )
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(
                    self.critic_batch_norm_stats, self.critic_batch_norm_stats_target, 1.0
                )

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/n_actor_updates", self._n_actor_updates, exclude="tensorboard")
        for key, values in metrics.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))
