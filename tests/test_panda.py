"""SimPanda-v0: model, Cartesian control, task logic, rendering, batching and a scripted pick."""

from __future__ import annotations

import copy
import dataclasses

import cv2
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim2online_envs  # noqa: F401  (registers the ids)
from sim2online_envs.controllers.panda import make_controller, scripted_actions
from sim2online_envs.core import TIME_LIMIT
from sim2online_envs.envs.panda import PandaEnv
from sim2online_envs.sim.panda import (
    HOME_QPOS,
    HOME_TIP_POS,
    OBJECTS,
    PANDA_XML,
    TIP_DOWN_ROTATION,
    PandaSimConfig,
    PandaVectorBackend,
    write_robot_facts,
)
from sim2online_envs.tasks.panda import (
    REWARD_TERM_NAMES,
    PandaPickTask,
    PandaTaskConfig,
    grasped,
)

TASK = PandaTaskConfig()
#: The step at full action (m) and the gripper actions (the study's sign: g < 0 closes).
S = TASK.max_tip_step
OPEN, CLOSE = 1.0, -1.0


def make_env(**kwargs) -> PandaEnv:
    return gym.make("SimPanda-v0", **kwargs).unwrapped


def run_steps(env: PandaEnv, action, steps: int) -> None:
    for _ in range(steps):
        env.step(np.asarray(action, dtype=np.float32))


def tip_angle_from_down(env: PandaEnv) -> float:
    """Angle (rad) between the TCP frame and the straight-down orientation the IK holds."""
    sim = env.sim
    rot = sim.batch.bind("site_xmat")[0, sim.model.site("tcp").id].reshape(3, 3)
    cos = (np.trace(TIP_DOWN_ROTATION.T @ rot) - 1) / 2
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


# -- the model ------------------------------------------------------------------------------------


def test_model_follows_frankas_published_kinematics_limits_and_masses() -> None:
    import mujoco  # after sim2online_envs, which picks the headless OpenGL platform

    # the arm as loaded: panda.xml with the robot module's limits written in (Franka's published
    # numbers are repeated below on purpose, as an independent check of the robot module)
    spec = mujoco.MjSpec.from_file(str(PANDA_XML))
    write_robot_facts(spec)
    model = spec.compile()
    data = mujoco.MjData(model)
    # Franka's "ready" posture: the flange is known to sit at (0.3069, 0, 0.5903) m.
    data.qpos[:7] = [0, -np.pi / 4, 0, -3 * np.pi / 4, 0, np.pi / 2, np.pi / 4]
    mujoco.mj_kinematics(model, data)
    np.testing.assert_allclose(data.body("hand").xpos, [0.30689, 0.0, 0.59028], atol=1e-4)
    np.testing.assert_allclose(data.site("tcp").xpos, [0.30689, 0.0, 0.59028 - 0.1034], atol=1e-4)
    limits = {
        "joint1": (-2.8973, 2.8973),
        "joint2": (-1.7628, 1.7628),
        "joint3": (-2.8973, 2.8973),
        "joint4": (-3.0718, -0.0698),
        "joint5": (-2.8973, 2.8973),
        "joint6": (-0.0175, 3.7525),
        "joint7": (-2.8973, 2.8973),
        "finger_left": (0.0, 0.04),
        "finger_right": (0.0, 0.04),
    }
    for name, bounds in limits.items():
        np.testing.assert_allclose(model.joint(name).range, bounds)
    masses = [4.97, 0.65, 3.23, 3.59, 1.23, 1.67, 0.74, 0.73, 0.015, 0.015]
    bodies = [f"link{i}" for i in range(1, 8)] + ["hand", "left_finger", "right_finger"]
    np.testing.assert_allclose([model.body(b).mass[0] for b in bodies], masses)
    torque = [model.actuator(f"joint{i}").forcerange[1] for i in range(1, 8)]
    assert torque == [87.0] * 4 + [12.0] * 3
    assert model.actuator("gripper").forcerange.tolist() == [-70.0, 70.0]


def test_home_posture_puts_the_tip_at_home_pointing_down() -> None:
    backend = PandaVectorBackend(1, render_pixels=False)
    state = backend.reset_worlds(np.array([0]), [np.random.default_rng(0)])
    np.testing.assert_allclose(state["arm_qpos"][0], HOME_QPOS)
    np.testing.assert_allclose(state["tip_pos"][0], HOME_TIP_POS, atol=1e-4)
    np.testing.assert_allclose(state["gripper_opening"], [0.08])
    rot = backend.batch.bind("site_xmat")[0, backend.model.site("tcp").id].reshape(3, 3)
    np.testing.assert_allclose(rot, TIP_DOWN_ROTATION, atol=1e-4)
    backend.close()


def test_object_variants_and_the_starting_state() -> None:
    assert OBJECTS["cube"].size == 0.05 and OBJECTS["cube"].kind == "box"
    assert OBJECTS["soft_ball"].kind == "sphere"
    assert OBJECTS["soft_ball"].solref[0] > OBJECTS["cube"].solref[0]  # softer contact
    for name in OBJECTS:
        env = make_env(object=name)
        for seed in range(4):
            env.reset(seed=seed)
            pos = env.state["object_pos"][0]
            assert 0.50 <= pos[0] <= 0.65 and -0.10 <= pos[1] <= 0.10
            np.testing.assert_allclose(pos[2], OBJECTS[name].size / 2, atol=1e-6)
            assert set(env.task_state) == {"goal"}  # the documented task state, nothing unused
            goal = env.task_state["goal"][0]
            np.testing.assert_allclose(goal[:2], pos[:2])
            assert 0.10 <= goal[2] <= 0.20
        env.close()


