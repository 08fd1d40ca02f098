"""SB3 SAC/TD3 and sb3-contrib TQC/CrossQ adapters that survive the sim-to-real jump.

A user's SB3 script changes by one import::

    from sim2online_envs.agents import SAC, paper_recipe

    model = SAC("MlpPolicy", env, **paper_recipe("racecar"))
    model.learn(50_000)

What the adapters add to SB3 (the same for sb3-contrib's ``TQC`` and ``CrossQ``; see each
object's docstring): buffer mixing with offline data (:class:`MixingReplayBuffer`), warm start
with the prior's own actions, a delayed and slower actor, an action-rate penalty, episodic
updates optionally in a background learner, whole-state atomic checkpoints, a BRO or LayerNorm
critic, REDQ-style critic ensembles (``target_subset_size``) and DrQ vision
(:mod:`sim2online_envs.agents.policies`), the study's recipes and a Q-error diagnostic
(:class:`QErrorCallback`).
"""

from sim2online_envs.agents.buffers import (
    DictMixingReplayBuffer,
    MixingReplayBuffer,
    retain_online_buffer,
)
from sim2online_envs.agents.checkpoint import (
    CheckpointCallback,
    load_checkpoint,
    load_replay_buffer_as_offline,
    save_checkpoint,
)
from sim2online_envs.agents.crossq import CrossQ
from sim2online_envs.agents.diagnostics import QErrorCallback
from sim2online_envs.agents.methods import (
    ColoredActionNoise,
    NStepMixingReplayBuffer,
    ResidualSACActor,
    ValueGuide,
    ou_noise,
    q_guided_actions,
)
from sim2online_envs.agents.policies import (
    BROCritic,
    ImageEncoder,
    LayerNormCritic,
    MultiInputEncoder,
    random_shift,
)
from sim2online_envs.agents.recipes import METHODS, paper_recipe, recipe, vanilla_recipe
from sim2online_envs.agents.sac import SAC
from sim2online_envs.agents.schedules import LinearStepSchedule
from sim2online_envs.agents.td3 import TD3
from sim2online_envs.agents.tqc import TQC

__all__ = [
    "METHODS",
    "SAC",
    "TD3",
    "TQC",
    "BROCritic",
    "CheckpointCallback",
    "ColoredActionNoise",
    "CrossQ",
    "DictMixingReplayBuffer",
    "ImageEncoder",
    "LayerNormCritic",
    "LinearStepSchedule",
    "MixingReplayBuffer",
    "MultiInputEncoder",
    "NStepMixingReplayBuffer",
    "QErrorCallback",
    "ResidualSACActor",
    "ValueGuide",
    "load_checkpoint",
    "load_replay_buffer_as_offline",
    "ou_noise",
    "paper_recipe",
    "q_guided_actions",
    "random_shift",
    "recipe",
    "retain_online_buffer",
    "save_checkpoint",
    "vanilla_recipe",
]
