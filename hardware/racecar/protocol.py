"""The race car's serial wire format, once: COBS frames with a CRC-16, host side.

Every frame is ``COBS(payload || crc16(payload)) || 0x00``; the CRC is CRC-16/CCITT-FALSE
(poly 0x1021, init 0xFFFF, the ``crc`` package's ``Crc16.IBM_3740``) over the payload, appended
little-endian; COBS is the ``cobs`` package's. Multi-byte fields are little-endian. The
firmware's C counterpart is ``hardware/firmware/racecar/src/car.c``; the layout table is in
``docs/hardware/racecar.md``.

Host to car: :class:`Command` (drive or stop), :class:`Config` (failsafe timeout, bad-frame
limit), :class:`Ping`. Car to host: :class:`Status`, in answer to every valid frame and every
100 ms on its own (the heartbeat).

``cobs`` and ``crc`` are imported when the first frame is built or read, so importing the
package works without them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Any

__all__ = [
    "FLAG_ARM",
    "NEUTRAL_US",
    "PULSE_MAX_US",
    "PULSE_MIN_US",
    "Command",
    "Config",
    "FailsafeReason",
    "FrameError",
    "FrameReader",
    "MessageType",
    "Ping",
    "Status",
    "decode_frame",
    "encode_frame",
]

#: Pulse widths the firmware accepts and clamps to, µs, and the neutral of servo and ESC.
PULSE_MIN_US = 1000
PULSE_MAX_US = 2000
NEUTRAL_US = 1500
#: Command flag: drive (without it the firmware stops: throttle neutral, steering held).
FLAG_ARM = 0x01
#: Longest payload + CRC either side sends (``CAR_MAX_FRAME``).
MAX_FRAME = 32


class MessageType(IntEnum):
    """First byte of a payload."""

    COMMAND = 0x01
    CONFIG = 0x02
    PING = 0x03
    STATUS = 0x81


class FailsafeReason(IntEnum):
    """Why the firmware's failsafe began (``Status.reason``)."""

    NONE = 0
    BOOT = 1
    TIMEOUT = 2
    BAD_FRAMES = 3
    HOST_STOP = 4


class FrameError(ValueError):
    """A frame that is not valid COBS, fails its CRC, or has an unknown type or length."""


_COMMAND = struct.Struct("<BHHHB")
_CONFIG = struct.Struct("<BHHB")
_PING = struct.Struct("<BH")
_STATUS = struct.Struct("<BHHHBBHIHHBBB")
_CRC = struct.Struct("<H")


