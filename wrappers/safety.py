"""Safety for every robot: action sanitation, command limits, safety aborts, command watchdog.

:class:`SafetyWrapper` stacks four layers, outermost first:

1. **Action sanitation.** A wrong shape or dtype raises (``ValueError`` / ``TypeError`` naming
   the expected and the actual value). NaN or inf raises, or is replaced by the safe action and
   flagged (``SafetyConfig.non_finite``). The action is then clipped to the action space.
2. **Command limits.** Robot limits (:class:`PandaLimits`, :class:`Go1Limits`,
   :class:`RaceCarLimits`) act on the command in SI units, the last step before the hardware:
   the wrapper puts a :class:`GuardedBackend` between the :class:`~sim2online_envs.core.TaskEnv`
   and its backend, so every command passes the limits, whether it comes from the policy, an
   automatic reset or a scripted controller.
3. **Safety aborts.** After each step the limits look at the new state. An abort (Go1 tilted or
   too low, car outside the arena) ends the episode as ``truncated`` with
   ``info["truncation_reason"]`` (``"safety_tilt"``, ``"safety_height"``, ``"safety_arena"``;
   ``"safety_invalid_state"`` when a state the limits read is NaN or infinite, e.g. lost
   motion capture: no limit can be enforced from it, and the next command is refused).
4. **Command watchdog.** When no new action arrives within ``watchdog_timeout`` seconds of the
   last step or reset, a background thread calls the safe-stop hook: by default the backend's
   ``stop()`` method (:data:`STOP_HOOK`). Real backends implement ``stop()``; it must be
   thread-safe and idempotent and must not block for long. The robot is stopped after an
   episode ends too, while the operator resets the scene or the learner trains. Every command
   that reaches the guard (an automatic reset's too) restarts the countdown, and none is sent
   while the stop hook is still running.

``info["safety"]`` reports every intervention on every step::

    {"interventions": {name: count in this step}, "episode_interventions": {name: count so far},
     "abort": reason or None, "applied_action": the action handed to the env}

The names are fixed per wrapper (the sanitation names, the limits' names, ``"abort"`` and
``"watchdog_stop"``), so the keys are the same in sim and on hardware.

State and command keys the robot limits rely on (the robot modules keep them stable):

========= ====================================================== ============================
robot     state keys (batch 1)                                   command keys (batch 1)
========= ====================================================== ============================
panda     ``tip_pos`` (1, 3) m                                   ``tip_target`` (1, 3) m,
                                                                 ``gripper_closed`` (1,) 0/1,
                                                                 ``gripper_force`` (1,) N (opt.)
go1       ``joint_pos`` (1, 12) rad, ``base_quat`` (1, 4) wxyz   ``joint_targets`` (1, 12) rad
racecar   ``pose`` (1, 3) x, y m, ψ; ``velocity`` (1, 3)        ``throttle`` (1,) duty cycle
          vx, vy m/s (body frame), ω                             in [-1, 1]
========= ====================================================== ============================
"""

from __future__ import annotations

import abc
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sim2online_envs.core import Backend, Batch

logger = logging.getLogger(__name__)

#: Name of the backend method the watchdog calls to put the robot in a safe state.
STOP_HOOK = "stop"

#: ``info["truncation_reason"]`` values set by this module.
WATCHDOG_TIMEOUT = "watchdog_timeout"
SAFETY_TILT = "safety_tilt"
SAFETY_HEIGHT = "safety_height"
SAFETY_ARENA = "safety_arena"
#: A state the limits need is NaN or infinite (a sensor or tracking failure): the limits cannot
#: be enforced from it, so the episode ends.
SAFETY_INVALID_STATE = "safety_invalid_state"

_SANITATION_NAMES = ("non_finite", "clipped")


class UnsafeCommandError(ValueError):
    """A command that cannot be made safe (non-finite, or with keys the limits do not know)."""


# --------------------------------------------------------------------------------------------
# Robot command limits
# --------------------------------------------------------------------------------------------