# -- the Gymnasium API ----------------------------------------------------------------------------


@pytest.mark.parametrize("object_name", sorted(OBJECTS))
@pytest.mark.parametrize("randomize", [True, False])
def test_check_env(object_name: str, randomize: bool) -> None:
    env = make_env(object=object_name, domain_randomization=randomize)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs["pixels"].shape == (64, 64, 1) and obs["pixels"].dtype == np.uint8
    assert obs["state"].shape == (4,) and obs["state"].dtype == np.float32
    _, _, _, _, info = env.step(env.action_space.sample())
    assert tuple(info["reward_terms"]) == REWARD_TERM_NAMES
    assert {"is_success", "goal", "goal_distance", "grasped", "object_lost"} <= set(info)
    env.close()


def test_rgb_array_render_is_a_colour_overview() -> None:
    env = gym.make("SimPanda-v0", render_mode="rgb_array")
    check_env(env.unwrapped)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # a scene, not a blank frame
    # The goal is drawn (a translucent green ball): the frame without it differs around it.
    bare = env.unwrapped.sim.render_world(0)
    changed = np.abs(frame.astype(int) - bare).sum(axis=-1) > 30
    assert 20 < changed.sum() < 0.05 * changed.size
    assert (frame[changed, 1].astype(int) - frame[changed, 0]).mean() > 0  # greener there
    env.close()
    quiet = make_env()
    quiet.reset(seed=0)
    assert quiet.render() is None
    quiet.close()


def test_identical_seeds_give_identical_rollouts_including_pixels() -> None:
    envs = [make_env(), make_env()]
    actions = np.random.default_rng(3).uniform(-1, 1, (25, 4)).astype(np.float32)
    rollouts = []
    for env in envs:
        obs, _ = env.reset(seed=7)
        steps = [obs]
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(action)
            steps.append((obs, reward, terminated, truncated, info["reward_terms"]))
            if terminated:
                break
        rollouts.append(steps)
        env.close()
    first, second = rollouts
    assert len(first) == len(second)
    np.testing.assert_array_equal(first[0]["pixels"], second[0]["pixels"])
    for a, b in zip(first[1:], second[1:], strict=True):
        np.testing.assert_array_equal(a[0]["pixels"], b[0]["pixels"])
        np.testing.assert_array_equal(a[0]["state"], b[0]["state"])
        assert a[1:] == b[1:]
    other = make_env()
    obs, _ = other.reset(seed=8)
    assert not np.array_equal(obs["pixels"], first[0]["pixels"])
    other.close()


def test_time_limit_truncates_with_reason() -> None:
    env = PandaEnv(max_episode_steps=3)  # gym.make would take max_episode_steps for itself
    assert env.max_episode_steps == 3 and make_env().max_episode_steps == 250
    env.reset(seed=0)
    results = [env.step(np.zeros(4, np.float32)) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert not any(r[2] for r in results)
    assert results[-1][4]["truncation_reason"] == TIME_LIMIT
    env.close()


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        make_env(backend="real")
    with pytest.raises(ValueError, match="object must be one of"):
        make_env(object="sphere")
    with pytest.raises(ValueError, match=r"control_dt=0\.051 must be a whole multiple"):
        make_env(control_dt=0.051)
    with pytest.raises(TypeError, match="unknown fields"):
        make_env(task_config={"max_tip_stepp": 0.01})
    # The task owns the control period and the image size: sim_config may not contradict it.
    with pytest.raises(ValueError, match="sim_config image_size=84 disagrees with the task's"):
        make_env(sim_config={"image_size": 84})
    with pytest.raises(ValueError, match=r"sim_config control_dt=0\.1 disagrees"):
        PandaEnv.build_vector(2, sim_config=PandaSimConfig(control_dt=0.1))
    with pytest.raises(TypeError, match="domain_randomization must be a bool"):
        PandaVectorBackend(1, domain_randomization="yes")
    with pytest.raises(ValueError, match=r"pixel_supersample must be in \[1, 8\]"):
        PandaSimConfig(pixel_supersample=0)
    with pytest.raises(ValueError, match=r"image_size \* pixel_supersample <= 2048 px"):
        PandaSimConfig(image_size=512, pixel_supersample=8)
    with pytest.raises(TypeError, match="pixel_supersample must be an int"):
        PandaSimConfig(pixel_supersample=1.5)
    with pytest.raises(ValueError, match="pixel_shadow_size must be an int >= 0"):
        PandaSimConfig(pixel_shadow_size=-1)
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action has 3 components"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="action contains NaN or inf"):
        env.step(np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"cube_pos": (0.5, 0.0, 0.025)})
    # Placement options are checked before MuJoCo sees them: a NaN would otherwise make MuJoCo
    # silently put the object back at its default pose.
    with pytest.raises(ValueError, match=r"'object_pos' must be of shape \(3,\) or of shape"):
        env.reset(options={"object_pos": (0.5, 0.0)})
    with pytest.raises(ValueError, match="'object_pos' must be finite"):
        env.reset(options={"object_pos": (np.nan, 0.0, 0.025)})
    with pytest.raises(ValueError, match="'object_yaw' must be a number"):
        env.reset(options={"object_yaw": "left"})
    env.reset(options={"object_pos": (0.52, -0.1, 0.025), "object_yaw": 0.3})
    np.testing.assert_allclose(env.state["object_pos"][0], (0.52, -0.1, 0.025))
    np.testing.assert_allclose(env.state["object_quat"][0], (np.cos(0.15), 0, 0, np.sin(0.15)))
    env.close()


