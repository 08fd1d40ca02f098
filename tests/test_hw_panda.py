"""Panda hardware without the twin: settings, image preprocessing, markers, calibration, camera
driver on a pyrealsense2 software device, panda-py at its Python interface, the gripper worker."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from sim2online_envs.hardware.base import StaleReadingError
from sim2online_envs.hardware.panda.arm import (
    GripperWorker,
    WrongArmError,
    classify_arm_error,
    collision_thresholds,
    explain_connect_error,
    panda_py_impedance,
)
from sim2online_envs.hardware.panda.calibration import (
    CalibrationSample,
    base_from_mujoco_camera,
    calibrate,
    load_calibration,
    mujoco_camera,
    save_calibration,
)
from sim2online_envs.hardware.panda.config import PandaHardwareConfig, resolve_config
from sim2online_envs.hardware.panda.markers import (
    FACES,
    CameraIntrinsics,
    _marker_corners,
    marker_dictionary,
    marker_in_cube,
    marker_sheet,
    quat_to_matrix,
)
from sim2online_envs.vision import center_square_crop, policy_image


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in list(__import__("os").environ):
        if key.startswith("SIM2ONLINE_PANDA_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SIM2ONLINE_CONFIG", str(tmp_path / "hardware.toml"))
    return tmp_path


def test_settings_resolve_kwargs_over_env_over_toml_over_defaults(clean_env, monkeypatch):
    (clean_env / "hardware.toml").write_text(
        '[panda]\nrobot_ip = "10.0.0.5"\ncamera_fps = 15\ndriver = "panda_py"\n'
    )
    monkeypatch.setenv("SIM2ONLINE_PANDA_CAMERA_FPS", "6")
    config = resolve_config(driver="franky")
    assert config.robot_ip == "10.0.0.5"  # TOML
    assert config.camera_fps == 6  # environment over TOML
    assert config.driver == "franky"  # keyword over TOML
    assert config.camera_serial == PandaHardwareConfig().camera_serial  # default


def test_settings_unknown_keys_list_the_known_ones(clean_env, monkeypatch):
    with pytest.raises(TypeError, match=r"known settings.*robot_ip"):
        resolve_config(robot_ipp="1.2.3.4")
    (clean_env / "hardware.toml").write_text("[panda]\nspeed = 3\n")
    with pytest.raises(ValueError, match="speed"):
        resolve_config()
    (clean_env / "hardware.toml").unlink()
    monkeypatch.setenv("SIM2ONLINE_PANDA_COLOUR", "red")
    with pytest.raises(ValueError, match="COLOUR"):
        resolve_config()
    with pytest.raises(ValueError, match="driver"):
        PandaHardwareConfig(driver="libfranka")


def test_policy_image_is_the_simulator_pipeline():
    """The function the real camera uses gives what the simulator's inline steps give."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gray = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA)
    expected = cv2.convertScaleAbs(gray, alpha=0.8)[:, :, None]
    np.testing.assert_array_equal(policy_image(rgb, 64, brightness=0.8), expected)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    crop = center_square_crop(1280, 720)
    assert crop == (280, 0, 720, 720)
    out = policy_image(frame, 64, crop)
    assert out.shape == (64, 64, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, policy_image(frame[:, 280:1000].copy(), 64))
    with pytest.raises(ValueError, match="outside"):
        policy_image(frame, 64, (1000, 0, 720, 720))


