"""Wrappers shared by every robot, in sim and on hardware.

Each is a ``gymnasium.Wrapper`` with a config dataclass and reports what it did in ``info``:

* :class:`SafetyWrapper` (``info["safety"]``): action sanitation, per-robot command limits,
  safety aborts, command watchdog.
* :class:`RewardShapingWrapper` (``info["reward_shaping"]``): progress, success and action
  penalty terms.
* :class:`ResetPromptWrapper` (``info["operator"]``): operator prompts between episodes on
  real robots, episode labels, automatic resets.
* :class:`ControlRateWrapper` (``info["timing"]``): a fixed control period, jitter, misses.
* :class:`RecordEpisodes` (``info["recording"]``): atomic episode files;
  :func:`fill_offline_buffer` loads them into the agents' offline buffer.

``sim2online_envs.make_env`` stacks them per robot.
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
from sim2online_envs.wrappers.safety import (
    STOP_HOOK,
    CommandLimits,
    CommandWatchdog,
    Go1Limits,
    PandaLimits,
    RaceCarLimits,
    SafetyConfig,
    SafetyWrapper,
    UnsafeCommandError,
)
from sim2online_envs.wrappers.timing import ControlRateWrapper, TimingConfig, precise_sleep_until

__all__ = [
    "STOP_HOOK",
    "CallableOperator",
    "CommandLimits",
    "CommandWatchdog",
    "ControlRateWrapper",
    "DriveBackReset",
    "Episode",
    "Go1Limits",
    "KeyPressOperator",
    "Operator",
    "OperatorStopError",
    "OperatorTimeoutError",
    "OperatorUnavailableError",
    "PandaHomeReset",
    "PandaLimits",
    "RaceCarLimits",
    "RecordEpisodes",
    "RecordingConfig",
    "RecordingError",
    "ResetPromptConfig",
    "ResetPromptWrapper",
    "RewardConfig",
    "RewardShapingWrapper",
    "SafetyConfig",
    "SafetyWrapper",
    "ScriptedOperator",
    "TerminalOperator",
    "TimingConfig",
    "UnsafeCommandError",
    "fill_offline_buffer",
    "info_progress",
    "load_episode",
    "load_episodes",
    "precise_sleep_until",
]
