"""The side-by-side image tool (sim2online_envs.compare): a recorded sim episode is its "real"."""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
import pytest

import sim2online_envs  # noqa: F401  (registers the ids, picks MuJoCo's OpenGL platform)
from sim2online_envs.cli import main
from sim2online_envs.compare import (
    PandaPose,
    compare_image,
    compare_panda_camera,
    pose_from_episode,
    qpos_for_tip,
    read_frame,
    sim_frame,
)
from sim2online_envs.controllers.panda import make_controller
from sim2online_envs.robots.panda import HOME_QPOS, TIP_DOWN_ROTATION
from sim2online_envs.vision import policy_image
from sim2online_envs.wrappers.recording import RecordEpisodes, RecordingConfig

POSE_FIELDS = ("arm_qpos", "object_pos", "object_quat")


def record(tmp_path, info_fields: tuple[str, ...], steps: int = 12) -> str:
    """One scripted SimPanda episode of ``steps`` steps (no randomisation), recorded."""
    env = gym.make(
        "SimPanda-v0", domain_randomization=False, task_config={"max_episode_steps": steps}
    )
    env = RecordEpisodes(env, RecordingConfig(tmp_path, info_fields=info_fields))
    policy = make_controller(env)
    obs, _ = env.reset(seed=3)
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(policy(obs))
        done = terminated or truncated
    env.close()
    return info["recording"]


@pytest.fixture(scope="module")
def episode(tmp_path_factory) -> str:
    return record(tmp_path_factory.mktemp("episodes"), POSE_FIELDS)


def test_a_recorded_sim_episode_is_rendered_again_at_its_own_pose(episode, tmp_path) -> None:
    """The sim frame from a recorded step's joint angles, opening and cube pose is that step's
    recorded image: no gap between the simulator and itself."""
    out = tmp_path / "compare.png"
    result = compare_panda_camera(out, episode=episode, step=9)
    assert result["mean_abs_difference"] < 0.5, result
    image = cv2.imread(str(out))
    assert image.shape == (64 * 4 + 18, 3 * 64 * 4 + 2 * 4, 3)
    # the difference panel is black where the frames agree
    assert image[18:, -64 * 4 :].mean() < 2.0


def test_another_pose_shows_a_gap(episode, tmp_path) -> None:
    pose, frame = pose_from_episode(episode, 9)
    _, start = pose_from_episode(episode, 0)  # the reset's image: the arm elsewhere
    sim = sim_frame(pose)
    assert np.abs(sim.astype(int) - frame).mean() < 0.5
    assert np.abs(sim.astype(int) - start).mean() > 1.0
    png = tmp_path / "start.png"
    cv2.imwrite(str(png), start)
    result = compare_panda_camera(tmp_path / "gap.png", real=png, episode=episode, step=9)
    assert result["mean_abs_difference"] > 1.0
    assert result["real_mean"] == pytest.approx(start.mean())


def test_without_recorded_joint_angles_the_tip_is_solved(tmp_path) -> None:
    """An episode recorded without the pose fields: the joint angles come from the observed tip
    (hand down) and the cube from the default place; the arm's image still matches closely."""
    path = record(tmp_path, ("is_success",))
    pose, _ = pose_from_episode(path, 9)
    recorded, _ = pose_from_episode(record(tmp_path / "full", POSE_FIELDS), 9)
    np.testing.assert_allclose(pose.arm_qpos, recorded.arm_qpos, atol=0.05)
    assert pose.object_pos == (0.631, 0.0, 0.025)


def test_qpos_for_tip_points_the_hand_down_at_the_tip() -> None:
    import mujoco

    from sim2online_envs.sim.panda import build_scene

    tip = np.array([0.55, 0.08, 0.12])
    q = qpos_for_tip(tip)
    model = build_scene()
    data = mujoco.MjData(model)
    data.qpos[[model.joint(f"joint{i}").qposadr[0] for i in range(1, 8)]] = q
    mujoco.mj_kinematics(model, data)
    site = model.site("tcp").id
    np.testing.assert_allclose(data.site_xpos[site], tip, atol=1e-5)
    rotation = data.site_xmat[site].reshape(3, 3)
    assert np.arccos((np.trace(TIP_DOWN_ROTATION.T @ rotation) - 1) / 2) < 1e-3


def test_read_frame_takes_the_policy_image_or_a_camera_frame(tmp_path) -> None:
    gray = (np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(read_frame(tmp_path / "gray.png"), gray)
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "colour.png"), bgr)
    expected = policy_image(bgr[:, 16:112, ::-1].copy(), 64)[:, :, 0]  # centre square, RGB
    np.testing.assert_array_equal(read_frame(tmp_path / "colour.png"), expected)
    with pytest.raises(FileNotFoundError):
        read_frame(tmp_path / "missing.png")


def test_compare_image_colours_the_signed_difference() -> None:
    sim = np.full((4, 4), 100, np.uint8)
    real = sim.copy()
    real[0, 0], real[3, 3] = 150, 60
    image = compare_image(sim, real, scale=1)
    diff = image[18:, -4:]
    assert tuple(diff[0, 0]) == (0, 0, 100)  # real brighter: red (BGR)
    assert tuple(diff[3, 3]) == (80, 0, 0)  # sim brighter: blue
    assert not diff[1:3, 1:3].any()
    with pytest.raises(ValueError, match="two gray frames"):
        compare_image(sim, real[:2])


def test_cli_writes_the_comparison(episode, tmp_path) -> None:
    out = tmp_path / "cli.png"
    assert (
        main(["compare", "panda-camera", "--episode", episode, "--step", "5", "--out", str(out)])
        == 0
    )
    assert cv2.imread(str(out)) is not None
    frame = tmp_path / "real.png"
    cv2.imwrite(str(frame), sim_frame(PandaPose(HOME_QPOS)))
    args = ["compare", "panda-camera", "--real", str(frame), "--out", str(out), "--qpos"]
    assert main([*args, *map(str, HOME_QPOS)]) == 0
    with pytest.raises(ValueError, match="pose is missing"):
        compare_panda_camera(out, real=frame)
