"""The small record types robot modules describe their facts with (standard library only).

A robot module lists the keys of the raw state its backends report and of the commands they
take as :class:`KeySpec` records, and its cameras as :class:`CameraSpec`; tasks, simulators,
drivers and twins read those records instead of writing the facts again.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CameraSpec", "KeySpec", "batch_shape"]


@dataclass(frozen=True)
class KeySpec:
    """One key of a robot's raw state or command: per-world shape, dtype, unit, frame, meaning.

    :param shape: the shape of one world's value (the batch axis comes first, not listed).
    :param dtype: the NumPy dtype name backends must report ("float64", "bool").
    :param unit: SI unit, "-" where there is none.
    :param frame: the frame the value is expressed in ("world", "body", "joint", ...), "-" for
        scalars without one.
    :param meaning: one line.
    """

    shape: tuple[int, ...]
    dtype: str
    unit: str
    frame: str
    meaning: str


def batch_shape(spec: KeySpec) -> str:
    """The documented shape with its batch axis, e.g. ``(B, 12)``, ``(B,)``."""
    if not spec.shape:
        return "(B,)"
    return "(" + ", ".join(["B", *map(str, spec.shape)]) + ")"


@dataclass(frozen=True)
class CameraSpec:
    """A camera the policy sees through, as it stands in the lab and as the simulator places it.

    :param name: the camera's name (the MJCF camera, the driver's device).
    :param pos: position in the robot's world frame [m].
    :param target: the point it looks at, world frame [m] (world z up).
    :param fovy: vertical field of view [deg] of the image the policy's crop is taken from.
    :param crop: how the policy's square image is cut from the sensor's frame ("center_square":
        the centre square, full height).
    :param image_size: side of the square image the policy gets [px].
    :param grayscale: the policy's image is grayscale (one channel).
    :param sensor_size: (height, width) of the real sensor's colour frame [px].
    """

    name: str
    pos: tuple[float, float, float]
    target: tuple[float, float, float]
    fovy: float
    crop: str
    image_size: int
    grayscale: bool
    sensor_size: tuple[int, int]
