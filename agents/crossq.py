"""CrossQ for sim-to-online fine-tuning: sb3-contrib's CrossQ (batch-renormalised critic, no
target networks) with the package's additions."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import numpy as np
import torch as th
from sb3_contrib import CrossQ as ContribCrossQ
from sb3_contrib.crossq.policies import CrossQPolicy
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from torch.nn import functional

from sim2online_envs.agents.common import frozen
from sim2online_envs.agents.sac import SoftActorCriticMixin


class CrossQ(SoftActorCriticMixin, ContribCrossQ):
    """CrossQ (sb3-contrib) with the stabilisers for the sim-to-real jump.

    Every sb3-contrib ``CrossQ`` argument keeps its meaning (``policy_delay`` is CrossQ's own:
    actor and temperature every M-th critic update, counted over the whole run, default 3) and
    its policy is sb3-contrib's ``"MlpPolicy"`` (a saved model loads in plain sb3-contrib).
    With the added arguments at their defaults the run is sb3-contrib's ``CrossQ``'s bit for
    bit. Added, with the meanings of :class:`~sim2online_envs.agents.SAC`:
    ``actor_learning_rate``, ``ent_coef_learning_rate``, ``warm_start_steps``,
    ``async_updates``, ``max_grad_norm``, ``action_rate_penalty``; and :meth:`reset_critic`
    (which also resets the critic's BatchRenorm statistics), :meth:`fix_ent_coef`,
    :meth:`train_critic`. CrossQ's critic joins the observations and next observations in one
    batch-normalised forward pass; the critic-regularisation route to a high update-to-data
    ratio without target networks.
    """

    _policy_base: ClassVar[type | None] = CrossQPolicy

    def __init__(
        self,
        policy: str | type,
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: str | float = "auto",
        target_entropy: str | float = "auto",
        policy_delay: int = 3,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
        *,
        actor_learning_rate: float | Schedule | None = None,
        ent_coef_learning_rate: float | Schedule | None = None,
        warm_start_steps: int = 0,
        async_updates: bool = False,
        max_grad_norm: float | None = None,
        action_rate_penalty: float = 0.0,
    ):
        if not isinstance(policy_delay, int) or policy_delay < 1:
            raise ValueError(f"policy_delay must be an int >= 1, got {policy_delay!r}")
        self.ent_coef_learning_rate = ent_coef_learning_rate
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
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            ent_coef=ent_coef,
            target_entropy=target_entropy,
            policy_delay=policy_delay,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            use_sde_at_warmup=use_sde_at_warmup,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        self._setup_fine_tuning()
        self._setup_temperature_rate()

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """sb3-contrib's ``CrossQ.train`` step for step, with gradient clipping, the actor's own
        rate, critic-only steps and the action-rate penalty."""
        self.policy.set_training_mode(True)
        extra = []
        if self.ent_coef_optimizer is not None:
            extra.append(
                ("ent_coef_learning_rate", self.ent_coef_optimizer, self.ent_coef_lr_schedule)
            )
        self._set_learning_rates(extra)
        self._log_online_fraction()
        metrics: dict[str, list[float]] = defaultdict(list)

        for _ in range(gradient_steps):
            actor_step = self._actor_update_due()
            self._n_updates += 1
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = data.discounts if data.discounts is not None else self.gamma
            observations = self._augment(data.observations)
            next_observations = self._augment(data.next_observations)
            if self.use_sde:
                self.actor.reset_noise()
            ent_coef = self._ent_coef()
            metrics["ent_coef"].append(ent_coef.item())

            with th.no_grad():
                self.actor.set_bn_training_mode(False)
                next_actions, next_log_prob = self.actor.action_log_prob(next_observations)

            # One forward pass over the joint batch: BatchRenorm statistics of both halves.
            all_obs = th.cat([observations, next_observations], dim=0)
            all_actions = th.cat([data.actions, next_actions], dim=0)
            self.critic.set_bn_training_mode(True)
            all_q = th.cat(self.critic(all_obs, all_actions), dim=1)
            self.critic.set_bn_training_mode(False)
            current_q, next_q = th.split(all_q, batch_size, dim=0)
            current_q = current_q.T[..., None]

            with th.no_grad():
                next_q, _ = th.min(next_q.detach(), dim=1, keepdim=True)
                next_q = next_q - ent_coef * next_log_prob.reshape(-1, 1)
                target_q = data.rewards + (1 - data.dones) * discounts * next_q

            critic_loss = 0.5 * sum(functional.mse_loss(q, target_q.detach()) for q in current_q)
            assert isinstance(critic_loss, th.Tensor)
            metrics["critic_loss"].append(critic_loss.item())
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self._clip_gradients(self.critic.optimizer)
            self.critic.optimizer.step()

            if actor_step:
                self.actor.set_bn_training_mode(True)
                actions_pi, log_prob = self.actor.action_log_prob(observations)
                log_prob = log_prob.reshape(-1, 1)
                self.actor.set_bn_training_mode(False)
                self._temperature_step(log_prob, metrics)

                self.critic.set_bn_training_mode(False)
                with frozen(self.critic):
                    q_pi = th.cat(self.critic(observations, actions_pi), dim=1)
                min_q_pi, _ = th.min(q_pi, dim=1, keepdim=True)
                actor_loss = (ent_coef * log_prob - min_q_pi).mean()
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

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/n_actor_updates", self._n_actor_updates, exclude="tensorboard")
        for key, values in metrics.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))
