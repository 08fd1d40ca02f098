"""Safety wrapper: sanitation, command limits that hold against hostile actions, aborts, watchdog.

The property tests spy on what reaches the backend (below the guard) of real robot envs and
check every command against the limits with independent arithmetic.
"""

from __future__ import annotations

import gc
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sim2online_envs.wrappers.safety import (
    SAFETY_HEIGHT,
    SAFETY_INVALID_STATE,
    SAFETY_TILT,
    WATCHDOG_TIMEOUT,
    Go1Limits,
    PandaLimits,
    RaceCarLimits,
    SafetyConfig,
    SafetyWrapper,
    UnsafeCommandError,
    go1_trunk_height,
    roll_pitch,
)

import sim2online_envs  # noqa: F401  (registers the ids)
from sim2online_envs.core import Backend, Batch, SingleWorld, Task, TaskEnv, VectorBackend

HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class SpyBackend(Backend):
    """Records every command that reaches the real backend below it."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.kind = backend.kind
        self.commands: list[Batch] = []
        self.states: list[Batch] = []  # the state each command was computed from
        self._last: Batch | None = None
        self.stops = 0

    def reset(self, rng: np.random.Generator, options: Any = None) -> Batch:
        self._last = self.backend.reset(rng, options)
        return self._last

    def apply(self, command: Batch) -> Batch:
        self.commands.append({k: np.array(v, copy=True) for k, v in command.items()})
        self.states.append(self._last)
        self._last = self.backend.apply(command)
        return self._last

    def stop(self) -> None:
        self.stops += 1


def spied(env: gym.Env) -> SpyBackend:
    """Put a spy between the env and its backend (before the safety wrapper adds its guard)."""
    spy = SpyBackend(env.unwrapped.backend)
    env.unwrapped.backend = spy
    return spy


# -- a minimal TaskEnv for sanitation, guard and watchdog ---------------------------------------


class LineTask(Task):
    """A 2-D point driven by velocity commands; ``nan_command`` makes the task itself misbehave."""

    robot = "line"
    reward_term_names = ("distance",)

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.control_dt = 0.01
        self.max_episode_steps = 100
        self.nan_command = False

    def initial_task_state(self, state: Batch, rngs: list[np.random.Generator]) -> Batch:
        return {}

    def command(self, action: np.ndarray, state: Batch, task_state: Batch) -> Batch:
        velocity = np.full_like(action, np.nan) if self.nan_command else action
        return {"velocity": velocity}

    def observe(self, state: Batch, task_state: Batch) -> np.ndarray:
        return state["pos"].copy()

    def reward_terms(self, prev_state, state, action, task_state) -> dict[str, np.ndarray]:
        return {"distance": -np.linalg.norm(state["pos"], axis=1)}

    def terminated(self, state: Batch, task_state: Batch) -> np.ndarray:
        return np.zeros(1, dtype=bool)

    def success(self, state: Batch, task_state: Batch) -> np.ndarray:
        return np.zeros(1, dtype=bool)


class LineBackend(VectorBackend):
    num_worlds = 1

    def __init__(self) -> None:
        self.pos = np.zeros((1, 2))

    def reset_worlds(self, ids, rngs, options=None) -> Batch:
        self.pos[:] = 0.0
        return {"pos": self.pos.copy()}

    def apply(self, command: Batch) -> Batch:
        self.pos += 0.01 * command["velocity"]
        return {"pos": self.pos.copy()}


def line_env() -> tuple[TaskEnv, SpyBackend]:
    env = TaskEnv(LineTask(), SingleWorld(LineBackend()))
    return env, spied(env)


# -- sanitation ---------------------------------------------------------------------------------


def test_nan_action_raises_by_default_and_nothing_reaches_the_backend() -> None:
    env, spy = line_env()
    wrapped = SafetyWrapper(env, SafetyConfig(limits=None))
    wrapped.reset(seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        wrapped.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="NaN or inf"):
        wrapped.step(np.array([0.0, -np.inf]))
    assert spy.commands == []


def test_nan_action_replaced_by_safe_action_and_counted() -> None:
    env, spy = line_env()
    config = SafetyConfig(non_finite="replace", safe_action=(0.0, -0.5), limits=None)
    wrapped = SafetyWrapper(env, config)
    wrapped.reset(seed=0)
    _, _, _, _, info = wrapped.step(np.array([np.nan, 1.0]))
    np.testing.assert_array_equal(spy.commands[-1]["velocity"], [[0.0, -0.5]])
    assert info["safety"]["interventions"]["non_finite"] == 1
    _, _, _, _, info = wrapped.step(np.array([0.5, 0.5]))
    assert info["safety"]["interventions"]["non_finite"] == 0
    assert info["safety"]["episode_interventions"]["non_finite"] == 1


def test_out_of_range_action_is_clipped_and_counted() -> None:
    env, spy = line_env()
    wrapped = SafetyWrapper(env, SafetyConfig(limits=None))
    wrapped.reset(seed=0)
    _, _, _, _, info = wrapped.step(np.array([1e30, -3.0]))
    np.testing.assert_array_equal(spy.commands[-1]["velocity"], [[1.0, -1.0]])
    assert info["safety"]["interventions"]["clipped"] == 1
    np.testing.assert_array_equal(info["safety"]["applied_action"], [1.0, -1.0])


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (np.zeros(3), ValueError, r"shape must be \(2,\).*got \(3,\)"),
        (np.zeros((1, 2)), ValueError, r"shape must be \(2,\)"),
        (0.5, ValueError, r"shape must be \(2,\).*got \(\)"),
        (np.array([1 + 2j, 0j]), TypeError, "dtype must be a real"),
        (np.array([True, False]), TypeError, "dtype must be a real"),
        (np.array(["a", "b"]), TypeError, "dtype must be a real"),
        (["0.1", None], TypeError, "dtype must be a real"),
    ],
)
def test_bad_actions_raise_clear_errors(action: Any, error: type, match: str) -> None:
    env, spy = line_env()
    wrapped = SafetyWrapper(env, SafetyConfig(limits=None))
    wrapped.reset(seed=0)
    with pytest.raises(error, match=match):
        wrapped.step(action)
    assert spy.commands == []


def test_integer_actions_accepted_or_refused_as_configured() -> None:
    env, spy = line_env()
    wrapped = SafetyWrapper(env, SafetyConfig(limits=None))
    wrapped.reset(seed=0)
    wrapped.step([1, 0])
    np.testing.assert_array_equal(spy.commands[-1]["velocity"], [[1.0, 0.0]])
    strict = SafetyWrapper(line_env()[0], SafetyConfig(limits=None, allow_integer_actions=False))
    strict.reset(seed=0)
    with pytest.raises(TypeError, match="dtype must be a real float"):
        strict.step(np.array([1, 0]))


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="non_finite"):
        SafetyConfig(non_finite="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="watchdog_timeout"):
        SafetyConfig(watchdog_timeout=0.0)
    with pytest.raises(ValueError, match="safe_action"):
        SafetyWrapper(line_env()[0], SafetyConfig(limits=None, safe_action=(2.0, 0.0)))
    with pytest.raises(ValueError, match="workspace_low must be below"):
        PandaLimits(workspace_low=(1.0, 0.0, 0.0), workspace_high=(0.5, 1.0, 1.0))


def test_guard_refuses_a_non_finite_command_from_the_task() -> None:
    env, spy = line_env()
    wrapped = SafetyWrapper(env, SafetyConfig(limits=None))
    wrapped.reset(seed=0)
    env.task.nan_command = True
    with pytest.raises(UnsafeCommandError, match="not finite"):
        wrapped.step(np.zeros(2))
    assert spy.commands == []


def test_close_restores_the_backend() -> None:
    env, spy = line_env()
    wrapped = SafetyWrapper(env, SafetyConfig(limits=None))
    assert env.backend is wrapped.guard
    wrapped.close()
    assert env.backend is spy


# -- robot limits on constructed states -------------------------------------------------------


def test_panda_limits_box_then_max_step() -> None:
    limits = PandaLimits(
        workspace_low=(0.0, 0.0, 0.0),
        workspace_high=(1.0, 1.0, 1.0),
        max_step=0.1,
        max_gripper_force=20.0,
    )
    state = {"tip_pos": np.array([[0.5, 0.5, 0.95]])}
    command = {"tip_target": np.array([[0.5, 0.5, 1.5]]), "gripper_force": np.array([70.0])}
    out, counts = limits.limit(command, state, None)
    np.testing.assert_allclose(out["tip_target"], [[0.5, 0.5, 1.0]])
    np.testing.assert_allclose(out["gripper_force"], [20.0])
    assert counts == {"workspace": 1, "max_step": 0, "gripper_force": 1}
    far = {"tip_target": np.array([[0.5, 0.9, 0.95]])}
    out, counts = limits.limit(far, state, None)
    np.testing.assert_allclose(out["tip_target"], [[0.5, 0.6, 0.95]])
    assert counts["max_step"] == 1


def test_go1_limits_rate_then_position() -> None:
    limits = Go1Limits(max_target_change=0.1, margin=0.05)
    home = np.array([[0.0, 0.9, -1.8] * 4])
    targets = home.copy()
    targets[0, 0] = 5.0  # far beyond the abduction limit
    targets[0, 2] = -0.9  # calf: +0.9 rad in one step
    out, counts = limits.limit({"joint_targets": targets}, {"joint_pos": home}, None)
    assert out["joint_targets"][0, 0] == pytest.approx(0.1)
    assert out["joint_targets"][0, 2] == pytest.approx(-1.7)
    assert counts == {"joint_limits": 0, "target_change": 1}
    # The rate limit is relative to the previous command, not to the measured joints.
    previous = {"joint_targets": np.array([[0.82, 0.9, -1.8] * 4])}
    out, counts = limits.limit({"joint_targets": targets}, {"joint_pos": home}, previous)
    assert out["joint_targets"][0, 0] == pytest.approx(0.863 - 0.05)
    assert counts["joint_limits"] == 1


def test_go1_abort_on_tilt_and_height() -> None:
    limits = Go1Limits()
    home = np.array([[0.0, 0.9, -1.8] * 4])
    upright = np.array([[1.0, 0.0, 0.0, 0.0]])
    assert limits.abort_reason({"joint_pos": home, "base_quat": upright}) is None
    angle = 1.2  # rad of roll
    rolled = np.array([[np.cos(angle / 2), np.sin(angle / 2), 0.0, 0.0]])
    assert roll_pitch(rolled)[0][0] == pytest.approx(angle)
    assert limits.abort_reason({"joint_pos": home, "base_quat": rolled}) == SAFETY_TILT
    crouched = np.array([[0.0, 2.0, -2.7] * 4])
    assert go1_trunk_height(crouched, upright)[0] < limits.min_height
    assert limits.abort_reason({"joint_pos": crouched, "base_quat": upright}) == SAFETY_HEIGHT


def test_go1_height_estimate_matches_the_simulator() -> None:
    env = gym.make("SimGo1-v0")
    env.reset(seed=1)
    for _ in range(20):
        env.step(env.action_space.sample())
    state = env.unwrapped.state
    feet_on_ground = np.min(state["foot_pos"][0, :, 2]) - 0.02  # foot sphere radius
    expected = state["base_pos"][0, 2] - feet_on_ground
    estimate = go1_trunk_height(state["joint_pos"], state["base_quat"])[0]
    assert estimate == pytest.approx(expected, abs=1e-3)


def test_racecar_speed_cap_and_arena() -> None:
    limits = RaceCarLimits(arena_low=(-2.0, -2.0), arena_high=(2.0, 2.0), max_speed=1.0)
    inside = {"pose": np.array([[0.0, 0.0, 0.0]]), "velocity": np.array([[1.2, 0.0, 0.0]])}
    out, counts = limits.limit({"throttle": np.array([0.7])}, inside, None)
    assert out["throttle"][0] == 0.0 and counts["speed_cap"] == 1
    out, counts = limits.limit({"throttle": np.array([-0.7])}, inside, None)
    assert out["throttle"][0] == -0.7 and counts["speed_cap"] == 0
    reversing = {"pose": np.zeros((1, 3)), "velocity": np.array([[-1.5, 0.0, 0.0]])}
    out, _ = limits.limit({"throttle": np.array([-0.7])}, reversing, None)
    assert out["throttle"][0] == 0.0
    assert limits.abort_reason(inside) is None
    outside = {"pose": np.array([[2.5, 0.0, 0.0]]), "velocity": np.array([[0.6, 0.0, 0.0]])}
    assert limits.abort_reason(outside) == "safety_arena"
    out, _ = limits.limit({"throttle": np.array([1.0])}, outside, None)
    assert out["throttle"][0] == 0.0  # above the crawl speed allowed outside


# -- hostile actions through real envs: nothing outside the limits reaches the backend ---------

finite_or_not = st.one_of(
    st.floats(-2.0, 2.0),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 1.0000001, -1.0000001]),
)


def hostile_actions(size: int) -> st.SearchStrategy[Any]:
    """Right-shaped arrays of any float dtype with NaN/inf/huge entries, and malformed input."""

    def cast(values: np.ndarray, dtype: type) -> np.ndarray:
        with np.errstate(over="ignore"):  # 1e30 becomes inf in float16: hostile too
            return values.astype(dtype)

    good_shape = st.builds(
        cast,
        hnp.arrays(np.float64, size, elements=finite_or_not),
        st.sampled_from([np.float16, np.float32, np.float64]),
    )
    wrong_shape = hnp.arrays(
        np.float64,
        st.sampled_from([(), (size - 1,), (size + 1,), (1, size), (size, 1)]),
        elements=finite_or_not,
    )
    wrong_dtype = st.sampled_from(
        [
            np.zeros(size, dtype=complex),
            np.zeros(size, dtype=bool),
            np.array(["x"] * size),
            [None] * size,
            "forward",
        ]
    )
    integers = hnp.arrays(np.int64, size, elements=st.integers(-(2**40), 2**40))
    return st.one_of(good_shape, good_shape, good_shape, wrong_shape, wrong_dtype, integers)


def drive(wrapped: gym.Env, spy: SpyBackend, actions: list[Any]) -> None:
    """Step hostile actions; a refused action must not send anything to the backend."""
    for action in actions:
        sent = len(spy.commands)
        try:
            _, _, terminated, truncated, _ = wrapped.step(action)
        except (ValueError, TypeError):
            assert len(spy.commands) == sent
            continue
        assert len(spy.commands) == sent + 1
        if terminated or truncated:
            wrapped.reset()


@pytest.fixture(scope="module", params=["raise", "replace"])
def go1_stack(request: pytest.FixtureRequest) -> Iterator[tuple[gym.Env, SpyBackend, Go1Limits]]:
    env = gym.make("SimGo1-v0")
    spy = spied(env)
    limits = Go1Limits()
    wrapped = SafetyWrapper(env, SafetyConfig(limits=limits, non_finite=request.param))
    yield wrapped, spy, limits
    assert len(spy.commands) > 20, "the hostile actions hardly ever reached the backend"
    wrapped.close()


@HYPOTHESIS
@given(actions=st.lists(hostile_actions(12), min_size=1, max_size=8), seed=st.integers(0, 3))
def test_go1_hostile_actions_never_exceed_limits(go1_stack, actions, seed) -> None:
    wrapped, spy, limits = go1_stack
    wrapped.reset(seed=seed)
    first = len(spy.commands)
    drive(wrapped, spy, actions)
    lower = np.asarray(limits.joint_lower) + limits.margin
    upper = np.asarray(limits.joint_upper) - limits.margin
    previous = None
    for command, state in zip(spy.commands[first:], spy.states[first:], strict=True):
        targets = command["joint_targets"]
        assert np.all(np.isfinite(targets))
        assert np.all(targets >= lower - 1e-12) and np.all(targets <= upper + 1e-12)
        reference = state["joint_pos"] if previous is None else previous
        assert np.all(np.abs(targets - reference) <= limits.max_target_change + 1e-12)
        previous = targets


def test_go1_safety_abort_is_truncation_with_reason() -> None:
    env = gym.make("SimGo1-v0")
    wrapped = SafetyWrapper(env, SafetyConfig(limits=Go1Limits(min_height=0.5)))
    wrapped.reset(seed=0)
    _, _, terminated, truncated, info = wrapped.step(np.zeros(12))
    assert truncated and not terminated
    assert info["truncation_reason"] == SAFETY_HEIGHT
    assert info["safety"]["abort"] == SAFETY_HEIGHT
    assert info["safety"]["interventions"]["abort"] == 1


def test_auto_limits_follow_the_robot() -> None:
    wrapped = SafetyWrapper(gym.make("SimGo1-v0"))
    assert isinstance(wrapped.limits, Go1Limits)
    names = set(wrapped.intervention_names)
    assert {"non_finite", "clipped", "joint_limits", "target_change", "abort"} <= names
    _, info = wrapped.reset(seed=0)
    assert set(info["safety"]["interventions"]) == names


# -- watchdog ---------------------------------------------------------------------------------


class StoppableBackend(LineBackend):
    """A vector backend with the real robots' ``stop()`` hook."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()


