"""The cube's ArUco markers: their layout on the faces, their images, and the cube's pose.

One marker per face, ids 0-5 of one ArUco dictionary, each a black square of side
``marker_length`` centred on its face with a white border. A marker's frame (OpenCV's convention
for ``SOLVEPNP_IPPE_SQUARE``: x to the image's right, y up, z out of the face) sits on the face
centre; :data:`FACES` (the robot module's ``MARKER_FACES``) gives, per id, the face normal and
the marker's "up" in the cube frame.

The pose: :class:`CubeDetector` finds the markers (``cv2.aruco.ArucoDetector``), solves each
visible one with ``solvePnP(SOLVEPNP_IPPE_SQUARE)``, keeps the largest as the start and refines
with all visible corners together (``SOLVEPNP_ITERATIVE``), then maps camera to robot base with
the calibration's extrinsics. The pose is for reward and success only; the policy never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sim2online_envs.robots.panda import (
    CUBE_SIZE,
    MARKER_DICTIONARY,
    MARKER_LENGTH,
)
from sim2online_envs.robots.panda import (
    MARKER_FACES as FACES,
)
from sim2online_envs.vision import (
    CameraIntrinsics,
    face_image,
    marker_dictionary,
    marker_in_cube,
    matrix_to_quat,
    quat_to_matrix,
)

__all__ = [
    "FACES",
    "CameraIntrinsics",
    "CubeDetector",
    "CubePose",
    "face_image",
    "marker_dictionary",
    "marker_in_cube",
    "marker_sheet",
    "matrix_to_quat",
    "quat_to_matrix",
]


@dataclass(frozen=True)
class CubePose:
    """The cube in the robot base frame: centre (m), orientation (w, x, y, z), markers used."""

    pos: np.ndarray
    quat: np.ndarray
    marker_ids: tuple[int, ...]
    reprojection_error: float


def _marker_corners(length: float) -> np.ndarray:
    """The four corners in the marker frame, in ArUco's order (top-left, clockwise)."""
    h = length / 2
    return np.array([[-h, h, 0], [h, h, 0], [h, -h, 0], [-h, -h, 0]], dtype=np.float64)


def marker_sheet(
    dictionary: str, cube_size: float, marker_length: float, dpi: int = 300
) -> np.ndarray:
    """A printable gray sheet of the six faces at true size for ``dpi`` (cut lines in gray)."""
    pixels = round(cube_size / 0.0254 * dpi)
    gap = round(0.01 / 0.0254 * dpi)
    sheet = np.full((2 * pixels + 3 * gap, 3 * pixels + 4 * gap), 255, np.uint8)
    for marker_id in FACES:
        row, col = divmod(marker_id, 3)
        y, x = gap + row * (pixels + gap), gap + col * (pixels + gap)
        sheet[y : y + pixels, x : x + pixels] = face_image(
            marker_id, dictionary, cube_size, marker_length, pixels
        )
        cv2.rectangle(sheet, (x - 1, y - 1), (x + pixels, y + pixels), 180, 1)
    return sheet


