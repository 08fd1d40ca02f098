"""The Panda pick-cube task: spaces, control, rewards and episode ends, over batched arrays.

The same code serves the simulator (one world or many) and the real robot: the backend reports
the tip position, the gripper, the camera image and the object pose (in sim from the physics, on
hardware from a fiducial marker), and this module turns them into observations, rewards and
episode ends.

World frame: origin at the robot base on the table top, x forward (away from the base), y to the
robot's left, z up; metres.

Reward: a sum of progress terms, each the change of one stage's potential over the step (so a
policy cannot farm reward by hovering, and the episode return is the progress made), plus a
bonus at success:

=========== =============================================================================
term        value per step (before its weight)
=========== =============================================================================
approach    ``d(tip, object)`` before the step minus after it (m)
grasp       ``grasped`` after the step minus before it (1 when a grasp forms, -1 when lost)
lift        increase of the object's height above its resting height, capped at the goal's
            height above it (m)
carry       ``d(object, goal)`` before the step minus after it (m)
success     1 on the step that ends the episode with the object within the success radius
=========== =============================================================================

``grasped``: the closed gripper squeezes something (the backend's ``gripper_holding``: in sim the
fingers stopped and the servo pushes on, on the real hand libfranka's ``is_grasped``) and the
object's centre is within ``grasp_radius`` of the fingertip centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np
from gymnasium import spaces

from sim2online_envs.core import Batch, Task
from sim2online_envs.robots import panda as panda_robot
from sim2online_envs.robots.panda import MAX_GRIPPER_OPENING

__all__ = [
    "REWARD_TERM_NAMES",
    "PandaPickTask",
    "PandaTaskConfig",
    "approach_progress",
    "carry_progress",
    "grasp_progress",
    "grasped",
    "lift_progress",
    "object_in_workspace",
    "success_bonus",
]

REWARD_TERM_NAMES = ("approach", "grasp", "lift", "carry", "success")

#: Bounds of the proprioceptive observation (tip x, y, z in m; opening in m): the Panda's reach
#: (0.855 m from the shoulder, plus the hand) around its base on the table.
STATE_LOW = np.array([-1.0, -1.0, -0.2, 0.0], dtype=np.float32)
STATE_HIGH = np.array([1.0, 1.0, 1.4, MAX_GRIPPER_OPENING], dtype=np.float32)


@dataclass(frozen=True)
class PandaTaskConfig:
    """Timing, action scaling, workspace, goal sampling and reward weights of the task."""

    #: Control period (s); 20 Hz.
    control_dt: float = panda_robot.CONTROL_DT
    #: Episode length in control steps (time-limit truncation).
    max_episode_steps: int = 250
    #: Side of the square grayscale image (px).
    image_size: int = panda_robot.CAMERA.image_size
    #: Tip displacement per step at |a_i| = 1 (m), per axis: the study's 5 mm per 50 ms step.
    max_tip_step: float = panda_robot.MAX_TIP_STEP
    #: The tip target never leads the measured tip by more than this per axis (m): pressing
    #: against the table or an object does not wind the target up.
    max_target_lead: float = panda_robot.MAX_TARGET_LEAD
    #: Box the tip target is clamped to (m): the robot's workspace (reachable with the hand
    #: pointing down; sim2online_envs.robots.panda).
    workspace_low: tuple[float, float, float] = panda_robot.WORKSPACE_LOW
    workspace_high: tuple[float, float, float] = panda_robot.WORKSPACE_HIGH
    #: The episode ends (terminated) when the object's centre leaves this box (m): pushed off
    #: the reachable table region or fallen.
    object_workspace_low: tuple[float, float, float] = (0.15, -0.45, -0.05)
    object_workspace_high: tuple[float, float, float] = (0.85, 0.45, 0.60)
    #: Height of the table top (m), on which the object rests at the start.
    table_height: float = 0.0
    #: Goal: the object's start (x, y) plus an offset drawn from this box (m), at a height above
    #: the table drawn from ``goal_height_range``. The goal is not in the observation, so the
    #: default offsets are zero (lift the object straight up, as high as the episode's goal);
    #: widen them together with a policy that is told the goal.
    goal_xy_offset_low: tuple[float, float] = (0.0, 0.0)
    goal_xy_offset_high: tuple[float, float] = (0.0, 0.0)
    goal_height_range: tuple[float, float] = (0.10, 0.20)
    #: Success radius around the goal (m).
    success_threshold: float = 0.05
    #: Grasp detection: largest distance of the object's centre from the fingertip centre (m).
    grasp_radius: float = 0.025
    #: Reward weights.
    approach_weight: float = 10.0
    grasp_weight: float = 1.0
    lift_weight: float = 10.0
    carry_weight: float = 10.0
    success_weight: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            items = value if isinstance(value, tuple) else (value,)
            for item in items:
                if isinstance(item, bool) or not isinstance(item, (int, float)):
                    raise TypeError(f"{f.name} must be numeric, got {value!r}")
                if not math.isfinite(item):
                    raise ValueError(f"{f.name} must be finite, got {value!r}")
        positive = ("control_dt", "max_tip_step", "max_target_lead", "success_threshold")
        for name in (*positive, "grasp_radius"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not isinstance(self.max_episode_steps, int) or self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be an int >= 1, got {self.max_episode_steps}")
        if not isinstance(self.image_size, int) or not 8 <= self.image_size <= 512:
            raise ValueError(f"image_size must be an int in [8, 512], got {self.image_size}")
        for low, high in (
            ("workspace_low", "workspace_high"),
            ("object_workspace_low", "object_workspace_high"),
            ("goal_xy_offset_low", "goal_xy_offset_high"),
        ):
            lo, hi = np.asarray(getattr(self, low)), np.asarray(getattr(self, high))
            if lo.shape != hi.shape or np.any(lo > hi):
                raise ValueError(
                    f"{low}={getattr(self, low)} must be <= {high}={getattr(self, high)}"
                )
        if not 0 < self.goal_height_range[0] <= self.goal_height_range[1]:
            raise ValueError(
                f"goal_height_range must be (low, high) with 0 < low <= high, "
                f"got {self.goal_height_range}"
            )


# ---------------------------------------------------------------------- task quantities


def grasped(state: Batch, config: PandaTaskConfig) -> np.ndarray:
    """(B,) bool: the gripper squeezes the object between its fingertips."""
    tip_to_object = np.linalg.norm(state["object_pos"] - state["tip_pos"], axis=-1)
    return (state["gripper_holding"] > 0.5) & (tip_to_object < config.grasp_radius)


def object_in_workspace(state: Batch, config: PandaTaskConfig) -> np.ndarray:
    """(B,) bool: the object's centre is inside the object workspace box."""
    pos = state["object_pos"]
    low = np.asarray(config.object_workspace_low)
    high = np.asarray(config.object_workspace_high)
    return np.all((pos >= low) & (pos <= high), axis=-1)


