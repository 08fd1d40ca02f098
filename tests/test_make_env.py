"""make_env: the standard stack per robot and backend, and clear errors for bad requests.

Safety is not a layer: ``safety=`` reaches the env's step loop. The real and twin backends need
the hardware envs (``sim2online_envs.hardware.<robot>.env``); what make_env itself does for them
is tested by standing a sim env in for the real one.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import sim2online_envs
import sim2online_envs.make as make_module
from sim2online_envs import robots
from sim2online_envs.env import TaskEnv
from sim2online_envs.safety import Go1Limits, PandaLimits, RaceCarLimits, SafetyConfig
from sim2online_envs.wrappers import (
    RecordEpisodes,
    ResetPromptConfig,
    ResetPromptWrapper,
    RewardConfig,
    RewardShapingWrapper,
    ScriptedOperator,
    TerminalOperator,
    load_episodes,
)

SAFETY_KEYS = {"interventions", "episode_interventions", "abort", "applied_action"}
OURS = (RewardShapingWrapper, ResetPromptWrapper, RecordEpisodes)
LIMITS = {"panda": PandaLimits, "go1": Go1Limits, "racecar": RaceCarLimits}


def layers(env: gym.Env) -> list[type]:
    """The package's wrappers from the outside in."""
    found = []
    while isinstance(env, gym.Wrapper):
        if isinstance(env, OURS):
            found.append(type(env))
        env = env.env
    return found


@pytest.mark.parametrize(
    ("robot", "name"),
    [
        ("racecar", "racecar"),
        ("car", "racecar"),
        ("race_car", "racecar"),
        ("go1", "go1"),
        ("Go1", "go1"),
        ("unitree_go1", "go1"),
        ("panda", "panda"),
        ("franka", "panda"),
    ],
)
def test_sim_stack_has_no_layers_and_the_robots_limits(robot: str, name: str) -> None:
    env = sim2online_envs.make_env(robot)
    assert layers(env) == []
    base = env.unwrapped
    assert isinstance(base, TaskEnv) and base.spec.id == robots.SIM_IDS[name]
    assert type(base.limits) is LIMITS[name]
    assert base.loop.safety == SafetyConfig()
    _, info = env.reset(seed=0)
    assert info["timing"] == {}  # a simulator has no clock to report
    _, _, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    assert set(info["safety"]) == {
        "interventions",
        "episode_interventions",
        "abort",
        "applied_action",
    }
    env.close()


def test_every_layer_in_order_with_options(tmp_path: Path) -> None:
    operator = ScriptedOperator(["ready"])
    env = sim2online_envs.make_env(
        "racecar",
        safety={"non_finite": "replace"},
        rewards=RewardConfig(action_magnitude_weight=0.1),
        reset_prompt=True,
        operator=operator,
        recording=tmp_path,
        dynamics="dynamic",
        task_config={"max_episode_steps": 3},
    )
    assert layers(env) == [RecordEpisodes, ResetPromptWrapper, RewardShapingWrapper]
    assert env.unwrapped.sim.dynamics == "dynamic"
    env.reset(seed=0)
    operator._answers.append("success")
    for _ in range(3):
        *_, info = env.step(np.array([np.nan, 0.0], dtype=np.float32))
    assert {"safety", "timing", "reward_shaping", "operator", "recording"} <= set(info)
    assert info["safety"]["episode_interventions"]["non_finite"] == 3
    (episode,) = load_episodes(tmp_path)
    assert episode.provenance["label"] == "success" and len(episode) == 3
    env.close()


def test_an_operator_in_sim_is_kept_but_quiet() -> None:
    operator = ScriptedOperator([])
    env = sim2online_envs.make_env("racecar", operator=operator)
    assert layers(env) == [ResetPromptWrapper] and not env.active
    env.reset(seed=0)
    assert operator.asked == []
    env.close()
    env = sim2online_envs.make_env("go1", reset_prompt=ResetPromptConfig(enabled=False))
    assert layers(env) == [ResetPromptWrapper] and not env.active
    env.close()


def test_the_safety_config_reaches_the_env_step_loop() -> None:
    config = SafetyConfig(non_finite="replace")
    env = sim2online_envs.make_env("go1", safety=config)
    assert layers(env) == [] and env.unwrapped.loop.safety is config
    env.reset(seed=0)
    *_, info = env.step(np.full(12, np.nan, dtype=np.float32))
    assert info["safety"]["interventions"]["non_finite"] == 1
    env.close()
    env = sim2online_envs.make_env("go1", safety={"clip": False})
    assert env.unwrapped.loop.safety == SafetyConfig(clip=False)
    env.close()
    limits = RaceCarLimits(max_speed=1.0)
    env = sim2online_envs.make_env("car", safety={"limits": limits})
    assert env.unwrapped.limits is limits
    env.close()
    env = sim2online_envs.make_env("panda", safety=True)
    assert isinstance(env.unwrapped.limits, PandaLimits)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.full(4, np.nan, dtype=np.float32))
    env.close()