# -- Cartesian control ----------------------------------------------------------------------------


def drive_target_to(env: PandaEnv, point, steps: int, gripper: float = OPEN) -> None:
    """Step the tip target toward ``point`` (at most a full step per axis), then hold it there:
    the compliant arm follows and settles on it."""
    for _ in range(steps):
        error = np.asarray(point) - env.state["tip_target"][0]
        env.step(np.array([*np.clip(error / S, -1, 1), gripper], np.float32))


@pytest.mark.parametrize(
    "action",
    [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -0.5, 0), (0, 0, 1), (0, 0, -1), (0.5, -0.5, 0.5)],
)
def test_tip_moves_by_the_commanded_displacement(action) -> None:
    """The target moves by the action's step exactly; the impedance-controlled tip follows it
    behind (a spring-damper pulled by a filtered target, as the real arm) and settles on it."""
    env = make_env(domain_randomization=False)
    env.reset(seed=0, options={"object_pos": (0.6, 0.28, 0.025)})  # out of the way
    centre = np.array([0.49, 0.0, 0.18])  # middle of the workspace box
    drive_target_to(env, centre, 90)
    start = env.state["tip_pos"][0].copy()
    # settled near the target: the null-space spring toward the home posture leaks into the
    # task through the damped pseudo-inverse and leaves a small static offset, as in franka_ros
    np.testing.assert_allclose(start, centre, atol=0.006)
    command = np.array([*action, OPEN], dtype=np.float32)
    steps = 4
    for _ in range(steps):
        target = env.state["tip_target"][0].copy()
        env.step(command)
        np.testing.assert_allclose(
            env.state["tip_target"][0] - target, S * np.asarray(action), atol=1e-12
        )
    moved = env.state["tip_pos"][0] - start
    commanded = steps * S * np.asarray(action)
    # compliant: on its way after 0.2 s, far from there yet (the target filter and the spring
    # pulling the arm's inertia)
    assert 0.02 < moved @ commanded / (commanded @ commanded) < 0.5
    run_steps(env, [0, 0, 0, OPEN], 20)  # hold: the tip settles on the target
    displacement = env.state["tip_pos"][0] - start
    np.testing.assert_allclose(displacement, commanded, atol=0.002)
    assert tip_angle_from_down(env) < np.deg2rad(2.0)
    env.close()


def test_joint_servo_arm_follows_the_target_almost_at_once() -> None:
    """The other arm controller: one IK step per control period into stiff joint servos."""
    env = make_env(domain_randomization=False, sim_config={"arm_control": "joint_servo"})
    env.reset(seed=0, options={"object_pos": (0.6, 0.28, 0.025)})
    start = env.state["tip_pos"][0].copy()
    run_steps(env, [0, 1, 0, OPEN], 4)
    np.testing.assert_allclose(env.state["tip_pos"][0] - start, [0, 4 * S, 0], atol=0.002)
    assert "tcp_x" not in {env.sim.model.actuator(i).name for i in range(env.sim.model.nu)}
    env.close()


