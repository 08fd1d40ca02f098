"""Race car hardware: wire codec, config, calibration, arena transform, velocity filter.

No twin here (tests/test_hw_racecar_twin.py runs the firmware); the firmware's own C tests run
through ``make host-test`` below.
"""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest

from sim2online_envs.hardware.racecar import config as car_config
from sim2online_envs.hardware.racecar import firmware, protocol
from sim2online_envs.hardware.racecar.config import (
    Calibration,
    RaceCarConfig,
    load_calibration,
    resolve_config,
)
from sim2online_envs.hardware.racecar.mocap import ArenaTransform, VelocityEstimator

pytest.importorskip("cobs")
pytest.importorskip("crc")


def test_crc_is_ccitt_false() -> None:
    assert protocol.crc16(b"123456789") == 0x29B1


def test_command_frame_layout() -> None:
    wire = protocol.Command(seq=0x0102, steer_us=1600, throttle_us=1400).encode()
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    payload = protocol.decode_frame(wire[:-1])
    assert payload == bytes([0x01, 0x02, 0x01]) + (1600).to_bytes(2, "little") + (1400).to_bytes(
        2, "little"
    ) + bytes([protocol.FLAG_ARM])


def test_status_round_trip_and_reader_skips_garbage() -> None:
    status = protocol.Status(
        seq=65535,
        steer_us=1700,
        throttle_us=1500,
        failsafe=True,
        reason=protocol.FailsafeReason.TIMEOUT,
        supply_mv=7400,
        uptime_ms=123456,
        bad_frames=3,
        timeout_ms=100,
        version=(1, 0, 0),
    )
    reader = protocol.FrameReader()
    wire = status.encode()
    # Garbage, a frame with one bit flipped, a torn frame, then the good one.
    flipped = bytearray(wire)
    flipped[3] ^= 0x10
    payloads = reader.feed(b"\x13\x37junk\x00" + bytes(flipped) + wire[:5] + b"\x00" + wire)
    assert [protocol.Status.decode(p) for p in payloads] == [status]
    assert reader.bad_frames == 3
    # Endless bytes without a delimiter never grow the buffer past two frames.
    reader.feed(b"\x55" * 10_000)
    assert len(reader._buffer) <= 2 * protocol.MAX_FRAME + 1


def test_config_frame_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"20\.\.5000"):
        protocol.Config(1, 5, 3).encode()


def test_resolve_config_precedence(tmp_path) -> None:
    toml = tmp_path / "hardware.toml"
    toml.write_text('[racecar]\nport = "/dev/ttyUSB9"\nbaud = 57600\nmocap_rate = 240\n')
    environ = {"SIM2ONLINE_CONFIG": str(toml), "SIM2ONLINE_RACECAR_BAUD": "230400"}
    config = resolve_config({"mocap_rate": 100}, environ=environ)
    assert config.port == "/dev/ttyUSB9"  # TOML
    assert config.baud == 230400  # environment over TOML
    assert config.mocap_rate == 100.0  # keyword over both
    toml.write_text("[racecar]\nprot = 1\n")
    with pytest.raises(ValueError, match="unknown keys \\['prot'\\]"):
        resolve_config(environ=environ)
    with pytest.raises(ValueError, match="SIM2ONLINE_RACECAR_NOPE"):
        resolve_config(environ={"SIM2ONLINE_RACECAR_NOPE": "1"})
    with pytest.raises(TypeError, match="known settings"):
        resolve_config({"serial_port": "x"}, environ={})


def test_calibration_file_and_pulses(tmp_path) -> None:
    path = tmp_path / "car.toml"
    path.write_text(
        "[arena]\nup_axis = 'z'\norigin = [1.0, 2.0]\nyaw = 0.5\n"
        "[steering]\ncenter_us = 1520\nus_per_rad = -1100\n"
        "[throttle]\nneutral_us = 1490\nforward_us = 400\nreverse_us = 300\n"
    )
    cal = load_calibration(path)
    assert cal.up_axis == "z" and cal.origin == (1.0, 2.0)
    assert cal.steering_pulse(0.1) == 1410
    assert cal.steering_angle(1410) == pytest.approx(0.1)
    assert cal.throttle_pulse(1.0) == 1890 and cal.throttle_pulse(-1.0) == 1190
    assert cal.throttle_duty(1190) == pytest.approx(-1.0)
    path.write_text("[steering]\ncentre_us = 1500\n")
    with pytest.raises(ValueError, match="centre_us"):
        load_calibration(path)
    with pytest.raises(FileNotFoundError, match="calibration"):
        load_calibration(tmp_path / "missing.toml")


@pytest.mark.parametrize("up_axis", ["y", "z"])
def test_arena_transform_round_trip(up_axis: str) -> None:
    from sim2online_envs.hardware.racecar.natnet_server import quaternion_about

    cal = Calibration(
        up_axis=up_axis, origin=(0.4, -1.2), yaw=0.7, com_offset=(0.05, -0.01), yaw_offset=-0.2
    )
    transform = ArenaTransform(cal)
    for pose in [(0.0, 0.0, 0.0), (1.5, -2.0, 2.5), (-3.0, 1.0, -3.1)]:
        position, heading = transform.to_mocap(pose)
        x, y, psi = transform.to_arena(position, quaternion_about(up_axis, heading))
        assert (x, y) == pytest.approx(pose[:2], abs=1e-9)
        assert math.remainder(psi - pose[2], 2 * math.pi) == pytest.approx(0.0, abs=1e-9)


