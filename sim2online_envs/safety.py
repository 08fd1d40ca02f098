"""Safety rules of the MDP: action sanitation settings, command limits and safety aborts.

These are part of the step loop (:mod:`sim2online_envs.loop`), not a wrapper: ``gym.make``,
``make_vec`` and ``make_env``, in sim and on hardware, run the same limits and the same aborts,
so pretraining and fine-tuning are one MDP.

* :class:`SafetyConfig`: what the loop does with bad actions (NaN/inf raise or are replaced,
  out-of-range actions are clipped) and which command limits it applies.
* :class:`CommandLimits`: limits on a robot's commands in SI units, the last step before the
  backend, and the state conditions that abort an episode. Every method works on a batch of
  worlds: ``limit`` returns per-world intervention counts, ``abort_masks`` a (B,) bool mask per
  abort reason (``abort_reasons`` the same as one string per world). One subclass per robot
  (:class:`PandaLimits`, :class:`Go1Limits`, :class:`RaceCarLimits`); each env class names its
  own (``limits_class``) and builds it from its task with ``for_task``.

An abort ends the episode as ``truncated`` with ``info["truncation_reason"]`` set to the reason
(``"safety_tilt"``, ``"safety_height"``, ``"safety_arena"``); a true MDP end in the same step
(a fall) stays a termination.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np

from sim2online_envs.core import Batch
from sim2online_envs.robots import go1, panda, racecar

#: ``info["truncation_reason"]`` values of the limits.
SAFETY_TILT = "safety_tilt"
SAFETY_HEIGHT = "safety_height"
SAFETY_ARENA = "safety_arena"

#: Intervention names of action sanitation (before the task maps the action to a command).
SANITATION_NAMES = ("non_finite", "clipped")


class UnsafeCommandError(ValueError):
    """A command that cannot be made safe (non-finite, or with keys the limits do not know)."""


#: The dtype of per-world reason strings (abort, fault, truncation reason).
REASON_DTYPE = "<U32"


def no_reasons(num_worlds: int) -> np.ndarray:
    """A (B,) array of empty reasons (zero-filled: cheap for thousands of worlds)."""
    return np.zeros(num_worlds, dtype=REASON_DTYPE)


def reasons_from_masks(masks: Mapping[str, np.ndarray], num_worlds: int) -> np.ndarray:
    """(B,) str: for each world the first reason whose mask holds ("" where none)."""
    reasons = no_reasons(num_worlds)
    for reason, mask in reversed(list(masks.items())):
        reasons[mask] = reason
    return reasons


class CommandLimits(abc.ABC):
    """Limits on a robot's commands (SI units) and the state conditions that abort an episode.

    :meth:`limit` gets the batched command the task produced, the state it was produced from,
    the last command that passed the limits (``previous``) and ``fresh`` (B,) bool: worlds with
    no previous command in this episode (rate limits start from the state there). It returns a
    command inside the limits and, per intervention name, a (B,) int count. Limits are frozen
    dataclasses without memory.

    Every limit field must be finite (checked at construction: a NaN bound compares false with
    everything and would switch the limit off). A NaN or infinite value that a limit reads
    raises :class:`UnsafeCommandError` instead of letting the command through.
    """

    #: Intervention names reported in ``info["safety"]``; fixed per class.
    intervention_names: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def limit(
        self, command: Batch, state: Batch, previous: Batch | None, fresh: np.ndarray
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        """A command inside the limits, and the (B,) count of interventions per name."""

    def abort_masks(self, state: Batch) -> dict[str, np.ndarray]:
        """Per abort reason, in priority order, a (B,) bool mask of the worlds it aborts."""
        del state
        return {}

    def abort_reasons(self, state: Batch) -> np.ndarray:
        """(B,) str: why each world's state must end its episode, "" where it need not."""
        num_worlds = len(next(iter(state.values())))
        return reasons_from_masks(self.abort_masks(state), num_worlds)

    @classmethod
    def for_task(cls, task: Any) -> CommandLimits:
        """The limits matching a task's own bounds (workspace, arena); default: the defaults."""
        del task
        return cls()


