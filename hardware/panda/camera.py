"""The Intel RealSense D455 colour stream, through pyrealsense2's sensor API.

The driver opens the colour sensor's RGB8 profile and starts it into a ``frame_queue``;
:meth:`RealSenseCamera.latest` drains the queue without waiting and returns the newest frame,
or raises :class:`~sim2online_envs.hardware.base.StaleReadingError` when even that is older
than allowed. A ``pyrealsense2.software_device`` (the twin's camera) has the same sensor API,
so the same code runs on it unchanged: pass it as ``device``.

Frame times: a frame stamped in the host's clock (``system_time``, or ``global_time``, the
D400's hardware clock mapped to the host's) gives its age from that stamp; otherwise the time
the driver first saw it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim2online_envs.hardware.base import ConnectionTimeoutError, HardwareError, StaleReadingError
from sim2online_envs.hardware.panda.markers import CameraIntrinsics

logger = logging.getLogger(__name__)

__all__ = ["CameraFrame", "RealSenseCamera"]


@dataclass(frozen=True)
class CameraFrame:
    """One RGB frame (H, W, 3) uint8, when it was taken (``time.monotonic``), its number."""

    rgb: np.ndarray
    stamp: float
    number: int


class RealSenseCamera:
    """The colour stream of one RealSense (or a software device standing in for it)."""

    def __init__(
        self,
        serial: str = "",
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        device: Any = None,
    ):
        self.serial = serial
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self._device = device
        self.name = f"RealSense {serial or '(first found)'} colour {width}x{height}@{fps}"
        self._sensor: Any = None
        self._queue: Any = None
        self._last: CameraFrame | None = None
        self.intrinsics: CameraIntrinsics | None = None
        self.frames_seen = 0
        self._lock = threading.Lock()

    def connect(self, timeout: float) -> None:
        """Open and start the colour stream; wait (bounded) for its first frame."""
        import pyrealsense2 as rs

        self._rs = rs
        device = self._device if self._device is not None else self._find_device(rs)
        sensor, profile = self._find_profile(rs, device)
        intr = profile.as_video_stream_profile().get_intrinsics()
        self.intrinsics = CameraIntrinsics(
            intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy, tuple(intr.coeffs)
        )
        self._queue = rs.frame_queue(2, keep_frames=True)
        try:
            sensor.open(profile)
            sensor.start(self._queue)
        except RuntimeError as error:
            raise HardwareError(self.name, f"could not start the colour stream: {error}") from None
        self._sensor = sensor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._drain() is not None:
                return
            time.sleep(0.005)
        self.close()
        raise ConnectionTimeoutError(self.name, f"no colour frame within {timeout:g} s")

    def _find_device(self, rs: Any) -> Any:
        devices = list(rs.context().query_devices())
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
        if self.serial:
            for device, serial in zip(devices, serials, strict=True):
                if serial == self.serial:
                    return device
            raise HardwareError(
                self.name, f"not connected (RealSense devices found: {serials or 'none'})"
            )
        if len(devices) != 1:
            raise HardwareError(
                self.name,
                f"{len(devices)} RealSense devices found ({serials}); set camera_serial",
            )
        return devices[0]

    def _find_profile(self, rs: Any, device: Any) -> tuple[Any, Any]:
        seen = []
        for sensor in device.query_sensors():
            for profile in sensor.get_stream_profiles():
                if (
                    profile.stream_type() != rs.stream.color
                    or not profile.is_video_stream_profile()
                ):
                    continue
                video = profile.as_video_stream_profile()
                seen.append(f"{video.width()}x{video.height()}@{video.fps()} {profile.format()}")
                if (
                    video.width() == self.width
                    and video.height() == self.height
                    and video.fps() == self.fps
                    and profile.format() == rs.format.rgb8
                ):
                    return sensor, profile
        raise HardwareError(self.name, f"has no such RGB8 colour profile (it offers {seen})")

    def _drain(self) -> CameraFrame | None:
        """Take every queued frame, keep the newest; None if none arrived."""
        newest = None
        while True:
            frame = self._queue.poll_for_frame()
            if not frame:
                break
            newest = frame
        if newest is None:
            return None
        rs = self._rs
        now_mono, now_wall = time.monotonic(), time.time()
        domain = newest.get_frame_timestamp_domain()
        if domain in (rs.timestamp_domain.system_time, rs.timestamp_domain.global_time):
            age = max(0.0, now_wall - newest.get_timestamp() / 1000.0)
            stamp = now_mono - age
        else:
            stamp = now_mono
        rgb = np.asanyarray(newest.get_data()).reshape(self.height, self.width, 3).copy()
        self._last = CameraFrame(rgb, stamp, int(newest.get_frame_number()))
        self.frames_seen += 1
        return self._last

    def latest(self, max_age: float) -> CameraFrame:
        """The newest frame; StaleReadingError if none or older than ``max_age`` s."""
        with self._lock:
            if self._queue is None:
                raise HardwareError(self.name, "not connected")
            self._drain()
            last = self._last
        if last is None:
            raise StaleReadingError(self.name, "no frame yet")
        age = time.monotonic() - last.stamp
        if age > max_age:
            raise StaleReadingError(self.name, f"newest frame is {age:.3f} s old (> {max_age} s)")
        return last

    def stop(self) -> None:
        """A camera has no unsafe state."""

    def close(self) -> None:
        with self._lock:
            sensor, self._sensor = self._sensor, None
        if sensor is None:
            return
        for step in (sensor.stop, sensor.close):
            try:
                step()
            except RuntimeError as error:
                logger.debug("%s: %s", self.name, error)
        self._queue = None
