"""Wrappers shared by every robot, in sim and on hardware.

Each is a ``gymnasium.Wrapper`` with a config dataclass and reports what it did in ``info``:

* :class:`RewardShapingWrapper` (``info["reward_shaping"]``): progress, success and action
  penalty terms.
* :class:`ResetPromptWrapper` (``info["operator"]``): operator prompts between episodes on
  real robots, episode labels, automatic resets.
* :class:`RecordEpisodes` (``info["recording"]``): atomic episode files;
  :func:`fill_offline_buffer` loads them into the agents' offline buffer.

``sim2online_envs.make_env`` stacks them per robot. Safety limits and aborts are not a wrapper:
they are part of every env's step loop (:mod:`sim2online_envs.safety`), and a real backend owns
the control clock and the command watchdog (:mod:`sim2online_envs.hardware.base`).
"""

from sim2online_envs.wrappers.recording import (
    Episode,
    RecordEpisodes,
    RecordingConfig,
    RecordingError,
    fill_offline_buffer,
    load_episode,
    load_episodes,
)
from sim2online_envs.wrappers.reset_prompt import (
    CallableOperator,
    DriveBackReset,
    KeyPressOperator,
    Operator,
    OperatorStopError,
    OperatorTimeoutError,
    OperatorUnavailableError,
    PandaHomeReset,
    ResetPromptConfig,
    ResetPromptWrapper,
    ScriptedOperator,
    TerminalOperator,
)
from sim2online_envs.wrappers.rewards import RewardConfig, RewardShapingWrapper, info_progress

__all__ = [
    "CallableOperator",
    "DriveBackReset",
    "Episode",
    "KeyPressOperator",
    "Operator",
    "OperatorStopError",
    "OperatorTimeoutError",
    "OperatorUnavailableError",
    "PandaHomeReset",
    "RecordEpisodes",
    "RecordingConfig",
    "RecordingError",
    "ResetPromptConfig",
    "ResetPromptWrapper",
    "RewardConfig",
    "RewardShapingWrapper",
    "ScriptedOperator",
    "TerminalOperator",
    "fill_offline_buffer",
    "info_progress",
    "load_episode",
    "load_episodes",
]
