"""What SAC, TD3, TQC and CrossQ share here: warm start, actor learning rate, gradient clipping,
the action-rate penalty, background updates, whole-state save/load with RNGs, and clear errors
for bad checkpoints and buffers.

:class:`FineTuningMixin` goes before the SB3 (or sb3-contrib) class in the bases (``class
SAC(FineTuningMixin, sb3.SAC)``); everything else of SB3's API stays as it is.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import inspect
import io
import json
import logging
import pathlib
import pickle
import threading
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, TypeVar

import cloudpickle
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.preprocessing import get_obs_shape
from stable_baselines3.common.save_util import save_to_pkl
from stable_baselines3.common.type_aliases import (
    MaybeCallback,
    RolloutReturn,
    Schedule,
    TrainFreq,
    TrainFrequencyUnit,
)
from stable_baselines3.common.utils import FloatSchedule, update_learning_rate

from sim2online_envs.agents.buffers import MixingReplayBuffer
from sim2online_envs.agents.checkpoint import (
    atomic_write,
    capture_rng_state,
    restore_rng_state,
    with_suffix_if_missing,
)

logger = logging.getLogger(__name__)

SelfFineTuning = TypeVar("SelfFineTuning", bound="FineTuningMixin")

#: policy_kwargs keys of this package's policies (agents.policies), dropped when a model is saved
#: under SB3's policy class.
EXTRA_POLICY_KWARGS = (
    "critic_arch",
    "critic_width",
    "critic_blocks",
    "critic_layer_norm",
    "image_augmentation",
    "random_shift_pad",
    "residual_scale",
)

#: Errors that mean "this file is not a complete checkpoint/buffer" when reading it.
_CORRUPT_FILE_ERRORS = (
    zipfile.BadZipFile,
    EOFError,
    pickle.UnpicklingError,
    UnicodeDecodeError,
    ValueError,
    KeyError,
    AttributeError,
    IndexError,
    TypeError,
)


class _StagingBuffer:
    """Holds the transitions of the episode being collected while the background learner samples
    the replay buffer; they enter it at the next boundary at which the learner is idle."""

    def __init__(self) -> None:
        self.transitions: list[tuple[Any, ...]] = []

    @staticmethod
    def _copy(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: np.array(item, copy=True) for key, item in value.items()}
        return np.array(value, copy=True)

    def add(
        self,
        obs: Any,
        next_obs: Any,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        # The replay buffer reads only the truncation flag from infos.
        slim_infos = [
            {"TimeLimit.truncated": info.get("TimeLimit.truncated", False)} for info in infos
        ]
        self.transitions.append(
            (*(self._copy(v) for v in (obs, next_obs, action, reward, done)), slim_infos)
        )

    def flush_into(self, buffer: ReplayBuffer) -> None:
        for transition in self.transitions:
            buffer.add(*transition)
        self.transitions.clear()

    def __len__(self) -> int:
        return len(self.transitions)


class BackgroundLearner:
    """Runs gradient steps on a copy of the learner in a thread, so that acting never waits.

    The model (what acts, what ``predict`` and callbacks see) keeps fixed weights during a rollout.
    At each rollout boundary (:meth:`on_boundary`), if the background job has finished, the copy's
    whole trainable state (weights, targets, optimisers, temperature, counters) is copied into the
    model, the rollout's transitions enter the replay buffer, and the next job starts with the
    gradient steps due so far. If the job is still running nothing waits: the due steps carry over
    to the next boundary (the update-to-data ratio is kept, the lag is logged).

    The learner thread uses the global torch/numpy RNGs concurrently with acting, so runs with
    ``async_updates=True`` are not bit-reproducible; synchronous runs are.
    """

    def __init__(self, model: FineTuningMixin):
        self.model = model
        self.clone = model._make_learner_copy()
        self.staging = _StagingBuffer()
        self.pending_steps = 0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.jobs_started = 0
        self.boundaries_busy = 0

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, gradient_steps: int) -> None:
        try:
            self.clone._train_due(gradient_steps)
        except BaseException as error:  # re-raised in the acting thread at the next boundary
            self._error = error

    def _collect(self) -> None:
        """Join a finished job; publish its state to the model; re-raise a failure."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self._error is not None:
                error, self._error = self._error, None
                raise RuntimeError("the background learner failed") from error
            self.model._copy_learner_state_from(self.clone)

    def on_boundary(self, gradient_steps: int) -> None:
        """Called by ``learn`` after each rollout with the gradient steps it made due."""
        self.pending_steps += gradient_steps
        if self.busy:
            self.boundaries_busy += 1
            logger.debug(
                "background learner still busy at a rollout boundary; %d steps pending",
                self.pending_steps,
            )
            return
        self._collect()
        self.staging.flush_into(self.model.replay_buffer)
        if self.pending_steps > 0:
            self.clone._current_progress_remaining = self.model._current_progress_remaining
            steps, self.pending_steps = self.pending_steps, 0
            self._error = None
            self._thread = threading.Thread(
                target=self._run, args=(steps,), name="sim2online-learner", daemon=True
            )
            self.jobs_started += 1
            self._thread.start()

    def finish(self, run_pending: bool = True) -> None:
        """Wait for the running job, store staged data, run what is still due, publish."""
        try:
            self._collect()
        finally:
            self.staging.flush_into(self.model.replay_buffer)
        if run_pending and self.pending_steps > 0:
            self.clone._current_progress_remaining = self.model._current_progress_remaining
            self.clone._train_due(self.pending_steps)
            self.pending_steps = 0
            self.model._copy_learner_state_from(self.clone)


