"""``sysid`` recovers the twin's known car from episodes recorded on the twin (``RealRaceCar-v0``).

The twin's car is :data:`~sim2online_envs.hardware.racecar.twin.REALITY`: the study car with
another mass, inertia, grip, motor, drag, actuator lags and a rolling resistance the study's
model lacks. The episodes pass through the whole rig: the firmware in simavr on a pty, PWM read
back, the car at 120 Hz in its own process, NatNet on loopback and the driver's velocity filter.
So the fit is asked to find the rolling resistance and the lags too (``extra=``), to undo the
velocity filter's lag, and to use a robust loss (a loaded machine stalls a frame now and then).
The twin adds no action delay of its own; the rig's serial and mocap latencies add about one
control period, which is the delay the test expects. The mass is given, as a user weighs it.
Measurements and the tolerances' margins: docs/parameters.md ("sysid on the twin").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from racecar_twin_settings import TWIN_SETTINGS

import sim2online_envs  # noqa: F401  (registers the ids)
from sim2online_envs.hardware.racecar.twin import REALITY
from sim2online_envs.sysid import EXTRA_CANDIDATES, fit_racecar, prediction_error
from sim2online_envs.wrappers.recording import RecordEpisodes, RecordingConfig, load_episodes

# A robot's clock against a twin process in real time: run one at a time (scripts/test.sh).
pytestmark = pytest.mark.twin

EPISODES = 6
#: The twin's known values of what the fit finds (the trim: the calibration's, none).
KNOWN = {
    "motor_cm1": REALITY["motor_cm1"],
    "viscous_drag": REALITY["viscous_drag"],
    "friction": REALITY["friction"],
    "inertia_z": REALITY["inertia_z"],
    "rolling_resistance": REALITY["rolling_resistance"],
    "steering_time_constant": REALITY["steering_time_constant"],
    "throttle_time_constant": REALITY["throttle_time_constant"],
}
#: Relative tolerances: about twice the largest error measured on the loaded CI machine.
TOLERANCE = {
    "motor_cm1": 0.05,
    "viscous_drag": 0.12,
    "friction": 0.15,
    "inertia_z": 0.2,
    "rolling_resistance": 0.1,
    "steering_time_constant": 0.15,
    "throttle_time_constant": 0.15,
}
#: The steering trim's tolerance, rad (the twin has none).
OFFSET_TOLERANCE = 0.01
#: Control periods the rig's latencies add (serial link, mocap) and its velocity filter's lag.
RIG_DELAY_STEPS = 1
VELOCITY_LAG_STEPS = 1


def _skip_without_the_twin() -> None:
    for module in ("serial", "natnet", "cobs", "crc"):
        pytest.importorskip(module)
    from sim2online_envs.hardware.racecar import firmware

    missing = firmware.missing_tools(twin=True)
    if missing:
        pytest.skip(f"the twin needs the Debian packages {missing}")


def _whole(episode: Any) -> bool:
    return bool(episode.infos["truncation_reason"][-1] == "time_limit")


@pytest.fixture(scope="module")
def episodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list]:
    """Whole episodes of a smooth random policy on the twin, from random starts near the centre.

    An episode a fault cut short (a loaded machine can stall the loop past the link's limits)
    is recorded again, at most :data:`EPISODES` times in all.
    """
    _skip_without_the_twin()
    from sim2online_envs.hardware.racecar.env import RealRaceCarEnv

    folder = tmp_path_factory.mktemp("twin_car_episodes")
    env = RecordEpisodes(
        RealRaceCarEnv(hardware="twin", seed=0, **TWIN_SETTINGS), RecordingConfig(folder)
    )
    rng = np.random.default_rng(0)
    whole, reasons = 0, []
    try:
        for episode in range(2 * EPISODES):
            start = [*rng.uniform(-1.0, 1.0, 2), rng.uniform(-np.pi, np.pi)]
            env.reset(seed=episode, options={"start_pose": [float(v) for v in start]})
            action, done = np.zeros(2), False
            while not done:
                action = np.clip(0.9 * action + rng.normal(0.0, 0.35, 2), -1.0, 1.0)
                _, _, terminated, truncated, info = env.step(action.astype(np.float32))
                done = terminated or truncated
            reasons.append(info.get("truncation_reason"))
            whole += reasons[-1] == "time_limit"
            if whole == EPISODES:
                break
    finally:
        env.close()
    recorded = [episode for episode in load_episodes(folder) if _whole(episode)]
    assert len(recorded) == EPISODES, f"episodes ended by {reasons}"
    yield recorded


def test_fit_recovers_the_twins_car(episodes: list, tmp_path: Path) -> None:
    assert all(e.provenance["backend"] == "real" for e in episodes)
    result = fit_racecar(
        episodes,
        base="study",
        mass=REALITY["mass"],
        delays=(0, 1, 2),
        extra=EXTRA_CANDIDATES,
        loss="soft_l1",
    )
    assert result.velocity_lag == VELOCITY_LAG_STEPS
    assert result.action_delay_steps == RIG_DELAY_STEPS, result.cost_by_delay
    errors = {name: result.fitted[name] / value - 1 for name, value in KNOWN.items()}
    for name, value in KNOWN.items():
        assert result.fitted[name] == pytest.approx(value, rel=TOLERANCE[name]), errors
    assert abs(result.fitted["steering_offset"]) < OFFSET_TOLERANCE
    assert result.error_after < result.error_before
    # The written preset is the sim car the twin drives like.
    path = result.write(tmp_path / "twin_car.toml")
    env = gym.make("SimRaceCar-v0", preset=str(path)).unwrapped
    assert env.sim.action_delay_steps == RIG_DELAY_STEPS
    assert env.params.rolling_resistance == pytest.approx(result.fitted["rolling_resistance"])
    env.close()
    base = {"base": "study", "car": {"mass": REALITY["mass"]}}
    assert prediction_error(episodes, str(path)) < prediction_error(episodes, base)
