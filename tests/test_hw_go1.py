"""RealGo1-v0 end to end against its twin: the SDK's UDP, the driver thread, the backend's clock.

The twin runs at ``time_scale`` 0.25 here (the twin, the SDK loop and the 50 Hz clock all slowed
by the same factor, so the MDP is the same): on this shared 2-core machine a 500 Hz MuJoCo twin
beside the driver in real time loses replies (docs/hardware/go1.md has the numbers). Set
``SIM2ONLINE_GO1_TIME_SCALE=1`` to run them in real time.
"""

from __future__ import annotations

import os
import time

import gymnasium as gym
import numpy as np
import pytest

import sim2online_envs  # noqa: F401  (registers the ids)
from sim2online_envs.controllers.go1 import Go1StandController

pytest.importorskip("unitree_legged_sdk.robot_interface")

# A robot's clock against a twin process in real time: run one at a time (scripts/test.sh).
pytestmark = pytest.mark.twin

SETTINGS = {} if "SIM2ONLINE_GO1_TIME_SCALE" in os.environ else {"time_scale": 0.25}
#: Wall-clock bound for any fault to end its episode ("no hang").
FAULT_BOUND_S = 20.0


def _make(steps: int = 60, **kwargs):
    return gym.make(
        "RealGo1-v0",
        hardware="twin",
        task_config={"max_episode_steps": steps},
        **SETTINGS,
        **kwargs,
    )


@pytest.fixture(scope="module")
def env():
    environment = _make(steps=150)
    yield environment
    environment.close()


def _finite(*values) -> bool:
    return all(np.all(np.isfinite(np.asarray(v, dtype=np.float64))) for v in values)


def test_same_contract_as_sim(env) -> None:
    sim = gym.make("SimGo1-v0", task_config={"max_episode_steps": 150})
    try:
        assert env.observation_space == sim.observation_space
        assert env.action_space == sim.action_space
        assert env.unwrapped.control_dt == sim.unwrapped.control_dt
        _, real_info = env.reset(seed=0)
        _, sim_info = sim.reset(seed=0)
        assert set(real_info) == set(sim_info)
        action = np.zeros(12, dtype=np.float32)
        real = env.step(action)
        simulated = sim.step(action)
        assert set(real[4]) == set(simulated[4])
        assert set(real[4]["reward_terms"]) == set(simulated[4]["reward_terms"])
        assert real[0].shape == simulated[0].shape and real[0].dtype == simulated[0].dtype
        # the raw state: same keys, shapes and dtypes (the task reads both)
        real_state, sim_state = env.unwrapped.loop.state, sim.unwrapped.loop.state
        for key, value in sim_state.items():
            if key in ("qpos", "qvel", "base_pos", "fault"):
                continue
            assert key in real_state, key
            assert real_state[key].shape == value.shape, key
            assert real_state[key].dtype == value.dtype, key
    finally:
        sim.close()


def test_stand_controller_whole_episode_and_estimator(env) -> None:
    """A whole episode standing: time-limit truncation, upright, velocity estimate close."""
    policy = Go1StandController()
    backend = env.unwrapped.backend
    obs, _ = env.reset(seed=1)
    errors, heights, steps = [], [], 0
    while True:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        steps += 1
        assert _finite(obs, reward)
        truth = backend.privileged()
        errors.append(env.unwrapped.loop.state["local_linvel"][0] - truth["local_linvel"][0])
        heights.append(truth["base_pos"][0, 2])
        if terminated or truncated:
            break
    assert steps == 150 and truncated and not terminated
    assert info["truncation_reason"] == "time_limit"
    assert min(heights) > 0.2  # stood the whole time
    rms = np.sqrt(np.mean(np.square(errors[25:]), axis=0))
    assert np.all(rms < 0.1), rms
    timing = info["timing"]
    assert timing["sdk_states"] > 0.9 * timing["sdk_ticks"]


def test_estimator_follows_a_push(env) -> None:
    """Pushed forward, the trunk moves; the filter's velocity tracks the twin's truth."""
    policy = Go1StandController()
    backend = env.unwrapped.backend
    obs, _ = env.reset(seed=2)
    for _ in range(5):
        obs, *_ = env.step(policy(obs))
    backend.twin.push(force=[60.0, 0.0, 0.0], duration=0.3)
    estimated, true = [], []
    for _ in range(40):
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        assert _finite(obs, reward)
        estimated.append(env.unwrapped.loop.state["local_linvel"][0])
        true.append(backend.privileged()["local_linvel"][0])
        if terminated or truncated:
            break
    estimated, true = np.array(estimated), np.array(true)
    assert np.abs(true[:, 0]).max() > 0.1  # it did move
    assert np.sqrt(np.mean((estimated[:, 0] - true[:, 0]) ** 2)) < 0.1


