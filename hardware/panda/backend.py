"""The real Panda as a Backend: arm and hand, camera, cube marker, on one clock.

Every tick (:class:`~sim2online_envs.hardware.base.RealBackend` owns it): the tip target and
the gripper wish go out without waiting; at the end of the period the arm, the hand, the newest
camera frame and the cube's marker pose are read into the same state keys, units and frames as
the simulator's (:data:`sim2online_envs.robots.panda.STATE_KEYS`).

Faults (the reading becomes invalid, the backend stops the arm and latches; the step loop
truncates the episode with the name as ``truncation_reason``; libfranka's or the library's text
is in :meth:`RealPandaBackend.fault_detail` and the log):

====================== =====================================================================
fault                  when
====================== =====================================================================
``reflex``             libfranka reports a reflex (collision, limits) of the arm
``communication_constraints`` libfranka's communication constraints violation
``arm_connection_lost`` the arm's network connection failed
``arm_limit_violation`` another libfranka limit or discontinuity error
``arm_error``          any other libfranka error of the arm
``ik_stall``           the tip stays > ``stall_distance`` from its target without closing in
                       for ``stall_time`` (franky-sim's IK can stall while reporting success)
``grasp_failed``       the gripper's grasp or move command failed (libfranka raised)
``gripper_stale``      no gripper state for 0.5 s
``camera_stale``       no camera frame newer than ``camera_max_age``
``marker_lost``        no cube marker seen for ``marker_lost_grace``
====================== =====================================================================

A grasp that closes on nothing is no fault (libfranka's grasp returns False): the hand reports
``gripper_holding = 0`` and the episode goes on. Errors are never cleared by themselves: the
next :meth:`reset_worlds` refuses to start while the arm has one; :meth:`recover` (an explicit
call) runs libfranka's error recovery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from sim2online_envs.hardware.base import (
    ClockConfig,
    HardwareError,
    Reading,
    RealBackend,
    StaleReadingError,
)
from sim2online_envs.hardware.panda.arm import ArmDriver, ArmSample, GripperSample
from sim2online_envs.hardware.panda.calibration import Calibration
from sim2online_envs.hardware.panda.camera import RealSenseCamera
from sim2online_envs.hardware.panda.config import PandaHardwareConfig
from sim2online_envs.hardware.panda.facts import HOME_QPOS
from sim2online_envs.hardware.panda.markers import CubeDetector
from sim2online_envs.vision import policy_image

logger = logging.getLogger(__name__)

__all__ = ["CubeTracker", "RealPandaBackend"]

GRIPPER_MAX_AGE = 0.5


class CubeTracker:
    """Finds the cube in every new camera frame on a thread of its own (off the control path).

    :meth:`latest` gives the newest pose found: (position, quaternion, the frame's stamp).
    """

    def __init__(self, camera: RealSenseCamera, detector: CubeDetector, period: float = 0.005):
        self.camera = camera
        self.detector = detector
        self.period = period
        self._lock = threading.Lock()
        self._pose: tuple[np.ndarray, np.ndarray, float] | None = None
        self._number = -1
        self._stop = threading.Event()
        self.seconds: list[float] = []
        self._thread = threading.Thread(target=self._run, name="panda-cube-tracker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                frame = self.camera.latest(np.inf)
            except HardwareError:
                continue
            if frame.number == self._number:
                continue
            self._number = frame.number
            start = time.perf_counter()
            pose = self.detector.estimate(frame.rgb)
            self.seconds = [*self.seconds[-199:], time.perf_counter() - start]
            if pose is not None and np.isfinite(pose.pos).all() and np.isfinite(pose.quat).all():
                with self._lock:
                    self._pose = (pose.pos, pose.quat, frame.stamp)

    def latest(self) -> tuple[np.ndarray, np.ndarray, float] | None:
        with self._lock:
            return self._pose

    def forget(self) -> None:
        with self._lock:
            self._pose = None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class RealPandaBackend(RealBackend):
    """One Panda (or its twin): :class:`ArmDriver` + :class:`RealSenseCamera` + cube marker.

    ``observer`` (the twin's scene) is called with every arm and gripper sample read, before
    the camera is read.
    """

    name = "Franka Panda"

    def __init__(
        self,
        config: PandaHardwareConfig,
        arm: ArmDriver,
        camera: RealSenseCamera,
        calibration: Calibration,
        control_dt: float,
        image_size: int,
        observer: Callable[[ArmSample, GripperSample | None], None] | None = None,
        watchdog_periods: float | None = 5.0,
    ):
        self.config = config
        self.arm = arm
        self.camera = camera
        self.calibration = calibration
        self.image_size = int(image_size)
        self.observer = observer
        self.detector = CubeDetector(
            calibration.intrinsics,
            calibration.base_from_camera,
            config.marker_dictionary,
            config.cube_size,
            config.marker_length,
        )
        self.tracker = CubeTracker(camera, self.detector)
        self._tip_target = np.zeros(3)
        self._gripper_closed = 0.0
        self._cube: tuple[np.ndarray, np.ndarray, float] | None = None
        self._stall_best = np.inf
        self._stall_since = 0.0
        self.fault_name = self._fault_detail = ""
        self._preparing = False
        self._last_rgb: np.ndarray | None = None
        self._extra: dict[str, float] = {}
        super().__init__(ClockConfig(control_dt=control_dt, watchdog_periods=watchdog_periods))

    # -- device side -----------------------------------------------------------------------------

    def fault_detail(self, world: int = 0) -> str:
        """libfranka's (or the camera's) own text of the last fault, "" when none."""
        del world
        return self._fault_detail

    def send_command(self, command: Mapping[str, np.ndarray]) -> None:
        target = np.asarray(command["tip_target"], dtype=np.float64).reshape(3)
        if not np.isfinite(target).all():
            raise ValueError(f"tip_target must be finite, got {target.tolist()}")
        closed = float(np.asarray(command["gripper_closed"]).reshape(())) > 0.5
        self._tip_target = target.copy()
        self._gripper_closed = float(closed)
        self.arm.move_tip(target)
        if self.arm.gripper is not None:
            self.arm.gripper.set_closed(closed)

    def _fault(self, fault: str, detail: str) -> Reading:
        self.fault_name, self._fault_detail = fault, detail
        level = logging.DEBUG if self._preparing else logging.ERROR
        logger.log(level, "%s: %s: %s", self.name, fault, detail)
        return Reading(
            state={}, stamp=time.monotonic(), valid=False, fault=fault, extra={"error": detail}
        )

    def read(self, max_age: float) -> Reading:
        arm = self.arm.read()
        gripper = self.arm.gripper.latest() if self.arm.gripper is not None else None
        if self.observer is not None:
            self.observer(arm, gripper)
        if arm.fault:
            return self._fault(arm.fault, arm.error)
        now = time.monotonic()
        if gripper is None or now - gripper.stamp > GRIPPER_MAX_AGE:
            return self._fault("gripper_stale", "no gripper state for 0.5 s")
        if gripper.error:
            return self._fault("grasp_failed", gripper.error)
        try:
            frame = self.camera.latest(self.config.camera_max_age)
        except StaleReadingError as error:
            return self._fault("camera_stale", str(error))
        self._last_rgb = frame.rgb
        self._cube = self.tracker.latest()
        marker_age = np.inf if self._cube is None else now - self._cube[2]
        if marker_age > self.config.camera_max_age + self.config.marker_lost_grace:
            return self._fault(
                "marker_lost",
                f"the newest cube pose is from a frame {marker_age:.2f} s old (camera frames "
                "keep coming)",
            )
        stall = self._check_stall(arm, now)
        if stall:
            return self._fault("ik_stall", stall)
        self._extra = {"camera_age": now - frame.stamp, "marker_age": float(marker_age)}
        pos, quat, _ = self._cube
        crop = self.calibration.crop
        state = {
            "pixels": policy_image(frame.rgb, self.image_size, crop),
            "tip_pos": arm.tip_pos.astype(np.float64),
            "tip_target": self._tip_target.copy(),
            "gripper_opening": np.float64(gripper.width),
            "gripper_closed": np.float64(self._gripper_closed),
            "gripper_holding": np.float64(1.0 if gripper.is_grasped else 0.0),
            "arm_qpos": arm.q.astype(np.float64),
            "object_pos": pos.copy(),
            "object_quat": quat.copy(),
            "object_size": np.float64(self.config.cube_size),
        }
        return Reading(state=state, stamp=arm.stamp, extra=dict(self._extra))

    def _check_stall(self, arm: ArmSample, now: float) -> str:
        distance = float(np.linalg.norm(self._tip_target - arm.tip_pos))
        if distance <= self.config.stall_distance:
            self._stall_best, self._stall_since = np.inf, now
            return ""
        if distance < self._stall_best - 0.001:
            self._stall_best, self._stall_since = distance, now
            return ""
        if now - self._stall_since > self.config.stall_time:
            return (
                f"the tip is {distance * 1000:.1f} mm from its target and has not come closer "
                f"for {now - self._stall_since:.1f} s"
            )
        return ""

    def stop_devices(self) -> None:
        self.arm.stop()
        if self.arm.gripper is not None:
            self.arm.gripper.halt()

    def prepare_episode(self, options: Mapping[str, Any] | None) -> None:
        """Refuse while the arm or the hand has an error; open the hand; joint motion home; see
        the cube."""
        options = dict(options or {})
        twin_reset = options.pop("twin_reset", None)
        error = self.arm.read().error
        if error:
            raise HardwareError(
                self.arm.name,
                f"has an error ({error}); nothing clears it by itself: check the robot, then "
                "call env.unwrapped.backend.recover()",
            )
        gripper = self.arm.gripper
        sample = None if gripper is None else gripper.latest()
        if sample is not None and sample.error:
            raise HardwareError(
                gripper.name,
                f"has an error ({sample.error}); nothing clears it by itself: check the hand, "
                "then call env.unwrapped.backend.recover()",
            )
        if gripper is not None:
            gripper.resume()
            gripper.set_closed(False)
            if not gripper.wait_idle(5.0):
                raise HardwareError(gripper.name, "did not open within 5 s")
        self.home()
        if twin_reset is not None:
            twin_reset(options)
        elif options:
            raise ValueError(f"the real Panda takes no reset options, got {sorted(options)}")
        arm = self.arm.read()
        self._tip_target = arm.tip_pos.copy()
        self._gripper_closed = 0.0
        self._stall_best, self._stall_since = np.inf, time.monotonic()
        self._cube = None
        self.fault_name = self._fault_detail = ""
        self.tracker.forget()
        ready = time.monotonic()
        deadline = ready + 3.0
        self._preparing = True
        try:
            while time.monotonic() < deadline:
                self.read(self.clock.reading_age_limit)
                cube = self.tracker.latest()
                if cube is not None and cube[2] > ready:
                    return
                time.sleep(0.02)
        finally:
            self._preparing = False
        raise HardwareError(
            self.camera.name, "sees no cube marker: put the cube in view (docs/hardware/panda.md)"
        )

    def home(self) -> None:
        """Joint motion to the reset pose, then check it was reached (up to 3 motions: a
        planner that reports success short of its goal gets a second one)."""
        error = np.inf
        for _ in range(3):
            self.arm.move_joints(HOME_QPOS, self.config.home_timeout)
            time.sleep(0.2)
            error = float(np.max(np.abs(self.arm.read().q - HOME_QPOS)))
            if error <= self.config.home_tolerance:
                return
            logger.warning("%s: reset motion ended %.4f rad from home; again", self.name, error)
        raise HardwareError(
            self.arm.name, f"reset motion ended {error:.4f} rad from the home posture"
        )

    def recover(self) -> bool:
        """libfranka's error recovery: the only way an arm error is cleared."""
        return self.arm.recover()

    def telemetry(self) -> dict[str, float]:
        out = super().telemetry()
        out.update(self._extra)
        return out

    def render_world(
        self, world: int = 0, task_state: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray | None:
        """The newest colour frame of the camera (H, W, 3)."""
        del world, task_state
        return None if self._last_rgb is None else self._last_rgb.copy()

    def privileged(self) -> dict[str, np.ndarray]:
        """The cube's pose from the marker (what a scripted controller may use on hardware)."""
        if self._cube is None:
            return {}
        pos, quat, _ = self._cube
        return {"object_pos": pos[None].copy(), "object_quat": quat[None].copy()}

    def close_devices(self) -> None:
        try:
            self.arm.close()
        finally:
            self.tracker.close()
            self.camera.close()
