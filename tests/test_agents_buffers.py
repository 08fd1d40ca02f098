"""MixingReplayBuffer: online/offline mixing fractions, schedules, D0 sources, hostile input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.save_util import save_to_pkl

from sim2online_envs.agents import (
    DictMixingReplayBuffer,
    LinearStepSchedule,
    MixingReplayBuffer,
    retain_online_buffer,
)
from sim2online_envs.agents.buffers import buffer_transitions

BOX = spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACTIONS = spaces.Box(-1.0, 1.0, (2,), np.float32)
IMAGES = spaces.Dict(
    {
        "image": spaces.Box(0, 255, (1, 8, 8), np.uint8),
        "tip": spaces.Box(-1.0, 1.0, (3,), np.float32),
    }
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
    th.manual_seed(0)


def fill_online(buffer: ReplayBuffer, n: int, reward: float = 1.0, start: int = 0) -> None:
    """n transitions whose observation encodes an id; next observation = id + 0.5."""
    for i in range(start, start + n):
        obs = np.full((buffer.n_envs, 3), i, np.float32)
        buffer.add(
            obs,
            obs + 0.5,
            np.zeros((buffer.n_envs, 2), np.float32),
            np.full(buffer.n_envs, reward, np.float32),
            np.zeros(buffer.n_envs, np.float32),
            [{} for _ in range(buffer.n_envs)],
        )


def offline_arrays(n: int, reward: float = -1.0, start: int = 1000) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + n, dtype=np.float32)
    obs = np.repeat(ids[:, None], 3, axis=1)
    return {
        "observations": obs,
        "next_observations": obs + 0.5,
        "actions": np.zeros((n, 2), np.float32),
        "rewards": np.full(n, reward, np.float32),
        "dones": np.zeros(n, bool),
        "timeouts": np.zeros(n, bool),
    }


def mixing(online_fraction: object = 0.5, n_online: int = 200, n_offline: int = 300, **kwargs):
    buffer = MixingReplayBuffer(
        1000, BOX, ACTIONS, device="cpu", online_fraction=online_fraction, **kwargs
    )
    fill_online(buffer, n_online)
    buffer.add_offline_transitions(**offline_arrays(n_offline))
    return buffer


def online_count(batch) -> int:
    # Online transitions carry reward +1, D0's -1.
    return int((batch.rewards > 0).sum())


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.8, 0.33])
def test_online_fraction_matches_alpha(alpha: float) -> None:
    buffer = mixing(alpha)
    batch_size, n_batches = 64, 300
    counts = np.array([online_count(buffer.sample(batch_size)) for _ in range(n_batches)])
    # Every batch holds floor(αB) or ceil(αB) online samples, and the mean is αB.
    assert set(counts) <= {int(np.floor(alpha * batch_size)), int(np.ceil(alpha * batch_size))}
    fraction = counts.sum() / (batch_size * n_batches)
    # Stochastic rounding: per-batch variance <= 1/4, so the standard error of the fraction is
    # at most 0.5 / (B sqrt(n)); allow 5 of them.
    assert abs(fraction - alpha) < 5 * 0.5 / (batch_size * np.sqrt(n_batches)) + 1e-12


def test_samples_are_whole_transitions_from_each_part() -> None:
    buffer = mixing(0.5)
    batch = buffer.sample(256)
    obs, next_obs = batch.observations.numpy(), batch.next_observations.numpy()
    np.testing.assert_allclose(next_obs - obs, 0.5)
    online = batch.rewards.numpy()[:, 0] > 0
    assert np.all(obs[online, 0] < 200) and np.all(obs[~online, 0] >= 1000)


def test_linear_schedule_counts_gradient_steps() -> None:
    buffer = mixing((0.5, 1.0, 100))
    batch_size = 100
    for step in range(120):
        expected = min(0.5 + 0.5 * step / 100, 1.0) * batch_size
        count = online_count(buffer.sample(batch_size))
        assert np.floor(expected) <= count <= np.ceil(expected)
        assert buffer.update_step == step + 1
    assert buffer.current_online_fraction() == 1.0


def test_callable_schedule_receives_the_update_step() -> None:
    seen: list[int] = []

    def alpha(step: int) -> float:
        seen.append(step)
        return 0.0 if step < 3 else 1.0

    buffer = mixing(alpha)
    counts = [online_count(buffer.sample(32)) for _ in range(5)]
    assert counts == [0, 0, 0, 32, 32]
    assert seen[-5:] == [0, 1, 2, 3, 4]


def test_alpha_one_never_samples_d0(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = mixing(1.0)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("D0 was sampled with alpha = 1")

    monkeypatch.setattr(buffer.offline, "sample_indices", forbidden)
    monkeypatch.setattr(buffer.offline, "get_samples", forbidden)
    for _ in range(50):
        assert online_count(buffer.sample(64)) == 64


def test_empty_parts_fall_back_to_the_other() -> None:
    only_offline = MixingReplayBuffer(100, BOX, ACTIONS, device="cpu", online_fraction=0.9)
    only_offline.add_offline_transitions(**offline_arrays(10))
    assert online_count(only_offline.sample(16)) == 0  # offline pre-training before any data
    only_online = MixingReplayBuffer(100, BOX, ACTIONS, device="cpu", online_fraction=0.1)
    fill_online(only_online, 10)
    assert online_count(only_online.sample(16)) == 16
    empty = MixingReplayBuffer(100, BOX, ACTIONS, device="cpu")
    with pytest.raises(RuntimeError, match="empty"):
        empty.sample(4)


def test_offline_pretraining_does_not_move_the_schedule() -> None:
    """Critic fitting on D0 before any online data is pretraining: α starts with the mixing."""
    buffer = MixingReplayBuffer(100, BOX, ACTIONS, device="cpu", online_fraction=(0.5, 1.0, 10))
    buffer.add_offline_transitions(**offline_arrays(20))
    for _ in range(30):
        buffer.sample(8)
    assert buffer.update_step == 0 and buffer.current_online_fraction() == 0.5
    fill_online(buffer, 5)
    buffer.sample(8)
    assert buffer.update_step == 1 and buffer.current_online_fraction() == pytest.approx(0.55)


def test_online_fraction_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="online_fraction"):
        MixingReplayBuffer(10, BOX, ACTIONS, device="cpu", online_fraction=1.5)
    buffer = mixing(lambda step: 0.5 if step == 0 else 2.0)
    buffer.sample(8)
    with pytest.raises(ValueError, match=r"online_fraction.*step 1"):
        buffer.sample(8)
    with pytest.raises(ValueError, match="start, end, n_steps"):
        MixingReplayBuffer(10, BOX, ACTIONS, device="cpu", online_fraction=(0.5, 1.0))


def test_dict_image_observations_stay_uint8() -> None:
    buffer = MixingReplayBuffer(100, IMAGES, ACTIONS, device="cpu", online_fraction=0.5)
    assert isinstance(buffer, DictMixingReplayBuffer) and isinstance(buffer, DictReplayBuffer)
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs = {
            "image": rng.integers(0, 256, (1, 1, 8, 8), dtype=np.uint8),
            "tip": np.zeros((1, 3), np.float32),
        }
        buffer.add(obs, obs, np.zeros((1, 2)), np.ones(1), np.zeros(1), [{}])
    n = 30
    buffer.add_offline_transitions(
        observations={
            "image": rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8),
            "tip": np.zeros((n, 3)),
        },
        next_observations={
            "image": rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8),
            "tip": np.zeros((n, 3)),
        },
        actions=np.zeros((n, 2)),
        rewards=-np.ones(n),
        dones=np.zeros(n),
        timeouts=np.zeros(n),
    )
    assert buffer.offline._data["observations"]["image"].dtype == np.uint8
    batch = buffer.sample(40)
    assert batch.observations["image"].dtype == th.uint8
    assert batch.observations["image"].shape == (40, 1, 8, 8)
    assert 0 < online_count(batch) < 40


def test_optimize_memory_usage_online_part() -> None:
    buffer = MixingReplayBuffer(
        50,
        BOX,
        ACTIONS,
        device="cpu",
        optimize_memory_usage=True,
        handle_timeout_termination=False,
        online_fraction=0.5,
    )
    # Consecutive observations: the next observation of id i is id i + 1 (stored in row i + 1).
    for i in range(80):
        obs = np.full((1, 3), i, np.float32)
        buffer.add(obs, obs + 1, np.zeros((1, 2)), np.ones(1), np.zeros(1), [{}])
    buffer.add_offline_transitions(**offline_arrays(40))
    batch = buffer.sample(200)
    online = batch.rewards.numpy()[:, 0] > 0
    diff = (batch.next_observations - batch.observations).numpy()
    np.testing.assert_allclose(diff[online], 1.0)
    np.testing.assert_allclose(diff[~online], 0.5)


def test_d0_from_a_saved_sb3_buffer(tmp_path) -> None:
    # Two envs, memory-optimised layout, wrapped around: every SB3 layout at once.
    source = ReplayBuffer(
        20, BOX, ACTIONS, n_envs=2, optimize_memory_usage=True, handle_timeout_termination=False
    )
    for i in range(15):
        obs = np.stack([np.full(3, i, np.float32), np.full(3, 100 + i, np.float32)])
        source.add(obs, obs + 1, np.zeros((2, 2)), obs[:, 0], np.zeros(2), [{}, {}])
    assert source.full
    path = tmp_path / "sim_buffer.pkl"
    save_to_pkl(path, source)

    buffer = MixingReplayBuffer(
        100, BOX, ACTIONS, device="cpu", online_fraction=0.0, offline_data=path
    )
    # 10 rows of 2 envs, minus the row whose next observation was overwritten.
    assert buffer.offline_size == 2 * (10 - 1)
    data = buffer.offline.arrays()
    np.testing.assert_allclose(data["next_observations"] - data["observations"], 1.0)
    np.testing.assert_allclose(data["rewards"], data["observations"][:, 0])
    assert sorted(data["observations"][:, 0]) == sorted([*range(6, 15), *range(106, 115)])


def test_retain_online_buffer_from_model_buffer_and_path(tmp_path) -> None:
    previous = mixing(0.5, n_online=25, n_offline=7)
    nxt = MixingReplayBuffer(100, BOX, ACTIONS, device="cpu")
    assert retain_online_buffer(previous, nxt) == 25
    assert retain_online_buffer(previous, nxt, include_offline=True) == 32
    save_to_pkl(tmp_path / "trial1.pkl", previous)
    assert retain_online_buffer(tmp_path / "trial1.pkl", nxt) == 25
    assert nxt.offline_size == 25 + 32 + 25
    with pytest.raises(TypeError, match="MixingReplayBuffer"):
        retain_online_buffer(previous, ReplayBuffer(10, BOX, ACTIONS))


def test_pickle_round_trip_keeps_schedule_position_and_d0() -> None:
    buffer = mixing(lambda step: min(1.0, 0.5 + step / 10))  # a lambda survives via cloudpickle
    for _ in range(4):
        buffer.sample(8)
    restored = pickle.loads(pickle.dumps(buffer))
    assert type(restored) is MixingReplayBuffer
    assert restored.update_step == 4
    assert restored.current_online_fraction() == pytest.approx(0.9)
    assert restored.offline_size == buffer.offline_size
    np.testing.assert_array_equal(restored.offline.arrays()["rewards"], -1.0)


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("observations", np.zeros((5, 4)), ValueError, r"observations must have shape"),
        ("next_observations", np.zeros((4, 3)), ValueError, r"next_observations has 4"),
        ("actions", np.zeros((5, 3)), ValueError, r"actions must have shape \(5, 2\)"),
        ("actions", np.full((5, 2), 3.0), ValueError, r"actions must be normalised"),
        ("rewards", np.zeros(6), ValueError, r"rewards must have shape \(5,\)"),
        ("rewards", np.array([0, 0, np.nan, 0, 0]), ValueError, r"rewards contains NaN"),
        ("dones", np.full(5, 0.5), ValueError, r"dones must hold only 0/1"),
        ("observations", {"a": np.zeros((5, 3))}, TypeError, r"observations is a dict"),
    ],
)
def test_hostile_offline_transitions_name_the_field(
    field: str, value: np.ndarray, error: type[Exception], match: str
) -> None:
    buffer = MixingReplayBuffer(100, BOX, ACTIONS, device="cpu")
    arrays = offline_arrays(5)
    arrays[field] = value
    with pytest.raises(error, match=match):
        buffer.add_offline_transitions(**arrays)
    assert buffer.offline_size == 0


def test_hostile_dict_offline_transitions() -> None:
    buffer = MixingReplayBuffer(100, IMAGES, ACTIONS, device="cpu")
    n = 3
    good = {"image": np.zeros((n, 1, 8, 8), np.uint8), "tip": np.zeros((n, 3))}
    common = dict(actions=np.zeros((n, 2)), rewards=np.zeros(n), dones=np.zeros(n))
    with pytest.raises(TypeError, match=r"observations\['image'\] has dtype float64"):
        buffer.add_offline_transitions(
            {"image": np.zeros((n, 1, 8, 8)), "tip": np.zeros((n, 3))}, good, **common
        )
    with pytest.raises(ValueError, match=r"next_observations keys \['image'\]"):
        buffer.add_offline_transitions(good, {"image": good["image"]}, **common)
    with pytest.raises(ValueError, match=r"observations\['image'\] must have shape"):
        buffer.add_offline_transitions(
            {"image": np.zeros((n, 8, 8, 1), np.uint8), "tip": np.zeros((n, 3))}, good, **common
        )
    assert buffer.offline_size == 0


def test_offline_buffer_with_other_shapes_is_rejected(tmp_path) -> None:
    other = ReplayBuffer(10, spaces.Box(-1, 1, (5,), np.float32), ACTIONS)
    fill = np.zeros((1, 5), np.float32)
    other.add(fill, fill, np.zeros((1, 2)), np.zeros(1), np.zeros(1), [{}])
    save_to_pkl(tmp_path / "other.pkl", other)
    with pytest.raises(ValueError, match=r"observation shape mismatch.*\(3,\).*\(5,\)"):
        MixingReplayBuffer(10, BOX, ACTIONS, device="cpu", offline_data=tmp_path / "other.pkl")
    other_actions = ReplayBuffer(10, BOX, spaces.Box(-1, 1, (4,), np.float32))
    with pytest.raises(ValueError, match="action dimension mismatch"):
        MixingReplayBuffer(10, BOX, ACTIONS, device="cpu").add_offline_buffer(other_actions)


def test_capped_d0_keeps_the_newest() -> None:
    buffer = MixingReplayBuffer(10, BOX, ACTIONS, device="cpu", offline_buffer_size=8)
    buffer.add_offline_transitions(**offline_arrays(5, start=0))
    buffer.add_offline_transitions(**offline_arrays(6, start=5))
    assert buffer.offline_size == 8
    np.testing.assert_array_equal(buffer.offline.arrays()["observations"][:, 0], np.arange(3, 11))


def test_buffer_transitions_handles_timeouts() -> None:
    source = ReplayBuffer(10, BOX, ACTIONS)
    obs = np.zeros((1, 3), np.float32)
    source.add(obs, obs, np.zeros((1, 2)), np.zeros(1), np.ones(1), [{"TimeLimit.truncated": True}])
    source.add(obs, obs, np.zeros((1, 2)), np.zeros(1), np.ones(1), [{}])
    data = buffer_transitions(source)
    np.testing.assert_array_equal(data["dones"], [1, 1])
    np.testing.assert_array_equal(data["timeouts"], [1, 0])
    buffer = MixingReplayBuffer(10, BOX, ACTIONS, device="cpu", online_fraction=0.0)
    buffer.add_offline_buffer(source)
    # Sampled dones bootstrap through the truncation, not through the true end.
    dones = {float(d) for d in buffer.sample(64).dones.numpy()[:, 0]}
    assert dones == {0.0, 1.0}


def test_linear_step_schedule() -> None:
    schedule = LinearStepSchedule(0.5, 1.0, 10)
    assert [schedule(s) for s in (0, 5, 10, 20)] == [0.5, 0.75, 1.0, 1.0]
    with pytest.raises(ValueError, match="n_steps"):
        LinearStepSchedule(0.5, 1.0, -1)


def test_recorded_episodes_fill_d0(tmp_path) -> None:
    """The recording wrapper's loader hands episodes to add_offline_transitions."""
    import gymnasium as gym

    import sim2online_envs  # noqa: F401  (registers the env ids)
    from sim2online_envs.wrappers.recording import (
        RecordEpisodes,
        RecordingConfig,
        fill_offline_buffer,
    )

    env = RecordEpisodes(
        gym.make("SimRaceCar-v0", task_config={"max_episode_steps": 20}),
        RecordingConfig(tmp_path / "episodes"),
    )
    rewards = []
    for seed in range(2):
        env.reset(seed=seed)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            rewards.append(reward)
            done = terminated or truncated
    env.close()
    buffer = MixingReplayBuffer(
        100, env.observation_space, env.action_space, device="cpu", online_fraction=0.0
    )
    assert fill_offline_buffer(buffer, tmp_path / "episodes") == 40
    data = buffer.offline.arrays()
    assert buffer.offline_size == 40
    np.testing.assert_allclose(np.sort(data["rewards"]), np.sort(rewards), rtol=1e-6)
    np.testing.assert_array_equal(data["timeouts"].sum(), 2)  # both episodes hit the time limit
    np.testing.assert_array_equal(data["observations"][1:20], data["next_observations"][:19])
