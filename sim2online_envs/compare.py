"""The perception gap, side by side: a real 64x64 frame next to the simulator's from the same pose.

``sim2online compare panda-camera --real frame.png --qpos Q1 ... Q7`` (or ``--episode ep.npz
--step K``) renders the Panda simulator's observation with the arm at those joint angles (the
camera of ``--calibration``, else the study's default; no randomisation) and writes one PNG: the
sim frame, the real frame and their difference (red where the real frame is brighter, blue
where the sim's is), each enlarged, with the mean absolute difference in gray levels logged.

Where the pose comes from:

- ``--qpos`` (7 joint angles, rad) and ``--opening`` (m); or
- a recorded episode (``RecordEpisodes``) at observation ``--step``: the joint angles and the
  object pose from its ``info/arm_qpos``, ``info/object_pos`` and ``info/object_quat`` when they
  were recorded (``info_fields``), else the joint angles solved from the observed tip position
  with the hand pointing down (IK from the home posture); the opening from the observed state.
  The episode's own image is the real frame unless ``--real`` names another.

The real frame may be the policy's 64x64 grayscale image or any colour frame of the camera
(cropped to its centre square, grayscale, area-averaged:
:func:`sim2online_envs.vision.policy_image`, the real camera's pipeline).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from sim2online_envs.robots.panda import CUBE_SIZE, HOME_QPOS, HOME_TIP_POS
from sim2online_envs.vision import center_square_crop, policy_image

if TYPE_CHECKING:  # the simulator loads MuJoCo: imported when a frame is rendered
    from sim2online_envs.sim.panda import PandaSimConfig, PandaVectorBackend

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_OBJECT_POS",
    "PandaPose",
    "compare_image",
    "compare_panda_camera",
    "pose_from_episode",
    "qpos_for_tip",
    "read_frame",
    "sim_frame",
]

#: Where the cube is drawn when the pose does not say: the study's start (its ``x_plane``).
DEFAULT_OBJECT_POS = (float(HOME_TIP_POS[0]) - 0.03, 0.0, CUBE_SIZE / 2)


@dataclass(frozen=True)
class PandaPose:
    """What the simulator needs to render a frame: joint angles (rad), the fingers' opening
    (m), the object's centre (m) and orientation (w, x, y, z)."""

    arm_qpos: np.ndarray
    opening: float = 0.08
    object_pos: tuple[float, float, float] = DEFAULT_OBJECT_POS
    object_quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)


def _backend(config: PandaSimConfig | None, render: bool = True) -> PandaVectorBackend:
    from sim2online_envs.sim.panda import PandaVectorBackend

    backend = PandaVectorBackend(1, domain_randomization=False, config=config, render_pixels=render)
    backend.reset_worlds(np.array([0]), [np.random.default_rng(0)])
    return backend


def qpos_for_tip(
    tip: Sequence[float], config: PandaSimConfig | None = None, iterations: int = 200
) -> np.ndarray:
    """Joint angles (rad) putting the TCP at ``tip`` (m) with the hand pointing down: the
    simulator's damped-least-squares IK step repeated from the home posture (without its pull
    toward the home posture, which would leave the fixed point short of the tip)."""
    from sim2online_envs.sim.panda import PandaSimConfig

    solver = dataclasses.replace(config or PandaSimConfig(), ik_nullspace_gain=0.0)
    backend = _backend(solver, render=False)
    try:
        target = np.asarray(tip, dtype=np.float64).reshape(1, 3)
        q = HOME_QPOS.copy()
        for _ in range(iterations):
            state = backend.set_arm_pose(0, q)
            if np.linalg.norm(state["tip_pos"][0] - target[0]) < 1e-6:
                break
            q = backend.joint_targets(target)[0]
        return q
    finally:
        backend.close()


def sim_frame(pose: PandaPose, config: PandaSimConfig | None = None) -> np.ndarray:
    """The simulator's (S, S) uint8 grayscale observation of ``pose`` (no randomisation)."""
    backend = _backend(config)
    try:
        backend.set_object_pose(0, np.asarray(pose.object_pos), np.asarray(pose.object_quat))
        state = backend.set_arm_pose(0, pose.arm_qpos, pose.opening)
        return state["pixels"][0, :, :, 0].copy()
    finally:
        backend.close()


