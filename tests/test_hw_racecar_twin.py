"""RealRaceCar-v0 against its twin: the firmware's ELF in simavr on a pty, NatNet on loopback.

Whole episodes of the parking controller, the firmware's failsafe measured in the twin, and
every injected fault: each ends in a safe stop (the twin's car at rest with no further
commands), a truncation with the fault's name, in bounded time, no NaN, the recording kept.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from racecar_twin_settings import TWIN_SETTINGS

pytest.importorskip("serial")
pytest.importorskip("natnet")
pytest.importorskip("cobs")
pytest.importorskip("crc")

# A robot's clock against a twin process in real time: run one at a time (scripts/test.sh).
pytestmark = pytest.mark.twin

from sim2online_envs.hardware.racecar import firmware

if firmware.missing_tools(twin=True):
    pytest.skip(
        f"the twin needs the Debian packages {firmware.missing_tools(twin=True)}",
        allow_module_level=True,
    )

from sim2online_envs.controllers.racecar import make_controller
from sim2online_envs.hardware.racecar.env import RealRaceCarEnv
from sim2online_envs.safety import SAFETY_ARENA
from sim2online_envs.wrappers.recording import (
    RecordEpisodes,
    RecordingConfig,
    load_episodes,
)

#: No test step loop runs longer than this many steps after a fault (a hang fails, not waits).
MAX_STEPS_AFTER_FAULT = 120


@pytest.fixture(scope="module")
def env() -> Iterator[RealRaceCarEnv]:
    env = RealRaceCarEnv(hardware="twin", seed=3, **TWIN_SETTINGS)
    yield env
    env.close()


def _at_rest(env: RealRaceCarEnv, timeout: float = 4.0) -> dict[str, Any]:
    """Wait (bounded) until the twin's car has stopped with no command sent; its state."""
    end = time.monotonic() + timeout
    while True:
        truth = env.twin.state()
        if truth["speed"] < 0.01 and abs(truth["velocity"][2]) < 0.01:
            return truth
        assert time.monotonic() < end, f"the car did not come to rest: {truth}"
        time.sleep(0.05)


def _check_transition(obs: np.ndarray, reward: float, env: RealRaceCarEnv) -> None:
    assert env.observation_space.contains(obs), obs
    assert np.isfinite(obs).all() and np.isfinite(reward)


def test_real_and_sim_share_spaces_timing_and_info_keys(env: RealRaceCarEnv) -> None:
    from sim2online_envs.envs.racecar import RaceCarEnv

    sim = RaceCarEnv()
    assert env.observation_space == sim.observation_space
    assert env.action_space == sim.action_space
    assert env.control_dt == sim.control_dt == pytest.approx(1 / 60)
    assert env.max_episode_steps == sim.max_episode_steps
    _, real_reset = env.reset(seed=0)
    _, sim_reset = sim.reset(seed=0)
    assert set(real_reset) == set(sim_reset)
    action = np.zeros(2, dtype=np.float32)
    real_step = env.step(action)[4]
    sim_step = sim.step(action)[4]
    assert set(real_step) == set(sim_step)
    assert set(real_step["reward_terms"]) == set(sim_step["reward_terms"])
    sim.close()


def test_parking_controller_whole_episodes_recorded(env: RealRaceCarEnv, tmp_path) -> None:
    recorder = RecordEpisodes(env, RecordingConfig(tmp_path))
    controller = make_controller(env)
    starts, finals = [], []
    for episode in range(2):
        obs, info = recorder.reset(seed=10 + episode)
        starts.append(info["distance"])
        for _ in range(env.max_episode_steps + 1):
            obs, reward, terminated, truncated, info = recorder.step(controller(obs))
            _check_transition(obs, reward, env)
            if terminated or truncated:
                break
        assert truncated and info["truncation_reason"] == "time_limit", info
        finals.append(info["distance"])
    # The prior's controller parks the "reality" car: every episode ends nearer the goal, and
    # at least one inside the goal radius.
    assert all(f < s for s, f in zip(starts, finals, strict=True)), (starts, finals)
    assert min(finals) <= 0.3, finals
    episodes = load_episodes(tmp_path)
    assert [len(e) for e in episodes] == [env.max_episode_steps] * 2
    assert all(e.provenance["backend"] == "real" for e in episodes)