class FineTuningMixin:
    """Sim-to-online additions shared by this package's SAC, TD3, TQC and CrossQ (see their
    docstrings). Each class writes its own ``train`` loop (SB3's, step for step, plus the
    additions); everything else lives here once."""

    #: SB3's policy class for each of this class's own (same networks, same state dict): a model
    #: whose policy has no extra saves under SB3's class, so that plain SB3 loads the file.
    _sb3_policy_classes: ClassVar[dict[type, type]] = {}
    #: The policy class every policy of this algorithm derives from (SB3's / sb3-contrib's):
    #: a file whose policy is not one was saved by another algorithm.
    _policy_base: ClassVar[type | None] = None

    # Provided by SB3's algorithm classes.
    policy: Any
    actor: Any
    critic: Any
    critic_target: Any
    replay_buffer: ReplayBuffer | None
    observation_space: spaces.Space
    action_space: spaces.Space
    num_timesteps: int
    learning_starts: int
    _n_updates: int
    _current_progress_remaining: float
    lr_schedule: Schedule

    def _init_fine_tuning(
        self,
        actor_learning_rate: float | Schedule | None,
        warm_start_steps: int,
        async_updates: bool,
        max_grad_norm: float | None,
        action_rate_penalty: float = 0.0,
    ) -> None:
        """Store and check the shared arguments (before SB3's constructor builds the model)."""
        _check_fine_tuning_arguments(
            warm_start_steps=warm_start_steps,
            max_grad_norm=max_grad_norm,
            action_rate_penalty=action_rate_penalty,
        )
        self.actor_learning_rate = actor_learning_rate
        self.warm_start_steps = warm_start_steps
        # "process": the learner in a process of its own (agents.distributed, Ray)
        self.async_updates = async_updates if async_updates == "process" else bool(async_updates)
        self.max_grad_norm = max_grad_norm
        self.action_rate_penalty = float(action_rate_penalty)
        self._n_actor_updates = 0
        self._learner: BackgroundLearner | None = None
        self._critic_only = False

    def _init_methods(
        self,
        critic_warmup_steps: int = 0,
        action_selection_samples: int = 1,
        value_shaping: bool = False,
        value_shaping_horizon: int | None = 1,
        residual_scale: float | None = None,
        reset_critic_at_hand_off: bool = False,
        ent_coef_at_hand_off: float | None = None,
    ) -> None:
        """Store the settings of the other methods (ResFiT, SGFT, batch online RL); see
        :mod:`sim2online_envs.agents.methods` and the algorithm's docstring."""
        _check_method_arguments(
            critic_warmup_steps=critic_warmup_steps,
            action_selection_samples=action_selection_samples,
            value_shaping_horizon=value_shaping_horizon,
            residual_scale=residual_scale,
            ent_coef_at_hand_off=ent_coef_at_hand_off,
        )
        self.critic_warmup_steps = critic_warmup_steps
        self.action_selection_samples = action_selection_samples
        self.value_shaping = bool(value_shaping)
        self.value_shaping_horizon = value_shaping_horizon
        self.residual_scale = residual_scale
        self.reset_critic_at_hand_off = bool(reset_critic_at_hand_off)
        self.ent_coef_at_hand_off = ent_coef_at_hand_off

    def _adopt_own_policy_class(self) -> None:
        """An SB3 policy class (a file saved by SB3 or by :meth:`save`) becomes this package's
        own, which builds the same networks; called before SB3's _setup_model builds them.

        Not where the meaning would change: SB3's shared encoder follows the actor loss, this
        package's the critic loss, so such a policy stays SB3's."""
        policy_kwargs = getattr(self, "policy_kwargs", None) or {}
        if policy_kwargs.get("share_features_extractor"):
            return
        own = {sb3: ours for ours, sb3 in self._sb3_policy_classes.items()}
        policy_class = getattr(self, "policy_class", None)
        if policy_class in own:
            self.policy_class = own[policy_class]

    def _setup_fine_tuning(self) -> None:
        """Schedules that depend on the (possibly loaded) arguments; called in _setup_model."""
        # Models saved before these attributes existed (or SB3 models loaded through this class).
        for name, default in (
            ("_n_actor_updates", 0),
            ("_learner", None),
            ("_critic_only", False),
            ("action_rate_penalty", 0.0),
            ("actor_learning_rate", None),
            ("warm_start_steps", 0),
            ("async_updates", False),
            ("max_grad_norm", None),
            *_METHOD_DEFAULTS.items(),
        ):
            if not hasattr(self, name):
                setattr(self, name, default)
        # Arguments given to load() skip the constructor's checks.
        _check_fine_tuning_arguments(
            policy_delay=self.policy_delay,  # type: ignore[attr-defined]
            warm_start_steps=self.warm_start_steps,
            max_grad_norm=self.max_grad_norm,
            action_rate_penalty=self.action_rate_penalty,
        )
        _check_method_arguments(
            critic_warmup_steps=self.critic_warmup_steps,
            action_selection_samples=self.action_selection_samples,
            value_shaping_horizon=self.value_shaping_horizon,
            residual_scale=self.residual_scale,
            ent_coef_at_hand_off=self.ent_coef_at_hand_off,
        )
        kwargs = getattr(self, "replay_buffer_kwargs", None)
        if isinstance(kwargs, dict) and "offline_data" in kwargs:
            # D0 now lives in the buffer (saved by save_replay_buffer). Kept here, it would be
            # copied into every model file and re-read by load(), which then fails once the
            # file has moved. A new dict: the user's own is left as it was.
            self.replay_buffer_kwargs = {k: v for k, v in kwargs.items() if k != "offline_data"}
        # SB3 builds every optimiser with learning_rate; show the actor's own rate from the start.
        update_learning_rate(self.actor.optimizer, self.actor_lr_schedule(1.0))

    @property
    def actor_lr_schedule(self) -> Schedule:
        """The actor's rate: ``actor_learning_rate``, else ``lr_schedule`` as it is now (a
        replaced ``model.lr_schedule``, SB3's way to change the rate mid-run, reaches it)."""
        if self.actor_learning_rate is None:
            return self.lr_schedule
        return FloatSchedule(self.actor_learning_rate)

    # -- properties users read -----------------------------------------------------------------

    @property
    def n_actor_updates(self) -> int:
        """How many actor (and, for SAC, temperature) updates have been made."""
        return self._n_actor_updates

    def _actor_update_due(self) -> bool:
        """Before the next critic update: will it be one of the every-``policy_delay``-th, which
        the actor follows? (False in :meth:`train_critic`.)"""
        return (self._n_updates + 1) % self.policy_delay == 0 and not self._critic_only  # type: ignore[attr-defined]

    @property
    def in_warm_start(self) -> bool:
        """True while the first ``warm_start_steps`` transitions are being collected."""
        return self.num_timesteps < self.warm_start_steps

    # -- optimisation helpers ----------------------------------------------------------------

    def _set_learning_rates(self, extra: Iterable[tuple[str, th.optim.Optimizer, Schedule]] = ()):
        """Critic: ``learning_rate``; actor: ``actor_learning_rate``; plus ``extra`` optimisers."""
        progress = self._current_progress_remaining
        rates = [
            ("learning_rate", self.critic.optimizer, self.lr_schedule),
            ("actor_learning_rate", self.actor.optimizer, self.actor_lr_schedule),
            *extra,
        ]
        for name, optimizer, schedule in rates:
            value = schedule(progress)
            update_learning_rate(optimizer, value)
            self.logger.record(f"train/{name}", value)  # type: ignore[attr-defined]

    def _clip_gradients(self, optimizer: th.optim.Optimizer) -> None:
        if self.max_grad_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            th.nn.utils.clip_grad_norm_(params, self.max_grad_norm)

    def _log_online_fraction(self) -> None:
        """Log α. The mixing buffer counts its own minibatches, i.e. the gradient steps since
        mixing began: a prior loaded with a million pretraining updates still starts at α(0)."""
        if isinstance(self.replay_buffer, MixingReplayBuffer):
            self.logger.record(  # type: ignore[attr-defined]
                "train/online_fraction", self.replay_buffer.current_online_fraction()
            )

    def _action_rate_loss(self, observations: Any, next_observations: Any) -> th.Tensor | None:
        """``action_rate_penalty`` · mean ‖μ(s′) − μ(s)‖² over the batch, μ the deterministic
        action in [-1, 1] (CAPS' temporal smoothness term): the actor is pulled towards actions
        that change little from one control step to the next. None when the penalty is 0."""
        if not self.action_rate_penalty:
            return None
        actions = self._deterministic_actions(observations)
        next_actions = self._deterministic_actions(next_observations)
        rate = (next_actions - actions).pow(2).sum(dim=1).mean()
        return self.action_rate_penalty * rate

    def _deterministic_actions(self, observations: Any) -> th.Tensor:
        """The actor's deterministic (squashed) actions; TD3 overrides (its actor has no flag)."""
        return self.actor(observations, deterministic=True)

    def _deterministic_actions_of(self, actor: Any, observations: Any) -> th.Tensor:
        """``actor``'s deterministic actions (a copy of this model's actor, e.g. SGFT's guide)."""
        if "deterministic" in inspect.signature(actor.forward).parameters:
            return actor(observations, deterministic=True)
        return actor(observations)

    def critic_value(self, observations: Any, actions: th.Tensor, critic: Any = None) -> th.Tensor:
        """Q(s, a), shape (batch,): the minimum over the critics (TQC: the mean of its
        quantiles), for diagnostics such as :class:`~sim2online_envs.agents.QErrorCallback`,
        Q-guided action selection and SGFT's V_sim; ``critic``: another one of the same kind
        (default: the model's)."""
        critic = self.critic if critic is None else critic
        q = th.cat(critic(observations, actions), dim=1)
        return th.min(q, dim=1).values

    def _augment(self, observations: Any) -> Any:
        augment = getattr(self.policy, "augment", None)
        return observations if augment is None else augment(observations)

    # -- warm start and the learning loop ------------------------------------------------------

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        # Warm start acts with the policy itself (SB3's predict/sampling path, its exploration),
        # never with SB3's uniform-random learning_starts actions.
        if self.warm_start_steps > 0:
            learning_starts = 0
        if self.action_selection_samples > 1 and self.num_timesteps >= learning_starts:
            return self._q_guided_sample_action(action_noise)
        return super()._sample_action(learning_starts, action_noise, n_envs)  # type: ignore[misc]

    def _q_guided_sample_action(
        self, action_noise: ActionNoise | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batch online RL's implicit extraction: of ``action_selection_samples`` actions
        sampled from the policy, execute the one with the highest Q; then SB3's noise and
        scaling as in ``_sample_action``."""
        from sim2online_envs.agents.methods import q_guided_actions

        scaled_action = q_guided_actions(self, self._last_obs, self.action_selection_samples)  # type: ignore[attr-defined]
        if action_noise is not None:
            scaled_action = np.clip(scaled_action + action_noise(), -1, 1)
        return self.policy.unscale_action(scaled_action), scaled_action

    def q_guided_predict(self, observation: Any, n_samples: int | None = None) -> np.ndarray:
        """The argmax-Q action among ``n_samples`` (default ``action_selection_samples``)
        policy samples for each observation, in the env's action bounds (batch online RL's
        implicit policy extraction at evaluation)."""
        from sim2online_envs.agents.methods import q_guided_actions

        n = self.action_selection_samples if n_samples is None else n_samples
        self.policy.set_training_mode(False)
        vectorized = not (
            isinstance(observation, np.ndarray)
            and observation.shape == self.observation_space.shape
        )
        batch = observation if vectorized else observation[None]
        actions = self.policy.unscale_action(q_guided_actions(self, batch, n))
        return actions if vectorized else actions[0]

    def _store_transition(
        self,
        replay_buffer: Any,
        buffer_action: np.ndarray,
        new_obs: Any,
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        # SGFT: the stored reward is shaped by the frozen sim value (and H = 1 makes every
        # stored transition terminal); SB3's own storage otherwise.
        if self.value_shaping and self._value_guide is not None:
            from sim2online_envs.agents.methods import ShapedStorage

            replay_buffer = ShapedStorage(
                replay_buffer, self, self._value_guide, self.value_shaping_horizon
            )
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)  # type: ignore[misc]

    def _gradient_steps_due(self, rollout: RolloutReturn) -> int:
        """Gradient steps after a rollout: none during warm start or before ``learning_starts``."""
        if self.num_timesteps <= 0 or self.num_timesteps <= self.learning_starts:
            return 0
        if self.num_timesteps < self.warm_start_steps:
            return 0
        steps = self.gradient_steps if self.gradient_steps >= 0 else rollout.episode_timesteps  # type: ignore[attr-defined]
        return max(int(steps), 0)

    def learn(
        self: SelfFineTuning,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfFineTuning:
        """SB3's ``learn`` plus warm start and, with ``async_updates``, background updates.

        ``tb_log_name`` defaults to SB3's for the algorithm (``"SAC"``, ``"TD3"``, ``"TQC"``,
        ``"CrossQ"``), so TensorBoard runs land in ``SAC_1`` etc. as with SB3."""
        if tb_log_name is None:
            tb_log_name = self._sb3_tb_log_name()
        self.hand_off()
        total_timesteps, callback = self._setup_learn(  # type: ignore[attr-defined]
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        env = self.env  # type: ignore[attr-defined]
        if env is None:
            raise RuntimeError("set an environment (set_env) before calling learn()")
        assert isinstance(self.train_freq, TrainFreq)  # type: ignore[attr-defined]
        if self.async_updates and self.train_freq.unit != TrainFrequencyUnit.EPISODE:  # type: ignore[attr-defined]
            logger.warning(
                "async_updates with train_freq=%s: the background learner publishes weights at "
                "rollout boundaries, which are then not episode boundaries (the acting policy "
                "changes mid-episode); use train_freq=(1, 'episode')",
                self.train_freq,  # type: ignore[attr-defined]
            )
        if self.async_updates == "process":
            from sim2online_envs.agents.distributed import ProcessLearner

            learner: Any = ProcessLearner(self)
        else:
            learner = BackgroundLearner(self) if self.async_updates else None
        self._learner = learner
        finished = False
        try:
            while self.num_timesteps < total_timesteps:
                rollout = self.collect_rollouts(  # type: ignore[attr-defined]
                    env,
                    train_freq=self.train_freq,  # type: ignore[attr-defined]
                    action_noise=self.action_noise,  # type: ignore[attr-defined]
                    callback=callback,
                    learning_starts=self.learning_starts,
                    replay_buffer=learner.staging if learner else self.replay_buffer,
                    log_interval=log_interval,
                )
                if not rollout.continue_training:
                    break
                steps = self._gradient_steps_due(rollout)
                if learner is not None:
                    learner.on_boundary(steps)
                elif steps > 0:
                    self._train_due(steps)
            finished = True
        finally:
            if learner is not None:
                self._learner = None
                learner.finish(run_pending=finished)
                if learner.boundaries_busy:
                    logger.info(
                        "background learner: %d jobs, busy at %d rollout boundaries",
                        learner.jobs_started,
                        learner.boundaries_busy,
                    )
        callback.on_training_end()
        return self

    def _sb3_tb_log_name(self) -> str:
        """The ``tb_log_name`` default of the SB3 class this one extends."""
        for cls in type(self).__mro__:
            if issubclass(cls, FineTuningMixin) or "learn" not in cls.__dict__:
                continue
            default = inspect.signature(cls.learn).parameters["tb_log_name"].default
            if isinstance(default, str):
                return default
        return "run"

    def _train_due(self, gradient_steps: int) -> None:
        """``gradient_steps`` updates: critic-only while the critic warm-up lasts, then train."""
        warmup = min(self._critic_warmup_left, gradient_steps)
        if warmup > 0:
            self.train_critic(warmup)
            self._critic_warmup_left -= warmup
        if gradient_steps - warmup > 0:
            self.train(batch_size=self.batch_size, gradient_steps=gradient_steps - warmup)  # type: ignore[attr-defined]

    # -- hand-off choices -------------------------------------------------------------------------

    def _hand_off_plan(self) -> tuple[tuple[str, Any], ...]:
        """The hand-off steps the settings ask for, in the order they are applied."""
        plan: list[tuple[str, Any]] = []
        if self.value_shaping:
            plan.append(("value_guide", self.value_shaping_horizon))
        if self.residual_scale is not None:
            plan.append(("residual", float(self.residual_scale)))
        if self.reset_critic_at_hand_off:
            plan.append(("reset_critic", True))
        if self.ent_coef_at_hand_off is not None:
            plan.append(("ent_coef", float(self.ent_coef_at_hand_off)))
        if self.critic_warmup_steps:
            plan.append(("critic_warmup", int(self.critic_warmup_steps)))
        return tuple(plan)

    def hand_off(self) -> bool:
        """Apply the methods' hand-off to the weights as they are now (a loaded prior's), once:
        freeze SGFT's V_sim, make the actor ResFiT's residual over the frozen prior, reset the
        critic, fix the temperature, start the critic-only warm-up. ``learn`` calls it; what was
        applied is saved with the model, so a resumed run does not repeat it. Returns whether
        anything was applied now."""
        plan = self._hand_off_plan()
        done = tuple(tuple(step) for step in self._hand_off_done)
        if plan == done or not plan:
            return False
        for step, value in plan:
            if (step, value) in done:
                continue
            if step == "value_guide":
                from sim2online_envs.agents.methods import ValueGuide

                self._value_guide = ValueGuide(self)
            elif step == "residual":
                self._make_residual(value)
            elif step == "reset_critic":
                self.reset_critic()
            elif step == "ent_coef":
                self.fix_ent_coef(value)  # type: ignore[attr-defined]
            elif step == "critic_warmup":
                self._critic_warmup_left = value
        self._hand_off_done = plan
        logger.info("hand-off applied: %s", ", ".join(f"{k}={v}" for k, v in plan))
        return True

    def _make_residual(self, scale: float) -> None:
        """The actor becomes a residual actor over a frozen copy of itself (ResFiT)."""
        make = getattr(self.policy, "make_residual_actor", None)
        if make is None:
            raise ValueError(
                f"{type(self).__name__} with {type(self.policy).__name__}: residual_scale needs "
                "this package's SAC MlpPolicy"
            )
        if getattr(self.policy, "residual_scale", None) is not None:
            return  # already residual (a file saved after the hand-off)
        make(scale)
        self.policy_kwargs = {**(self.policy_kwargs or {}), "residual_scale": scale}  # type: ignore[attr-defined]
        self._create_aliases()  # type: ignore[attr-defined]
        update_learning_rate(
            self.actor.optimizer, self.actor_lr_schedule(self._current_progress_remaining)
        )

    def train_critic(self, gradient_steps: int, batch_size: int | None = None) -> None:
        """Critic-only gradient steps (targets included; actor and temperature fixed).

        ResFiT's critic warm-up before the actor moves, a fit of the critic to sim data D0 for a
        behaviour-cloned prior, or after :meth:`reset_critic`. Samples as ``train`` does (from D0
        alone while the online part is empty). Needs a logger: call after ``learn`` or
        ``set_logger``.
        """
        self._critic_only = True
        try:
            self.train(  # type: ignore[attr-defined]
                gradient_steps=gradient_steps,
                batch_size=self.batch_size if batch_size is None else batch_size,  # type: ignore[attr-defined]
            )
        finally:
            self._critic_only = False

    def reset_critic(self) -> None:
        """Re-initialise the Q-networks (not a shared image encoder), their targets and the
        critic optimiser's state: SGFT's hand-off, keeping the prior's actor."""
        target = getattr(self, "critic_target", None)  # CrossQ has none
        targets = target.q_networks if target is not None else [None] * len(self.critic.q_networks)
        for q_net, q_target in zip(self.critic.q_networks, targets, strict=True):
            for module in q_net.modules():
                _reset_module(module)
            if q_target is not None:
                q_target.load_state_dict(q_net.state_dict())
        self.critic.optimizer.state.clear()

    # -- the background learner's copy ---------------------------------------------------------

    def _trainable_names(self) -> list[str]:
        """Attributes holding trainable state (deep-copied together for the learner copy)."""
        return ["policy"]

    def _make_learner_copy(self: SelfFineTuning) -> SelfFineTuning:
        """A copy that shares the replay buffer and settings but owns its networks/optimisers."""
        clone = copy.copy(self)
        names = self._trainable_names()
        copies = copy.deepcopy({name: getattr(self, name) for name in names})
        for name, value in copies.items():
            setattr(clone, name, value)
        clone._create_aliases()  # type: ignore[attr-defined]
        clone.env = None  # type: ignore[attr-defined]
        clone._learner = None
        clone._logger = Logger(folder=None, output_formats=[])  # type: ignore[attr-defined]
        return clone

    def _copy_learner_state_from(self, source: FineTuningMixin) -> None:
        """Copy weights, targets, optimiser states, temperature and counters from ``source``."""
        self.policy.load_state_dict(source.policy.state_dict())
        for name in self._optimizer_names():
            target_opt, source_opt = _getattr_path(self, name), _getattr_path(source, name)
            if target_opt is not None and source_opt is not None:
                target_opt.load_state_dict(copy.deepcopy(source_opt.state_dict()))
        for name in self._tensor_names():
            target_t, source_t = getattr(self, name, None), getattr(source, name, None)
            if isinstance(target_t, th.Tensor) and isinstance(source_t, th.Tensor):
                with th.no_grad():
                    target_t.copy_(source_t)
        self._n_updates = source._n_updates
        self._n_actor_updates = source._n_actor_updates
        self._critic_warmup_left = source._critic_warmup_left
        # Publish what the learner logged (the acting thread owns the real logger).
        source_logger: Logger = source.logger  # type: ignore[attr-defined]
        for key, value in source_logger.name_to_value.items():
            exclude = source_logger.name_to_excluded.get(key, ())
            self.logger.record(key, value, exclude=exclude)  # type: ignore[attr-defined]
        source_logger.name_to_value.clear()
        source_logger.name_to_count.clear()
        source_logger.name_to_excluded.clear()

    def _optimizer_names(self) -> list[str]:
        return ["actor.optimizer", "critic.optimizer"]

    def _tensor_names(self) -> list[str]:
        return []

    # -- save / load ----------------------------------------------------------------------------

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_learner"]  # type: ignore[misc]

    def _sb3_policy_for_saving(self) -> tuple[type, dict[str, Any]] | None:
        """SB3's policy class and the policy_kwargs without this package's keys, where the
        policy is SB3's own network for network (no extra in use); else None."""
        sb3_class = self._sb3_policy_classes.get(self.policy_class)  # type: ignore[attr-defined]
        if sb3_class is None:
            return None
        kwargs = dict(self.policy_kwargs or {})  # type: ignore[attr-defined]
        policy = self.policy
        if (
            getattr(policy, "critic_arch", "mlp") != "mlp"
            or getattr(policy, "image_augmentation", None) is not None
            or getattr(policy, "critic_layer_norm", False)
            or getattr(policy, "residual_scale", None) is not None
            or kwargs.get("share_features_extractor", False)
        ):
            return None
        for key in EXTRA_POLICY_KWARGS:
            kwargs.pop(key, None)
        return sb3_class, kwargs

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """SB3's ``save`` plus the RNG states, written atomically (temp file, fsync, rename).

        A policy with none of this package's extras in use is saved under SB3's own policy
        class, so that plain SB3 (``stable_baselines3.SAC.load``) reads the file without this
        package installed; a BRO/LayerNorm critic, a critic-trained shared encoder, DrQ, a
        ``MixingReplayBuffer`` or an encoder class of this package need the package to load.

        In ``async_updates`` mode during ``learn`` the saved state is the one published at the
        last rollout boundary.
        """
        self._rng_state = capture_rng_state(self.action_space)
        saved_policy = self.policy_class, self.policy_kwargs  # type: ignore[attr-defined]
        as_sb3 = self._sb3_policy_for_saving()
        if as_sb3 is not None:
            self.policy_class, self.policy_kwargs = as_sb3
        try:
            if isinstance(path, (str, pathlib.Path)):
                target = with_suffix_if_missing(path, "zip")
                atomic_write(
                    target,
                    lambda file: super(FineTuningMixin, self).save(file, exclude, include),  # type: ignore[misc, arg-type]
                )
            else:
                super().save(path, exclude, include)  # type: ignore[misc]
        finally:
            del self._rng_state
            self.policy_class, self.policy_kwargs = saved_policy

    @classmethod
    def load(
        cls: type[SelfFineTuning],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: Any = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        restore_rng: bool = True,
        **kwargs: Any,
    ) -> SelfFineTuning:
        """SB3's ``load``; restores the RNG states saved with the model (``restore_rng``).

        A truncated or foreign file raises a ValueError naming it; a model for other spaces
        raises SB3's ValueError naming the spaces.
        """
        if isinstance(path, (str, pathlib.Path)):
            resolved = pathlib.Path(path)
            if not resolved.exists():
                resolved = with_suffix_if_missing(resolved, "zip")
            if not resolved.is_file():
                raise FileNotFoundError(f"no checkpoint at {path}")
            if not zipfile.is_zipfile(resolved) or not _has_model_data(resolved):
                # A cut file can end just after the zip inside it (torch's policy.pth).
                raise ValueError(
                    f"checkpoint {resolved} is truncated or not an SB3 model file "
                    "(not a complete zip archive with the model's data)"
                )
            path = resolved
        _check_saved_policy_class(cls, path, custom_objects)
        try:
            model = super().load(  # type: ignore[misc]
                path,
                env=env,
                device=device,
                custom_objects=custom_objects,
                print_system_info=print_system_info,
                force_reset=force_reset,
                **kwargs,
            )
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as error:
            raise ValueError(f"checkpoint {path} is truncated or corrupt: {error}") from error
        except KeyError as error:  # an optimiser or network this algorithm has, the file not
            raise ValueError(
                f"checkpoint {path} lacks {error} that {cls.__name__} needs: saved by another "
                "algorithm (e.g. SAC vs TD3) or a different setup"
            ) from error
        except RuntimeError as error:
            if "state_dict" in str(error) or "PytorchStreamReader" in str(error):
                raise ValueError(
                    f"checkpoint {path} does not fit this model's networks or is corrupt: {error}"
                ) from error
            raise
        rng_state = model.__dict__.pop("_rng_state", None)
        if restore_rng and rng_state is not None:
            restore_rng_state(rng_state, model.action_space)
        return model

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """SB3's ``save_replay_buffer`` (online part and D0 of a mixing buffer), atomically."""
        if self.replay_buffer is None:
            raise RuntimeError("there is no replay buffer to save")
        if isinstance(path, (str, pathlib.Path)):
            buffer = self.replay_buffer
            atomic_write(
                with_suffix_if_missing(path, "pkl"), lambda file: save_to_pkl(file, buffer)
            )
        else:
            save_to_pkl(path, self.replay_buffer)

    def load_replay_buffer(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        truncate_last_traj: bool = True,
    ) -> None:
        """SB3's ``load_replay_buffer`` with checks: a truncated file or a buffer for other spaces
        raises a ValueError naming the problem and keeps the current buffer.

        A model that mixes offline data (a :class:`MixingReplayBuffer`) refuses a plain SB3
        buffer, which would silently drop D0 and the mixing: put such a buffer into D0 with
        ``model.replay_buffer.load_offline(path)`` instead.
        """
        # SB3 allows loading after ``del model.replay_buffer``.
        previous = getattr(self, "replay_buffer", None)
        try:
            super().load_replay_buffer(path, truncate_last_traj)  # type: ignore[misc]
        except FileNotFoundError:
            raise
        except (AssertionError, *_CORRUPT_FILE_ERRORS) as error:
            self.replay_buffer = previous
            raise ValueError(
                f"replay buffer file {path} is truncated, corrupt or not an SB3 replay buffer: "
                f"{error!r}"
            ) from error
        try:
            check_buffer_spaces(self.replay_buffer, self.observation_space, self.action_space)
        except ValueError as error:
            self.replay_buffer = previous
            raise ValueError(f"replay buffer {path} does not fit this model: {error}") from error
        if isinstance(previous, MixingReplayBuffer) and not isinstance(
            self.replay_buffer, MixingReplayBuffer
        ):
            loaded = type(self.replay_buffer).__name__
            self.replay_buffer = previous
            raise ValueError(
                f"replay buffer {path} is a plain {loaded}, this model mixes offline data with "
                "a MixingReplayBuffer: loading it would drop D0 and the mixing; to use it as "
                "offline data call model.replay_buffer.load_offline(path)"
            )


