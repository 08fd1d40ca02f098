"""The Go1 wire codec against the installed unitree_legged_sdk, the config, the estimator."""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest

from sim2online_envs.hardware.go1 import protocol
from sim2online_envs.hardware.go1.config import Go1Config, resolve_config
from sim2online_envs.hardware.go1.estimator import (
    VelocityFilter,
    feet_and_jacobians,
    kinematic_state,
    quat_to_rot,
)
from sim2online_envs.robots.go1 import FOOT_RADIUS, HOME_JOINT_POS, feet_in_trunk


def test_import_needs_no_sdk() -> None:
    import importlib

    module = importlib.import_module("sim2online_envs.hardware.go1")
    assert module.__doc__


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def sdk_pair():
    """The SDK's low-level UDP object and a loopback socket playing the robot."""
    sdk = pytest.importorskip("unitree_legged_sdk.robot_interface")
    robot = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    robot.bind(("127.0.0.1", 0))
    robot.settimeout(2.0)
    local = _free_port()
    udp = sdk.UDP(protocol.LOWLEVEL, local, "127.0.0.1", robot.getsockname()[1])
    yield sdk, udp, robot, local
    robot.close()


def _recv(udp, tries: int = 200) -> int:
    result = -1
    for _ in range(tries):  # bounded wait for the datagram to land
        result = udp.Recv()
        if result != -1:
            return result
        time.sleep(0.001)
    return result


def test_sdk_lowcmd_decodes(sdk_pair) -> None:
    sdk, udp, robot, _ = sdk_pair
    cmd = sdk.LowCmd()
    udp.InitCmdData(cmd)
    motors = cmd.motorCmd
    for j in range(12):
        m = motors[j]
        m.mode, m.q, m.dq = 10, 0.1 * j - 0.5, -0.25 * j
        m.tau, m.Kp, m.Kd = 1.5 - 0.25 * j, 35.0 + j, 0.5 + 0.25 * j
    cmd.motorCmd = motors
    udp.SetSend(cmd)
    assert udp.Send() == protocol.LOWCMD_SIZE
    data, _ = robot.recvfrom(4096)
    assert len(data) == protocol.LOWCMD_SIZE
    assert data[:3] == b"\xfe\xef\xff"
    decoded = protocol.decode_lowcmd(data)
    j = np.arange(12)
    np.testing.assert_allclose(decoded["q"], 0.1 * j - 0.5, atol=1e-6)
    np.testing.assert_allclose(decoded["dq"], -0.25 * j, atol=1e-6)
    np.testing.assert_allclose(decoded["tau"], 1.5 - 0.25 * j, atol=1 / 256)
    np.testing.assert_allclose(decoded["kp"], 35.0 + j, atol=1 / 32)
    np.testing.assert_allclose(decoded["kd"], 0.5 + 0.25 * j, atol=1 / 16)
    assert (decoded["mode"] == 10).all()
    # our encoder writes the same bytes as the SDK for the same command
    ours = protocol.encode_lowcmd(
        decoded["q"], decoded["dq"], decoded["tau"], decoded["kp"], decoded["kd"]
    )
    assert ours[22 : 22 + 27 * 12] == data[22 : 22 + 27 * 12]
    (crc,) = struct.unpack_from("<I", data, protocol.LOWCMD_SIZE - 4)
    assert crc == protocol.crc32_core(data[:608])


def test_sdk_accepts_our_lowstate(sdk_pair) -> None:
    sdk, udp, robot, local = sdk_pair
    record = protocol.new_lowstate()
    record["imu"]["quaternion"] = (0.9, 0.1, -0.2, 0.3)
    record["imu"]["gyroscope"] = (0.5, -0.5, 1.0)
    record["motorState"]["q"][:12] = np.arange(12) * 0.1
    record["motorState"]["dq"][:12] = -np.arange(12) * 0.2
    record["motorState"]["tauEst"][:12] = np.arange(12) * 256
    record["footForce"] = (10, 20, 30, 40)
    record["tick"] = 123456
    record["bms"]["SOC"] = 77
    datagram = protocol.encode_lowstate(record)
    assert len(datagram) == protocol.LOWSTATE_SIZE
    assert protocol.decode_lowstate(datagram)["tick"] == 123456
    state = sdk.LowState()
    assert _recv(udp) == -1  # nothing yet
    robot.sendto(datagram, ("127.0.0.1", local))
    assert _recv(udp) == 0
    udp.GetRecv(state)
    assert [round(state.motorState[j].q, 5) for j in range(3)] == [0.0, 0.1, 0.2]
    assert state.motorState[5].tauEst == pytest.approx(5.0)
    assert state.motorState[4].dq == pytest.approx(-0.8)
    assert list(state.footForce) == [10, 20, 30, 40]
    assert state.tick == 123456 and state.bms.SOC == 77
    assert state.imu.gyroscope[2] == pytest.approx(1.0)
    # a wrong checksum is -3, as is a short datagram
    bad = datagram[:-1] + bytes([datagram[-1] ^ 1])
    robot.sendto(bad, ("127.0.0.1", local))
    assert _recv(udp) == -3
    robot.sendto(datagram[:500], ("127.0.0.1", local))
    assert _recv(udp) == -3
    with pytest.raises(protocol.ProtocolError, match="checksum"):
        protocol.decode_lowstate(bad)


