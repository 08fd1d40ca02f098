"""``sim2online check racecar``: the pre-flight check of the car, its link and the mocap.

Each check is ``(name, ok, detail)``; a failed check does not stop the others unless they need
it. The failsafe check commands neutral throttle only (the car does not move): it sends armed
neutral commands, stops sending, and waits for the firmware to report its timeout.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from sim2online_envs.robots import racecar as robot

__all__ = ["run_checks"]

Check = tuple[str, bool, str]


def run_checks(hardware: str = "real", **settings: Any) -> list[Check]:
    """Run the checks against the car (``hardware="real"``) or its twin (``"twin"``)."""
    from sim2online_envs.hardware.base import HardwareError
    from sim2online_envs.hardware.racecar.config import load_calibration, resolve_config
    from sim2online_envs.hardware.racecar.mocap import NatNetMocap
    from sim2online_envs.hardware.racecar.protocol import FailsafeReason
    from sim2online_envs.hardware.racecar.serial_link import SerialLink

    results: list[Check] = []
    try:
        config = resolve_config(settings)
        calibration = load_calibration(config.calibration or None)
    except (ValueError, TypeError, FileNotFoundError) as error:
        return [("settings", False, str(error))]
    results.append(("settings", True, f"port {config.port}, mocap {config.mocap_host}"))
    twin = None
    if hardware == "twin":
        from sim2online_envs.hardware.racecar.twin import RaceCarTwin, TwinError

        try:
            twin = RaceCarTwin(config)
        except (TwinError, RuntimeError) as error:
            return [*results, ("twin", False, str(error))]
        config = dataclasses.replace(
            config, port=twin.port, mocap_host="127.0.0.1", mocap_command_port=twin.natnet_port
        )
        results.append(("twin", True, f"firmware in simavr on {twin.port}"))
    link = SerialLink(config, calibration)
    mocap = NatNetMocap(config, calibration)
    try:
        try:
            link.connect(config.connect_timeout)
            status = link.status
            assert status is not None
            supply = "not wired" if status.supply_mv is None else f"{status.supply_mv / 1000:.2f} V"
            results.append(("serial port", True, f"{config.port} at {config.baud} baud"))
            results.append(
                (
                    "firmware",
                    True,
                    f"version {'.'.join(map(str, status.version))}, failsafe "
                    f"{status.reason.name.lower() if status.failsafe else 'off'}, "
                    f"timeout {status.timeout_ms} ms, supply {supply}",
                )
            )
        except HardwareError as error:
            results.append(("serial port", False, str(error)))
            link = None
        try:
            mocap.connect(config.connect_timeout)
            time.sleep(1.0)
            rate = mocap.rate()
            ok = abs(rate - config.mocap_rate) <= 0.2 * config.mocap_rate
            results.append(
                ("mocap rate", ok, f"{rate:.1f} Hz (expected {config.mocap_rate:.0f} Hz)")
            )
            reading = mocap.sample()
            if not reading.valid:
                results.append(("rigid body", False, reading.fault))
            else:
                x, y, psi = reading.state["pose"]
                inside = not bool(robot.out_of_arena(reading.state["pose"]))
                results.append(
                    ("pose in arena", inside, f"x {x:+.2f} m, y {y:+.2f} m, psi {psi:+.2f} rad")
                )
                latency = reading.extra.get("latency", float("nan"))
                results.append(
                    (
                        "mocap latency",
                        latency <= config.mocap_max_latency,
                        f"{latency * 1000:.1f} ms (limit {config.mocap_max_latency * 1000:.0f} ms)",
                    )
                )
        except HardwareError as error:
            results.append(("mocap", False, str(error)))
        if link is not None:
            results.append(_check_failsafe(link, config, FailsafeReason.TIMEOUT))
    finally:
        if link is not None:
            link.close()
        mocap.close()
        if twin is not None:
            twin.close()
    return results


def _check_failsafe(link: Any, config: Any, timeout_reason: Any) -> Check:
    """Neutral armed commands for 0.3 s, then silence: the firmware must report its timeout."""
    steer = link.calibration.steering_angle(link.calibration.steering_center_us)
    link.begin_episode()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        link.send({"steering": steer, "throttle": 0.0})
        time.sleep(robot.CONTROL_DT)
    silent_since = time.monotonic()
    limit = config.failsafe_timeout_ms / 1000 + 0.2
    while time.monotonic() - silent_since < limit:
        status = link.status
        if status is not None and status.failsafe and status.reason == timeout_reason:
            elapsed = time.monotonic() - silent_since
            return ("failsafe", True, f"tripped {elapsed * 1000:.0f} ms after the last command")
        time.sleep(0.005)
    return ("failsafe", False, f"no timeout failsafe within {limit * 1000:.0f} ms of silence")
