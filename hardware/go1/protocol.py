"""The Go1 low-level UDP wire format (unitree_legged_sdk 3.8), written once.

The SDK's Python structs (``LowCmd``, ``LowState``) are not what travels: the SDK packs them
into shorter datagrams. Measured against ``unitree-legged-sdk`` 3.8.20231105 (the tests in
``tests/test_hw_go1_protocol.py`` check every claim against the installed SDK):

* LowCmd, 614 bytes: head ``fe ef``, level ``ff`` (low level), 20 motor commands of 27 bytes
  from offset 22 (mode u8, q f32, dq f32, tau i16 ×256, Kp u16 ×32, Kd u16 ×16, 12 reserved
  bytes), BMS command, 40 remote bytes, reserve, CRC32 at 610.
* LowState, 807 bytes: IMU from offset 22 (quaternion wxyz, gyro, accelerometer, rpy: f32;
  temperature i8), 20 motor states of 32 bytes from offset 75 (mode, q f32, dq f32, ddq i16,
  tauEst i16 ×256, q_raw, dq_raw, ddq_raw, temperature, reserve), BMS, foot forces (i16),
  estimated foot forces, tick (u32, the controller's milliseconds), 40 remote bytes, reserve,
  CRC32 at 803.
* The CRC is Unitree's ``crc32_core``: polynomial 0x04C11DB7, initial value 0xFFFFFFFF, fed
  32-bit little-endian words MSB first, over the first ``size // 4 - 1`` words (608 bytes of a
  LowCmd, 800 of a LowState). That is CRC-32/MPEG-2 of the byte-swapped words, computed here
  with zlib's reflected CRC-32 on bit-reversed bytes (C speed, no Python bit loop).
* ``UDP.Recv()`` returns -1 when nothing arrived (or the head is wrong), -3 on a bad checksum
  or a short datagram, 0 otherwise; it keeps the newest datagram in the socket's queue.

The driver talks through the SDK; the twin, the tests and the check tool use this codec.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = [
    "HEAD",
    "LOWCMD_DTYPE",
    "LOWCMD_SIZE",
    "LOWLEVEL",
    "LOWSTATE_DTYPE",
    "LOWSTATE_SIZE",
    "NUM_MOTOR_SLOTS",
    "ProtocolError",
    "crc32_core",
    "decode_lowcmd",
    "decode_lowstate",
    "encode_lowcmd",
    "encode_lowstate",
    "new_lowstate",
]

HEAD = b"\xfe\xef"
#: levelFlag of low-level commands (the SDK's LOWLEVEL, not exported by its Python module).
LOWLEVEL = 0xFF
#: Motor slots on the wire (the Go1 uses the first 12, in FR FL RR RL × hip thigh calf order).
NUM_MOTOR_SLOTS = 20
LOWCMD_SIZE = 614
LOWSTATE_SIZE = 807
#: Fixed-point scales of the 16-bit fields.
TAU_SCALE = 256.0
KP_SCALE = 32.0
KD_SCALE = 16.0

_HEADER = [
    ("head", "u1", (2,)),
    ("levelFlag", "u1"),
    ("frameReserve", "u1"),
    ("SN", "<u4", (2,)),
    ("version", "<u4", (2,)),
    ("bandWidth", "<u2"),
]
MOTOR_CMD_DTYPE = np.dtype(
    [("mode", "u1"), ("q", "<f4"), ("dq", "<f4"), ("tau", "<i2"), ("Kp", "<u2"), ("Kd", "<u2"),
     ("reserve", "<u4", (3,))]
)  # fmt: skip
LOWCMD_DTYPE = np.dtype(
    [*_HEADER, ("motorCmd", MOTOR_CMD_DTYPE, (NUM_MOTOR_SLOTS,)), ("bmsOff", "u1"),
     ("bmsReserve", "u1", (3,)), ("wirelessRemote", "u1", (40,)), ("reserve", "<u4"),
     ("crc", "<u4")]
)  # fmt: skip
IMU_DTYPE = np.dtype(
    [("quaternion", "<f4", (4,)), ("gyroscope", "<f4", (3,)), ("accelerometer", "<f4", (3,)),
     ("rpy", "<f4", (3,)), ("temperature", "i1")]
)  # fmt: skip
MOTOR_STATE_DTYPE = np.dtype(
    [("mode", "u1"), ("q", "<f4"), ("dq", "<f4"), ("ddq", "<i2"), ("tauEst", "<i2"),
     ("q_raw", "<f4"), ("dq_raw", "<f4"), ("ddq_raw", "<i2"), ("temperature", "i1"),
     ("reserve", "<u4", (2,))]
)  # fmt: skip
BMS_STATE_DTYPE = np.dtype(
    [("version_h", "u1"), ("version_l", "u1"), ("bms_status", "u1"), ("SOC", "u1"),
     ("current", "<i4"), ("cycle", "<u2"), ("BQ_NTC", "i1", (2,)), ("MCU_NTC", "i1", (2,)),
     ("cell_vol", "u1", (10,))]
)  # fmt: skip
LOWSTATE_DTYPE = np.dtype(
    [*_HEADER, ("imu", IMU_DTYPE), ("motorState", MOTOR_STATE_DTYPE, (NUM_MOTOR_SLOTS,)),
     ("bms", BMS_STATE_DTYPE), ("footForce", "<i2", (4,)), ("footForceEst", "<i2", (4,)),
     ("tick", "<u4"), ("wirelessRemote", "u1", (40,)), ("reserve", "<u4"), ("crc", "<u4")]
)  # fmt: skip
assert LOWCMD_DTYPE.itemsize == LOWCMD_SIZE and LOWSTATE_DTYPE.itemsize == LOWSTATE_SIZE

_REVERSED_BITS = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))


class ProtocolError(ValueError):
    """A datagram that is not a valid LowCmd or LowState (size, head, level or checksum)."""


def crc32_core(data: bytes | bytearray | memoryview) -> int:
    """Unitree's CRC32 of ``data`` (a whole number of 32-bit little-endian words)."""
    words = np.frombuffer(data, dtype="<u4").byteswap().tobytes()
    reflected = zlib.crc32(words.translate(_REVERSED_BITS)) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _checked_span(size: int) -> int:
    """Bytes the checksum covers: the first size // 4 - 1 words."""
    return (size // 4 - 1) * 4


def _seal(buffer: bytearray, size: int) -> bytes:
    struct.pack_into("<I", buffer, size - 4, crc32_core(buffer[: _checked_span(size)]))
    return bytes(buffer)


def _open(data: bytes, size: int, what: str) -> np.void:
    if len(data) != size:
        raise ProtocolError(f"{what} must be {size} bytes, got {len(data)}")
    if data[:2] != HEAD:
        raise ProtocolError(f"{what} head is {data[:2].hex()}, expected {HEAD.hex()}")
    (crc,) = struct.unpack_from("<I", data, size - 4)
    expected = crc32_core(data[: _checked_span(size)])
    if crc != expected:
        raise ProtocolError(f"{what} checksum {crc:#010x}, computed {expected:#010x}")
    return np.frombuffer(data, dtype=LOWCMD_DTYPE if size == LOWCMD_SIZE else LOWSTATE_DTYPE)[0]


def encode_lowcmd(
    q: np.ndarray,
    dq: np.ndarray,
    tau: np.ndarray,
    kp: np.ndarray,
    kd: np.ndarray,
    mode: int = 0x0A,
) -> bytes:
    """A LowCmd datagram for the 12 motors (for tests and tools; the driver uses the SDK)."""
    record = np.zeros((), dtype=LOWCMD_DTYPE)
    record["head"] = np.frombuffer(HEAD, dtype="u1")
    record["levelFlag"] = LOWLEVEL
    motors = record["motorCmd"]
    count = len(q)
    motors["mode"][:count] = mode
    motors["q"][:count] = q
    motors["dq"][:count] = dq
    motors["tau"][:count] = np.trunc(np.asarray(tau) * TAU_SCALE)
    motors["Kp"][:count] = np.trunc(np.asarray(kp) * KP_SCALE)
    motors["Kd"][:count] = np.trunc(np.asarray(kd) * KD_SCALE)
    return _seal(bytearray(record.tobytes()), LOWCMD_SIZE)


def decode_lowcmd(data: bytes, count: int = 12) -> dict[str, np.ndarray]:
    """The first ``count`` motor commands of a LowCmd datagram, in SI units (float64).

    Raises ProtocolError on a wrong size, head, level or checksum.
    """
    record = _open(data, LOWCMD_SIZE, "LowCmd")
    if record["levelFlag"] != LOWLEVEL:
        raise ProtocolError(f"LowCmd levelFlag is {int(record['levelFlag']):#x}, not low level")
    motors = record["motorCmd"][:count]
    return {
        "mode": motors["mode"].astype(np.int64),
        "q": motors["q"].astype(np.float64),
        "dq": motors["dq"].astype(np.float64),
        "tau": motors["tau"] / TAU_SCALE,
        "kp": motors["Kp"] / KP_SCALE,
        "kd": motors["Kd"] / KD_SCALE,
        "remote": record["wirelessRemote"].copy(),
    }


def new_lowstate() -> np.ndarray:
    """A zeroed LowState record (head and level set) for :func:`encode_lowstate`."""
    record = np.zeros((), dtype=LOWSTATE_DTYPE)
    record["head"] = np.frombuffer(HEAD, dtype="u1")
    record["levelFlag"] = LOWLEVEL
    return record


def encode_lowstate(record: np.ndarray) -> bytes:
    """The LowState datagram of ``record`` (a :data:`LOWSTATE_DTYPE` scalar), checksum set."""
    return _seal(bytearray(record.tobytes()), LOWSTATE_SIZE)


def decode_lowstate(data: bytes) -> np.void:
    """A LowState datagram as a :data:`LOWSTATE_DTYPE` record (read-only view of ``data``).

    Raises ProtocolError on a wrong size, head or checksum. ``tauEst`` is raw: divide by
    :data:`TAU_SCALE`.
    """
    return _open(data, LOWSTATE_SIZE, "LowState")