def _has_model_data(path: pathlib.Path) -> bool:
    """Whether the zip archive at ``path`` has SB3's ``data`` entry (readable)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "data" in archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def _check_saved_policy_class(
    cls: type[FineTuningMixin], path: Any, custom_objects: dict[str, Any] | None
) -> None:
    """ValueError naming it when the file's policy is not one of ``cls``'s (another algorithm
    saved it), before SB3 builds the model from it and fails on a missing network. Reads only
    the policy class (SB3's own load reads the rest)."""
    base = cls._policy_base
    if base is None or not isinstance(path, pathlib.Path):
        return
    if custom_objects and "policy_class" in custom_objects:
        policy_class = custom_objects["policy_class"]
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                entry = json.loads(archive.read("data"))["policy_class"]
            policy_class = cloudpickle.loads(base64.b64decode(entry[":serialized:"].encode()))
        except (*_CORRUPT_FILE_ERRORS, OSError, RuntimeError, ImportError):
            return  # SB3's load reports it
    if isinstance(policy_class, type) and not issubclass(policy_class, base):
        raise ValueError(
            f"checkpoint {path} holds a {policy_class.__name__}, not a policy of "
            f"{cls.__name__} ({base.__name__}): saved by another algorithm"
        )


#: The methods' settings and hand-off state, for files saved before they existed.
_METHOD_DEFAULTS: dict[str, Any] = {
    "critic_warmup_steps": 0,
    "action_selection_samples": 1,
    "value_shaping": False,
    "value_shaping_horizon": 1,
    "residual_scale": None,
    "reset_critic_at_hand_off": False,
    "ent_coef_at_hand_off": None,
    "_hand_off_done": (),
    "_critic_warmup_left": 0,
    "_value_guide": None,
}


def _check_method_arguments(**arguments: Any) -> None:
    """ValueError naming the argument when a method setting is out of range."""
    for name in ("critic_warmup_steps", "action_selection_samples"):
        value = arguments[name]
        minimum = 0 if name == "critic_warmup_steps" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    horizon = arguments["value_shaping_horizon"]
    if horizon not in (1, None):
        raise ValueError(f"value_shaping_horizon must be 1 or None, got {horizon!r}")
    scale = arguments["residual_scale"]
    if scale is not None and not 0.0 < scale <= 2.0:
        raise ValueError(f"residual_scale must lie in (0, 2] or be None, got {scale!r}")
    ent = arguments["ent_coef_at_hand_off"]
    if ent is not None and not ent > 0:
        raise ValueError(f"ent_coef_at_hand_off must be > 0 or None, got {ent!r}")


def _check_fine_tuning_arguments(**arguments: Any) -> None:
    """ValueError naming the argument when one of the shared settings is out of range."""
    if "policy_delay" in arguments:
        delay = arguments["policy_delay"]
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 1:
            raise ValueError(f"policy_delay must be an int >= 1, got {delay!r}")
    steps = arguments.get("warm_start_steps", 0)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"warm_start_steps must be an int >= 0, got {steps!r}")
    norm = arguments.get("max_grad_norm")
    if norm is not None and not norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {norm!r}")
    penalty = arguments.get("action_rate_penalty", 0.0)
    if not isinstance(penalty, (int, float)) or isinstance(penalty, bool) or not penalty >= 0:
        raise ValueError(f"action_rate_penalty must be a float >= 0, got {penalty!r}")


