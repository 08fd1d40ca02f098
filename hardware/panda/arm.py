"""The arm and hand, through franky (FR3) or panda-py (Panda/FER), behind one small interface.

Which arm takes which driver (each wheel bundles its own libfranka, and libfranka speaks one
robot-protocol version):

============ ================== ==================== ===========================================
driver       PyPI package       bundled libfranka    arm
============ ================== ==================== ===========================================
``franky``   franky-control 2.0 0.21 (protocol 10)   Franka Research 3 (FR3)
``panda_py`` panda-python       0.9.2 (protocol 5)   Franka Emika Panda (FER), system 4.x
============ ================== ==================== ===========================================

Connecting with the wrong one makes libfranka say only "incorrect object size" (or
"incompatible library version"); :func:`explain_connect_error` turns that into an error naming
the arm and the driver to use.

Control: targets from the policy at the control rate, the 1 kHz loop inside libfranka, a
Cartesian impedance (a critically damped spring to the target, the law the simulator's arm runs
by default): franky's ``CartesianImpedanceTrackingMotion`` (its reference set each tick) or
panda-py's ``CartesianImpedance`` controller (``set_control`` each tick), with the stiffnesses
of the config. franky also offers ``arm_mode="motion"``: each target a ``CartesianMotion`` that
takes over the running one (Ruckig replanning; precise at rest, but it overshoots targets that
move). The hand points down (the simulator's ``TIP_DOWN_ROTATION``). Errors (reflexes,
communication constraints, a lost connection) are caught when reading, kept with libfranka's
text and reported until :meth:`ArmDriver.recover` is called explicitly: nothing clears them by
itself.

The gripper runs on two threads of its own (libfranka's gripper calls block: a grasp for up to
a second, a state read until the next state packet): one reads its state, one executes the
latest command, so the control loop never waits for the hand.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim2online_envs.hardware.base import ConnectionTimeoutError, HardwareError
from sim2online_envs.hardware.panda.config import PandaHardwareConfig
from sim2online_envs.hardware.panda.markers import matrix_to_quat

logger = logging.getLogger(__name__)

__all__ = [
    "ArmDriver",
    "ArmSample",
    "FrankyArm",
    "GripperSample",
    "GripperWorker",
    "PandaPyArm",
    "WrongArmError",
    "classify_arm_error",
    "explain_connect_error",
    "make_arm",
]

ARMS = {
    "franky": "a Franka Research 3 (FR3; franky-control bundles libfranka 0.21)",
    "panda_py": "a Franka Emika Panda / FER (panda-python bundles libfranka 0.9.2)",
}


class WrongArmError(HardwareError):
    """The driver's libfranka speaks another robot-protocol version than the arm."""


def explain_connect_error(driver: str, robot_ip: str, error: BaseException) -> HardwareError:
    """A connection error from libfranka, with the wrong-arm case spelt out."""
    text = str(error)
    device = f"Franka arm {robot_ip} ({driver})"
    lowered = text.lower()
    if "incorrect object size" in lowered or "incompatible library version" in lowered:
        other = "panda_py" if driver == "franky" else "franky"
        return WrongArmError(
            device,
            f"libfranka says {text!r}: the arm speaks another protocol version than this "
            f"driver. driver={driver!r} is for {ARMS[driver]}; this arm is probably "
            f"{ARMS[other].split(' (')[0]}: use driver={other!r} (docs/hardware/panda.md).",
        )
    return HardwareError(device, f"could not connect: {type(error).__name__}: {text}")


def classify_arm_error(text: str) -> str:
    """The fault name of a libfranka error text ("reflex", "communication_constraints", ...)."""
    lowered = text.lower()
    if "reflex" in lowered:
        return "reflex"
    if "communication_constraints" in lowered:
        return "communication_constraints"
    if "network" in lowered or "connection" in lowered or "udp" in lowered:
        return "arm_connection_lost"
    if "motion planner" in lowered:
        return "arm_planner_error"
    if "limit" in lowered or "violation" in lowered or "discontinuity" in lowered:
        return "arm_limit_violation"
    return "arm_error"


