"""Motion capture for the race car: the NatNet client, the arena transform, the velocity filter.

:class:`NatNetMocap` reads the car's rigid body through the ``natnet`` client (OptiTrack Motive,
unicast) and turns each frame into the state keys the task reads (``pose`` in the arena frame,
``velocity`` in the body frame). Faults, by name:

* ``mocap_stale``: no frame for ``mocap_max_age`` seconds (server silent, network down);
* ``body_lost``: the body was not tracked (missing, or tracking-valid bit clear) in
  ``lost_frames`` consecutive frames;
* ``mocap_late``: the server's own latency stamp (camera mid-exposure to transmit) is above
  ``mocap_max_latency``.

Velocities come from a least-squares line through the last ``velocity_window`` poses (position
and unwrapped heading against the frames' exposure times): the slope of a line fitted to N
evenly spaced samples is the velocity at the window's middle, so it lags by half the window's
span ((N - 1) / 2 frames at the mocap rate) and its noise falls as N^-1.5. World velocities are
turned into the body frame with the heading at the same moment (the fitted heading at the
window's middle), so that a car turning at a steady speed reads no side-slip it does not have.
A pose that implies more than ``velocity_jump_speed`` since the previous one (a frame still in
flight from before the car was placed or carried, a mocap glitch) is held back: confirmed by the
next frame it restarts the window, contradicted it is dropped (:class:`VelocityEstimator`);
``Reading.extra`` counts both.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from sim2online_envs.hardware.base import ConnectionTimeoutError, Reading, StaleReadingError
from sim2online_envs.hardware.racecar.config import Calibration, RaceCarConfig

__all__ = [
    "FAULT_BODY_LOST",
    "FAULT_MOCAP_LATE",
    "FAULT_MOCAP_STALE",
    "ArenaTransform",
    "NatNetMocap",
    "VelocityEstimator",
]

logger = logging.getLogger(__name__)

FAULT_MOCAP_STALE = "mocap_stale"
FAULT_BODY_LOST = "body_lost"
FAULT_MOCAP_LATE = "mocap_late"


class ArenaTransform:
    """Mocap rigid-body pose -> the car's centre of mass (x, y) and heading in the arena."""

    def __init__(self, calibration: Calibration):
        self.calibration = calibration
        c = calibration
        self._cos, self._sin = math.cos(c.yaw), math.sin(c.yaw)

    def floor(self, position: tuple[float, float, float]) -> tuple[float, float]:
        """Mocap position -> the floor's (a, b) coordinates (before the arena's origin/yaw)."""
        x, y, z = position
        return (x, -z) if self.calibration.up_axis == "y" else (x, y)

    def body_heading(self, quaternion: tuple[float, float, float, float]) -> float:
        """Heading of the body's x axis on the floor (rad, floor coordinates)."""
        qx, qy, qz, qw = quaternion
        # The body x axis rotated into the mocap frame: first column of the rotation matrix.
        ax = 1.0 - 2.0 * (qy * qy + qz * qz)
        ay = 2.0 * (qx * qy + qw * qz)
        az = 2.0 * (qx * qz - qw * qy)
        a, b = self.floor((ax, ay, az))
        return math.atan2(b, a)

    def to_arena(
        self, position: tuple[float, float, float], quaternion: tuple[float, float, float, float]
    ) -> tuple[float, float, float]:
        """(x, y, psi) of the car in the arena frame."""
        c = self.calibration
        a, b = self.floor(position)
        heading = self.body_heading(quaternion)
        ch, sh = math.cos(heading), math.sin(heading)
        a += ch * c.com_offset[0] - sh * c.com_offset[1]
        b += sh * c.com_offset[0] + ch * c.com_offset[1]
        da, db = a - c.origin[0], b - c.origin[1]
        x = self._cos * da + self._sin * db
        y = -self._sin * da + self._cos * db
        psi = heading + c.yaw_offset - c.yaw
        return x, y, math.atan2(math.sin(psi), math.cos(psi))

    def to_mocap(
        self, pose: tuple[float, float, float]
    ) -> tuple[tuple[float, float, float], float]:
        """The inverse (for the twin): mocap position and the body's floor heading."""
        c = self.calibration
        x, y, psi = pose
        heading = psi + c.yaw - c.yaw_offset
        a = c.origin[0] + self._cos * x - self._sin * y
        b = c.origin[1] + self._sin * x + self._cos * y
        ch, sh = math.cos(heading), math.sin(heading)
        a -= ch * c.com_offset[0] - sh * c.com_offset[1]
        b -= sh * c.com_offset[0] + ch * c.com_offset[1]
        position = (a, 0.05, -b) if c.up_axis == "y" else (a, b, 0.05)
        return position, heading


