"""The Panda's camera, made once for the simulator and the real camera alike.

* The policy's image: both the MuJoCo D455 camera
  (:meth:`sim2online_envs.sim.panda.PandaVectorBackend.render_pixels`) and the RealSense driver
  (:mod:`sim2online_envs.hardware.panda.camera`) turn an RGB frame into the observation through
  :func:`policy_image`, so that the two cannot drift apart: crop (the calibration's rectangle on
  hardware, nothing in sim where the camera renders the crop itself), grayscale, area-averaged
  resize to the square observation size, brightness scale.
* The calibration file (:func:`load_calibration`, :func:`save_calibration`): the camera's
  intrinsics, its pose in the robot base frame and the crop; the real camera's crop, the cube
  pose and the simulator's camera (:func:`mujoco_camera`) all read it.
* The cube's ArUco faces (:func:`face_image`, :func:`marker_in_cube`): the textures of the
  simulator's cube, the twin's, and the printable sheet.

This module imports only NumPy, OpenCV and the robot module (no simulator, no hardware library).
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sim2online_envs.robots.panda import MARKER_FACES

__all__ = [
    "Calibration",
    "CameraIntrinsics",
    "base_from_mujoco_camera",
    "center_square_crop",
    "face_image",
    "load_calibration",
    "marker_dictionary",
    "marker_in_cube",
    "matrix_to_quat",
    "mujoco_camera",
    "policy_image",
    "quat_to_matrix",
    "save_calibration",
]


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


# -- camera geometry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of a colour frame (px) and its distortion (OpenCV order)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=float)

    @classmethod
    def from_fovy(cls, width: int, height: int, fovy_deg: float) -> CameraIntrinsics:
        """Square pixels, principal point at the centre, vertical field of view ``fovy_deg``."""
        f = (height / 2) / np.tan(np.radians(fovy_deg) / 2)
        return cls(width, height, float(f), float(f), width / 2, height / 2)


def quat_to_matrix(quat: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = np.asarray(quat, dtype=float) / np.linalg.norm(quat)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat(matrix: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a rotation matrix."""
    m = np.asarray(matrix, dtype=float)
    trace = np.trace(m)
    if trace > 0:
        s = 2 * np.sqrt(trace + 1)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * np.sqrt(1 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    quat = np.asarray(q)
    quat /= np.linalg.norm(quat)
    return quat if quat[0] >= 0 else -quat


# -- the calibration file ------------------------------------------------------------------------

CALIBRATION_VERSION = 1
#: MuJoCo cameras look along their -z with y up; OpenCV's along +z with y down.
_CV_FROM_MJ = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class Calibration:
    """What the calibration file holds (see :func:`save_calibration`)."""

    intrinsics: CameraIntrinsics
    base_from_camera: np.ndarray
    crop: tuple[int, int, int, int]
    camera_serial: str = ""
    residual: dict[str, float] = field(default_factory=dict)

    @property
    def crop_fovy(self) -> float:
        """Vertical field of view of the crop (deg): the simulator camera's ``fovy``."""
        return math.degrees(2 * math.atan(self.crop[3] / 2 / self.intrinsics.fy))


def save_calibration(calibration: Calibration, path: str | Path) -> Path:
    """Write ``calibration`` as JSON to ``path`` (folders made as needed, replaced atomically).

    Keys: ``version``, ``created``, ``camera_serial``, ``intrinsics`` (``width``, ``height``,
    ``fx``, ``fy``, ``cx``, ``cy`` in px, ``dist``), ``base_from_camera`` (4x4, the OpenCV
    camera frame, x right, y down, z forward, in the robot base frame, m), ``crop`` (``[x, y, w,
    h]`` of the colour frame the policy's square image is cut from), ``residual``.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    intr = calibration.intrinsics
    data = {
        "version": CALIBRATION_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "camera_serial": calibration.camera_serial,
        "intrinsics": {
            "width": intr.width,
            "height": intr.height,
            "fx": intr.fx,
            "fy": intr.fy,
            "cx": intr.cx,
            "cy": intr.cy,
            "dist": list(intr.dist),
        },
        "base_from_camera": np.asarray(calibration.base_from_camera, float).tolist(),
        "crop": list(calibration.crop),
        "residual": dict(calibration.residual),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; errors name the file and what is wrong."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Panda camera calibration {path} does not exist; make it with "
            "`sim2online calibrate panda-camera` (docs/hardware/panda.md)"
        )
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        if data.get("version") != CALIBRATION_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {CALIBRATION_VERSION}")
        i = data["intrinsics"]
        intrinsics = CameraIntrinsics(
            int(i["width"]),
            int(i["height"]),
            float(i["fx"]),
            float(i["fy"]),
            float(i["cx"]),
            float(i["cy"]),
            tuple(float(v) for v in i.get("dist", (0.0,) * 5)),
        )
        transform = np.asarray(data["base_from_camera"], dtype=float)
        if transform.shape != (4, 4) or not np.isfinite(transform).all():
            raise ValueError("base_from_camera must be a finite 4x4 matrix")
        crop = tuple(
            int(v) for v in data.get("crop") or center_square_crop(i["width"], i["height"])
        )
        if len(crop) != 4:
            raise ValueError("crop must be [x, y, w, h]")
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
        raise ValueError(f"Panda camera calibration {path} is invalid: {error}") from None
    return Calibration(
        intrinsics, transform, crop, str(data.get("camera_serial", "")), data.get("residual", {})
    )


def mujoco_camera(calibration: Calibration) -> tuple[np.ndarray, np.ndarray, float]:
    """The simulator camera for a calibration: position (m), quaternion (w, x, y, z), fovy (deg).

    The crop's field of view and the camera's pose, in MuJoCo's camera convention.
    """
    transform = np.asarray(calibration.base_from_camera, float)
    rotation = transform[:3, :3] @ _CV_FROM_MJ
    return transform[:3, 3].copy(), matrix_to_quat(rotation), calibration.crop_fovy


def base_from_mujoco_camera(pos: Sequence[float], mj_rotation: np.ndarray) -> np.ndarray:
    """The OpenCV camera frame in the base frame, for a MuJoCo camera's position and rotation."""
    transform = np.eye(4)
    transform[:3, :3] = np.asarray(mj_rotation, float).reshape(3, 3) @ _CV_FROM_MJ
    transform[:3, 3] = pos
    return transform


# -- the cube's markers --------------------------------------------------------------------------


def marker_dictionary(name: str) -> cv2.aruco.Dictionary:
    """The predefined ArUco dictionary called ``name`` ("DICT_4X4_50")."""
    code = getattr(cv2.aruco, name, None)
    if not isinstance(code, int):
        raise ValueError(f"unknown ArUco dictionary {name!r}")
    return cv2.aruco.getPredefinedDictionary(code)


def marker_in_cube(marker_id: int, cube_size: float) -> np.ndarray:
    """4x4 transform of marker ``marker_id``'s frame in the cube frame (the robot module's
    :data:`~sim2online_envs.robots.panda.MARKER_FACES`: x right, y up, z out of the face)."""
    normal, up = (np.asarray(v, dtype=float) for v in MARKER_FACES[marker_id])
    right = np.cross(up, normal)
    transform = np.eye(4)
    transform[:3, :3] = np.column_stack([right, up, normal])
    transform[:3, 3] = normal * cube_size / 2
    return transform


def face_image(
    marker_id: int, dictionary: str, cube_size: float, marker_length: float, pixels: int = 250
) -> np.ndarray:
    """A face's square gray image (white border, the marker centred), ``pixels`` wide: the
    texture of the simulator's cube and of the twin's, and the printed sheet's faces."""
    inner = round(pixels * marker_length / cube_size)
    marker = cv2.aruco.generateImageMarker(marker_dictionary(dictionary), marker_id, inner)
    face = np.full((pixels, pixels), 255, np.uint8)
    start = (pixels - inner) // 2
    face[start : start + inner, start : start + inner] = marker
    return face
