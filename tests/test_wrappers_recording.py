"""Episode recording: atomic files with provenance, and a round trip into the mixing buffer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from sim2online_envs.agents.buffers import MixingReplayBuffer
from sim2online_envs.wrappers import recording
from sim2online_envs.wrappers.recording import (
    FORMAT_VERSION,
    RecordEpisodes,
    RecordingConfig,
    RecordingError,
    fill_offline_buffer,
    load_episode,
    load_episodes,
)
from sim2online_envs.wrappers.safety import SafetyWrapper

import sim2online_envs


def rollout(env: gym.Env, episodes: int, seed: int) -> dict[str, list]:
    """Run random actions; collect the transitions as SB3 would store them."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("obs", "next", "act", "rew", "done", "timeout")}
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            action = rng.uniform(-1.5, 1.5, size=2).astype(np.float32)  # some get clipped
            next_obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            out["obs"].append(obs)
            out["next"].append(next_obs)
            out["act"].append(info["safety"]["applied_action"])
            out["rew"].append(reward)
            out["done"].append(done)
            out["timeout"].append(truncated and not terminated)
            obs = next_obs
    return out


def test_racecar_recordings_load_into_the_mixing_buffer_identically(tmp_path: Path) -> None:
    env = gym.make("SimRaceCar-v0", task_config={"max_episode_steps": 40})
    env = RecordEpisodes(SafetyWrapper(env), RecordingConfig(tmp_path, policy_version="prior-v1"))
    expected = rollout(env, episodes=3, seed=10)
    assert len(env.written) == 3 and not list(tmp_path.glob(".*"))  # no temporary files left

    buffer = MixingReplayBuffer(1000, env.observation_space, env.action_space, device="cpu")
    assert fill_offline_buffer(buffer, tmp_path, robot="racecar") == 120
    stored = buffer.offline.arrays()
    np.testing.assert_array_equal(stored["observations"], np.array(expected["obs"]))
    np.testing.assert_array_equal(stored["next_observations"], np.array(expected["next"]))
    np.testing.assert_array_equal(stored["actions"], np.array(expected["act"]))
    np.testing.assert_array_equal(stored["rewards"], np.array(expected["rew"], dtype=np.float32))
    np.testing.assert_array_equal(stored["dones"], np.array(expected["done"], dtype=np.float32))
    np.testing.assert_array_equal(stored["timeouts"], np.array(expected["timeout"], np.float32))


def test_file_contents_and_provenance(tmp_path: Path) -> None:
    env = gym.make("SimRaceCar-v0", task_config={"max_episode_steps": 5})
    env = RecordEpisodes(SafetyWrapper(env), RecordingConfig(tmp_path, policy_version="v1"))
    env.reset(seed=7)
    for _ in range(5):
        *_, info = env.step(np.array([0.2, 0.5], dtype=np.float32))
    path = Path(info["recording"])
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        keys = set(data.files)
    assert {"observations", "actions", "rewards", "terminated", "truncated", "provenance"} <= keys
    assert {"info/is_success", "info/truncation_reason", "info/reward_terms/progress"} <= keys
    episode = load_episode(path)
    assert episode.observations.shape == (6, 7) and episode.actions.shape == (5, 2)
    assert episode.truncated.tolist() == [False] * 4 + [True]
    assert episode.infos["truncation_reason"].tolist() == [""] * 4 + ["time_limit"]
    provenance = episode.provenance
    assert provenance["robot"] == "racecar" and provenance["backend"] == "sim"
    assert provenance["env_id"] == "SimRaceCar-v0" and provenance["policy_version"] == "v1"
    assert provenance["package_version"] == sim2online_envs.__version__
    assert provenance["seed"] == 7 and provenance["steps"] == 5 and provenance["complete"]
    assert provenance["format_version"] == FORMAT_VERSION
    assert len(provenance["config_hash"]) == 16
    # The hash follows the configuration: another car model, another hash.
    other = RecordEpisodes(gym.make("SimRaceCar-v0", dynamics="dynamic"), RecordingConfig(tmp_path))
    assert other._static["config_hash"] != provenance["config_hash"]
    env.set_policy_version("v2")
    env.reset(seed=8)
    for _ in range(5):
        *_, info = env.step(np.zeros(2, dtype=np.float32))
    assert load_episode(info["recording"]).provenance["policy_version"] == "v2"