def test_impedance_law_is_the_real_controllers() -> None:
    """The Cartesian actuators' force on the arm is ``J^T (-K e - D J dq)`` (K, D of the robot
    module), their equilibrium follows the target through the real controller's filter, and
    the joint motors add its null-space and Coriolis terms."""
    import mujoco  # here: importing sim2online_envs first has chosen MuJoCo's OpenGL platform

    from sim2online_envs.robots import panda as robot

    backend = PandaVectorBackend(1, domain_randomization=False, render_pixels=False)
    backend.reset_worlds(np.array([0]), [np.random.default_rng(0)])
    target = HOME_TIP_POS + np.array([0.0, 0.03, -0.02])
    backend.apply({"tip_target": target[None], "gripper_closed": np.zeros(1)})
    model, data = backend.model, backend.batch.get_data(0)
    mujoco.mj_forward(model, data)
    tcp = [model.actuator(f"tcp_{axis}").id for axis in "xyz"]
    rot = [model.actuator(f"tcp_r{axis}").id for axis in "xyz"]
    np.testing.assert_allclose(
        model.actuator_gainprm[tcp, 0], robot.IMPEDANCE_TRANSLATIONAL_STIFFNESS
    )
    np.testing.assert_allclose(
        -model.actuator_biasprm[tcp, 2], robot.IMPEDANCE_TRANSLATIONAL_DAMPING, rtol=1e-12
    )
    np.testing.assert_allclose(model.actuator_gainprm[rot, 0], robot.IMPEDANCE_ROTATIONAL_STIFFNESS)
    np.testing.assert_allclose(
        -model.actuator_biasprm[rot, 2], robot.IMPEDANCE_ROTATIONAL_DAMPING, rtol=1e-12
    )
    # the equilibrium: the target through the filter, 50 ms after a step from home
    equilibrium = data.act[model.actuator_actadr[tcp]]
    alpha = 1 - np.exp(-robot.CONTROL_DT / robot.IMPEDANCE_FILTER_TIME_CONSTANT)
    np.testing.assert_allclose(
        equilibrium, HOME_TIP_POS + alpha * (target - HOME_TIP_POS), atol=2e-4
    )
    # one cycle of the real filter, 1 ms: the gain of franka_ros
    one = 1 - np.exp(-robot.IMPEDANCE_CYCLE / robot.IMPEDANCE_FILTER_TIME_CONSTANT)
    assert one == pytest.approx(robot.IMPEDANCE_FILTER_GAIN, rel=1e-12)
    # the force law, from MuJoCo's site Jacobian
    site = model.site("tcp").id
    jacp, jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
    mujoco.mj_jacSite(model, data, jacp, jacr, site)
    arm = [model.joint(f"joint{i}").dofadr[0] for i in range(1, 8)]
    jac = np.vstack([jacp[:, arm], jacr[:, arm]])
    twist = jac @ data.qvel[arm]
    error = data.site_xpos[site] - equilibrium
    force = -robot.IMPEDANCE_TRANSLATIONAL_STIFFNESS * error
    force -= robot.IMPEDANCE_TRANSLATIONAL_DAMPING * twist[:3]
    np.testing.assert_allclose(data.actuator_force[tcp], force, rtol=1e-6, atol=1e-9)
    # on the joints: J^T of the six forces (the rotation's Jacobian in the hand-down frame,
    # to first order in the small orientation error) plus the joint motors' torques
    motors = [model.actuator(f"joint{i}").id for i in range(1, 8)]
    jac_rot = TIP_DOWN_ROTATION.T @ jacr[:, arm]
    expected = jacp[:, arm].T @ data.actuator_force[tcp] + jac_rot.T @ data.actuator_force[rot]
    expected += data.actuator_force[motors]
    np.testing.assert_allclose(data.qfrc_actuator[arm], expected, atol=2e-3)
    # the joint motors: null space and Coriolis, within the torque limits
    np.testing.assert_allclose(model.actuator_ctrlrange[motors, 1], robot.ARM_TORQUE_LIMITS)
    np.testing.assert_allclose(model.jnt_actfrcrange[arm, 1], robot.ARM_TORQUE_LIMITS)
    torques = backend.joint_torques()[0]
    assert np.all(np.abs(torques) < 1.0)
    backend.close()


def test_tip_target_is_clamped_to_the_workspace_and_does_not_wind_up() -> None:
    env = make_env(domain_randomization=False)
    env.reset(seed=0, options={"object_pos": (0.7, 0.25, 0.025)})  # out of the way
    run_steps(env, [0, 0, -1, OPEN], 45)  # down onto the table and beyond
    tip, target = env.state["tip_pos"][0], env.state["tip_target"][0]
    assert target[2] == pytest.approx(TASK.workspace_low[2])
    assert tip[2] > 0.010  # the fingertips stay above the table top
    run_steps(env, [1, 1, 1, OPEN], 90)  # far out to a corner of the box
    tip, target = env.state["tip_pos"][0], env.state["tip_target"][0]
    np.testing.assert_allclose(target, TASK.workspace_high)
    assert np.all(np.abs(target - tip) <= TASK.max_target_lead + 1e-9)
    run_steps(env, [0, 0, 0, OPEN], 20)
    tip = env.state["tip_pos"][0]
    # reachable: the box's far top corner (the compliant arm settles a little short of it, the
    # null-space spring pulling toward the home posture)
    np.testing.assert_allclose(tip, target, atol=0.015)
    env.close()


def test_longer_control_period_keeps_the_step_size() -> None:
    env = make_env(control_dt=0.1, domain_randomization=False)
    assert env.sim.n_substeps == 50 and env.control_dt == 0.1
    env.reset(seed=0)
    start = env.state["tip_pos"][0].copy()
    run_steps(env, [0, 1, 0, OPEN], 3)
    run_steps(env, [0, 0, 0, OPEN], 10)
    np.testing.assert_allclose(env.state["tip_pos"][0] - start, [0, 3 * S, 0], atol=0.002)
    env.close()


def test_gripper_moves_at_its_speed_and_closes_fully_on_nothing() -> None:
    env = make_env(domain_randomization=False)
    env.reset(seed=0)
    env.step(np.array([0, 0, 0, CLOSE], np.float32))
    # 0.1 m/s opening rate (the hand's 0.05 m/s per finger) for 50 ms, less a little for the
    # start.
    assert 0.074 < env.state["gripper_opening"][0] < 0.0775
    run_steps(env, [0, 0, 0, CLOSE], 18)
    assert env.state["gripper_opening"][0] < 0.002
    assert env.state["gripper_holding"][0] == 0.0  # closed on nothing holds nothing
    run_steps(env, [0, 0, 0, OPEN], 18)
    assert env.state["gripper_opening"][0] > 0.078
    env.close()


