"""The one step loop: the same MDP in gym.make, make_vec and make_env; invalid readings; bad input.

What users depend on here: pretraining (``make_vec``) and fine-tuning (``make_env``) see the same
episode ends; no NaN ever reaches an observation, a reward or a buffer; the same bad action gets
the same answer from every robot.
"""

from __future__ import annotations

import threading

import gymnasium as gym
import numpy as np
import pytest

import sim2online_envs
from sim2online_envs.core import FAULT, VALID, Batch
from sim2online_envs.env import TaskEnv
from sim2online_envs.envs.racecar import RaceCarEnv
from sim2online_envs.loop import NON_FINITE_TRANSITION
from sim2online_envs.safety import SAFETY_ARENA, RaceCarLimits
from sim2online_envs.sim.racecar import RaceCarVectorBackend
from sim2online_envs.vec import TaskVecEnv

SIM_IDS = ("SimPanda-v0", "SimGo1-v0", "SimRaceCar-v0")
OUTSIDE_START = {"start_pose": (3.5, 0.0, 0.0), "start_speed": 0.0}
FULL_THROTTLE = np.array([0.0, 1.0], dtype=np.float32)


def _run_single(env: gym.Env, steps: int = 250) -> tuple[list[float], int, str | None]:
    env.reset(seed=0, options=OUTSIDE_START)
    rewards = []
    for step in range(1, steps + 1):
        _, reward, terminated, truncated, info = env.step(FULL_THROTTLE)
        rewards.append(reward)
        assert not terminated
        if truncated:
            return rewards, step, info["truncation_reason"]
    return rewards, steps, None


def test_car_leaving_the_arena_truncates_identically_in_make_vec_gym_make_and_make_env() -> None:
    """Started at x = 3.5 m with full throttle: one MDP, in pretraining and in fine-tuning."""
    made = _run_single(gym.make("SimRaceCar-v0"))
    composed = _run_single(sim2online_envs.make_env("racecar"))
    venv = sim2online_envs.make_vec("SimRaceCar-v0", 2, seed=0)
    venv.set_options(OUTSIDE_START)
    venv.reset()
    rewards, end, reason = [], None, None
    for step in range(1, 251):
        _, reward, dones, infos = venv.step(np.stack([FULL_THROTTLE, FULL_THROTTLE]))
        rewards.append(float(reward[0]))
        if dones[0]:
            end, reason = step, infos[0]["truncation_reason"]
            assert infos[0]["TimeLimit.truncated"]
            break
    assert made[1] < 60 and made[2] == SAFETY_ARENA
    assert composed[1:] == made[1:] == (end, reason)
    np.testing.assert_allclose(composed[0], made[0], rtol=0, atol=0)
    np.testing.assert_allclose(rewards, np.float32(made[0]), rtol=1e-6)


class PoseLosingCar(RaceCarVectorBackend):
    """The simulated car whose tracker loses world 0 after ``lose_after`` steps: the reading
    flags it (valid False, a fault), and the values it carries are NaN, as a raw tracker's."""

    def __init__(self, num_worlds: int = 1, lose_after: int = 5, flag: bool = True):
        super().__init__(num_worlds=num_worlds, domain_randomization=False)
        self.lose_after, self.flag, self.steps = lose_after, flag, 0

    def reset_worlds(self, ids, rngs, options=None) -> Batch:
        self.steps = 0
        return super().reset_worlds(ids, rngs, options)

    def apply(self, command: Batch) -> Batch:
        state = super().apply(command)
        self.steps += 1
        if self.steps >= self.lose_after:
            state["pose"][0] = np.nan
            state["velocity"][0] = np.nan
            if self.flag:
                state[VALID][0] = False
                state[FAULT][0] = "pose_lost"
        return state