class StoppableWorld(SingleWorld):
    def stop(self) -> None:
        self.vector_backend.stop()


def test_watchdog_calls_the_backend_stop_hook_and_truncates() -> None:
    backend = StoppableBackend()
    env = TaskEnv(LineTask(), StoppableWorld(backend))
    wrapped = SafetyWrapper(env, SafetyConfig(limits=None, watchdog_timeout=0.05))
    try:
        wrapped.reset(seed=0)
        assert backend.stopped.wait(timeout=10.0), "the watchdog never called stop()"
        _, _, terminated, truncated, info = wrapped.step(np.zeros(2))
        assert truncated and not terminated
        assert info["truncation_reason"] == WATCHDOG_TIMEOUT
        assert info["safety"]["interventions"]["watchdog_stop"] == 1
    finally:
        wrapped.close()


def test_watchdog_quiet_while_actions_arrive_and_after_episode_end_no_truncation() -> None:
    stops: list[float] = []
    config = SafetyConfig(limits=None, watchdog_timeout=5.0, stop_hook=lambda: stops.append(1.0))
    env, _ = line_env()
    wrapped = SafetyWrapper(env, config)
    try:
        wrapped.reset(seed=0)
        for _ in range(5):
            _, _, _, truncated, info = wrapped.step(np.zeros(2))
            assert not truncated and info["safety"]["interventions"]["watchdog_stop"] == 0
        assert stops == []
    finally:
        wrapped.close()
    # Fired between episodes (operator resetting the scene): the robot is stopped, nothing else.
    fired = threading.Event()
    config = SafetyConfig(limits=None, watchdog_timeout=0.02, stop_hook=fired.set)
    env = TaskEnv(LineTask(), SingleWorld(LineBackend()))
    env.max_episode_steps = 1
    wrapped = SafetyWrapper(env, config)
    try:
        wrapped.reset(seed=0)
        _, _, _, truncated, _ = wrapped.step(np.zeros(2))
        assert truncated  # time limit: the episode is over
        assert fired.wait(timeout=10.0)
        _, info = wrapped.reset(seed=1)
        _, _, _, truncated, info = wrapped.step(np.zeros(2))
        assert info.get("truncation_reason") != WATCHDOG_TIMEOUT
    finally:
        wrapped.close()