class CommandLimits(abc.ABC):
    """Limits on a robot's commands (SI units) and the state conditions that abort an episode.

    :meth:`limit` gets the batch-1 command the task produced and the state it was produced from
    and returns a command inside the limits, with the number of interventions per name.
    ``previous`` is the last command that passed the limits in this episode (None on the first
    step after a reset), for rate limits. Limits are frozen dataclasses without memory.

    Every limit field must be finite (checked at construction: a NaN bound compares false with
    everything and would switch the limit off). A NaN or infinite state or command value that a
    limit reads raises :class:`UnsafeCommandError` instead of letting the command through.
    """

    #: Intervention names reported in ``info["safety"]``; fixed per class.
    intervention_names: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def limit(
        self, command: Batch, state: Batch, previous: Batch | None
    ) -> tuple[Batch, dict[str, int]]:
        """A command inside the limits, and the count of interventions per name."""

    def abort_reason(self, state: Batch) -> str | None:
        """Why this state must end the episode (a ``truncation_reason``), or None."""
        del state
        return None


def _require(
    mapping: Mapping[str, np.ndarray], key: str, what: str, owner: str, finite: bool = False
) -> np.ndarray:
    """``mapping[key]`` as float64; with ``finite`` a NaN or inf value raises (a limit computed
    from it would not hold: NaN compares false with every bound)."""
    if key not in mapping:
        raise UnsafeCommandError(
            f"{owner} needs {what} key {key!r}, got keys {sorted(mapping)}; "
            "the robot module must keep the keys documented in sim2online_envs.wrappers.safety"
        )
    value = np.asarray(mapping[key], dtype=np.float64)
    if finite and not np.all(np.isfinite(value)):
        raise UnsafeCommandError(
            f"{owner}: {what} {key!r} is not finite ({value.tolist()}); the limits cannot be "
            "enforced from it, no command is sent"
        )
    return value


def _all_finite(state: Mapping[str, np.ndarray], keys: Sequence[str]) -> bool:
    """Whether every present ``state[key]`` is finite (missing keys are :func:`_require`'s)."""
    return all(
        np.all(np.isfinite(np.asarray(state[key], dtype=np.float64)))
        for key in keys
        if key in state
    )


def _check_finite_fields(owner: str, **fields: Any) -> None:
    """Every limit must be a finite number: a NaN bound silently disables the limit."""
    for name, value in fields.items():
        array = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{owner}.{name} must be finite, got {value!r}")


@dataclass(frozen=True)
class PandaLimits(CommandLimits):
    """Franka Panda: tip workspace box, maximum tip step per control period, gripper force.

    ``tip_target`` is clamped into the box ``[workspace_low, workspace_high]`` and then pulled
    towards the current tip so that it is at most ``max_step`` metres away; when the tip is in
    the box the result is in the box too (the box is convex). ``gripper_closed`` is kept in
    [0, 1]. A ``gripper_force`` (N) in the command, for drivers that grasp with a force
    (libfranka's ``grasp``), is capped at ``max_gripper_force`` (the hand: 70 N continuous).
    The defaults are the task's own bounds (``PandaTaskConfig``: workspace, and a target at most
    ``max_target_lead`` = 0.04 m per axis ahead of the tip), so a well-behaved task never
    triggers them; tighten them for a first session on hardware.
    """

    workspace_low: tuple[float, float, float] = (0.30, -0.30, 0.015)
    workspace_high: tuple[float, float, float] = (0.68, 0.30, 0.35)
    max_step: float = 0.04 * math.sqrt(3.0) + 1e-9
    max_gripper_force: float = 40.0
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
        self, command: Batch, state: Batch, previous: Batch | None
    ) -> tuple[Batch, dict[str, int]]:
        del previous
        tip = _require(state, self.tip_key, "state", "PandaLimits", finite=True)
        target = _require(command, self.target_key, "command", "PandaLimits", finite=True)
        counts = dict.fromkeys(self.intervention_names, 0)
        boxed = np.clip(target, self.workspace_low, self.workspace_high)
        counts["workspace"] = int(np.any(boxed != target))
        step = boxed - tip
        length = np.linalg.norm(step, axis=-1, keepdims=True)
        too_long = length > self.max_step
        if np.any(too_long):
            scale = self.max_step / np.maximum(length, 1e-12)
            boxed = np.where(too_long, tip + step * scale, boxed)
            counts["max_step"] = 1
        out = dict(command)
        out[self.target_key] = boxed
        if self.gripper_key in command:
            out[self.gripper_key] = np.clip(np.asarray(command[self.gripper_key], float), 0, 1)
        if self.force_key in command:
            force = np.asarray(command[self.force_key], dtype=np.float64)
            capped = np.clip(force, 0.0, self.max_gripper_force)
            counts["gripper_force"] = int(np.any(capped != force))
            out[self.force_key] = capped
        return out, counts

    @classmethod
    def for_task(cls, task: Any) -> PandaLimits:
        """The task's workspace and target lead (``PandaTaskConfig``), defaults elsewhere."""
        config = getattr(task, "config", None)
        if config is None:
            return cls()
        lead = float(getattr(config, "max_target_lead", 0.04))
        return cls(
            workspace_low=tuple(getattr(config, "workspace_low", cls.workspace_low)),
            workspace_high=tuple(getattr(config, "workspace_high", cls.workspace_high)),
            max_step=lead * math.sqrt(3.0) + 1e-9,
        )