def test_a_crash_while_writing_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    env = RecordEpisodes(
        gym.make("SimRaceCar-v0", task_config={"max_episode_steps": 3}), RecordingConfig(tmp_path)
    )
    env.reset(seed=0)

    def crash(file: Any, **arrays: Any) -> None:
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(recording.np, "savez_compressed", crash)
    with pytest.raises(OSError, match="disk full"):
        for _ in range(3):
            env.step(np.zeros(2, dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def test_close_closes_the_env_even_when_the_last_write_fails(tmp_path: Path, monkeypatch) -> None:
    inner = gym.make("SimRaceCar-v0")
    closed: list[bool] = []
    monkeypatch.setattr(inner.unwrapped, "close", lambda: closed.append(True))
    env = RecordEpisodes(inner, RecordingConfig(tmp_path))
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.float32))  # an episode cut short: written on close()

    def crash(file: Any, **arrays: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(recording.np, "savez_compressed", crash)
    with pytest.raises(OSError, match="disk full"):
        env.close()
    assert closed == [True]  # the robot's env was closed all the same
    assert list(tmp_path.iterdir()) == []


def test_discarded_episodes_are_skipped_and_partial_ones_flagged(tmp_path: Path) -> None:
    class Discard(gym.Wrapper):
        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                info["discard_episode"] = True
            return obs, reward, terminated, truncated, info

    env = RecordEpisodes(
        Discard(gym.make("SimRaceCar-v0", task_config={"max_episode_steps": 3})),
        RecordingConfig(tmp_path),
    )
    env.reset(seed=0)
    for _ in range(3):
        *_, info = env.step(np.zeros(2, dtype=np.float32))
    assert info["recording"] is None and env.written == []
    env.reset(seed=1)
    env.step(np.zeros(2, dtype=np.float32))
    env.close()  # cut short: written, flagged incomplete
    (path,) = env.written
    episode = load_episode(path)
    assert len(episode) == 1 and episode.provenance["complete"] is False
    assert load_episodes(tmp_path, include_incomplete=False) == []


class DictEnv(gym.Env):
    """Panda-like observations: a small uint8 image and a state vector."""

    observation_space = spaces.Dict(
        pixels=spaces.Box(0, 255, (8, 8, 1), np.uint8),
        state=spaces.Box(-np.inf, np.inf, (4,), np.float32),
    )
    action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "pixels": self.np_random.integers(0, 256, (8, 8, 1), dtype=np.uint8),
            "state": self.np_random.normal(size=4).astype(np.float32),
        }

    def reset(self, *, seed: int | None = None, options: Any = None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        return self._obs(), float(np.sum(action)), self._t == 4, False, {"is_success": True}


def test_dict_observations_round_trip(tmp_path: Path) -> None:
    env = RecordEpisodes(DictEnv(), RecordingConfig(tmp_path, compress=False))
    obs, _ = env.reset(seed=0)
    observations = [obs]
    for _ in range(4):
        obs, *_ = env.step(np.full(4, 0.25, dtype=np.float32))
        observations.append(obs)
    buffer = MixingReplayBuffer(100, env.observation_space, env.action_space, device="cpu")
    assert fill_offline_buffer(buffer, tmp_path) == 4
    stored = buffer.offline.arrays()
    for key in ("pixels", "state"):
        expected = np.stack([o[key] for o in observations])
        np.testing.assert_array_equal(stored["observations"][key], expected[:-1])
        np.testing.assert_array_equal(stored["next_observations"][key], expected[1:])
    assert stored["observations"]["pixels"].dtype == np.uint8
    np.testing.assert_array_equal(stored["dones"], [0, 0, 0, 1])
    np.testing.assert_array_equal(stored["timeouts"], [0, 0, 0, 0])  # terminated, not truncated


def test_loader_errors_name_the_file_and_problem(tmp_path: Path) -> None:
    env = RecordEpisodes(
        gym.make("SimRaceCar-v0", task_config={"max_episode_steps": 2}), RecordingConfig(tmp_path)
    )
    env.reset(seed=0)
    for _ in range(2):
        *_, info = env.step(np.zeros(2, dtype=np.float32))
    path = Path(info["recording"])
    with pytest.raises(RecordingError, match="expected 'go1'"):
        load_episodes(tmp_path, robot="go1")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RecordingError, match=r"broken\.npz"):
        load_episode(broken)
    broken.unlink()
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    provenance = json.loads(str(arrays["provenance"]))
    arrays["provenance"] = np.array(json.dumps({**provenance, "format_version": 99}))
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(RecordingError, match="format_version 99"):
        load_episode(tmp_path / "future.npz")
    arrays["provenance"] = np.array(json.dumps(provenance))
    arrays["rewards"] = arrays["rewards"][:1]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(RecordingError, match="rewards has shape"):
        load_episode(tmp_path / "short.npz")
    with pytest.raises(TypeError, match="add_offline_transitions"):
        fill_offline_buffer(object(), [path])
