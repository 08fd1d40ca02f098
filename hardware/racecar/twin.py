"""The race car's twin: the firmware in simavr on a pty, a dynamic car, NatNet on loopback.

``RaceCarTwin`` (in the caller's process) starts
``python -m sim2online_envs.hardware.racecar.twin``, a separate process, as the car is a
separate machine. That process:

1. builds (once, cached: :mod:`~sim2online_envs.hardware.racecar.firmware`) and runs the
   firmware's own ELF in simavr through the ``racecar-twin`` harness;
2. opens a pseudo-terminal pair: the driver opens the slave (``/dev/pts/N``) with pyserial as it
   opens ``/dev/ttyACM0`` on the car; a relay thread moves bytes between the pty master and the
   harness's UART socket, and is where serial faults are injected (cut, garbage, bad CRCs);
3. reads the PWM the firmware puts out (Timer1's compare registers, from the harness's side
   channel) and turns it into steering angle and throttle with the calibration, which drive
   the package's dynamic bicycle (:class:`~sim2online_envs.sim.racecar.RaceCarVectorBackend`,
   ``dynamics="dynamic"``) with :data:`REALITY` parameters unlike the simulator's defaults, at
   the mocap rate;
4. streams the car's rigid-body pose to NatNet clients on 127.0.0.1 (:mod:`.natnet_server`), in
   mocap coordinates (the calibration's inverse), delayed by the set latency.

The parent talks to it over its stdin/stdout, one JSON object per line (no pickle): commands
``state``, ``place``, ``fault`` and ``quit``, each answered by one line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select
import socket
import subprocess
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from sim2online_envs.hardware.racecar import firmware
from sim2online_envs.hardware.racecar.config import RaceCarConfig, load_calibration
from sim2online_envs.hardware.racecar.mocap import ArenaTransform
from sim2online_envs.hardware.racecar.natnet_server import NatNetServer, quaternion_about
from sim2online_envs.robots import racecar as robot

__all__ = ["FAULTS", "REALITY", "RaceCarTwin", "TwinError"]

logger = logging.getLogger(__name__)

_NOMINAL = robot.PRESETS[robot.DEFAULT_PRESET]["car"]
#: The twin's "reality": the simulator's nominal car (the default preset) changed where a real
#: one differs: heavier with its battery and mocap markers, a dusty floor with rolling
#: resistance (which the study's model leaves out: a real car coasts to rest), a softer motor
#: with more drag, a slower servo and ESC.
REALITY: dict[str, float] = {
    "mass": 1.1 * _NOMINAL["mass"],
    "inertia_z": 1.1 * _NOMINAL["inertia_z"],
    "friction": 0.85 * _NOMINAL["friction"],
    "motor_cm1": 0.92 * _NOMINAL["motor_cm1"],
    "viscous_drag": 1.2 * _NOMINAL["viscous_drag"],
    # 5 % of the car's weight [N]
    "rolling_resistance": 0.05 * 9.81 * 1.1 * _NOMINAL["mass"],
    "steering_time_constant": 1.6 * _NOMINAL["steering_time_constant"],
    "throttle_time_constant": 1.4 * _NOMINAL["throttle_time_constant"],
}
#: Faults the twin injects (``RaceCarTwin.fault(name, value)``).
FAULTS = (
    "serial_cut",  # bytes stop both ways (value: True cut, False restore)
    "garbage",  # value: bytes (hex) pushed into the firmware's receiver
    "corrupt",  # value: the next N frames to the firmware get one bit flipped
    "reboot",  # the board resets
    "mocap_silent",  # value: True stops frames, False resumes
    "body_lost",  # value: True marks the body untracked, False tracked
    "latency",  # value: seconds of mocap latency
)
RIGID_BODY_ID = 1


class TwinError(RuntimeError):
    """The twin did not start or stopped answering."""


# ------------------------------------------------------------------------------------------------
# The twin process
# ------------------------------------------------------------------------------------------------


class _Twin:
    def __init__(self, settings: Mapping[str, Any]):
        from sim2online_envs.sim.racecar import RaceCarVectorBackend

        self.rate = float(settings["mocap_rate"])
        self.latency = float(settings["latency"])
        self.calibration = load_calibration(settings.get("calibration") or None)
        self.transform = ArenaTransform(self.calibration)
        self.rng = np.random.default_rng(settings.get("seed"))
        build = firmware.build(twin=True)

        self._closed = threading.Event()
        self._lock = threading.Lock()
        # Serial: a pty pair; the slave stays open here so the master never sees a hang-up.
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._uart, uart_child = socket.socketpair()
        self._ctl, ctl_child = socket.socketpair()
        self.harness = subprocess.Popen(
            [
                str(build.harness),
                str(build.elf),
                str(uart_child.fileno()),
                str(ctl_child.fileno()),
                str(int(settings["supply_mv"])),
            ],
            pass_fds=(uart_child.fileno(), ctl_child.fileno()),
        )
        uart_child.close()
        ctl_child.close()
        self.cut = False
        self.corrupt = 0
        self._inject = bytearray()
        self.pwm: dict[str, float] = {"t": 0.0, "steer_us": 0.0, "throttle_us": 0.0}
        self.neutral_events: deque[dict[str, float]] = deque(maxlen=16)

        self.car = RaceCarVectorBackend(
            num_worlds=1,
            dynamics="dynamic",
            control_dt=1.0 / self.rate,
            params=REALITY,
            domain_randomization=False,
            arena_half_size=robot.ARENA_HALF_SIZE,
            start_distance_range=robot.START_DISTANCE_RANGE,
        )
        self.state = self.car.reset_worlds(np.array([0]), [self.rng], {"start_pose": [0, 0, 0]})
        self.silent = False
        self.lost = False
        self._history: deque[tuple[float, np.ndarray]] = deque(maxlen=int(self.rate * 2) + 2)
        self._steer_target = 0.0
        self.server = NatNetServer(
            str(settings["rigid_body"]), RIGID_BODY_ID, clock_hz=float(settings["clock_hz"])
        )
        self._threads = [
            threading.Thread(target=self._relay, name="twin-relay", daemon=True),
            threading.Thread(target=self._read_pwm, name="twin-pwm", daemon=True),
            threading.Thread(target=self._physics, name="twin-physics", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- serial relay ---------------------------------------------------------------------------

    def _relay(self) -> None:
        frame_corrupted = False
        while not self._closed.is_set():
            ready, _, _ = select.select([self.master, self._uart], [], [], 0.05)
            with self._lock:
                injected, self._inject = bytes(self._inject), bytearray()
            if injected:
                self._uart.sendall(injected)
            if self.master in ready:
                data = bytearray(os.read(self.master, 4096))
                if self.cut:
                    continue
                for i, byte in enumerate(data):
                    if byte == 0:
                        if frame_corrupted:
                            self.corrupt = max(0, self.corrupt - 1)
                        frame_corrupted = False
                    elif self.corrupt > 0 and not frame_corrupted:
                        data[i] = byte ^ 0x01 if byte != 0x01 else 0x03
                        frame_corrupted = True
                try:
                    self._uart.sendall(bytes(data))
                except OSError:
                    return
            if self._uart in ready:
                try:
                    data = self._uart.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                if not self.cut:
                    os.write(self.master, data)

    def _read_pwm(self) -> None:
        buffer = b""
        neutral = self.calibration.throttle_neutral_us
        while not self._closed.is_set():
            ready, _, _ = select.select([self._ctl], [], [], 0.1)
            if not ready:
                continue
            data = self._ctl.recv(65536)
            if not data:
                return
            *lines, buffer = (buffer + data).split(b"\n")
            for line in lines:
                message = json.loads(line)
                previous = self.pwm
                if message["throttle_us"] == neutral and previous["throttle_us"] != neutral:
                    self.neutral_events.append(
                        {"t": message["t"], "frame_t": message["frame_t"], "wall": time.monotonic()}
                    )
                self.pwm = message

    # -- the car and the mocap -----------------------------------------------------------------

    def _physics(self) -> None:
        dt = 1.0 / self.rate
        deadline = time.perf_counter()
        while not self._closed.is_set():
            pwm = self.pwm
            cal = self.calibration
            if pwm["steer_us"] > 0:  # no pulses: the servo holds its last position
                self._steer_target = cal.steering_angle(pwm["steer_us"])
            # No pulses: the ESC's own failsafe gives no power.
            throttle = cal.throttle_duty(pwm["throttle_us"]) if pwm["throttle_us"] > 0 else 0.0
            with self._lock:
                self.state = self.car.apply(
                    {"steering": np.array([self._steer_target]), "throttle": np.array([throttle])}
                )
                now = time.monotonic()
                self._history.append((now, self.state["pose"][0].copy()))
                sample = self._delayed(now)
            if sample is not None and not self.silent:
                stamp, pose = sample
                # The stamp says what the cameras' pipeline delays, not this thread's hiccups
                # on a loaded machine (those show as gaps between frames, as on a real network).
                stamp = max(stamp, now - self.latency - dt)
                position, heading = self.transform.to_mocap(tuple(pose))
                self.server.send_frame(
                    position,
                    quaternion_about(cal.up_axis, heading),
                    tracked=not self.lost,
                    exposure=stamp,
                    timestamp=stamp,
                )
            deadline += dt
            remaining = deadline - time.perf_counter()
            if remaining > 0:
                time.sleep(remaining)
            elif remaining < -dt:
                deadline = time.perf_counter()

    def _delayed(self, now: float) -> tuple[float, np.ndarray] | None:
        """The newest pose at least ``latency`` old (what the cameras saw then)."""
        chosen = None
        for stamp, pose in self._history:
            if stamp <= now - self.latency + 1e-9:
                chosen = (stamp, pose)
            else:
                break
        return chosen

    # -- commands -------------------------------------------------------------------------------

    def handle(self, message: Mapping[str, Any]) -> dict[str, Any]:
        command = message.get("cmd")
        if command == "state":
            with self._lock:
                state = {key: np.asarray(value)[0].tolist() for key, value in self.state.items()}
            velocity = state["velocity"]
            return {
                **state,
                "speed": math.hypot(velocity[0], velocity[1]),
                "pwm": self.pwm,
                "neutral_events": list(self.neutral_events),
                "natnet_clients": self.server.client_count,
                "faults": {
                    "serial_cut": self.cut,
                    "mocap_silent": self.silent,
                    "body_lost": self.lost,
                    "latency": self.latency,
                },
            }
        if command == "place":
            pose = message.get("pose")
            if pose is None:
                low, high = robot.START_DISTANCE_RANGE
                distance = self.rng.uniform(low, high)
                bearing, heading = self.rng.uniform(-math.pi, math.pi, size=2)
                pose = [distance * math.cos(bearing), distance * math.sin(bearing), heading]
            with self._lock:
                self.state = self.car.reset_worlds(
                    np.array([0]), [self.rng], {"start_pose": np.asarray(pose, dtype=float)}
                )
                self._history.clear()
            return {"pose": list(map(float, pose))}
        if command == "fault":
            return self._fault(str(message.get("name")), message.get("value"))
        return {"error": f"unknown command {command!r}; known: state, place, fault, quit"}

    def _fault(self, name: str, value: Any) -> dict[str, Any]:
        if name == "serial_cut":
            self.cut = bool(value)
        elif name == "garbage":
            with self._lock:
                self._inject += bytes.fromhex(str(value))
        elif name == "corrupt":
            self.corrupt = int(value)
        elif name == "reboot":
            self._ctl.sendall(b"reset\n")
        elif name == "mocap_silent":
            self.silent = bool(value)
        elif name == "body_lost":
            self.lost = bool(value)
        elif name == "latency":
            self.latency = float(value)
        else:
            return {"error": f"unknown fault {name!r}; known: {list(FAULTS)}"}
        return {"ok": True}

    def close(self) -> None:
        self._closed.set()
        for thread in self._threads:
            thread.join(timeout=1.0)
        self.server.close()
        with contextlib.suppress(OSError):
            self._ctl.sendall(b"quit\n")
        try:
            self.harness.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.harness.kill()
            self.harness.wait(timeout=2.0)
        for closer in (self._uart.close, self._ctl.close):
            closer()
        os.close(self.master)
        os.close(self._slave)


def _serve(settings: Mapping[str, Any]) -> int:
    """The twin process: start, say ready, answer commands until quit or end of input."""
    out = sys.stdout
    try:
        twin = _Twin(settings)
    except Exception as error:  # the parent gets the reason in one line
        out.write(json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n")
        out.flush()
        return 1
    out.write(
        json.dumps({"ready": True, "port": twin.port, "natnet_port": twin.server.port}) + "\n"
    )
    out.flush()
    try:
        for line in sys.stdin:
            message = json.loads(line)
            if message.get("cmd") == "quit":
                break
            out.write(json.dumps(twin.handle(message)) + "\n")
            out.flush()
    finally:
        twin.close()
        with contextlib.suppress(BrokenPipeError):  # the parent may already be gone
            out.write(json.dumps({"bye": True}) + "\n")
            out.flush()
    return 0


# ------------------------------------------------------------------------------------------------
# The handle
# ------------------------------------------------------------------------------------------------


class RaceCarTwin:
    """The twin process, seen from the driver's side (start, faults, ground truth, close).

    :param config: the car's settings (the twin reads ``mocap_rate``, ``twin_latency``,
        ``twin_supply_mv``, ``rigid_body``, ``mocap_clock_hz`` and ``calibration``).
    :param seed: seeds the twin's random starts.
    :param start_timeout: seconds to build and start before a :class:`TwinError`.
    """

    def __init__(
        self, config: RaceCarConfig, seed: int | None = None, start_timeout: float = 120.0
    ):
        firmware.build(twin=True)  # build errors surface here, with the compiler's output
        settings = {
            "mocap_rate": config.mocap_rate,
            "latency": config.twin_latency,
            "supply_mv": config.twin_supply_mv,
            "rigid_body": config.rigid_body,
            "clock_hz": config.mocap_clock_hz,
            "calibration": config.calibration,
            "seed": seed,
        }
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sim2online_envs.hardware.racecar.twin", json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._buffer = b""
        self._lock = threading.Lock()
        self._closed = False
        ready = self._read(start_timeout)
        if not ready.get("ready"):
            self.close()
            raise TwinError(f"the race car twin did not start: {ready.get('error', ready)}")
        self.port: str = ready["port"]
        self.natnet_port: int = int(ready["natnet_port"])

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        stdout = self._process.stdout
        assert stdout is not None
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TwinError(f"the race car twin did not answer within {timeout:.1f} s")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    raise TwinError(f"the race car twin exited ({self._process.poll()})")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def call(self, command: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """Send one command, return its answer (a :class:`TwinError` when none comes)."""
        with self._lock:
            if self._closed:
                raise TwinError("the race car twin is closed")
            stdin = self._process.stdin
            assert stdin is not None
            try:
                stdin.write((json.dumps({"cmd": command, **fields}) + "\n").encode())
                stdin.flush()
            except OSError as error:
                raise TwinError(f"the race car twin is gone: {error}") from None
            reply = self._read(timeout)
        if "error" in reply:
            raise TwinError(reply["error"])
        return reply

    def state(self) -> dict[str, Any]:
        """Ground truth: pose, velocity, speed, PWM, failsafe events (for tests and checks)."""
        return self.call("state")

    def place(self, pose: Any = None) -> list[float]:
        """Put the car at ``pose`` (x, y, psi) at rest, or at a random start (the operator)."""
        fields = {} if pose is None else {"pose": [float(v) for v in pose]}
        return self.call("place", **fields)["pose"]

    def fault(self, name: str, value: Any = True) -> None:
        """Inject one of :data:`FAULTS`."""
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).hex()
        self.call("fault", name=name, value=value)

    def close(self) -> None:
        """Stop the twin process (idempotent, bounded)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        process = self._process
        try:
            if process.stdin is not None:
                process.stdin.write(b'{"cmd": "quit"}\n')
                process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5.0)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> RaceCarTwin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(_serve(json.loads(sys.argv[1])))
