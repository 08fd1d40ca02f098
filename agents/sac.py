"""SAC for sim-to-online fine-tuning: SB3's SAC with a delayed, slower actor and the package's
stabilisers. A user's SB3 script changes by one import."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import numpy as np
import torch as th
from sim2online_envs.agents.common import FineTuningMixin, frozen
from sim2online_envs.agents.policies import SACCnnPolicy, SACMultiInputPolicy, SACPolicy
from stable_baselines3 import SAC as SB3SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import (
    FloatSchedule,
    get_parameters_by_name,
    polyak_update,
    update_learning_rate,
)
from torch.nn import functional


class SAC(FineTuningMixin, SB3SAC):
    """Soft Actor-Critic (SB3) with the stabilisers for the sim-to-real jump.

    Every SB3 ``SAC`` argument keeps its meaning; these are added:

    ======================== ================================================================
    Argument                 Meaning
    ======================== ================================================================
    policy_delay             M: the actor and the temperature are updated once every M
                             critic updates (the study: 20); on the other steps no actor
                             forward/backward pass is made. Default 1 (SB3's SAC).
    actor_learning_rate      The actor optimiser's rate (float or SB3 schedule of the
                             remaining progress); default: ``learning_rate``. The study:
                             1e-5 with ``learning_rate`` 3e-4 for the critics.
    ent_coef_learning_rate   The temperature optimiser's rate; default: ``learning_rate``
                             (SB3's choice).
    warm_start_steps         N*: the first N* transitions (counted by ``num_timesteps``, which
                             ``learn(reset_num_timesteps=True)`` restarts) are collected with the
                             policy itself, through SB3's sampling path with its exploration,
                             and no gradient step is taken until they are in. With N* > 0,
                             ``learning_starts`` never makes uniform-random actions; it only
                             delays training. Default 0.
    async_updates            Run each rollout's gradient steps in a background learner (a copy
                             of the networks and optimisers) while the next episode is
                             collected with fixed weights; weights are published at rollout
                             boundaries. Use with ``train_freq=(1, "episode")``. Not
                             bit-reproducible. Default False.
    max_grad_norm            Clip actor and critic gradients to this global norm (the study:
                             1.0); default None.
    ======================== ================================================================

    Policies: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` map to
    :mod:`sim2online_envs.agents.policies`, which add ``policy_kwargs`` for a BRO critic, a
    critic-trained shared image encoder and DrQ augmentation. Target networks are Polyak-updated
    every ``target_update_interval`` critic updates, counted over the whole run.

    Hand-off choices after loading a prior: :meth:`reset_critic` (re-initialise the Q-networks,
    as SGFT), :meth:`fix_ent_coef` (a fixed temperature, e.g. SGFT's 0.01; by default the
    temperature and its optimiser are restored with the prior) and :meth:`train_critic`
    (critic-only updates before the actor moves, as ResFiT). The mixing schedule and
    ``online_fraction`` (e.g. ResFiT's constant 0.5) are set through ``replay_buffer_kwargs``.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": SACPolicy,
        "CnnPolicy": SACCnnPolicy,
        "MultiInputPolicy": SACMultiInputPolicy,
    }

    def __init__(
        self,
        policy: str | type[SACPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
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
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
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
        policy_delay: int = 1,
        actor_learning_rate: float | Schedule | None = None,
        ent_coef_learning_rate: float | Schedule | None = None,
        warm_start_steps: int = 0,
        async_updates: bool = False,
        max_grad_norm: float | None = None,
    ):
        if not isinstance(policy_delay, int) or policy_delay < 1:
            raise ValueError(f"policy_delay must be an int >= 1, got {policy_delay!r}")
        self.policy_delay = policy_delay
        self.ent_coef_learning_rate = ent_coef_learning_rate
        self._init_fine_tuning(actor_learning_rate, warm_start_steps, async_updates, max_grad_norm)
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
            ent_coef=ent_coef,
            target_update_interval=target_update_interval,
            target_entropy=target_entropy,
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
        rate = self.ent_coef_learning_rate
        self.ent_coef_lr_schedule = FloatSchedule(self.lr_schedule if rate is None else rate)
        if self.ent_coef_optimizer is not None:
            update_learning_rate(self.ent_coef_optimizer, self.ent_coef_lr_schedule(1.0))

    def _create_aliases(self) -> None:
        super()._create_aliases()
        self.batch_norm_stats = get_parameters_by_name(self.critic, ["running_"])
        self.batch_norm_stats_target = get_parameters_by_name(self.critic_target, ["running_"])

    def _ent_coef(self) -> th.Tensor:
        if self.log_ent_coef is not None:
            return th.exp(self.log_ent_coef.detach())
        return self.ent_coef_tensor

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """``gradient_steps`` critic updates; actor and temperature every ``policy_delay``-th."""
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
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = data.discounts if data.discounts is not None else self.gamma
            observations = self._augment(data.observations)
            next_observations = self._augment(data.next_observations)
            if self.use_sde:
                self.actor.reset_noise()
            ent_coef = self._ent_coef()

            with th.no_grad():
                next_actions, next_log_prob = self.actor.action_log_prob(next_observations)
                next_q = th.cat(self.critic_target(next_observations, next_actions), dim=1)
                next_q, _ = th.min(next_q, dim=1, keepdim=True)
                next_q = next_q - ent_coef * next_log_prob.reshape(-1, 1)
                target_q = data.rewards + (1 - data.dones) * discounts * next_q

            current_q = self.critic(observations, data.actions)
            critic_loss = 0.5 * sum(functional.mse_loss(q, target_q) for q in current_q)
            assert isinstance(critic_loss, th.Tensor)
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self._clip_gradients(self.critic.optimizer)
            self.critic.optimizer.step()
            self._n_updates += 1
            metrics["critic_loss"].append(critic_loss.item())
            metrics["ent_coef"].append(ent_coef.item())

            if self._actor_update_due():
                self._actor_and_temperature_step(observations, ent_coef, metrics)

            if self._n_updates % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/n_actor_updates", self._n_actor_updates, exclude="tensorboard")
        for key, values in metrics.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))

    def _actor_and_temperature_step(
        self, observations: Any, ent_coef: th.Tensor, metrics: dict[str, list[float]]
    ) -> None:
        actions_pi, log_prob = self.actor.action_log_prob(observations)
        log_prob = log_prob.reshape(-1, 1)
        # The actor loss must not write gradients into the critic (nor its encoder).
        with frozen(self.critic):
            q_pi = th.cat(self.critic(observations, actions_pi), dim=1)
        min_q_pi, _ = th.min(q_pi, dim=1, keepdim=True)
        actor_loss = (ent_coef * log_prob - min_q_pi).mean()
        self.actor.optimizer.zero_grad()
        actor_loss.backward()
        self._clip_gradients(self.actor.optimizer)
        self.actor.optimizer.step()
        self._n_actor_updates += 1
        metrics["actor_loss"].append(actor_loss.item())

        if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
            assert isinstance(self.target_entropy, float)
            ent_coef_loss = -(self.log_ent_coef * (log_prob.detach() + self.target_entropy)).mean()
            self.ent_coef_optimizer.zero_grad()
            ent_coef_loss.backward()
            self.ent_coef_optimizer.step()
            metrics["ent_coef_loss"].append(ent_coef_loss.item())

    # -- hand-off choices ---------------------------------------------------------------------

    def fix_ent_coef(self, value: float) -> None:
        """Use a fixed temperature from now on (no temperature optimiser), e.g. SGFT's 0.01."""
        if not value > 0:
            raise ValueError(f"ent_coef must be > 0, got {value}")
        self.ent_coef = float(value)
        self.log_ent_coef = None
        self.ent_coef_optimizer = None
        self.ent_coef_tensor = th.tensor(float(value), device=self.device)

    # -- the background learner's copy --------------------------------------------------------

    def _trainable_names(self) -> list[str]:
        return ["policy", "log_ent_coef", "ent_coef_optimizer"]

    def _optimizer_names(self) -> list[str]:
        return [*super()._optimizer_names(), "ent_coef_optimizer"]

    def _tensor_names(self) -> list[str]:
        return ["log_ent_coef"]

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "ent_coef_lr_schedule"]