@pytest.mark.parametrize(("flag", "reason"), [(True, "pose_lost"), (False, NON_FINITE_TRANSITION)])
def test_a_lost_pose_truncates_with_a_finite_reward_and_the_last_valid_observation(
    flag: bool, reason: str
) -> None:
    # The base TaskEnv has no limits: nothing but the loop stands between the NaN and the task.
    env = TaskEnv(RaceCarEnv.build_task(), PoseLosingCar(lose_after=4, flag=flag))
    obs, _ = env.reset(seed=0)
    last = obs
    for step in range(1, 10):  # noqa: B007  (the step it ended at is checked)
        obs, reward, terminated, truncated, info = env.step(np.array([0.2, 0.3]))
        assert np.all(np.isfinite(obs)) and np.isfinite(reward)
        if truncated:
            break
        last = obs
    assert step == 4 and not terminated
    assert info["truncation_reason"] == reason
    np.testing.assert_array_equal(obs, last)
    assert reward == 0.0 and all(v == 0.0 for v in info["reward_terms"].values())
    assert np.all(np.isfinite(env.state["pose"]))  # the loop keeps the last valid state


def test_make_vec_truncates_only_the_world_that_lost_its_pose() -> None:
    task = RaceCarEnv.build_task()
    venv = TaskVecEnv(
        task, PoseLosingCar(num_worlds=3, lose_after=3), seed=0, limits_class=RaceCarLimits
    )
    venv.reset()
    for step in range(1, 4):  # noqa: B007
        obs, rewards, dones, infos = venv.step(np.full((3, 2), 0.3))
        assert np.all(np.isfinite(obs)) and np.all(np.isfinite(rewards))
    assert dones.tolist() == [True, False, False] and step == 3
    assert infos[0]["truncation_reason"] == "pose_lost"
    assert np.all(np.isfinite(infos[0]["terminal_observation"]))


