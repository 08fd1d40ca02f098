"""One composition point: the standard stack for each robot, sim or real.

``make_env(robot, backend, **options)`` builds the env and wraps it, innermost first:

========================= ================ ======================================================
layer                     default          what it does
========================= ================ ======================================================
env                       always           ``Sim<Robot>-v0`` for ``backend="sim"``,
                                           ``Real<Robot>-v0`` with ``hardware="real"`` or
                                           ``"twin"``; the env's step loop applies the safety
                                           rules (``safety=``), and a real backend owns the
                                           control clock and the command watchdog
``RewardShapingWrapper``  off              extra reward terms (``rewards=RewardConfig(...)``)
``ResetPromptWrapper``    "real" only      operator prompts, labels, automatic resets (a twin
                                           resets its world itself)
``RecordEpisodes``        off              ``recording="runs/x"`` or a ``RecordingConfig``
========================= ================ ======================================================

Safety limits and aborts are not a layer here: they are part of every env's step loop, so
``gym.make``, ``make_vec`` and ``make_env`` run one MDP. ``safety=`` takes a
:class:`~sim2online_envs.safety.SafetyConfig` (or a dict of its fields) and hands it to the env.

Each wrapper option takes its config dataclass, ``True`` (the defaults, also in sim), ``False``
(off), or ``None`` (the default for this backend, as in the table). Per-robot facts come from the
robot modules (:mod:`sim2online_envs.robots`).

Example::

    import sim2online_envs

    env = sim2online_envs.make_env("racecar")                        # sim
    env = sim2online_envs.make_env("racecar", recording="runs/car")  # + episode files
    env = sim2online_envs.make_env("racecar", "twin")                # the real car's twin
    env = sim2online_envs.make_env("go1", "real", operator=TerminalOperator())
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any, TypeVar

import gymnasium as gym

import sim2online_envs  # noqa: F401  (registers the env ids)
from sim2online_envs import robots
from sim2online_envs.safety import SafetyConfig
from sim2online_envs.wrappers.recording import RecordEpisodes, RecordingConfig
from sim2online_envs.wrappers.reset_prompt import (
    Operator,
    ResetPromptConfig,
    ResetPromptWrapper,
    TerminalOperator,
)
from sim2online_envs.wrappers.rewards import RewardConfig, RewardShapingWrapper

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "make_env"]

#: Backends ``make_env`` knows: the simulator, the real robot, and the real robot's twin.
BACKENDS = ("sim", "real", "twin")

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
    safety: SafetyConfig | Mapping[str, Any] | bool | None = None,
    rewards: RewardConfig | bool | None = None,
    reset_prompt: ResetPromptConfig | bool | None = None,
    operator: Operator | None = None,
    recording: RecordingConfig | str | os.PathLike[str] | bool | None = None,
    **env_kwargs: Any,
) -> gym.Env:
    """Build ``robot``'s env on ``backend`` with the standard stack (module docstring).

    Args:
        robot: ``"panda"``, ``"go1"`` or ``"racecar"`` (or an alias: ``"car"``, ``"franka"``).
        backend: ``"sim"``, ``"real"`` or ``"twin"``.
        safety: the env's :class:`~sim2online_envs.safety.SafetyConfig` (or a dict of its
            fields); None or True: the defaults (the robot's limits, NaN actions raise);
            False: limits off (sim only: a real robot always runs its limits).
        rewards: :class:`RewardConfig`; default off.
        reset_prompt: :class:`ResetPromptConfig`; default on for ``"real"`` only (a twin
            resets its world itself; ``True`` forces it: ``ResetPromptConfig(enabled=True)``).
        operator: who answers the reset prompt; default :class:`TerminalOperator`.
        recording: a folder or a :class:`RecordingConfig`; default off.
        **env_kwargs: passed to the env (``render_mode``, ``dynamics``, ``port``, ...).

    Returns:
        The wrapped env; ``env.unwrapped`` is the robot's TaskEnv.
    """
    name = robots.resolve(robot)
    module = robots.get(name)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    real = backend != "sim"
    if safety is None or safety is True:
        safety_config = SafetyConfig()
    elif safety is False:
        if real:
            raise ValueError(
                f"make_env({name!r}, {backend!r}): a real robot always runs its limits"
            )
        logger.warning("make_env(%r, %r): command limits turned off", name, backend)
        safety_config = SafetyConfig(limits=None)
    else:
        safety_config = SafetyConfig.coerce(safety)
        if real and safety_config.limits is None:
            raise ValueError(
                f"make_env({name!r}, {backend!r}): a real robot always runs its limits "
                "(safety limits=None is for simulators)"
            )
    if real:
        env = gym.make(module.REAL_ID, hardware=backend, safety=safety_config, **env_kwargs)
    else:
        env = gym.make(module.SIM_ID, backend="sim", safety=safety_config, **env_kwargs)
    layers: list[gym.Env] = [env]
    try:
        return _wrap(layers, name, backend, rewards, reset_prompt, operator, recording)
    except BaseException:
        # A layer that fails to build must not leave a robot connection behind: close the
        # outermost layer built so far (it closes the ones inside it).
        layers[-1].close()
        raise


def _wrap(
    layers: list[gym.Env],
    name: str,
    backend: str,
    rewards: RewardConfig | bool | None,
    reset_prompt: ResetPromptConfig | bool | None,
    operator: Operator | None,
    recording: RecordingConfig | str | os.PathLike[str] | bool | None,
) -> gym.Env:
    """The layers of :func:`make_env` around ``layers[0]``, innermost first; each layer is
    appended to ``layers`` as soon as it exists."""
    env = layers[0]

    reward_config = _layer("rewards", rewards, RewardConfig, False)
    if reward_config is not None:
        env = RewardShapingWrapper(env, reward_config)
        layers.append(env)

    # On the real robot an operator resets the scene; a twin places its world itself (as a
    # simulator does). An explicit operator keeps the prompt in the stack (inactive in sim
    # unless forced).
    prompt_default = backend == "real" or (operator is not None and reset_prompt is None)
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