def goal_distance(state: Batch, task_state: Batch) -> np.ndarray:
    """(B,) distance between the object's centre and the goal (m)."""
    return np.linalg.norm(state["object_pos"] - task_state["goal"], axis=-1)


def _height_progress(state: Batch, task_state: Batch, config: PandaTaskConfig) -> np.ndarray:
    rest = config.table_height + state["object_size"] / 2
    cap = task_state["goal"][:, 2] - rest
    return np.clip(state["object_pos"][:, 2] - rest, 0.0, np.maximum(cap, 0.0))


# ---------------------------------------------------------------------- reward terms


def approach_progress(prev_state: Batch, state: Batch) -> np.ndarray:
    """(B,) how much closer the tip came to the object over the step (m)."""
    before = np.linalg.norm(prev_state["object_pos"] - prev_state["tip_pos"], axis=-1)
    after = np.linalg.norm(state["object_pos"] - state["tip_pos"], axis=-1)
    return before - after


def grasp_progress(prev_state: Batch, state: Batch, config: PandaTaskConfig) -> np.ndarray:
    """(B,) +1 when a grasp forms over the step, -1 when it is lost, else 0."""
    return grasped(state, config).astype(np.float64) - grasped(prev_state, config)


def lift_progress(
    prev_state: Batch, state: Batch, task_state: Batch, config: PandaTaskConfig
) -> np.ndarray:
    """(B,) gain in the object's height above rest, counted up to the goal's height (m)."""
    return _height_progress(state, task_state, config) - _height_progress(
        prev_state, task_state, config
    )


def carry_progress(prev_state: Batch, state: Batch, task_state: Batch) -> np.ndarray:
    """(B,) how much closer the object came to the goal over the step (m)."""
    return goal_distance(prev_state, task_state) - goal_distance(state, task_state)


def success_bonus(state: Batch, task_state: Batch, config: PandaTaskConfig) -> np.ndarray:
    """(B,) 1.0 where the object is within the success radius of the goal."""
    return (goal_distance(state, task_state) < config.success_threshold).astype(np.float64)


# ---------------------------------------------------------------------- the task