class VelocityEstimator:
    """Least-squares slope of (x, y, unwrapped psi) over the last ``window`` poses.

    A pose farther from the window's newest than ``max_speed`` allows (over the time between
    them, never less than one ``frame_period``: arrival jitter bunches frames) is held back, not
    fitted. The next pose decides: near the held one, the car really is elsewhere (carried)
    and the window restarts from the two; near the window, the held pose was a glitch and is
    dropped. A window of one pose (the first after a reset, which may be a frame still in flight
    from before the car was placed) is simply replaced. A pose not newer than the window's
    newest is dropped.
    """

    def __init__(self, window: int, max_speed: float = math.inf, frame_period: float = 0.0):
        self.window = int(window)
        self.max_speed = float(max_speed)
        self.frame_period = float(frame_period)
        self._samples: deque[tuple[float, float, float, float]] = deque(maxlen=self.window)
        self._pending: tuple[float, float, float, float] | None = None
        #: Windows restarted on a confirmed jump, and poses kept out of the fit.
        self.restarts = 0
        self.rejected = 0

    def reset(self) -> None:
        self._samples.clear()
        self._pending = None

    def _near(self, reference: tuple[float, ...], stamp: float, x: float, y: float) -> bool:
        allowed = self.max_speed * max(stamp - reference[0], self.frame_period)
        return math.hypot(x - reference[1], y - reference[2]) <= allowed

    def add(self, stamp: float, x: float, y: float, psi: float) -> bool:
        """Take a pose; True where it is now the newest pose of the fit (False: held or dropped)."""
        if not self._samples:
            self._samples.append((stamp, x, y, psi))
            return True
        newest = self._samples[-1]
        if stamp <= newest[0]:
            self.rejected += 1
            return False
        if self._near(newest, stamp, x, y):
            if self._pending is not None:  # the held pose was a glitch
                self.rejected += 1
                self._pending = None
            step = math.atan2(math.sin(psi - newest[3]), math.cos(psi - newest[3]))
            self._samples.append((stamp, x, y, newest[3] + step))
            return True
        if len(self._samples) == 1:  # one pose (just after a reset) is no evidence: replace it
            self._samples.clear()
            self._samples.append((stamp, x, y, psi))
            self._pending = None
            self.restarts += 1
            return True
        pending = self._pending
        if pending is not None and stamp > pending[0] and self._near(pending, stamp, x, y):
            self._samples.clear()
            self._samples.append(pending)
            step = math.atan2(math.sin(psi - pending[3]), math.cos(psi - pending[3]))
            self._samples.append((stamp, x, y, pending[3] + step))
            self._pending = None
            self.restarts += 1
            return True
        if pending is not None:
            self.rejected += 1
        self._pending = (stamp, x, y, psi)
        return False

    def velocity(self) -> np.ndarray:
        """(vx, vy, omega) in the body frame (zeros until two poses have arrived)."""
        if len(self._samples) < 2:
            return np.zeros(3)
        data = np.array(self._samples)
        t = data[:, 0] - data[:, 0].mean()
        denominator = float(t @ t)
        if denominator <= 0:
            return np.zeros(3)
        slopes = (t @ (data[:, 1:] - data[:, 1:].mean(axis=0))) / denominator
        vx_world, vy_world, omega = slopes
        psi = float(data[:, 3].mean())  # the fitted heading at the window's middle
        c, s = math.cos(psi), math.sin(psi)
        return np.array([c * vx_world + s * vy_world, -s * vx_world + c * vy_world, omega])


def _natnet_client_class() -> Any:
    """``natnet.NatNetClient`` with its unused unicast data socket bound to the local address.

    natnet 0.3.0 binds that socket to 0.0.0.0 in unicast mode although unicast frames arrive on
    the command socket; binding it to ``local_ip_address`` keeps the client on loopback in tests
    (and on the mocap network's interface on the car's PC).
    """
    import socket

    import natnet

    class LocalNatNetClient(natnet.NatNetClient):
        def _NatNetClient__create_data_socket(self, port: int) -> socket.socket:  # noqa: N802
            if self.use_multicast:
                raise natnet.NatNetError("the race car driver uses NatNet unicast only")
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            sock.bind((self.local_ip_address, 0))
            sock.settimeout(0.0)
            return sock

    return LocalNatNetClient