def test_watchdog_without_stop_hook_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    env, _ = line_env()  # SpyBackend has stop(); use a bare backend instead
    env.backend = env.backend.backend
    wrapped = SafetyWrapper(env, SafetyConfig(limits=None, watchdog_timeout=0.02))
    try:
        with caplog.at_level("WARNING"):
            wrapped.reset(seed=0)
            deadline = time.monotonic() + 10.0
            while "cannot stop the robot" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.01)
        assert "no stop() hook" in caplog.text
    finally:
        wrapped.close()


@pytest.fixture(scope="module")
def car_stack() -> Iterator[tuple[gym.Env, SpyBackend, RaceCarLimits]]:
    env = gym.make("SimRaceCar-v0")
    spy = spied(env)
    limits = RaceCarLimits(arena_low=(-2.5, -2.5), arena_high=(2.5, 2.5), max_speed=1.0)
    wrapped = SafetyWrapper(env, SafetyConfig(limits=limits, non_finite="replace"))
    yield wrapped, spy, limits
    speeds = np.array([state["velocity"][0, 0] for state in spy.states])
    assert np.any(speeds >= limits.max_speed), "the speed cap was never exercised"
    wrapped.close()


@HYPOTHESIS
@given(
    actions=st.lists(hostile_actions(2), min_size=1, max_size=8),
    seed=st.integers(0, 3),
    warm_up=st.integers(0, 90),
)
def test_racecar_hostile_actions_respect_speed_cap_and_arena(car_stack, actions, seed, warm_up):
    wrapped, spy, limits = car_stack
    wrapped.reset(seed=seed)
    for _ in range(warm_up):  # full throttle first, so that the cap and the arena matter
        *_, terminated, truncated, _ = wrapped.step(np.array([0.3, 1.0]))
        if terminated or truncated:
            break
    first = len(spy.commands)
    drive(wrapped, spy, actions)
    for command, state in zip(spy.commands[first:], spy.states[first:], strict=True):
        throttle, vx = command["throttle"][0], state["velocity"][0, 0]
        x, y = state["pose"][0, :2]
        outside = abs(x) > 2.5 or abs(y) > 2.5
        cap = limits.outside_max_speed if outside else limits.max_speed
        assert np.isfinite(throttle) and np.isfinite(command["steering"][0])
        assert -1.0 <= throttle <= 1.0
        assert not (vx >= cap and throttle > 0.0)
        assert not (vx <= -cap and throttle < 0.0)


