"""SAC for sim-to-online fine-tuning: SB3's SAC with a delayed, slower actor and the package's
stabilisers. A user's SB3 script changes by one import.

:class:`SoftActorCriticMixin` is the training loop of the SAC family (SAC here, TQC in
:mod:`sim2online_envs.agents.tqc`): SB3's ``SAC.train`` step for step (same order of random
draws, so that with every addition off the run is SB3's bit for bit), with the delayed actor,
gradient clipping, augmentation and the action-rate penalty; each algorithm gives its critic
target, critic loss and the actor's Q.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import numpy as np
import stable_baselines3.sac.policies as sb3_sac_policies
import torch as th
from stable_baselines3 import SAC as SB3SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import (
    FloatSchedule,
    get_parameters_by_name,
    polyak_update,
    update_learning_rate,
)
from torch.nn import functional

from sim2online_envs.agents.common import FineTuningMixin, frozen
from sim2online_envs.agents.policies import SACCnnPolicy, SACMultiInputPolicy, SACPolicy


class SoftActorCriticMixin(FineTuningMixin):
    """The SAC family's ``train``: SB3's order of operations plus this package's additions.

    Per gradient step (SB3's ``SAC.train``): sample a batch; on an actor step, sample the actor
    on the observations and take the temperature step; the critic target from the next
    observations; the critic step; on an actor step, the actor step (the critic frozen, the
    temperature of before its step); the Polyak update every ``target_update_interval``-th step
    of this call (SB3 counts within each ``train`` call). Off the actor steps
    (``policy_delay``) no actor forward or backward pass is made.
    """

    actor: Any
    critic: Any
    critic_target: Any
    log_ent_coef: th.Tensor | None
    ent_coef_optimizer: th.optim.Optimizer | None
    ent_coef_tensor: th.Tensor
    target_entropy: Any
    target_update_interval: int
    tau: float
    gamma: float
    use_sde: bool
    policy_delay: int
    ent_coef_learning_rate: float | Schedule | None

    def _setup_temperature_rate(self) -> None:
        """Show the temperature's own rate from the start (SB3 builds it with learning_rate)."""
        if not hasattr(self, "ent_coef_learning_rate"):
            self.ent_coef_learning_rate = None
        if self.ent_coef_optimizer is not None:
            update_learning_rate(self.ent_coef_optimizer, self.ent_coef_lr_schedule(1.0))

    @property
    def ent_coef_lr_schedule(self) -> Schedule:
        """The temperature's rate: ``ent_coef_learning_rate``, else ``lr_schedule`` as it is now."""
        if self.ent_coef_learning_rate is None:
            return self.lr_schedule
        return FloatSchedule(self.ent_coef_learning_rate)

    def _ent_coef(self) -> th.Tensor:
        if self.log_ent_coef is not None:
            return th.exp(self.log_ent_coef.detach())
        return self.ent_coef_tensor

    # -- what each algorithm of the family gives ----------------------------------------------

    def _critic_target_values(
        self,
        data: ReplayBufferSamples,
        next_observations: Any,
        next_actions: th.Tensor,
        next_log_prob: th.Tensor,
        ent_coef: th.Tensor,
        discounts: Any,
    ) -> th.Tensor:
        raise NotImplementedError

    def _critic_loss(self, observations: Any, actions: th.Tensor, target: th.Tensor) -> th.Tensor:
        raise NotImplementedError

    def _actor_q(self, observations: Any, actions_pi: th.Tensor) -> th.Tensor:
        """The Q-value (batch, 1) the actor maximises."""
        raise NotImplementedError

    # -- the loop -------------------------------------------------------------------------

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

        for gradient_step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr, attr-defined]
            discounts = data.discounts if data.discounts is not None else self.gamma
            observations = self._augment(data.observations)
            next_observations = self._augment(data.next_observations)
            if self.use_sde:
                self.actor.reset_noise()
            actor_step = self._actor_update_due()
            ent_coef = self._ent_coef()
            if actor_step:
                actions_pi, log_prob = self.actor.action_log_prob(observations)
                log_prob = log_prob.reshape(-1, 1)
                self._temperature_step(log_prob, metrics)
            metrics["ent_coef"].append(ent_coef.item())

            with th.no_grad():
                next_actions, next_log_prob = self.actor.action_log_prob(next_observations)
                target = self._critic_target_values(
                    data,
                    next_observations,
                    next_actions,
                    next_log_prob.reshape(-1, 1),
                    ent_coef,
                    discounts,
                )

            critic_loss = self._critic_loss(observations, data.actions, target)
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self._clip_gradients(self.critic.optimizer)
            self.critic.optimizer.step()
            self._n_updates += 1
            metrics["critic_loss"].append(critic_loss.item())

            if actor_step:
                self._actor_step(
                    observations, next_observations, actions_pi, log_prob, ent_coef, metrics
                )

            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)  # type: ignore[attr-defined]

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")  # type: ignore[attr-defined]
        self.logger.record("train/n_actor_updates", self._n_actor_updates, exclude="tensorboard")  # type: ignore[attr-defined]
        for key, values in metrics.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))  # type: ignore[attr-defined]

    def _actor_step(
        self,
        observations: Any,
        next_observations: Any,
        actions_pi: th.Tensor,
        log_prob: th.Tensor,
        ent_coef: th.Tensor,
        metrics: dict[str, list[float]],
    ) -> None:
        """One actor update from actions sampled before the critic step (SB3's order)."""
        # The actor loss must not write gradients into the critic (nor its encoder).
        with frozen(self.critic):
            q_pi = self._actor_q(observations, actions_pi)
        actor_loss = (ent_coef * log_prob - q_pi).mean()
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

    def _temperature_step(self, log_prob: th.Tensor, metrics: dict[str, list[float]]) -> None:
        if self.ent_coef_optimizer is None or self.log_ent_coef is None:
            return
        ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
        metrics["ent_coef_loss"].append(ent_coef_loss.item())
        self.ent_coef_optimizer.zero_grad()
        ent_coef_loss.backward()
        self.ent_coef_optimizer.step()

    # -- hand-off choices ---------------------------------------------------------------------

    def fix_ent_coef(self, value: float) -> None:
        """Use a fixed temperature from now on (no temperature optimiser), e.g. SGFT's 0.01."""
        if not value > 0:
            raise ValueError(f"ent_coef must be > 0, got {value}")
        self.ent_coef = float(value)
        self.log_ent_coef = None
        self.ent_coef_optimizer = None
        self.ent_coef_tensor = th.tensor(float(value), device=self.device)  # type: ignore[attr-defined]

    # -- the background learner's copy --------------------------------------------------------

    def _trainable_names(self) -> list[str]:
        return ["policy", "log_ent_coef", "ent_coef_optimizer"]

    def _optimizer_names(self) -> list[str]:
        return [*super()._optimizer_names(), "ent_coef_optimizer"]

    def _tensor_names(self) -> list[str]:
        return ["log_ent_coef"]


