"""SimGo1-v0: the MJCF, the joystick task, the batched simulator and the env."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim2online_envs  # registers the ids
from sim2online_envs.controllers.go1 import Go1StandController, make_controller
from sim2online_envs.core import sum_reward_terms
from sim2online_envs.envs.go1 import Go1Env
from sim2online_envs.robots import go1 as go1_robot
from sim2online_envs.sim.go1 import Go1SimConfig, Go1VectorBackend, load_model
from sim2online_envs.tasks.go1 import (
    COMMAND_RANGES,
    HOME_JOINT_POS,
    OBS_SLICES,
    Go1JoystickTask,
    Go1TaskConfig,
    check_state,
    gravity_in_body,
    rotate_to_world,
    rotation_matrix,
)

DT = 0.02


def make_env(**kwargs) -> Go1Env:
    return gym.make("SimGo1-v0", **kwargs).unwrapped


def home_qpos(z: float = go1_robot.HOME_TRUNK_HEIGHT) -> np.ndarray:
    return np.concatenate([[0.0, 0.0, z, 1.0, 0.0, 0.0, 0.0], HOME_JOINT_POS])


def quat_about(axis: str, angle: float) -> np.ndarray:
    quat = np.zeros(4)
    quat[0] = math.cos(angle / 2)
    quat[1 + "xyz".index(axis)] = math.sin(angle / 2)
    return quat


# -- the model ---------------------------------------------------------------------------------


def test_model_carries_the_published_go1_numbers():
    import mujoco  # here, after sim2online_envs chose the headless OpenGL backend

    model = load_model()
    assert model.nq == 19 and model.nv == 18 and model.nu == 12
    assert model.body_subtreemass[model.body("trunk").id] == pytest.approx(12.74, abs=0.05)
    assert model.opt.timestep == pytest.approx(0.004)
    # position actuators: Kp 35, Kd 0.5 (force = kp (target - q) - kd q̇), no joint damping
    np.testing.assert_allclose(model.actuator_gainprm[:, 0], 35.0)
    np.testing.assert_allclose(model.actuator_biasprm[:, 1:3], [[-35.0, -0.5]] * 12)
    np.testing.assert_allclose(model.dof_damping[6:], 0.0)
    np.testing.assert_allclose(model.actuator_forcerange[:, 1], [23.7, 23.7, 35.55] * 4)
    np.testing.assert_allclose(model.key("home").qpos[7:], HOME_JOINT_POS)
    # MuJoCo Playground's model: friction loss 0.3 / 0.3 / 1.0 N m, armature 0.005 kg m²
    np.testing.assert_array_equal(model.dof_frictionloss[6:], [0.3, 0.3, 1.0] * 4)
    np.testing.assert_array_equal(model.dof_armature[6:], np.full(12, 0.005))
    np.testing.assert_array_equal(model.dof_frictionloss[:6], 0.0)  # the free joint has none
    imu = model.site("imu").id
    kinds = {
        "gyro": mujoco.mjtSensor.mjSENS_GYRO,
        "accelerometer": mujoco.mjtSensor.mjSENS_ACCELEROMETER,
        "local_linvel": mujoco.mjtSensor.mjSENS_VELOCIMETER,
        "orientation": mujoco.mjtSensor.mjSENS_FRAMEQUAT,
    }
    for name, kind in kinds.items():
        sensor = model.sensor(name)
        assert sensor.type[0] == kind and sensor.objid[0] == imu, name


def test_imu_readings_agree_with_the_trunk_state():
    backend = Go1VectorBackend(2)
    rngs = [np.random.default_rng(0), np.random.default_rng(1)]
    backend.reset_worlds(np.arange(2), rngs)
    targets = HOME_JOINT_POS + 0.4 * np.random.default_rng(2).uniform(-1, 1, size=(2, 12))
    for _ in range(10):
        state = backend.apply({"joint_targets": targets})
    qpos, qvel = state["qpos"], state["qvel"]
    # the IMU sits at the trunk origin: its quaternion is the free joint's, the gyro is the
    # free joint's body-frame angular velocity, the velocimeter its world velocity in the body
    np.testing.assert_allclose(state["base_quat"], qpos[:, 3:7], atol=1e-12)
    np.testing.assert_allclose(state["gyro"], qvel[:, 3:6], atol=1e-12)
    rot = rotation_matrix(state["base_quat"])
    np.testing.assert_allclose(state["base_rot"], rot, atol=1e-15)  # MuJoCo's, as the task's
    np.testing.assert_allclose(rotate_to_world(rot, state["local_linvel"]), qvel[:, :3], atol=1e-12)
    np.testing.assert_allclose(state["base_pos"], qpos[:, :3], atol=1e-12)
    assert np.all(np.abs(state["torque"]) <= [23.7, 23.7, 35.55] * 4)


def test_control_period_must_be_whole_physics_steps():
    assert Go1VectorBackend(control_dt=0.02).n_substeps == 5
    assert Go1VectorBackend(control_dt=0.02, config=Go1SimConfig(timestep=0.002)).n_substeps == 10
    with pytest.raises(ValueError, match="whole number of physics steps"):
        Go1VectorBackend(control_dt=0.021)


# -- the env -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command_range", ["narrow", "full"])
def test_check_env(command_range):
    env = make_env(command_range=command_range)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Box observation space m.*infinity")
        check_env(env)
    assert env.observation_space.shape == (48,) and env.action_space.shape == (12,)
    assert env.control_dt == DT and env.max_episode_steps == 1000
    assert env.metadata["render_fps"] == 50
    env.close()


def rollout(seed: int, steps: int = 30, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    env = make_env(**kwargs)
    env.action_space.seed(123)
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    env.close()
    return np.array(observations), np.array(rewards)


def test_identical_seeds_give_identical_rollouts():
    first_obs, first_rewards = rollout(seed=7)
    again_obs, again_rewards = rollout(seed=7)
    other_obs, _ = rollout(seed=8)
    np.testing.assert_array_equal(first_obs, again_obs)
    np.testing.assert_array_equal(first_rewards, again_rewards)
    assert not np.array_equal(first_obs[0], other_obs[0])


@pytest.mark.parametrize(
    "kwargs", [{}, {"friction": 0.3, "command_range": "full"}], ids=["default", "slippery"]
)
def test_standing_at_home_lasts_a_whole_episode(kwargs):
    env = make_env(**kwargs)
    policy = make_controller(env)
    obs, _ = env.reset(seed=3)
    for step in range(1, 1001):
        obs, _, terminated, truncated, info = env.step(policy(obs))
        assert not terminated, f"fell at step {step}"
        if truncated:
            break
    assert step == 1000 and truncated and info["truncation_reason"] == "time_limit"
    assert env.state["base_rot"][0, 2, 2] > 0.98  # still upright (the true state, not the obs)
    assert env.backend.privileged()["base_pos"][0, 2] > 0.2  # still standing tall
    env.close()


def test_a_tipped_go1_terminates_at_once():
    env = make_env(domain_randomization=False)
    qpos = home_qpos(z=0.25)
    qpos[3:7] = quat_about("x", math.radians(80))  # lying on its side
    env.reset(seed=0, options={"qpos": qpos})
    _, _, terminated, truncated, info = env.step(np.zeros(12))
    assert terminated and not truncated
    assert info["reward_terms"]["termination"] == pytest.approx(-1.0 * DT)
    env.close()


def test_a_pushed_go1_falls_and_terminates():
    env = make_env()
    env.reset(seed=1)
    backend = env.backend
    backend.set_trunk_wrench([0.0, 0.0, 0.0, 60.0, 0.0, 0.0])  # a hard roll torque [N m]
    for _ in range(100):
        _, _, terminated, truncated, _ = env.step(np.zeros(12))
        if terminated:
            break
    assert terminated and not truncated, "a 60 N m roll torque did not tip the Go1 over in 2 s"
    # the push is cleared by the next reset, and the Go1 stands again
    env.reset(seed=1)
    for _ in range(50):
        _, _, terminated, _, _ = env.step(np.zeros(12))
        assert not terminated
    env.close()


def test_observation_layout_at_the_home_pose():
    env = make_env(domain_randomization=False, obs_noise=False)
    qpos = home_qpos()
    obs, info = env.reset(seed=0, options={"qpos": qpos, "qvel": np.zeros(18)})
    np.testing.assert_array_equal(obs[OBS_SLICES["gravity"]], [0.0, 0.0, -1.0])
    np.testing.assert_array_equal(obs[OBS_SLICES["joint_pos"]], np.zeros(12))
    np.testing.assert_array_equal(obs[OBS_SLICES["local_linvel"]], np.zeros(3))
    np.testing.assert_array_equal(obs[OBS_SLICES["gyro"]], np.zeros(3))
    np.testing.assert_array_equal(obs[OBS_SLICES["joint_vel"]], np.zeros(12))
    np.testing.assert_array_equal(obs[OBS_SLICES["last_action"]], np.zeros(12))
    np.testing.assert_array_equal(obs[OBS_SLICES["command"]], info["command"].astype(np.float32))
    half_widths = np.array(COMMAND_RANGES["full"])  # the default range
    assert np.all(np.abs(info["command"]) <= half_widths)

    action = np.linspace(-1.5, 1.5, 12)  # out of range on both ends: clipped to [-1, 1]
    obs, *_ = env.step(action)
    np.testing.assert_allclose(obs[OBS_SLICES["last_action"]], np.clip(action, -1, 1), rtol=1e-6)
    np.testing.assert_array_equal(obs[OBS_SLICES["command"]], info["command"].astype(np.float32))
    # the joints move towards home + 0.5 * action
    joint_offset = obs[OBS_SLICES["joint_pos"]]
    assert np.corrcoef(joint_offset, np.clip(action, -1, 1))[0, 1] > 0.5
    env.close()


def test_commands_are_resampled_on_a_fixed_clock_when_asked():
    config = Go1TaskConfig(
        command_resample_steps=5,
        command_change_probability=1.0,
        command_nonzero_probability=(1.0, 1.0, 1.0),
    )
    env = make_env(task_config=config)
    _, info = env.reset(seed=4)
    commands = [info["command"]]
    for _ in range(10):
        *_, info = env.step(np.zeros(12))
        commands.append(info["command"])
    for step in range(1, 5):
        np.testing.assert_array_equal(commands[step], commands[0])
    assert not np.array_equal(commands[5], commands[4])
    np.testing.assert_array_equal(commands[9], commands[5])
    assert not np.array_equal(commands[10], commands[9])
    env.close()


@pytest.mark.parametrize("name", ["narrow", "full"])
def test_commands_cover_their_range(name):
    task = Go1JoystickTask(Go1TaskConfig(command_range=name))
    state = {"joint_pos": np.zeros((500, 12))}
    rngs = [np.random.default_rng(seed) for seed in range(500)]
    commands = task.initial_task_state(state, rngs)["command"]
    half_widths = np.array(COMMAND_RANGES[name])
    assert np.all(np.abs(commands) <= half_widths)
    assert np.all(commands.max(axis=0) > 0.9 * half_widths)
    assert np.all(commands.min(axis=0) < -0.9 * half_widths)


def test_commands_are_resampled_as_playground_samples_them():
    """Playground's sample_command: at a resample each component changes with probability 0.5,
    to a uniform draw with probability (0.9, 0.25, 0.5), else to zero; the next resample comes
    after round(Exp(5 s) / dt) steps."""
    count = 4000
    task = Go1JoystickTask(Go1TaskConfig(obs_noise=False))
    state = constructed_state(count)
    rngs = [np.random.default_rng(seed) for seed in range(count)]
    task_state = task.initial_task_state(state, rngs)
    mean_steps = 5.0 / DT
    assert task_state["command_countdown"].dtype == np.int64
    assert abs(task_state["command_countdown"].mean() - mean_steps) < 0.1 * mean_steps
    old = np.full((count, 3), 0.25)
    task_state["command"] = old.copy()
    task_state["command_countdown"][:] = 1
    task_state["command_countdown"][0] = 2  # world 0 is not due
    after = task.advance(task_state, state, np.zeros((count, 12)), np.ones(count, int), rngs)
    command = after["command"]
    np.testing.assert_array_equal(command[0], old[0])
    np.testing.assert_array_equal(after["command_countdown"][0], 1)
    command = command[1:]
    kept = command == 0.25
    zero = command == 0.0
    np.testing.assert_allclose(kept.mean(axis=0), 0.5, atol=0.03)
    np.testing.assert_allclose(zero.mean(axis=0), 0.5 * (1 - np.array([0.9, 0.25, 0.5])), atol=0.03)
    drawn = ~(kept | zero)
    assert np.all(np.abs(command) <= np.array(COMMAND_RANGES["full"]))
    assert np.abs(command[drawn[:, 0], 0]).max() > 1.4
    countdown = after["command_countdown"][1:]
    assert abs(countdown.mean() - mean_steps) < 0.1 * mean_steps and countdown.min() >= 0


def test_presets():
    """ "playground" is the default; "study_prior" narrows the commands and changes nothing
    else; a task_config dict changes fields on the preset; a whole config excludes a preset."""
    default = make_env().task.config
    assert default == Go1TaskConfig() == Go1TaskConfig.from_preset("playground")
    assert make_env(preset="playground").task.config == default
    prior = make_env(preset="study_prior").task.config
    assert prior == dataclasses.replace(default, command_range="narrow")
    np.testing.assert_array_equal(prior.command_half_widths, [0.5, 0.8, 1.2])
    changed = make_env(preset="study_prior", task_config={"max_episode_steps": 7}).task.config
    assert changed == dataclasses.replace(prior, max_episode_steps=7)
    assert make_env(preset="study_prior", obs_noise=False).task.config.obs_noise is False
    with pytest.raises(ValueError, match="preset must be one of"):
        make_env(preset="studyprior")
    with pytest.raises(ValueError, match="not both"):
        make_env(preset="study_prior", task_config=Go1TaskConfig())
    vec = sim2online_envs.make_vec("SimGo1-v0", 2, preset="study_prior")
    try:
        assert vec.task.config == prior
    finally:
        vec.close()


def test_domain_randomization_and_friction_mismatch():
    def physics(seed: int, **kwargs) -> dict[str, np.ndarray]:
        env = make_env(**kwargs)
        env.reset(seed=seed)
        values = env.backend.privileged()
        env.close()
        return values

    nominal = physics(0, domain_randomization=False)
    assert nominal["floor_friction"][0] == pytest.approx(0.6)
    assert nominal["total_mass"][0] == pytest.approx(12.74, abs=0.05)
    first, second = physics(0), physics(1)
    assert first["floor_friction"][0] != second["floor_friction"][0]
    assert first["total_mass"][0] != second["total_mass"][0]
    assert 0.4 <= first["floor_friction"][0] <= 1.0
    slippery = physics(0, friction=0.3)
    assert slippery["floor_friction"][0] == 0.3
    # fixing the friction leaves the other draws of a seed unchanged
    assert slippery["total_mass"][0] == first["total_mass"][0]
    assert physics(0, domain_randomization=False, friction=0.3)["floor_friction"][0] == 0.3
    # the trunk's centre of mass moves by up to 5 cm on each axis (Playground's range)
    com_offsets = np.array([physics(seed)["trunk_com"][0] for seed in range(8)])
    com_offsets -= nominal["trunk_com"][0]
    assert np.all(np.abs(com_offsets) <= 0.05) and np.abs(com_offsets).max() > 0.03
    assert len(np.unique(com_offsets[:, 0])) == 8


def test_render_gives_a_tracking_camera_frame():
    env = make_env(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    assert frame.std() > 5  # an image, not a blank
    assert make_env().render() is None  # no render_mode: no frame
    env.close()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="backend"):
        gym.make("SimGo1-v0", backend="hardware")
    with pytest.raises(ValueError, match="command_range"):
        make_env(command_range="wide")
    with pytest.raises(ValueError, match="friction"):
        make_env(friction=-0.1)
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="12"):
        env.step(np.zeros(11))
    with pytest.raises(ValueError, match="reset options"):
        env.reset(options={"height": 1.0})
    with pytest.raises(ValueError, match="qpos"):
        env.reset(options={"qpos": np.zeros(7)})
    env.close()


def test_stand_controller():
    env = make_env()
    policy = make_controller(env)
    assert isinstance(policy, Go1StandController)
    np.testing.assert_array_equal(policy(np.zeros(48)), np.zeros(12))
    obs = np.zeros(48, dtype=np.float32)
    obs[OBS_SLICES["joint_pos"]] = np.linspace(-0.2, 0.2, 12)
    # targets home - 0.75 (q - home): the action is -0.75 / 0.5 = -1.5 times the offset
    expected = np.clip(-1.5 * obs[OBS_SLICES["joint_pos"]].astype(np.float64), -1, 1)
    np.testing.assert_allclose(policy(obs), expected, rtol=1e-6)
    assert policy(obs).dtype == np.float32
    actions, state = policy.predict(np.ones((5, 48)))
    assert actions.shape == (5, 12) and state is None
    np.testing.assert_array_equal(Go1StandController(stiffening=0.0)(obs), np.zeros(12))
    with pytest.raises(ValueError, match="observation"):
        policy(np.ones(47))
    env.close()


# -- the batched simulator ---------------------------------------------------------------------


def test_four_worlds_equal_four_single_worlds():
    seeds = [10, 11, 12, 13]
    batched = Go1VectorBackend(4, num_threads=2)
    singles = [Go1VectorBackend(1) for _ in seeds]
    batch_rngs = [np.random.default_rng(seed) for seed in seeds]
    single_rngs = [np.random.default_rng(seed) for seed in seeds]
    state = batched.reset_worlds(np.arange(4), batch_rngs)
    single_states = [
        single.reset_worlds(np.zeros(1, dtype=int), [rng])
        for single, rng in zip(singles, single_rngs, strict=True)
    ]
    actions = np.random.default_rng(0).uniform(-1, 1, size=(30, 4, 12))

    def assert_equal(state, single_states):
        for world, single_state in enumerate(single_states):
            for key, value in single_state.items():
                np.testing.assert_array_equal(state[key][world], value[0], err_msg=key)

    assert_equal(state, single_states)
    for step, action in enumerate(actions):
        targets = HOME_JOINT_POS + 0.5 * action
        if step == 15:  # re-randomise and reset worlds 1 and 3 only
            state = batched.reset_worlds(np.array([3, 1]), [batch_rngs[3], batch_rngs[1]])
            for world in (1, 3):
                single_states[world] = singles[world].reset_worlds(
                    np.zeros(1, dtype=int), [single_rngs[world]]
                )
        state = batched.apply({"joint_targets": targets})
        single_states = [
            single.apply({"joint_targets": targets[world : world + 1]})
            for world, single in enumerate(singles)
        ]
        assert_equal(state, single_states)
    np.testing.assert_array_equal(
        batched.privileged()["total_mass"],
        [single.privileged()["total_mass"][0] for single in singles],
    )


def test_task_results_do_not_depend_on_the_batch_size():
    """Each world's observation, rewards and ends are bit-identical alone and in a batch."""
    count = 8
    backend = Go1VectorBackend(count)
    rngs = [np.random.default_rng(seed) for seed in range(count)]
    state = backend.reset_worlds(np.arange(count), rngs)
    task = Go1JoystickTask(Go1TaskConfig(command_range="full"))
    task_state = task.initial_task_state(state, rngs)
    actions = np.random.default_rng(1).uniform(-1.2, 1.2, size=(40, count, 12))
    for step, action in enumerate(actions, start=1):
        prev_state = state
        state = backend.apply(task.command(action, state, task_state))
        batched = {
            "obs": task.observe(state, task_state),
            "terminated": task.terminated(state, task_state),
            **task.reward_terms(prev_state, state, action, task_state),
        }
        for world in range(count):
            rows = slice(world, world + 1)
            one_state = {key: value[rows] for key, value in state.items()}
            one_task_state = {key: value[rows] for key, value in task_state.items()}
            alone = {
                "obs": task.observe(one_state, one_task_state),
                "terminated": task.terminated(one_state, one_task_state),
                **task.reward_terms(one_state, one_state, action[rows], one_task_state),
            }
            for key, value in alone.items():
                np.testing.assert_array_equal(batched[key][world], value[0], err_msg=key)
        steps = np.full(count, step)
        task_state = task.advance(task_state, state, action, steps, rngs)