def test_crc_matches_the_bit_loop() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 608, dtype=np.uint8).tobytes()
    crc = 0xFFFFFFFF
    for (word,) in struct.iter_unpack("<I", data):  # Unitree's crc32_core, literally
        for bit in range(31, -1, -1):
            top = crc & 0x80000000
            crc = (crc << 1) & 0xFFFFFFFF
            if top:
                crc ^= 0x04C11DB7
            if word >> bit & 1:
                crc ^= 0x04C11DB7
    assert protocol.crc32_core(data) == crc


def test_config_resolution(tmp_path, monkeypatch) -> None:
    toml = tmp_path / "hardware.toml"
    toml.write_text('[go1]\nrobot_ip = "10.0.0.2"\nsdk_rate = 250\nlocal_port = 9000\n')
    environ = {"SIM2ONLINE_CONFIG": str(toml), "SIM2ONLINE_GO1_LOCAL_PORT": "9001"}
    config = resolve_config({"robot_port": 9002}, environ=environ)
    assert (config.robot_ip, config.sdk_rate, config.local_port, config.robot_port) == (
        "10.0.0.2", 250.0, 9001, 9002,
    )  # fmt: skip
    assert resolve_config(environ={}) == Go1Config()
    with pytest.raises(TypeError, match="known settings"):
        resolve_config({"robot_adress": "x"}, environ={})
    with pytest.raises(ValueError, match="known fields"):
        resolve_config(environ={"SIM2ONLINE_GO1_NOPE": "1"})
    toml.write_text("[go1]\nwhat = 1\n")
    with pytest.raises(ValueError, match="known keys"):
        resolve_config(environ={"SIM2ONLINE_CONFIG": str(toml)})
    with pytest.raises(ValueError, match="power_level"):
        Go1Config(power_level=11)


def test_kinematics_and_filter() -> None:
    feet, jacobians = feet_and_jacobians(HOME_JOINT_POS)
    np.testing.assert_allclose(feet, feet_in_trunk(HOME_JOINT_POS[None])[0])
    dq = np.linspace(-1, 1, 12)
    h = 1e-7
    moved = feet_in_trunk((HOME_JOINT_POS + h * dq)[None])[0]
    np.testing.assert_allclose(
        (moved - feet) / h, np.einsum("fij,fj->fi", jacobians, dq.reshape(4, 3)), atol=1e-5
    )
    rot = quat_to_rot(np.array([1.0, 0.0, 0.0, 0.0]))
    _, relative, height = kinematic_state(HOME_JOINT_POS, np.zeros(12), rot, np.zeros(3))
    assert height == pytest.approx(-feet[:, 2].min() + FOOT_RADIUS)
    # a trunk moving at 0.3 m/s over four planted feet: the legs say so, the filter follows
    kf = VelocityFilter(accel_noise=0.5, leg_velocity_noise=0.1)
    truth = np.array([0.3, 0.0, 0.0])
    legs = np.tile(-truth, (4, 1)) + relative
    for _ in range(200):
        v = kf.step(0.002, rot, np.array([0.0, 0.0, 9.81]), legs, np.ones(4, bool))
    np.testing.assert_allclose(v, truth, atol=0.01)
    # no contact: the accelerometer alone (1 m/s² forward for 0.1 s)
    for _ in range(50):
        v = kf.step(0.002, rot, np.array([1.0, 0.0, 9.81]), legs, np.zeros(4, bool))
    np.testing.assert_allclose(v, truth + np.array([0.1, 0, 0]), atol=0.01)
