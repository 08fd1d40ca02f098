"""``sim2online check panda``: is the arm, hand, camera, cube and calibration ready?

:func:`run_checks` returns ``(name, ok, detail)`` rows and never raises for a device that is
missing: every connection is bounded by ``connect_timeout``. ``hardware="twin"`` checks the
twin the same way (the drivers meet franky-sim and the software camera).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sim2online_envs.hardware.base import HardwareError

__all__ = ["run_checks"]


def run_checks(hardware: str = "real", **settings: Any) -> list[tuple[str, bool, str]]:
    """Robot reachable, FCI active, brakes open (arm moves), gripper homed, camera at rate,
    markers visible, calibration loaded."""
    from sim2online_envs.hardware.panda.arm import make_arm
    from sim2online_envs.hardware.panda.calibration import load_calibration
    from sim2online_envs.hardware.panda.camera import RealSenseCamera
    from sim2online_envs.hardware.panda.config import resolve_config
    from sim2online_envs.hardware.panda.markers import CubeDetector

    rows: list[tuple[str, bool, str]] = []
    try:
        config = resolve_config(**settings)
    except (TypeError, ValueError) as error:
        return [("settings", False, str(error))]
    rows.append(("settings", True, f"driver {config.driver}, robot {config.robot_ip}"))
    twin = None
    arm = camera = None
    try:
        if hardware == "twin":
            from sim2online_envs.hardware.panda.twin import PandaTwin

            twin = PandaTwin(config)
            config = twin.start()
        try:
            calibration = load_calibration(config.calibration_path)
            rows.append(("calibration loaded", True, str(config.calibration_path)))
        except (FileNotFoundError, ValueError) as error:
            calibration = None
            rows.append(("calibration loaded", False, str(error)))

        arm = make_arm(config, realtime=hardware == "real")
        try:
            arm.connect(config.connect_timeout)
            sample = arm.read()
            rows.append(
                ("robot reachable, FCI active", True, f"tip at {np.round(sample.tip_pos, 3)}")
            )
            rows.append(("arm without errors", not sample.error, sample.error or "none"))
        except HardwareError as error:
            rows.append(("robot reachable, FCI active", False, str(error)))
            arm = None
        if arm is not None and arm.gripper is not None:
            deadline = time.monotonic() + config.connect_timeout
            state = arm.gripper.latest()
            while state is None and time.monotonic() < deadline:
                time.sleep(0.05)
                state = arm.gripper.latest()
            homed = state is not None and state.width > 0.0 and not state.error
            rows.append(("gripper homed", homed, f"width {getattr(state, 'width', None)}"))

        camera = RealSenseCamera(
            config.camera_serial,
            config.camera_width,
            config.camera_height,
            config.camera_fps,
            device=None if twin is None else twin.camera.device,
        )
        try:
            camera.connect(config.connect_timeout)
            first = camera.latest(np.inf).number
            time.sleep(1.0)
            frame = camera.latest(np.inf)
            rate = frame.number - first
            ok = rate >= 0.8 * config.camera_fps
            rows.append(("camera streaming at rate", ok, f"{rate} frames/s of {config.camera_fps}"))
            if calibration is not None:
                detector = CubeDetector(
                    calibration.intrinsics,
                    calibration.base_from_camera,
                    config.marker_dictionary,
                    config.cube_size,
                    config.marker_length,
                )
                pose = detector.estimate(frame.rgb)
                rows.append(
                    (
                        "markers visible",
                        pose is not None,
                        "none seen"
                        if pose is None
                        else f"ids {pose.marker_ids}, cube at {np.round(pose.pos, 3)} m",
                    )
                )
        except HardwareError as error:
            rows.append(("camera streaming at rate", False, str(error)))
    except HardwareError as error:
        rows.append(("twin" if hardware == "twin" else "hardware", False, str(error)))
    finally:
        if arm is not None:
            arm.close()
        if camera is not None:
            camera.close()
        if twin is not None:
            twin.close()
    return rows