@pytest.mark.parametrize("env_id", SIM_IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_get_the_same_answer_from_every_robot(env_id: str, bad: float) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    action = np.zeros(env.action_space.shape, dtype=np.float64)
    action[-1] = bad
    with pytest.raises(ValueError, match="action contains NaN or inf"):
        env.step(action)
    env.step(np.zeros(env.action_space.shape))  # nothing was sent: the episode goes on
    env.close()
    replaced = gym.make(env_id, safety={"non_finite": "replace"})
    replaced.reset(seed=0)
    obs, reward, *_, info = replaced.step(action)
    assert info["safety"]["interventions"]["non_finite"] == 1
    assert np.isfinite(reward)
    values = obs.values() if isinstance(obs, dict) else [obs]
    assert all(np.all(np.isfinite(np.asarray(v, dtype=np.float64))) for v in values)
    replaced.close()


@pytest.mark.parametrize("env_id", ["SimGo1-v0", "SimRaceCar-v0"])
def test_make_vec_refuses_non_finite_actions_like_the_single_env(env_id: str) -> None:
    venv = sim2online_envs.make_vec(env_id, 3, seed=0)
    venv.reset()
    actions = np.zeros((3, *venv.action_space.shape))
    actions[1, 0] = np.nan
    with pytest.raises(ValueError, match="action of world 1 contains NaN or inf"):
        venv.step(actions)
    venv.close()


def test_a_diverged_go1_simulation_is_an_event_not_a_teleport() -> None:
    env = gym.make("SimGo1-v0")
    env.reset(seed=0)
    # A force no physics survives: MuJoCo resets the world to its default pose mid-step.
    env.unwrapped.backend.set_trunk_wrench([0.0, 0.0, 1e20, 0.0, 0.0, 0.0])
    before = env.unwrapped.state["base_pos"].copy()
    obs, reward, terminated, truncated, info = env.step(np.zeros(12))
    assert truncated and not terminated
    assert info["truncation_reason"] == "sim_diverged"
    assert np.all(np.isfinite(obs)) and reward == 0.0
    np.testing.assert_array_equal(env.unwrapped.state["base_pos"], before)  # no teleport seen
    env.reset(seed=0)  # a reset clears the force and makes the world valid again
    _, _, _, truncated, _ = env.step(np.zeros(12))
    assert not truncated


@pytest.mark.parametrize("env_id", SIM_IDS)
def test_stop_is_part_of_every_backend_idempotent_and_thread_safe(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    threads = [threading.Thread(target=env.unwrapped.backend.stop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    env.unwrapped.stop()
    env.unwrapped.backend.home()
    env.step(np.zeros(env.action_space.shape))  # a simulator has nothing to stop
    env.close()


@pytest.mark.parametrize("env_id", SIM_IDS)
def test_info_keys_are_the_same_in_the_single_and_the_batched_env(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    *_, info = env.step(np.zeros(env.action_space.shape))
    venv = sim2online_envs.make_vec(env_id, 2, seed=0)
    venv.reset()
    _, _, _, infos = venv.step(np.zeros((2, *venv.action_space.shape)))
    assert set(infos[0]) - {"TimeLimit.truncated"} == set(info)  # SB3's own key, batched only
    assert infos[0]["safety"].keys() == info["safety"].keys()
    assert infos[0]["safety"]["interventions"].keys() == info["safety"]["interventions"].keys()
    env.close()
    venv.close()


# -- the speed work keeps the numbers ---------------------------------------------------------


def test_go1_observation_noise_is_each_worlds_uniform_draw_bit_for_bit() -> None:
    """The task draws ``random(out=row)`` and scales it: the very bits of ``uniform(-1, 1, 48)``
    times the half-widths, from the same generators in the same order."""
    from sim2online_envs.tasks.go1 import OBS_DIM, Go1JoystickTask

    task = Go1JoystickTask()
    drawn = task._draw_noise([np.random.default_rng(seed) for seed in range(64)])
    rngs = [np.random.default_rng(seed) for seed in range(64)]
    expected = np.stack([rng.uniform(-1.0, 1.0, OBS_DIM) for rng in rngs])
    expected *= task._noise_half_widths
    np.testing.assert_array_equal(drawn.view(np.uint64), expected.view(np.uint64))


@pytest.mark.parametrize("worlds", [1, 127, 128, 5000])
def test_reward_rows_are_added_in_order_whatever_the_batch(worlds: int) -> None:
    from sim2online_envs.core import sum_reward_rows

    rng = np.random.default_rng(worlds)
    matrix = rng.normal(size=(6, worlds)) * 10.0 ** rng.integers(-12, 12, size=(6, worlds))
    matrix[0, 0] = -0.0
    expected = np.add.accumulate(matrix, axis=0)[-1]
    np.testing.assert_array_equal(sum_reward_rows(matrix).view(np.uint64), expected.view(np.uint64))


def test_batched_safety_infos_are_each_worlds_own_dicts() -> None:
    venv = sim2online_envs.make_vec("SimGo1-v0", 16, seed=0)
    venv.reset()
    _, _, _, infos = venv.step(np.zeros((16, 12)))
    first, second = infos[0]["safety"], infos[1]["safety"]
    assert first["interventions"] == second["interventions"]  # both all zero here
    first["interventions"]["clipped"] = 99
    first["episode_interventions"]["abort"] = 99
    assert second["interventions"]["clipped"] == 0 and second["episode_interventions"]["abort"] == 0
    assert first["applied_action"] is not second["applied_action"]
    venv.close()


def test_worlds_that_did_not_end_share_one_read_only_empty_reason_array() -> None:
    """Nothing is allocated per world for steps where no episode ends; nothing can write into
    what is shared."""
    venv = sim2online_envs.make_vec("SimRaceCar-v0", 3, seed=0, max_episode_steps=2)
    venv.reset()
    venv.step(np.zeros((3, 2)))
    reasons = venv.last_truncation_reasons
    assert reasons.tolist() == ["", "", ""] and not reasons.flags.writeable
    _, _, dones, infos = venv.step(np.zeros((3, 2)))
    assert dones.all() and venv.last_truncation_reasons.tolist() == ["time_limit"] * 3
    assert [info["truncation_reason"] for info in infos] == ["time_limit"] * 3
    venv.close()