@pytest.mark.parametrize("obs_noise", [False, True])
def test_fused_transition_equals_the_task_methods_it_replaces(obs_noise):
    """Go1's compiled ``transition`` gives the bits of the documented methods composed (the
    default ``Task.transition``): the same terms, reward, ends, next task state, observation and
    random draws, across command resampling, with and without observation noise."""
    from sim2online_envs.core import Task

    count = 6
    task = Go1JoystickTask(Go1TaskConfig(obs_noise=obs_noise))
    backend = Go1VectorBackend(count)
    state = backend.reset_worlds(
        np.arange(count), [np.random.default_rng(seed) for seed in range(count)]
    )
    fused_rngs = [np.random.default_rng(100 + seed) for seed in range(count)]
    composed_rngs = [np.random.default_rng(100 + seed) for seed in range(count)]
    task_state = task.initial_task_state(state, fused_rngs)
    task.initial_task_state(state, composed_rngs)
    first_command = task_state["command"][0].copy()
    first_commands_of_others = task_state["command"][1:].copy()
    actions = np.random.default_rng(2).uniform(-1.3, 1.3, size=(8, count, 12))
    for step, action in enumerate(actions, start=1):
        prev_state = state
        state = backend.apply(task.command(action, state, task_state))
        steps = np.full(count, step)
        task_state = dict(task_state)
        task_state["command_countdown"] = np.full(count, 50)  # not due
        task_state["command_countdown"][0] = 1  # world 0 resamples its command on every step
        fused = task.transition(prev_state, state, action, task_state, steps, fused_rngs)
        composed = Task.transition(
            task, prev_state, state, action, task_state, steps, composed_rngs
        )
        for field in ("observation", "reward_terms", "reward", "terminated", "success"):
            np.testing.assert_array_equal(
                getattr(fused, field), getattr(composed, field), err_msg=field
            )
        assert fused.task_state.keys() == composed.task_state.keys()
        for key in fused.task_state:
            np.testing.assert_array_equal(
                fused.task_state[key], composed.task_state[key], err_msg=key
            )
        np.testing.assert_array_equal(fused.info["command"], composed.info["command"])
        assert fused.observation.dtype == np.float32 and fused.reward.dtype == np.float64
        task_state = fused.task_state
    assert not np.array_equal(task_state["command"][0], first_command)  # world 0 resampled
    np.testing.assert_array_equal(task_state["command"][1:], first_commands_of_others)


