"""The policy's camera image, made once for the simulator and the real camera alike.

Both the MuJoCo D455 camera (:meth:`sim2online_envs.sim.panda.PandaVectorBackend.render_pixels`)
and the RealSense driver (:mod:`sim2online_envs.hardware.panda.camera`) turn an RGB frame into
the observation through :func:`policy_image`, so that the two cannot drift apart: crop (the
calibration's rectangle on hardware, nothing in sim where the camera renders the crop itself),
grayscale, area-averaged resize to the square observation size, brightness scale.

This module imports only NumPy and OpenCV (no simulator, no hardware library).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["center_square_crop", "policy_image"]


def center_square_crop(width: int, height: int) -> tuple[int, int, int, int]:
    """The centred square ``(x, y, w, h)`` of a ``width`` x ``height`` frame, full height."""
    side = min(int(width), int(height))
    return ((int(width) - side) // 2, (int(height) - side) // 2, side, side)


def policy_image(
    rgb: np.ndarray,
    size: int,
    crop: Sequence[int] | None = None,
    brightness: float = 1.0,
) -> np.ndarray:
    """The (size, size, 1) uint8 grayscale observation of an (H, W, 3) uint8 RGB frame.

    Args:
        rgb: the colour frame, RGB channel order.
        size: side of the square output (px).
        crop: ``(x, y, w, h)`` in frame pixels to cut first (None: the whole frame, which must
            then be square).
        brightness: gray-level scale (the simulator's per-episode randomisation; 1 on hardware).
    """
    frame = np.asarray(rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"need an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
    if crop is not None:
        x, y, w, h = (int(v) for v in crop)
        height, width = frame.shape[:2]
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise ValueError(f"crop {tuple(crop)} is outside the {width}x{height} frame")
        frame = frame[y : y + h, x : x + w]
    if frame.shape[0] != frame.shape[1]:
        raise ValueError(f"the cropped frame must be square, got {frame.shape[1]}x{frame.shape[0]}")
    gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    if gray.shape[0] != size:
        gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
    if brightness != 1.0:
        gray = cv2.convertScaleAbs(gray, alpha=float(brightness))
    return gray[:, :, None]
