"""``sim2online check go1``: is the Go1 ready for an episode? Each check says what it found.

Checks, in order (a failed one stops the checks that need it): the SDK loads; the robot answers
at its address within the connection timeout; the battery's charge; the IMU is sane (a unit
quaternion, gravity about 9.81 m/s² on the accelerometer's median while at rest, upright or
lying flat); every joint
inside its limits; damping responds (the motors report the damping command's torques: with the
robot still, near zero). Nothing moves: the robot stays in damping throughout.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import numpy as np

from sim2online_envs.hardware.base import HardwareError
from sim2online_envs.hardware.go1.config import resolve_config
from sim2online_envs.robots.go1 import JOINT_LOWER, JOINT_UPPER

__all__ = ["run_checks"]

#: Battery charge [%] below which the check fails.
MIN_BATTERY = 20.0


#: Gravity [m/s²] and how far the accelerometer's median at rest may be from it.
GRAVITY = 9.81
GRAVITY_TOLERANCE = 1.5
#: Readings in the IMU's window, their spacing [s], and the longest the check waits for the
#: robot to be at rest [s].
IMU_WINDOW = 25
IMU_SPACING_S = 0.02
IMU_SETTLE_S = 3.0
#: At rest: the window's 10th to 90th percentile spread of |a| below this [m/s²].
IMU_REST_SPREAD = 2.0
#: How far beyond its limit a joint may read [rad]: a leg folded under a resting trunk presses
#: its knee against the mechanical stop, a little past the model's limit.
JOINT_STOP_TOLERANCE = 0.05


def _gravity_at_rest(driver: Any) -> tuple[float, Any]:
    """The median accelerometer norm over the last ``IMU_WINDOW`` readings (``IMU_SPACING_S``
    apart), sampled until the robot is at rest (a narrow window) near gravity or until
    ``IMU_SETTLE_S`` has passed: one reading can catch a sagging leg or a bump, a window of a
    robot at rest cannot. Returns the median and the newest reading."""
    norms: list[float] = []
    deadline = time.monotonic() + IMU_SETTLE_S
    while True:
        reading = driver.latest(1.0)
        norms.append(float(np.linalg.norm(reading.state["accelerometer"])))
        window = norms[-IMU_WINDOW:]
        median = float(np.median(window))
        low, high = np.percentile(window, [10, 90])
        settled = (
            len(window) == IMU_WINDOW
            and high - low < IMU_REST_SPREAD
            and abs(median - GRAVITY) < GRAVITY_TOLERANCE
        )
        if settled or time.monotonic() > deadline:
            return median, reading
        time.sleep(IMU_SPACING_S)


def run_checks(**settings: Any) -> list[tuple[str, bool, str]]:
    """Run the checks with these Go1Config settings (``hardware="twin"`` checks against a twin
    on loopback); returns (name, ok, detail) per check."""
    hardware = settings.pop("hardware", "real")
    results: list[tuple[str, bool, str]] = []
    try:
        sdk = importlib.import_module("unitree_legged_sdk.robot_interface")
        results.append(("sdk", True, f"unitree_legged_sdk loaded ({sdk.__file__})"))
    except ImportError as error:
        results.append(("sdk", False, f"{error}: pip install --no-deps unitree-legged-sdk"))
        return results
    config = resolve_config(settings)
    twin = None
    if hardware == "twin":
        import dataclasses

        from sim2online_envs.hardware.go1.twin import Go1Twin

        config = dataclasses.replace(config, robot_ip="127.0.0.1", robot_port=0, local_port=0)
        twin = Go1Twin(config)
        twin.reset(lying=True)  # as an operator leaves a robot in damping: lying, at rest
        config = dataclasses.replace(config, robot_port=twin.port)
    from sim2online_envs.hardware.go1.driver import Go1Driver

    driver = Go1Driver(config)
    try:
        start = time.monotonic()
        try:
            driver.connect(config.connect_timeout)
        except HardwareError as error:
            results.append(("robot answers", False, str(error)))
            return results
        results.append(
            ("robot answers", True, f"{config.address} in {time.monotonic() - start:.2f} s")
        )
        g, reading = _gravity_at_rest(driver)
        state, extra = reading.state, reading.extra
        battery = float(extra.get("battery", float("nan")))
        results.append(("battery", battery >= MIN_BATTERY, f"{battery:.0f} % charge"))
        quat = state["base_quat"]
        up_z = 1.0 - 2.0 * (quat[1] ** 2 + quat[2] ** 2)
        imu_ok = abs(g - GRAVITY) < GRAVITY_TOLERANCE and np.all(np.isfinite(quat))
        results.append(
            ("imu", bool(imu_ok), f"median |a| = {g:.2f} m/s², trunk up axis z = {up_z:.2f}")
        )
        q = state["joint_pos"]
        outside = np.flatnonzero(
            (q < JOINT_LOWER - JOINT_STOP_TOLERANCE) | (q > JOINT_UPPER + JOINT_STOP_TOLERANCE)
        )
        results.append(
            (
                "joints inside limits",
                len(outside) == 0,
                "all 12" if len(outside) == 0 else f"joints {outside.tolist()} at {q[outside]}",
            )
        )
        torque, dq = state["torque"], state["joint_vel"]
        expected = -config.damping_kd * dq
        error = float(np.max(np.abs(torque - expected)))
        results.append(
            (
                "damping responds",
                driver.mode == "damping" and error < 2.0,
                f"mode {driver.mode}, max |tau - (-Kd dq)| = {error:.2f} N·m",
            )
        )
        timing = driver.timing()
        results.append(
            (
                "link",
                not driver.fault,
                f"fault {driver.fault or 'none'}; round trip median "
                f"{timing.get('rtt_median', float('nan')) * 1e3:.2f} ms",
            )
        )
    finally:
        driver.close()
        if twin is not None:
            twin.close()
    return results
