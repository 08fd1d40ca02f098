"""Reset prompts driven by scripted operators: confirm, label, discard, retry, stop, timeout.

Forced on in sim (``enabled=True``) with ``SimRaceCar-v0``; the automatic reset drives the
simulated car back to its start marker.
"""

from __future__ import annotations

import os
import pty
import threading
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import pytest

import sim2online_envs  # noqa: F401  (registers the ids)
from sim2online_envs import robots
from sim2online_envs.env import TaskEnv
from sim2online_envs.sim.go1 import Go1VectorBackend
from sim2online_envs.tasks.go1 import Go1JoystickTask
from sim2online_envs.wrappers.reset_prompt import (
    AUTO,
    OPERATOR_ABORT,
    READY,
    RESET_INSTRUCTIONS,
    STOP,
    TIMEOUT,
    CallableOperator,
    Choice,
    DriveBackReset,
    KeyPressOperator,
    OperatorStopError,
    OperatorTimeoutError,
    OperatorUnavailableError,
    PandaHomeReset,
    ResetPromptConfig,
    ResetPromptWrapper,
    ScriptedOperator,
    TerminalOperator,
)


def car(answers: Sequence[str], **config: object) -> tuple[ResetPromptWrapper, ScriptedOperator]:
    operator = ScriptedOperator(answers)
    env = gym.make("SimRaceCar-v0", task_config={"max_episode_steps": 5})
    return ResetPromptWrapper(env, operator, ResetPromptConfig(enabled=True, **config)), operator


def run_episode(env: gym.Env) -> tuple[float, dict]:
    total, info = 0.0, {}
    for _ in range(100):
        _, reward, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
        total += reward
        if terminated or truncated:
            return total, info
    raise AssertionError("episode did not end")


def test_confirm_then_label_success_gives_the_human_reward() -> None:
    env, operator = car(["ready", "success"], success_reward=1.0, auto_reset=None)
    _, info = env.reset(seed=0)
    message, choices = operator.asked[0]
    assert message == RESET_INSTRUCTIONS["racecar"]
    assert choices == ("ready", "stop")
    assert info["operator"] == {"auto_resets": 0, "retry": False}
    rewards = []
    for _ in range(5):
        _, reward, _, truncated, info = env.step(np.zeros(2, dtype=np.float32))
        rewards.append(reward)
    assert truncated
    assert operator.asked[1][1] == ("success", "failure", "discard", "retry", "stop")
    assert info["operator"]["label"] == "success"
    assert info["operator"]["human_reward"] == 1.0
    assert info["operator"]["env_is_success"] is False
    assert info["is_success"] is True  # the label overrides the env's success
    # The human reward lands on the last step only: the env reward + 1.
    assert rewards[-1] == pytest.approx(
        info["reward_terms"]["progress"]
        + 1.0
        + sum(v for k, v in info["reward_terms"].items() if k != "progress")
    )
    assert env.episode_labels == ["success"]


def test_discard_marks_the_episode() -> None:
    env, _ = car(["c", "d"], auto_reset=None)  # keys work as well as names
    env.reset(seed=0)
    _, info = run_episode(env)
    assert info["discard_episode"] is True
    assert info["operator"]["label"] == "discard"


def test_retry_reruns_the_same_episode() -> None:
    env, _ = car(["ready", "retry", "ready", "failure", "ready"], auto_reset=None)
    first, _ = env.reset()  # no seed: the retry must still reproduce the draws
    _, info = run_episode(env)
    assert info["discard_episode"] is True
    again, info = env.reset()
    np.testing.assert_array_equal(first, again)
    assert info["operator"]["retry"] is True
    run_episode(env)
    different, info = env.reset()
    assert not np.array_equal(first, different)
    assert info["operator"]["retry"] is False


def test_retry_reruns_a_seeded_episode() -> None:
    env, _ = car(["ready", "retry", "ready", "failure", "ready"], auto_reset=None)
    first, _ = env.reset(seed=42)
    run_episode(env)
    again, info = env.reset()  # the retry repeats the seed, not the generator state before it
    np.testing.assert_array_equal(first, again)
    assert info["operator"]["retry"] is True
    run_episode(env)
    assert not np.array_equal(first, env.reset()[0])