def _run_fault(env, inject, expected: set[str], tmp_path=None):
    """Reset, step a little, inject, step until the episode ends; return reason and info.

    ``"fall"`` in ``expected`` stands for a termination: a fall is a true end of the task, on
    the robot as in simulation (the fallen state reaches the task once, valid).
    """
    policy = Go1StandController()
    obs, _ = env.reset(seed=3)
    for _ in range(5):
        obs, *_ = env.step(policy(obs))
    inject(env.unwrapped.backend.twin)
    start = time.monotonic()
    while time.monotonic() - start < FAULT_BOUND_S:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        assert _finite(obs, reward)
        if terminated or truncated:
            break
    else:
        pytest.fail(f"no truncation within {FAULT_BOUND_S} s")
    if terminated:
        assert "fall" in expected and not truncated
        reason = "fall"
    else:
        assert truncated
        reason = info["truncation_reason"]
    assert reason in expected, reason
    backend = env.unwrapped.backend
    assert backend.driver.mode == "damping"
    # the motors got the damping command: Kp 0, Kd 3 (the twin decodes what reached it)
    deadline = time.monotonic() + 2.0
    command = backend.twin.last_command
    while time.monotonic() < deadline and (command is None or command["kp"].max() > 0):
        time.sleep(0.01)
        command = backend.twin.last_command
    assert command["kp"].max() == 0.0 and command["kd"].min() == pytest.approx(3.0)
    return reason, info


FAULTS = {
    "drop_10_percent": (lambda twin: twin.set_faults(drop=0.1), {"packet_loss"}),
    "drop_all": (lambda twin: twin.set_faults(drop=1.0), {"udp_timeout"}),
    "robot_stops_answering": (lambda twin: twin.set_faults(silent=True), {"udp_timeout"}),
    "delayed": (
        lambda twin: twin.set_faults(delay=0.04 / SETTINGS.get("time_scale", 1.0)),
        {"udp_delay", "udp_timeout"},
    ),
    "reordered": (lambda twin: twin.set_faults(reorder=True), {"udp_reordered"}),
    "crc_error": (lambda twin: twin.set_faults(corrupt=1), {"crc_error"}),
    "joint_pushed_to_its_limit": (
        lambda twin: twin.push_joint(0, torque=-60.0, duration=0.5),
        {"joint_limit"},
    ),
    "push_makes_it_fall": (
        lambda twin: twin.push(force=[0.0, 400.0, 0.0], duration=0.25, torque=[60.0, 0, 0]),
        {"fall", "joint_limit"},
    ),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_ends_in_damping_and_truncation(env, name) -> None:
    inject, expected = FAULTS[name]
    _run_fault(env, inject, expected)


def test_fault_recording_kept(tmp_path) -> None:
    from sim2online_envs.wrappers.recording import RecordEpisodes, RecordingConfig, load_episode

    recorded = RecordEpisodes(_make(steps=200), RecordingConfig(tmp_path))
    try:
        reason, _ = _run_fault(recorded, lambda twin: twin.set_faults(silent=True), {"udp_timeout"})
        recorded.reset(seed=4)  # the next episode starts: the link is back
    finally:
        recorded.close()
    files = sorted(tmp_path.glob("*.npz"))
    assert files
    episode = load_episode(files[0])
    assert episode.truncated[-1] and not episode.terminated.any()
    assert np.all(np.isfinite(episode.rewards)) and np.all(np.isfinite(episode.observations))
    assert str(episode.infos["truncation_reason"][-1]) == reason


def test_robot_not_answering_is_a_clear_error() -> None:
    """No robot at the address: a ConnectionTimeoutError naming it, within the timeout."""
    from sim2online_envs.hardware.base import ConnectionTimeoutError

    start = time.monotonic()
    with pytest.raises(ConnectionTimeoutError, match=r"127\.0\.0\.1:9"):
        gym.make("RealGo1-v0", robot_ip="127.0.0.1", robot_port=9, local_port=0,
                 connect_timeout=0.5)  # fmt: skip
    assert time.monotonic() - start < 5.0


def test_check_against_the_twin() -> None:
    from sim2online_envs.hardware.go1.check import run_checks

    results = run_checks(hardware="twin", **SETTINGS)
    assert [name for name, _, _ in results] == [
        "sdk", "robot answers", "battery", "imu", "joints inside limits", "damping responds",
        "link",
    ]  # fmt: skip
    assert all(ok for _, ok, _ in results), results
    failed = run_checks(robot_ip="127.0.0.1", robot_port=9, local_port=0, connect_timeout=0.3)
    assert failed[-1][0] == "robot answers" and not failed[-1][1]
    assert "127.0.0.1:9" in failed[-1][2]


def test_sb3_policy_trained_in_sim_runs_whole_episode_on_the_twin() -> None:
    """A policy trained on SimGo1-v0 (briefly: this checks the hand-off, not the skill) runs a
    whole episode on the twin through SB3's own predict, as a user's script would."""
    sb3 = pytest.importorskip("stable_baselines3")

    sim = gym.make("SimGo1-v0")
    model = sb3.SAC("MlpPolicy", sim, learning_starts=64, batch_size=64, seed=0, device="cpu")
    model.learn(total_timesteps=150)
    sim.close()
    real = _make(steps=60)
    try:
        obs, _ = real.reset(seed=5)
        for _ in range(61):
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, info = real.step(action)
            assert _finite(obs, reward)
            if terminated or truncated:
                break
        # The episode ends as in simulation: its time limit, or a fall (a termination).
        assert terminated or info["truncation_reason"] == "time_limit", info
    finally:
        real.close()