class SAC(SoftActorCriticMixin, SB3SAC):
    """Soft Actor-Critic (SB3) with the stabilisers for the sim-to-real jump.

    Every SB3 ``SAC`` argument keeps its meaning; with the added ones at their defaults the run
    is SB3's ``SAC``'s bit for bit (same seed, same env). These are added:

    ======================== ================================================================
    Argument                 Meaning
    ======================== ================================================================
    policy_delay             M: the actor and the temperature are updated once every M
                             critic updates (the study: 20); on the other steps no actor
                             forward/backward pass is made. Default 1 (SB3's SAC).
    actor_learning_rate      The actor optimiser's rate (float or SB3 schedule of the
                             remaining progress); default: ``learning_rate`` (``lr_schedule``,
                             also when replaced mid-run). The study: 1e-5 with
                             ``learning_rate`` 3e-4 for the critics.
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
    target_subset_size       REDQ's M: with N = ``policy_kwargs["n_critics"]`` critics, the
                             target is the minimum over M of them drawn at random for each
                             gradient step, and the actor maximises the mean of all N (REDQ,
                             Chen et al. 2021; pair with ``critic_layer_norm=True``). Default
                             None: SB3's minimum over all critics for both.
    action_rate_penalty      λ ≥ 0: the actor loss gains λ · mean ‖μ(s′) − μ(s)‖² (μ the
                             deterministic action in [-1, 1], s′ the next observation), which
                             favours actions that change little between control steps (real
                             motors, no bang-bang). Default 0 (off).
    critic_warmup_steps      ResFiT: the first N gradient steps after the hand-off update the
                             critic only (the actor and temperature stay). Default 0.
    action_selection_samples Batch online RL: while collecting, N actions are sampled from the
                             policy and the one with the highest Q (min over the critics) is
                             executed (``q_guided_predict`` does the same for evaluation).
                             Default 1 (SB3's sampling).
    value_shaping            SGFT: at the hand-off the current actor and critic (the prior's)
                             are frozen as V_sim(s) = min_j Q_j(s, μ(s)); every stored reward is
                             r + γ·V_sim(s′) − V_sim(s) (V_sim(s′) = 0 at a true end). Default
                             False.
    value_shaping_horizon    SGFT's H: 1 stores every transition as a true terminal (the
                             critic's target is the shaped reward, only V_sim bootstraps);
                             None keeps bootstrapping (PBRS-SAC). Default 1.
    residual_scale           ResFiT: at the hand-off the actor becomes clip(base(s) + scale ·
                             tanh(u)) over a frozen copy of itself, the residual network seeing
                             (s, base(s)) with a zero mean head (same actions at first); the
                             critic sees the combined action. MlpPolicy only. Default None.
    reset_critic_at_hand_off Re-initialise the critic at the hand-off (SGFT). Default False.
    ent_coef_at_hand_off     A fixed temperature from the hand-off on (SGFT: 0.01). Default
                             None (the prior's temperature and its optimiser).
    ======================== ================================================================

    The hand-off (:meth:`hand_off`) runs at the start of the first ``learn`` after the settings
    ask for it, on the weights as they are then (a loaded prior's), and is saved with the model
    so that a resumed run does not repeat it. Temporally correlated exploration noise: SB3's
    ``action_noise`` with :func:`~sim2online_envs.agents.ou_noise` or
    :class:`~sim2online_envs.agents.ColoredActionNoise`. :func:`~sim2online_envs.agents.recipe`
    gives every method's published settings.

    Policies: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` map to
    :mod:`sim2online_envs.agents.policies`, which add ``policy_kwargs`` for a BRO or LayerNorm
    critic, a critic-trained shared image encoder and DrQ augmentation. Target networks are
    Polyak-updated every ``target_update_interval`` gradient steps counted within each ``train``
    call (SB3's rule).

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
    _sb3_policy_classes: ClassVar[dict[type, type]] = {
        SACPolicy: sb3_sac_policies.SACPolicy,
        SACCnnPolicy: sb3_sac_policies.CnnPolicy,
        SACMultiInputPolicy: sb3_sac_policies.MultiInputPolicy,
    }
    _policy_base: ClassVar[type | None] = sb3_sac_policies.SACPolicy

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
        target_subset_size: int | None = None,
        action_rate_penalty: float = 0.0,
        critic_warmup_steps: int = 0,
        action_selection_samples: int = 1,
        value_shaping: bool = False,
        value_shaping_horizon: int | None = 1,
        residual_scale: float | None = None,
        reset_critic_at_hand_off: bool = False,
        ent_coef_at_hand_off: float | None = None,
    ):
        if not isinstance(policy_delay, int) or policy_delay < 1:
            raise ValueError(f"policy_delay must be an int >= 1, got {policy_delay!r}")
        self.policy_delay = policy_delay
        self.ent_coef_learning_rate = ent_coef_learning_rate
        self.target_subset_size = target_subset_size
        self._init_fine_tuning(
            actor_learning_rate, warm_start_steps, async_updates, max_grad_norm, action_rate_penalty
        )
        self._init_methods(
            critic_warmup_steps=critic_warmup_steps,
            action_selection_samples=action_selection_samples,
            value_shaping=value_shaping,
            value_shaping_horizon=value_shaping_horizon,
            residual_scale=residual_scale,
            reset_critic_at_hand_off=reset_critic_at_hand_off,
            ent_coef_at_hand_off=ent_coef_at_hand_off,
        )
        if residual_scale is not None:
            # A model built with a residual actor from the start (a residual over a random base
            # is seldom wanted: load a prior and let the hand-off make the residual instead).
            policy_kwargs = {**(policy_kwargs or {}), "residual_scale": residual_scale}
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
        self._adopt_own_policy_class()
        super()._setup_model()
        self._setup_fine_tuning()
        self._setup_temperature_rate()
        if not hasattr(self, "target_subset_size"):
            self.target_subset_size = None
        subset = self.target_subset_size
        if subset is not None:
            n_critics = len(self.critic.q_networks)
            if (
                not isinstance(subset, int)
                or isinstance(subset, bool)
                or not 1 <= subset <= n_critics
            ):
                raise ValueError(
                    f"target_subset_size must be an int in [1, n_critics={n_critics}] or None, "
                    f"got {subset!r}"
                )

    def _create_aliases(self) -> None:
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
        next_q = th.cat(self.critic_target(next_observations, next_actions), dim=1)
        if self.target_subset_size is not None:
            subset = th.randperm(next_q.shape[1], device=next_q.device)[: self.target_subset_size]
            next_q = next_q[:, subset]
        next_q, _ = th.min(next_q, dim=1, keepdim=True)
        next_q = next_q - ent_coef * next_log_prob
        return data.rewards + (1 - data.dones) * discounts * next_q

    def _critic_loss(self, observations: Any, actions: th.Tensor, target: th.Tensor) -> th.Tensor:
        current_q = self.critic(observations, actions)
        loss = 0.5 * sum(functional.mse_loss(q, target) for q in current_q)
        assert isinstance(loss, th.Tensor)
        return loss

    def _actor_q(self, observations: Any, actions_pi: th.Tensor) -> th.Tensor:
        q_pi = th.cat(self.critic(observations, actions_pi), dim=1)
        if self.target_subset_size is not None:
            return q_pi.mean(dim=1, keepdim=True)
        min_q_pi, _ = th.min(q_pi, dim=1, keepdim=True)
        return min_q_pi