#: Go1 joint limits (rad) per leg: hip abduction, thigh, calf (Unitree Go1 URDF), FR FL RR RL.
GO1_JOINT_LOWER = (-0.863, -0.686, -2.818) * 4
GO1_JOINT_UPPER = (0.863, 4.501, -0.888) * 4
#: Go1 leg geometry (m): hip joints in the trunk frame (FR, FL, RR, RL), thigh offset along y,
#: thigh and calf lengths, foot sphere radius.
GO1_HIP_OFFSETS = np.array(
    [
        [0.1881, -0.04675, 0.0],
        [0.1881, 0.04675, 0.0],
        [-0.1881, -0.04675, 0.0],
        [-0.1881, 0.04675, 0.0],
    ]
)
GO1_THIGH_OFFSET = 0.08
GO1_THIGH_LENGTH = 0.213
GO1_CALF_LENGTH = 0.213
GO1_FOOT_RADIUS = 0.02


def go1_feet_in_trunk(joint_pos: np.ndarray) -> np.ndarray:
    """Foot centres (B, 4, 3) in the trunk frame from joint angles (B, 12), by leg kinematics."""
    q = np.asarray(joint_pos, dtype=np.float64).reshape(-1, 4, 3)
    abduction, thigh, knee = q[..., 0], q[..., 1], q[..., 2]
    # In the hip frame, after the thigh and knee pitch joints (rotations about y):
    x = -GO1_THIGH_LENGTH * np.sin(thigh) - GO1_CALF_LENGTH * np.sin(thigh + knee)
    z = -GO1_THIGH_LENGTH * np.cos(thigh) - GO1_CALF_LENGTH * np.cos(thigh + knee)
    y = np.sign(GO1_HIP_OFFSETS[:, 1]) * GO1_THIGH_OFFSET
    # The abduction joint rotates about x.
    y_rot = y * np.cos(abduction) - z * np.sin(abduction)
    z_rot = y * np.sin(abduction) + z * np.cos(abduction)
    return GO1_HIP_OFFSETS + np.stack([x, y_rot, z_rot], axis=-1)


def go1_trunk_height(joint_pos: np.ndarray, base_quat: np.ndarray) -> np.ndarray:
    """Trunk height (B,) above flat ground, from joint angles and the IMU orientation only.

    The lowest foot is taken to touch the ground. This needs no motion capture, so it holds the
    same on the real robot as in sim.
    """
    feet = go1_feet_in_trunk(joint_pos)
    w, x, y, z = np.moveaxis(np.asarray(base_quat, dtype=np.float64).reshape(-1, 4), -1, 0)
    # Third row of the rotation matrix: the world z of a trunk-frame vector.
    row = np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1)
    foot_z = np.einsum("bk,bfk->bf", row, feet)
    return -foot_z.min(axis=1) + GO1_FOOT_RADIUS


