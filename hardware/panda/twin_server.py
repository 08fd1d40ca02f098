"""The arm's twin process: franky-sim's FR3 server on a loopback address, with fault injection.

Run by :class:`sim2online_envs.hardware.panda.twin.TwinArmServer` as
``python -m sim2online_envs.hardware.panda.twin_server --hostname auto``. It is franky-sim 1.0.4
(the libfranka FR3 protocol, robot on TCP 1337 and the hand on 1338, MuJoCo physics at 1 kHz)
with five changes, all made here in this process:

* the measured TCP pose is the forward kinematics of the measured joints: franky-sim 1.0.4's
  ``BaseRobot.kinematics`` returns a reference into pinocchio's data, which the next forward
  kinematics (of the desired joints ``q_d``, or of its Cartesian IK's iterate) overwrites, so
  the state's ``O_T_EE`` reported the desired pose instead of the measured one (see
  :func:`_patch_measured_pose`);
* its joints track the desired joints without lag: franky-sim's joint controller damps toward
  rest instead of toward the desired velocity (see :func:`_patch_joint_velocity_feedforward`);
* every socket is bound to the chosen loopback address (franky-sim binds its UDP sockets to
  0.0.0.0);
* a reflex can be injected: the running motion is aborted with libfranka's "reflex" status,
  the state reports robot mode Reflex and the error flag until ``automatic_error_recovery``;
* a small control socket (loopback, one JSON object per line, replies the same way) takes
  ``{"cmd": "reflex", "error": "cartesian_reflex"}``, ``{"cmd": "grasp_fail"}`` (the next grasp
  closes on nothing and fails), ``{"cmd": "ping"}`` and ``{"cmd": "quit"}``.

The first line on stdout is ``{"ready": true, "hostname": ..., "control_port": ...}``. The
process ends when its stdin closes (the parent died) or on ``quit``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np

logger = logging.getLogger(__name__)

#: libfranka's ``franka::Errors`` flags, in the order of the robot state's error array.
LIBFRANKA_ERRORS = (
    "joint_position_limits_violation",
    "cartesian_position_limits_violation",
    "self_collision_avoidance_violation",
    "joint_velocity_violation",
    "cartesian_velocity_violation",
    "force_control_safety_violation",
    "joint_reflex",
    "cartesian_reflex",
    "max_goal_pose_deviation_violation",
    "max_path_pose_deviation_violation",
    "cartesian_velocity_profile_safety_violation",
    "joint_position_motion_generator_start_pose_invalid",
    "joint_motion_generator_position_limits_violation",
    "joint_motion_generator_velocity_limits_violation",
    "joint_motion_generator_velocity_discontinuity",
    "joint_motion_generator_acceleration_discontinuity",
    "cartesian_position_motion_generator_start_pose_invalid",
    "cartesian_motion_generator_elbow_limit_violation",
    "cartesian_motion_generator_velocity_limits_violation",
    "cartesian_motion_generator_velocity_discontinuity",
    "cartesian_motion_generator_acceleration_discontinuity",
    "cartesian_motion_generator_elbow_sign_inconsistent",
    "cartesian_motion_generator_start_elbow_invalid",
    "cartesian_motion_generator_joint_position_limits_violation",
    "cartesian_motion_generator_joint_velocity_limits_violation",
    "cartesian_motion_generator_joint_velocity_discontinuity",
    "cartesian_motion_generator_joint_acceleration_discontinuity",
    "cartesian_position_motion_generator_invalid_frame",
    "force_controller_desired_force_tolerance_violation",
    "controller_torque_discontinuity",
    "start_elbow_sign_inconsistent",
    "communication_constraints_violation",
    "power_limit_violation",
    "joint_p2p_insufficient_torque_for_planning",
    "tau_j_range_violation",
    "instability_detected",
    "joint_move_in_wrong_direction",
    "cartesian_spline_motion_generator_violation",
    "joint_via_motion_generator_planning_joint_limit_violation",
    "base_acceleration_initialization_timeout",
    "base_acceleration_invalid_reading",
)


def loopback_candidates(hostname: str, tries: int = 64) -> Iterator[str]:
    """``hostname`` itself, or for "auto" random 127.x.y.z addresses (never another network)."""
    if hostname != "auto":
        if not hostname.startswith("127."):
            raise ValueError(
                f"the twin binds loopback addresses only (127.0.0.0/8), not {hostname}"
            )
        yield hostname
        return
    rng = random.Random()
    for _ in range(tries):
        yield f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _patch_udp_to_loopback() -> None:
    """franky-sim binds its UDP state/command sockets to 0.0.0.0: bind them to the server's
    own loopback address instead (this process only)."""
    from franky_sim import franka_server
    from franky_sim.franka_server import NonBlockingReceiver

    def setup(self: franka_server.FrankaServer, network_udp_port: int) -> None:
        self._FrankaServer__client_udp_port = network_udp_port
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((self.hostname, 0))
        udp.setblocking(False)
        self._FrankaServer__udp_socket = udp
        self._FrankaServer__udp_receiver = NonBlockingReceiver(udp)
        self._FrankaServer__message_id = 0

    franka_server.FrankaServer._setup_udp_connection = setup


def _patch_measured_pose() -> None:
    """franky-sim's ``kinematics(q)`` returns ``data.oMf[tcp]`` itself, not a copy: every state
    component computed from it (``O_T_EE``, ``O_T_EE_d``, ``O_T_EE_c``) aliases one pose, the
    last one computed in the step, the forward kinematics of the desired joints. The state then
    reports the arm where it was commanded to be, never its lag, and a driver that closes a
    loop on ``O_T_EE`` (a real arm's measured pose) acts on a pose the arm is not at. Return a
    copy instead (this process only)."""
    from franky_sim.base_simulator import BaseRobot

    aliasing = BaseRobot.kinematics
    if hasattr(aliasing, "__wrapped__"):
        return  # patched already

    @functools.wraps(aliasing)
    def kinematics(self: BaseRobot, q: object) -> object:
        return aliasing(self, q).copy()

    BaseRobot.kinematics = kinematics


def _patch_joint_velocity_feedforward() -> None:
    """franky-sim's joint position controller is ``kp (q_d - q) - kv dq``: it damps the joints
    toward rest, so an arm following a moving ``q_d`` trails it by ``kv / kp`` seconds (its
    gains: 0.1 s), a lag a Franka arm's own joint controller does not have. Damp toward the
    desired velocity instead, ``kv (dq_d - dq)``, with ``dq_d`` franky-sim's own filtered
    derivative of ``q_d`` (this process only). Every motion franky-sim executes (joint and
    Cartesian ones, and holding still) goes through this controller."""
    import pinocchio as pin
    from franky_sim.base_simulator import BaseRobot

    if hasattr(BaseRobot._joint_position_control, "__wrapped__"):
        return  # patched already
    lagging = BaseRobot._joint_position_control

    @functools.wraps(lagging)
    def control(self: BaseRobot, target_q: object) -> None:
        state = self._get_state()
        q, dq = np.asarray(state.q), np.asarray(state.dq)
        dq_d = self._tracked_state_components["q_d"].observers["fd"].last_derivative
        model, data = self._BaseRobot__model, self._BaseRobot__data
        pin.computeAllTerms(model, data, q, dq)
        coriolis = data.nle - data.g
        tau = self.kp * (np.asarray(target_q) - q) + self.kv * (dq_d - dq) + coriolis
        self.torque_control(tau)

    BaseRobot._joint_position_control = control


def _make_server_class() -> type:
    """A franky-sim robot server whose state can hold an injected reflex."""
    from franky_sim import FrankaRobotServer
    from franky_sim.franka_robot_protocol import (
        AutomaticErrorRecoveryCommand,
        AutomaticErrorRecoveryStatus,
        MoveStatus,
        RobotCommand,
        RobotMode,
    )
    from franky_sim.franka_server import BaseCommand

    class Recovery(AutomaticErrorRecoveryCommand):
        def handle(self, server: TwinRobotServer) -> None:
            server.clear_reflex()
            self.reply(AutomaticErrorRecoveryStatus.kSuccess)

    class TwinRobotServer(FrankaRobotServer):
        def __init__(self, *args: object, **kwargs: object):
            super().__init__(*args, **kwargs)
            self._FrankaServer__command_class_map[RobotCommand.kAutomaticErrorRecovery] = Recovery
            self.lock = threading.Lock()
            self.pending_reflex: int | None = None
            self.reflex: int | None = None
            self.reflex_count = 0
            self.fail_next_grasp = False

        def _bind_children(self, hostname: str) -> None:
            super()._bind_children(hostname)
            gripper = self.gripper_server
            start_grasp = gripper.start_grasp

            def grasp(width: float, speed: float, force: float, *args: object) -> None:
                # An injected failure: the fingers close on nothing, past the grasp's tolerance
                # (franky-sim then answers the grasp with libfranka's "command failed").
                with self.lock:
                    fail, self.fail_next_grasp = self.fail_next_grasp, False
                start_grasp(width, speed, force, *args)
                if fail:
                    gripper._robot.set_hand_goal(0.0, speed, force)

            gripper.start_grasp = grasp

        def clear_reflex(self) -> None:
            with self.lock:
                self.reflex = None
                self.pending_reflex = None

        def _pre_process_commands(self) -> None:
            super()._pre_process_commands()
            with self.lock:
                pending, self.pending_reflex = self.pending_reflex, None
            if pending is None:
                return
            self.reflex = pending
            self.reflex_count += 1
            motion = self.current_motion_id
            if motion and self._tcp_socket is not None:
                BaseCommand.send_response(
                    self._tcp_socket, RobotCommand.kMove, motion, MoveStatus.kReflexAborted
                )
            self.stop_motion(send_preemption_signal=False)
            self.reset_current_motion_id()

        def start_motion(self, *args: object, **kwargs: object) -> None:
            if self.reflex is not None:
                raise RuntimeError("the robot is in reflex mode; recover first")
            super().start_motion(*args, **kwargs)

        @property
        def robot_state(self):
            state = super().robot_state
            if self.reflex is None:
                return state
            flags = tuple(i == self.reflex for i in range(len(state.current_errors)))
            return state.replace(
                robot_mode=RobotMode.kReflex,
                errors=flags,
                current_errors=flags,
                last_motion_errors=flags,
                reflex_reason=flags,
            )

    return TwinRobotServer


def _serve_control(listener: socket.socket, server: object, stop: threading.Event) -> None:
    """Answer JSON-line commands on the control socket until ``stop``."""
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        with connection:
            connection.settimeout(5.0)
            reader = connection.makefile("r", encoding="utf-8")
            try:
                line = reader.readline(4096)
            except (TimeoutError, OSError):
                continue
            try:
                request = json.loads(line)
                reply = _handle(request, server, stop)
            except (ValueError, KeyError, TypeError) as error:
                reply = {"ok": False, "error": str(error)}
            connection.sendall((json.dumps(reply) + "\n").encode())


def _handle(request: dict, server: object, stop: threading.Event) -> dict:
    cmd = request["cmd"]
    if cmd == "ping":
        return {"ok": True, "reflex_count": server.reflex_count}
    if cmd == "reflex":
        name = request.get("error", "cartesian_reflex")
        if name not in LIBFRANKA_ERRORS:
            raise ValueError(f"unknown libfranka error {name!r}")
        with server.lock:
            server.pending_reflex = LIBFRANKA_ERRORS.index(name)
        return {"ok": True}
    if cmd == "grasp_fail":
        with server.lock:
            server.fail_next_grasp = True
        return {"ok": True}
    if cmd == "quit":
        stop.set()
        return {"ok": True}
    raise ValueError(f"unknown command {cmd!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hostname", default="auto", help="a 127.x.y.z address, or auto")
    parser.add_argument("--initial-q", default="", help="7 comma-separated joint angles (rad)")
    parser.add_argument("--initial-width", type=float, default=0.08)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("numba").setLevel(logging.WARNING)

    from franky_sim.mujoco_simulator import MujocoSimulator

    _patch_udp_to_loopback()
    _patch_measured_pose()
    _patch_joint_velocity_feedforward()
    server_class = _make_server_class()
    sim = MujocoSimulator(enable_visualization=False)
    kwargs = {"initial_hand_width": args.initial_width}
    if args.initial_q:
        kwargs["initial_q"] = tuple(float(v) for v in args.initial_q.split(","))
    robot = sim.add_robot(**kwargs)
    sim.init()
    server = server_class(robot, loopback_candidates(args.hostname))
    server.init()
    sim.start()

    stop = threading.Event()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((server.hostname, 0))
    listener.listen(4)
    control = threading.Thread(target=_serve_control, args=(listener, server, stop), daemon=True)
    control.start()

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the parent is gone
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    ready = {"ready": True, "hostname": server.hostname, "control_port": listener.getsockname()[1]}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()

    period = 0.001
    next_tick = time.perf_counter()
    try:
        while not stop.is_set():
            server.process_commands()
            sim.step()
            server.send_state()
            next_tick += period
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.05:
                next_tick = time.perf_counter()  # running behind: do not try to catch up
    finally:
        listener.close()
        server.cleanup()
        sim.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