def test_marker_layout_is_right_handed_and_the_sheet_shows_every_id():
    for marker_id in FACES:
        transform = marker_in_cube(marker_id, 0.05)
        rotation = transform[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        np.testing.assert_allclose(transform[:3, 3], 0.025 * rotation[:, 2])
    sheet = marker_sheet("DICT_4X4_50", 0.05, 0.04, dpi=150)
    detector = cv2.aruco.ArucoDetector(marker_dictionary("DICT_4X4_50"))
    _, ids, _ = detector.detectMarkers(sheet)
    assert sorted(ids.ravel().tolist()) == sorted(FACES)


def _look_at(pos, target):
    """OpenCV camera frame (z forward, y down) at ``pos`` looking at ``target``, world z up."""
    forward = np.asarray(target, float) - pos
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    transform = np.eye(4)
    transform[:3, :3] = np.column_stack([right, down, forward])
    transform[:3, 3] = pos
    return transform


def _synthetic_samples(base_from_camera, intrinsics, tcp_from_marker, rng, count=8, noise=0.2):
    camera_from_base = np.linalg.inv(base_from_camera)
    corners = _marker_corners(0.04)
    samples = []
    for _ in range(count):
        rotvec = rng.uniform(-0.4, 0.4, 3) + np.array([np.pi, 0, 0])
        base_from_tcp = np.eye(4)
        base_from_tcp[:3, :3] = cv2.Rodrigues(rotvec)[0]
        base_from_tcp[:3, 3] = rng.uniform((0.35, -0.2, 0.15), (0.6, 0.2, 0.4))
        cam_from_marker = camera_from_base @ base_from_tcp @ tcp_from_marker
        rvec = cv2.Rodrigues(cam_from_marker[:3, :3])[0]
        image, _ = cv2.projectPoints(
            corners, rvec, cam_from_marker[:3, 3], intrinsics.matrix, np.zeros(5)
        )
        image = image.reshape(4, 2) + rng.normal(0, noise, (4, 2))
        samples.append(CalibrationSample(base_from_tcp, image))
    return samples


#: (m, deg) with 0.1 px corner noise, 20 poses.
TOLERANCE = {"pnp": (0.003, 0.3), "handeye": (0.03, 2.0)}


@pytest.mark.parametrize("method", ["pnp", "handeye"])
def test_calibration_recovers_the_camera_pose(method, tmp_path):
    rng = np.random.default_rng(1)
    intrinsics = CameraIntrinsics.from_fovy(1280, 720, 65.0)
    truth = _look_at(np.array([1.05, 0.15, 0.38]), [0.48, 0.0, 0.14])
    # The marker faces the camera from the hand: 5 cm below the TCP, its normal along -x.
    tcp_from_marker = np.eye(4)
    tcp_from_marker[:3, :3] = cv2.Rodrigues(np.array([0.0, np.pi / 2, 0.0]))[0]
    tcp_from_marker[:3, 3] = (0.0, 0.0, 0.03)
    # Without noise both methods are exact; with 0.1 px of corner noise the PnP fit over all
    # corners stays within millimetres, hand-eye (one small marker's pose per sample) within
    # centimetres: use "pnp" when the marker's place on the hand is known.
    for noise, tolerance in ((0.0, (1e-6, 1e-4)), (0.1, TOLERANCE[method])):
        samples = _synthetic_samples(truth, intrinsics, tcp_from_marker, rng, 20, noise)
        result = calibrate(samples, intrinsics, 0.04, tcp_from_marker, method=method)
        position_error = np.linalg.norm(result.base_from_camera[:3, 3] - truth[:3, 3])
        relative = result.base_from_camera[:3, :3].T @ truth[:3, :3]
        angle = np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1, 1)))
        assert position_error < tolerance[0] and angle < tolerance[1], (
            noise,
            position_error,
            angle,
        )
    path = save_calibration(result, tmp_path / "cal.json")
    loaded = load_calibration(path)
    np.testing.assert_allclose(loaded.base_from_camera, result.base_from_camera)
    assert loaded.crop == center_square_crop(1280, 720)
    pos, quat, fovy = mujoco_camera(loaded)
    assert fovy == pytest.approx(65.0)
    np.testing.assert_allclose(
        base_from_mujoco_camera(pos, quat_to_matrix(quat)), loaded.base_from_camera, atol=1e-9
    )


def test_calibration_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="calibrate panda-camera"):
        load_calibration(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"version": 1, "intrinsics": {}}')
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_calibration(tmp_path / "bad.json")


def _software_camera(fps=30, width=320, height=240):
    rs = pytest.importorskip("pyrealsense2")
    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, "SW-1")
    sensor = device.add_sensor("RGB Camera")
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy = width, height, 200.0, 200.0
    intr.ppx, intr.ppy, intr.model, intr.coeffs = width / 2, height / 2, rs.distortion.none, [0] * 5
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
    stream.width, stream.height, stream.fps, stream.bpp = width, height, fps, 3
    stream.fmt, stream.intrinsics = rs.format.rgb8, intr
    profile = sensor.add_video_stream(stream).as_video_stream_profile()
    return rs, device, sensor, profile