def test_firmware_failsafe_when_commands_stop(env: RealRaceCarEnv) -> None:
    """The host dies without a stop frame: the firmware goes neutral within its timeout plus
    one control period of the last frame (AVR time, in the twin), and the car comes to rest."""
    from sim2online_envs.hardware.racecar import protocol

    backend = env.unwrapped.backend
    env.reset(seed=1, options={"start_pose": [-2.0, 0.0, 0.0]})
    # The firmware's default timeout for this test (the next reset restores the env's setting).
    backend.serial._write(protocol.Config(backend.serial._next_seq(), 100, 3).encode())
    for _ in range(40):
        env.step(np.array([0.0, 0.6], dtype=np.float32))
    assert env.twin.state()["speed"] > 0.3
    # As if the process were killed: neither the backend's stop nor its watchdog gets a frame out.
    original_stop = backend.serial.stop
    backend.serial.stop = lambda: None
    try:
        time.sleep(0.5)
        truth = _at_rest(env)
    finally:
        backend.serial.stop = original_stop
    event = truth["neutral_events"][-1]
    delay = event["t"] - event["frame_t"]
    assert 0.095 <= delay <= 0.100 + env.control_dt, event
    assert truth["pwm"]["throttle_us"] == 1500
    assert backend.serial.status.failsafe
    assert backend.serial.status.reason.name == "TIMEOUT"


