"""A NatNet 3.1 unicast server on loopback: the twin's OptiTrack Motive, as the client sees it.

It speaks the part of NatNet that a unicast client uses (message ids and layouts of
NatNet SDK 3.x, read back by the ``natnet`` PyPI client in the tests):

* ``NAT_CONNECT`` (0) -> ``NAT_SERVERINFO`` (1): application name (256 bytes), server version,
  NatNet version (3.1.0.0), then the high-resolution clock frequency (u64), data port (u16),
  multicast flag (u8) and group (4 bytes), as Motive sends them.
* ``NAT_KEEPALIVE`` (10): registers the sender; frames go to every address that sent a connect
  or a keepalive in the last ``client_timeout`` seconds (unicast: the client's command socket).
* ``NAT_REQUEST_MODELDEF`` (4) -> ``NAT_MODELDEF`` (5): one rigid body description (name, id).
* ``NAT_REQUEST`` (2) -> ``NAT_RESPONSE`` (3) with an int 0 (accepted).
* ``NAT_FRAMEOFDATA`` (7), sent by :meth:`NatNetServer.send_frame`: no marker sets, no
  unlabeled markers, the rigid body (id, position, quaternion x y z w, mean error, params bit 0
  = tracking valid), no skeletons, labeled markers, force plates or devices, then the suffix
  (timecode, timestamp f64, camera mid-exposure / data received / transmit stamps in ticks of
  the high-resolution clock, params).

All fields little-endian. The server binds 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time

__all__ = ["NatNetServer", "quaternion_about"]

logger = logging.getLogger(__name__)

NAT_CONNECT = 0
NAT_SERVERINFO = 1
NAT_REQUEST = 2
NAT_RESPONSE = 3
NAT_REQUEST_MODELDEF = 4
NAT_MODELDEF = 5
NAT_FRAMEOFDATA = 7
NAT_KEEPALIVE = 10
NATNET_VERSION = (3, 1, 0, 0)
SERVER_VERSION = (2, 3, 0, 0)


def _message(message_id: int, payload: bytes) -> bytes:
    return struct.pack("<HH", message_id, len(payload)) + payload


def quaternion_about(axis: str, angle: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by ``angle`` rad about the mocap ``axis`` ("y" or "z")."""
    import math

    s, c = math.sin(angle / 2.0), math.cos(angle / 2.0)
    return (0.0, s, 0.0, c) if axis == "y" else (0.0, 0.0, s, c)


class NatNetServer:
    """Answers NatNet requests on a loopback UDP port and sends frames to the clients."""

    def __init__(
        self,
        body_name: str,
        body_id: int,
        port: int = 0,
        host: str = "127.0.0.1",
        clock_hz: float = 1e7,
        client_timeout: float = 5.0,
    ):
        if not host.startswith("127."):
            raise ValueError(f"the twin's NatNet server binds loopback only, got {host!r}")
        self.body_name = body_name
        self.body_id = int(body_id)
        self.clock_hz = float(clock_hz)
        self.client_timeout = float(client_timeout)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((host, port))
        self.address = self._socket.getsockname()
        self._clients: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._frame = 0
        self._thread = threading.Thread(target=self._serve, name="natnet-server", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.address[1])

    def ticks(self, monotonic: float | None = None) -> int:
        """The high-resolution clock (ticks of ``clock_hz``) at ``monotonic`` seconds."""
        return int((time.monotonic() if monotonic is None else monotonic) * self.clock_hz)

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    # -- requests ---------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._closed.is_set():
            ready, _, _ = select.select([self._socket], [], [], 0.1)
            if not ready:
                continue
            try:
                data, sender = self._socket.recvfrom(4096)
            except OSError:
                return
            if len(data) < 4:
                continue
            message_id = struct.unpack_from("<H", data)[0]
            now = time.monotonic()
            if message_id in (NAT_CONNECT, NAT_KEEPALIVE):
                with self._lock:
                    self._clients[sender] = now
            reply = None
            if message_id == NAT_CONNECT:
                reply = _message(NAT_SERVERINFO, self._server_info())
            elif message_id == NAT_REQUEST_MODELDEF:
                reply = _message(NAT_MODELDEF, self._model_definitions())
            elif message_id == NAT_REQUEST:
                reply = _message(NAT_RESPONSE, struct.pack("<i", 0))
            if reply is not None:
                self._sendto(reply, sender)

    def _server_info(self) -> bytes:
        name = b"sim2online race car twin".ljust(256, b"\0")
        return (
            name
            + bytes(SERVER_VERSION)
            + bytes(NATNET_VERSION)
            + struct.pack("<QHB", int(self.clock_hz), 0, 0)
            + bytes(4)
        )

    def _model_definitions(self) -> bytes:
        body = (
            struct.pack("<I", 1)  # one data set
            + struct.pack("<I", 1)  # type 1: rigid body
            + self.body_name.encode() + b"\0"
            + struct.pack("<II3fI", self.body_id, 0xFFFFFFFF, 0.0, 0.0, 0.0, 0)
        )  # fmt: skip
        return body

    def _sendto(self, data: bytes, address: tuple[str, int]) -> None:
        try:
            self._socket.sendto(data, address)
        except OSError as error:
            logger.debug("natnet server: send to %s failed: %s", address, error)

    # -- frames -----------------------------------------------------------------------------------

    def send_frame(
        self,
        position: tuple[float, float, float] | None,
        quaternion: tuple[float, float, float, float],
        tracked: bool,
        exposure: float,
        timestamp: float,
    ) -> None:
        """One frame of data to every client: the body at ``position`` (None: not in the frame).

        ``exposure`` is the ``time.monotonic`` second of the camera mid-exposure (the pose's
        time); the transmit stamp is now, so the client reads the latency from the two.
        """
        self._frame += 1
        bodies = b""
        if position is not None:
            bodies = struct.pack(
                "<I3f4ffH", self.body_id, *position, *quaternion, 0.0005, 1 if tracked else 0
            )
        count = 1 if position is not None else 0
        now = time.monotonic()
        exposure_ticks = self.ticks(exposure)
        payload = (
            struct.pack("<IIII", self._frame, 0, 0, count)
            + bodies
            + struct.pack("<III", 0, 0, 0)  # skeletons, labeled markers, force plates
            + struct.pack("<I", 0)  # devices
            + struct.pack("<IId", 0, 0, timestamp)
            + struct.pack("<QQQH", exposure_ticks, exposure_ticks, self.ticks(now), 0)
        )
        message = _message(NAT_FRAMEOFDATA, payload)
        with self._lock:
            expired = [a for a, t in self._clients.items() if now - t > self.client_timeout]
            for address in expired:
                del self._clients[address]
            clients = list(self._clients)
        for address in clients:
            self._sendto(message, address)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=1.0)
        self._socket.close()
