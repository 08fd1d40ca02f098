"""``SimRaceCar-v0``: park a 1:10 RC car at a goal, at 60 Hz (kinematic or dynamic bicycle)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from sim2online_envs.config import coerce_config, replace_fields
from sim2online_envs.env import TaskEnv
from sim2online_envs.robots.racecar import DEFAULT_PRESET
from sim2online_envs.safety import RaceCarLimits, SafetyConfig
from sim2online_envs.sim.racecar import (
    PRESET_KEYS,
    CarParams,
    RaceCarVectorBackend,
    RandomizationRanges,
    delay_steps,
    resolve_preset,
)
from sim2online_envs.tasks.racecar import RaceCarTask, RaceCarTaskConfig

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "RaceCarEnv"]

#: Values of ``backend=`` this env accepts (the real car and its twin come with the hardware).
BACKENDS = ("sim",)

#: A preset argument: a name of ``robots.racecar.PRESETS``, a TOML preset file, or a mapping.
Preset = str | os.PathLike[str] | Mapping[str, Any]


def _complete(preset: Preset) -> dict[str, Any]:
    """``preset`` resolved (:func:`resolve_preset`) unless it already is: a dict with every key
    of a preset and no ``base``, as :func:`_resolve` hands it on."""
    if isinstance(preset, dict) and set(PRESET_KEYS) <= set(preset) and "base" not in preset:
        return preset
    return resolve_preset(preset)


def _coerce_mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else a TypeError naming what ``car_params`` accepts."""
    if not isinstance(value, Mapping):
        raise TypeError(
            f"car_params must be a CarParams, a mapping of its fields or None, "
            f"got {type(value).__name__}"
        )
    return value