def grasp_in_place(object_name: str) -> PandaEnv:
    """An env whose gripper has closed on the object at the tip's start, below home."""
    env = make_env(object=object_name, domain_randomization=False)
    size = OBJECTS[object_name].size
    env.reset(seed=0, options={"object_pos": (0.62, 0.0, size / 2), "object_yaw": 0.0})
    drive_target_to(env, (0.62, 0.0, size / 2), 60)
    run_steps(env, [0, 0, 0, CLOSE], 10)
    return env


def test_grasp_squeezes_the_cube_and_gives_in_the_soft_ball() -> None:
    cube = grasp_in_place("cube")
    assert cube.state["gripper_holding"][0] == 1.0
    assert 0.048 < cube.state["gripper_opening"][0] < 0.051  # rigid: the cube's 5 cm
    cube.close()
    ball = grasp_in_place("soft_ball")
    assert ball.state["gripper_holding"][0] == 1.0
    squeeze = OBJECTS["soft_ball"].size - ball.state["gripper_opening"][0]
    assert squeeze > 0.004  # compliant: the 70 N grasp sinks several millimetres into it
    ball.close()


# -- task logic on constructed states -------------------------------------------------------------


def constructed(
    tip, obj, holding=0.0, closed=None, opening=0.08, size=0.05
) -> dict[str, np.ndarray]:
    closed = holding if closed is None else closed
    return {
        "tip_pos": np.array([tip], float),
        "tip_target": np.array([tip], float),
        "object_pos": np.array([obj], float),
        "object_size": np.array([size]),
        "gripper_opening": np.array([opening]),
        "gripper_closed": np.array([closed]),
        "gripper_holding": np.array([holding]),
        "pixels": np.zeros((1, 64, 64, 1), np.uint8),
    }


def test_reward_terms_match_hand_computed_values() -> None:
    task = PandaPickTask()
    task_state = {"goal": np.array([[0.5, 0.0, 0.15]])}
    action = np.zeros((1, 4))

    # Approach: the tip drops 10 cm toward the resting cube: 10 * 0.1 m.
    prev = constructed(tip=(0.5, 0.0, 0.2), obj=(0.5, 0.0, 0.025))
    state = constructed(tip=(0.5, 0.0, 0.1), obj=(0.5, 0.0, 0.025))
    terms = task.reward_terms(prev, state, action, task_state)
    expected = {"approach": 1.0, "grasp": 0.0, "lift": 0.0, "carry": 0.0, "success": 0.0}
    assert {k: pytest.approx(v) for k, v in expected.items()} == {k: v[0] for k, v in terms.items()}

    # Grasp forms (holding, cube at the tip) and is lost again.
    prev = constructed(tip=(0.5, 0.0, 0.025), obj=(0.5, 0.0, 0.025), closed=1.0)
    state = constructed(tip=(0.5, 0.0, 0.025), obj=(0.5, 0.0, 0.025), holding=1.0, opening=0.05)
    assert task.reward_terms(prev, state, action, task_state)["grasp"][0] == 1.0
    assert task.reward_terms(state, prev, action, task_state)["grasp"][0] == -1.0

    # Lift and carry: held cube raised 10 cm, to 2.5 cm from the goal -> success.
    prev = constructed(tip=(0.5, 0, 0.025), obj=(0.5, 0, 0.025), holding=1.0, opening=0.05)
    state = constructed(tip=(0.5, 0, 0.125), obj=(0.5, 0, 0.125), holding=1.0, opening=0.05)
    terms = task.reward_terms(prev, state, action, task_state)
    assert terms["lift"][0] == pytest.approx(10 * 0.1)
    assert terms["carry"][0] == pytest.approx(10 * (0.125 - 0.025))
    assert terms["success"][0] == 10.0 and terms["approach"][0] == 0.0
    assert task.success(state, task_state)[0] and task.terminated(state, task_state)[0]

    # Lift counts only up to the goal's height: 20 cm up counts as 12.5 cm; carry pays less.
    high = constructed(tip=(0.5, 0, 0.225), obj=(0.5, 0, 0.225), holding=1.0, opening=0.05)
    terms = task.reward_terms(prev, high, action, task_state)
    assert terms["lift"][0] == pytest.approx(10 * 0.125)
    assert terms["carry"][0] == pytest.approx(10 * (0.125 - 0.075))
    assert terms["success"][0] == 0.0

    # Weights come from the config.
    light = PandaPickTask(dataclasses.replace(TASK, lift_weight=1.0, success_weight=2.5))
    terms = light.reward_terms(prev, state, action, task_state)
    assert terms["lift"][0] == pytest.approx(0.1) and terms["success"][0] == 2.5


def test_grasped_needs_the_squeezing_gripper_and_the_object_at_the_tip() -> None:
    holding_far = constructed(tip=(0.5, 0, 0.1), obj=(0.5, 0, 0.025), holding=1.0)
    open_at_cube = constructed(tip=(0.5, 0, 0.025), obj=(0.5, 0, 0.025))
    held = constructed(tip=(0.5, 0, 0.03), obj=(0.5, 0.01, 0.025), holding=1.0)
    assert grasped(holding_far, TASK).tolist() == [False]
    assert grasped(open_at_cube, TASK).tolist() == [False]
    assert grasped(held, TASK).tolist() == [True]