def check_buffer_spaces(
    buffer: ReplayBuffer | None, observation_space: spaces.Space, action_space: spaces.Space
) -> None:
    """Raise a ValueError naming the field if ``buffer`` was made for other spaces."""
    if buffer is None:
        return
    if isinstance(buffer.observation_space, spaces.Dict) != isinstance(
        observation_space, spaces.Dict
    ):
        raise ValueError(
            f"observation space: buffer {buffer.observation_space}, model {observation_space}"
        )
    theirs, mine = get_obs_shape(buffer.observation_space), get_obs_shape(observation_space)
    if theirs != mine:
        raise ValueError(f"observation shape: buffer {theirs}, model {mine}")
    dtypes = _dtypes(buffer.observation_space), _dtypes(observation_space)
    if dtypes[0] != dtypes[1]:
        raise ValueError(f"observation dtype: buffer {dtypes[0]}, model {dtypes[1]}")
    if buffer.action_space.shape != action_space.shape:
        raise ValueError(
            f"action shape: buffer {buffer.action_space.shape}, model {action_space.shape}"
        )


def _dtypes(space: spaces.Space) -> Any:
    if isinstance(space, spaces.Dict):
        return {key: str(sub.dtype) for key, sub in space.spaces.items()}
    return str(space.dtype)


@contextlib.contextmanager
def frozen(module: th.nn.Module) -> Iterator[None]:
    """No gradients into ``module``'s parameters inside the block (their flags are restored)."""
    parameters = list(module.parameters())
    flags = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(parameters, flags, strict=True):
            p.requires_grad_(flag)


def _reset_module(module: th.nn.Module) -> None:
    """Re-initialise one layer: parameters, and the running statistics of a (re)norm layer
    (torch's BatchNorm, sb3-contrib's BatchRenorm of CrossQ)."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
    if hasattr(module, "reset_running_stats"):
        module.reset_running_stats()
    if hasattr(module, "ra_mean"):  # BatchRenorm: buffers ra_mean, ra_var, steps; scale, bias
        with th.no_grad():
            module.ra_mean.zero_()
            module.ra_var.fill_(1.0)
            module.steps.zero_()
            module.scale.fill_(1.0)
            module.bias.zero_()


def _getattr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


__all__ = ["BackgroundLearner", "FineTuningMixin", "check_buffer_spaces", "frozen"]