def _resolve(
    preset: Preset, car_params: CarParams | Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The complete preset, its ``car`` every :class:`CarParams` field, ``car_params`` applied.

    ``car_params``: an instance replaces the preset's car, a mapping overrides its fields.
    """
    resolved = _complete(preset)
    if isinstance(car_params, CarParams):
        params = car_params
    else:
        params = coerce_config(CarParams, None, "car_params").replace(**resolved["car"])
        if car_params is not None:
            params = replace_fields(params, _coerce_mapping(car_params), "car_params")
    return {**resolved, "car": dataclasses.asdict(params)}


def _trail_length(task: RaceCarTask, render_mode: str | None) -> int:
    """Control steps of trail the frames draw: 2 s when rendering, none otherwise."""
    return round(2.0 / task.control_dt) if render_mode == "rgb_array" else 0


class RaceCarEnv(TaskEnv):
    """Drive an RC race car to a goal and park there.

    ## Description

    A 1:10 RC car on a flat 8 m x 8 m arena must reach a goal and stay within 0.3 m of it. The
    car is a named preset (``preset=``): ``"study"`` (default), the sim-to-online study's car
    (1.65 kg, 0.30 m wheelbase, +-0.6 rad steering, throttle capped at 0.4 duty, tyre grip 0.43
    of axle load, a 1/30 s action delay, the dynamic model, the study's wide randomisation), or
    ``"f1tenth"`` (3.74 kg, 0.33 m wheelbase, +-0.42 rad, the kinematic model, narrow
    randomisation), or a TOML file written by ``sim2online sysid racecar``. Values, sources and
    measured top speeds and turning radii: ``docs/parameters.md``. The planar physics is written
    in NumPy (:mod:`sim2online_envs.sim.racecar`): a kinematic bicycle (``dynamics="kinematic"``)
    or a dynamic bicycle with Pacejka tyres and a motor model after Kabzan et al. 2020
    (``dynamics="dynamic"``). Steering servo and ESC respond with first-order lags, the servo also
    rate limited. The same task runs on the real car with motion capture for the pose.

    ## Action Space

    ``Box(-1, 1, (2,), float32)``, held for one control period (1/60 s by default):

    | Num | Action   | Min | Max | Meaning                                                 |
    |-----|----------|-----|-----|---------------------------------------------------------|
    | 0   | steering | -1  | 1   | steering angle target / max_steering; positive: left    |
    | 1   | throttle | -1  | 1   | duty cycle / max_throttle; > 0 forward, < 0 brakes/back |

    Actions outside the box are clipped; non-finite actions raise a ValueError.

    ## Observation Space

    ``Box(7,)`` float32, everything relative to the goal:

    | Num | Observation | Min  | Max | Unit  | Meaning                                     |
    |-----|-------------|------|-----|-------|---------------------------------------------|
    | 0   | x           | -Inf | Inf | m     | position along the goal heading (goal frame) |
    | 1   | y           | -Inf | Inf | m     | position left of the goal heading            |
    | 2   | sin psi     | -1   | 1   |       | sine of car heading minus goal heading       |
    | 3   | cos psi     | -1   | 1   |       | cosine of car heading minus goal heading     |
    | 4   | vx          | -Inf | Inf | m/s   | forward velocity (body frame)                |
    | 5   | vy          | -Inf | Inf | m/s   | leftward velocity (body frame; side slip)    |
    | 6   | omega       | -Inf | Inf | rad/s | yaw rate                                     |

    Positions and heading are those of the centre of mass.

    ## Rewards

    ``r = progress + goal + control + smoothness`` (each weighted term in
    ``info["reward_terms"]``; weights in :class:`~sim2online_envs.tasks.racecar.RaceCarTaskConfig`):

    | Term         | Value                              | Default weight |
    |--------------|------------------------------------|----------------|
    | ``progress`` | d_{t-1} - d_t (m toward the goal)   | 1              |
    | ``goal``     | 1 if d_t <= 0.3 m                   | 1              |
    | ``control``  | -lambda_c ||a_t||                   | 0.005          |
    | ``smoothness``| -lambda_l ||a_t - a_{t-1}||^2      | 0.01           |

    ## Starting State

    The car rests (zero velocity, straight wheels) 1 to 3 m (uniform) from the arena centre, at a
    uniform bearing and a uniform heading in [-pi, pi). The goal is at the arena centre (plus a
    uniform offset of up to ``goal_position_range`` m per axis if configured) with a uniform
    heading; the goal heading only sets the observation's frame. With domain randomisation, each
    reset scales the preset's mass, tyre friction, motor gains, resistances, yaw inertia and
    viscous drag and adds a steering offset, over the preset's ranges (``docs/parameters.md``).
    ``reset(options={"start_pose": (x, y, psi), "start_speed": v})`` places the car.

    ## Episode End

    * Termination: never. Parking means staying at the goal (the bonus pays every step inside),
      and leaving the arena is a safety matter: ``info["out_of_arena"]`` flags it for the safety
      wrappers, which truncate with a reason on the real car.
    * Truncation: after 250 steps (4.2 s at 60 Hz), ``info["truncation_reason"] = "time_limit"``.
      Change T with ``task_config={"max_episode_steps": T}``: ``gym.make``'s own
      ``max_episode_steps`` only adds a Gymnasium ``TimeLimit`` on top, without the reason.

    ``info`` also holds ``is_success`` (d_t <= 0.3 m), ``distance`` (m) and ``speed`` (m/s).

    ## Arguments

    | Argument                 | Default         | Meaning                                  |
    |--------------------------|-----------------|------------------------------------------|
    | ``backend``              | ``"sim"``       | ``"sim"``: the NumPy simulator           |
    | ``preset``               | ``"study"``     | car preset: name, TOML file or dict      |
    | ``dynamics``             | ``None``        | ``"kinematic"``/``"dynamic"``; preset's  |
    | ``domain_randomization`` | ``True``        | scale car parameters at every reset      |
    | ``control_dt``           | ``1/60``        | seconds per step                         |
    | ``physics_dt``           | ``None``        | RK4 step; default <= 1/120 s, dividing   |
    | ``action_delay``         | ``None``        | command latency, s; the preset's         |
    | ``friction``             | ``None``        | nominal tyre friction (preset's)         |
    | ``car_params``           | ``None``        | ``CarParams``, or a dict over the preset |
    | ``randomization``        | ``None``        | ``RandomizationRanges`` or a dict        |
    | ``task_config``          | ``None``        | ``RaceCarTaskConfig`` or a dict          |
    | ``render_mode``          | ``None``        | ``"rgb_array"``: top-down, 2 s trail     |
    | ``render_size``          | ``256``         | side of the rendered frame, pixels       |

    ## Version History

    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 60}

    limits_class = RaceCarLimits

    def __init__(
        self,
        backend: str = "sim",
        preset: Preset = DEFAULT_PRESET,
        dynamics: str | None = None,
        domain_randomization: bool = True,
        control_dt: float | None = None,
        physics_dt: float | None = None,
        action_delay: float | None = None,
        friction: float | None = None,
        car_params: CarParams | Mapping[str, Any] | None = None,
        randomization: RandomizationRanges | Mapping[str, Any] | None = None,
        task_config: RaceCarTaskConfig | Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        render_size: int = 256,
        safety: SafetyConfig | Mapping[str, Any] | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(
                f"SimRaceCar backend must be one of {BACKENDS}, got {backend!r} (the real car "
                "and its twin are separate backends of the hardware package)"
            )
        resolved = _resolve(preset, car_params)
        task = self.build_task(control_dt=control_dt, task_config=task_config, preset=resolved)
        vector_backend = self.build_backend(
            task,
            num_worlds=1,
            preset=resolved,
            dynamics=dynamics,
            domain_randomization=domain_randomization,
            physics_dt=physics_dt,
            action_delay=action_delay,
            friction=friction,
            car_params=car_params,
            randomization=randomization,
            render_size=render_size,
            trail_length=_trail_length(task, render_mode),
        )
        self.sim = vector_backend
        self.preset = resolved
        super().__init__(task, vector_backend, render_mode=render_mode, safety=safety)

    # -- construction shared with make_vec -------------------------------------------------------

    @staticmethod
    def build_task(
        control_dt: float | None = None,
        task_config: RaceCarTaskConfig | Mapping[str, Any] | None = None,
        preset: Preset = DEFAULT_PRESET,
    ) -> RaceCarTask:
        """The parking task: the preset's steering and throttle scales under ``task_config``.

        A ``task_config`` mapping overrides the preset's ``max_steering`` and ``max_throttle``; a
        :class:`RaceCarTaskConfig` is taken as it is. ``control_dt`` is a shortcut.
        """
        if not isinstance(task_config, RaceCarTaskConfig):
            resolved = _complete(preset)
            scales = {
                "max_steering": resolved["car"]["max_steering"],
                "max_throttle": resolved["max_throttle"],
            }
            task_config = coerce_config(
                RaceCarTaskConfig, {**scales, **dict(task_config or {})}, "task_config"
            )
        task = RaceCarTask(task_config)
        if control_dt is None:
            return task
        return RaceCarTask(task.config.replace(control_dt=control_dt))

    @staticmethod
    def build_backend(
        task: RaceCarTask,
        num_worlds: int,
        preset: Preset = DEFAULT_PRESET,
        dynamics: str | None = None,
        domain_randomization: bool = True,
        physics_dt: float | None = None,
        action_delay: float | None = None,
        friction: float | None = None,
        car_params: CarParams | Mapping[str, Any] | None = None,
        randomization: RandomizationRanges | Mapping[str, Any] | None = None,
        render_size: int = 256,
        trail_length: int = 0,
    ) -> RaceCarVectorBackend:
        """The NumPy simulator of ``num_worlds`` cars, matched to the task's timing and arena.

        The preset gives the car, the randomisation, the model and the delay; ``car_params`` and
        ``randomization`` mappings override its fields, instances replace it.
        """
        config = task.config
        resolved = _resolve(preset, car_params)
        params = car_params if isinstance(car_params, CarParams) else CarParams(**resolved["car"])
        ranges = randomization
        if not isinstance(ranges, RandomizationRanges):
            ranges = {**resolved["randomization"], **dict(ranges or {})}
        delay = resolved["action_delay"] if action_delay is None else action_delay
        return RaceCarVectorBackend(
            num_worlds=num_worlds,
            dynamics=resolved["dynamics"] if dynamics is None else dynamics,
            control_dt=config.control_dt,
            physics_dt=physics_dt,
            params=params,
            friction=friction,
            domain_randomization=domain_randomization,
            randomization=ranges,
            action_delay_steps=delay_steps(delay, config.control_dt),
            start_distance_range=config.start_distance_range,
            arena_half_size=config.arena_half_size,
            render_size=render_size,
            trail_length=trail_length,
            goal_radius=config.success_radius,
        )

    @classmethod
    def build_vector(
        cls,
        num_worlds: int,
        num_threads: int | None = None,
        preset: Preset = DEFAULT_PRESET,
        dynamics: str | None = None,
        domain_randomization: bool = True,
        control_dt: float | None = None,
        physics_dt: float | None = None,
        action_delay: float | None = None,
        friction: float | None = None,
        car_params: CarParams | Mapping[str, Any] | None = None,
        randomization: RandomizationRanges | Mapping[str, Any] | None = None,
        task_config: RaceCarTaskConfig | Mapping[str, Any] | None = None,
        render_size: int = 256,
        render_mode: str | None = None,
    ) -> tuple[RaceCarTask, RaceCarVectorBackend]:
        """The task and a ``num_worlds`` simulator for ``make_vec`` (same kwargs as the env).

        ``num_threads`` is accepted for the MuJoCo robots' sake and ignored: the NumPy car is
        vectorised over worlds on one thread. ``render_mode="rgb_array"`` keeps each world's
        2 s trail for its frames, as the single env does.
        """
        del num_threads
        resolved = _resolve(preset, car_params)
        task = cls.build_task(control_dt, task_config, preset=resolved)
        backend = cls.build_backend(
            task,
            num_worlds=num_worlds,
            preset=resolved,
            dynamics=dynamics,
            domain_randomization=domain_randomization,
            physics_dt=physics_dt,
            action_delay=action_delay,
            friction=friction,
            car_params=car_params,
            randomization=randomization,
            render_size=render_size,
            trail_length=_trail_length(task, render_mode),
        )
        return task, backend

    @property
    def params(self) -> CarParams:
        """The simulator's nominal car parameters (before domain randomisation)."""
        return self.sim.params