def test_camera_driver_runs_on_a_software_device():
    from sim2online_envs.hardware.panda.camera import RealSenseCamera

    rs, device, sensor, profile = _software_camera()
    keep = []
    stop = threading.Event()

    def feed():
        number = 0
        while not stop.wait(0.02):
            image = np.full((240, 320, 3), number % 256, np.uint8)
            keep.append(image)
            frame = rs.software_video_frame()
            frame.pixels, frame.bpp, frame.stride = image, 3, 320 * 3
            frame.timestamp, frame.domain = time.time() * 1000, rs.timestamp_domain.system_time
            frame.frame_number, frame.profile = number, profile
            sensor.on_video_frame(frame)
            number += 1

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    camera = RealSenseCamera("SW-1", 320, 240, 30, device=device)
    try:
        camera.connect(timeout=5.0)
        assert camera.intrinsics.fx == pytest.approx(200.0)
        time.sleep(0.2)
        frame = camera.latest(max_age=0.5)
        assert frame.rgb.shape == (240, 320, 3)
        assert frame.rgb[0, 0, 0] == frame.number % 256
        assert 0 <= time.monotonic() - frame.stamp < 0.5
        stop.set()
        feeder.join()
        time.sleep(0.3)
        with pytest.raises(StaleReadingError, match="old"):
            camera.latest(max_age=0.2)
    finally:
        stop.set()
        camera.close()


def test_camera_without_the_profile_names_what_it_offers():
    from sim2online_envs.hardware.base import HardwareError
    from sim2online_envs.hardware.panda.camera import RealSenseCamera

    _, device, _, _ = _software_camera()
    with pytest.raises(HardwareError, match=r"offers \['320x240@30"):
        RealSenseCamera("SW-1", 1280, 720, 30, device=device).connect(timeout=1.0)


def test_wrong_arm_errors_say_which_driver_to_use():
    error = explain_connect_error(
        "panda_py", "172.16.0.2", RuntimeError("libfranka: incorrect object size")
    )
    assert isinstance(error, WrongArmError)
    assert "driver='franky'" in str(error) and "Franka Research 3" in str(error)
    error = explain_connect_error(
        "franky", "172.16.0.2", RuntimeError("libfranka: Incompatible library version")
    )
    assert "driver='panda_py'" in str(error) and "FER" in str(error)
    other = explain_connect_error("franky", "1.2.3.4", RuntimeError("Connection timeout"))
    assert not isinstance(other, WrongArmError) and "1.2.3.4" in str(other)


def test_libfranka_error_texts_become_fault_names():
    assert (
        classify_arm_error('Move command aborted: motion aborted by reflex! ["cartesian_reflex"]')
        == "reflex"
    )
    assert classify_arm_error("communication_constraints_violation") == "communication_constraints"
    assert classify_arm_error("libfranka: UDP receive: Timeout") == "arm_connection_lost"
    assert classify_arm_error("something else") == "arm_error"


def test_panda_py_arguments():
    """panda-py cannot reach the twin (libfranka 0.9.2 vs franky-sim's FR3 protocol): what its
    driver hands the library is checked here, against the library's own types."""
    controllers = pytest.importorskip("panda_py.controllers")
    impedance = panda_py_impedance(3000.0, 150.0)
    np.testing.assert_array_equal(np.diag(impedance), [3000.0] * 3 + [150.0] * 3)
    controllers.CartesianImpedance(impedance=impedance)  # the shape and dtype panda-py takes
    lower_t, upper_t, lower_f, upper_f = collision_thresholds(
        PandaHardwareConfig(collision_torque=25.0)
    )
    assert len(lower_t) == len(upper_t) == 7 and len(lower_f) == len(upper_f) == 6
    assert lower_t[0] == 25.0


def test_gripper_worker_keeps_errors_and_treats_a_miss_as_no_error():
    calls = []
    outcome = {"grasp": False}

    def grasp():
        calls.append("grasp")
        if outcome["grasp"] == "raise":
            raise RuntimeError("libfranka gripper: Command failed!")
        return outcome["grasp"]

    def open_():
        calls.append("open")
        return True

    worker = GripperWorker("hand", lambda: (0.08, False), grasp, open_)
    try:
        worker.set_closed(True)
        assert worker.wait_idle(2.0)
        deadline = time.monotonic() + 2
        while worker.latest() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        sample = worker.latest()
        assert sample.error == "" and sample.last_grasp is False
        worker.set_closed(False)
        assert worker.wait_idle(2.0)
        outcome["grasp"] = "raise"
        worker.set_closed(True)
        assert worker.wait_idle(2.0)
        assert "Command failed" in worker.latest().error
        worker.halt()
        worker.set_closed(False)  # halted: no command goes out
        time.sleep(0.1)
        assert calls == ["grasp", "open", "grasp"]
    finally:
        worker.close()