def test_termination_when_the_object_leaves_the_workspace() -> None:
    task = PandaPickTask()
    task_state = {"goal": np.array([[0.5, 0.0, 0.15]])}
    for obj in [(0.9, 0.0, 0.025), (0.5, -0.5, 0.025), (0.5, 0.0, -0.1), (0.1, 0.0, 0.025)]:
        state = constructed(tip=(0.5, 0, 0.2), obj=obj)
        assert task.terminated(state, task_state)[0] and not task.success(state, task_state)[0]
    assert not task.terminated(constructed(tip=(0.5, 0, 0.2), obj=(0.5, 0, 0.025)), task_state)[0]

    env = make_env(domain_randomization=False)
    env.reset(seed=0)
    env.sim.set_object_pose(0, (0.9, 0.0, 0.025))  # pushed off the reachable table region
    _, _, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert terminated and not truncated
    assert info["object_lost"] and not info["is_success"]
    env.close()


def test_command_scales_clips_and_maps_the_gripper() -> None:
    task = PandaPickTask()
    state = constructed(tip=(0.5, 0.0, 0.2), obj=(0.5, 0, 0.025))
    command = task.command(np.array([[0.5, -3.0, 0.0, -0.2]]), state, {})
    np.testing.assert_allclose(command["tip_target"], [[0.5 + 0.5 * S, -S, 0.2]])
    assert command["gripper_closed"].tolist() == [1.0]  # g < 0 closes (the study's sign)
    command = task.command(np.array([[0.0, 0.0, 0.0, 0.0]]), state, {})
    assert command["gripper_closed"].tolist() == [0.0]  # g >= 0 opens
    with pytest.raises(ValueError, match=r"action must have shape \(1, 4\)"):
        task.command(np.zeros((1, 5)), state, {})


# -- images and domain randomisation -------------------------------------------------------------


def test_image_scales_with_the_brightness_factor() -> None:
    frames = {}
    for scale in (0.5, 1.0):
        config = PandaSimConfig(brightness_range=(scale, scale))
        backend = PandaVectorBackend(1, config=config)
        state = backend.reset_worlds(np.array([0]), [np.random.default_rng(5)])
        frames[scale] = state["pixels"][0].astype(int)
        backend.close()
    assert frames[1.0].mean() > 40
    np.testing.assert_allclose(frames[0.5], frames[1.0] * 0.5, atol=1.0)


def _reference_frames(backend: PandaVectorBackend, worlds: int) -> list[np.ndarray]:
    """benchmarks/images.py's reference: each world rendered at 256x256 with 4x MSAA, a 4096 px
    shadow map and MuJoCo's fine tessellation, grayscale, area-averaged to 64x64."""
    import mujoco  # here: importing sim2online_envs first has chosen MuJoCo's OpenGL platform

    model = copy.deepcopy(backend.model)
    quality = model.vis.quality
    quality.offsamples, quality.shadowsize = 4, 4096
    quality.numslices, quality.numstacks = 28, 16
    model.vis.global_.offwidth = model.vis.global_.offheight = 256
    camera = model.camera("d455").id
    frames = []
    with mujoco.Renderer(model, 256, 256) as renderer:
        for world in range(worlds):
            data = backend.batch.get_data(world)
            mujoco.mj_kinematics(model, data)
            mujoco.mj_camlight(model, data)
            renderer.update_scene(data, camera=camera)
            gray = cv2.cvtColor(renderer.render(), cv2.COLOR_RGB2GRAY)
            frames.append(cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA).astype(int))
    return frames


def test_camera_image_is_within_a_gray_level_of_a_high_quality_render() -> None:
    """The observation (rendered at 128 px without MSAA, area-averaged to 64 px, 128 px shadow
    map) stays within about two gray levels of a high-quality render of the same scene, and so
    does the old way (64 px, 4x MSAA, 256 px shadow map, no supersampling). The same image
    without shadows is further off: under the study's light, in front of the robot, the arm and
    the cube cast their shadows mostly behind themselves, but about a hundred pixels per frame
    still darken by more than 10 gray levels."""
    seeds = range(3)
    errors, frames = {}, {}
    for name, config in {
        "default": PandaSimConfig(),
        "64 px, 4x MSAA": PandaSimConfig(
            pixel_supersample=1, pixel_samples=4, pixel_shadow_size=256
        ),
        "no shadows": PandaSimConfig(pixel_shadow_size=0),
    }.items():
        backend = PandaVectorBackend(len(seeds), domain_randomization=False, config=config)
        state = backend.reset_worlds(
            np.arange(len(seeds)), [np.random.default_rng(seed) for seed in seeds]
        )
        assert state["pixels"].shape == (len(seeds), 64, 64, 1)
        frames[name] = state["pixels"][:, :, :, 0].astype(int)
        reference = _reference_frames(backend, len(seeds))
        errors[name] = np.mean([np.abs(frames[name][i] - reference[i]).mean() for i in seeds])
        backend.close()
    assert errors["default"] < 2.0, errors
    assert errors["64 px, 4x MSAA"] < 2.0, errors
    assert errors["no shadows"] > errors["default"], errors
    shadowed = (frames["no shadows"] - frames["default"]) > 10
    assert shadowed.sum() > 50 * len(seeds), shadowed.sum()


