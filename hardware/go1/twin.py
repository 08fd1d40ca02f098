"""A Go1 on loopback: a UDP peer that speaks the robot's low-level wire format over MuJoCo.

:class:`Go1Twin` binds a UDP socket on a loopback address (127.0.0.0/8 only) and plays the
Go1's motion controller: every LowCmd datagram that arrives (checksum checked, as the robot
does) sets the twelve motors' q, dq, Kp, Kd and tau, and is answered at once with a LowState
datagram (same layout and checksum as the robot's). Between datagrams the physics runs on its
own clock, one 2 ms step per SDK period, so the twin keeps moving whether or not commands come.

The PD law runs in the physics at every step, as the robot's motor drivers run it: each
MuJoCo actuator's gain and bias are set from the last LowCmd (force = Kp (q* − q) + Kd (dq* −
q̇) + τ, clamped to the motor's torque limit; the damping part integrated implicitly), so the
driver's real code path, the SDK included, runs unchanged against it.

"Reality" differs from the simulator the policy was trained in: another floor friction,
heavier links and a payload on the trunk (:class:`~sim2online_envs.hardware.go1.config.Go1Config`
``twin_*`` settings).

Faults for tests (:meth:`Go1Twin.set_faults`): dropped answers, delayed answers, reordered
answers, bad checksums, silence, and pushes on the trunk or on a joint.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import ipaddress
import logging
import math
import random
import select
import socket
import threading
import time
from typing import Any

import mujoco
import numpy as np

from sim2online_envs.hardware.go1 import protocol
from sim2online_envs.hardware.go1.config import Go1Config
from sim2online_envs.robots.go1 import FOOT_NAMES, NUM_JOINTS
from sim2online_envs.sim.go1 import load_model

logger = logging.getLogger(__name__)

__all__ = ["Go1Twin", "TwinFaults"]


@dataclasses.dataclass
class TwinFaults:
    """What the twin does wrong on purpose (all off by default).

    :param drop: probability of not answering a LowCmd.
    :param delay: seconds every answer is held back.
    :param reorder: every other answer arrives after the next one.
    :param corrupt: number of coming answers sent with a wrong checksum.
    :param silent: answer nothing at all (the robot stopped).
    """

    drop: float = 0.0
    delay: float = 0.0
    reorder: bool = False
    corrupt: int = 0
    silent: bool = False


class Go1Twin:
    """The Go1's motion controller on loopback, backed by MuJoCo (see the module docstring).

    :param config: settings; ``robot_ip`` must be a loopback address, ``robot_port`` 0 picks a
        free port (read it from :attr:`port`).
    :param seed: seed of the fault injection's random draws.
    """

    def __init__(self, config: Go1Config | None = None, seed: int = 0):
        self.config = config or Go1Config(robot_ip="127.0.0.1", robot_port=0)
        if not ipaddress.ip_address(self.config.robot_ip).is_loopback:
            raise ValueError(f"the twin binds loopback addresses only, got {self.config.robot_ip}")
        self.model = load_model(timestep=self.config.sdk_dt)
        self._apply_reality()
        self.data = mujoco.MjData(self.model)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.faults = TwinFaults()
        self._trunk = self.model.body("trunk").id
        self._floor = self.model.geom("floor").id
        self._foot_geoms = {
            self.model.geom(f"{leg}_foot").id: i for i, leg in enumerate(FOOT_NAMES)
        }
        self._sensor = {
            name: slice(
                int(self.model.sensor(name).adr[0]), int(self.model.sensor(name).adr[0]) + 3
            )
            for name in ("gyro", "accelerometer", "local_linvel")
        }
        quat_adr = int(self.model.sensor("orientation").adr[0])
        self._quat = slice(quat_adr, quat_adr + 4)
        self._record = protocol.new_lowstate()
        self._record["bms"]["SOC"] = 95
        self._push: tuple[np.ndarray, float] | None = None
        self._joint_push: tuple[int, float, float] | None = None
        self._truth: dict[str, np.ndarray] = {}
        # (tick, truth) of the LowStates sent in the last few seconds: the truth of the very
        # state a reading carried, for tests that compare an estimate with it
        self._sent_truth: collections.deque[tuple[int, dict[str, np.ndarray]]] = collections.deque(
            maxlen=4000
        )
        self._peer: tuple[str, int] | None = None
        self._pending: list[tuple[float, int, bytes, tuple[str, int]]] = []
        self._odd = False
        self._sequence = 0
        self._flush = False
        self._feedforward = np.zeros(NUM_JOINTS)
        #: The last valid LowCmd, decoded (what the motors are doing now), or None.
        self.last_command: dict[str, np.ndarray] | None = None
        self.stats = {"commands": 0, "bad_commands": 0, "answers": 0, "steps": 0, "overruns": 0}
        self.reset()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((self.config.robot_ip, self.config.robot_port))
        self._socket.setblocking(False)
        self.port = self._socket.getsockname()[1]
        self._t0 = time.monotonic()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="go1-twin", daemon=True)
        self._thread.start()

    # -- reality ------------------------------------------------------------------------------

    def _apply_reality(self) -> None:
        cfg, model = self.config, self.model
        model.geom_friction[model.geom("floor").id, 0] = cfg.twin_friction
        scale = np.ones(model.nbody)
        scale[1:] = cfg.twin_mass_scale
        trunk = model.body("trunk").id
        new_mass = model.body_mass * scale
        new_mass[trunk] += cfg.twin_trunk_added_mass
        ratio = np.divide(
            new_mass, model.body_mass, out=np.ones(model.nbody), where=model.body_mass > 0
        )
        model.body_mass[:] = new_mass
        model.body_inertia[:] *= ratio[:, None]
        # the robot's motors start limp: no command has arrived yet
        model.actuator_gainprm[:, 0] = 0.0
        model.actuator_biasprm[:, :3] = 0.0
        data = mujoco.MjData(model)
        mujoco.mj_setConst(model, data)

    def reset(self, qpos: np.ndarray | None = None, lying: bool = False) -> None:
        """Put the robot down like an operator would: standing at home (feet on the floor),
        lying (``lying=True``: the lie-down pose, trunk on the floor), or at ``qpos`` (19,)."""
        with self._lock:
            model, data = self.model, self.data
            mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
            if qpos is not None:
                data.qpos[:] = qpos
            elif lying:
                data.qpos[7:] = np.tile(self.config.lie_down_pose, 4)
            data.ctrl[:] = data.qpos[7:]
            model.actuator_gainprm[:, 0] = 0.0
            model.actuator_biasprm[:, :3] = 0.0
            if qpos is None:
                mujoco.mj_kinematics(model, data)
                lowest = min(data.geom_xpos[g][2] - model.geom_size[g][0] for g in self._foot_geoms)
                trunk_bottom = (
                    data.xpos[self._trunk][2] - model.geom_size[model.geom("trunk").id][2]
                )
                data.qpos[2] -= min(lowest, trunk_bottom)
            mujoco.mj_forward(model, data)
            self._push = None
            self._joint_push = None
            self._update_truth()

    # -- faults and pushes ---------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> None:
        """Change the injected faults (fields of :class:`TwinFaults`); ``set_faults()`` with
        ``reset=True`` clears them all."""
        with self._lock:
            if changes.pop("reset", False):
                self.faults = TwinFaults()
                self._flush = True  # held and delayed answers are lost with the fault
            self.faults = dataclasses.replace(self.faults, **changes)

    def push(self, force: np.ndarray, duration: float, torque: np.ndarray | None = None) -> None:
        """Push the trunk with a world-frame force [N] (and torque [N·m]) for ``duration`` s of
        robot time."""
        wrench = np.concatenate(
            [np.asarray(force, float), np.zeros(3) if torque is None else torque]
        )
        with self._lock:
            self._push = (wrench, self.data.time + duration)

    def push_joint(self, joint: int, torque: float, duration: float) -> None:
        """Apply an external torque [N·m] to one joint for ``duration`` s of robot time."""
        if not 0 <= joint < NUM_JOINTS:
            raise ValueError(f"joint must be in [0, {NUM_JOINTS}), got {joint}")
        with self._lock:
            self._joint_push = (joint, float(torque), self.data.time + duration)

    def ground_truth(self, tick: int | None = None) -> dict[str, np.ndarray]:
        """The simulation's truth (for tests, never the policy): after the last physics step, or
        the truth sent with the LowState of controller tick ``tick`` (the newest sent at or
        before it), so that an estimate is compared with the moment it was measured."""
        with self._lock:
            truth = self._truth
            if tick is not None:
                newest = next((t for stamp, t in reversed(self._sent_truth) if stamp <= tick), None)
                if newest is None:
                    raise LookupError(f"no LowState of tick {tick} is remembered")
                truth = newest
            return {key: value.copy() for key, value in truth.items()}

    # -- the controller's loop -----------------------------------------------------------------

    def _run(self) -> None:
        period = self.config.sdk_dt / self.config.time_scale
        next_step = time.perf_counter() + period
        try:
            while self._running:
                if self._flush:
                    self._flush = False
                    self._pending.clear()
                now = time.perf_counter()
                timeout = max(0.0, min(next_step - now, self._next_release(now) - now))
                readable, _, _ = select.select([self._socket], [], [], timeout)
                if readable:
                    self._receive()
                now = time.perf_counter()
                self._release(now)
                if now >= next_step:
                    self._step()
                    next_step += period
                    if now - next_step > 10 * period:
                        self.stats["overruns"] += 1
                        next_step = now + period
        except Exception:
            logger.exception("Go1 twin: the loop failed; the twin stops answering")

    def _next_release(self, now: float) -> float:
        return self._pending[0][0] if self._pending else now + 1.0

    def _receive(self) -> None:
        for _ in range(64):  # bounded: the socket cannot hold us forever
            try:
                data, address = self._socket.recvfrom(2048)
            except BlockingIOError:
                return
            try:
                command = protocol.decode_lowcmd(data, NUM_JOINTS)
            except protocol.ProtocolError as error:
                self.stats["bad_commands"] += 1
                logger.debug("Go1 twin: ignored a datagram: %s", error)
                continue
            self.stats["commands"] += 1
            with self._lock:
                self._apply_command(command)
                answer = self._encode_state()
            self._answer(answer, address)

    def _apply_command(self, command: dict[str, np.ndarray]) -> None:
        model, data = self.model, self.data
        kp, kd = command["kp"], command["kd"]
        model.actuator_gainprm[:, 0] = kp
        model.actuator_biasprm[:, 1] = -kp
        model.actuator_biasprm[:, 2] = -kd
        data.ctrl[:] = command["q"]
        self._feedforward = command["tau"] + kd * command["dq"]
        self.last_command = command

    def _answer(self, datagram: bytes, address: tuple[str, int]) -> None:
        faults = self.faults
        if faults.silent or (faults.drop > 0 and self._rng.random() < faults.drop):
            return
        if faults.corrupt > 0:
            with self._lock:
                self.faults.corrupt -= 1
            datagram = datagram[:-4] + bytes(b ^ 0xFF for b in datagram[-4:])
        if faults.reorder:
            # every other answer overtaken by the next one: it arrives alone, after it
            self._odd = not self._odd
            if self._odd:
                period = self.config.sdk_dt / self.config.time_scale
                self._send(datagram, address, faults.delay + 1.5 * period)
                return
        self._send(datagram, address, faults.delay)

    def _send(self, datagram: bytes, address: tuple[str, int], delay: float) -> None:
        if delay > 0:
            self._sequence += 1
            heapq.heappush(
                self._pending, (time.perf_counter() + delay, self._sequence, datagram, address)
            )
            return
        try:
            self._socket.sendto(datagram, address)
            self.stats["answers"] += 1
        except OSError as error:
            logger.debug("Go1 twin: answer to %s failed: %s", address, error)

    def _release(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            _, _, datagram, address = heapq.heappop(self._pending)
            self._send(datagram, address, 0.0)

    def _step(self) -> None:
        with self._lock:
            model, data = self.model, self.data
            data.qfrc_applied[6:] = self._feedforward
            data.xfrc_applied[self._trunk] = 0.0
            if self._push is not None:
                wrench, until = self._push
                if data.time < until:
                    data.xfrc_applied[self._trunk] = wrench
                else:
                    self._push = None
            if self._joint_push is not None:
                joint, torque, until = self._joint_push
                if data.time < until:
                    data.qfrc_applied[6 + joint] += torque
                else:
                    self._joint_push = None
            mujoco.mj_step(model, data)
            self.stats["steps"] += 1
            self._update_truth()

    def _foot_forces(self) -> np.ndarray:
        forces = np.zeros(4)
        wrench = np.zeros(6)
        data = self.data
        for i in range(data.ncon):
            contact = data.contact[i]
            for geom in (contact.geom1, contact.geom2):
                leg = self._foot_geoms.get(int(geom))
                if leg is not None:
                    mujoco.mj_contactForce(self.model, data, i, wrench)
                    forces[leg] += abs(wrench[0])
        return forces

    def _update_truth(self) -> None:
        data = self.data
        self._truth = {
            "time": np.array(data.time),
            "qpos": data.qpos.copy(),
            "qvel": data.qvel.copy(),
            "local_linvel": data.sensordata[self._sensor["local_linvel"]].copy(),
            "base_pos": data.qpos[:3].copy(),
            "foot_force": self._foot_forces(),
            "trunk_contact": np.array(
                any(
                    {int(c.geom1), int(c.geom2)} == {self._trunk_geom(), self._floor}
                    for c in data.contact[: data.ncon]
                )
            ),
        }

    def _trunk_geom(self) -> int:
        return self.model.geom("trunk").id

    def _encode_state(self) -> bytes:
        data, record, truth = self.data, self._record, self._truth
        imu = record["imu"]
        quat = data.sensordata[self._quat]
        imu["quaternion"] = quat
        imu["gyroscope"] = data.sensordata[self._sensor["gyro"]]
        imu["accelerometer"] = data.sensordata[self._sensor["accelerometer"]]
        w, x, y, z = quat
        imu["rpy"] = (
            math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y)),
            math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x)))),
            math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)),
        )
        motors = record["motorState"]
        motors["mode"][:NUM_JOINTS] = 0x0A
        motors["q"][:NUM_JOINTS] = data.qpos[7:]
        motors["dq"][:NUM_JOINTS] = data.qvel[6:]
        motors["tauEst"][:NUM_JOINTS] = np.clip(
            np.round(data.actuator_force * protocol.TAU_SCALE), -32768, 32767
        )
        record["footForce"] = np.clip(np.round(truth["foot_force"]), -32768, 32767)
        record["footForceEst"] = record["footForce"]
        # the controller's clock in milliseconds of robot time (slowed with the physics)
        elapsed = (time.monotonic() - self._t0) * self.config.time_scale
        record["tick"] = int(elapsed * 1000.0) & 0xFFFFFFFF
        self._sent_truth.append((int(record["tick"]), truth))  # _update_truth makes a new dict
        return protocol.encode_lowstate(record)

    # -- life cycle ----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.config.robot_ip, self.port

    def close(self) -> None:
        """Stop the loop and release the socket (idempotent)."""
        if not self._running:
            return
        self._running = False
        self._thread.join(timeout=2.0)
        self._socket.close()

    def __enter__(self) -> Go1Twin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