class PandaPickTask(Task):
    """Pick the object and bring it to the goal, from a 64x64 grayscale image and the tip.

    ``task_state``: ``goal`` (B, 3), the object's target position in the world frame (m).

    Actions (B, 4) in [-1, 1]: (dx, dy, dz) scaled by ``max_tip_step`` and added to the
    controller's tip target (clamped to lead the measured tip by at most ``max_target_lead`` and
    to the workspace box); g < 0 closes the gripper, g >= 0 opens it (the study's sign,
    ``GRIPPER_CLOSE_SIGN`` of the robot module).
    """

    robot: ClassVar[str] = panda_robot.NAME
    reward_term_names: ClassVar[tuple[str, ...]] = REWARD_TERM_NAMES

    def __init__(self, config: PandaTaskConfig | None = None):
        if config is not None and not isinstance(config, PandaTaskConfig):
            raise TypeError(f"config must be a PandaTaskConfig, got {type(config).__name__}")
        self.config = config or PandaTaskConfig()
        cfg = self.config
        self.control_dt = cfg.control_dt
        self.max_episode_steps = cfg.max_episode_steps
        size = cfg.image_size
        self.observation_space = spaces.Dict(
            {
                "pixels": spaces.Box(0, 255, (size, size, 1), dtype=np.uint8),
                "state": spaces.Box(STATE_LOW, STATE_HIGH, dtype=np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
        self._workspace_low = np.asarray(cfg.workspace_low, dtype=np.float64)
        self._workspace_high = np.asarray(cfg.workspace_high, dtype=np.float64)

    def initial_task_state(self, state: Batch, rngs: list[np.random.Generator]) -> Batch:
        """Draw each world's goal: above the object's start, at a random height."""
        cfg = self.config
        start = np.asarray(state["object_pos"], dtype=np.float64)
        if len(rngs) != start.shape[0]:
            raise ValueError(f"got {len(rngs)} generators for {start.shape[0]} worlds")
        goal = np.empty_like(start)
        for i, rng in enumerate(rngs):
            offset = rng.uniform(cfg.goal_xy_offset_low, cfg.goal_xy_offset_high)
            height = rng.uniform(*cfg.goal_height_range)
            goal[i] = [start[i, 0] + offset[0], start[i, 1] + offset[1], cfg.table_height + height]
        return {"goal": goal}

    def command(self, action: np.ndarray, state: Batch, task_state: Batch) -> Batch:
        """Tip target (B, 3) in m and gripper command (B,), 1.0 closed / 0.0 open."""
        del task_state
        action = np.asarray(action, dtype=np.float64)
        batch = state["tip_pos"].shape[0]
        if action.shape != (batch, 4):
            raise ValueError(f"action must have shape ({batch}, 4), got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"action must be finite, got {action.tolist()}")
        action = np.clip(action, -1.0, 1.0)
        cfg = self.config
        tip = state["tip_pos"]
        target = state["tip_target"] + cfg.max_tip_step * action[:, :3]
        target = np.clip(target, tip - cfg.max_target_lead, tip + cfg.max_target_lead)
        target = np.clip(target, self._workspace_low, self._workspace_high)
        closed = panda_robot.GRIPPER_CLOSE_SIGN * action[:, 3] > 0
        return {"tip_target": target, "gripper_closed": closed.astype(np.float64)}

    def observe(self, state: Batch, task_state: Batch) -> Batch:
        """``pixels`` (B, S, S, 1) uint8 and ``state`` (B, 4): tip xyz (m), opening (m)."""
        del task_state
        proprio = np.concatenate([state["tip_pos"], state["gripper_opening"][:, None]], axis=1)
        proprio = np.clip(proprio, STATE_LOW, STATE_HIGH).astype(np.float32)
        return {"pixels": np.asarray(state["pixels"], dtype=np.uint8), "state": proprio}

    def reward_terms(
        self, prev_state: Batch, state: Batch, action: np.ndarray, task_state: Batch
    ) -> dict[str, np.ndarray]:
        """Weighted terms, each (B,): approach, grasp, lift, carry, success."""
        del action
        cfg = self.config
        return {
            "approach": cfg.approach_weight * approach_progress(prev_state, state),
            "grasp": cfg.grasp_weight * grasp_progress(prev_state, state, cfg),
            "lift": cfg.lift_weight * lift_progress(prev_state, state, task_state, cfg),
            "carry": cfg.carry_weight * carry_progress(prev_state, state, task_state),
            "success": cfg.success_weight * success_bonus(state, task_state, cfg),
        }

    def success(self, state: Batch, task_state: Batch) -> np.ndarray:
        """(B,) the object's centre is within ``success_threshold`` of the goal."""
        return goal_distance(state, task_state) < self.config.success_threshold

    def terminated(self, state: Batch, task_state: Batch) -> np.ndarray:
        """(B,) success, or the object left the object workspace."""
        return self.success(state, task_state) | ~object_in_workspace(state, self.config)

    def info(self, state: Batch, task_state: Batch) -> dict[str, np.ndarray]:
        """Per-step diagnostics: goal (m), object-goal distance (m), grasped, object lost, and
        the pose of the scene (joint angles in rad, the object's centre in m and orientation):
        recorded (``RecordEpisodes(info_fields=...)``), they let the simulator render a real
        episode's frame from the same arm pose (:mod:`sim2online_envs.compare`)."""
        return {
            "goal": np.asarray(task_state["goal"], dtype=np.float64).copy(),
            "goal_distance": goal_distance(state, task_state),
            "grasped": grasped(state, self.config),
            "object_lost": ~object_in_workspace(state, self.config),
            "arm_qpos": np.asarray(state["arm_qpos"], dtype=np.float64).copy(),
            "object_pos": np.asarray(state["object_pos"], dtype=np.float64).copy(),
            "object_quat": np.asarray(state["object_quat"], dtype=np.float64).copy(),
        }