@HYPOTHESIS
@given(actions=st.lists(hostile_actions(2), min_size=1, max_size=8), seed=st.integers(0, 3))
def test_commands_from_below_the_wrapper_respect_the_limits(car_stack, actions, seed) -> None:
    """An automatic reset or a scripted controller steps the TaskEnv under the wrapper: the
    guard still holds every command (only sanitation is the wrapper's)."""
    wrapped, spy, limits = car_stack
    wrapped.reset(seed=seed)
    base = wrapped.unwrapped
    for _ in range(60):  # at speed, towards the arena's edge
        base.step(np.array([0.2, 1.0]))
    first = len(spy.commands)
    for action in actions:
        sent = len(spy.commands)
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # complex -> real casts
                base.step(action)
        except (ValueError, TypeError):
            assert len(spy.commands) == sent
    for command, state in zip(spy.commands[first:], spy.states[first:], strict=True):
        throttle, vx = command["throttle"][0], state["velocity"][0, 0]
        x, y = state["pose"][0, :2]
        cap = limits.outside_max_speed if abs(x) > 2.5 or abs(y) > 2.5 else limits.max_speed
        assert np.isfinite(throttle) and np.isfinite(command["steering"][0])
        assert not (vx >= cap and throttle > 0.0) and not (vx <= -cap and throttle < 0.0)