def test_every_wait_for_the_operator_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    env, _ = car(["ready", "failure"], auto_reset=None, label_timeout=None)
    with caplog.at_level("INFO", logger="sim2online_envs.wrappers.reset_prompt"):
        env.reset(seed=0)
        run_episode(env)
    assert "waiting up to 600.0 s for the operator to reset the scene" in caplog.text
    assert "waiting up to ∞ s for the operator to label the episode" in caplog.text


def test_stop_at_the_reset_prompt_raises() -> None:
    env, _ = car(["stop"], auto_reset=None)
    with pytest.raises(OperatorStopError, match="reset prompt"):
        env.reset(seed=0)


def test_stop_as_label_keeps_the_episode_and_ends_the_session() -> None:
    env, operator = car(["ready", "stop"], auto_reset=None)
    env.reset(seed=0)
    _, info = run_episode(env)
    assert info["operator"]["label"] == "stop"
    assert "discard_episode" not in info
    with pytest.raises(OperatorStopError, match="end of the last episode"):
        env.reset(seed=1)
    assert len(operator.asked) == 2  # not asked again


def test_reset_prompt_timeouts_are_logged_then_raise(caplog: pytest.LogCaptureFixture) -> None:
    env, operator = car([TIMEOUT, TIMEOUT, TIMEOUT], max_timeouts=3, auto_reset=None)
    with caplog.at_level("WARNING"), pytest.raises(OperatorTimeoutError, match="3 times in a row"):
        env.reset(seed=0)
    assert len(operator.asked) == 3
    assert caplog.text.count("no answer to the reset prompt") == 3


def test_one_timeout_then_ready_and_label_timeout_is_unlabelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env, _ = car([TIMEOUT, "ready", TIMEOUT], auto_reset=None)
    env.reset(seed=0)
    with caplog.at_level("WARNING"):
        _, info = run_episode(env)
    assert info["operator"]["label"] == "unlabelled"
    assert info["is_success"] is False  # the env's value stays
    assert "no episode label" in caplog.text


def test_a_lost_operator_at_the_label_keeps_the_last_transition() -> None:
    env, _ = car(["ready"], auto_reset=None)  # no answer left for the label
    env.reset(seed=0)
    _, info = run_episode(env)  # the last step still returns its transition ...
    assert info["operator"]["label"] == "unlabelled"
    with pytest.raises(OperatorUnavailableError, match="ran out of answers"):
        env.reset(seed=1)  # ... and the session stops at the next prompt


def test_request_abort_truncates_with_reason() -> None:
    env, _ = car(["ready", "failure"], auto_reset=None)
    env.reset(seed=0)
    env.request_abort()
    _, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
    assert truncated and not terminated
    assert info["truncation_reason"] == OPERATOR_ABORT
    assert info["operator"]["label"] == "failure"


def test_does_nothing_in_sim_unless_forced() -> None:
    operator = ScriptedOperator([])  # any question would fail: it has no answers
    env = ResetPromptWrapper(
        gym.make("SimRaceCar-v0", task_config={"max_episode_steps": 5}), operator
    )
    assert not env.active
    _, info = env.reset(seed=0)
    _, info = run_episode(env)
    assert "operator" not in info and operator.asked == []


def test_car_auto_reset_drives_back_to_the_start_marker_in_sim() -> None:
    env = gym.make("SimRaceCar-v0", task_config={"max_episode_steps": 120})
    seen: list[np.ndarray | None] = []
    answers = iter(["ready", "failure", "auto", "ready"])

    def operator(message: str, choices: Sequence[Choice]) -> str:
        started = env.unwrapped.loop.state is not None
        seen.append(np.array(env.unwrapped.state["pose"][0]) if started else None)
        return next(answers)

    wrapped = ResetPromptWrapper(env, CallableOperator(operator), ResetPromptConfig(enabled=True))
    assert isinstance(wrapped.auto_reset, DriveBackReset)
    wrapped.reset(seed=3)
    for _ in range(120):  # drive off somewhere
        *_, truncated, _ = wrapped.step(np.array([0.6, 0.8], dtype=np.float32))
        if truncated:
            break
    _, info = wrapped.reset()
    assert info["operator"]["auto_resets"] == 1
    before, after = seen[2], seen[3]  # poses when "auto" was chosen and when confirming
    home = np.array(wrapped.auto_reset.home)
    assert np.linalg.norm(before[:2] - home) > 1.0
    assert np.linalg.norm(after[:2] - home) < wrapped.auto_reset.tolerance