class NatNetMocap:
    """The car's rigid body from OptiTrack Motive over NatNet unicast (a :class:`Driver`)."""

    def __init__(self, config: RaceCarConfig, calibration: Calibration):
        self.config = config
        self.name = (
            f"race car motion capture (NatNet {config.mocap_host}:{config.mocap_command_port}, "
            f"body {config.rigid_body!r})"
        )
        self.transform = ArenaTransform(calibration)
        self._estimator = VelocityEstimator(
            config.velocity_window, config.velocity_jump_speed, 1.0 / config.mocap_rate
        )
        self._lock = threading.Lock()
        self._client: Any = None
        self._body_id: int | None = None
        self._descriptions: list[Any] = []
        self._last_seen: float | None = None
        self._last_pose: np.ndarray | None = None
        self._last_stamp = 0.0
        self._last_latency = 0.0
        self._untracked = 0
        self._frames = 0
        self._arrivals: deque[float] = deque(maxlen=240)

    # -- Driver ----------------------------------------------------------------------------------

    def connect(self, timeout: float) -> None:
        """Connect (bounded), resolve the body's id, wait for its first frame."""
        client_class = _natnet_client_class()
        config = self.config
        client = client_class(
            server_ip_address=config.mocap_host,
            local_ip_address=config.mocap_local,
            command_port=config.mocap_command_port,
            use_multicast=False,
        )
        deadline = time.monotonic() + timeout
        try:
            client.connect(timeout=timeout)
        except TimeoutError:
            raise ConnectionTimeoutError(
                self.name, f"no NatNet server answered within {timeout:.1f} s"
            ) from None
        except OSError as error:
            raise ConnectionTimeoutError(self.name, f"cannot reach the server: {error}") from None
        self._client = client
        client.on_data_frame_received_event.handlers.append(self._on_frame)
        client.on_data_description_received_event.handlers.append(self._on_descriptions)
        client.run_async()
        if config.rigid_body.isdigit():
            self._body_id = int(config.rigid_body)
        else:
            while self._body_id is None:
                if time.monotonic() > deadline:
                    self.close()
                    raise ConnectionTimeoutError(
                        self.name,
                        f"no rigid body named {config.rigid_body!r} in the server's model "
                        f"definitions (seen: {self._body_names()})",
                    )
                client.request_modeldef()
                time.sleep(0.05)
        while self._last_seen is None:
            if time.monotonic() > deadline:
                self.close()
                raise ConnectionTimeoutError(self.name, f"no frame within {timeout:.1f} s")
            time.sleep(0.01)

    def _body_names(self) -> list[str]:
        return [body.name for descs in self._descriptions for body in descs.rigid_bodies]

    def _on_descriptions(self, descriptions: Any) -> None:
        self._descriptions.append(descriptions)
        for body in descriptions.rigid_bodies:
            if body.name == self.config.rigid_body:
                self._body_id = int(body.id_num)

    def _on_frame(self, frame: Any) -> None:
        arrival = time.monotonic()
        if self._body_id is None:
            return
        body = next((b for b in frame.rigid_bodies if b.id_num == self._body_id), None)
        suffix = frame.suffix
        latency = 0.0
        if suffix.stamp_transmit is not None and suffix.stamp_camera_mid_exposure is not None:
            latency = (suffix.stamp_transmit - suffix.stamp_camera_mid_exposure) / (
                self.config.mocap_clock_hz
            )
        with self._lock:
            self._frames += 1
            self._arrivals.append(arrival)
            self._last_latency = latency
            tracked = body is not None and body.tracking_valid is not False
            values = (*body.pos, *body.rot) if body is not None else ()
            if not tracked or not all(math.isfinite(v) for v in values):
                self._untracked += 1
                self._last_seen = arrival
                return
            self._untracked = 0
            x, y, psi = self.transform.to_arena(body.pos, body.rot)
            stamp = arrival - latency
            self._last_seen = arrival
            if self._estimator.add(stamp, x, y, psi):  # a held or dropped pose is not reported
                self._last_pose = np.array([x, y, psi])
                self._last_stamp = stamp

    def sample(self, now: float | None = None) -> Reading:
        """The newest pose and velocity; invalid (never raised) with a fault name."""
        now = time.monotonic() if now is None else now
        with self._lock:
            seen = self._last_seen
            if seen is None:
                return Reading({}, now, valid=False, fault=FAULT_MOCAP_STALE)
            if self._last_pose is None:
                return Reading({}, now, valid=False, fault=FAULT_BODY_LOST)
            state = {"pose": self._last_pose.copy(), "velocity": self._estimator.velocity()}
            extra = {
                "latency": self._last_latency,
                "untracked": self._untracked,
                "velocity_restarts": self._estimator.restarts,
                "poses_rejected": self._estimator.rejected,
            }
            if now - seen > self.config.mocap_max_age:
                return Reading(state, self._last_stamp, False, FAULT_MOCAP_STALE, extra)
            if self._untracked >= self.config.lost_frames:
                return Reading(state, self._last_stamp, False, FAULT_BODY_LOST, extra)
            if self._last_latency > self.config.mocap_max_latency:
                return Reading(state, self._last_stamp, False, FAULT_MOCAP_LATE, extra)
            return Reading(state, self._last_stamp, True, "", extra)

    def latest(self, max_age: float) -> Reading:
        reading = self.sample()
        if not reading.valid and reading.fault == FAULT_MOCAP_STALE:
            raise StaleReadingError(self.name, "no recent frame")
        if reading.valid and reading.age() > max_age:
            raise StaleReadingError(self.name, f"newest pose is {reading.age():.3f} s old")
        return reading

    def reset_filter(self) -> None:
        """Forget the velocity window (between episodes, after the car was carried)."""
        with self._lock:
            self._estimator.reset()

    def rate(self) -> float:
        """Frames per second over the last ~2 s of arrivals (0 before two frames)."""
        with self._lock:
            arrivals = list(self._arrivals)
        if len(arrivals) < 2 or arrivals[-1] == arrivals[0]:
            return 0.0
        return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])

    def send(self, command: Mapping[str, np.ndarray]) -> None:
        """Motion capture takes no command."""
        del command

    def stop(self) -> None:
        """Nothing moves here."""

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.shutdown()