@pytest.fixture(scope="module")
def panda_stack() -> Iterator[tuple[gym.Env, SpyBackend, PandaLimits]]:
    env = gym.make("SimPanda-v0")
    spy = spied(env)
    # Tighter than the task's own bounds, so that the guard has work to do.
    limits = PandaLimits(
        workspace_low=(0.35, -0.1, 0.1), workspace_high=(0.55, 0.1, 0.35), max_step=0.015
    )
    wrapped = SafetyWrapper(env, SafetyConfig(limits=limits))
    yield wrapped, spy, limits
    assert len(spy.commands) > 10, "the hostile actions hardly ever reached the backend"
    wrapped.close()


@settings(HYPOTHESIS, max_examples=25)
@given(actions=st.lists(hostile_actions(4), min_size=1, max_size=6), seed=st.integers(0, 3))
def test_panda_hostile_actions_stay_in_the_box_and_step(panda_stack, actions, seed) -> None:
    wrapped, spy, limits = panda_stack
    wrapped.reset(seed=seed)
    first = len(spy.commands)
    drive(wrapped, spy, actions)
    low, high = np.asarray(limits.workspace_low), np.asarray(limits.workspace_high)
    for command, state in zip(spy.commands[first:], spy.states[first:], strict=True):
        target, tip = command["tip_target"][0], state["tip_pos"][0]
        assert np.all(np.isfinite(target))
        assert np.linalg.norm(target - tip) <= limits.max_step + 1e-9
        # Inside the box, or (tip outside it) on the straight way back in.
        inside_tip = np.all(tip >= low) and np.all(tip <= high)
        if inside_tip:
            assert np.all(target >= low - 1e-9) and np.all(target <= high + 1e-9)
        assert command["gripper_closed"][0] in (0.0, 1.0)