def test_auto_is_offered_only_where_available() -> None:
    env, operator = car(["ready"])
    env.reset(seed=0)  # no state before the first reset: nothing to drive back yet
    assert operator.asked[0][1] == ("ready", "stop")
    go1 = ResetPromptWrapper(
        gym.make("SimGo1-v0"), ScriptedOperator(["ready"]), ResetPromptConfig(enabled=True)
    )
    go1.reset(seed=0)  # the sim Go1 has no stand_up() hook
    assert go1.operator.asked[0][1] == ("ready", "stop")


# -- operators -------------------------------------------------------------------------------

CHOICES = (Choice("ready", "c", "go"), Choice("stop", "q", "quit"))


def test_terminal_operator_reads_lines_with_timeout(tmp_path) -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb", buffering=0) as reader, open(tmp_path / "out", "w") as out:
        operator = TerminalOperator(reader, out)
        os.write(write_fd, b"what\nq\n\n")
        assert operator.ask("reset the car", CHOICES, timeout=5.0) == "stop"
        assert operator.ask("again", CHOICES, timeout=5.0) == "ready"  # Enter = ready
        with pytest.raises(OperatorTimeoutError):
            operator.ask("nobody there", CHOICES, timeout=0.05)
        os.close(write_fd)
        with pytest.raises(OperatorUnavailableError, match="closed"):
            operator.ask("closed", CHOICES, timeout=5.0)
    text = (tmp_path / "out").read_text()
    assert "reset the car" in text and "[q] stop" in text and "unknown answer 'what'" in text


def test_key_press_operator_on_a_pseudo_terminal(tmp_path) -> None:
    master, slave = pty.openpty()
    with os.fdopen(slave, "rb", buffering=0) as terminal, open(tmp_path / "out", "w") as out:
        operator = KeyPressOperator(terminal, out)
        # The operator presses keys while the prompt waits (in cbreak mode): "x" is ignored.
        threading.Timer(0.2, os.write, (master, b"xq")).start()
        assert operator.ask("press", CHOICES, timeout=10.0) == "stop"
        with pytest.raises(OperatorTimeoutError):
            operator.ask("press", CHOICES, timeout=0.05)
    os.close(master)
    read_fd, write_fd = os.pipe()
    with (
        os.fdopen(read_fd, "rb") as pipe,
        open(os.devnull, "w") as out,
        pytest.raises(OperatorUnavailableError, match="terminal"),
    ):
        KeyPressOperator(pipe, out).ask("press", CHOICES, timeout=1.0)
    os.close(write_fd)


def test_terminal_operator_drops_what_was_typed_before_the_prompt(tmp_path) -> None:
    """An Enter pressed during the episode must not confirm the next reset."""
    master, slave = pty.openpty()
    with os.fdopen(slave, "rb", buffering=0) as terminal, open(tmp_path / "out", "w") as out:
        operator = TerminalOperator(terminal, out)
        os.write(master, b"\n")  # stale: typed before the prompt
        threading.Timer(0.3, os.write, (master, b"q\n")).start()
        assert operator.ask("reset the car", CHOICES, timeout=10.0) == "stop"
    os.close(master)


def test_key_press_operator_drops_typeahead_and_arrow_keys(tmp_path) -> None:
    choices = (READY, AUTO, STOP)
    master, slave = pty.openpty()
    with os.fdopen(slave, "rb", buffering=0) as terminal, open(tmp_path / "out", "w") as out:
        operator = KeyPressOperator(terminal, out)
        os.write(master, b"c")  # stale "ready"
        # Arrow keys end in A-D: up must not start the automatic reset, right must not confirm.
        threading.Timer(0.3, os.write, (master, b"\x1b[A")).start()
        threading.Timer(0.6, os.write, (master, b"\x1b[C")).start()
        threading.Timer(0.9, os.write, (master, b"q")).start()
        assert operator.ask("press", choices, timeout=10.0) == "stop"
    os.close(master)