def test_safety_false_turns_the_limits_off_in_sim_only(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        env = sim2online_envs.make_env("go1", safety=False)
    assert layers(env) == [] and env.unwrapped.limits is None
    assert "command limits turned off" in caplog.text
    env.close()
    for robot in robots.NAMES:
        for backend in ("real", "twin"):
            with pytest.raises(ValueError, match="a real robot always runs its limits"):
                sim2online_envs.make_env(robot, backend, safety=False)


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown robot 'spot'.*'go1'"):
        sim2online_envs.make_env("spot")
    with pytest.raises(ValueError, match=r"unknown backend 'mars'.*'sim', 'real', 'twin'"):
        sim2online_envs.make_env("go1", "mars")
    with pytest.raises(TypeError, match="robot must be a string"):
        sim2online_envs.make_env(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rewards must be a RewardConfig"):
        sim2online_envs.make_env("go1", rewards=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown SafetyConfig fields \['watchdog'\]"):
        sim2online_envs.make_env("go1", safety={"watchdog": 0.1})
    with pytest.raises(TypeError, match="safety must be a SafetyConfig"):
        sim2online_envs.make_env("go1", safety="strict")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recording=True needs a folder"):
        sim2online_envs.make_env("go1", recording=True)
    with pytest.raises(ValueError, match="reset_prompt=False"):
        sim2online_envs.make_env("go1", reset_prompt=False, operator=ScriptedOperator([]))
    with pytest.raises(TypeError):
        sim2online_envs.make_env("go1", no_such_option=1)
    with pytest.raises(TypeError):
        sim2online_envs.make_env("go1", timing=True)  # the second clock is gone


# -- real and twin: what make_env does, with a sim env standing in for the hardware env --------


class StandIn:
    """Replaces ``gym.make`` in make_env: records the call and returns the sim car, its
    backend calling itself real."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.closed = 0
        self._make = gym.make

    def __call__(self, env_id: str, **kwargs: Any) -> gym.Env:
        self.calls.append((env_id, kwargs))
        env = self._make("SimRaceCar-v0", safety=kwargs["safety"])
        backend = env.unwrapped.backend
        backend.kind = "real"  # what the reset prompt reads
        original = env.close

        def close() -> None:
            self.closed += 1
            original()

        env.close = close  # type: ignore[method-assign]
        return env


@pytest.mark.parametrize("backend", ["real", "twin"])
def test_real_and_twin_get_the_real_id_the_safety_config_and_the_prompt(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    stand_in = StandIn()
    monkeypatch.setattr(make_module.gym, "make", stand_in)
    env = sim2online_envs.make_env("car", backend, port="/dev/null")
    ((env_id, kwargs),) = stand_in.calls
    assert env_id == robots.REAL_IDS["racecar"]
    assert kwargs == {"hardware": backend, "safety": SafetyConfig(), "port": "/dev/null"}
    if backend == "real":  # an operator resets the real scene
        assert layers(env) == [ResetPromptWrapper]
        assert env.active and isinstance(env.operator, TerminalOperator)
    else:  # a twin places its world itself, as a simulator does
        assert layers(env) == []
    env.close()
    stand_in.calls.clear()
    env = sim2online_envs.make_env("car", backend, safety={"non_finite": "replace"})
    assert stand_in.calls[0][1]["safety"] == SafetyConfig(non_finite="replace")
    env.close()


def test_a_layer_that_fails_closes_what_was_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stand_in = StandIn()
    monkeypatch.setattr(make_module.gym, "make", stand_in)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    before = set(threading.enumerate())
    with pytest.raises(OSError):
        sim2online_envs.make_env(
            "racecar", "real", operator=ScriptedOperator([]), recording=not_a_folder / "runs"
        )
    assert stand_in.closed == 1  # the robot connection is released
    assert not any(thread.is_alive() for thread in set(threading.enumerate()) - before)


@pytest.mark.parametrize("name", robots.NAMES)
def test_the_real_env_class_runs_the_robots_limits(name: str) -> None:
    module_name = f"sim2online_envs.hardware.{name}.env"
    try:
        importlib.import_module(module_name)
    except ImportError as error:
        pytest.skip(f"{module_name} cannot be imported yet ({error})")
    env_class = gym.envs.registration.load_env_creator(gym.spec(robots.REAL_IDS[name]).entry_point)
    assert issubclass(env_class, TaskEnv)
    assert env_class.limits_class is LIMITS[name]