def test_panda_default_limits_come_from_the_task() -> None:
    wrapped = SafetyWrapper(gym.make("SimPanda-v0"))
    config = wrapped.unwrapped.task.config
    assert wrapped.limits.workspace_low == tuple(config.workspace_low)
    assert wrapped.limits.max_step == pytest.approx(config.max_target_lead * np.sqrt(3))
    wrapped.close()


# -- holes found in review: NaN limits, NaN states, limits that misbehave, watchdog races -------


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (PandaLimits, "max_step", np.nan),
        (PandaLimits, "max_gripper_force", np.inf),
        (PandaLimits, "workspace_high", (0.68, np.nan, 0.35)),
        (Go1Limits, "margin", np.nan),
        (Go1Limits, "max_target_change", np.nan),
        (Go1Limits, "max_tilt", np.nan),
        (Go1Limits, "min_height", np.nan),
        (RaceCarLimits, "max_speed", np.nan),
        (RaceCarLimits, "arena_low", (np.nan, -4.0)),
    ],
)
def test_a_nan_limit_is_refused_not_silently_disabled(cls: type, field: str, value: Any) -> None:
    # NaN compares false with everything: max_speed=nan would never cap, margin=nan would
    # turn every joint target into NaN.
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field} must be finite"):
        cls(**{field: value})