def _transform(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = cv2.Rodrigues(np.asarray(rvec, dtype=float))[0]
    out[:3, 3] = np.asarray(tvec, dtype=float).ravel()
    return out


class CubeDetector:
    """The cube's pose in the robot base frame from one colour frame (None when not seen)."""

    def __init__(
        self,
        intrinsics: CameraIntrinsics,
        base_from_camera: np.ndarray,
        dictionary: str = MARKER_DICTIONARY,
        cube_size: float = CUBE_SIZE,
        marker_length: float = MARKER_LENGTH,
    ):
        self.intrinsics = intrinsics
        self.base_from_camera = np.asarray(base_from_camera, dtype=float)
        self.cube_size = float(cube_size)
        self.marker_length = float(marker_length)
        parameters = cv2.aruco.DetectorParameters()
        parameters.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        self._detector = cv2.aruco.ArucoDetector(marker_dictionary(dictionary), parameters)
        self._corners = _marker_corners(self.marker_length)
        self._in_cube = {i: marker_in_cube(i, self.cube_size) for i in FACES}
        #: Where the markers were last seen (x0, y0, x1, y1): searched first.
        self._roi: tuple[int, int, int, int] | None = None

    def detect(
        self, rgb: np.ndarray, roi: tuple[int, int, int, int] | None = None
    ) -> tuple[list[np.ndarray], list[int]]:
        """Corners (4, 2) and ids of the cube's markers in an RGB frame (or its ``roi``,
        ``(x0, y0, x1, y1)``; corners are in frame pixels either way)."""
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        x0 = y0 = 0
        if roi is not None:
            x0, y0, x1, y1 = roi
            gray = np.ascontiguousarray(gray[y0:y1, x0:x1])
        corners, ids, _ = self._detector.detectMarkers(gray)
        if ids is None:
            return [], []
        offset = np.array([x0, y0], dtype=np.float64)
        found = [
            (c.reshape(4, 2).astype(np.float64) + offset, int(i))
            for c, i in zip(corners, ids.ravel(), strict=True)
            if i in FACES
        ]
        return [c for c, _ in found], [i for _, i in found]

    def _up_alignment(self, cam_from_cube: np.ndarray) -> float:
        """How well one cube axis stands vertical (1: a face lies flat, as on the table or in
        the downward-pointing hand)."""
        rotation = self.base_from_camera[:3, :3] @ cam_from_cube[:3, :3]
        return float(np.max(np.abs(rotation[2])))

    def camera_from_cube(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], float] | None:
        """The cube frame in the (OpenCV) camera frame, the marker ids and the RMS error (px).

        A single small marker has two nearly equally good poses (the planar ambiguity); of the
        two IPPE solutions the one with a cube face lying flat wins, unless the other fits the
        corners clearly better.
        """
        corners, ids = [], []
        if self._roi is not None:
            corners, ids = self.detect(rgb, self._roi)
        if not ids:
            corners, ids = self.detect(rgb)
        if not ids:
            self._roi = None
            return None
        k, dist = self.intrinsics.matrix, np.asarray(self.intrinsics.dist, dtype=float)
        areas = [cv2.contourArea(c.astype(np.float32)) for c in corners]
        best = int(np.argmax(areas))
        count, rvecs, tvecs, errors = cv2.solvePnPGeneric(
            self._corners, corners[best], k, dist, flags=cv2.SOLVEPNP_IPPE_SQUARE
        )
        if not count:
            return None
        errors = np.asarray(errors, dtype=float).ravel()
        candidates = [
            _transform(rvecs[j], tvecs[j]) @ np.linalg.inv(self._in_cube[ids[best]])
            for j in range(count)
        ]
        good = [j for j in range(count) if errors[j] <= 3 * errors.min() + 0.5]
        cam_from_cube = candidates[max(good, key=lambda j: self._up_alignment(candidates[j]))]
        object_points = np.concatenate(
            [(self._in_cube[i][:3, :3] @ self._corners.T).T + self._in_cube[i][:3, 3] for i in ids]
        )
        image_points = np.concatenate(corners)
        if len(ids) > 1:
            rvec0 = cv2.Rodrigues(cam_from_cube[:3, :3])[0]
            tvec0 = cam_from_cube[:3, 3].reshape(3, 1).copy()
            ok, rvec, tvec = cv2.solvePnP(
                object_points,
                image_points,
                k,
                dist,
                rvec0,
                tvec0,
                useExtrinsicGuess=True,
                flags=cv2.SOLVEPNP_ITERATIVE,
            )
            if ok:
                cam_from_cube = _transform(rvec, tvec)
        rvec = cv2.Rodrigues(cam_from_cube[:3, :3])[0]
        projected, _ = cv2.projectPoints(object_points, rvec, cam_from_cube[:3, 3], k, dist)
        error = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - image_points) ** 2, 1))))
        low, high = image_points.min(axis=0), image_points.max(axis=0)
        margin = max(40.0, 2.0 * float(np.max(high - low)))
        height, width = rgb.shape[:2]
        self._roi = (
            int(max(0, low[0] - margin)),
            int(max(0, low[1] - margin)),
            int(min(width, high[0] + margin)),
            int(min(height, high[1] + margin)),
        )
        return cam_from_cube, tuple(ids), error

    def estimate(self, rgb: np.ndarray) -> CubePose | None:
        """The cube in the robot base frame, or None when no marker of it is seen."""
        found = self.camera_from_cube(rgb)
        if found is None:
            return None
        cam_from_cube, ids, error = found
        base_from_cube = self.base_from_camera @ cam_from_cube
        return CubePose(
            pos=base_from_cube[:3, 3].copy(),
            quat=matrix_to_quat(base_from_cube[:3, :3]),
            marker_ids=ids,
            reprojection_error=error,
        )
