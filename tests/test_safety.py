"""Safety in the step loop: sanitation, batched command limits, aborts, and hostile input.

Every env (``gym.make``, ``make_vec``, ``make_env``) steps through the one loop, so these tests
drive the envs themselves and record what reaches the backend (each command after the limits,
with the state it was computed from); the limits are checked with independent arithmetic.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sim2online_envs
from sim2online_envs.controllers.racecar import make_controller
from sim2online_envs.core import FAULT, VALID, Backend, Batch, Task, valid_reading
from sim2online_envs.env import TaskEnv
from sim2online_envs.loop import NON_FINITE_TRANSITION, StepLoop
from sim2online_envs.safety import (
    SAFETY_ARENA,
    SAFETY_HEIGHT,
    SAFETY_TILT,
    Go1Limits,
    PandaLimits,
    RaceCarLimits,
    SafetyConfig,
    UnsafeCommandError,
    go1_trunk_height,
    roll_pitch,
)

# Derandomised: the same examples on every run, so that CI's answer does not depend on the draw
# (the fixtures' "hostile actions reached the backend" count included).
HYPOTHESIS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
SAFETY_KEYS = {"interventions", "episode_interventions", "abort", "applied_action"}
HOME = np.array([[0.0, 0.9, -1.8] * 4])
UPRIGHT = np.array([[1.0, 0.0, 0.0, 0.0]])


class Recorder:
    """Records every command that reaches an env's backend (after the limits), with the state
    it was computed from and the step of the episode it belongs to."""

    def __init__(self, env: Any) -> None:
        self.loop = env.unwrapped.loop if hasattr(env, "unwrapped") else env.loop
        backend = self.loop.backend
        self._apply = backend.apply
        backend.apply = self  # an instance attribute in front of the method
        self.commands: list[Batch] = []
        self.states: list[Batch] = []
        self.steps: list[np.ndarray] = []

    def __call__(self, command: Batch) -> Batch:
        self.commands.append({k: np.array(v, copy=True) for k, v in command.items()})
        assert self.loop.state is not None
        self.states.append({k: np.array(v, copy=True) for k, v in self.loop.state.items()})
        self.steps.append(self.loop.steps.copy())
        return self._apply(command)


# -- a minimal task and backend: sanitation and the command guard ---------------------------------


class LineTask(Task):
    """A 2-D point driven by velocity commands; ``nan_command`` makes the task misbehave."""

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
        return {"velocity": np.full_like(action, np.nan) if self.nan_command else action}

    def observe(self, state: Batch, task_state: Batch) -> np.ndarray:
        return state["pos"].copy()

    def reward_terms(
        self, prev_state: Batch, state: Batch, action: np.ndarray, task_state: Batch
    ) -> dict[str, np.ndarray]:
        return {"distance": -np.linalg.norm(state["pos"], axis=1)}

    def terminated(self, state: Batch, task_state: Batch) -> np.ndarray:
        return np.zeros(len(state["pos"]), dtype=bool)

    def success(self, state: Batch, task_state: Batch) -> np.ndarray:
        return np.zeros(len(state["pos"]), dtype=bool)


class LineBackend(Backend):
    """Integrates the velocity; ``lose_at``: from that command on the position is lost (NaN),
    reported invalid (``honest``) or, like a buggy driver, still marked valid."""

    def __init__(self, num_worlds: int = 1) -> None:
        self.num_worlds = num_worlds
        self.pos = np.zeros((num_worlds, 2))
        self.commands: list[Batch] = []
        self.lose_at: int | None = None
        self.honest = True

    def _state(self) -> Batch:
        state = {"pos": self.pos.copy(), **valid_reading(self.num_worlds, 0.0)}
        if self.lose_at is not None and len(self.commands) >= self.lose_at:
            state["pos"][:] = np.nan
            if self.honest:
                state[VALID][:] = False
                state[FAULT][:] = "pose_lost"
        return state

    def reset_worlds(
        self, ids: np.ndarray, rngs: list[np.random.Generator], options: Any = None
    ) -> Batch:
        self.pos[ids] = 0.0
        return self._state()

    def apply(self, command: Batch) -> Batch:
        self.commands.append({k: np.array(v, copy=True) for k, v in command.items()})
        self.pos += 0.1 * command["velocity"]
        return self._state()


def line_env(**safety: Any) -> tuple[TaskEnv, LineBackend]:
    backend = LineBackend()
    env = TaskEnv(LineTask(), backend, safety={"limits": None, **safety})
    env.reset(seed=0)
    return env, backend


def test_nan_or_inf_action_raises_naming_it_and_sends_nothing() -> None:
    env, backend = line_env()
    with pytest.raises(ValueError, match=r"action contains NaN or inf: \[nan, 0\.0\]"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.array([0.0, -np.inf]))
    assert backend.commands == []


def test_nan_action_replaced_by_the_safe_action_and_counted() -> None:
    env, backend = line_env(non_finite="replace", safe_action=(0.0, -0.5))
    _, reward, _, _, info = env.step(np.array([np.nan, 1.0]))
    np.testing.assert_array_equal(backend.commands[-1]["velocity"], [[0.0, -0.5]])
    assert info["safety"]["interventions"]["non_finite"] == 1
    assert np.isfinite(reward)
    _, _, _, _, info = env.step(np.array([0.5, 0.5]))
    assert info["safety"]["interventions"]["non_finite"] == 0
    assert info["safety"]["episode_interventions"]["non_finite"] == 1
    env.reset(seed=1)
    _, _, _, _, info = env.step(np.array([0.5, 0.5]))
    assert info["safety"]["episode_interventions"]["non_finite"] == 0


def test_out_of_range_action_is_clipped_and_counted() -> None:
    env, backend = line_env()
    _, _, _, _, info = env.step(np.array([1e30, -3.0]))
    np.testing.assert_array_equal(backend.commands[-1]["velocity"], [[1.0, -1.0]])
    assert info["safety"]["interventions"]["clipped"] == 1
    np.testing.assert_array_equal(info["safety"]["applied_action"], [1.0, -1.0])
    strict, backend = line_env(clip=False)
    with pytest.raises(ValueError, match="outside the action space"):
        strict.step(np.array([1.5, 0.0]))
    assert backend.commands == []


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (np.zeros(3), ValueError, r"shape \(3,\).*shape \(2,\)"),
        (np.zeros((1, 2)), ValueError, r"shape \(1, 2\).*shape \(2,\)"),
        (0.5, ValueError, r"shape \(\)"),
        (np.array([1 + 2j, 0j]), TypeError, "dtype must be a real"),
        (np.array([True, False]), TypeError, "dtype must be a real"),
        (np.array(["a", "b"]), TypeError, "dtype must be a real"),
        (["0.1", None], TypeError, "dtype must be a real"),
    ],
)
def test_bad_actions_raise_clear_errors(action: Any, error: type, match: str) -> None:
    env, backend = line_env()
    with pytest.raises(error, match=match):
        env.step(action)
    assert backend.commands == []


def test_integer_actions_accepted_or_refused_as_configured() -> None:
    env, backend = line_env()
    env.step([1, 0])
    np.testing.assert_array_equal(backend.commands[-1]["velocity"], [[1.0, 0.0]])
    strict, backend = line_env(allow_integer_actions=False)
    with pytest.raises(TypeError, match="dtype must be a real float"):
        strict.step(np.array([1, 0]))
    assert backend.commands == []


def test_batched_sanitation_names_the_world() -> None:
    backend = LineBackend(num_worlds=3)
    step_loop = StepLoop(LineTask(), backend, {"limits": None})
    rngs = [np.random.default_rng(i) for i in range(3)]
    step_loop.reset_all([(None, np.arange(3))], rngs)
    actions = np.zeros((3, 2))
    actions[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"action of world 1 contains NaN or inf"):
        step_loop.step(actions, rngs)
    assert backend.commands == []
    replacing = StepLoop(LineTask(), LineBackend(3), {"limits": None, "non_finite": "replace"})
    replacing.reset_all([(None, np.arange(3))], rngs)
    actions[2] = (5.0, 0.0)
    result = replacing.step(actions, rngs)
    names = replacing.intervention_names
    counts = dict(zip(names, result.interventions.T.tolist(), strict=True))
    assert counts["non_finite"] == [0, 1, 0] and counts["clipped"] == [0, 0, 1]


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="non_finite"):
        SafetyConfig(non_finite="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limits must be"):
        SafetyConfig(limits="strict")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown SafetyConfig fields \['watchdog_timeout'\]"):
        SafetyConfig.coerce({"watchdog_timeout": 1.0})
    with pytest.raises(ValueError, match="safe_action"):
        TaskEnv(LineTask(), LineBackend(), safety={"limits": None, "safe_action": (2.0, 0.0)})
    with pytest.raises(ValueError, match="workspace_low must be below"):
        PandaLimits(workspace_low=(1.0, 0.0, 0.0), workspace_high=(0.5, 1.0, 1.0))
    with pytest.raises(ValueError, match="arena_low must be below"):
        RaceCarLimits(arena_low=(1.0, 1.0), arena_high=(0.0, 2.0))
    with pytest.raises(ValueError, match="margin"):
        Go1Limits(margin=2.0)


def test_a_non_finite_command_from_the_task_is_refused_before_the_backend() -> None:
    env, backend = line_env()
    env.task.nan_command = True
    with pytest.raises(UnsafeCommandError, match="not finite"):
        env.step(np.zeros(2))
    assert backend.commands == []


class NaNLimits(RaceCarLimits):
    """Limits with a bug: they turn the throttle into NaN."""

    def limit(
        self, command: Batch, state: Batch, previous: Batch | None, fresh: np.ndarray
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        out, counts = super().limit(command, state, previous, fresh)
        return {**out, "throttle": np.full_like(out["throttle"], np.nan)}, counts


def test_a_non_finite_command_made_by_the_limits_is_refused() -> None:
    env = gym.make("SimRaceCar-v0", safety=SafetyConfig(limits=NaNLimits()))
    recorder = Recorder(env)
    env.reset(seed=0)
    with pytest.raises(UnsafeCommandError, match="'throttle' is not finite"):
        env.step(np.zeros(2))
    assert recorder.commands == []


@pytest.mark.parametrize("honest", [True, False])
def test_a_lost_reading_truncates_with_a_finite_reward_and_the_last_valid_observation(
    honest: bool,
) -> None:
    env, backend = line_env()
    backend.lose_at, backend.honest = 3, honest
    for _ in range(2):
        obs, _, _, truncated, _ = env.step(np.array([1.0, 0.5]))
        assert not truncated
    last = obs.copy()
    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.5]))
    assert truncated and not terminated
    assert info["truncation_reason"] == ("pose_lost" if honest else NON_FINITE_TRANSITION)
    assert reward == 0.0 and all(value == 0.0 for value in info["reward_terms"].values())
    np.testing.assert_array_equal(obs, last)
    assert np.all(np.isfinite(obs))


def test_limits_refuse_a_non_finite_state_they_read() -> None:
    with pytest.raises(UnsafeCommandError, match="'joint_pos' is not finite"):
        Go1Limits().limit({"joint_targets": HOME}, {"joint_pos": HOME * np.nan}, None, [True])
    car = {"pose": np.full((1, 3), np.nan), "velocity": np.zeros((1, 3))}
    with pytest.raises(UnsafeCommandError, match="'pose' is not finite"):
        RaceCarLimits().limit({"throttle": np.ones(1)}, car, None, np.ones(1, bool))
    with pytest.raises(UnsafeCommandError, match="needs state key 'tip_pos'"):
        PandaLimits().limit({"tip_target": np.zeros((1, 3))}, {}, None, np.ones(1, bool))


# -- robot limits on constructed batches: per-world counts ---------------------------------------


def test_panda_limits_box_then_max_step_then_gripper_force_per_world() -> None:
    limits = PandaLimits(
        workspace_low=(0.0, 0.0, 0.0),
        workspace_high=(1.0, 1.0, 1.0),
        max_step=0.1,
        max_gripper_force=20.0,
    )
    state = {"tip_pos": np.array([[0.5, 0.5, 0.95], [0.5, 0.5, 0.95], [0.5, 0.5, 0.5]])}
    command = {
        "tip_target": np.array([[0.5, 0.5, 1.5], [0.5, 0.9, 0.95], [0.52, 0.5, 0.5]]),
        "gripper_closed": np.array([3.0, -1.0, 1.0]),
        "gripper_force": np.array([70.0, 10.0, -5.0]),
    }
    out, counts = limits.limit(command, state, None, np.ones(3, bool))
    np.testing.assert_allclose(
        out["tip_target"], [[0.5, 0.5, 1.0], [0.5, 0.6, 0.95], [0.52, 0.5, 0.5]]
    )
    np.testing.assert_allclose(out["gripper_closed"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(out["gripper_force"], [20.0, 10.0, 0.0])
    assert {name: value.tolist() for name, value in counts.items()} == {
        "workspace": [1, 0, 0],
        "max_step": [0, 1, 0],
        "gripper_force": [1, 0, 1],
    }


def test_go1_limits_rate_from_measured_joints_when_fresh_then_position_per_world() -> None:
    limits = Go1Limits(max_target_change=0.1, margin=0.05)
    measured = np.repeat(HOME, 2, axis=0)
    targets = measured.copy()
    targets[:, 0] = 5.0  # far beyond the abduction limit
    targets[:, 2] = -0.9  # calf: +0.9 rad in one step
    previous = {"joint_targets": np.array([[0.82, 0.9, -1.8] * 4, [0.0, 0.9, -1.8] * 4])}
    # World 0 continues from its previous target; world 1 starts an episode: from its joints.
    fresh = np.array([False, True])
    out, counts = limits.limit({"joint_targets": targets}, {"joint_pos": measured}, previous, fresh)
    assert out["joint_targets"][0, 0] == pytest.approx(0.863 - 0.05)  # position limit wins
    assert out["joint_targets"][1, 0] == pytest.approx(0.1)
    assert out["joint_targets"][1, 2] == pytest.approx(-1.7)
    assert counts["joint_limits"].tolist() == [1, 0]
    assert counts["target_change"].tolist() == [1, 1]
    # No previous command at all (the first step): from the measured joints.
    out, _ = limits.limit({"joint_targets": targets}, {"joint_pos": measured}, None, fresh)
    np.testing.assert_allclose(out["joint_targets"][:, 0], [0.1, 0.1])


def test_go1_first_step_target_change_counts_from_the_measured_joints_in_the_env() -> None:
    env = gym.make("SimGo1-v0", safety={"limits": Go1Limits(max_target_change=0.05)})
    recorder = Recorder(env)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.ones(12, dtype=np.float32))
    measured = recorder.states[0]["joint_pos"]
    sent = recorder.commands[0]["joint_targets"]
    assert np.all(np.abs(sent - measured) <= 0.05 + 1e-12)
    assert info["safety"]["interventions"]["target_change"] == 1
    env.close()


def test_go1_abort_on_tilt_and_height_per_world() -> None:
    limits = Go1Limits()
    angle = 1.2  # rad of roll
    rolled = np.array([[np.cos(angle / 2), np.sin(angle / 2), 0.0, 0.0]])
    assert roll_pitch(rolled)[0][0] == pytest.approx(angle)
    crouched = np.array([[0.0, 2.0, -2.7] * 4])
    assert go1_trunk_height(crouched, UPRIGHT)[0] < limits.min_height
    state = {
        "joint_pos": np.concatenate([HOME, HOME, crouched]),
        "base_quat": np.concatenate([UPRIGHT, rolled, UPRIGHT]),
    }
    assert limits.abort_reasons(state).tolist() == ["", SAFETY_TILT, SAFETY_HEIGHT]


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
    env.close()


def test_racecar_speed_cap_and_arena_per_world() -> None:
    limits = RaceCarLimits(arena_low=(-2.0, -2.0), arena_high=(2.0, 2.0), max_speed=1.0)
    state = {
        "pose": np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.5, 0.0, 0.0]]),
        "velocity": np.array([[1.2, 0, 0], [1.2, 0, 0], [-1.5, 0, 0], [0.6, 0, 0]]),
    }
    throttle = np.array([0.7, -0.7, -0.7, 1.0])
    out, counts = limits.limit({"throttle": throttle}, state, None, np.ones(4, bool))
    # Above the cap: brake only; reversing above it: no more reverse; outside: crawl speed.
    np.testing.assert_array_equal(out["throttle"], [0.0, -0.7, 0.0, 0.0])
    assert counts["speed_cap"].tolist() == [1, 0, 1, 1]
    assert limits.abort_reasons(state).tolist() == ["", "", "", SAFETY_ARENA]


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
        (Go1Limits, "joint_upper", (np.nan,) * 12),
        (RaceCarLimits, "max_speed", np.nan),
        (RaceCarLimits, "outside_max_speed", np.inf),
        (RaceCarLimits, "arena_low", (np.nan, -4.0)),
    ],
)
def test_a_nan_limit_is_refused_not_silently_disabled(cls: type, field: str, value: Any) -> None:
    # NaN compares false with everything: max_speed=nan would never cap, margin=nan would
    # turn every joint target into NaN.
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field} must be finite"):
        cls(**{field: value})


# -- limits and aborts through the envs -----------------------------------------------------------


def test_auto_limits_follow_the_robot_and_its_task() -> None:
    expected = {"SimPanda-v0": PandaLimits, "SimGo1-v0": Go1Limits, "SimRaceCar-v0": RaceCarLimits}
    for env_id, cls in expected.items():
        env = gym.make(env_id)
        assert type(env.unwrapped.limits) is cls
        env.close()
    panda = gym.make("SimPanda-v0")
    config = panda.unwrapped.task.config
    assert panda.unwrapped.limits.workspace_low == tuple(config.workspace_low)
    assert panda.unwrapped.limits.max_step == pytest.approx(config.max_target_lead * np.sqrt(3))
    panda.close()
    car = gym.make("SimRaceCar-v0", task_config={"arena_half_size": 3.5})
    assert car.unwrapped.limits.arena_high == (3.5, 3.5)
    assert gym.make("SimGo1-v0", safety={"limits": None}).unwrapped.limits is None


def test_go1_safety_abort_is_truncation_with_reason() -> None:
    env = gym.make("SimGo1-v0", safety={"limits": Go1Limits(min_height=0.5)})
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.zeros(12))
    assert truncated and not terminated
    assert info["truncation_reason"] == SAFETY_HEIGHT
    assert info["safety"]["abort"] == SAFETY_HEIGHT
    assert info["safety"]["interventions"]["abort"] == 1
    assert np.isfinite(reward)
    env.close()


def test_go1_tilt_abort_and_a_fall_stays_a_termination() -> None:
    env = gym.make("SimGo1-v0", safety={"limits": Go1Limits(max_tilt=0.3)})
    qpos = np.concatenate([[0.0, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0], HOME[0]])
    tilt = 0.5  # rad of roll: past the abort, far from the task's 60-degree fall
    qpos[3:7] = (np.cos(tilt / 2), np.sin(tilt / 2), 0.0, 0.0)
    env.reset(seed=0, options={"qpos": qpos})
    _, _, terminated, truncated, info = env.step(np.zeros(12))
    assert truncated and not terminated and info["truncation_reason"] == SAFETY_TILT
    # Upside down: the task's fall and the tilt abort in the same step; the fall wins.
    qpos[3:7] = (0.0, 1.0, 0.0, 0.0)
    env.reset(seed=0, options={"qpos": qpos})
    _, _, terminated, truncated, info = env.step(np.zeros(12))
    assert terminated and not truncated
    assert "truncation_reason" not in info
    env.close()


def test_racecar_speed_cap_in_the_env() -> None:
    env = gym.make("SimRaceCar-v0", safety={"limits": RaceCarLimits(max_speed=1.0)})
    recorder = Recorder(env)
    env.reset(seed=0, options={"start_pose": (0.0, 0.0, 0.0), "start_speed": 1.5})
    _, _, _, _, info = env.step(np.array([0.0, 1.0], dtype=np.float32))
    assert recorder.commands[0]["throttle"][0] <= 0.0
    assert info["safety"]["interventions"]["speed_cap"] == 1
    env.close()


def test_car_started_outside_the_arena_truncates_identically_everywhere() -> None:
    options = {"start_pose": (4.5, 0.0, 0.0), "start_speed": 1.0}
    action = np.array([0.0, 1.0], dtype=np.float32)
    results = []
    for env in (gym.make("SimRaceCar-v0"), sim2online_envs.make_env("racecar")):
        env.reset(seed=0, options=options)
        _, _, terminated, truncated, info = env.step(action)
        results.append((terminated, truncated, info["truncation_reason"], info["safety"]))
        env.close()
    vec = sim2online_envs.make_vec("SimRaceCar-v0", 2, seed=0)
    vec.set_options(options)
    vec.reset()
    _, _, dones, infos = vec.step(np.stack([action, action]))
    assert dones.all()
    for info in infos:
        results.append(
            (False, info["TimeLimit.truncated"], info["truncation_reason"], info["safety"])
        )
    vec.close()
    for terminated, truncated, reason, safety in results:
        assert (terminated, truncated, reason) == (False, True, SAFETY_ARENA)
        assert safety["abort"] == SAFETY_ARENA
        assert safety["interventions"]["abort"] == 1 and safety["interventions"]["speed_cap"] == 1


def test_safety_info_keys_are_identical_across_robots_and_single_or_batched() -> None:
    keys = {}
    for env_id in ("SimPanda-v0", "SimGo1-v0", "SimRaceCar-v0"):
        env = gym.make(env_id)
        _, reset_info = env.reset(seed=0)
        _, _, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert set(reset_info["safety"]) == set(info["safety"]) == SAFETY_KEYS
        names = tuple(info["safety"]["interventions"])
        assert names[:2] == ("non_finite", "clipped") and names[-1] == "abort"
        assert tuple(info["safety"]["episode_interventions"]) == names
        assert tuple(reset_info["safety"]["interventions"]) == names
        keys[env_id] = names
        env.close()
    for env_id in ("SimGo1-v0", "SimRaceCar-v0"):
        vec = sim2online_envs.make_vec(env_id, 2, seed=0)
        vec.reset()
        assert all(set(info["safety"]) == SAFETY_KEYS for info in vec.reset_infos)
        shape = (2, *vec.action_space.shape)
        _, _, _, infos = vec.step(np.zeros(shape, dtype=np.float32))
        for info in infos:
            assert set(info["safety"]) == SAFETY_KEYS
            assert tuple(info["safety"]["interventions"]) == keys[env_id]
        vec.close()


def test_batched_limits_count_per_world_in_make_vec() -> None:
    vec = sim2online_envs.make_vec(
        "SimRaceCar-v0", 3, seed=0, safety={"limits": RaceCarLimits(max_speed=1.0)}
    )
    recorder = Recorder(vec)
    # Only world 1 is above the cap.
    start = {"start_pose": (0.0, 0.0, 0.0)}
    vec.set_options([{**start, "start_speed": speed} for speed in (0.0, 1.5, 0.5)])
    vec.reset()
    actions = np.array([[0.0, -1.0], [0.0, 1.0], [0.0, -1.0]], dtype=np.float32)
    _, _, _, infos = vec.step(actions)
    assert [info["safety"]["interventions"]["speed_cap"] for info in infos] == [0, 1, 0]
    cap = vec.task.config.max_throttle  # the preset's throttle cap scales action[1]
    np.testing.assert_array_equal(recorder.commands[-1]["throttle"], [-cap, 0.0, -cap])
    vec.close()


# -- scripted controllers stepping the env get the same limits -----------------------------------


def test_a_scripted_controller_stepping_the_env_gets_the_limits() -> None:
    limits = RaceCarLimits(arena_low=(-2.5, -2.5), arena_high=(2.5, 2.5), max_speed=0.8)
    env = sim2online_envs.make_env("racecar", safety={"limits": limits})
    base = env.unwrapped
    recorder = Recorder(base)
    controller = make_controller(base)
    obs, _ = base.reset(seed=3, options={"start_pose": (2.0, 0.0, 0.0), "start_speed": 1.2})
    capped = 0
    for _ in range(80):
        obs, _, terminated, truncated, info = base.step(controller(obs))
        capped += info["safety"]["interventions"]["speed_cap"]
        if terminated or truncated:
            break
    assert capped > 0, "the controller never met the cap"
    for command, state in zip(recorder.commands, recorder.states, strict=True):
        vx, throttle = state["velocity"][0, 0], command["throttle"][0]
        x, y = state["pose"][0, :2]
        cap = limits.outside_max_speed if max(abs(x), abs(y)) > 2.5 else limits.max_speed
        assert not (vx >= cap and throttle > 0.0) and not (vx <= -cap and throttle < 0.0)
    env.close()


# -- hostile input: nothing outside the limits reaches the backend, nothing NaN comes back ------

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


def drive(env: gym.Env, recorder: Recorder, actions: list[Any]) -> None:
    """Step hostile actions; a refused action sends nothing, an accepted one exactly one
    command, and what comes back is finite."""
    for action in actions:
        sent = len(recorder.commands)
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obs, reward, terminated, truncated, _ = env.step(action)
        except (ValueError, TypeError):
            assert len(recorder.commands) == sent
            continue
        assert len(recorder.commands) == sent + 1
        assert np.isfinite(reward)
        for value in obs.values() if isinstance(obs, dict) else [obs]:
            assert np.all(np.isfinite(value))
        if terminated or truncated:
            env.reset()


@pytest.fixture(scope="module", params=["raise", "replace"])
def go1_env(request: pytest.FixtureRequest) -> Iterator[tuple[gym.Env, Recorder, Go1Limits]]:
    limits = Go1Limits()
    env = gym.make("SimGo1-v0", safety=SafetyConfig(limits=limits, non_finite=request.param))
    recorder = Recorder(env)
    yield env, recorder, limits
    assert len(recorder.commands) > 20, "the hostile actions hardly ever reached the backend"
    env.close()


# Explicit examples besides the draw, so that the fixture's "reached the backend" check does not
# depend on how many draws had the right shape: 36 hostile commands, of which 25 are finite in
# their dtype and reach the backend even when non-finite input is refused ("raise").
with np.errstate(over="ignore", under="ignore"):  # 1e30 becomes inf in float16: hostile too
    GO1_EXPLICIT = [
        [
            np.full(12, value).astype(dtype)
            for value in (
                1e30,
                -1e30,
                np.nan,
                np.inf,
                -np.inf,
                3.0,
                -3.0,
                0.0,
                0.5,
                -0.5,
                1e-300,
                100.0,
            )
        ]
        for dtype in (np.float64, np.float32, np.float16)
    ]


@HYPOTHESIS
@given(actions=st.lists(hostile_actions(12), min_size=1, max_size=8), seed=st.integers(0, 3))
@example(actions=GO1_EXPLICIT[0], seed=0)
@example(actions=GO1_EXPLICIT[1], seed=1)
@example(actions=GO1_EXPLICIT[2], seed=2)
def test_go1_hostile_actions_never_exceed_limits(
    go1_env: tuple[gym.Env, Recorder, Go1Limits], actions: list[Any], seed: int
) -> None:
    env, recorder, limits = go1_env
    env.reset(seed=seed)
    first = len(recorder.commands)
    drive(env, recorder, actions)
    lower = np.asarray(limits.joint_lower) + limits.margin
    upper = np.asarray(limits.joint_upper) - limits.margin
    previous = None
    for command, state, steps in zip(
        recorder.commands[first:], recorder.states[first:], recorder.steps[first:], strict=True
    ):
        targets = command["joint_targets"]
        assert np.all(np.isfinite(targets))
        assert np.all(targets >= lower - 1e-12) and np.all(targets <= upper + 1e-12)
        reference = state["joint_pos"] if previous is None or steps[0] == 0 else previous
        rate_ok = np.abs(targets - reference) <= limits.max_target_change + 1e-12
        assert np.all(rate_ok | np.isclose(targets, lower) | np.isclose(targets, upper))
        previous = targets


@pytest.fixture(scope="module")
def car_env() -> Iterator[tuple[gym.Env, Recorder, RaceCarLimits]]:
    limits = RaceCarLimits(arena_low=(-2.5, -2.5), arena_high=(2.5, 2.5), max_speed=1.0)
    env = gym.make("SimRaceCar-v0", safety=SafetyConfig(limits=limits, non_finite="replace"))
    recorder = Recorder(env)
    yield env, recorder, limits
    speeds = np.array([state["velocity"][0, 0] for state in recorder.states])
    assert np.any(speeds >= limits.max_speed), "the speed cap was never exercised"
    env.close()


@HYPOTHESIS
@given(
    actions=st.lists(hostile_actions(2), min_size=1, max_size=8),
    seed=st.integers(0, 3),
    warm_up=st.integers(0, 90),
)
def test_racecar_hostile_actions_respect_speed_cap_and_arena(
    car_env: tuple[gym.Env, Recorder, RaceCarLimits],
    actions: list[Any],
    seed: int,
    warm_up: int,
) -> None:
    env, recorder, limits = car_env
    env.reset(seed=seed)
    for _ in range(warm_up):  # full throttle first, so that the cap and the arena matter
        *_, terminated, truncated, _ = env.step(np.array([0.3, 1.0]))
        if terminated or truncated:
            break
    first = len(recorder.commands)
    drive(env, recorder, actions)
    for command, state in zip(recorder.commands[first:], recorder.states[first:], strict=True):
        throttle, vx = command["throttle"][0], state["velocity"][0, 0]
        x, y = state["pose"][0, :2]
        cap = limits.outside_max_speed if max(abs(x), abs(y)) > 2.5 else limits.max_speed
        assert np.isfinite(throttle) and np.isfinite(command["steering"][0])
        assert -1.0 <= throttle <= 1.0
        assert not (vx >= cap and throttle > 0.0)
        assert not (vx <= -cap and throttle < 0.0)


@pytest.fixture(scope="module")
def panda_env() -> Iterator[tuple[gym.Env, Recorder, PandaLimits]]:
    # Tighter than the task's own bounds, so that the limits have work to do.
    limits = PandaLimits(
        workspace_low=(0.35, -0.1, 0.1), workspace_high=(0.55, 0.1, 0.35), max_step=0.015
    )
    env = gym.make("SimPanda-v0", safety=SafetyConfig(limits=limits))
    recorder = Recorder(env)
    yield env, recorder, limits
    assert len(recorder.commands) > 10, "the hostile actions hardly ever reached the backend"
    env.close()


@settings(HYPOTHESIS, max_examples=20)
@given(actions=st.lists(hostile_actions(4), min_size=1, max_size=6), seed=st.integers(0, 3))
def test_panda_hostile_actions_stay_in_the_box_and_step(
    panda_env: tuple[gym.Env, Recorder, PandaLimits], actions: list[Any], seed: int
) -> None:
    env, recorder, limits = panda_env
    env.reset(seed=seed)
    first = len(recorder.commands)
    drive(env, recorder, actions)
    low, high = np.asarray(limits.workspace_low), np.asarray(limits.workspace_high)
    for command, state in zip(recorder.commands[first:], recorder.states[first:], strict=True):
        target, tip = command["tip_target"][0], state["tip_pos"][0]
        assert np.all(np.isfinite(target))
        assert np.linalg.norm(target - tip) <= limits.max_step + 1e-9
        # Inside the box, or (tip outside it) on the straight way back in.
        if np.all(tip >= low) and np.all(tip <= high):
            assert np.all(target >= low - 1e-9) and np.all(target <= high + 1e-9)
        assert command["gripper_closed"][0] in (0.0, 1.0)


# -- the compiled Go1 limits and abort test against their NumPy reference -------------------------

HOSTILE_VALUES = np.array([0.0, -0.0, 1e30, -1e30, 5e-324, 0.25, -0.25, 0.813, -0.813, 4.451])


def _go1_batch(
    rng: np.random.Generator, count: int, limits: Go1Limits
) -> tuple[np.ndarray, np.ndarray]:
    """Joint targets and measured joints: random, exactly on the position bounds and at the
    rate limit, huge values and signed zeros (every row a mix)."""
    targets = rng.uniform(-6.0, 6.0, (count, 12))
    measured = HOME + rng.uniform(-0.5, 0.5, (count, 12))
    hostile = rng.random((count, 12)) < 0.3
    targets[hostile] = rng.choice(HOSTILE_VALUES, size=int(hostile.sum()))
    lower = np.broadcast_to(np.asarray(limits.joint_lower) + limits.margin, (count, 12))
    on_bound = rng.random((count, 12)) < 0.1
    targets[on_bound] = lower[on_bound]
    at_rate = rng.random((count, 12)) < 0.1
    targets[at_rate] = (measured + limits.max_target_change)[at_rate]
    return targets, measured


def _bits(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value).view(np.uint8)


@pytest.mark.parametrize("count", [1, 7, 256])
@pytest.mark.parametrize("with_previous", [False, True])
def test_compiled_go1_limits_equal_the_numpy_reference_bit_for_bit(
    count: int, with_previous: bool
) -> None:
    limits = Go1Limits(max_target_change=0.2, margin=0.05)
    rng = np.random.default_rng(count)
    for _ in range(20):
        targets, measured = _go1_batch(rng, count, limits)
        previous = {"joint_targets": measured + rng.uniform(-0.3, 0.3, (count, 12))}
        fresh = rng.random(count) < 0.3
        args = (
            {"joint_targets": targets, "other": np.ones(count)},
            {"joint_pos": measured},
            previous if with_previous else None,
            fresh,
        )
        fast, fast_counts = limits.limit(*args)
        slow, slow_counts = limits.limit_reference(*args)
        assert fast.keys() == slow.keys()
        np.testing.assert_array_equal(_bits(fast["joint_targets"]), _bits(slow["joint_targets"]))
        assert fast_counts.keys() == slow_counts.keys()
        for name in slow_counts:
            assert fast_counts[name].dtype == slow_counts[name].dtype == np.int64
            np.testing.assert_array_equal(fast_counts[name], slow_counts[name])


def test_compiled_go1_limits_refuse_non_finite_input_like_the_reference() -> None:
    limits = Go1Limits()
    for key, bad in [("joint_targets", np.nan), ("joint_targets", -np.inf), ("joint_pos", np.inf)]:
        command = {"joint_targets": np.repeat(HOME, 3, axis=0)}
        state = {"joint_pos": np.repeat(HOME, 3, axis=0)}
        (command if key == "joint_targets" else state)[key][2, 5] = bad
        errors = []
        for method in (limits.limit, limits.limit_reference):
            with pytest.raises(UnsafeCommandError) as caught:
                method(command, state, None, np.ones(3, bool))
            errors.append(str(caught.value))
        assert errors[0] == errors[1] and f"{key!r} is not finite" in errors[0]


def test_go1_limits_take_what_the_kernel_does_not_through_the_reference() -> None:
    """float32 targets, a list for fresh, a missing key: the reference's conversions and
    errors, unchanged."""
    limits = Go1Limits()
    targets = (HOME + 0.4).astype(np.float32)
    previous = {"joint_targets": HOME + 0.1}
    fast, counts = limits.limit({"joint_targets": targets}, {"joint_pos": HOME}, previous, [False])
    slow, slow_counts = limits.limit_reference(
        {"joint_targets": targets}, {"joint_pos": HOME}, previous, np.array([False])
    )
    np.testing.assert_array_equal(fast["joint_targets"], slow["joint_targets"])
    assert counts["target_change"].tolist() == slow_counts["target_change"].tolist() == [1]
    with pytest.raises(UnsafeCommandError, match="needs state key 'joint_pos'"):
        limits.limit({"joint_targets": HOME}, {}, None, np.ones(1, bool))


def _quaternions(rng: np.random.Generator, count: int) -> np.ndarray:
    quat = rng.normal(size=(count, 4))
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    quat[::5] *= 1.3  # not unit: the pitch's arcsin argument is clipped
    near_upright = rng.random(count) < 0.5
    wobble = rng.normal(0.0, 0.3, (int(near_upright.sum()), 4))
    quat[near_upright] = UPRIGHT + wobble
    return quat


@pytest.mark.parametrize("count", [1, 9, 1000])
def test_compiled_go1_abort_test_equals_the_numpy_reference(count: int) -> None:
    limits = Go1Limits()
    rng = np.random.default_rng(count + 1)
    quat = _quaternions(rng, count)
    joints = HOME + rng.uniform(-1.5, 1.5, (count, 12))
    state = {"base_quat": quat, "joint_pos": joints}
    fast, slow = limits.abort_masks(state), limits.abort_masks_reference(state)
    assert list(fast) == list(slow) == [SAFETY_TILT, SAFETY_HEIGHT]
    for reason in slow:
        np.testing.assert_array_equal(fast[reason], slow[reason])
    if count == 1000:  # both reasons occur, and neither everywhere
        assert 0 < fast[SAFETY_TILT].sum() < count and 0 < fast[SAFETY_HEIGHT].sum() < count
    np.testing.assert_array_equal(limits.abort_reasons(state), reasons_of(limits, state))


def reasons_of(limits: Go1Limits, state: Batch) -> np.ndarray:
    masks = limits.abort_masks_reference(state)
    reasons = np.full(len(state["base_quat"]), "", dtype="<U32")
    for reason, mask in reversed(list(masks.items())):
        reasons[mask] = reason
    return reasons


def test_compiled_go1_trunk_height_is_the_robot_modules() -> None:
    """The kernel's height is ``robots.go1.trunk_height``'s arithmetic in the same order (its
    sines and cosines from the C library, NumPy's may differ in the last bit elsewhere)."""
    from sim2online_envs import safety, safety_kernels
    from sim2online_envs.robots import go1 as go1_robot

    rng = np.random.default_rng(3)
    quat = _quaternions(rng, 500)
    joints = HOME + rng.uniform(-2.0, 2.0, (500, 12))
    _, _, height = safety_kernels.go1_abort(
        quat,
        joints,
        safety._GO1_HIP_OFFSETS,
        safety._GO1_THIGH_Y,
        go1_robot.THIGH_LENGTH,
        go1_robot.CALF_LENGTH,
        go1_robot.FOOT_RADIUS,
        1.1,
        0.12,
    )
    np.testing.assert_allclose(height, go1_robot.trunk_height(joints, quat), rtol=0, atol=1e-14)


def test_compiled_go1_abort_test_on_hostile_states_matches_the_reference() -> None:
    """NaN and infinite readings compare false in both (nothing aborts on NaN); infinities in
    the quaternion give the same tilt; huge joint angles the same height test."""
    limits = Go1Limits()
    quat = np.repeat(UPRIGHT, 8, axis=0)
    joints = np.repeat(HOME, 8, axis=0)
    quat[0, 1] = np.nan
    quat[1, 2] = np.inf
    quat[2] = [0.0, -np.inf, np.inf, 0.0]
    joints[3, 4] = np.nan
    joints[4, 7] = -np.inf
    joints[5, :] = 1e30
    quat[6] = [-0.0, 0.0, -0.0, 0.0]
    joints[7, 2::3] = -0.0
    state = {"base_quat": quat, "joint_pos": joints}
    with np.errstate(all="ignore"):
        fast, slow = limits.abort_masks(state), limits.abort_masks_reference(state)
    for reason in slow:
        np.testing.assert_array_equal(fast[reason], slow[reason], err_msg=reason)
    float32_state = {"base_quat": UPRIGHT.astype(np.float32), "joint_pos": HOME}
    assert limits.abort_reasons(float32_state).tolist() == [""]  # through the reference