@lru_cache(maxsize=1)
def _crc() -> Any:
    from crc import Calculator, Crc16

    return Calculator(Crc16.IBM_3740, optimized=True)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (check value of b"123456789": 0x29B1)."""
    return int(_crc().checksum(data))


def encode_frame(payload: bytes) -> bytes:
    """``payload`` on the wire: COBS of payload and CRC, then the 0x00 delimiter."""
    from cobs import cobs

    return cobs.encode(payload + _CRC.pack(crc16(payload))) + b"\x00"


def decode_frame(encoded: bytes) -> bytes:
    """The payload of one frame without its delimiter; :class:`FrameError` if it is bad."""
    from cobs import cobs

    try:
        raw = cobs.decode(encoded)
    except cobs.DecodeError as error:
        raise FrameError(f"bad COBS ({error})") from None
    if len(raw) < 3 or len(raw) > MAX_FRAME:
        raise FrameError(f"frame of {len(raw)} bytes (3..{MAX_FRAME})")
    payload, (check,) = raw[:-2], _CRC.unpack(raw[-2:])
    if crc16(payload) != check:
        raise FrameError(f"CRC mismatch (got {check:#06x}, computed {crc16(payload):#06x})")
    return payload


@dataclass(frozen=True)
class Command:
    """Drive with these pulse widths (``arm``), or stop (not ``arm``: steering held)."""

    seq: int
    steer_us: int
    throttle_us: int
    arm: bool = True

    def encode(self) -> bytes:
        return encode_frame(
            _COMMAND.pack(
                MessageType.COMMAND,
                self.seq & 0xFFFF,
                _pulse(self.steer_us),
                _pulse(self.throttle_us),
                FLAG_ARM if self.arm else 0,
            )
        )


@dataclass(frozen=True)
class Config:
    """Failsafe settings until the next reset: timeout (20-5000 ms), bad frames in a row."""

    seq: int
    timeout_ms: int
    bad_frame_limit: int

    def encode(self) -> bytes:
        if not 20 <= self.timeout_ms <= 5000:
            raise ValueError(f"failsafe timeout must be 20..5000 ms, got {self.timeout_ms}")
        if not 1 <= self.bad_frame_limit <= 255:
            raise ValueError(f"bad_frame_limit must be 1..255, got {self.bad_frame_limit}")
        return encode_frame(
            _CONFIG.pack(
                MessageType.CONFIG, self.seq & 0xFFFF, self.timeout_ms, self.bad_frame_limit
            )
        )


@dataclass(frozen=True)
class Ping:
    """Ask for a status frame without commanding anything."""

    seq: int

    def encode(self) -> bytes:
        return encode_frame(_PING.pack(MessageType.PING, self.seq & 0xFFFF))


@dataclass(frozen=True)
class Status:
    """What the firmware applied and why (one status frame)."""

    seq: int
    steer_us: int
    throttle_us: int
    failsafe: bool
    reason: FailsafeReason
    #: Supply voltage, mV; None when the divider is not wired.
    supply_mv: int | None
    uptime_ms: int
    bad_frames: int
    timeout_ms: int
    version: tuple[int, int, int]
    #: A CONFIG frame came since the firmware booted (it arms only then).
    configured: bool = True

    @classmethod
    def decode(cls, payload: bytes) -> Status:
        if len(payload) != _STATUS.size or payload[0] != MessageType.STATUS:
            raise FrameError(
                f"not a status frame (type {payload[:1].hex() or 'none'}, {len(payload)} bytes)"
            )
        (_, seq, steer, throttle, state, reason, supply, uptime, bad, timeout, *version) = (
            _STATUS.unpack(payload)
        )
        try:
            reason = FailsafeReason(reason)
        except ValueError:
            raise FrameError(f"unknown failsafe reason {reason}") from None
        return cls(
            seq=seq,
            steer_us=steer,
            throttle_us=throttle,
            failsafe=bool(state & 0x01),
            reason=reason,
            supply_mv=None if supply == 0xFFFF else supply,
            uptime_ms=uptime,
            bad_frames=bad,
            timeout_ms=timeout,
            version=tuple(version),
            configured=bool(state & 0x02),
        )

    def encode(self) -> bytes:
        """The firmware's frame (for tests and the protocol's own round trip)."""
        return encode_frame(
            _STATUS.pack(
                MessageType.STATUS,
                self.seq & 0xFFFF,
                self.steer_us,
                self.throttle_us,
                int(self.failsafe) | (0x02 if self.configured else 0),
                int(self.reason),
                0xFFFF if self.supply_mv is None else self.supply_mv,
                self.uptime_ms & 0xFFFFFFFF,
                self.bad_frames & 0xFFFF,
                self.timeout_ms,
                *self.version,
            )
        )


def _pulse(us: int) -> int:
    us = int(us)
    if not 0 <= us <= 0xFFFF:
        raise ValueError(f"pulse width {us} µs does not fit a u16")
    return us


class FrameReader:
    """Splits a byte stream at 0x00 delimiters; yields payloads, counts bad frames.

    A partial frame longer than the longest valid one is dropped (garbage on the line never
    grows the buffer).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.bad_frames = 0
        self.last_error = ""

    def feed(self, data: bytes) -> list[bytes]:
        """Payloads of the frames completed by ``data`` (bad ones counted, not returned)."""
        payloads = []
        for byte in data:
            if byte != 0:
                if len(self._buffer) <= 2 * MAX_FRAME:
                    self._buffer.append(byte)
                continue
            if not self._buffer:
                continue
            chunk, self._buffer = bytes(self._buffer), bytearray()
            try:
                payloads.append(decode_frame(chunk))
            except FrameError as error:
                self.bad_frames += 1
                self.last_error = str(error)
        return payloads
