"""The camera calibration file, and the tool that writes it from a marker held in the gripper.

One JSON file holds what the real camera, the cube pose and the simulator's camera all read:

=================== =======================================================================
key                 meaning
=================== =======================================================================
``version``         1
``camera_serial``   the D455 it was made with
``intrinsics``      ``width``, ``height``, ``fx``, ``fy``, ``cx``, ``cy`` (px), ``dist``
``base_from_camera`` 4x4, the OpenCV camera frame (x right, y down, z forward) in the robot
                    base frame (m)
``crop``            ``[x, y, w, h]`` of the colour frame the policy's square image is cut from
``residual``        the fit's RMS reprojection error (px) and the number of poses
=================== =======================================================================

:func:`calibrate` fits ``base_from_camera`` from samples of (the gripper's measured pose, the
marker's corners in the image) at several arm poses: by hand-eye calibration (eye-to-hand, Park
and Martin's method: the marker's place on the hand need not be known), or, when it is known,
with one ``solvePnP`` over all corners (``method="pnp"``).
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
from sim2online_envs.hardware.panda.markers import (
    CameraIntrinsics,
    _marker_corners,
    matrix_to_quat,
)

from sim2online_envs.vision import center_square_crop

__all__ = [
    "Calibration",
    "CalibrationSample",
    "calibrate",
    "load_calibration",
    "mujoco_camera",
    "save_calibration",
]

VERSION = 1
#: MuJoCo cameras look along their -z with y up; OpenCV's along +z with y down.
_CV_FROM_MJ = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class Calibration:
    """What the calibration file holds (see the module docstring)."""

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
    """Write ``calibration`` as JSON to ``path`` (folders made as needed)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    intr = calibration.intrinsics
    data = {
        "version": VERSION,
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
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
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


@dataclass(frozen=True)
class CalibrationSample:
    """One arm pose: the TCP in the base frame (4x4, measured) and the marker's image corners."""

    base_from_tcp: np.ndarray
    corners: np.ndarray


def _invert(transform: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = transform[:3, :3].T
    out[:3, 3] = -transform[:3, :3].T @ transform[:3, 3]
    return out


def _compose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = np.asarray(translation).ravel()
    return out


def solve_ax_xb(first: Sequence[np.ndarray], second: Sequence[np.ndarray]) -> np.ndarray:
    """The X with ``first[i] @ X @ second[i]`` the same for every i (Park and Martin's method).

    Eye-to-hand: ``first`` the gripper-from-base transforms, ``second`` camera-from-marker,
    X the camera in the base frame. (OpenCV 5.0's Python build has no calibrateHandEye.)
    """
    pairs = [(i, j) for i in range(len(first)) for j in range(i + 1, len(first))]
    moves_a = [_invert(first[j]) @ first[i] for i, j in pairs]
    moves_b = [second[j] @ _invert(second[i]) for i, j in pairs]
    m = np.zeros((3, 3))
    for a, b in zip(moves_a, moves_b, strict=True):
        alpha = cv2.Rodrigues(a[:3, :3])[0].ravel()
        beta = cv2.Rodrigues(b[:3, :3])[0].ravel()
        m += np.outer(beta, alpha)
    values, vectors = np.linalg.eigh(m.T @ m)
    if values.min() <= 1e-12:
        raise ValueError("hand-eye calibration needs poses rotated about at least two axes")
    rotation = vectors @ np.diag(values**-0.5) @ vectors.T @ m.T
    lhs = np.concatenate([a[:3, :3] - np.eye(3) for a in moves_a])
    rhs = np.concatenate(
        [rotation @ b[:3, 3] - a[:3, 3] for a, b in zip(moves_a, moves_b, strict=True)]
    )
    translation = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    return _compose(rotation, translation)


def calibrate(
    samples: Sequence[CalibrationSample],
    intrinsics: CameraIntrinsics,
    marker_length: float,
    tcp_from_marker: np.ndarray | None = None,
    method: str = "handeye",
    crop: tuple[int, int, int, int] | None = None,
    camera_serial: str = "",
) -> Calibration:
    """Fit the camera's pose in the base frame from a marker carried by the gripper.

    ``method="handeye"``: Park and Martin's AX = XB in the eye-to-hand form (gripper from
    base against camera from marker; :func:`solve_ax_xb`); needs 3+ poses with distinct
    rotations; the marker's place on the hand need not be known. ``method="pnp"``:
    the marker's corners placed in the base frame through ``tcp_from_marker`` and one
    ``solvePnP`` over all of them (any number of poses, 1 is enough; more average the noise).
    """
    if len(samples) < (3 if method == "handeye" else 1):
        raise ValueError(f"{method} calibration needs more poses, got {len(samples)}")
    k, dist = intrinsics.matrix, np.asarray(intrinsics.dist, float)
    corners3 = _marker_corners(marker_length)
    if method == "pnp":
        if tcp_from_marker is None:
            raise ValueError("method='pnp' needs tcp_from_marker (the marker's place on the hand)")
        points = []
        for sample in samples:
            base_from_marker = np.asarray(sample.base_from_tcp) @ tcp_from_marker
            points.append((base_from_marker[:3, :3] @ corners3.T).T + base_from_marker[:3, 3])
        object_points = np.concatenate(points)
        image_points = np.concatenate([np.asarray(s.corners, float) for s in samples])
        ok, rvec, tvec = cv2.solvePnP(
            object_points, image_points, k, dist, flags=cv2.SOLVEPNP_ITERATIVE
        )
        if not ok:
            raise RuntimeError("solvePnP found no camera pose for these samples")
        camera_from_base = np.eye(4)
        camera_from_base[:3, :3] = cv2.Rodrigues(rvec)[0]
        camera_from_base[:3, 3] = tvec.ravel()
        base_from_camera = _invert(camera_from_base)
    elif method == "handeye":
        r_base2g, t_base2g, r_t2c, t_t2c = [], [], [], []
        for sample in samples:
            gripper_from_base = _invert(np.asarray(sample.base_from_tcp, float))
            r_base2g.append(gripper_from_base[:3, :3])
            t_base2g.append(gripper_from_base[:3, 3])
            ok, rvec, tvec = cv2.solvePnP(
                corners3, np.asarray(sample.corners, float), k, dist, flags=cv2.SOLVEPNP_IPPE_SQUARE
            )
            if not ok:
                raise RuntimeError("solvePnP failed on a calibration sample")
            r_t2c.append(cv2.Rodrigues(rvec)[0])
            t_t2c.append(tvec.ravel())
        gripper_from_base = [_compose(r, t) for r, t in zip(r_base2g, t_base2g, strict=True)]
        camera_from_target = [_compose(r, t) for r, t in zip(r_t2c, t_t2c, strict=True)]
        base_from_camera = solve_ax_xb(gripper_from_base, camera_from_target)
        object_points = image_points = None
    else:
        raise ValueError(f"method must be 'handeye' or 'pnp', got {method!r}")
    residual = {"poses": float(len(samples))}
    if object_points is not None:
        camera_from_base = _invert(base_from_camera)
        rvec = cv2.Rodrigues(camera_from_base[:3, :3])[0]
        projected, _ = cv2.projectPoints(object_points, rvec, camera_from_base[:3, 3], k, dist)
        errors = np.linalg.norm(projected.reshape(-1, 2) - image_points, axis=1)
        residual["rms_px"] = float(np.sqrt(np.mean(errors**2)))
    return Calibration(
        intrinsics,
        base_from_camera,
        crop or center_square_crop(intrinsics.width, intrinsics.height),
        camera_serial,
        residual,
    )