FAULTS = {
    # fault: (inject, undo, expected truncation reason)
    "serial_cut": (("serial_cut", True), ("serial_cut", False), "serial_lost"),
    "garbage": (
        ("garbage", b"\x13\x37\x00\x42\x00\xff\xfe\x00\x11\x00"),
        None,
        "serial_bad_frames",
    ),
    "bad_checksums": (("corrupt", 4), ("corrupt", 0), "serial_bad_frames"),
    "firmware_reboot": (("reboot", True), None, "firmware_reboot"),
    "mocap_silent": (("mocap_silent", True), ("mocap_silent", False), "mocap_stale"),
    "body_lost": (("body_lost", True), ("body_lost", False), "body_lost"),
    "frames_late": (("latency", 0.2), ("latency", 0.004), "mocap_late"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_stops_the_car_and_truncates_with_its_name(
    env: RealRaceCarEnv, fault: str, tmp_path
) -> None:
    inject, undo, reason = FAULTS[fault]
    recorder = RecordEpisodes(env, RecordingConfig(tmp_path))
    obs, _ = recorder.reset(seed=2, options={"start_pose": [-2.0, 0.5, 0.2]})
    for _ in range(25):
        obs, reward, terminated, truncated, info = recorder.step(np.array([0.2, 0.6], np.float32))
        assert not truncated, info
    assert env.twin.state()["speed"] > 0.2
    started = time.monotonic()
    env.twin.fault(*inject)
    try:
        for _ in range(MAX_STEPS_AFTER_FAULT):
            obs, reward, terminated, truncated, info = recorder.step(
                np.array([0.2, 0.6], np.float32)
            )
            _check_transition(obs, reward, env)
            if truncated or terminated:
                break
        assert truncated, f"no truncation {MAX_STEPS_AFTER_FAULT} steps after {fault}"
        assert info["truncation_reason"] == reason, info
        assert time.monotonic() - started < 3.0
        truth = _at_rest(env)  # no command since the truncation
        assert truth["pwm"]["throttle_us"] == 1500 or fault == "serial_cut"
    finally:
        if undo is not None:
            env.twin.fault(*undo)
    (episode,) = load_episodes(tmp_path)
    assert episode.infos["truncation_reason"][-1] == reason
    assert np.isfinite(episode.rewards).all() and np.isfinite(episode.observations).all()
    # The env recovers: the next episode starts and drives.
    obs, _ = env.reset(seed=5)
    obs, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert not truncated, info


def test_preflight_check_against_the_twin() -> None:
    from sim2online_envs.hardware.racecar.check import run_checks

    results = run_checks(hardware="twin", **TWIN_SETTINGS)
    failed = [r for r in results if not r[1]]
    assert not failed, results
    names = [name for name, _, _ in results]
    assert {"serial port", "firmware", "mocap rate", "pose in arena", "failsafe"} <= set(names)


def test_unreachable_devices_fail_fast_naming_them(tmp_path) -> None:
    from sim2online_envs.hardware.base import ConnectionTimeoutError

    started = time.monotonic()
    with pytest.raises(ConnectionTimeoutError, match="race car serial"):
        RealRaceCarEnv(hardware="real", port=str(tmp_path / "ttyACM9"), connect_timeout=0.5)
    assert time.monotonic() - started < 5.0


def test_sb3_policy_trained_in_sim_runs_whole_episode_on_the_twin(env: RealRaceCarEnv) -> None:
    """A policy trained on SimRaceCar-v0 (briefly: this checks the hand-off, not the skill) runs
    a whole episode on the twin through SB3's own predict, as a user's script would."""
    sb3 = pytest.importorskip("stable_baselines3")
    from sim2online_envs.envs.racecar import RaceCarEnv

    sim = RaceCarEnv()
    model = sb3.SAC("MlpPolicy", sim, learning_starts=64, batch_size=64, seed=0, device="cpu")
    model.learn(total_timesteps=150)
    sim.close()
    obs, _ = env.reset(seed=4)
    for _ in range(env.max_episode_steps + 1):
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        _check_transition(obs, reward, env)
        if terminated or truncated:
            break
    assert truncated and info["truncation_reason"] == "time_limit", info


def test_the_readme_main_job_fine_tunes_the_shipped_prior_on_the_twin(tmp_path) -> None:
    """The README's first command at a tiny size: the shipped prior, the paper recipe, the twin;
    whole episodes (the learner's pause after SB3's reset does not spoil the next one)."""
    import csv
    import json

    from sim2online_envs.cli import main

    run = tmp_path / "finetune"
    settings = [f"{key}={value}" for key, value in TWIN_SETTINGS.items()]
    args = ["finetune", "RealRaceCar-v0", "--env", "hardware=twin", "--prior", "shipped"]
    for setting in settings:
        args += ["--env", setting]
    args += ["--gradient-steps", "100", "--warm-start-steps", "250", "--episodes", "2"]
    assert main([*args, "--out", str(run)]) == 0
    assert json.loads((run / "progress.json").read_text())["episodes"] == 2
    with (run / "q_error.csv").open() as file:
        rows = list(csv.DictReader(file))
    with (run / "episodes.csv").open() as file:
        ends = [(int(row["length"]), row["end"]) for row in csv.DictReader(file)]
    # The warm start's 250 steps take one episode, or more where the prior leaves the arena
    # (the twin draws a random start each time); then the two fine-tuning episodes.
    assert len(rows) == len(ends) >= 3, (rows, ends)
    updates = [float(row["n_updates"]) for row in rows]
    warm = [length for (length, _), count in zip(ends, updates, strict=True) if count == updates[0]]
    assert len(warm) == len(ends) - 2 and sum(warm) >= 250, (ends, updates)
    # None cut short by the link, the failsafe or the watchdog: an episode runs its 250 steps
    # or the policy drives it out of the arena (a task end a fine-tuned policy may reach).
    assert all(end == (250, "time_limit") or end[1] == SAFETY_ARENA for end in ends), ends
    assert updates == sorted(updates) and updates[-1] > updates[-2] > updates[0], updates
    for name in ("learning_curve.png", "q_error.png"):
        assert (run / name).is_file()
