"""TQC for sim-to-online fine-tuning: sb3-contrib's TQC (truncated quantile critics) with the
package's additions, through the SAC family's loop (:class:`SoftActorCriticMixin`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch as th
from sb3_contrib import TQC as ContribTQC  # noqa: N811
from sb3_contrib.common.utils import quantile_huber_loss
from sb3_contrib.tqc.policies import TQCPolicy
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.type_aliases import GymEnv, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import get_parameters_by_name

from sim2online_envs.agents.sac import SoftActorCriticMixin


class TQC(SoftActorCriticMixin, ContribTQC):
    """Truncated Quantile Critics (sb3-contrib) with the stabilisers for the sim-to-real jump.

    Every sb3-contrib ``TQC`` argument keeps its meaning and its policies are sb3-contrib's own
    (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"``; a saved model loads in plain
    sb3-contrib). With the added arguments at their defaults the run is sb3-contrib's ``TQC``'s
    bit for bit. Added, with the meanings of :class:`~sim2online_envs.agents.SAC`:
    ``policy_delay`` (actor and temperature every M critic updates, default 1),
    ``actor_learning_rate``, ``ent_coef_learning_rate``, ``warm_start_steps``,
    ``async_updates``, ``max_grad_norm``, ``action_rate_penalty``; and the hand-off methods
    :meth:`reset_critic`, :meth:`fix_ent_coef`, :meth:`train_critic`.
    """

    _policy_base: ClassVar[type | None] = TQCPolicy

    def __init__(
        self,
        policy: str | type,
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
        top_quantiles_to_drop_per_net: int = 2,
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
        action_rate_penalty: float = 0.0,
    ):
        if not isinstance(policy_delay, int) or policy_delay < 1:
            raise ValueError(f"policy_delay must be an int >= 1, got {policy_delay!r}")
        self.policy_delay = policy_delay
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
            top_quantiles_to_drop_per_net=top_quantiles_to_drop_per_net,
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

    def _create_aliases(self) -> None:
        # sb3-contrib sets the running-statistics aliases in _setup_model; here the background
        # learner's copy gets its own too.
        super()._create_aliases()
        self.batch_norm_stats = get_parameters_by_name(self.critic, ["running_"])
        self.batch_norm_stats_target = get_parameters_by_name(self.critic_target, ["running_"])

    def _critic_target_values(
        self,
        data: ReplayBufferSamples,
        next_observations: Any,
        next_actions: th.Tensor,
        next_log_prob: th.Tensor,
        ent_coef: th.Tensor,
        discounts: Any,
    ) -> th.Tensor:
        next_quantiles = self.critic_target(next_observations, next_actions)
        n_critics = self.critic.n_critics
        n_target = self.critic.quantiles_total - self.top_quantiles_to_drop_per_net * n_critics
        batch_size = next_quantiles.shape[0]
        next_quantiles, _ = th.sort(next_quantiles.reshape(batch_size, -1))
        next_quantiles = next_quantiles[:, :n_target]
        target = next_quantiles - ent_coef * next_log_prob
        target = data.rewards + (1 - data.dones) * discounts * target
        return target.unsqueeze(dim=1)

    def _critic_loss(self, observations: Any, actions: th.Tensor, target: th.Tensor) -> th.Tensor:
        current_quantiles = self.critic(observations, actions)
        return quantile_huber_loss(current_quantiles, target, sum_over_quantiles=False)

    def _actor_q(self, observations: Any, actions_pi: th.Tensor) -> th.Tensor:
        return self.critic(observations, actions_pi).mean(dim=2).mean(dim=1, keepdim=True)

    def critic_value(self, observations: Any, actions: th.Tensor, critic: Any = None) -> th.Tensor:
        """Q(s, a), shape (batch,): the mean over all quantiles of all critics (``critic``:
        another one of the same kind, default the model's)."""
        critic = self.critic if critic is None else critic
        return critic(observations, actions).mean(dim=(1, 2))