def _require(
    mapping: Mapping[str, np.ndarray], key: str, what: str, owner: str, finite: bool = False
) -> np.ndarray:
    """``mapping[key]`` as float64; with ``finite`` a NaN or inf value raises."""
    if key not in mapping:
        raise UnsafeCommandError(
            f"{owner} needs {what} key {key!r}, got keys {sorted(mapping)}; the robot module "
            "documents the state and command keys its limits read"
        )
    value = np.asarray(mapping[key], dtype=np.float64)
    if finite and not all_finite(value):
        raise UnsafeCommandError(
            f"{owner}: {what} {key!r} is not finite ({value.tolist()}); the limits cannot be "
            "enforced from it, no command is sent"
        )
    return value


#: ``np.add.reduce``: ``ndarray.sum`` without its Python wrapper (a third of its cost at batch 1).
_sum = np.add.reduce


def all_finite(value: np.ndarray) -> bool:
    """Whether every entry of a float array is finite, in one reduction where possible.

    A NaN or an infinity makes the sum non-finite, so a finite sum proves every entry finite;
    only a non-finite sum (a bad entry, or finite entries overflowing) needs the entry-wise test.
    At batch size 1 this is one NumPy call instead of two or three.
    """
    if value.dtype.kind == "f" and math.isfinite(_sum(value, None)):
        return True
    return bool(np.isfinite(value).all())


def _check_finite_fields(owner: str, **fields: Any) -> None:
    """Every limit must be a finite number: a NaN bound silently disables the limit."""
    for name, value in fields.items():
        array = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{owner}.{name} must be finite, got {value!r}")


