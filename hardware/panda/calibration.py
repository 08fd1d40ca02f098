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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sim2online_envs.hardware.panda.markers import _marker_corners
from sim2online_envs.vision import (
    Calibration,
    CameraIntrinsics,
    base_from_mujoco_camera,
    center_square_crop,
    load_calibration,
    mujoco_camera,
    save_calibration,
)

__all__ = [
    "Calibration",
    "CalibrationSample",
    "base_from_mujoco_camera",
    "calibrate",
    "calibration_poses",
    "collect_samples",
    "find_marker",
    "load_calibration",
    "marker_in_hand",
    "mujoco_camera",
    "pose_error",
    "run_calibration",
    "save_calibration",
]


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


# -- collecting the samples: the arm through poses, the marker in the gripper --------------------


def marker_in_hand() -> np.ndarray:
    """``tcp_from_marker`` of the default mount: the marker held flat between the fingertips,
    centred on the TCP, facing the hand's +x (at the home posture: world +x, toward a camera in
    front of the robot), the marker image's "up" along the hand's -z (world up)."""
    transform = np.eye(4)
    transform[:3, :3] = np.column_stack([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    return transform


def calibration_poses(count: int, seed: int = 0, spread: float = 0.25) -> list[np.ndarray]:
    """``count`` joint postures around the home posture for the calibration (rad).

    The first is home; the others add uniform offsets of up to ``spread`` rad to joints 1, 2, 4,
    5, 6 and 7 (joint 3 left alone: the elbow's redundancy), so the hand is rotated about
    several axes, as the hand-eye fit needs, while the marker keeps facing the camera. Each is
    clipped into the joint limits.
    """
    from sim2online_envs.robots.panda import ARM_JOINT_LOWER, ARM_JOINT_UPPER, HOME_QPOS

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    mask = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    poses = [HOME_QPOS.copy()]
    for _ in range(count - 1):
        q = HOME_QPOS + mask * rng.uniform(-spread, spread, 7)
        poses.append(np.clip(q, ARM_JOINT_LOWER + 0.05, ARM_JOINT_UPPER - 0.05))
    return poses


def find_marker(rgb: np.ndarray, dictionary: str, marker_id: int) -> np.ndarray | None:
    """The (4, 2) image corners of marker ``marker_id`` in an RGB frame, None if not seen."""
    from sim2online_envs.vision import marker_dictionary

    parameters = cv2.aruco.DetectorParameters()
    parameters.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    detector = cv2.aruco.ArucoDetector(marker_dictionary(dictionary), parameters)
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    corners, ids, _ = detector.detectMarkers(gray)
    if ids is None:
        return None
    for found, found_id in zip(corners, ids.ravel(), strict=True):
        if int(found_id) == marker_id:
            return found.reshape(4, 2).astype(np.float64)
    return None


def collect_samples(
    arm: Any,
    camera: Any,
    poses: Sequence[np.ndarray],
    dictionary: str,
    marker_id: int,
    move_timeout: float = 30.0,
    settle: float = 0.5,
    frame_timeout: float = 3.0,
) -> tuple[list[CalibrationSample], list[int]]:
    """Drive the arm through ``poses`` (joint motions) and at each record the measured TCP pose
    and the held marker's corners in a camera frame taken after the arm settled.

    ``arm`` is a connected :class:`~sim2online_envs.hardware.panda.arm.ArmDriver`, ``camera`` a
    connected :class:`~sim2online_envs.hardware.panda.camera.RealSenseCamera`. Poses where the
    marker is not seen within ``frame_timeout`` are skipped (their indices are returned second).
    Every wait is bounded; an arm error raises a HardwareError naming it.
    """
    import logging
    import time

    from sim2online_envs.hardware.base import HardwareError, StaleReadingError

    log = logging.getLogger(__name__)
    samples: list[CalibrationSample] = []
    skipped: list[int] = []
    for index, q in enumerate(poses):
        arm.move_joints(np.asarray(q, dtype=np.float64), move_timeout)
        time.sleep(settle)
        sample = arm.read()
        if sample.error:
            raise HardwareError(arm.name, f"error at calibration pose {index}: {sample.error}")
        settled = time.monotonic()
        corners = None
        deadline = settled + frame_timeout
        while time.monotonic() < deadline:
            try:
                frame = camera.latest(frame_timeout)
            except StaleReadingError:
                time.sleep(0.02)
                continue
            if frame.stamp > settled:
                corners = find_marker(frame.rgb, dictionary, marker_id)
                if corners is not None:
                    break
            time.sleep(0.02)
        if corners is None:
            log.warning("calibration pose %d: marker %d not seen; skipped", index, marker_id)
            skipped.append(index)
            continue
        base_from_tcp = np.eye(4)
        base_from_tcp[:3, :3] = sample.tip_rot
        base_from_tcp[:3, 3] = sample.tip_pos
        samples.append(CalibrationSample(base_from_tcp, corners))
        log.info("calibration pose %d: marker seen, tip at %s", index, np.round(sample.tip_pos, 3))
    return samples, skipped


def run_calibration(
    hardware: str = "real",
    poses: int = 12,
    method: str = "pnp",
    out: str | Path | None = None,
    marker_id: int | None = None,
    marker_length: float | None = None,
    seed: int = 0,
    **settings: Any,
) -> tuple[Calibration, Path, dict[str, Any]]:
    """``sim2online calibrate panda-camera``: move through ``poses`` postures with the marker
    in the gripper, fit the camera pose, write the calibration file.

    ``hardware="twin"`` runs it against the twin (franky-sim and the rendered D455, the marker
    mounted on the twin's hand as :func:`marker_in_hand` says). ``method="pnp"`` uses the mount
    of :func:`marker_in_hand`; ``"handeye"`` needs no known mount. ``out``: the file written
    (default: the ``calibration`` setting). Returns the calibration, the path written and a
    report (poses used and skipped; on the twin the error against its true camera pose).
    """
    from sim2online_envs.hardware.panda.arm import make_arm
    from sim2online_envs.hardware.panda.camera import RealSenseCamera
    from sim2online_envs.hardware.panda.config import resolve_config

    config = resolve_config(**settings)
    marker_id = config.calibration_marker_id if marker_id is None else int(marker_id)
    length = config.calibration_marker_length if marker_length is None else float(marker_length)
    target = Path(out).expanduser() if out is not None else config.calibration_path
    twin = None
    arm = camera = None
    try:
        if hardware == "twin":
            from sim2online_envs.hardware.panda.twin import PandaTwin

            twin = PandaTwin(config, hand_marker=(marker_id, length))
            config = twin.start()
        arm = make_arm(config, realtime=hardware == "real")
        arm.connect(config.connect_timeout)
        camera = RealSenseCamera(
            config.camera_serial,
            config.camera_width,
            config.camera_height,
            config.camera_fps,
            device=None if twin is None else twin.camera.device,
        )
        camera.connect(config.connect_timeout)
        observer = None if twin is None else twin.scene

        class _Followed:
            """The arm, with the twin's scene following every read."""

            name = arm.name

            def move_joints(self, q: np.ndarray, timeout: float) -> None:
                arm.move_joints(q, timeout)

            def read(self) -> Any:
                sample = arm.read()
                if observer is not None:
                    observer.follow(sample, arm.gripper.latest() if arm.gripper else None)
                return sample

        samples, skipped = collect_samples(
            _Followed(),
            camera,
            calibration_poses(poses, seed),
            config.marker_dictionary,
            marker_id,
        )
        calibration = calibrate(
            samples,
            camera.intrinsics,
            length,
            tcp_from_marker=marker_in_hand() if method == "pnp" else None,
            method=method,
            camera_serial=config.camera_serial,
        )
        report: dict[str, Any] = {"poses_used": len(samples), "poses_skipped": skipped}
        if twin is not None:
            truth = twin.scene.camera_calibration(config.camera_width, config.camera_height)
            report.update(pose_error(calibration.base_from_camera, truth.base_from_camera))
        else:
            arm.move_joints(calibration_poses(1)[0], config.home_timeout)
        path = save_calibration(calibration, target)
        return calibration, path, report
    finally:
        if arm is not None:
            arm.close()
        if camera is not None:
            camera.close()
        if twin is not None:
            twin.close()


def pose_error(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Position (mm) and rotation (deg) error of a 4x4 pose against the truth."""
    relative = np.asarray(truth)[:3, :3].T @ np.asarray(estimate)[:3, :3]
    angle = math.degrees(math.acos(float(np.clip((np.trace(relative) - 1) / 2, -1.0, 1.0))))
    return {
        "position_error_mm": float(np.linalg.norm(estimate[:3, 3] - truth[:3, 3]) * 1000),
        "rotation_error_deg": angle,
    }