def test_callable_operator_times_out_and_checks_answers() -> None:
    assert CallableOperator(lambda message, choices: "q").ask("m", CHOICES, 5.0) == "stop"
    release = threading.Event()
    blocked = CallableOperator(lambda message, choices: release.wait(10.0) and "c")
    with pytest.raises(OperatorTimeoutError):
        blocked.ask("m", CHOICES, timeout=0.05)
    release.set()
    with pytest.raises(ValueError, match="expected one of"):
        CallableOperator(lambda message, choices: "maybe").ask("m", CHOICES, 5.0)
    with pytest.raises(TypeError, match="callable"):
        CallableOperator("not callable")  # type: ignore[arg-type]


def test_config_and_operator_errors() -> None:
    with pytest.raises(ValueError, match="timeout"):
        ResetPromptConfig(timeout=0)
    with pytest.raises(TypeError, match="Operator"):
        ResetPromptWrapper(gym.make("SimRaceCar-v0"), object())  # type: ignore[arg-type]
    with pytest.raises(OperatorUnavailableError, match="ran out of answers"):
        car([])[0].reset(seed=0)


def test_panda_home_reset_opens_the_gripper_and_returns_home_in_sim() -> None:
    env = gym.make("SimPanda-v0")
    env.reset(seed=0)
    close = robots.panda.GRIPPER_CLOSE_SIGN
    steps = int(np.ceil(0.15 / robots.panda.MAX_TIP_STEP))  # far enough that home is > 0.1 m away
    for _ in range(steps):  # move away and close the gripper
        env.step(np.array([1.0, -1.0, -1.0, close], dtype=np.float32))
    reset = PandaHomeReset()
    state = env.unwrapped.state
    assert np.linalg.norm(state["tip_pos"][0] - reset.home) > 0.1
    assert reset.run(env)
    state = env.unwrapped.state
    assert np.linalg.norm(state["tip_pos"][0] - reset.home) < reset.tolerance
    assert state["gripper_closed"][0] == 0.0 and state["gripper_opening"][0] > 0.07


def test_panda_home_reset_stops_when_the_arm_settles_short_of_home(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tolerance the arm cannot meet (as a real arm's friction can make any): the routine
    notices that the tip stopped moving with the target at home and gives up early."""
    env = gym.make("SimPanda-v0")
    env.reset(seed=0)
    for _ in range(10):
        env.step(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32))
    steps = {"count": 0}
    step = env.unwrapped.step

    def counted(action):
        steps["count"] += 1
        return step(action)

    env.unwrapped.step = counted
    reset = PandaHomeReset(tolerance=0.0, max_steps=1000)
    with caplog.at_level("WARNING"):
        assert not reset.run(env)
    assert steps["count"] < 200
    assert "settled" in caplog.text
    env.close()


class _HomingGo1(Go1VectorBackend):
    """The simulated Go1 presented as a real backend whose home() (stand up) is recorded."""

    kind = "real"

    def __init__(self) -> None:
        super().__init__(1)
        self.home_calls = 0

    def home(self) -> None:
        self.home_calls += 1


def test_go1_home_is_offered_on_real_backends_only() -> None:
    sim = ResetPromptWrapper(
        gym.make("SimGo1-v0"), ScriptedOperator(["ready"]), ResetPromptConfig(enabled=True)
    )
    sim.reset(seed=0)
    assert sim.operator.asked[0][1] == ("ready", "stop")  # a simulator places its world itself
    sim.close()
    backend = _HomingGo1()
    env = TaskEnv(Go1JoystickTask(), backend)
    wrapped = ResetPromptWrapper(env, ScriptedOperator(["auto", "ready"]), ResetPromptConfig())
    wrapped.reset(seed=0)
    assert wrapped.operator.asked[0][1] == ("ready", "auto", "stop")
    assert backend.home_calls == 1
    wrapped.close()
