"""Episode recording: atomic files with provenance, and a round trip into the mixing buffer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecTransposeImage

import sim2online_envs
from sim2online_envs.agents import SAC
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
    env = RecordEpisodes(env, RecordingConfig(tmp_path, policy_version="prior-v1"))
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
    env = RecordEpisodes(env, RecordingConfig(tmp_path, policy_version="v1"))
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


def test_panda_recordings_fill_the_buffer_of_an_sb3_model_channel_first(tmp_path: Path) -> None:
    # The recording wrapper sits inside the env SB3 wraps (DummyVecEnv + VecTransposeImage), so
    # one rollout gives both the file (channel-last) and what SB3 itself hands the model.
    env = RecordEpisodes(
        gym.make("SimPanda-v0", task_config={"max_episode_steps": 3}), RecordingConfig(tmp_path)
    )
    assert env.observation_space["pixels"].shape == (64, 64, 1)
    model = SAC(
        "MultiInputPolicy",
        env,
        buffer_size=16,
        replay_buffer_class=MixingReplayBuffer,
        device="cpu",
        seed=0,
    )
    assert isinstance(model.get_env(), VecTransposeImage)
    assert model.replay_buffer.observation_space["pixels"].shape == (1, 64, 64)
    venv = model.get_env()
    venv.seed(3)
    obs = venv.reset()
    rng = np.random.default_rng(0)
    seen: dict[str, list] = {k: [] for k in ("obs", "next", "act", "rew", "done")}
    for _ in range(2 * 3):  # two episodes of three steps
        action = rng.uniform(-1.0, 1.0, size=(1, 4)).astype(np.float32)
        next_obs, reward, done, infos = venv.step(action)
        final = (
            infos[0]["terminal_observation"] if done[0] else {k: v[0] for k, v in next_obs.items()}
        )
        seen["obs"].append({k: v[0] for k, v in obs.items()})
        seen["next"].append(final)
        seen["act"].append(action[0])
        seen["rew"].append(reward[0])
        seen["done"].append(done[0])
        obs = next_obs
    assert len(env.written) == 2

    assert fill_offline_buffer(model.replay_buffer, tmp_path, robot="panda") == 6
    stored = model.replay_buffer.offline.arrays()
    recorded = [load_episode(path) for path in env.written]
    frames = [episode.observations["pixels"] for episode in recorded]
    assert frames[0].shape == (4, 64, 64, 1) and frames[0].dtype == np.uint8
    assert len(np.unique(frames[0])) > 10  # a real camera image, not a blank frame
    for name, cut in (("observations", slice(0, -1)), ("next_observations", slice(1, None))):
        pixels = stored[name]["pixels"]
        assert pixels.dtype == np.uint8 and pixels.shape == (6, 1, 64, 64)
        expected = np.concatenate([np.transpose(f[cut], (0, 3, 1, 2)) for f in frames])
        np.testing.assert_array_equal(pixels, expected)  # byte for byte
        state = np.concatenate([e.observations["state"][cut] for e in recorded])
        np.testing.assert_array_equal(stored[name]["state"], state)
    # ... and exactly what SB3 stores for these transitions through its own VecTransposeImage.
    for key in ("pixels", "state"):
        np.testing.assert_array_equal(
            stored["observations"][key], np.stack([o[key] for o in seen["obs"]])
        )
        np.testing.assert_array_equal(
            stored["next_observations"][key], np.stack([o[key] for o in seen["next"]])
        )
    np.testing.assert_array_equal(stored["actions"], np.stack(seen["act"]))
    np.testing.assert_array_equal(stored["rewards"], np.array(seen["rew"], dtype=np.float32))
    np.testing.assert_array_equal(stored["dones"], np.array(seen["done"], dtype=np.float32))
    np.testing.assert_array_equal(stored["dones"], [0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(stored["timeouts"], [0, 0, 1, 0, 0, 1])  # time limit
    batch = model.replay_buffer.sample(4)  # D0 only: the online part is empty
    assert tuple(batch.observations["pixels"].shape) == (4, 1, 64, 64)


class ImageEnv(gym.Env):
    """A channel-last RGB image observation (Box), height != width so every axis is distinct."""

    observation_space = spaces.Box(0, 255, (6, 5, 3), np.uint8)
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None):
        super().reset(seed=seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self._t += 1
        return self.observation_space.sample(), 1.0, False, self._t == 3, {}


def test_box_image_recordings_are_transposed_like_vec_transpose_image(tmp_path: Path) -> None:
    env = RecordEpisodes(ImageEnv(), RecordingConfig(tmp_path))
    env.observation_space.seed(0)
    obs, _ = env.reset(seed=0)
    frames = [obs]
    for _ in range(3):
        obs, *_ = env.step(np.zeros(2, dtype=np.float32))
        frames.append(obs)
    frames_array = np.stack(frames)
    space = VecTransposeImage.transpose_space(env.observation_space)
    assert space.shape == (3, 6, 5)
    buffer = MixingReplayBuffer(100, space, env.action_space, device="cpu")
    assert fill_offline_buffer(buffer, tmp_path) == 3
    stored = buffer.offline.arrays()
    expected = frames_array.transpose(0, 3, 1, 2)  # a real transpose, not a reshape:
    assert not np.array_equal(expected, frames_array.reshape(4, 3, 6, 5))
    np.testing.assert_array_equal(stored["observations"], expected[:-1])
    np.testing.assert_array_equal(stored["next_observations"], expected[1:])
    assert stored["observations"].dtype == np.uint8
    # A buffer in the env's own layout gets the frames untouched.
    same = MixingReplayBuffer(100, env.observation_space, env.action_space, device="cpu")
    assert fill_offline_buffer(same, tmp_path) == 3
    np.testing.assert_array_equal(same.offline.arrays()["observations"], frames_array[:-1])


@pytest.mark.parametrize("pixels_shape", [(1, 8, 4), (3, 8, 8), (8, 1, 8), (1, 64, 64)])
def test_an_image_in_neither_layout_is_refused_with_the_key_and_shapes(
    tmp_path: Path, pixels_shape: tuple[int, ...]
) -> None:
    env = RecordEpisodes(DictEnv(), RecordingConfig(tmp_path))
    env.reset(seed=0)
    for _ in range(4):
        *_, info = env.step(np.zeros(4, dtype=np.float32))
    space = spaces.Dict(
        pixels=spaces.Box(0, 255, pixels_shape, np.uint8),
        state=DictEnv.observation_space["state"],
    )
    buffer = MixingReplayBuffer(100, space, env.action_space, device="cpu")
    name = Path(info["recording"]).name
    with pytest.raises(RecordingError) as error:
        fill_offline_buffer(buffer, tmp_path)
    message = str(error.value)
    assert name in message and "observations 'pixels'" in message
    assert "(8, 8, 1)" in message and str(pixels_shape) in message
    assert buffer.offline_size == 0
    # Float frames are no SB3 image: not transposed into a uint8 image space either.
    episode = load_episode(info["recording"])
    episode.observations["pixels"] = episode.observations["pixels"].astype(np.float32)
    transposed = MixingReplayBuffer(
        100,
        spaces.Dict(
            pixels=VecTransposeImage.transpose_space(DictEnv.observation_space["pixels"]),
            state=DictEnv.observation_space["state"],
        ),
        env.action_space,
        device="cpu",
    )
    with pytest.raises(RecordingError, match=r"\(8, 8, 1\) \(float32\) per step.*\(1, 8, 8\)"):
        fill_offline_buffer(transposed, [episode])


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