@dataclass(frozen=True)
class Go1Limits(CommandLimits):
    """Unitree Go1: joint targets inside the joint limits with a margin, a bounded target change.

    Joint targets are first moved at most ``max_target_change`` rad from the previous target
    (the measured joint positions at the start of an episode), then clamped into
    ``[lower + margin, upper - margin]``; the position limits win when both cannot hold. The
    episode is aborted when roll or pitch exceed ``max_tilt`` rad (``"safety_tilt"``) or the
    trunk is lower than ``min_height`` m above the ground (``"safety_height"``, estimated from
    joint angles and IMU orientation by :func:`go1_trunk_height`; standing: 0.28 m).

    The abort defaults lie just beyond the task's own fall detection (60° tilt, trunk contact),
    so that a fall stays a termination, as in pretraining, and the abort is the backstop for
    states the task does not end. Lower them to abort earlier on hardware (an abort is a
    truncation: the learner bootstraps through it).
    """

    joint_lower: tuple[float, ...] = GO1_JOINT_LOWER
    joint_upper: tuple[float, ...] = GO1_JOINT_UPPER
    margin: float = 0.05
    max_target_change: float = 0.25
    max_tilt: float = 1.1
    min_height: float = 0.12
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

    def limit(
        self, command: Batch, state: Batch, previous: Batch | None
    ) -> tuple[Batch, dict[str, int]]:
        targets = _require(command, self.target_key, "command", "Go1Limits", finite=True)
        counts = dict.fromkeys(self.intervention_names, 0)
        if previous is None:
            previous_targets = _require(state, self.joint_key, "state", "Go1Limits", finite=True)
        else:
            previous_targets = _require(previous, self.target_key, "command", "Go1Limits")
        change = targets - previous_targets
        limited = previous_targets + np.clip(
            change, -self.max_target_change, self.max_target_change
        )
        counts["target_change"] = int(np.any(np.abs(change) > self.max_target_change))
        lower = np.asarray(self.joint_lower) + self.margin
        upper = np.asarray(self.joint_upper) - self.margin
        clamped = np.clip(limited, lower, upper)
        counts["joint_limits"] = int(np.any(clamped != limited))
        out = dict(command)
        out[self.target_key] = clamped
        return out, counts

    def abort_reason(self, state: Batch) -> str | None:
        if not _all_finite(state, (self.quat_key, self.joint_key)):
            return SAFETY_INVALID_STATE
        quat = _require(state, self.quat_key, "state", "Go1Limits")
        roll, pitch = roll_pitch(quat)
        if np.any(np.abs(roll) > self.max_tilt) or np.any(np.abs(pitch) > self.max_tilt):
            return SAFETY_TILT
        joints = _require(state, self.joint_key, "state", "Go1Limits")
        if np.any(go1_trunk_height(joints, quat) < self.min_height):
            return SAFETY_HEIGHT
        return None