class NaNLimits(RaceCarLimits):
    """Limits with a bug: they turn the throttle into NaN."""

    def limit(self, command: Batch, state: Batch, previous: Batch | None):
        out, counts = super().limit(command, state, previous)
        return {**out, "throttle": np.full_like(out["throttle"], np.nan)}, counts


def test_guard_refuses_a_non_finite_command_made_by_the_limits() -> None:
    env = gym.make("SimRaceCar-v0")
    spy = spied(env)
    wrapped = SafetyWrapper(env, SafetyConfig(limits=NaNLimits()))
    wrapped.reset(seed=0)
    with pytest.raises(UnsafeCommandError, match="limits produced a non-finite command"):
        wrapped.step(np.zeros(2))
    assert spy.commands == []


class LostTracking(SpyBackend):
    """The car's state with the pose lost (NaN) from the ``lose_at``-th command on."""

    lose_at = 3

    def apply(self, command: Batch) -> Batch:
        state = super().apply(command)
        if len(self.commands) >= self.lose_at:
            state = {**state, "pose": np.full_like(state["pose"], np.nan)}
            self._last = state
        return state


def test_a_non_finite_state_ends_the_episode_and_refuses_the_next_command() -> None:
    env = gym.make("SimRaceCar-v0")
    spy = LostTracking(env.unwrapped.backend)
    env.unwrapped.backend = spy
    wrapped = SafetyWrapper(env)
    wrapped.reset(seed=0)
    for _ in range(LostTracking.lose_at - 1):
        _, _, _, truncated, info = wrapped.step(np.zeros(2))
        assert not truncated
    _, _, terminated, truncated, info = wrapped.step(np.zeros(2))
    assert truncated and not terminated
    assert info["truncation_reason"] == SAFETY_INVALID_STATE
    # The speed cap and the arena cannot be checked from a NaN pose: nothing more is sent.
    with pytest.raises(UnsafeCommandError, match="'pose' is not finite"):
        wrapped.step(np.zeros(2))
    assert len(spy.commands) == LostTracking.lose_at
    limits = Go1Limits()
    home = np.array([[0.0, 0.9, -1.8] * 4])
    with pytest.raises(UnsafeCommandError, match="'joint_pos' is not finite"):
        limits.limit({"joint_targets": home}, {"joint_pos": home * np.nan}, None)
    nan_quat = {"joint_pos": home, "base_quat": np.full((1, 4), np.nan)}
    assert limits.abort_reason(nan_quat) == SAFETY_INVALID_STATE