def test_the_joint_mode_ik_is_the_simulators_step():
    """``arm_mode="joint"``'s IK (libfranka's Jacobian) is the simulator's DLS step."""
    from sim2online_envs.hardware.panda.arm import dls_joint_target
    from sim2online_envs.sim.panda import HOME_QPOS, PandaVectorBackend

    sim = PandaVectorBackend(1, domain_randomization=False, render_pixels=False)
    try:
        sim.reset_worlds(np.array([0]), [np.random.default_rng(0)])
        target = np.array([0.5, -0.03, 0.25])
        tip = np.eye(4)
        tip[:3, :3] = sim._site_xmat[0, sim._tcp].reshape(3, 3)
        tip[:3, 3] = sim._site_xpos[0, sim._tcp]
        anchors = sim._xanchor[0, sim._arm_joint_ids]
        axes = sim._xaxis[0, sim._arm_joint_ids]
        jacobian = np.vstack([np.cross(axes, tip[:3, 3] - anchors).T, axes.T])
        expected = sim.joint_targets(target[None])[0]
        got = dls_joint_target(PandaHardwareConfig(), HOME_QPOS, tip, jacobian, target)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    finally:
        sim.close()


def test_twin_server_reports_the_measured_tcp_pose_not_the_desired_one():
    """franky-sim 1.0.4's ``kinematics`` returns pinocchio's own pose object, which the next
    forward kinematics overwrites: its state's ``O_T_EE`` (the measured pose a driver closes its
    loop on) came out as the pose of the desired joints. The twin server's patch makes it the
    pose of the measured joints."""
    pytest.importorskip("franky_sim")
    from franky_sim.base_simulator import BaseRobot
    from franky_sim.mujoco_simulator import MujocoSimulator

    from sim2online_envs.hardware.panda.facts import HOME_QPOS
    from sim2online_envs.hardware.panda.twin_server import _patch_measured_pose

    _patch_measured_pose()
    _patch_measured_pose()  # idempotent
    assert BaseRobot.kinematics.__wrapped__ is not None
    sim = MujocoSimulator()
    robot = sim.add_robot(initial_q=tuple(HOME_QPOS))
    sim.init()
    sim.start()
    try:
        desired = HOME_QPOS + np.array([0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        robot.joint_position_control(desired)
        sim.step()
        state = robot.state
        measured = np.array(state.O_T_EE).reshape(4, 4, order="F")[:3, 3]
        at_q = robot.kinematics(np.array(state.q)).translation
        at_q_d = robot.kinematics(np.array(state.q_d)).translation
        assert np.linalg.norm(at_q_d - at_q) > 0.1  # one step later, far from the desired pose
        np.testing.assert_allclose(measured, at_q, atol=1e-9)
        # What the unpatched function does: both poses are one object, the last one computed.
        raw = BaseRobot.kinematics.__wrapped__
        first = raw(robot, np.array(state.q))
        raw(robot, np.array(state.q_d))
        np.testing.assert_allclose(first.translation, at_q_d, atol=1e-9)
    finally:
        sim.cleanup()


def test_twin_server_joints_track_a_moving_goal_without_lag():
    """franky-sim's joint controller damps toward rest (``-kv dq``): a joint following a goal
    that moves trails it by ``kv / kp``. The twin server's patch damps toward the goal's own
    velocity, as a Franka arm's joint controller tracks its desired trajectory."""
    pytest.importorskip("franky_sim")
    from franky_sim.base_simulator import BaseRobot
    from franky_sim.mujoco_simulator import MujocoSimulator

    from sim2online_envs.hardware.panda.facts import HOME_QPOS
    from sim2online_envs.hardware.panda.twin_server import (
        _patch_joint_velocity_feedforward,
        _patch_measured_pose,
    )

    def largest_lag() -> float:
        sim = MujocoSimulator()
        robot = sim.add_robot(initial_q=tuple(HOME_QPOS))
        sim.init()
        sim.start()
        velocity = np.array([0.2, -0.2, 0.1, 0.3, 0.2, 0.2, 0.3])  # rad/s
        try:
            lags = []
            for step in range(800):
                goal = HOME_QPOS + velocity * step * 0.001
                robot.joint_position_control(goal)
                sim.step()
                if step >= 200:  # after the first 0.2 s
                    lags.append(np.max(np.abs(goal - np.array(robot.inner_state.q))))
            return float(np.max(lags))
        finally:
            sim.cleanup()

    _patch_measured_pose()
    if not hasattr(BaseRobot._joint_position_control, "__wrapped__"):  # not patched yet here
        assert largest_lag() > 0.02  # franky-sim's own: about kv / kp * 0.3 rad/s
    _patch_joint_velocity_feedforward()
    assert largest_lag() < 0.005