def read_frame(path: str | Path, size: int = 64) -> np.ndarray:
    """A (size, size) uint8 grayscale frame from an image file: the policy's image as it is, or
    a camera frame through the real camera's pipeline (centre square, grayscale, resize)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f"cannot read an image from {path}")
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: need an 8-bit image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    return policy_image(rgb, size, crop=center_square_crop(width, height))[:, :, 0]


def pose_from_episode(
    episode_path: str | Path, step: int, config: PandaSimConfig | None = None
) -> tuple[PandaPose, np.ndarray]:
    """The pose and the image of observation ``step`` (0: after the reset) of a recorded
    episode; see the module doc for where the pose comes from."""
    from sim2online_envs.wrappers.recording import load_episode

    episode = load_episode(episode_path)
    observations = episode.observations
    if not isinstance(observations, dict) or not {"pixels", "state"} <= set(observations):
        raise ValueError(f"{episode_path}: not a Panda episode (no pixels and state)")
    count = len(observations["pixels"])
    if not 0 <= step < count:
        raise ValueError(f"{episode_path}: step {step} outside 0 ... {count - 1}")
    state = np.asarray(observations["state"][step], dtype=np.float64)
    infos = episode.infos
    recorded = step >= 1 and "arm_qpos" in infos  # info t follows action t: observation t + 1
    if recorded:
        qpos = np.asarray(infos["arm_qpos"][step - 1], dtype=np.float64)
    else:
        logger.info("%s: no recorded joint angles, solving them from the tip", episode_path)
        qpos = qpos_for_tip(state[:3], config)
    object_pos = DEFAULT_OBJECT_POS
    object_quat = (1.0, 0.0, 0.0, 0.0)
    if step >= 1 and "object_pos" in infos:
        object_pos = tuple(float(v) for v in infos["object_pos"][step - 1])
    if step >= 1 and "object_quat" in infos:
        object_quat = tuple(float(v) for v in infos["object_quat"][step - 1])
    pose = PandaPose(qpos, float(state[3]), object_pos, object_quat)
    return pose, np.asarray(observations["pixels"][step])[:, :, 0]


def compare_image(sim: np.ndarray, real: np.ndarray, scale: int = 4) -> np.ndarray:
    """One BGR image: the sim frame, the real frame and their difference side by side, each
    enlarged ``scale`` times (nearest pixel), labelled. The difference is red where the real
    frame is brighter and blue where the sim's is, at twice the gray-level difference."""
    sim, real = np.asarray(sim, np.uint8), np.asarray(real, np.uint8)
    if sim.shape != real.shape or sim.ndim != 2:
        raise ValueError(f"need two gray frames of one size, got {sim.shape} and {real.shape}")
    signed = real.astype(np.int16) - sim.astype(np.int16)
    diff = np.zeros((*sim.shape, 3), np.uint8)
    diff[:, :, 2] = np.clip(2 * signed, 0, 255)  # red: real brighter
    diff[:, :, 0] = np.clip(-2 * signed, 0, 255)  # blue: sim brighter
    panels = [cv2.cvtColor(sim, cv2.COLOR_GRAY2BGR), cv2.cvtColor(real, cv2.COLOR_GRAY2BGR), diff]
    labels = ("sim", "real", "real - sim")
    height, width = sim.shape[0] * scale, sim.shape[1] * scale
    header = 18
    tiles = []
    for panel, label in zip(panels, labels, strict=True):
        tile = np.full((height + header, width, 3), 255, np.uint8)
        tile[header:] = cv2.resize(panel, (width, height), interpolation=cv2.INTER_NEAREST)
        cv2.putText(tile, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        tiles.extend([tile, np.full((height + header, 4, 3), 255, np.uint8)])
    return np.concatenate(tiles[:-1], axis=1)


def compare_panda_camera(
    out: str | Path,
    real: str | Path | None = None,
    episode: str | Path | None = None,
    step: int = 0,
    qpos: Sequence[float] | None = None,
    opening: float = 0.08,
    object_pos: Sequence[float] | None = None,
    object_yaw: float = 0.0,
    calibration: str | Path | None = None,
    scale: int = 4,
) -> dict[str, float | str]:
    """Render the sim frame of a pose next to a real frame, write the PNG ``out``, and return
    the mean absolute difference and both frames' mean gray levels (see the module doc)."""
    from sim2online_envs.sim.panda import PandaSimConfig

    config = PandaSimConfig(camera_calibration=None if calibration is None else str(calibration))
    real_frame = None
    if episode is not None:
        if qpos is not None:
            raise ValueError("give either an episode or joint angles, not both")
        pose, real_frame = pose_from_episode(episode, step, config)
    elif qpos is not None:
        pose = PandaPose(np.asarray(qpos, dtype=np.float64), float(opening))
    else:
        raise ValueError("the arm pose is missing: give --qpos or --episode")
    if object_pos is not None:
        half = object_yaw / 2
        pose = PandaPose(
            pose.arm_qpos,
            pose.opening,
            tuple(float(v) for v in object_pos),
            (float(np.cos(half)), 0.0, 0.0, float(np.sin(half))),
        )
    if real is not None:
        real_frame = read_frame(real, config.image_size)
    if real_frame is None:
        raise ValueError("the real frame is missing: give --real (or an episode)")
    sim = sim_frame(pose, config)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), compare_image(sim, real_frame, scale)):
        raise OSError(f"could not write {out}")
    difference = np.abs(real_frame.astype(np.float64) - sim)
    return {
        "out": str(out),
        "mean_abs_difference": float(difference.mean()),
        "sim_mean": float(sim.mean()),
        "real_mean": float(real_frame.mean()),
    }