class SlowStopWorld(SingleWorld):
    """A robot whose stop() takes a while; records the order of stops and commands."""

    def __init__(self, vector_backend: VectorBackend, stop_seconds: float = 0.3) -> None:
        super().__init__(vector_backend)
        self.stop_seconds = stop_seconds
        self.events: list[str] = []
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.events.append("stop-begin")
        self.stopping.set()
        time.sleep(self.stop_seconds)
        self.events.append("stop-end")

    def apply(self, command: Batch) -> Batch:
        self.events.append("apply")
        return super().apply(command)


@pytest.mark.parametrize("through", ["wrapper", "auto_reset"])
def test_no_command_overtakes_a_running_stop(through: str) -> None:
    """The watchdog stops the robot; a command arriving meanwhile (the policy's, or an
    automatic reset's, which steps the TaskEnv below the wrapper) waits until stop() returned,
    and an automatic reset's commands feed the watchdog as the policy's do."""
    world = SlowStopWorld(LineBackend())
    env = TaskEnv(LineTask(), world)
    wrapped = SafetyWrapper(env, SafetyConfig(limits=None, watchdog_timeout=0.05))
    try:
        wrapped.reset(seed=0)
        assert world.stopping.wait(timeout=10.0)
        if through == "wrapper":
            wrapped.step(np.zeros(2))
        else:
            env.step(np.zeros(2))
        assert world.events[:3] == ["stop-begin", "stop-end", "apply"]
        fired = wrapped.watchdog.fire_count
        deadline = time.monotonic() + 10.0
        while wrapped.watchdog.fire_count == fired and time.monotonic() < deadline:
            time.sleep(0.01)
        assert wrapped.watchdog.fire_count == fired + 1  # re-armed by that command
    finally:
        wrapped.close()


def test_a_stop_that_hangs_refuses_the_next_command() -> None:
    release = threading.Event()
    entered = threading.Event()

    def hanging_stop() -> None:
        entered.set()
        release.wait(10.0)

    env, spy = line_env()
    config = SafetyConfig(limits=None, watchdog_timeout=0.02, stop_hook=hanging_stop)
    wrapped = SafetyWrapper(env, config)
    try:
        wrapped.watchdog.hook_wait = 0.1
        wrapped.reset(seed=0)
        assert entered.wait(timeout=10.0)
        with pytest.raises(TimeoutError, match="safe-stop hook has not returned"):
            wrapped.step(np.zeros(2))
        assert spy.commands == []
    finally:
        release.set()
        wrapped.close()


def test_a_dropped_wrapper_ends_its_watchdog_thread() -> None:
    env, _ = line_env()
    wrapped = SafetyWrapper(env, SafetyConfig(limits=None, watchdog_timeout=5.0))
    wrapped.reset(seed=0)
    wrapped.step(np.zeros(2))
    thread = wrapped.watchdog._thread
    del wrapped
    gc.collect()
    thread.join(timeout=5.0)
    assert not thread.is_alive()
