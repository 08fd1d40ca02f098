"""``sim2online sysid racecar``: recover known "reality" parameters from episodes on the sim car.

Reality: the study preset changed where a real car could differ (motor x0.8, drag x1.25, grip
x0.8, inertia x1.5, a 0.04 rad steering trim, 3 control periods of delay instead of 2), driven by
a smooth random policy with domain randomisation off, recorded with ``RecordEpisodes``.

Tolerances (measured on these episodes): clean recordings are recovered to ~1e-8 relative, the
test asks 1e-4; with mocap-like noise added to the observations (2 mm, 0.01 rad, 0.03 m/s,
0.1 rad/s) the fit was off by 0.3 % (motor, grip), 1.6 % (drag), 4.3 % (inertia) and 2.4 mrad
(trim); the slow test asks 2 %, 5 %, 10 % and 0.01 rad.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

import sim2online_envs  # noqa: F401  (registers the ids)
from sim2online_envs import cli
from sim2online_envs.sim.racecar import car_params, load_preset
from sim2online_envs.sysid import fit_racecar, prediction_error
from sim2online_envs.wrappers.recording import RecordEpisodes, RecordingConfig, load_episodes

BASE = car_params("study")
TRUTH = {
    "motor_cm1": BASE.motor_cm1 * 0.8,
    "viscous_drag": BASE.viscous_drag * 1.25,
    "friction": BASE.friction * 0.8,
    "inertia_z": BASE.inertia_z * 1.5,
    "steering_offset": 0.04,
}
REALITY = {"base": "study", "action_delay": 3 / 60, "car": TRUTH}


def _record(folder: Path, episodes: int, seed: int = 0) -> list:
    env = RecordEpisodes(
        gym.make("SimRaceCar-v0", preset=REALITY, domain_randomization=False),
        RecordingConfig(folder),
    )
    rng = np.random.default_rng(seed)
    for episode in range(episodes):
        env.reset(seed=episode)
        action, done = np.zeros(2), False
        while not done:
            action = np.clip(0.9 * action + rng.normal(0.0, 0.35, 2), -1.0, 1.0)
            _, _, terminated, truncated, _ = env.step(action.astype(np.float32))
            done = terminated or truncated
    env.close()
    return load_episodes(folder)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory: pytest.TempPathFactory) -> list:
    return _record(tmp_path_factory.mktemp("car_episodes"), episodes=6)


def test_fit_recovers_the_reality_parameters_and_delay(episodes: list) -> None:
    result = fit_racecar(episodes, base="study", delays=(2, 3, 4))
    assert result.action_delay_steps == 3
    for name, value in TRUTH.items():
        assert result.fitted[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    assert result.error_before > 0.01 > 1e-4 > result.error_after
    assert min(result.cost_by_delay, key=result.cost_by_delay.get) == 3


def test_cli_writes_a_preset_the_env_accepts(episodes: list, tmp_path: Path) -> None:
    folder = Path(episodes[0].path).parent
    out = tmp_path / "car.toml"
    assert cli.main(["sysid", "racecar", str(folder), "--out", str(out)]) == 0
    raw = load_preset(out)
    assert raw["base"] == "study" and raw["action_delay"] == pytest.approx(3 / 60)
    env = gym.make("SimRaceCar-v0", preset=str(out)).unwrapped
    assert env.sim.action_delay_steps == 3
    for name, value in TRUTH.items():
        assert getattr(env.params, name) == pytest.approx(value, rel=1e-4, abs=1e-5), name
    assert prediction_error(episodes, str(out)) < 1e-4 < prediction_error(episodes, "study")


@pytest.mark.slow
def test_fit_recovers_parameters_from_noisy_observations(episodes: list) -> None:
    noise = np.random.default_rng(1)
    noisy = []
    for episode in episodes:
        obs = np.array(episode.observations, dtype=np.float64)
        obs[:, :2] += noise.normal(0.0, 0.002, obs[:, :2].shape)
        heading = np.arctan2(obs[:, 2], obs[:, 3]) + noise.normal(0.0, 0.01, len(obs))
        obs[:, 2], obs[:, 3] = np.sin(heading), np.cos(heading)
        obs[:, 4:6] += noise.normal(0.0, 0.03, obs[:, 4:6].shape)
        obs[:, 6] += noise.normal(0.0, 0.1, len(obs))
        noisy.append(dataclasses.replace(episode, observations=obs))
    result = fit_racecar(noisy, base="study")
    assert result.action_delay_steps == 3
    tolerance = {"motor_cm1": 0.02, "friction": 0.02, "viscous_drag": 0.05, "inertia_z": 0.1}
    for name, rel in tolerance.items():
        assert result.fitted[name] == pytest.approx(TRUTH[name], rel=rel), name
    assert result.fitted["steering_offset"] == pytest.approx(TRUTH["steering_offset"], abs=0.01)
    assert result.error_after < 0.5 * result.error_before


def test_cli_hands_the_extra_fields_and_the_loss_to_the_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flags a real car needs (docs/parameters.md, "sysid on the twin") reach fit_racecar;
    an unknown field is refused by name."""
    from sim2online_envs import sysid

    seen: dict = {}

    def fake(folder, output, **kwargs):
        seen.update(kwargs)
        return SimpleNamespace(error_before=1.0, error_after=0.5)

    monkeypatch.setattr(sysid, "sysid_racecar", fake)
    args = ["sysid", "racecar", str(tmp_path), "--out", str(tmp_path / "car.toml")]
    extra = ["--fit", "rolling_resistance", "--fit", "steering_time_constant", "--loss", "soft_l1"]
    assert cli.main([*args, *extra, "--fit", "rolling_resistance"]) == 0
    assert seen["extra"] == ("rolling_resistance", "steering_time_constant")
    assert seen["loss"] == "soft_l1"
    assert set(seen["extra"]) <= set(sysid.EXTRA_CANDIDATES)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['mass'\]"):
        fit_racecar([], extra=("mass",))
