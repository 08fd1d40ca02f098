"""make_vec and TaskVecEnv: the batched env equals the single env world by world.

The reference for "equal" is SB3's ``DummyVecEnv`` over single envs made with ``gym.make``:
world ``i`` of ``make_vec(id, n, seed=s)`` must return, step after step and across auto-resets,
the observations, rewards, dones and infos (reward terms, success, time-limit truncation,
terminal observation) that single env ``i`` seeded ``s + i`` returns for the same actions.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

import sim2online_envs
from sim2online_envs.core import (
    TIME_LIMIT,
    Backend,
    Batch,
    Task,
    TaskEnv,
    sum_reward_terms,
)
from sim2online_envs.vec import TaskVecEnv, make_vec

# -- a small task and simulator, to test the vec env on its own ---------------------------------


class DriftTask(Task):
    """A 1-D point pushed toward a random goal; falls off (terminates) below x = -1."""

    robot = "drift"
    reward_term_names = ("progress", "effort", "bonus")

    def __init__(self, max_episode_steps: int = 6):
        self.observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.control_dt = 0.1
        self.max_episode_steps = max_episode_steps

    def initial_task_state(self, state: Batch, rngs: list[np.random.Generator]) -> Batch:
        return {
            "goal": np.array([rng.uniform(0.3, 0.6) for rng in rngs]),
            "last_action": np.zeros(len(rngs)),
        }

    def command(self, action: np.ndarray, state: Batch, task_state: Batch) -> Batch:
        return {"velocity": np.clip(action[:, 0], -1.0, 1.0)}

    def observe(self, state: Batch, task_state: Batch) -> np.ndarray:
        return np.stack([state["x"], task_state["goal"], task_state["last_action"]], axis=1).astype(
            np.float32
        )

    def reward_terms(self, prev_state, state, action, task_state) -> dict[str, np.ndarray]:
        return {
            "progress": np.abs(prev_state["x"] - task_state["goal"])
            - np.abs(state["x"] - task_state["goal"]),
            "effort": -0.1 * action[:, 0] ** 2,
            "bonus": 0.3 * self.success(state, task_state),
        }

    def terminated(self, state: Batch, task_state: Batch) -> np.ndarray:
        return state["x"] < -1.0

    def success(self, state: Batch, task_state: Batch) -> np.ndarray:
        return np.abs(state["x"] - task_state["goal"]) < 0.05

    def advance(self, task_state, state, action, step, rngs) -> Batch:
        # Draws from each world's generator during the episode, as Go1's command resampling does.
        jitter = np.array([rng.normal(0.0, 0.01) for rng in rngs])
        return {"goal": task_state["goal"] + jitter, "last_action": action[:, 0].copy()}

    def info(self, state: Batch, task_state: Batch) -> dict[str, np.ndarray]:
        return {"distance": np.abs(state["x"] - task_state["goal"])}


class DriftBackend(Backend):
    """N points; each reset draws a per-world gain (domain randomisation) and a start."""

    def __init__(self, num_worlds: int = 1):
        self.num_worlds = num_worlds
        self.x = np.zeros(num_worlds)
        self.gain = np.ones(num_worlds)
        self.closed = False
        self.reset_calls: list[np.ndarray] = []

    def reset_worlds(self, ids, rngs, options=None) -> Batch:
        self.reset_calls.append(np.asarray(ids).copy())
        start = 0.0 if options is None else options.get("start", 0.0)
        for i, rng in zip(ids, rngs, strict=True):
            self.gain[i] = rng.uniform(0.2, 0.4)
            self.x[i] = start + rng.uniform(-0.1, 0.1)
        return {"x": self.x.copy()}

    def apply(self, command: Batch) -> Batch:
        self.x = self.x + self.gain * command["velocity"]
        return {"x": self.x.copy()}

    def render_world(self, world: int, task_state=None) -> np.ndarray:
        frame = np.zeros((4, 4, 3), dtype=np.uint8)
        frame[..., 0] = world
        return frame

    def close(self) -> None:
        self.closed = True


def drift_single(max_episode_steps: int = 6) -> TaskEnv:
    return TaskEnv(DriftTask(max_episode_steps), DriftBackend(1))


def drift_vec(num_envs: int, seed: int | None = 0, max_episode_steps: int = 6) -> TaskVecEnv:
    return TaskVecEnv(
        DriftTask(max_episode_steps), DriftBackend(num_envs), seed=seed, render_mode="rgb_array"
    )


# -- comparison helpers --------------------------------------------------------------------------


def assert_same_value(actual: Any, expected: Any, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert actual.keys() == expected.keys(), f"{where}: {actual.keys()} != {expected.keys()}"
        for key in expected:
            assert_same_value(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: {len(actual)} != {len(expected)} items"
        for i, (item_actual, item_expected) in enumerate(zip(actual, expected, strict=True)):
            assert_same_value(item_actual, item_expected, f"{where}[{i}]")
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(actual, expected, err_msg=where)
        assert np.asarray(actual).dtype == expected.dtype, where
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def assert_same_steps(
    reference: VecEnv, batched: VecEnv, actions: np.ndarray, seed: int
) -> dict[str, int]:
    """Step both vec envs with ``actions`` (T, N, A); assert equal outputs; count episode ends."""
    reference.seed(seed)
    batched.seed(seed)
    assert_same_value(batched.reset(), reference.reset(), "reset obs")
    assert_same_value(batched.reset_infos, reference.reset_infos, "reset infos")
    counts = {"terminated": 0, "truncated": 0}
    for t, action in enumerate(actions):
        obs_r, rew_r, done_r, infos_r = reference.step(action)
        obs_b, rew_b, done_b, infos_b = batched.step(action)
        assert_same_value(obs_b, obs_r, f"step {t} obs")
        assert_same_value(rew_b, rew_r, f"step {t} rewards")
        assert_same_value(done_b, done_r, f"step {t} dones")
        for i, (info_b, info_r) in enumerate(zip(infos_b, infos_r, strict=True)):
            assert_same_value(info_b, info_r, f"step {t} world {i} info")
            if done_r[i]:
                counts["truncated" if info_r["TimeLimit.truncated"] else "terminated"] += 1
    return counts


# -- the vec env on its own ---------------------------------------------------------------------


def test_batched_equals_single_envs_world_by_world_across_auto_resets() -> None:
    num_envs, steps = 5, 40
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.0, 1.0, size=(steps, num_envs, 1))
    actions[:, 0] = -1.0  # world 0 falls off: terminations
    reference = DummyVecEnv([drift_single for _ in range(num_envs)])
    counts = assert_same_steps(reference, drift_vec(num_envs), actions, seed=42)
    assert counts["terminated"] > 0 and counts["truncated"] > 0, counts


def test_world_i_is_a_single_env_seeded_seed_plus_i() -> None:
    venv = drift_vec(3, seed=10)
    obs = venv.reset()
    for i in range(3):
        single_obs, _ = drift_single().reset(seed=10 + i)
        np.testing.assert_array_equal(obs[i], single_obs)
    assert len({float(goal) for goal in obs[:, 1]}) == 3, "worlds must differ"


def test_time_limit_truncates_with_reason_and_keeps_terminal_observation() -> None:
    venv = drift_vec(2, max_episode_steps=3)
    venv.reset()
    for _ in range(2):
        before, _, dones, infos = venv.step(np.zeros((2, 1)))
        assert not dones.any()
        assert all("truncation_reason" not in info for info in infos)
    obs, _, dones, infos = venv.step(np.zeros((2, 1)))
    assert dones.all()
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        assert info["truncation_reason"] == TIME_LIMIT
        # A zero action leaves x where it was: the terminal observation is the final state's.
        assert info["terminal_observation"][0] == before[i, 0]
        assert obs[i, 0] != before[i, 0], "finished worlds must have been reset"
    np.testing.assert_array_equal(venv.elapsed_steps, [0, 0])


def test_only_finished_worlds_are_reset_and_redraw_their_randomisation() -> None:
    venv = drift_vec(3, max_episode_steps=50)
    venv.reset()
    backend = venv.vector_backend
    gains_before = backend.gain.copy()
    actions = np.zeros((3, 1))
    actions[1] = -1.0
    for _ in range(10):
        _, _, dones, infos = venv.step(actions)
        if dones[1]:
            break
    assert dones.tolist() == [False, True, False]
    assert infos[1]["TimeLimit.truncated"] is False and "truncation_reason" not in infos[1]
    np.testing.assert_array_equal(backend.reset_calls[-1], [1])
    assert backend.gain[1] != gains_before[1]
    np.testing.assert_array_equal(backend.gain[[0, 2]], gains_before[[0, 2]])
    assert venv.elapsed_steps.tolist()[1] == 0 and venv.elapsed_steps.tolist()[0] > 0


def test_infos_carry_reward_terms_success_and_task_info() -> None:
    venv = drift_vec(4)
    venv.reset()
    _, rewards, _, infos = venv.step(np.full((4, 1), 0.5))
    for i, info in enumerate(infos):
        assert set(info["reward_terms"]) == set(DriftTask.reward_term_names)
        assert rewards[i] == np.float32(sum(info["reward_terms"].values()))
        assert isinstance(info["is_success"], bool)
        distance = abs(venv.state["x"][i] - venv.task_state["goal"][i])
        assert info["distance"] == pytest.approx(distance)
    for name, values in venv.last_reward_terms.items():
        assert values.shape == (4,)
        assert [info["reward_terms"][name] for info in infos] == values.tolist()
    assert rewards.dtype == np.float32


def test_lean_infos_fill_only_finished_worlds_with_the_full_values() -> None:
    full, lean = drift_vec(4, seed=3), drift_vec(4, seed=3)
    lean.full_infos = False
    full.reset(), lean.reset()
    actions = np.zeros((4, 1))
    actions[2] = -1.0  # world 2 falls off before the time limit ends the others
    ended = set()
    for _ in range(6):
        _, rewards_full, dones, infos_full = full.step(actions)
        _, rewards_lean, dones_lean, infos_lean = lean.step(actions)
        np.testing.assert_array_equal(rewards_lean, rewards_full)
        np.testing.assert_array_equal(dones_lean, dones)
        for i in range(4):
            if dones[i]:
                ended.add(i)
                assert_same_value(infos_lean[i], infos_full[i], f"world {i}")
            else:
                assert infos_lean[i] == {}
        for name, values in lean.last_reward_terms.items():
            assert values.tolist() == [info["reward_terms"][name] for info in infos_full]
        assert lean.last_is_success.tolist() == [info["is_success"] for info in infos_full]
        np.testing.assert_array_equal(
            lean.last_task_info["distance"], [info["distance"] for info in infos_full]
        )
    assert ended == {0, 1, 2, 3}


def test_sum_reward_terms_adds_in_reporting_order() -> None:
    terms = {"a": np.array([0.1, 1e16]), "b": np.array([0.2, 1.0]), "c": np.array([0.3, -1e16])}
    np.testing.assert_array_equal(sum_reward_terms(terms), [0.1 + 0.2 + 0.3, 1e16 + 1.0 - 1e16])
    with pytest.raises(ValueError, match="no reward terms"):
        sum_reward_terms({})


def test_seed_and_options_apply_at_the_next_reset_only() -> None:
    venv = drift_vec(2, seed=None)
    venv.seed(5)
    first = venv.reset()
    venv.seed(5)
    np.testing.assert_array_equal(venv.reset(), first)
    assert not np.array_equal(venv.reset(), first), "an unseeded reset continues the streams"
    venv.set_options([{"start": 10.0}, {}])
    obs = venv.reset()
    assert obs[0, 0] > 9.0 and abs(obs[1, 0]) < 0.2
    obs = venv.reset()
    assert abs(obs[0, 0]) < 0.2, "options are used once"


def test_array_valued_options_group_equal_worlds_into_one_reset() -> None:
    """Reset options are often arrays (a start pose); equal ones reset their worlds together."""
    venv = drift_vec(3)
    venv.reset()
    backend = venv.vector_backend
    backend.reset_calls.clear()
    venv.set_options(
        [{"start": np.array(10.0)}, {"start": np.array(10.0)}, {"start": np.array(-5.0)}]
    )
    obs = venv.reset()
    assert [ids.tolist() for ids in backend.reset_calls] == [[0, 1], [2]]
    assert obs[0, 0] > 9.0 and obs[1, 0] > 9.0 and obs[2, 0] < -4.0

    car = make_vec("SimRaceCar-v0", 2, seed=0, domain_randomization=False)
    poses = [np.array([1.0, -2.0, 0.5]), np.array([-1.5, 0.5, -3.0])]
    car.set_options([{"start_pose": pose} for pose in poses])
    car.reset()
    for i, pose in enumerate(poses):
        np.testing.assert_allclose(car.state["pose"][i], pose)
    car.close()


def test_vecenv_api() -> None:
    venv = drift_vec(3)
    assert isinstance(venv, VecEnv) and venv.num_envs == 3
    assert venv.observation_space == DriftTask().observation_space
    obs = venv.reset()
    assert obs.shape == (3, 3) and obs.dtype == np.float32
    assert venv.get_attr("max_episode_steps") == [6, 6, 6]
    assert venv.get_attr("elapsed_steps", indices=[1]) == [0]
    assert venv.get_attr("reward_term_names", indices=0) == [DriftTask.reward_term_names]
    assert venv.has_attr("control_dt") and not venv.has_attr("no_such_thing")
    with pytest.raises(AttributeError, match="no_such_thing"):
        venv.get_attr("no_such_thing")
    frames = venv.env_method("render", indices=[0, 2])
    assert [frame[0, 0, 0] for frame in frames] == [0, 2]
    assert venv.render().shape == (8, 8, 3)  # 3 worlds tiled 2x2
    assert venv.env_is_wrapped(gym.Wrapper) == [False, False, False]
    generator = np.random.default_rng(123)
    venv.set_attr("np_random", generator, indices=[2])
    assert venv.get_attr("np_random", indices=2)[0] is generator
    venv.set_attr("max_episode_steps", 9)
    assert venv.task.max_episode_steps == 9
    with pytest.raises(ValueError, match="all 3 worlds share"):
        venv.set_attr("max_episode_steps", 4, indices=[0])
    assert venv.seed(7) == [7, 8, 9]
    venv.close()
    assert venv.vector_backend.closed
    with pytest.raises(RuntimeError, match="closed"):
        venv.reset()


def test_vecmonitor_reports_episodes() -> None:
    venv = VecMonitor(drift_vec(2, max_episode_steps=3))
    venv.reset()
    for _ in range(3):
        _, _, dones, infos = venv.step(np.zeros((2, 1)))
    assert dones.all() and all(info["episode"]["l"] == 3 for info in infos)


def test_bad_actions_name_the_expected_shape() -> None:
    venv = drift_vec(2)
    venv.reset()
    with pytest.raises(ValueError, match=r"shape \(2, 1\).*got \(3, 1\)"):
        venv.step(np.zeros((3, 1)))
    # (N,) is accepted for a one-dimensional action, as (N, 1)
    venv.step(np.full(2, 0.5))
    np.testing.assert_array_equal(venv.task_state["last_action"], [0.5, 0.5])


def test_step_before_reset_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        drift_vec(2).step(np.zeros((2, 1)))


# -- make_vec ------------------------------------------------------------------------------------


def test_make_vec_is_exported_lazily() -> None:
    assert sim2online_envs.make_vec is make_vec


def test_make_vec_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_envs must be at least 1, got 0"):
        make_vec("SimRaceCar-v0", 0)
    with pytest.raises(TypeError, match="num_envs must be an int, got float"):
        make_vec("SimRaceCar-v0", 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_threads"):
        make_vec("SimRaceCar-v0", 2, num_threads=-1)
    with pytest.raises(gym.error.Error):
        make_vec("SimNoSuchRobot-v0", 2)
    with pytest.raises(ValueError, match=r"simulators only.*backend='real'"):
        make_vec("SimRaceCar-v0", 2, backend="real")


# -- every robot: make_vec equals gym.make world by world ---------------------------------------


def _go1_kwargs() -> dict[str, Any]:
    from sim2online_envs.tasks.go1 import Go1TaskConfig

    return {"task_config": Go1TaskConfig(max_episode_steps=20)}


# (env id, kwargs for both gym.make and make_vec, worlds, steps, action scale). Short episodes so
# that every world is reset at least once; Go1's full-range random actions make it fall
# (terminations) before its time limit in some worlds.
ROBOTS = {
    "SimGo1-v0": (_go1_kwargs, 3, 45, 1.0),
    "SimRaceCar-v0": (lambda: {"task_config": {"max_episode_steps": 15}}, 4, 40, 1.0),
    "SimPanda-v0": (lambda: {"task_config": {"max_episode_steps": 6}}, 2, 14, 1.0),
}


@pytest.mark.parametrize("env_id", sorted(ROBOTS))
def test_make_vec_equals_single_envs_world_by_world(env_id: str) -> None:
    make_kwargs, num_envs, steps, scale = ROBOTS[env_id]
    kwargs = make_kwargs()
    reference = DummyVecEnv([lambda: gym.make(env_id, **kwargs) for _ in range(num_envs)])
    batched = make_vec(env_id, num_envs, **kwargs)
    assert batched.observation_space == reference.observation_space
    assert batched.action_space == reference.action_space
    rng = np.random.default_rng(1)
    low, high = batched.action_space.low, batched.action_space.high
    actions = scale * rng.uniform(low, high, size=(steps, num_envs, *batched.action_space.shape))
    counts = assert_same_steps(reference, batched, actions.astype(np.float32), seed=123)
    assert counts["truncated"] >= num_envs - counts["terminated"], counts
    reference.close()
    batched.close()


def test_make_vec_passes_env_kwargs_and_threads() -> None:
    venv = make_vec("SimRaceCar-v0", 3, seed=0, num_threads=1, dynamics="dynamic")
    assert venv.num_envs == 3 and venv.get_attr("max_episode_steps") == [250] * 3
    single = gym.make("SimRaceCar-v0", dynamics="dynamic")
    obs = venv.reset()
    single_obs, _ = single.reset(seed=2)
    np.testing.assert_array_equal(obs[2], single_obs)
    venv.close()


def test_make_vec_max_episode_steps_is_gym_makes_time_limit() -> None:
    venv = make_vec("SimRaceCar-v0", 2, seed=0, max_episode_steps=3)
    single = gym.make("SimRaceCar-v0", max_episode_steps=3)
    venv.reset()
    single.reset(seed=0)
    for step in range(1, 4):
        _, _, dones, infos = venv.step(np.zeros((2, 2)))
        _, _, terminated, truncated, _ = single.step(np.zeros(2))
        assert dones.tolist() == [truncated or terminated] * 2 == [step == 3] * 2
    assert infos[0]["truncation_reason"] == TIME_LIMIT
    with pytest.raises(ValueError, match="max_episode_steps must be None or an int >= 1, got 0"):
        make_vec("SimRaceCar-v0", 2, max_episode_steps=0)


def test_sb3_algorithms_learn_on_make_vec() -> None:
    """SB3's own loops run on make_vec: SAC (Box obs, replay buffer with terminal
    observations and time-limit handling) on the race car, PPO (Dict obs with pixels) on the
    Panda, both through VecMonitor."""
    from stable_baselines3 import PPO, SAC

    car = VecMonitor(make_vec("SimRaceCar-v0", 4, seed=0, max_episode_steps=10))
    sac = SAC("MlpPolicy", car, learning_starts=16, batch_size=16, train_freq=2, seed=0)
    sac.learn(total_timesteps=64)
    assert sac.num_timesteps == 64 and len(sac.ep_info_buffer) >= 4
    assert sac.replay_buffer.size() == 16  # 64 transitions from 4 worlds

    panda = VecMonitor(make_vec("SimPanda-v0", 2, seed=0, max_episode_steps=4))
    ppo = PPO("MultiInputPolicy", panda, n_steps=4, batch_size=8, n_epochs=1, seed=0)
    ppo.learn(total_timesteps=8)
    assert ppo.num_timesteps == 8 and len(ppo.ep_info_buffer) == 2
    car.close()
    panda.close()


def test_world_frames_equal_the_single_envs_frames_goal_and_trail_included() -> None:
    venv = make_vec("SimRaceCar-v0", 2, seed=4, render_mode="rgb_array")
    venv.reset()
    singles = [gym.make("SimRaceCar-v0", render_mode="rgb_array") for _ in range(2)]
    for i, single in enumerate(singles):
        single.reset(seed=4 + i)
    for _ in range(40):  # long enough for the trail to show behind the car
        venv.step(np.full((2, 2), 0.8))
        for single in singles:
            single.step(np.full(2, 0.8, dtype=np.float32))
    for i, single in enumerate(singles):
        np.testing.assert_array_equal(venv.env_method("render", indices=i)[0], single.render())
    assert venv.render().shape[:2] == (512, 256)  # SB3 tiles two 256x256 worlds in a column