def _call_with_timeout(function: Callable[[], Any], timeout: float, device: str, what: str) -> Any:
    """Run a blocking library call on a daemon thread; raise ConnectionTimeoutError if late."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = function()
        except BaseException as error:  # handed to the caller's thread below
            result["error"] = error

    thread = threading.Thread(target=run, name=f"{device}-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ConnectionTimeoutError(device, f"{what} did not answer within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


@dataclass(frozen=True)
class ArmSample:
    """One read of the arm: joints (rad), TCP position (m) and rotation in the base frame."""

    q: np.ndarray
    tip_pos: np.ndarray
    tip_rot: np.ndarray
    stamp: float
    #: libfranka's error text ("" when none) and its fault name.
    error: str = ""
    fault: str = ""


@dataclass(frozen=True)
class GripperSample:
    """The hand: opening (m), libfranka's is_grasped, when it was read, a command error."""

    width: float
    is_grasped: bool
    stamp: float
    error: str = ""
    last_grasp: bool | None = None


class GripperWorker:
    """Reads the hand's state and runs its commands on two threads of its own.

    ``set_closed`` only records the wish; the command thread closes (a grasp at
    ``grasp_width`` with the tolerances) or opens (a move to ``open_width``) when the wish
    changes. A command that raises is kept as ``error`` until :meth:`clear_error`. A grasp that
    returns False (nothing between the fingers) is no error: ``is_grasped`` stays False.
    """

    def __init__(
        self,
        name: str,
        read_state: Callable[[], tuple[float, bool]],
        grasp: Callable[[], bool],
        open_: Callable[[], bool],
        poll_period: float = 0.01,
    ):
        self.name = name
        self._read_state = read_state
        self._grasp = grasp
        self._open = open_
        self._poll_period = poll_period
        self._lock = threading.Condition()
        self._wish: bool | None = None
        self._applied: bool | None = None
        self._sample: GripperSample | None = None
        self._error = ""
        self._last_grasp: bool | None = None
        self._halted = False
        self._closed = False
        self._threads = [
            threading.Thread(target=self._poll, name=f"{name}-state", daemon=True),
            threading.Thread(target=self._command, name=f"{name}-command", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def set_closed(self, closed: bool) -> None:
        with self._lock:
            if not self._halted:
                self._wish = bool(closed)
                self._lock.notify_all()

    def halt(self) -> None:
        """Send no further commands (the hand keeps what it holds) until :meth:`resume`."""
        with self._lock:
            self._halted = True
            self._wish = self._applied

    def resume(self) -> None:
        with self._lock:
            self._halted = False

    def clear_error(self) -> None:
        with self._lock:
            self._error = ""

    def latest(self) -> GripperSample | None:
        with self._lock:
            sample = self._sample
            if sample is None:
                return None
            return GripperSample(
                sample.width, sample.is_grasped, sample.stamp, self._error, self._last_grasp
            )

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the last wish has been carried out (or failed)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._wish == self._applied, timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=2.0)

    def _poll(self) -> None:
        while not self._closed:
            try:
                width, grasped = self._read_state()
                sample = GripperSample(float(width), bool(grasped), time.monotonic())
                with self._lock:
                    self._sample = sample
            except Exception as error:
                with self._lock:
                    if not self._error:
                        self._error = f"state read failed: {error}"
                logger.warning("%s: state read failed: %s", self.name, error)
                time.sleep(0.1)
            time.sleep(self._poll_period)

    def _command(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._closed or self._wish != self._applied)
                if self._closed:
                    return
                wish = self._wish
            try:
                result = self._grasp() if wish else self._open()
                with self._lock:
                    if wish:
                        self._last_grasp = bool(result)
                    if not result:
                        logger.info("%s: %s found nothing", self.name, "grasp" if wish else "open")
            except Exception as error:
                logger.error("%s: %s failed: %s", self.name, "grasp" if wish else "open", error)
                with self._lock:
                    self._error = f"{'grasp' if wish else 'open'} failed: {error}"
            with self._lock:
                self._applied = wish
                self._lock.notify_all()


def _down_quat_xyzw() -> np.ndarray:
    from sim2online_envs.hardware.panda.facts import TIP_DOWN_ROTATION

    w, x, y, z = matrix_to_quat(TIP_DOWN_ROTATION)
    return np.array([x, y, z, w])


class ArmDriver(abc.ABC):
    """What the backend needs of an arm and its hand (every call bounded in time)."""

    def __init__(self, config: PandaHardwareConfig, realtime: bool = True):
        self.config = config
        self.realtime = realtime
        self.name = f"Franka arm {config.robot_ip} ({config.driver})"
        self.gripper: GripperWorker | None = None
        self._error = ""
        self._lock = threading.Lock()

    @abc.abstractmethod
    def connect(self, timeout: float) -> None:
        """Connect arm and hand; raise a HardwareError naming them (WrongArmError included)."""

    @abc.abstractmethod
    def _sample(self) -> ArmSample:
        """Joints and TCP now (error fields empty)."""

    @abc.abstractmethod
    def _poll_error(self) -> str:
        """libfranka's error text if the arm has one now ("" when none)."""

    @abc.abstractmethod
    def move_tip(self, target: np.ndarray) -> None:
        """Track ``target`` (m, base frame) with the hand pointing down; return at once."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the arm where it is (fast, idempotent, thread-safe)."""

    @abc.abstractmethod
    def move_joints(self, q: np.ndarray, timeout: float) -> None:
        """Move to joint angles ``q`` with a joint motion (blocks; bounded by ``timeout``)."""

    @abc.abstractmethod
    def _recover(self) -> bool:
        """libfranka's automatic error recovery."""

    def read(self) -> ArmSample:
        """Joints, TCP and the latched error (kept until :meth:`recover`)."""
        text = self._poll_error()
        with self._lock:
            if text and not self._error:
                logger.error("%s: %s", self.name, text)
                self._error = text
            error = self._error
        sample = self._sample()
        if error:
            return ArmSample(
                sample.q,
                sample.tip_pos,
                sample.tip_rot,
                sample.stamp,
                error,
                classify_arm_error(error),
            )
        return sample

    def latch_error(self, text: str) -> None:
        with self._lock:
            if not self._error:
                logger.error("%s: %s", self.name, text)
                self._error = text

    @property
    def error(self) -> str:
        with self._lock:
            return self._error

    def recover(self) -> bool:
        """Clear the arm's errors with libfranka's automatic recovery (an explicit call only)."""
        ok = bool(self._recover())
        if ok:
            with self._lock:
                self._error = ""
            if self.gripper is not None:
                self.gripper.clear_error()
        logger.warning("%s: error recovery %s", self.name, "succeeded" if ok else "failed")
        return ok

    def close(self) -> None:
        """Stop, then release (the hand keeps its grasp)."""
        try:
            self.stop()
        finally:
            if self.gripper is not None:
                self.gripper.halt()
                self.gripper.close()


class FrankyArm(ArmDriver):
    """A Franka Research 3 through franky (``franky-control``)."""

    def connect(self, timeout: float) -> None:
        import franky

        cfg = self.config
        mode = franky.RealtimeConfig.Enforce if self.realtime else franky.RealtimeConfig.Ignore
        try:
            self._robot = _call_with_timeout(
                lambda: franky.Robot(cfg.robot_ip, realtime_config=mode),
                timeout,
                self.name,
                "connect",
            )
            gripper = _call_with_timeout(
                lambda: franky.Gripper(cfg.robot_ip), timeout, self.name, "gripper connect"
            )
        except ConnectionTimeoutError:
            raise
        except Exception as error:
            raise explain_connect_error("franky", cfg.robot_ip, error) from error
        robot = self._robot
        robot.relative_dynamics_factor = cfg.relative_dynamics_factor
        robot.set_collision_behavior(cfg.collision_torque, cfg.collision_force)
        self._franky = franky
        self._tracking: Any = None
        self._last_target: np.ndarray | None = None
        self._quat = _down_quat_xyzw()
        self.gripper = GripperWorker(
            f"Franka hand {cfg.robot_ip}",
            lambda: _franky_gripper_state(gripper),
            lambda: gripper.grasp(
                cfg.grasp_width,
                cfg.gripper_speed,
                cfg.grasp_force,
                cfg.grasp_epsilon_inner,
                cfg.grasp_epsilon_outer,
            ),
            lambda: gripper.move(float(gripper.max_width), cfg.gripper_speed),
        )

    def _sample(self) -> ArmSample:
        state = self._robot.state
        pose = state.O_T_EE
        return ArmSample(
            np.array(state.q, dtype=np.float64),
            np.array(pose.translation, dtype=np.float64),
            np.array(pose.matrix, dtype=np.float64)[:3, :3],
            time.monotonic(),
        )

    def _poll_error(self) -> str:
        try:
            self._robot.poll_motion()
        except Exception as error:  # libfranka's ControlException and friends
            text = str(error).splitlines()[0]
            if "preempted" in text.lower():
                # A motion ended by our own stop() (or taken over by the next one): no fault.
                logger.info("%s: %s", self.name, text)
                return ""
            return self._with_robot_errors(text)
        if self._robot.has_errors:
            return self._with_robot_errors("libfranka: the robot reports errors")
        return ""

    def _with_robot_errors(self, text: str) -> str:
        """libfranka's text, with the robot's own error flags when the text lacks them."""
        try:
            state = self._robot.state
            flags = str(state.current_errors)
            if flags in ("[]", ""):
                flags = str(state.last_motion_errors)
        except Exception:
            return text
        if flags in ("[]", "") or flags in text:
            return text
        return f"{text} (robot errors: {flags})"

    def move_tip(self, target: np.ndarray) -> None:
        franky = self._franky
        pose = franky.Affine(np.asarray(target, dtype=np.float64), self._quat)
        try:
            if self.config.arm_mode == "joint":
                state = self._robot.state
                jacobian = np.asarray(
                    self._robot.model.zero_jacobian(franky.Frame.EndEffector, state)
                )
                q = np.asarray(state.q, dtype=np.float64)
                tip = np.asarray(state.O_T_EE.matrix, dtype=np.float64)
                q_target = dls_joint_target(self.config, q, tip, jacobian, np.asarray(target))
                self._robot.move(franky.JointMotion(q_target.tolist()), asynchronous=True)
                return
            if self.config.arm_mode == "motion":
                # The same target again would only make the planner start over.
                if self._last_target is not None and (
                    np.max(np.abs(np.asarray(target) - self._last_target)) < 1e-4
                ):
                    return
                motion = franky.CartesianMotion(pose, franky.ReferenceType.Absolute)
                self._robot.move(motion, asynchronous=True)
                self._last_target = np.array(target, dtype=np.float64)
                return
            reference = franky.CartesianReference(target=pose)
            if self._tracking is None:
                from sim2online_envs.hardware.panda.facts import HOME_QPOS

                tracking = franky.CartesianImpedanceTrackingMotion(
                    translational_stiffness=self.config.translational_stiffness,
                    rotational_stiffness=self.config.rotational_stiffness,
                    # The redundant joint pulled toward the home posture (the simulator's
                    # null-space term), so the elbow does not drift to a joint limit.
                    posture_task=franky.PostureTask(HOME_QPOS.astype(np.float64), 10.0),
                )
                tracking.set_reference(reference)
                self._robot.move(tracking, asynchronous=True)
                self._tracking = tracking
            else:
                self._tracking.set_reference(reference)
        except Exception as error:
            self.latch_error(self._with_robot_errors(str(error).splitlines()[0]))

    def stop(self) -> None:
        robot = getattr(self, "_robot", None)
        self._tracking = None
        self._last_target = None
        if robot is None:
            return
        try:
            robot.stop()
        except Exception as error:
            logger.warning("%s: stop: %s", self.name, error)

    def move_joints(self, q: np.ndarray, timeout: float) -> None:
        franky = self._franky
        motion = franky.JointMotion(np.asarray(q, dtype=np.float64).tolist())
        deadline = time.monotonic() + 5.0
        while True:
            # The stopped Cartesian motion must have ended before a joint motion may start.
            self.stop()
            try:
                self._robot.join_motion(1.0)
            except Exception as error:
                if "preempted" not in str(error).lower():
                    raise
            try:
                self._robot.move(motion, asynchronous=True)
                break
            except franky.InvalidMotionTypeException:
                if time.monotonic() > deadline:
                    raise HardwareError(self.name, "the previous motion does not end") from None
                time.sleep(0.1)
        if not self._robot.join_motion(timeout):
            self.stop()
            raise HardwareError(self.name, f"the reset motion took longer than {timeout:g} s")

    def _recover(self) -> bool:
        if self._robot.recover_from_errors():
            return True
        # The state that follows the recovery may arrive a few packets later.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if not self._robot.has_errors:
                return True
            time.sleep(0.05)
        return False


def dls_joint_target(
    config: PandaHardwareConfig,
    q: np.ndarray,
    tip: np.ndarray,
    jacobian: np.ndarray,
    target: np.ndarray,
) -> np.ndarray:
    """One damped-least-squares IK step toward ``target`` with the hand pointing down.

    The simulator's step (:func:`sim2online_envs.kinematics.dls_step`: position error clipped
    to ``ik_max_error``, the rotation error to the downward hand, the pull toward the home
    posture in the null space), here from libfranka's measured state (``tip``: O_T_EE, 4x4)
    and Jacobian (6x7).
    """
    from sim2online_envs.hardware.panda.facts import HOME_QPOS, TIP_DOWN_ROTATION
    from sim2online_envs.kinematics import dls_step

    tip = np.asarray(tip, dtype=np.float64)
    return dls_step(
        np.asarray(q, dtype=np.float64)[None],
        tip[None, :3, 3],
        tip[None, :3, :3],
        np.asarray(jacobian, dtype=np.float64)[None],
        np.asarray(target, dtype=np.float64)[None],
        TIP_DOWN_ROTATION,
        HOME_QPOS,
        damping=config.ik_damping,
        max_error=config.ik_max_error,
        nullspace_gain=config.ik_nullspace_gain,
    )[0]


def _franky_gripper_state(gripper: Any) -> tuple[float, bool]:
    state = gripper.state
    return float(state.width), bool(state.is_grasped)


def panda_py_impedance(translational: float = 600.0, rotational: float = 30.0) -> np.ndarray:
    """The 6x6 Cartesian stiffness panda-py's CartesianImpedance takes (N/m, Nm/rad)."""
    return np.diag([translational] * 3 + [rotational] * 3).astype(np.float64)


def collision_thresholds(config: PandaHardwareConfig) -> tuple[list[float], ...]:
    """libfranka 0.9.2's (lower torque, upper torque, lower force, upper force) lists."""
    torque = [float(config.collision_torque)] * 7
    force = [float(config.collision_force)] * 6
    return torque, torque, force, force


class PandaPyArm(ArmDriver):
    """A Franka Emika Panda (FER) through panda-py (``panda-python``, libfranka 0.9.2)."""

    def connect(self, timeout: float) -> None:
        import panda_py
        from panda_py import controllers, libfranka

        cfg = self.config
        mode = (
            libfranka.RealtimeConfig.kEnforce if self.realtime else libfranka.RealtimeConfig.kIgnore
        )
        try:
            self._panda = _call_with_timeout(
                lambda: panda_py.Panda(cfg.robot_ip, realtime_config=mode),
                timeout,
                self.name,
                "connect",
            )
            gripper = _call_with_timeout(
                lambda: libfranka.Gripper(cfg.robot_ip), timeout, self.name, "gripper connect"
            )
        except ConnectionTimeoutError:
            raise
        except Exception as error:
            raise explain_connect_error("panda_py", cfg.robot_ip, error) from error
        self._panda.get_robot().set_collision_behavior(*collision_thresholds(cfg))
        self._controllers = controllers
        self._controller = None
        self._quat = _down_quat_xyzw()
        self.gripper = GripperWorker(
            f"Franka hand {cfg.robot_ip}",
            lambda: _libfranka_gripper_state(gripper),
            lambda: gripper.grasp(
                cfg.grasp_width,
                cfg.gripper_speed,
                cfg.grasp_force,
                cfg.grasp_epsilon_inner,
                cfg.grasp_epsilon_outer,
            ),
            lambda: gripper.move(float(gripper.read_once().max_width), cfg.gripper_speed),
        )

    def _sample(self) -> ArmSample:
        state = self._panda.get_state()
        pose = np.array(state.O_T_EE, dtype=np.float64).reshape(4, 4, order="F")
        return ArmSample(
            np.array(state.q, dtype=np.float64),
            pose[:3, 3].copy(),
            pose[:3, :3].copy(),
            time.monotonic(),
        )

    def _poll_error(self) -> str:
        try:
            self._panda.raise_error()
        except Exception as error:
            return str(error).splitlines()[0]
        return ""

    def move_tip(self, target: np.ndarray) -> None:
        try:
            if self._controller is None:
                self._controller = self._controllers.CartesianImpedance(
                    impedance=panda_py_impedance(
                        self.config.translational_stiffness, self.config.rotational_stiffness
                    )
                )
                self._panda.start_controller(self._controller)
            self._controller.set_control(np.asarray(target, dtype=np.float64), self._quat)
        except Exception as error:
            self.latch_error(str(error).splitlines()[0])

    def stop(self) -> None:
        panda = getattr(self, "_panda", None)
        if panda is None:
            return
        try:
            panda.stop_controller()
        except Exception as error:
            logger.warning("%s: stop: %s", self.name, error)
        self._controller = None

    def move_joints(self, q: np.ndarray, timeout: float) -> None:
        self.stop()
        ok = _call_with_timeout(
            lambda: self._panda.move_to_joint_position(
                np.asarray(q, dtype=np.float64), speed_factor=self.config.relative_dynamics_factor
            ),
            timeout,
            self.name,
            "reset motion",
        )
        if not ok:
            raise HardwareError(self.name, "the reset motion did not reach its target")

    def _recover(self) -> bool:
        self._panda.recover()
        return True


def _libfranka_gripper_state(gripper: Any) -> tuple[float, bool]:
    state = gripper.read_once()
    return float(state.width), bool(state.is_grasped)


def make_arm(config: PandaHardwareConfig, realtime: bool = True) -> ArmDriver:
    """The arm driver the config names."""
    return (
        FrankyArm(config, realtime) if config.driver == "franky" else PandaPyArm(config, realtime)
    )