def _rows_changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(B,) int: 1 where any component of a world's row changed."""
    changed = before != after
    if changed.ndim > 1:
        changed = changed.reshape(len(changed), -1).any(axis=1)
    return changed.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Per robot
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PandaLimits(CommandLimits):
    """Franka Panda: tip workspace box, maximum tip step per control period, gripper force.

    ``tip_target`` is clamped into the box ``[workspace_low, workspace_high]`` and then pulled
    towards the current tip so that it is at most ``max_step`` metres away; when the tip is in
    the box the result is in the box too (the box is convex). ``gripper_closed`` is kept in
    [0, 1]. A ``gripper_force`` (N) in the command, for drivers that grasp with a force
    (libfranka's ``grasp``), is capped at ``max_gripper_force``. :meth:`for_task` takes the
    task's own bounds (workspace, and a target at most ``max_target_lead`` per axis ahead of the
    tip), so a well-behaved task never triggers them; tighten them for a first session on
    hardware.
    """

    workspace_low: tuple[float, float, float] = panda.SAFETY_WORKSPACE_LOW
    workspace_high: tuple[float, float, float] = panda.SAFETY_WORKSPACE_HIGH
    max_step: float = panda.SAFETY_MAX_STEP
    max_gripper_force: float = panda.SAFETY_MAX_GRIPPER_FORCE
    tip_key: str = "tip_pos"
    target_key: str = "tip_target"
    gripper_key: str = "gripper_closed"
    force_key: str = "gripper_force"

    intervention_names: ClassVar[tuple[str, ...]] = ("workspace", "max_step", "gripper_force")

    def __post_init__(self) -> None:
        _check_finite_fields(
            "PandaLimits",
            workspace_low=self.workspace_low,
            workspace_high=self.workspace_high,
            max_step=self.max_step,
            max_gripper_force=self.max_gripper_force,
        )
        low, high = np.asarray(self.workspace_low), np.asarray(self.workspace_high)
        if low.shape != (3,) or high.shape != (3,) or np.any(low >= high):
            raise ValueError(
                f"workspace_low must be below workspace_high in x, y, z; got {self.workspace_low}"
                f" and {self.workspace_high}"
            )
        if self.max_step <= 0 or self.max_gripper_force < 0:
            raise ValueError(
                f"max_step must be > 0 and max_gripper_force >= 0, got {self.max_step} and "
                f"{self.max_gripper_force}"
            )

    def limit(
        self, command: Batch, state: Batch, previous: Batch | None, fresh: np.ndarray
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        del previous, fresh
        tip = _require(state, self.tip_key, "state", "PandaLimits", finite=True)
        target = _require(command, self.target_key, "command", "PandaLimits", finite=True)
        num_worlds = len(target)
        counts = {name: np.zeros(num_worlds, dtype=np.int64) for name in self.intervention_names}
        boxed = np.clip(target, self.workspace_low, self.workspace_high)
        counts["workspace"] = _rows_changed(target, boxed)
        step = boxed - tip
        length = np.linalg.norm(step, axis=-1, keepdims=True)
        too_long = length > self.max_step
        if np.any(too_long):
            scale = self.max_step / np.maximum(length, 1e-12)
            boxed = np.where(too_long, tip + step * scale, boxed)
            counts["max_step"] = too_long[:, 0].astype(np.int64)
        out = dict(command)
        out[self.target_key] = boxed
        if self.gripper_key in command:
            out[self.gripper_key] = np.clip(np.asarray(command[self.gripper_key], float), 0, 1)
        if self.force_key in command:
            force = _require(command, self.force_key, "command", "PandaLimits", finite=True)
            capped = np.clip(force, 0.0, self.max_gripper_force)
            counts["gripper_force"] = _rows_changed(force, capped)
            out[self.force_key] = capped
        return out, counts

    @classmethod
    def for_task(cls, task: Any) -> PandaLimits:
        """The task's workspace and target lead (``PandaTaskConfig``), defaults elsewhere."""
        config = getattr(task, "config", None)
        if config is None:
            return cls()
        lead = float(getattr(config, "max_target_lead", panda.MAX_TARGET_LEAD))
        return cls(
            workspace_low=tuple(getattr(config, "workspace_low", cls.workspace_low)),
            workspace_high=tuple(getattr(config, "workspace_high", cls.workspace_high)),
            max_step=lead * math.sqrt(3.0) + 1e-9,
        )


#: The Go1's leg kinematics (trunk height from joint angles and the IMU) are robot facts.
go1_feet_in_trunk = go1.feet_in_trunk
go1_trunk_height = go1.trunk_height
#: The same facts as the compiled abort test takes them: hip offsets, and the thigh offset
#: along y with each leg's sign (as :func:`go1.feet_in_trunk` applies it).
_GO1_HIP_OFFSETS = np.ascontiguousarray(go1.HIP_OFFSETS, dtype=np.float64)
_GO1_THIGH_Y = np.sign(go1.HIP_OFFSETS[:, 1]) * go1.THIGH_OFFSET
_F8 = np.dtype(np.float64)
_B1 = np.dtype(np.bool_)
#: :mod:`sim2online_envs.safety_kernels`, loaded (and compiled or read from numba's cache) when
#: the first Go1 limits are built, so that other robots' envs never import numba for it.
_go1_kernels: ModuleType | None = None


def _load_go1_kernels() -> ModuleType:
    global _go1_kernels
    if _go1_kernels is None:
        from sim2online_envs import safety_kernels

        _go1_kernels = safety_kernels
    return _go1_kernels


#: ``fresh`` for the kernel when there is no previous command (it is not read then).
_NO_FRESH = np.zeros(0, dtype=bool)


def _num_rows(value: Any) -> int:
    """The rows of a 2-D ndarray, -1 for anything else."""
    return value.shape[0] if type(value) is np.ndarray and value.ndim == 2 else -1


def _float_rows(value: Any, rows: int, width: int) -> bool:
    """``value`` is a float64 ndarray of shape (rows, width): what the compiled kernels take."""
    return type(value) is np.ndarray and value.dtype == _F8 and value.shape == (rows, width)


def roll_pitch(quat_wxyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Roll and pitch (rad, ZYX Euler) of unit quaternions ``(..., 4)`` in w, x, y, z order."""
    quat = np.asarray(quat_wxyz, dtype=np.float64)
    w, x, y, z = quat[..., 0], quat[..., 1], quat[..., 2], quat[..., 3]
    roll = np.arctan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2.0 * (w * y - z * x), -1.0, 1.0))
    return roll, pitch


@dataclass(frozen=True)
class Go1Limits(CommandLimits):
    """Unitree Go1: joint targets inside the joint limits with a margin, a bounded target change.

    Joint targets are first moved at most ``max_target_change`` rad from the previous target
    (the measured joint positions at the start of an episode), then clamped into
    ``[lower + margin, upper - margin]``; the position limits win when both cannot hold. The
    episode is aborted when roll or pitch exceed ``max_tilt`` rad (``"safety_tilt"``) or the
    trunk is lower than ``min_height`` m above the ground (``"safety_height"``, estimated from
    joint angles and IMU orientation by :func:`go1_trunk_height`).

    The abort defaults lie just beyond the task's own fall detection (60° tilt, trunk contact),
    so that a fall stays a termination, and the abort is the backstop for states the task does
    not end. Lower them to abort earlier on hardware (an abort is a truncation: the learner
    bootstraps through it).
    """

    joint_lower: tuple[float, ...] = tuple(go1.JOINT_LOWER.tolist())
    joint_upper: tuple[float, ...] = tuple(go1.JOINT_UPPER.tolist())
    margin: float = go1.SAFETY_JOINT_MARGIN
    max_target_change: float = go1.SAFETY_MAX_TARGET_CHANGE
    max_tilt: float = go1.SAFETY_MAX_TILT
    min_height: float = go1.SAFETY_MIN_HEIGHT
    joint_key: str = "joint_pos"
    quat_key: str = "base_quat"
    target_key: str = "joint_targets"

    intervention_names: ClassVar[tuple[str, ...]] = ("joint_limits", "target_change")

    def __post_init__(self) -> None:
        _check_finite_fields(
            "Go1Limits",
            joint_lower=self.joint_lower,
            joint_upper=self.joint_upper,
            margin=self.margin,
            max_target_change=self.max_target_change,
            max_tilt=self.max_tilt,
            min_height=self.min_height,
        )
        lower, upper = np.asarray(self.joint_lower), np.asarray(self.joint_upper)
        if lower.shape != upper.shape or np.any(lower + 2 * self.margin >= upper):
            raise ValueError(
                "joint_lower + 2 * margin must be below joint_upper for every joint; got "
                f"lower={self.joint_lower}, upper={self.joint_upper}, margin={self.margin}"
            )
        if self.max_target_change <= 0:
            raise ValueError(f"max_target_change must be > 0, got {self.max_target_change}")
        _load_go1_kernels()  # compiled (or read from numba's cache) now, not in the first step

    @functools.cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The position limits with the margin applied, (J,) each (as the reference has them)."""
        return (
            np.asarray(self.joint_lower) + self.margin,
            np.asarray(self.joint_upper) - self.margin,
        )

    def limit(
        self, command: Batch, state: Batch, previous: Batch | None, fresh: np.ndarray
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        """:meth:`limit_reference` in one compiled call (the same bits); inputs the kernel does
        not take (other dtypes or shapes, missing keys, non-finite values) go to the reference,
        which converts them or raises its :class:`UnsafeCommandError`."""
        targets = command.get(self.target_key)
        measured = state.get(self.joint_key)
        lower, upper = self._bounds
        rows, width = _num_rows(measured), len(lower)
        prior = None if previous is None else previous.get(self.target_key)
        if (
            _float_rows(targets, rows, width)
            and _float_rows(measured, rows, width)
            and (
                previous is None
                or (
                    _float_rows(prior, rows, width)
                    and type(fresh) is np.ndarray
                    and fresh.dtype == _B1
                    and fresh.shape == (rows,)
                )
            )
        ):
            kernels = _go1_kernels or _load_go1_kernels()
            clamped, counts, status = kernels.go1_limit(
                targets,
                measured,
                measured if prior is None else prior,
                fresh if prior is not None else _NO_FRESH,
                prior is not None,
                lower,
                upper,
                self.max_target_change,
            )
            if status == kernels.OK:
                out = dict(command)
                out[self.target_key] = clamped
                return out, {"joint_limits": counts[:, 0], "target_change": counts[:, 1]}
        return self.limit_reference(command, state, previous, fresh)

    def limit_reference(
        self, command: Batch, state: Batch, previous: Batch | None, fresh: np.ndarray
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        """The limits in NumPy: the specification the compiled :meth:`limit` follows."""
        targets = _require(command, self.target_key, "command", "Go1Limits", finite=True)
        measured = _require(state, self.joint_key, "state", "Go1Limits", finite=True)
        if previous is None:
            previous_targets = measured
        else:
            previous_targets = _require(previous, self.target_key, "command", "Go1Limits")
            if np.any(fresh):
                previous_targets = np.where(fresh[:, None], measured, previous_targets)
        change = targets - previous_targets
        limited = previous_targets + np.clip(
            change, -self.max_target_change, self.max_target_change
        )
        lower = np.asarray(self.joint_lower) + self.margin
        upper = np.asarray(self.joint_upper) - self.margin
        clamped = np.clip(limited, lower, upper)
        counts = {
            "joint_limits": _rows_changed(limited, clamped),
            "target_change": (np.abs(change) > self.max_target_change).any(axis=1).astype(np.int64),
        }
        out = dict(command)
        out[self.target_key] = clamped
        return out, counts

    def abort_masks(self, state: Batch) -> dict[str, np.ndarray]:
        """:meth:`abort_masks_reference` in one compiled call (float64 (B, 4) quaternions and
        (B, 12) joints; anything else goes to the reference)."""
        quat = state.get(self.quat_key)
        joints = state.get(self.joint_key)
        rows = _num_rows(quat)
        if _float_rows(quat, rows, 4) and _float_rows(joints, rows, 3 * len(_GO1_HIP_OFFSETS)):
            kernels = _go1_kernels or _load_go1_kernels()
            tilted, low, _ = kernels.go1_abort(
                quat,
                joints,
                _GO1_HIP_OFFSETS,
                _GO1_THIGH_Y,
                go1.THIGH_LENGTH,
                go1.CALF_LENGTH,
                go1.FOOT_RADIUS,
                self.max_tilt,
                self.min_height,
            )
            return {SAFETY_TILT: tilted, SAFETY_HEIGHT: low}
        return self.abort_masks_reference(state)

    def abort_masks_reference(self, state: Batch) -> dict[str, np.ndarray]:
        """The abort test in NumPy: the specification the compiled :meth:`abort_masks` follows."""
        quat = _require(state, self.quat_key, "state", "Go1Limits")
        joints = _require(state, self.joint_key, "state", "Go1Limits")
        roll, pitch = roll_pitch(quat)
        return {
            SAFETY_TILT: (np.abs(roll) > self.max_tilt) | (np.abs(pitch) > self.max_tilt),
            SAFETY_HEIGHT: go1_trunk_height(joints, quat) < self.min_height,
        }


@dataclass(frozen=True)
class RaceCarLimits(CommandLimits):
    """RC race car: speed cap and arena bounds.

    At or above ``max_speed`` (m/s, body-frame longitudinal velocity, either direction) the
    throttle may only brake. Outside the arena box the episode is aborted (``"safety_arena"``)
    and the cap drops to ``outside_max_speed`` so that an automatic reset can still crawl back.
    """

    arena_low: tuple[float, float] = racecar.SAFETY_ARENA_LOW
    arena_high: tuple[float, float] = racecar.SAFETY_ARENA_HIGH
    max_speed: float = racecar.SAFETY_MAX_SPEED
    outside_max_speed: float = racecar.SAFETY_OUTSIDE_MAX_SPEED
    pose_key: str = "pose"
    velocity_key: str = "velocity"
    throttle_key: str = "throttle"

    intervention_names: ClassVar[tuple[str, ...]] = ("speed_cap",)

    def __post_init__(self) -> None:
        _check_finite_fields(
            "RaceCarLimits",
            arena_low=self.arena_low,
            arena_high=self.arena_high,
            max_speed=self.max_speed,
            outside_max_speed=self.outside_max_speed,
        )
        if np.any(np.asarray(self.arena_low) >= np.asarray(self.arena_high)):
            raise ValueError(
                f"arena_low must be below arena_high, got {self.arena_low} and {self.arena_high}"
            )
        if self.max_speed <= 0 or self.outside_max_speed < 0:
            raise ValueError(
                f"max_speed must be > 0 and outside_max_speed >= 0, got {self.max_speed} and "
                f"{self.outside_max_speed}"
            )

    def outside(self, state: Batch, finite: bool = False) -> np.ndarray:
        """(B,) bool: the car is outside the arena box."""
        pose = _require(state, self.pose_key, "state", "RaceCarLimits", finite)
        x, y = pose[..., 0], pose[..., 1]
        low, high = self.arena_low, self.arena_high
        return (x < low[0]) | (x > high[0]) | (y < low[1]) | (y > high[1])

    def limit(
        self, command: Batch, state: Batch, previous: Batch | None, fresh: np.ndarray
    ) -> tuple[Batch, dict[str, np.ndarray]]:
        del previous, fresh
        throttle = _require(command, self.throttle_key, "command", "RaceCarLimits", finite=True)
        speed = _require(state, self.velocity_key, "state", "RaceCarLimits", finite=True)[..., 0]
        cap = np.where(self.outside(state, finite=True), self.outside_max_speed, self.max_speed)
        limited = np.where(speed >= cap, np.minimum(throttle, 0.0), throttle)
        limited = np.where(speed <= -cap, np.maximum(limited, 0.0), limited)
        out = dict(command)
        out[self.throttle_key] = limited
        return out, {"speed_cap": _rows_changed(throttle, limited)}

    def abort_masks(self, state: Batch) -> dict[str, np.ndarray]:
        return {SAFETY_ARENA: self.outside(state)}

    @classmethod
    def for_task(cls, task: Any) -> RaceCarLimits:
        """The car's limits with the arena of its task (``config.arena_half_size``)."""
        half = float(
            getattr(getattr(task, "config", None), "arena_half_size", racecar.ARENA_HALF_SIZE)
        )
        return cls(arena_low=(-half, -half), arena_high=(half, half))


# --------------------------------------------------------------------------------------------
# Settings of the loop
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SafetyConfig:
    """How the step loop treats actions, and which command limits it applies.

    Attributes:
        non_finite: ``"raise"`` (default) raises ``ValueError`` naming the action on NaN or
            inf; ``"replace"`` sends ``safe_action`` instead and counts ``"non_finite"`` in
            ``info["safety"]``. The same in every env, single or batched, sim or real.
        safe_action: The action used for ``"replace"``; default: zero, clipped into the space
            (Panda: stay, Go1: home pose, car: straight and no throttle).
        clip: Clip actions to the action space (counted as ``"clipped"``); False raises on an
            action outside the space.
        allow_integer_actions: Accept integer arrays (converted to float); bool, complex,
            string and object arrays are always refused.
        limits: Robot command limits: ``"auto"`` (default) the env's own limits built from its
            task; a :class:`CommandLimits`; None turns them off (sim experiments only).
    """

    non_finite: Literal["raise", "replace"] = "raise"
    safe_action: Sequence[float] | None = None
    clip: bool = True
    allow_integer_actions: bool = True
    limits: CommandLimits | Literal["auto"] | None = "auto"

    def __post_init__(self) -> None:
        if self.non_finite not in ("raise", "replace"):
            raise ValueError(f"non_finite must be 'raise' or 'replace', got {self.non_finite!r}")
        if not (
            self.limits is None or self.limits == "auto" or isinstance(self.limits, CommandLimits)
        ):
            raise TypeError(
                f"limits must be 'auto', None or a CommandLimits, got {type(self.limits).__name__}"
            )

    @classmethod
    def coerce(cls, value: SafetyConfig | Mapping[str, Any] | None) -> SafetyConfig:
        """None (the defaults), a SafetyConfig, or a dict of its fields."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = set(cls.__dataclass_fields__)
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown SafetyConfig fields {unknown}; known: {sorted(known)}")
            return cls(**value)
        raise TypeError(
            f"safety must be a SafetyConfig, a dict or None, got {type(value).__name__}"
        )

    def resolve_limits(
        self, limits_class: type[CommandLimits] | None, task: Any
    ) -> CommandLimits | None:
        """The limits this config asks for, for an env whose own limits are ``limits_class``."""
        if self.limits == "auto":
            return None if limits_class is None else limits_class.for_task(task)
        return self.limits  # type: ignore[return-value]
