"""make_env: the standard stack per robot and backend, and clear errors for bad requests."""

from __future__ import annotations

import threading
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from sim2online_envs.wrappers import (
    ControlRateWrapper,
    RecordEpisodes,
    ResetPromptConfig,
    ResetPromptWrapper,
    RewardConfig,
    RewardShapingWrapper,
    SafetyConfig,
    SafetyWrapper,
    ScriptedOperator,
    TerminalOperator,
    TimingConfig,
    load_episodes,
)
from sim2online_envs.wrappers.safety import Go1Limits, PandaLimits, RaceCarLimits

import sim2online_envs
import sim2online_envs.make as make_module
from sim2online_envs.core import SingleWorld


def layers(env: gym.Env) -> list[type]:
    """The package's wrappers from the outside in."""
    ours = (
        SafetyWrapper,
        ControlRateWrapper,
        RewardShapingWrapper,
        ResetPromptWrapper,
        RecordEpisodes,
    )
    found = []
    while isinstance(env, gym.Wrapper):
        if isinstance(env, ours):
            found.append(type(env))
        env = env.env
    return found


@pytest.mark.parametrize(
    ("robot", "limits"),
    [
        ("racecar", RaceCarLimits),
        ("car", RaceCarLimits),
        ("go1", Go1Limits),
        ("panda", PandaLimits),
    ],
)
def test_sim_stack_is_safety_only(robot: str, limits: type) -> None:
    env = sim2online_envs.make_env(robot)
    assert layers(env) == [SafetyWrapper]
    assert isinstance(env.limits, limits)
    assert env.watchdog is None  # sim waits for the agent anyway
    _, info = env.reset(seed=0)
    assert "safety" in info
    _, _, _, _, info = env.step(env.action_space.sample())
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
        timing=TimingConfig(period=0.001),
        rewards=RewardConfig(action_magnitude_weight=0.1),
        reset_prompt=True,
        operator=operator,
        recording=tmp_path,
        dynamics="dynamic",
        task_config={"max_episode_steps": 3},
    )
    assert layers(env) == [
        RecordEpisodes,
        ResetPromptWrapper,
        RewardShapingWrapper,
        ControlRateWrapper,
        SafetyWrapper,
    ]
    assert env.unwrapped.backend.vector_backend.dynamics == "dynamic"
    env.reset(seed=0)
    operator._answers.append("success")
    for _ in range(3):
        *_, info = env.step(np.zeros(2, dtype=np.float32))
    assert {"safety", "timing", "reward_shaping", "operator", "recording"} <= set(info)
    (episode,) = load_episodes(tmp_path)
    assert episode.provenance["label"] == "success" and len(episode) == 3


def test_an_operator_in_sim_is_kept_but_quiet() -> None:
    operator = ScriptedOperator([])
    env = sim2online_envs.make_env("racecar", operator=operator)
    assert ResetPromptWrapper in layers(env) and not env.active
    env.reset(seed=0)
    assert operator.asked == []


class FakeRealWorld(SingleWorld):
    """The sim car behind a backend that calls itself real, with the stop() hook."""

    kind = "real"

    def __init__(self, vector_backend) -> None:
        super().__init__(vector_backend)
        self.kind = "real"
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1


def pretend_real(monkeypatch: pytest.MonkeyPatch) -> None:
    """make_env(..., "real") builds the sim car behind a backend that calls itself real."""
    real_make = gym.make

    def make_as_real(env_id: str, **kwargs):
        kwargs.pop("backend")
        env = real_make(env_id, **kwargs)
        base = env.unwrapped
        base.backend = FakeRealWorld(base.backend.vector_backend)
        return env

    monkeypatch.setattr(make_module.gym, "make", make_as_real)


def test_real_stack_adds_watchdog_timing_and_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_real(monkeypatch)
    env = sim2online_envs.make_env("racecar", "real")
    assert layers(env) == [ResetPromptWrapper, ControlRateWrapper, SafetyWrapper]
    assert env.active and isinstance(env.operator, TerminalOperator)
    safety = env.env.env
    assert safety.watchdog is not None
    assert safety.watchdog.timeout == pytest.approx(5 / 60)
    assert env.env.period == pytest.approx(1 / 60)
    safety.close()


def test_layers_can_be_switched_off_and_configured(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        env = sim2online_envs.make_env("go1", safety=False)
    assert layers(env) == [] and "safety wrapper turned off" in caplog.text
    env = sim2online_envs.make_env("go1", safety=SafetyConfig(non_finite="replace"), timing=True)
    assert layers(env) == [ControlRateWrapper, SafetyWrapper]
    assert env.env.config.non_finite == "replace"
    env = sim2online_envs.make_env("go1", reset_prompt=ResetPromptConfig(enabled=False))
    assert layers(env) == [ResetPromptWrapper, SafetyWrapper]


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown robot 'spot'.*'go1'"):
        sim2online_envs.make_env("spot")
    with pytest.raises(ValueError, match=r"unknown backend 'mars'.*'sim', 'real', 'twin'"):
        sim2online_envs.make_env("go1", "mars")
    with pytest.raises(TypeError, match="robot must be a string"):
        sim2online_envs.make_env(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="timing must be a TimingConfig"):
        sim2online_envs.make_env("go1", timing=60)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recording=True needs a folder"):
        sim2online_envs.make_env("go1", recording=True)
    with pytest.raises(ValueError, match="reset_prompt=False"):
        sim2online_envs.make_env("go1", reset_prompt=False, operator=ScriptedOperator([]))
    with pytest.raises(TypeError):
        sim2online_envs.make_env("go1", no_such_option=1)


def test_safety_true_on_a_real_robot_keeps_the_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_real(monkeypatch)
    env = sim2online_envs.make_env("racecar", "real", safety=True, timing=False, reset_prompt=False)
    assert layers(env) == [SafetyWrapper]
    assert env.watchdog is not None and env.watchdog.timeout == pytest.approx(5 / 60)
    env.close()


def test_a_layer_that_fails_closes_what_was_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pretend_real(monkeypatch)
    closed: list[str] = []
    monkeypatch.setattr(FakeRealWorld, "close", lambda self: closed.append("backend"))
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    before = {t for t in threading.enumerate() if t.name == "safety-watchdog"}
    with pytest.raises(OSError):
        sim2online_envs.make_env(
            "racecar", "real", operator=ScriptedOperator([]), recording=not_a_folder / "runs"
        )
    assert closed == ["backend"]  # the robot connection is released ...
    leaked = {t for t in threading.enumerate() if t.name == "safety-watchdog"} - before
    assert not any(t.is_alive() for t in leaked)  # ... and the watchdog thread ended