def test_domain_randomization_changes_the_image_and_can_be_switched_off() -> None:
    place = {"object_pos": (0.5, 0.0, 0.025), "object_yaw": 0.0}
    images = {}
    for randomize in (True, False):
        env = make_env(domain_randomization=randomize)
        images[randomize] = [env.reset(seed=seed, options=place)[0]["pixels"] for seed in (1, 2)]
        env.close()
    np.testing.assert_array_equal(images[False][0], images[False][1])
    assert np.abs(images[True][0].astype(int) - images[True][1]).mean() > 3
    # Each episode redraws the randomisation in the same env.
    env = make_env()
    env.reset(seed=1)
    first = env.sim.brightness
    env.reset()
    assert env.sim.brightness != first
    env.close()


def test_the_episode_does_not_depend_on_domain_randomization() -> None:
    """A seed places the object and the goal alike with and without randomisation (the
    randomisation is drawn either way), so a policy can be compared on the same episodes."""
    positions, goals = [], []
    for randomize in (True, False):
        env = make_env(domain_randomization=randomize)
        for seed in (11, 12):
            env.reset(seed=seed)
            positions.append(env.state["object_pos"].copy())
            goals.append(env.task_state["goal"].copy())
        env.close()
    np.testing.assert_array_equal(positions[:2], positions[2:])
    np.testing.assert_array_equal(goals[:2], goals[2:])


# -- batching -------------------------------------------------------------------------------------


def test_two_world_backend_equals_two_single_worlds() -> None:
    task = PandaPickTask()
    pair = PandaVectorBackend(2)
    singles = [PandaVectorBackend(1), PandaVectorBackend(1)]
    seeds = (21, 22)
    pair_state = pair.reset_worlds(np.array([0, 1]), [np.random.default_rng(s) for s in seeds])
    single_states = [
        b.reset_worlds(np.array([0]), [np.random.default_rng(s)])
        for b, s in zip(singles, seeds, strict=True)
    ]
    actions = np.random.default_rng(0).uniform(-1, 1, (12, 2, 4))
    for step in range(actions.shape[0]):
        for i in range(2):
            for key, value in pair_state.items():
                np.testing.assert_array_equal(value[i], single_states[i][key][0], err_msg=key)
        pair_state = pair.apply(task.command(actions[step], pair_state, {}))
        single_states = [
            b.apply(task.command(actions[step, i : i + 1], s, {}))
            for i, (b, s) in enumerate(zip(singles, single_states, strict=True))
        ]
    # Resetting one world leaves the other alone and redraws only its own randomisation.
    before = pair_state["pixels"][0].copy()
    pair_state = pair.reset_worlds(np.array([1]), [np.random.default_rng(99)])
    np.testing.assert_array_equal(pair_state["pixels"][0], before)
    for backend in (pair, *singles):
        backend.close()


def test_a_diverged_world_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    """MuJoCo resets a world whose state blew up to the default pose; the backend says so."""
    backend = PandaVectorBackend(2, render_pixels=False)
    state = backend.reset_worlds(np.arange(2), [np.random.default_rng(i) for i in range(2)])
    hold = {"tip_target": state["tip_pos"], "gripper_closed": np.zeros(2)}
    with caplog.at_level("WARNING", logger="sim2online_envs.sim.panda"):
        backend.apply(hold)
        assert not caplog.records
        backend.batch.bind("qvel")[1, 0] = 1e12  # beyond MuJoCo's limit: world 1 diverges
        state = backend.apply(hold)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and "Panda worlds [1]" in messages[0], messages
    np.testing.assert_allclose(state["arm_qpos"][0], HOME_QPOS, atol=1e-3)
    assert np.abs(state["arm_qpos"][1] - HOME_QPOS).max() > 1.0  # world 1 was reset by MuJoCo
    backend.close()


# -- the scripted privileged controller -----------------------------------------------------------


def scripted_success_rate(object_name: str, seeds: range) -> float:
    env = gym.make("SimPanda-v0", object=object_name)
    policy = make_controller(env)
    successes = 0
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        episode_return, terminated, truncated = 0.0, False, False
        while not (terminated or truncated):
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            episode_return += reward
            assert reward == pytest.approx(sum(info["reward_terms"].values()))
        successes += bool(info["is_success"])
        if info["is_success"]:
            assert terminated and episode_return > 10.0
    env.close()
    return successes / len(seeds)


@pytest.mark.parametrize("object_name", sorted(OBJECTS))
def test_scripted_controller_picks_the_object_in_20_seeded_episodes(object_name: str) -> None:
    assert scripted_success_rate(object_name, range(20)) >= 0.9