def test_frame_functions_agree_with_mujoco_alone_and_in_a_batch():
    """Rotation matrices and body-frame gravity are MuJoCo's, and a quaternion's are the same
    bits whatever batch it comes in (row-wise dot products, no batch-size-dependent BLAS)."""
    import mujoco

    rng = np.random.default_rng(0)
    quats = rng.normal(size=(257, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    rot, gravity = rotation_matrix(quats), gravity_in_body(quats)
    vectors = rng.normal(size=(257, 3))
    world = rotate_to_world(rot, vectors)
    for i, quat in enumerate(quats):
        expected = np.zeros(9)
        mujoco.mju_quat2Mat(expected, quat)
        np.testing.assert_allclose(rot[i].ravel(), expected, atol=1e-15)
        np.testing.assert_allclose(gravity[i], -expected[6:], atol=1e-15)
        alone = slice(i, i + 1)
        np.testing.assert_array_equal(rotation_matrix(quats[alone])[0], rot[i])
        np.testing.assert_array_equal(gravity_in_body(quats[alone])[0], gravity[i])
        np.testing.assert_array_equal(rotate_to_world(rot[alone], vectors[alone])[0], world[i])


def test_the_reward_is_its_terms_added_in_order_as_the_batched_env_adds_them():
    env = make_env()
    env.reset(seed=5)
    actions = np.random.default_rng(5).uniform(-1, 1, size=(40, 12))
    for action in actions:
        _, reward, terminated, _, info = env.step(action)
        terms = info["reward_terms"]
        assert tuple(terms) == Go1JoystickTask.reward_term_names
        batched = sum_reward_terms({name: np.array([value]) for name, value in terms.items()})
        assert reward == batched[0] and type(reward) is float
        if terminated:
            break
    env.close()


def test_backend_state_follows_the_task_contract():
    backend = Go1VectorBackend(3)
    state = backend.reset_worlds(np.arange(3), [np.random.default_rng(i) for i in range(3)])
    check_state(state)
    state = backend.apply({"joint_targets": np.tile(HOME_JOINT_POS, (3, 1))})
    check_state(state)
    assert state["foot_contact"].dtype == bool and state["trunk_contact"].shape == (3,)
    del state["gyro"]
    with pytest.raises(ValueError, match="gyro"):
        check_state(state)


def test_backend_rejects_bad_commands():
    backend = Go1VectorBackend(2)
    backend.reset_worlds(np.arange(2), [np.random.default_rng(0), np.random.default_rng(1)])
    with pytest.raises(ValueError, match=r"joint_targets must have shape \(2, 12\)"):
        backend.apply({"joint_targets": np.zeros((1, 12))})
    with pytest.raises(ValueError, match="one generator per world"):
        backend.reset_worlds(np.arange(2), [np.random.default_rng(0)])


# -- reward terms against hand-computed values ----------------------------------------------


def constructed_state(count: int) -> dict[str, np.ndarray]:
    """Upright, still, at home, feet on the ground, nothing moving."""
    feet = np.tile([0.0, 0.0, 0.02], (count, 4, 1))
    return {
        "joint_pos": np.tile(HOME_JOINT_POS, (count, 1)),
        "joint_vel": np.zeros((count, 12)),
        "torque": np.zeros((count, 12)),
        "base_quat": np.tile([1.0, 0.0, 0.0, 0.0], (count, 1)),
        "base_rot": np.tile(np.eye(3), (count, 1, 1)),
        "gyro": np.zeros((count, 3)),
        "local_linvel": np.zeros((count, 3)),
        "accelerometer": np.tile([0.0, 0.0, 9.81], (count, 1)),
        "foot_pos": feet,
        "foot_vel": np.zeros((count, 4, 3)),
        "foot_contact": np.ones((count, 4), dtype=bool),
        "trunk_contact": np.zeros(count, dtype=bool),
    }


def turned(state: dict[str, np.ndarray], world: int, quat: np.ndarray) -> None:
    """Give ``world`` of a constructed state the orientation ``quat`` (both representations)."""
    state["base_quat"][world] = quat
    state["base_rot"][world] = rotation_matrix(np.asarray(quat)[None])[0]


def constructed_task_state(task: Go1JoystickTask, command: np.ndarray) -> dict[str, np.ndarray]:
    count = len(command)
    task_state = task.initial_task_state(
        {"joint_pos": np.zeros((count, 12))}, [np.random.default_rng(0)] * count
    )
    task_state["command"] = np.asarray(command, dtype=np.float64)
    task_state["command_countdown"][:] = 100  # no resample in the next steps
    return task_state


def test_reward_terms_match_hand_computed_values():
    task = Go1JoystickTask(Go1TaskConfig(clip_reward_at_zero=False, obs_noise=False))
    weights = task.config.weights
    command = np.array([[0.4, -0.3, 0.8], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    state = constructed_state(3)
    task_state = constructed_task_state(task, command)
    action = np.zeros((3, 12))

    # world 0: perfect tracking; action 0.5 on joint 0 and -0.2 on joint 5 after a zero action
    state["local_linvel"][0] = [0.4, -0.3, 0.0]
    state["gyro"][0] = [0.0, 0.0, 0.8]
    action[0, 0], action[0, 5] = 0.5, -0.2
    # world 1: pitched 30° nose down at 1 m/s forward in the body frame, yawing at 1 rad/s
    theta = math.radians(30)
    turned(state, 1, quat_about("y", theta))
    state["local_linvel"][1] = [1.0, 0.0, 0.0]
    state["gyro"][1] = [0.0, 0.0, 1.0]
    # world 2: torques (3, 4) on two joints, a hip beyond its soft limit, a fall
    state["torque"][2, :2] = [3.0, 4.0]
    state["joint_vel"][2, :2] = [2.0, -1.0]
    state["joint_pos"][2, 0] = 0.9
    state["trunk_contact"][2] = True

    terms = task.reward_terms(state, state, action, task_state)
    assert tuple(terms) == task.reward_term_names
    expected = {name: np.zeros(3) for name in task.reward_term_names}
    # world 0
    expected["tracking_lin_vel"][0] = weights.tracking_lin_vel * 1.0 * DT
    expected["tracking_ang_vel"][0] = weights.tracking_ang_vel * 1.0 * DT
    expected["action_rate"][0] = weights.action_rate * (0.5**2 + 0.2**2) * DT
    # world 1: world velocity (cos θ, 0, -sin θ), up axis (sin θ, 0, cos θ), ω_world likewise
    expected["tracking_lin_vel"][1] = weights.tracking_lin_vel * math.exp(-(0.5**2) / 0.25) * DT
    expected["tracking_ang_vel"][1] = weights.tracking_ang_vel * math.exp(-1.0 / 0.25) * DT
    expected["lin_vel_z"][1] = weights.lin_vel_z * math.sin(theta) ** 2 * DT
    expected["ang_vel_xy"][1] = weights.ang_vel_xy * math.sin(theta) ** 2 * DT
    expected["orientation"][1] = weights.orientation * math.sin(theta) ** 2 * DT
    # world 2
    soft_hip_limit = 0.863 * 0.95
    expected["tracking_lin_vel"][2] = weights.tracking_lin_vel * DT
    expected["tracking_ang_vel"][2] = weights.tracking_ang_vel * DT
    expected["torques"][2] = weights.torques * (5.0 + 7.0) * DT
    expected["energy"][2] = weights.energy * (3.0 * 2.0 + 4.0 * 1.0) * DT
    expected["dof_pos_limits"][2] = weights.dof_pos_limits * (0.9 - soft_hip_limit) * DT
    expected["termination"][2] = weights.termination * DT
    hip_offset = 0.9 - HOME_JOINT_POS[0]
    expected["stand_still"][2] = weights.stand_still * hip_offset * DT  # zero command
    expected["pose"][:] = weights.pose * DT
    expected["pose"][2] = weights.pose * math.exp(-(hip_offset**2)) * DT
    for name in task.reward_term_names:
        np.testing.assert_allclose(terms[name], expected[name], atol=1e-12, err_msg=name)


def test_feet_reward_terms_match_hand_computed_values():
    task = Go1JoystickTask(Go1TaskConfig(clip_reward_at_zero=False, obs_noise=False))
    weights = task.config.weights
    state = constructed_state(1)
    task_state = constructed_task_state(task, np.array([[0.5, 0.0, 0.0]]))
    # foot 0 lands after 0.3 s in the air with a swing peak of 0.12 m
    task_state["feet_air_time"][0] = [0.3, 0.0, 0.0, 0.0]
    task_state["swing_peak"][0] = [0.12, 0.0, 0.0, 0.0]
    # foot 1 slides on the ground at 0.5 m/s; foot 2 swings at 5 cm height at 0.5 m/s
    state["foot_vel"][0, 1] = [0.3, 0.4, 0.0]
    state["foot_vel"][0, 2] = [0.0, 0.5, 0.0]
    state["foot_pos"][0, 2, 2] = 0.05
    state["foot_contact"][0, 2] = False
    terms = task.reward_terms(state, state, np.zeros((1, 12)), task_state)
    assert terms["feet_air_time"][0] == pytest.approx(weights.feet_air_time * (0.32 - 0.1) * DT)
    assert terms["feet_height"][0] == pytest.approx(weights.feet_height * 0.2**2 * DT)
    assert terms["feet_slip"][0] == pytest.approx(weights.feet_slip * 0.25 * DT)
    clearance = (0.1 - 0.02) * math.sqrt(0.5) + (0.1 - 0.05) * math.sqrt(0.5)
    assert terms["feet_clearance"][0] == pytest.approx(weights.feet_clearance * clearance * DT)
    # after the step: foot 0's air time resets on contact, foot 2's grows, peaks follow
    after = task.advance(task_state, state, np.zeros((1, 12)), np.array([1]), [None])
    np.testing.assert_allclose(after["feet_air_time"][0], [0.0, 0.0, 0.02, 0.0])
    np.testing.assert_allclose(after["swing_peak"][0], [0.0, 0.0, 0.05, 0.0])


def test_clip_at_zero_lifts_a_negative_reward_to_zero():
    task = Go1JoystickTask()
    state = constructed_state(2)
    state["trunk_contact"][0] = True  # world 0: fallen, with big torques
    state["torque"][0] = 35.0
    task_state = constructed_task_state(task, np.array([[1.0, 0.5, 1.0], [0.0, 0.0, 0.0]]))
    task_state["command"][0] = [0.5, 0.8, 1.2]
    terms = task.reward_terms(state, state, np.zeros((2, 12)), task_state)
    rewards = sum_reward_terms(terms)  # as the envs add them
    others = sum_reward_terms({k: v for k, v in terms.items() if k != "clip_at_zero"})
    assert others[0] < 0 and rewards[0] == 0.0
    assert terms["clip_at_zero"][0] == pytest.approx(-others[0])
    assert others[1] > 0 and terms["clip_at_zero"][1] == 0.0 and rewards[1] == others[1]


def test_observation_noise_is_on_by_default_and_seeded():
    state = constructed_state(1)
    quiet = Go1JoystickTask(dataclasses.replace(Go1TaskConfig(), obs_noise=False))
    task_state = quiet.initial_task_state(state, [np.random.default_rng(0)])
    clean = quiet.observe(state, task_state)
    noisy_task = Go1JoystickTask()
    assert noisy_task.config.obs_noise
    noisy_state = noisy_task.initial_task_state(state, [np.random.default_rng(0)])
    noisy = noisy_task.observe(state, noisy_state)
    np.testing.assert_array_equal(clean[:, 45:], noisy[:, 45:])  # the command is exact
    joint = OBS_SLICES["joint_pos"]
    assert 0 < np.abs(noisy - clean)[:, joint].max() <= 0.03 + 1e-6
    again = noisy_task.initial_task_state(state, [np.random.default_rng(0)])
    np.testing.assert_array_equal(noisy_task.observe(state, again), noisy)


@pytest.mark.slow
@pytest.mark.parametrize("friction", [None, 0.3, 0.2])
def test_standing_survives_many_randomised_episodes(friction):
    """The stand controller with the defaults: randomisation (the trunk's centre of mass up to
    5 cm off), observation noise, random commands."""
    env = make_env(friction=friction)
    policy = make_controller(env)
    for seed in range(10):
        obs, _ = env.reset(seed=100 + seed)
        for _ in range(1000):
            obs, _, terminated, truncated, _ = env.step(policy(obs))
            assert not terminated, f"seed {100 + seed} fell (friction {friction})"
            if truncated:
                break
    env.close()


def test_task_and_sim_config_take_dicts_of_fields_like_every_env():
    env = make_env(task_config={"max_episode_steps": 3}, sim_config={"reset_joint_noise": 0.0})
    env.reset(seed=0)
    np.testing.assert_allclose(env.state["joint_pos"][0], HOME_JOINT_POS, atol=1e-12)
    ends = [env.step(np.zeros(12))[3] for _ in range(3)]
    assert ends == [False, False, True]
    with pytest.raises(TypeError, match=r"task_config has unknown fields \['episode_length'\]"):
        make_env(task_config={"episode_length": 3})


def test_a_backend_reporting_float32_gets_an_error_naming_the_key():
    """The compiled task takes float64 states (bool contacts): a driver that reports float32
    joint angles is told which key is wrong, not numba's "no matching definition"."""
    task = Go1JoystickTask(Go1TaskConfig(obs_noise=False))
    state = constructed_state(1)
    task_state = constructed_task_state(task, np.zeros((1, 3)))
    state["joint_pos"] = state["joint_pos"].astype(np.float32)
    with pytest.raises(ValueError, match=r"state\['joint_pos'\] must be float64, got float32"):
        task.observe(state, task_state)
    with pytest.raises(ValueError, match=r"state\['joint_pos'\] must be float64"):
        task.transition(state, state, np.zeros((1, 12)), task_state, np.array([1]), [None])
    state["joint_pos"] = state["joint_pos"].astype(np.float64)
    state["foot_contact"] = state["foot_contact"].astype(np.float64)
    with pytest.raises(ValueError, match=r"state\['foot_contact'\] must be bool, got float64"):
        task.reward_terms(state, state, np.zeros((1, 12)), task_state)


def test_nested_config_dicts_and_read_only_inputs():
    """A run file's nested dict reaches the nested config, a misspelt nested field is named, the
    task takes a dict itself, and read-only actions and states (broadcast, memory-mapped) step
    like writable ones."""
    env = make_env(task_config={"weights": {"pose": 0.0}, "max_episode_steps": 5})
    assert env.task.config.weights.pose == 0.0 and env.task.config.max_episode_steps == 5
    with pytest.raises(TypeError, match=r"task_config\.weights has unknown fields \['poze'\]"):
        make_env(task_config={"weights": {"poze": 0.0}})
    assert Go1JoystickTask({"command_range": "full"}).config.command_range == "full"

    env.reset(seed=3)
    action = np.full(12, 0.1)
    action.flags.writeable = False
    _, _, _, _, info = env.step(action)
    assert info["reward_terms"]["pose"] == 0.0
    task = env.task
    state = {key: value.copy() for key, value in env.state.items()}
    for value in state.values():
        value.flags.writeable = False
    read_only = task.observe(state, env.task_state)
    np.testing.assert_array_equal(read_only, task.observe(env.state, env.task_state))


def test_numba_caches_in_the_temp_folder_where_nothing_else_is_writable(monkeypatch):
    """A read-only install without a writable home still imports: numba is pointed at the temp
    folder (a user's NUMBA_CACHE_DIR wins, and writable default places are left alone)."""
    import numba

    from sim2online_envs import numba_cache as cache

    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setattr(cache, "_writable", lambda folder: False)
    folder = cache.use_a_writable_numba_cache()
    assert folder is not None and folder == numba.config.CACHE_DIR
    assert folder.startswith(tempfile.gettempdir())

    monkeypatch.setattr(numba.config, "CACHE_DIR", "/somewhere/the/user/chose")
    assert cache.use_a_writable_numba_cache() is None
    assert numba.config.CACHE_DIR == "/somewhere/the/user/chose"

    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setattr(cache, "_writable", lambda folder: True)
    assert cache.use_a_writable_numba_cache() is None and numba.config.CACHE_DIR == ""