def roll_pitch(quat_wxyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Roll and pitch (rad, ZYX Euler) of unit quaternions ``(..., 4)`` in w, x, y, z order."""
    w, x, y, z = np.moveaxis(np.asarray(quat_wxyz, dtype=np.float64), -1, 0)
    roll = np.arctan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2.0 * (w * y - z * x), -1.0, 1.0))
    return roll, pitch


@dataclass(frozen=True)
class RaceCarLimits(CommandLimits):
    """RC race car: speed cap and arena bounds.

    At or above ``max_speed`` (m/s, body-frame longitudinal velocity, either direction) the
    throttle may only brake. Outside the arena box the episode is aborted (``"safety_arena"``)
    and the cap drops to ``outside_max_speed`` so that an automatic reset can still crawl back.
    """

    arena_low: tuple[float, float] = (-4.0, -4.0)
    arena_high: tuple[float, float] = (4.0, 4.0)
    max_speed: float = 3.0
    outside_max_speed: float = 0.5
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

    def _outside(self, state: Batch, finite: bool = False) -> np.ndarray:
        pose = _require(state, self.pose_key, "state", "RaceCarLimits", finite)
        x, y = pose[..., 0], pose[..., 1]
        low, high = self.arena_low, self.arena_high
        return (x < low[0]) | (x > high[0]) | (y < low[1]) | (y > high[1])

    def limit(
        self, command: Batch, state: Batch, previous: Batch | None
    ) -> tuple[Batch, dict[str, int]]:
        del previous
        throttle = _require(command, self.throttle_key, "command", "RaceCarLimits", finite=True)
        speed = _require(state, self.velocity_key, "state", "RaceCarLimits", finite=True)[..., 0]
        cap = np.where(self._outside(state, finite=True), self.outside_max_speed, self.max_speed)
        limited = np.where(speed >= cap, np.minimum(throttle, 0.0), throttle)
        limited = np.where(speed <= -cap, np.maximum(limited, 0.0), limited)
        out = dict(command)
        out[self.throttle_key] = limited
        return out, {"speed_cap": int(np.any(limited != throttle))}

    def abort_reason(self, state: Batch) -> str | None:
        if not _all_finite(state, (self.pose_key,)):
            return SAFETY_INVALID_STATE
        return SAFETY_ARENA if np.any(self._outside(state)) else None


def _racecar_limits(task: Any) -> RaceCarLimits:
    """The car's limits with the arena of its task (``config.arena_half_size``, default 4 m)."""
    half = float(getattr(getattr(task, "config", None), "arena_half_size", 4.0))
    return RaceCarLimits(arena_low=(-half, -half), arena_high=(half, half))


#: Default limits per robot name (``Task.robot``), built from the env's task.
DEFAULT_LIMITS: dict[str, Callable[[Any], CommandLimits]] = {
    "panda": PandaLimits.for_task,
    "go1": lambda task: Go1Limits(),
    "racecar": _racecar_limits,
}


# --------------------------------------------------------------------------------------------
# The guard between the env and its backend
# --------------------------------------------------------------------------------------------


class GuardedBackend(Backend):
    """A backend proxy that passes every command through :class:`CommandLimits` first.

    It remembers the last state the backend returned (the state the next command is computed
    from), refuses non-finite commands with :class:`UnsafeCommandError` before they reach the
    backend, and forwards every other attribute (``stop``, ``vector_backend``, …) to it.
    """

    def __init__(self, backend: Backend, limits: CommandLimits | None):
        self.backend = backend
        self.limits = limits
        self.kind = backend.kind
        self.last_state: Batch | None = None
        self.last_command: Batch | None = None
        #: Set by :class:`SafetyWrapper`: every command, also one from an automatic reset or a
        #: scripted controller stepping the TaskEnv directly, waits for a running stop hook and
        #: restarts the watchdog's countdown.
        self.watchdog: CommandWatchdog | None = None
        names = limits.intervention_names if limits is not None else ()
        self.counts: dict[str, int] = dict.fromkeys(names, 0)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found normally: forward hooks like stop() to the driver.
        if name == "backend":
            raise AttributeError(name)
        return getattr(self.backend, name)

    def reset(self, rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> Batch:
        state = self.backend.reset(rng, options)
        self.last_state = state
        self.last_command = None
        return state

    def apply(self, command: Batch) -> Batch:
        if self.last_state is None:
            raise RuntimeError("GuardedBackend.apply before reset: the limits need a state")
        for key, value in command.items():
            if not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
                raise UnsafeCommandError(
                    f"command {key!r} is not finite ({value!r}); refused before the backend"
                )
        if self.limits is not None:
            command, counts = self.limits.limit(command, self.last_state, self.last_command)
            for key, value in command.items():  # defence in depth: what the limits made
                if not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
                    raise UnsafeCommandError(
                        f"the limits produced a non-finite command {key!r} ({value!r}); refused "
                        "before the backend"
                    )
            for name, count in counts.items():
                self.counts[name] += count
        watchdog = self.watchdog
        if watchdog is not None:
            watchdog.disarm()
        try:
            state = self.backend.apply(command)
        finally:
            if watchdog is not None:
                watchdog.arm()
        self.last_state = state
        self.last_command = command
        return state

    def render(self) -> np.ndarray | None:
        return self.backend.render()

    def privileged(self) -> dict[str, np.ndarray]:
        return self.backend.privileged()

    def close(self) -> None:
        self.backend.close()

    def take_counts(self) -> dict[str, int]:
        """Interventions since the last call, and reset the counters."""
        counts, self.counts = self.counts, dict.fromkeys(self.counts, 0)
        return counts


# --------------------------------------------------------------------------------------------
# Watchdog
# --------------------------------------------------------------------------------------------


class CommandWatchdog:
    """Calls ``on_timeout`` from a background thread when :meth:`arm` is not renewed in time.

    ``arm()`` starts (or restarts) the countdown, ``disarm()`` stops it and returns whether the
    watchdog fired since the previous ``disarm()``. The hook runs at most once per arming.

    The hook runs outside the watchdog's lock (a slow hook never blocks ``arm()``), but
    ``disarm()`` waits until a running hook has returned, so that the next command is never
    sent while the robot is being stopped; after ``hook_wait`` seconds it raises
    ``TimeoutError`` instead of sending into a stop that hangs.
    """

    def __init__(
        self,
        timeout: float,
        on_timeout: Callable[[], None],
        name: str = "watchdog",
        hook_wait: float = 10.0,
    ):
        if not timeout > 0:
            raise ValueError(f"watchdog timeout must be > 0 seconds, got {timeout}")
        if not hook_wait > 0:
            raise ValueError(f"watchdog hook_wait must be > 0 seconds, got {hook_wait}")
        self.timeout = float(timeout)
        self.hook_wait = float(hook_wait)
        self._on_timeout = on_timeout
        self._condition = threading.Condition()
        self._deadline: float | None = None
        self._fired = False
        self._hook_running = False
        self._closed = False
        self.fire_count = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def arm(self) -> None:
        with self._condition:
            self._deadline = time.monotonic() + self.timeout
            self._condition.notify_all()

    def disarm(self) -> bool:
        with self._condition:
            self._deadline = None
            self._condition.notify_all()
            if self._hook_running and threading.current_thread() is not self._thread:
                logger.warning("waiting for the safe-stop hook to return before the next command")
                if not self._condition.wait_for(
                    lambda: not self._hook_running, timeout=self.hook_wait
                ):
                    raise TimeoutError(
                        f"the watchdog's safe-stop hook has not returned after {self.hook_wait} s;"
                        " no new command is sent while the robot may be stopping"
                    )
            fired, self._fired = self._fired, False
            return fired

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._deadline = None
            self._condition.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._closed:
                    if self._deadline is None:
                        self._condition.wait()
                        continue
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._condition.wait(timeout=remaining)
                if self._closed:
                    return
                self._deadline = None
                self._fired = True
                self.fire_count += 1
                self._hook_running = True
            # Outside the lock: a slow hook must not block arm() in the control loop; disarm()
            # waits for it (no command may overtake the stop).
            try:
                self._on_timeout()
            except Exception:
                logger.exception("watchdog stop hook failed; the robot may still be moving")
            finally:
                with self._condition:
                    self._hook_running = False
                    self._condition.notify_all()


# --------------------------------------------------------------------------------------------
# The wrapper
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SafetyConfig:
    """Settings of :class:`SafetyWrapper`.

    Attributes:
        non_finite: ``"raise"`` (default) raises ``ValueError`` on NaN or inf in an action;
            ``"replace"`` sends ``safe_action`` instead and counts ``"non_finite"``.
        safe_action: The action used for ``"replace"``; default: zero, clipped into the space
            (Panda: stay, Go1: home pose, car: straight and no throttle).
        clip: Clip actions to the action space (counted as ``"clipped"``).
        allow_integer_actions: Accept integer arrays (converted to float); bool, complex,
            string and object arrays are always refused.
        limits: Robot command limits; ``"auto"`` picks the robot's defaults from
            :data:`DEFAULT_LIMITS` by ``Task.robot`` (none for an unknown robot), ``None``
            turns them off.
        watchdog_timeout: Seconds without a new action before the stop hook runs; None: off.
        watchdog_truncates: A step that follows a watchdog stop inside an episode ends it as
            truncated (``"watchdog_timeout"``): the robot stood still, so the transition is not
            one control period of the MDP.
        stop_hook: Called by the watchdog; default: the backend's ``stop()`` (:data:`STOP_HOOK`).
    """

    non_finite: Literal["raise", "replace"] = "raise"
    safe_action: Sequence[float] | None = None
    clip: bool = True
    allow_integer_actions: bool = True
    limits: CommandLimits | Literal["auto"] | None = "auto"
    watchdog_timeout: float | None = None
    watchdog_truncates: bool = True
    stop_hook: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.non_finite not in ("raise", "replace"):
            raise ValueError(f"non_finite must be 'raise' or 'replace', got {self.non_finite!r}")
        if self.watchdog_timeout is not None and not self.watchdog_timeout > 0:
            raise ValueError(f"watchdog_timeout must be > 0 or None, got {self.watchdog_timeout}")


class SafetyWrapper(gym.Wrapper):
    """Sanitises actions, guards commands, aborts unsafe episodes, stops a stalled robot.

    Works on any env with a Box action space; the command limits and the ``stop()`` hook need
    a :class:`~sim2online_envs.core.TaskEnv` underneath (``env.unwrapped.backend``). See the
    module docstring for the layers and ``info["safety"]``.

    Example::

        env = SafetyWrapper(gym.make("SimRaceCar-v0"), SafetyConfig(non_finite="replace"))
    """

    def __init__(self, env: gym.Env, config: SafetyConfig | None = None):
        super().__init__(env)
        self.config = config = config if config is not None else SafetyConfig()
        space = env.action_space
        if not isinstance(space, spaces.Box):
            raise TypeError(f"SafetyWrapper needs a Box action space, got {space}")
        self._low = np.asarray(space.low, dtype=np.float64)
        self._high = np.asarray(space.high, dtype=np.float64)
        self._safe_action = self._make_safe_action(config.safe_action)

        base = env.unwrapped
        limits = config.limits
        if limits == "auto":
            task = getattr(base, "task", None)
            factory = DEFAULT_LIMITS.get(getattr(task, "robot", None) or "")
            limits = factory(task) if factory is not None else None
        self.guard: GuardedBackend | None = None
        backend = getattr(base, "backend", None)
        if isinstance(backend, Backend):
            self.guard = GuardedBackend(backend, limits)
            base.backend = self.guard
        elif limits is not None:
            raise TypeError(
                "command limits need a TaskEnv underneath (env.unwrapped.backend); "
                f"got {type(base).__name__}; pass SafetyConfig(limits=None) to use sanitation only"
            )
        self.limits = limits

        names = (*_SANITATION_NAMES, *(limits.intervention_names if limits else ()))
        self.intervention_names = (*names, "abort", "watchdog_stop")
        self._episode_counts = dict.fromkeys(self.intervention_names, 0)
        self._episode_over = True

        self.watchdog: CommandWatchdog | None = None
        if config.watchdog_timeout is not None:
            # A weak reference: the watchdog thread must not keep a dropped wrapper alive
            # (its __del__ then ends the thread).
            self.watchdog = CommandWatchdog(
                config.watchdog_timeout, _weak_call(self._stop_robot), name="safety-watchdog"
            )
            if self.guard is not None:
                self.guard.watchdog = self.watchdog

    # -- actions ---------------------------------------------------------------------------

    def _make_safe_action(self, safe_action: Sequence[float] | None) -> np.ndarray:
        if safe_action is None:
            return np.clip(np.zeros_like(self._low), self._low, self._high)
        action = np.asarray(safe_action, dtype=np.float64)
        if action.shape != self._low.shape:
            raise ValueError(
                f"safe_action has shape {action.shape}, the action space {self._low.shape}"
            )
        if (
            not np.all(np.isfinite(action))
            or np.any(action < self._low)
            or np.any(action > self._high)
        ):
            raise ValueError(f"safe_action {action.tolist()} is not inside the action space")
        return action

    def sanitize(self, action: Any) -> tuple[np.ndarray, dict[str, int]]:
        """The action the env will see, and the interventions it took (raises on bad input)."""
        counts = dict.fromkeys(_SANITATION_NAMES, 0)
        try:
            array = np.asarray(action)
        except (ValueError, TypeError) as error:
            raise TypeError(f"action must be an array of numbers, got {action!r}") from error
        kinds = "fiu" if self.config.allow_integer_actions else "f"
        if array.dtype.kind not in kinds:
            raise TypeError(
                f"action dtype must be a real {'number' if 'i' in kinds else 'float'} type, got "
                f"{array.dtype} (from {type(action).__name__})"
            )
        if array.shape != self._low.shape:
            raise ValueError(
                f"action shape must be {self._low.shape} (the action space), got {array.shape}"
            )
        array = array.astype(np.float64)
        if not np.all(np.isfinite(array)):
            if self.config.non_finite == "raise":
                raise ValueError(
                    f"action contains NaN or inf: {array.tolist()}; set "
                    "SafetyConfig(non_finite='replace') to send the safe action instead"
                )
            logger.warning("non-finite action %s replaced by the safe action", array.tolist())
            counts["non_finite"] = 1
            array = self._safe_action.copy()
        if self.config.clip:
            clipped = np.clip(array, self._low, self._high)
            counts["clipped"] = int(np.any(clipped != array))
            array = clipped
        elif np.any(array < self._low) or np.any(array > self._high):
            raise ValueError(
                f"action {array.tolist()} is outside the action space [{self._low.tolist()}, "
                f"{self._high.tolist()}] and clipping is off"
            )
        dtype = self.action_space.dtype if self.action_space.dtype is not None else np.float32
        return array.astype(dtype), counts

    # -- gymnasium API ---------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if self.watchdog is not None:
            self.watchdog.disarm()
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode_counts = dict.fromkeys(self.intervention_names, 0)
        self._episode_over = False
        if self.guard is not None:
            self.guard.take_counts()
        info["safety"] = self._report(dict.fromkeys(self.intervention_names, 0), None, None)
        if self.watchdog is not None:
            self.watchdog.arm()
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        stopped = self.watchdog.disarm() if self.watchdog is not None else False
        try:
            applied, counts = self.sanitize(action)
        except (ValueError, TypeError):
            if self.watchdog is not None:
                self.watchdog.arm()
            raise
        counts = {**dict.fromkeys(self.intervention_names, 0), **counts}
        try:
            obs, reward, terminated, truncated, info = self.env.step(applied)
        finally:
            if self.watchdog is not None:
                self.watchdog.arm()
        if self.guard is not None:
            counts.update(self.guard.take_counts())
        abort = None
        if self.limits is not None and self.guard is not None and self.guard.last_state is not None:
            abort = self.limits.abort_reason(self.guard.last_state)
        if stopped and not self._episode_over:
            counts["watchdog_stop"] = 1
            if self.config.watchdog_truncates:
                abort = abort or WATCHDOG_TIMEOUT
        if abort is not None:
            counts["abort"] = 1
            if not terminated and not truncated:
                truncated = True
                info["truncation_reason"] = abort
                logger.warning("episode aborted by the safety limits: %s", abort)
        self._episode_over = bool(terminated or truncated)
        info["safety"] = self._report(counts, abort, applied)
        return obs, reward, terminated, truncated, info

    def _report(
        self, counts: dict[str, int], abort: str | None, applied: np.ndarray | None
    ) -> dict[str, Any]:
        for name, count in counts.items():
            self._episode_counts[name] += count
        return {
            "interventions": counts,
            "episode_interventions": dict(self._episode_counts),
            "abort": abort,
            "applied_action": applied,
        }

    def _stop_robot(self) -> None:
        hook = self.config.stop_hook
        if hook is None and self.guard is not None:
            hook = getattr(self.guard.backend, STOP_HOOK, None)
        if hook is None:
            logger.warning(
                "no action for %.3f s and no %s() hook on the backend: cannot stop the robot",
                self.watchdog.timeout if self.watchdog else float("nan"),
                STOP_HOOK,
            )
            return
        logger.warning(
            "no action for %.3f s: calling the safe-stop hook",
            self.watchdog.timeout if self.watchdog else float("nan"),
        )
        hook()

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.close()
            self.watchdog = None
        base = self.env.unwrapped
        if self.guard is not None:
            self.guard.watchdog = None
            if getattr(base, "backend", None) is self.guard:
                base.backend = self.guard.backend
        super().close()

    def __del__(self) -> None:
        # A wrapper dropped without close(): end its watchdog thread (not the robot's session).
        watchdog = self.__dict__.get("watchdog")
        if watchdog is not None:
            watchdog.close()


def _weak_call(method: Callable[[], None]) -> Callable[[], None]:
    """A callable that calls the bound ``method`` while its object is alive, else nothing."""
    reference = weakref.WeakMethod(method)

    def call() -> None:
        bound = reference()
        if bound is not None:
            bound()

    return call
