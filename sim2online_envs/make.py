"""One composition point: the standard wrapper stack for each robot, sim or real.

``make_env(robot, backend, **options)`` builds the env and wraps it, innermost first:

========================= ================ ======================================================
layer                     default          what it does
========================= ================ ======================================================
env                       always           ``SimPanda-v0`` / ``SimGo1-v0`` / ``SimRaceCar-v0``
                                           with ``backend=`` and the env's own keyword arguments
``SafetyWrapper``         always           action sanitation, the robot's command limits, safety
                                           aborts; on real backends a command watchdog that calls
                                           the backend's ``stop()`` after 5 control periods
``ControlRateWrapper``    real only        holds the control period, ``info["timing"]``
``RewardShapingWrapper``  off              extra reward terms (``rewards=RewardConfig(...)``)
``ResetPromptWrapper``    real only        operator prompts, labels, automatic resets
``RecordEpisodes``        off              ``recording="runs/x"`` or a ``RecordingConfig``
========================= ================ ======================================================

Each layer's option takes its config dataclass, ``True`` (the defaults, also in sim), ``False``
(off), or ``None`` (the default for this backend, as in the table). Per-robot facts come from
:data:`~sim2online_envs.wrappers.safety.DEFAULT_LIMITS`,
:data:`~sim2online_envs.wrappers.reset_prompt.RESET_INSTRUCTIONS` and
:data:`~sim2online_envs.wrappers.reset_prompt.DEFAULT_AUTO_RESETS`.

Example::

    import sim2online_envs

    env = sim2online_envs.make_env("racecar")                        # sim, safety only
    env = sim2online_envs.make_env("racecar", recording="runs/car")  # + episode files
    env = sim2online_envs.make_env("go1", "real", operator=TerminalOperator())
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, TypeVar

import gymnasium as gym

import sim2online_envs  # noqa: F401  (registers the env ids)
from sim2online_envs.wrappers.recording import RecordEpisodes, RecordingConfig
from sim2online_envs.wrappers.reset_prompt import (
    Operator,
    ResetPromptConfig,
    ResetPromptWrapper,
    TerminalOperator,
)
from sim2online_envs.wrappers.rewards import RewardConfig, RewardShapingWrapper
from sim2online_envs.wrappers.safety import SafetyConfig, SafetyWrapper
from sim2online_envs.wrappers.timing import ControlRateWrapper, TimingConfig

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "ROBOTS", "make_env"]

#: Robot name -> env id (the backend is chosen with ``backend=``).
ROBOTS: dict[str, str] = {
    "panda": "SimPanda-v0",
    "go1": "SimGo1-v0",
    "racecar": "SimRaceCar-v0",
}
_ALIASES = {"car": "racecar", "race_car": "racecar", "franka": "panda", "unitree_go1": "go1"}
#: Backends ``make_env`` knows; the env class says which of them it supports.
BACKENDS = ("sim", "real", "twin")
#: Watchdog timeout on real backends, in control periods.
WATCHDOG_PERIODS = 5

_Config = TypeVar("_Config")


def _layer(name: str, value: Any, config_type: type[_Config], default_on: bool) -> _Config | None:
    """Resolve one layer option: a config, True/False, or None (the backend's default)."""
    if value is None:
        value = default_on
    if value is False:
        return None
    if value is True:
        return config_type()
    if isinstance(value, config_type):
        return value
    raise TypeError(
        f"{name} must be a {config_type.__name__}, True, False or None; got {type(value).__name__}"
    )


def make_env(
    robot: str,
    backend: str = "sim",
    *,
    safety: SafetyConfig | bool | None = None,
    timing: TimingConfig | bool | None = None,
    rewards: RewardConfig | bool | None = None,
    reset_prompt: ResetPromptConfig | bool | None = None,
    operator: Operator | None = None,
    recording: RecordingConfig | str | os.PathLike[str] | bool | None = None,
    **env_kwargs: Any,
) -> gym.Env:
    """Build ``robot``'s env on ``backend`` with the standard wrapper stack (module docstring).

    Args:
        robot: ``"panda"``, ``"go1"`` or ``"racecar"`` (``"car"`` also works).
        backend: ``"sim"``, ``"real"`` or ``"twin"`` (the env class lists what it supports).
        safety: :class:`SafetyConfig`; on real backends the default (None or True) adds the
            command watchdog (5 control periods); a config of your own is used as given.
        timing: :class:`TimingConfig`; default on for real backends only.
        rewards: :class:`RewardConfig`; default off.
        reset_prompt: :class:`ResetPromptConfig`; default on for real backends only
            (``True`` forces it in sim: ``ResetPromptConfig(enabled=True)``).
        operator: who answers the reset prompt; default :class:`TerminalOperator`.
        recording: a folder or a :class:`RecordingConfig`; default off.
        **env_kwargs: passed to the env (``render_mode``, ``dynamics``, ``friction``, ...).

    Returns:
        The wrapped env; ``env.unwrapped`` is the robot's TaskEnv.
    """
    if not isinstance(robot, str):
        raise TypeError(f"robot must be a string, got {type(robot).__name__}")
    name = _ALIASES.get(robot.lower(), robot.lower())
    if name not in ROBOTS:
        raise ValueError(f"unknown robot {robot!r}; choose one of {sorted(ROBOTS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")

    env = gym.make(ROBOTS[name], backend=backend, **env_kwargs)
    layers: list[gym.Env] = [env]
    try:
        return _wrap(
            layers, name, backend, safety, timing, rewards, reset_prompt, operator, recording
        )
    except BaseException:
        # A layer that fails to build must not leave a robot connection or a watchdog behind:
        # close the outermost layer built so far (it closes the ones inside it).
        layers[-1].close()
        raise


def _wrap(
    layers: list[gym.Env],
    name: str,
    backend: str,
    safety: SafetyConfig | bool | None,
    timing: TimingConfig | bool | None,
    rewards: RewardConfig | bool | None,
    reset_prompt: ResetPromptConfig | bool | None,
    operator: Operator | None,
    recording: RecordingConfig | str | os.PathLike[str] | bool | None,
) -> gym.Env:
    """The layers of :func:`make_env` around ``layers[0]``, innermost first; each layer is
    appended to ``layers`` as soon as it exists."""
    env = layers[0]
    real = backend != "sim"
    control_dt = float(env.unwrapped.control_dt)

    safety_config = _layer("safety", safety, SafetyConfig, True)
    if safety_config is None:
        logger.warning("make_env(%r, %r): safety wrapper turned off", name, backend)
    else:
        # None and True both mean the defaults for this backend: a watchdog on real robots.
        if (safety is None or safety is True) and real:
            safety_config = dataclasses.replace(
                safety_config, watchdog_timeout=WATCHDOG_PERIODS * control_dt
            )
        elif real and safety_config.watchdog_timeout is None:
            logger.warning("make_env(%r, %r): no command watchdog on a real robot", name, backend)
        env = SafetyWrapper(env, safety_config)
        layers.append(env)

    timing_config = _layer("timing", timing, TimingConfig, real)
    if timing_config is not None:
        env = ControlRateWrapper(env, timing_config)
        layers.append(env)

    reward_config = _layer("rewards", rewards, RewardConfig, False)
    if reward_config is not None:
        env = RewardShapingWrapper(env, reward_config)
        layers.append(env)

    # An explicit operator keeps the prompt in the stack; in sim it stays inactive unless forced.
    prompt_default = real or (operator is not None and reset_prompt is None)
    prompt_config = _layer("reset_prompt", reset_prompt, ResetPromptConfig, prompt_default)
    if prompt_config is not None:
        if reset_prompt is True:
            prompt_config = dataclasses.replace(prompt_config, enabled=True)
        chosen = operator if operator is not None else TerminalOperator()
        env = ResetPromptWrapper(env, chosen, prompt_config)
        layers.append(env)
    elif operator is not None:
        raise ValueError("an operator was given but reset_prompt=False")

    if recording is True:
        raise ValueError("recording=True needs a folder: recording='runs/x' or a RecordingConfig")
    if isinstance(recording, (str, os.PathLike)):
        recording = RecordingConfig(directory=recording)
    record_config = _layer("recording", recording, RecordingConfig, False)
    if record_config is not None:
        env = RecordEpisodes(env, record_config)
        layers.append(env)
    return env