def test_scripted_actions_are_batched_and_phase_by_geometry() -> None:
    tip = np.array([[0.45, 0.0, 0.30], [0.50, 0.0, 0.025], [0.50, 0.0, 0.025]])
    obj = np.array([[0.50, 0.1, 0.025], [0.50, 0.0, 0.025], [0.50, 0.0, 0.025]])
    goal = np.array([[0.50, 0.1, 0.15], [0.50, 0.0, 0.15], [0.50, 0.0, 0.15]])
    actions = scripted_actions(tip, np.array([0.0, 0.0, 1.0]), obj, goal)
    assert actions.shape == (3, 4) and actions.dtype == np.float32
    np.testing.assert_allclose(actions[0], [1, 1, -1, OPEN])  # toward above the cube, open
    np.testing.assert_allclose(actions[1], [0, 0, 0, CLOSE])  # at the cube: close in place
    np.testing.assert_allclose(actions[2], [0, 0, 1, CLOSE])  # holding: carry up to the goal


@pytest.mark.slow
@pytest.mark.parametrize("object_name", sorted(OBJECTS))
def test_scripted_controller_over_100_seeded_episodes(object_name: str) -> None:
    assert scripted_success_rate(object_name, range(100, 200)) >= 0.95


# -- one image pipeline, one scene spec, the calibration's camera, one IK step ------------------


def test_render_pixels_is_the_policy_image_of_the_rendered_frame() -> None:
    from sim2online_envs.vision import policy_image

    sim = PandaVectorBackend(1, domain_randomization=True)
    try:
        sim.reset_worlds(np.array([0]), [np.random.default_rng(4)])
        pixels = sim.render_pixels(0)
        sim._load_render_world(0)
        sim._pixel_renderer.update_scene(sim._render_data, camera=sim._camera)
        rgb = sim._pixel_renderer.render().copy()
        expected = policy_image(rgb, sim.config.image_size, brightness=sim.brightness[0])
        np.testing.assert_array_equal(pixels, expected)
        assert sim.brightness[0] != 1.0
    finally:
        sim.close()


def test_scene_spec_is_what_build_scene_compiles() -> None:
    from sim2online_envs.sim.panda import build_scene, scene_spec

    spec = scene_spec("cube")
    model, built = spec.compile(), build_scene("cube")
    assert (model.nq, model.ngeom, model.ncam) == (built.nq, built.ngeom, built.ncam)
    np.testing.assert_array_equal(model.cam_pos, built.cam_pos)
    np.testing.assert_array_equal(model.geom_size, built.geom_size)


def test_camera_calibration_file_places_the_sim_camera(tmp_path) -> None:
    from sim2online_envs.sim.panda import build_scene
    from sim2online_envs.vision import (
        Calibration,
        CameraIntrinsics,
        base_from_mujoco_camera,
        center_square_crop,
        mujoco_camera,
        quat_to_matrix,
        save_calibration,
    )

    rotation = quat_to_matrix(np.array([0.3, -0.2, 0.6, 0.7]))
    pose = base_from_mujoco_camera([0.9, -0.1, 0.4], rotation)
    intrinsics = CameraIntrinsics.from_fovy(1280, 720, 58.0)
    calibration = Calibration(intrinsics, pose, center_square_crop(1280, 720))
    path = save_calibration(calibration, tmp_path / "calibration.json")
    model = build_scene("cube", PandaSimConfig(camera_calibration=str(path)))
    camera = model.camera("d455")
    pos, quat, fovy = mujoco_camera(calibration)
    assert fovy == pytest.approx(58.0)
    np.testing.assert_allclose(camera.pos, pos, atol=1e-12)
    np.testing.assert_allclose(camera.quat, quat, atol=1e-9)
    assert camera.fovy[0] == pytest.approx(58.0)
    with pytest.raises(FileNotFoundError, match="calibrate panda-camera"):
        build_scene("cube", PandaSimConfig(camera_calibration=str(tmp_path / "none.json")))


def test_the_ik_step_is_one_function_batched_over_worlds() -> None:
    from sim2online_envs.kinematics import dls_step

    rng = np.random.default_rng(0)
    q = HOME_QPOS + rng.normal(0, 0.1, (3, 7))
    jac = rng.normal(0, 0.3, (3, 6, 7))
    tip = rng.normal(0.4, 0.1, (3, 3))
    rot = np.stack([cv2.Rodrigues(rng.normal(0, 0.2, 3))[0] @ TIP_DOWN_ROTATION for _ in q])
    target = tip + rng.normal(0, 0.05, (3, 3))
    args = (TIP_DOWN_ROTATION, HOME_QPOS)
    kwargs = {"damping": 0.02, "max_error": 0.08, "nullspace_gain": 0.3}
    batched = dls_step(q, tip, rot, jac, target, *args, **kwargs)
    for i in range(3):
        single = dls_step(
            q[i : i + 1],
            tip[i : i + 1],
            rot[i : i + 1],
            jac[i : i + 1],
            target[i : i + 1],
            *args,
            **kwargs,
        )
        np.testing.assert_allclose(batched[i], single[0], rtol=0, atol=1e-12)
    sim = PandaVectorBackend(1, domain_randomization=False, render_pixels=False)
    try:
        sim.reset_worlds(np.array([0]), [np.random.default_rng(0)])
        goal = HOME_TIP_POS[None] + [[0.03, -0.02, -0.05]]
        stepped = sim.joint_targets(goal)
        assert np.linalg.norm(stepped - HOME_QPOS) > 1e-3
    finally:
        sim.close()