def test_velocity_fit_in_body_frame_through_the_wrap() -> None:
    estimator = VelocityEstimator(window=5)
    speed, omega, dt = 1.5, 2.0, 1 / 120
    for k in range(10):
        t = k * dt
        psi = math.pi - 0.05 + omega * t  # crosses +pi
        # Moving along the heading at constant speed (a circle of radius speed / omega).
        radius = speed / omega
        x, y = radius * math.sin(psi), -radius * math.cos(psi)
        estimator.add(t, x, y, math.atan2(math.sin(psi), math.cos(psi)))
    vx, vy, w = estimator.velocity()
    assert w == pytest.approx(omega, rel=1e-6)
    # The fit is the velocity at the window's middle, in the body frame of that moment: all
    # forward, no side-slip (the chord of a circular arc is parallel to its middle tangent).
    assert vx == pytest.approx(speed, rel=1e-3)
    assert vy == pytest.approx(0.0, abs=1e-9)


def test_velocity_window_restarts_on_a_jump_or_an_old_frame() -> None:
    """A frame from before the car was placed (in flight at the reset) must not read as a
    35 m/s velocity, a single glitch must not enter the fit, and bunched frames (arrival
    jitter) are not jumps."""
    dt = 1 / 120
    estimator = VelocityEstimator(window=5, max_speed=20.0, frame_period=dt)
    for k in range(5):
        assert estimator.add(k * dt, 0.01 * k, 0.0, 0.0)  # 1.2 m/s forward
    assert estimator.velocity()[0] == pytest.approx(1.2)
    # One glitched pose 2 m away: held back, then dropped when the next pose agrees with the
    # window; the velocity is unchanged.
    assert not estimator.add(5 * dt, 2.0, 1.0, 0.5)
    assert estimator.velocity()[0] == pytest.approx(1.2)
    assert estimator.add(6 * dt, 0.06, 0.0, 0.0)
    assert (estimator.restarts, estimator.rejected) == (0, 1)
    assert estimator.velocity()[0] == pytest.approx(1.2)
    # Arrival jitter: a frame 8 ms late, then the next 0.3 ms after it, at 3 m/s.
    jitter = VelocityEstimator(window=5, max_speed=20.0, frame_period=dt)
    stamps = [0.0, dt, 2 * dt, 3 * dt + 0.008, 3 * dt + 0.0083]
    for k, stamp in enumerate(stamps):
        assert jitter.add(stamp, 3.0 * dt * k, 0.0, 0.0)
    assert (jitter.restarts, jitter.rejected) == (0, 0)
    assert jitter.velocity()[0] == pytest.approx(3.0, rel=0.2)
    # Carried: a jump confirmed by the next pose restarts the window from the two.
    assert not estimator.add(7 * dt, 2.0, 1.0, 0.5)
    assert estimator.add(8 * dt, 2.0, 1.0, 0.5)
    assert estimator.restarts == 1
    np.testing.assert_allclose(estimator.velocity(), np.zeros(3), atol=1e-9)
    # After a reset the window's one pose may be a stale frame: the next pose replaces it.
    estimator.reset()
    assert estimator.add(9 * dt, 0.0, 0.0, 0.0)  # in flight from before the placement
    assert estimator.add(10 * dt, 1.5, -1.0, 2.0)  # where the car now is
    assert estimator.add(11 * dt, 1.5, -1.0, 2.0)
    np.testing.assert_allclose(estimator.velocity(), np.zeros(3), atol=1e-9)
    # A repeated stamp is dropped.
    assert not estimator.add(11 * dt, 1.5, -1.0, 2.0)
    with pytest.raises(ValueError, match="velocity_jump_speed"):
        RaceCarConfig(velocity_jump_speed=0.0)


def test_package_imports_without_hardware_libraries() -> None:
    code = (
        "import sys; sys.modules['serial'] = None; sys.modules['natnet'] = None;"
        "import sim2online_envs.hardware.racecar.env, sim2online_envs.hardware.racecar.check"
    )
    subprocess.run([__import__("sys").executable, "-c", code], check=True, timeout=60)


def test_config_has_docs_for_every_field() -> None:
    doc = car_config.RaceCarConfig.__doc__ or ""
    for field in car_config.dataclasses.fields(car_config.RaceCarConfig):
        assert f":param {field.name}:" in doc


@pytest.mark.skipif(firmware.missing_tools(twin=False) != [], reason="needs gcc-avr, avr-libc")
def test_firmware_builds_and_host_tests_pass(tmp_path) -> None:
    build = firmware.build(twin=False, cache=tmp_path)
    assert build.hex.stat().st_size > 0
    size = subprocess.run(
        ["avr-size", "--format=avr", "--mcu=atmega328p", str(build.elf)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "atmega328p" in size
    if shutil.which("cc"):
        result = subprocess.run(
            ["make", "-C", str(firmware.FIRMWARE_DIR), f"BUILD={tmp_path}", "host-test"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "all checks passed" in result.stdout


def test_pulse_neutral_matches_firmware_header() -> None:
    header = (firmware.FIRMWARE_DIR / "src" / "car.h").read_text()
    assert f"#define CAR_NEUTRAL_US {protocol.NEUTRAL_US}" in header
    assert f"#define CAR_PULSE_MIN_US {protocol.PULSE_MIN_US}" in header
    assert f"#define CAR_PULSE_MAX_US {protocol.PULSE_MAX_US}" in header
    assert f"#define CAR_MAX_FRAME {protocol.MAX_FRAME}" in header
    assert np.isfinite(Calibration().steering_us_per_rad)
