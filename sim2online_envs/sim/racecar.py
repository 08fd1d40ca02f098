"""The RC race car simulator: kinematic and dynamic bicycle models over N worlds.

One :class:`RaceCarVectorBackend` steps ``num_worlds`` cars together, every quantity an array
over the world axis, so the single env (one world through
one world) and the batched env (``make_vec``) run the same lines. The models are written here in
NumPy, the specification; :meth:`RaceCarVectorBackend.apply` runs the same arithmetic compiled
and vectorised over the worlds (:mod:`sim2online_envs.sim.racecar_kernels`, tested against the
NumPy methods to 1e-12).

The car's numbers are a named preset of the robot module
(:data:`sim2online_envs.robots.racecar.PRESETS`): ``"study"`` (the default: the sim-to-online
study's 1:10 car from its public config) or ``"f1tenth"`` (the F1TENTH gym's vehicle with the
ORCA motor model scaled to its mass), or a TOML preset file (:func:`load_preset`, written by
``sim2online sysid racecar``). :func:`car_params` and :func:`randomization_ranges` build this
module's dataclasses from one; sources and measured top speeds and turning radii are in
``docs/parameters.md``.

Two models, chosen with ``dynamics=``:

``"kinematic"`` (the study's prior)
    Kinematic bicycle about the centre of mass: no tyre slip; the rear axle follows a circle of
    radius ``L / tan(delta)``; ``vy = vx * lr * tan(delta) / L``, ``omega = vx * tan(delta) / L``.

``"dynamic"`` (the study's "reality" in sim-to-sim experiments)
    Dynamic bicycle (Kabzan et al. 2020): lateral tyre forces from a simplified Pacejka magic
    formula ``F = mu * Fz * sin(C * atan(B * alpha))`` front and rear (static axle loads, no
    combined slip; ``B * C`` equals the F1TENTH cornering stiffness), the longitudinal force
    along the body axis, and the yaw dynamics. Slip angles are taken in each wheel's frame
    against ``|v_long|``, so reversing is well posed. Below ``blend_speed`` (m/s, planar speed)
    the model blends linearly into the kinematic one, as Kabzan et al. do, because the slip
    angles are singular at standstill; the kinematic part pulls ``vy`` and ``omega`` to their
    no-slip values with time constant ``kinematic_relaxation`` so that a slide that slows down
    comes to rest.

Both models share the longitudinal force (Kabzan et al.'s motor model, mirrored for reverse)::

    F_x = C_m1 * d - (C_m2 * |d| + C_v) * v_x - C_r0 * tanh(v_x / v_eps) - C_r2 * v_x * |v_x|

clipped to the traction limit ``mu * m * g`` (the F1TENTH car is four-wheel drive). For ``d >= 0``
this is Kabzan's ``(C_m1 - C_m2 v_x) d - C_r0 - C_r2 v_x^2``; the mirror makes reversing reach the
same top speed, and ``tanh`` smooths the rolling resistance through ``v_x = 0``. ``C_v``
(``viscous_drag``) is the study's ``c_m_2^2 v_x`` term, which does not scale with the duty.

Actuators are not instantaneous: the steering servo is a first-order lag
(``steering_time_constant``) with a rate limit (``max_steering_rate``); the
throttle (ESC and motor current) is a first-order lag (``throttle_time_constant``). The command is
held over the control period (zero-order hold, as a real microcontroller does), after
``action_delay_steps`` control periods of latency (a FIFO per world, emptied to zero commands at
reset). A steering offset (trim, rad) adds to every steering target after the steering limit.
The rigid body is integrated with classic RK4, the actuators evaluated in closed form at each
stage time, and the heading carried as a unit vector (cos psi, sin psi), so a substep needs no
trigonometry of psi.
``n_substeps = round(control_dt / physics_dt)`` must divide the control period exactly.

Domain randomisation (``domain_randomization=True``, the default) scales per world and per reset,
uniformly within :class:`RandomizationRanges`: mass (and yaw inertia with it), tyre friction, the
motor gains ``C_m1`` and ``C_m2``, the resistances ``C_r0`` and ``C_r2``, the yaw inertia on its
own, the viscous drag ``C_v``; and adds a steering offset. Overrides (``params=``,
``friction=``) set the nominal values that randomisation scales.

Reset draws, per world and in this order, from that world's generator: eleven uniforms
``u = rng.random(11)``; ``u[0:5]`` scale mass, friction, ``C_m1``, ``C_m2``, resistances (drawn even
with randomisation off, so that toggling it does not change the starts); ``u[5:8]`` place the car:
distance ``start_distance_range`` from the arena centre, bearing and heading uniform on [-pi, pi);
``u[8:10]`` scale inertia and viscous drag, ``u[10]`` draws the steering offset.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from sim2online_envs.config import coerce_config, replace_fields
from sim2online_envs.core import Backend, Batch, SimReadings
from sim2online_envs.robots import racecar as car_robot
from sim2online_envs.sim import racecar_kernels

logger = logging.getLogger(__name__)

__all__ = [
    "DYNAMICS",
    "GRAVITY",
    "CarParams",
    "RaceCarVectorBackend",
    "RandomizationRanges",
    "car_params",
    "default_physics_dt",
    "delay_steps",
    "draw_topdown",
    "load_preset",
    "randomization_ranges",
    "resolve_preset",
    "stable_physics_dt",
    "write_preset",
]

#: Standard gravity, m/s^2.
GRAVITY = 9.81
#: The car models ``dynamics=`` accepts.
DYNAMICS = ("kinematic", "dynamic")
#: The longest physics step the default picks (RK4 stays stable with margin on the dynamic model).
MAX_DEFAULT_PHYSICS_DT = 1.0 / 120.0
#: Worlds stepped together at a time: big enough to amortise NumPy's per-call cost, small
#: enough for the RK4 stages to stay in the CPU cache.
WORLDS_PER_BLOCK = 4096
#: Rows of the state array.
_X, _Y, _COS, _SIN, _VX, _VY, _OMEGA = range(7)
#: Keys of ``reset_worlds(..., options)``.
RESET_OPTIONS = ("start_pose", "start_speed")


#: CarParams fields that may be zero; every other number must be > 0.
_NON_NEGATIVE_PARAMS = frozenset(
    (
        "motor_cm2",
        "viscous_drag",
        "rolling_resistance",
        "drag",
        "steering_time_constant",
        "throttle_time_constant",
    )
)
#: CarParams fields that may take any sign.
_SIGNED_PARAMS = frozenset(("steering_offset",))
#: The default preset's car and randomisation (the dataclass defaults).
_CAR = car_robot.PRESETS[car_robot.DEFAULT_PRESET]["car"]
_RANGES = car_robot.PRESETS[car_robot.DEFAULT_PRESET]["randomization"]


@dataclass(frozen=True)
class CarParams:
    """Nominal physical parameters of the car (SI units).

    Defaults: the default preset's (:data:`sim2online_envs.robots.racecar.PRESETS`; sources in
    ``docs/parameters.md``). The smoothing speed, blending speeds and kinematic relaxation are
    this package's numerical choices, the same for every preset.
    """

    #: Centre of mass to front axle, m.
    lf: float = _CAR["lf"]
    #: Centre of mass to rear axle, m.
    lr: float = _CAR["lr"]
    #: Body length and width for drawing, m.
    length: float = _CAR["length"]
    width: float = _CAR["width"]
    #: Mass, kg.
    mass: float = _CAR["mass"]
    #: Yaw moment of inertia about the centre of mass, kg m^2.
    inertia_z: float = _CAR["inertia_z"]
    #: Tyre-road friction coefficient (peak of the Pacejka curve over axle load, traction limit).
    friction: float = _CAR["friction"]
    #: Pacejka stiffness factors B (1/rad) and shape factors C, front and rear.
    tire_b_front: float = _CAR["tire_b_front"]
    tire_c_front: float = _CAR["tire_c_front"]
    tire_b_rear: float = _CAR["tire_b_rear"]
    tire_c_rear: float = _CAR["tire_c_rear"]
    #: Motor gain C_m1 (N at full duty) and back-EMF gain C_m2 (N s/m per unit duty).
    motor_cm1: float = _CAR["motor_cm1"]
    motor_cm2: float = _CAR["motor_cm2"]
    #: Viscous drag C_v (N s/m), independent of the duty (the study's c_m_2^2).
    viscous_drag: float = _CAR["viscous_drag"]
    #: Rolling resistance C_r0 (N) and aerodynamic drag C_r2 (N s^2/m^2).
    rolling_resistance: float = _CAR["rolling_resistance"]
    drag: float = _CAR["drag"]
    #: Speed scale of the tanh that smooths rolling resistance through standstill, m/s.
    rolling_smoothing_speed: float = 0.05
    #: Steering angle limit, rad, and servo rate limit, rad/s.
    max_steering: float = _CAR["max_steering"]
    max_steering_rate: float = _CAR["max_steering_rate"]
    #: Steering trim, rad: added to every steering target (after the limit).
    steering_offset: float = _CAR["steering_offset"]
    #: First-order lag of the steering servo and of the throttle, s (0: instantaneous).
    steering_time_constant: float = _CAR["steering_time_constant"]
    throttle_time_constant: float = _CAR["throttle_time_constant"]
    #: Planar speeds (m/s) between which the dynamic model blends from kinematic to dynamic.
    blend_speed: tuple[float, float] = (0.3, 0.8)
    #: Time constant (s) with which the kinematic part pulls vy and omega to no-slip values.
    kinematic_relaxation: float = 0.02

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if field.name == "blend_speed":
                continue
            if field.name in _SIGNED_PARAMS:
                _check_finite(f"CarParams.{field.name}", getattr(self, field.name))
                continue
            strict = field.name not in _NON_NEGATIVE_PARAMS
            _check_number(f"CarParams.{field.name}", getattr(self, field.name), strict)
        if self.max_steering + abs(self.steering_offset) >= math.pi / 2:
            raise ValueError(
                "CarParams.max_steering + |steering_offset| must be < pi/2 rad, got "
                f"{self.max_steering} + {abs(self.steering_offset)}"
            )
        low, high = _pair("CarParams.blend_speed", self.blend_speed)
        if not 0 <= low < high:
            raise ValueError(f"CarParams.blend_speed must satisfy 0 <= low < high, got {low, high}")

    @property
    def wheelbase(self) -> float:
        """Distance between the axles, m."""
        return self.lf + self.lr

    @property
    def min_turning_radius(self) -> float:
        """Radius of the rear axle's circle at full steering lock (kinematic), m."""
        return self.wheelbase / math.tan(self.max_steering)

    @property
    def top_speed(self) -> float:
        """Speed at full throttle where motor force balances resistance, m/s (no slip)."""
        return self.top_speed_at(1.0)

    def top_speed_at(self, duty: float) -> float:
        """Speed at duty ``duty`` (0, 1] where motor force balances resistance, m/s (no slip)."""
        # C_m1 d - (C_m2 d + C_v) v - C_r0 tanh(v/eps) - C_r2 v^2 = 0, with tanh ~ 1 at speed.
        a, b = self.drag, self.motor_cm2 * duty + self.viscous_drag
        c = self.rolling_resistance - self.motor_cm1 * duty
        if a == 0:
            return -c / b if b > 0 else math.inf
        return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)

    def replace(self, **overrides: Any) -> CarParams:
        """A copy with some fields changed; unknown names raise a TypeError naming them."""
        return replace_fields(self, overrides)


@dataclass(frozen=True)
class RandomizationRanges:
    """Uniform ranges of the per-world, per-reset scale factors on nominal parameters.

    Defaults: the default preset's. ``steering_offset`` is additive (rad), the rest are scales.
    """

    #: Scales mass and yaw inertia together (payload, battery).
    mass_scale: tuple[float, float] = _RANGES["mass_scale"]
    #: Scales the tyre friction coefficient (floor, tyre wear, dust).
    friction_scale: tuple[float, float] = _RANGES["friction_scale"]
    #: Scale the motor gains C_m1 and C_m2 (battery voltage, ESC calibration).
    motor_cm1_scale: tuple[float, float] = _RANGES["motor_cm1_scale"]
    motor_cm2_scale: tuple[float, float] = _RANGES["motor_cm2_scale"]
    #: Scales the resistances C_r0 and C_r2 (bearings, drivetrain, floor).
    resistance_scale: tuple[float, float] = _RANGES["resistance_scale"]
    #: Scales the yaw inertia on its own (battery placement), on top of ``mass_scale``.
    inertia_scale: tuple[float, float] = _RANGES["inertia_scale"]
    #: Scales the viscous drag C_v.
    viscous_drag_scale: tuple[float, float] = _RANGES["viscous_drag_scale"]
    #: Added to the nominal steering offset, rad (servo trim).
    steering_offset: tuple[float, float] = _RANGES["steering_offset"]

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            low, high = _pair(f"RandomizationRanges.{field.name}", getattr(self, field.name))
            signed = field.name == "steering_offset"
            if not (low <= high and (signed or low > 0)):
                bound = "low <= high" if signed else "0 < low <= high"
                raise ValueError(
                    f"RandomizationRanges.{field.name} must satisfy {bound}, got {(low, high)}"
                )

    def as_array(self) -> np.ndarray:
        """(8, 2) lows and highs in field order (the scales, then the steering offset)."""
        return np.array([getattr(self, f.name) for f in dataclasses.fields(self)], dtype=float)

    def replace(self, **overrides: Any) -> RandomizationRanges:
        """A copy with some ranges changed; unknown names raise a TypeError naming them."""
        return replace_fields(self, overrides)


def _check_finite(name: str, value: Any) -> None:
    """A ValueError naming ``name`` unless ``value`` is a finite real number."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_number(name: str, value: Any, strict: bool) -> None:
    """A ValueError naming ``name`` unless ``value`` is a finite real > 0 (>= 0 if not strict)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (strict and value == 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _pair(name: str, value: Any) -> tuple[float, float]:
    """``value`` as a (low, high) pair of finite floats, or a ValueError naming ``name``."""
    try:
        low, high = (float(item) for item in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {(low, high)}")
    return low, high


# -- presets -------------------------------------------------------------------------------------

#: Top-level keys of a preset (besides ``base`` in a file).
PRESET_KEYS = ("dynamics", "max_throttle", "action_delay", "car", "randomization")


def resolve_preset(preset: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A complete, checked preset: a name of ``PRESETS``, a TOML file path, or a mapping.

    A file or mapping may name a ``base`` preset (default: the default preset) and override any
    of its keys; ``car`` and ``randomization`` override field by field. Unknown keys, a bad
    ``dynamics`` or bad values raise a ValueError naming them.
    """
    if isinstance(preset, Mapping):
        data, origin = dict(preset), "preset mapping"
    elif isinstance(preset, str) and preset in car_robot.PRESETS:
        data, origin = {"base": preset}, f"preset {preset!r}"
    elif isinstance(preset, (str, os.PathLike)) and (
        str(preset).endswith(".toml") or Path(preset).is_file()
    ):
        data, origin = load_preset(preset), str(preset)
    else:
        raise ValueError(
            f"unknown race car preset {preset!r}: choose one of {sorted(car_robot.PRESETS)} or "
            "give a .toml preset file"
        )
    base = data.pop("base", car_robot.DEFAULT_PRESET)
    if base not in car_robot.PRESETS:
        raise ValueError(
            f"{origin}: unknown base preset {base!r}; known {sorted(car_robot.PRESETS)}"
        )
    unknown = sorted(set(data) - set(PRESET_KEYS))
    if unknown:
        raise ValueError(f"{origin}: unknown preset key(s) {unknown}; known: {list(PRESET_KEYS)}")
    source = car_robot.PRESETS[base]
    resolved: dict[str, Any] = {key: data.get(key, source[key]) for key in PRESET_KEYS[:3]}
    for key in ("car", "randomization"):
        resolved[key] = {**source[key], **dict(data.get(key, {}))}
    if resolved["dynamics"] not in DYNAMICS:
        raise ValueError(
            f"{origin}: dynamics must be one of {DYNAMICS}, got {resolved['dynamics']!r}"
        )
    _check_number(f"{origin}: max_throttle", resolved["max_throttle"], strict=True)
    if resolved["max_throttle"] > 1:
        raise ValueError(f"{origin}: max_throttle must be <= 1, got {resolved['max_throttle']}")
    _check_number(f"{origin}: action_delay", resolved["action_delay"], strict=False)
    try:
        CarParams(**resolved["car"])
        RandomizationRanges(**{k: tuple(v) for k, v in resolved["randomization"].items()})
    except TypeError as error:
        raise ValueError(f"{origin}: {error}") from None
    return resolved


def car_params(
    preset: str | os.PathLike[str] | Mapping[str, Any] = car_robot.DEFAULT_PRESET,
) -> CarParams:
    """The :class:`CarParams` of a preset (see :func:`resolve_preset`)."""
    return CarParams(**resolve_preset(preset)["car"])


def randomization_ranges(
    preset: str | os.PathLike[str] | Mapping[str, Any] = car_robot.DEFAULT_PRESET,
) -> RandomizationRanges:
    """The :class:`RandomizationRanges` of a preset (see :func:`resolve_preset`)."""
    ranges = resolve_preset(preset)["randomization"]
    return RandomizationRanges(**{key: tuple(value) for key, value in ranges.items()})


def delay_steps(action_delay: float, control_dt: float) -> int:
    """Whole control periods closest to ``action_delay`` seconds."""
    _check_number("action_delay", action_delay, strict=False)
    return round(action_delay / control_dt)


def load_preset(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw contents of a TOML preset file (:func:`resolve_preset` completes and checks them)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ValueError(f"race car preset file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"race car preset file {str(path)!r}: {error}") from None


def write_preset(path: str | os.PathLike[str], preset: Mapping[str, Any], header: str = "") -> Path:
    """Write ``preset`` (``base`` and any :data:`PRESET_KEYS`) as a TOML file; return its path.

    Values are numbers, strings, pairs (arrays) and the ``car`` and ``randomization`` tables.
    ``header`` lines are written as comments at the top. The file is checked by loading it back.
    """

    def value(item: Any) -> str:
        if isinstance(item, str):
            return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(item, (tuple, list)):
            return "[" + ", ".join(value(v) for v in item) + "]"
        if isinstance(item, (bool, np.bool_)):
            return "true" if item else "false"
        return repr(float(item))

    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for key, item in preset.items():
        if not isinstance(item, Mapping):
            lines.append(f"{key} = {value(item)}")
    for key, item in preset.items():
        if isinstance(item, Mapping):
            lines += ["", f"[{key}]"] + [f"{name} = {value(v)}" for name, v in item.items()]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    resolve_preset(path)
    return path


def stable_physics_dt(
    params: CarParams, dynamics: str, friction_scale: float = 1.0, inertia_scale: float = 1.0
) -> float:
    """The longest RK4 step (s) that keeps the model's stiffest mode well inside RK4's stability.

    Dynamic model: the lateral/yaw modes of the linearised bicycle at the speed where the blend
    reaches the full dynamic model (they stiffen as speed drops, the blend takes over below),
    with the friction scaled by ``friction_scale`` (the randomisation's upper bound) and the yaw
    inertia by ``inertia_scale`` (its lower bound); tyre stiffness over mass and over inertia
    does not depend on mass. Infinite where nothing stiff is left (a kinematic car without
    rolling resistance). Both models: the rolling
    resistance's tanh and the kinematic relaxation. The step keeps ``|lambda| h <= 2`` (RK4's
    real-axis limit is 2.79).
    """
    p = params
    rates = [
        p.rolling_resistance / (p.rolling_smoothing_speed * p.mass),
        1.0 / p.kinematic_relaxation if dynamics == "dynamic" else 0.0,
    ]
    if dynamics == "dynamic":
        load = p.friction * friction_scale * p.mass * GRAVITY / p.wheelbase
        front = p.tire_b_front * p.tire_c_front * load * p.lr  # cornering stiffness, N/rad
        rear = p.tire_b_rear * p.tire_c_rear * load * p.lf
        v = p.blend_speed[1]
        inertia = p.inertia_z * inertia_scale
        moment = front * p.lf - rear * p.lr
        yaw_damping = front * p.lf**2 + rear * p.lr**2
        # d(ay, yaw acceleration)/d(vy, omega) of the dynamic bicycle at forward speed v.
        jacobian = -np.array(
            [
                [(front + rear) / (p.mass * v), moment / (p.mass * v) + v],
                [moment / (inertia * v), yaw_damping / (inertia * v)],
            ]
        )
        rates.append(float(np.abs(np.linalg.eigvals(jacobian)).max()))
    fastest = max(rates)
    return 2.0 / fastest if fastest > 0 else math.inf


def default_physics_dt(
    control_dt: float,
    params: CarParams | None = None,
    dynamics: str = "dynamic",
    friction_scale: float = 1.0,
    inertia_scale: float = 1.0,
) -> float:
    """The longest step <= 1/120 s and <= :func:`stable_physics_dt` dividing ``control_dt``."""
    limit = MAX_DEFAULT_PHYSICS_DT
    if params is not None:
        limit = min(limit, stable_physics_dt(params, dynamics, friction_scale, inertia_scale))
    n_substeps = max(1, math.ceil(control_dt / limit - 1e-9))
    return control_dt / n_substeps


def _substeps(control_dt: float, physics_dt: float) -> int:
    """``round(control_dt / physics_dt)``, checked to divide the control period exactly."""
    _check_number("control_dt", control_dt, strict=True)
    _check_number("physics_dt", physics_dt, strict=True)
    n_substeps = round(control_dt / physics_dt)
    if n_substeps < 1 or not math.isclose(n_substeps * physics_dt, control_dt, rel_tol=1e-9):
        raise ValueError(
            f"physics_dt={physics_dt} must divide control_dt={control_dt} into whole substeps "
            f"(got {control_dt / physics_dt:.6g}); e.g. physics_dt={default_physics_dt(control_dt)}"
        )
    return n_substeps


class RaceCarVectorBackend(Backend):
    """``num_worlds`` RC cars stepped together in NumPy (kinematic or dynamic bicycle).

    State reported by :meth:`reset_worlds` and :meth:`apply` (fresh arrays, leading world axis):

    ============  =======  =====================================================================
    key           shape    meaning
    ============  =======  =====================================================================
    ``pose``      (N, 3)   x, y (m) of the centre of mass in the arena frame, heading psi (rad,
                           in [-pi, pi])
    ``velocity``  (N, 3)   vx, vy (m/s) in the car's body frame (forward, left), yaw rate (rad/s)
    ``steering``  (N,)     the servo's actual steering angle, rad
    ``throttle``  (N,)     the ESC's actual duty cycle d in [-1, 1]
    ============  =======  =====================================================================

    Command for :meth:`apply`: ``steering`` (N,) target angle in rad (clipped to the steering
    limit), ``throttle`` (N,) duty cycle (clipped to [-1, 1]), and optionally ``goal`` (N, 3), a
    pose drawn by the renderer (not a control input).

    :param num_worlds: number of cars.
    :param dynamics: "kinematic" or "dynamic" (see the module docstring).
    :param control_dt: seconds per :meth:`apply`.
    :param physics_dt: integration step; None picks the longest step <= 1/120 s dividing
        ``control_dt`` that keeps RK4 stable for this car (:func:`stable_physics_dt`; shorter
        for high friction). Must divide ``control_dt`` exactly.
    :param params: nominal :class:`CarParams`, or a mapping of fields to override.
    :param friction: shortcut for ``params.friction`` (nominal tyre friction), for mismatch runs.
    :param domain_randomization: scale parameters per world at every reset.
    :param randomization: :class:`RandomizationRanges` or a mapping of ranges to override.
    :param action_delay_steps: control periods between a command and the actuators (latency).
    :param start_distance_range: the car starts this far (m) from the arena centre.
    :param arena_half_size: half the side of the square arena, m (for drawing and start checks).
    :param render_size: side of the square ``rgb_array`` frame, pixels.
    :param trail_length: positions of past control steps kept per world and drawn (0: none).
    :param goal_radius: radius of the goal circle drawn, m (the task's success radius).

    :meth:`apply` integrates every world in one compiled call
    (:func:`~sim2online_envs.sim.racecar_kernels.rk4_substeps`); setting ``use_kernels = False``
    runs the NumPy methods instead, the reference the kernel is tested against.
    """

    kind: ClassVar[str] = "sim"

    def __init__(
        self,
        num_worlds: int = 1,
        dynamics: str = "kinematic",
        control_dt: float = car_robot.CONTROL_DT,
        physics_dt: float | None = None,
        params: CarParams | Mapping[str, Any] | None = None,
        friction: float | None = None,
        domain_randomization: bool = True,
        randomization: RandomizationRanges | Mapping[str, Any] | None = None,
        action_delay_steps: int = 0,
        start_distance_range: Sequence[float] = car_robot.START_DISTANCE_RANGE,
        arena_half_size: float = car_robot.ARENA_HALF_SIZE,
        render_size: int = 256,
        trail_length: int = 0,
        goal_radius: float = car_robot.PARKING_RADIUS,
    ):
        if isinstance(num_worlds, bool) or not isinstance(num_worlds, (int, np.integer)):
            raise TypeError(f"num_worlds must be an int, got {type(num_worlds).__name__}")
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be >= 1, got {num_worlds}")
        if dynamics not in DYNAMICS:
            raise ValueError(f"dynamics must be one of {DYNAMICS}, got {dynamics!r}")
        if not isinstance(domain_randomization, (bool, np.bool_)):
            raise TypeError(
                f"domain_randomization must be a bool, got {type(domain_randomization).__name__}"
            )
        params = coerce_config(CarParams, params, "params")
        if friction is not None:
            params = params.replace(friction=friction)
        start_low, start_high = _pair("start_distance_range", start_distance_range)
        if not 0 <= start_low <= start_high:
            raise ValueError(
                f"start_distance_range must satisfy 0 <= low <= high, got {(start_low, start_high)}"
            )
        if not (math.isfinite(arena_half_size) and arena_half_size > 0):
            raise ValueError(f"arena_half_size must be a finite number > 0, got {arena_half_size}")
        if start_high >= arena_half_size:
            raise ValueError(
                f"start_distance_range high ({start_high} m) must be inside the arena "
                f"(arena_half_size={arena_half_size} m)"
            )
        if not (isinstance(render_size, (int, np.integer)) and 16 <= render_size <= 4096):
            raise ValueError(f"render_size must be an int in [16, 4096] pixels, got {render_size}")
        if not (isinstance(trail_length, (int, np.integer)) and trail_length >= 0):
            raise ValueError(f"trail_length must be an int >= 0, got {trail_length!r}")
        _check_number("goal_radius", goal_radius, strict=True)
        delay = action_delay_steps
        if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)) or delay < 0:
            raise ValueError(f"action_delay_steps must be an int >= 0, got {delay!r}")
        self.action_delay_steps = int(delay)

        self.num_worlds = int(num_worlds)
        self.dynamics = dynamics
        _check_number("control_dt", control_dt, strict=True)
        self.control_dt = float(control_dt)
        self.params = params
        self.domain_randomization = bool(domain_randomization)
        self.randomization = coerce_config(RandomizationRanges, randomization, "randomization")
        friction_scale = self.randomization.friction_scale[1] if domain_randomization else 1.0
        inertia_scale = 1.0
        if domain_randomization:
            ranges = self.randomization
            inertia_scale = min(1.0, ranges.inertia_scale[0])
        if physics_dt is None:
            physics_dt = default_physics_dt(
                control_dt, params, dynamics, friction_scale, inertia_scale
            )
        self.physics_dt = float(physics_dt)
        self.n_substeps = _substeps(self.control_dt, self.physics_dt)
        self._readings = SimReadings(num_worlds, self.control_dt)
        stable = stable_physics_dt(params, dynamics, friction_scale, inertia_scale)
        if self.physics_dt > stable:
            logger.warning(
                "physics_dt=%.4g s is above %.4g s, the longest step that keeps RK4 stable for "
                "this car (friction up to %.3g); expect inaccurate or diverging physics",
                self.physics_dt,
                stable,
                params.friction * friction_scale,
            )
        self.start_distance_range = (start_low, start_high)
        self.arena_half_size = float(arena_half_size)
        self.render_size = int(render_size)
        self.trail_length = int(trail_length)
        self.goal_radius = float(goal_radius)

        n = self.num_worlds
        # Rigid-body state, one contiguous row per quantity: x, y, cos psi, sin psi, vx, vy,
        # omega. The heading is integrated as a unit vector: no trigonometry inside RK4.
        self._q = np.zeros((7, n))
        self._q[_COS] = 1.0
        self._act = _Actuation.rest(n)
        self._command = np.zeros((2, n))  # held steering target (rad) and throttle, clipped
        # Commands on their way to the actuators (oldest at _delay_head), clipped, no offset.
        self._delayed = np.zeros((self.action_delay_steps, 2, n))
        self._delay_head = 0
        self._goal = np.full((n, 3), np.nan)
        self._trail = np.full((self.trail_length, n, 2), np.nan)
        self._trail_head = 0
        # Per-world scale factors of mass, friction, C_m1, C_m2, resistances, inertia, viscous
        # drag (1 = nominal), and the per-world steering offset (rad).
        self._scales = np.ones((7, n))
        self._offset = np.full(n, self.params.steering_offset)
        self._derive_world_params()

        h = self.physics_dt
        p = self.params
        # Actuator lags evaluated at the RK4 stage times h/2 and h of every substep.
        self._stage_gains = tuple(
            (
                _lag_gain(t, p.steering_time_constant),
                p.max_steering_rate * t,
                _lag_gain(t, p.throttle_time_constant),
            )
            for t in (0.5 * h, h)
        )
        #: Run :meth:`apply`'s substeps compiled (:mod:`.racecar_kernels`); False: the NumPy
        #: reference (the specification the tests compare the kernels with).
        self.use_kernels = True
        self._constants = np.empty(len(racecar_kernels.CONSTANT_NAMES))
        self._constants_of: CarParams | None = None
        logger.debug(
            "race car: %d worlds, %s dynamics, %d substeps of %.5f s",
            n,
            dynamics,
            self.n_substeps,
            h,
        )

    # -- parameters ----------------------------------------------------------------------------

    def _derive_world_params(self, ids: np.ndarray | None = None) -> None:
        """Per-world physical constants from the nominal parameters and the scale factors.

        ``ids``: only those worlds' entries, in place (a reset; the same arithmetic per world).
        """
        p = self.params
        scales = self._scales if ids is None else self._scales[:, ids]
        mass_s, friction_s, cm1_s, cm2_s, resist_s, inertia_s, viscous_s = scales
        mass = p.mass * mass_s
        friction = p.friction * friction_s
        weight_force = friction * mass * GRAVITY
        world = _WorldParams(
            mass=mass,
            inv_mass=1.0 / mass,
            inv_inertia=1.0 / (p.inertia_z * mass_s * inertia_s),
            friction=friction,
            cm1=p.motor_cm1 * cm1_s,
            cm2=p.motor_cm2 * cm2_s,
            viscous=p.viscous_drag * viscous_s,
            cr0=p.rolling_resistance * resist_s,
            cr2=p.drag * resist_s,
            # Traction limit of four driven wheels.
            fx_max=weight_force,
            # Pacejka peak forces D = mu * F_z, front and rear (static axle loads), negated
            # because the force opposes the slip.
            neg_peak_force=-np.stack(
                [weight_force * (p.lr / p.wheelbase), weight_force * (p.lf / p.wheelbase)]
            ),
        )
        if ids is None:
            self._world = world
        else:
            for mine, theirs in zip(self._world, world, strict=True):
                mine[..., ids] = theirs
        self._tire_b = np.array([[p.tire_b_front], [p.tire_b_rear]])
        self._tire_c = np.array([[p.tire_c_front], [p.tire_c_rear]])

    def privileged(self) -> dict[str, np.ndarray]:
        """Each world's true parameters and actuator states (for tests and scripted control)."""
        return {
            "mass": self._world.mass.copy(),
            "inertia_z": 1.0 / self._world.inv_inertia,
            "friction": self._world.friction.copy(),
            "motor_cm1": self._world.cm1.copy(),
            "motor_cm2": self._world.cm2.copy(),
            "viscous_drag": self._world.viscous.copy(),
            "steering_offset": self._offset.copy(),
            "rolling_resistance": self._world.cr0.copy(),
            "drag": self._world.cr2.copy(),
            "steering": self._act.steer.copy(),
            "throttle": self._act.throttle.copy(),
            "steering_command": self._command[0].copy(),
            "throttle_command": self._command[1].copy(),
        }

    # -- reset ---------------------------------------------------------------------------------

    def reset_worlds(
        self,
        ids: np.ndarray,
        rngs: list[np.random.Generator],
        options: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Re-randomise and restart worlds ``ids`` (draw order in the module docstring).

        ``options`` (all optional): ``start_pose`` (3,) or (len(ids), 3) x, y, psi replacing the
        sampled start; ``start_speed`` scalar or (len(ids),) initial forward speed, m/s.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(rngs) != ids.size:
            raise ValueError(f"reset_worlds got {ids.size} world ids but {len(rngs)} generators")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_worlds):
            raise ValueError(f"world ids must be in [0, {self.num_worlds}), got {ids.tolist()}")
        options = dict(options or {})
        unknown = sorted(set(options) - set(RESET_OPTIONS))
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; known: {list(RESET_OPTIONS)}")
        if ids.size == 0:
            return self._state()
        start_pose = start_speed = None
        if "start_pose" in options:
            start_pose = _rows("start_pose", options["start_pose"], ids.size, 3).T
        if "start_speed" in options:
            start_speed = _rows("start_speed", options["start_speed"], ids.size, None)

        draws = np.stack([rng.random(11) for rng in rngs], axis=1)  # (11, len(ids))
        if self.domain_randomization:
            ranges = self.randomization.as_array()
            low, width = ranges[:, :1], ranges[:, 1:] - ranges[:, :1]
            self._scales[:5, ids] = low[:5] + width[:5] * draws[:5]
            self._scales[5:, ids] = low[5:7] + width[5:7] * draws[8:10]
            offset = low[7] + width[7] * draws[10]
        else:
            self._scales[:, ids] = 1.0
            offset = 0.0
        self._offset[ids] = self.params.steering_offset + offset
        self._derive_world_params(ids)

        low, high = self.start_distance_range
        distance = low + (high - low) * draws[5]
        bearing = 2.0 * np.pi * draws[6] - np.pi
        heading = 2.0 * np.pi * draws[7] - np.pi
        pose = np.stack([distance * np.cos(bearing), distance * np.sin(bearing), heading])
        if start_pose is not None:
            pose = start_pose
        speed = np.zeros(ids.size) if start_speed is None else start_speed

        self._q[_X, ids] = pose[0]
        self._q[_Y, ids] = pose[1]
        self._q[_COS, ids] = np.cos(pose[2])
        self._q[_SIN, ids] = np.sin(pose[2])
        self._q[_VX, ids] = speed
        self._q[_VY:, ids] = 0.0
        self._act.set_rest(ids)
        self._command[:, ids] = 0.0
        self._delayed[:, :, ids] = 0.0
        self._goal[ids] = np.nan
        if self.trail_length:
            self._trail[:, ids] = np.nan
            self._trail[self._trail_head, ids] = pose[:2].T
        self._readings.reset(ids)
        return self._state()

    # -- full state, for system identification ------------------------------------------------

    def set_state(
        self,
        pose: np.ndarray,
        velocity: np.ndarray,
        steering: np.ndarray,
        throttle: np.ndarray,
        in_flight: np.ndarray | None = None,
    ) -> Batch:
        """Put every world in a given state (system identification starts predictions so).

        ``pose`` (N, 3) x, y, psi; ``velocity`` (N, 3) vx, vy, omega; ``steering`` and
        ``throttle`` (N,) the actuators' actual states; ``in_flight`` (action_delay_steps, 2, N)
        the delayed steering (rad, without offset) and throttle commands, oldest first (zeros if
        None). Returns the state.
        """
        n = self.num_worlds
        pose = _rows("pose", pose, n, 3)
        velocity = _rows("velocity", velocity, n, 3)
        steering = _rows("steering", steering, n, None)
        throttle = _rows("throttle", throttle, n, None)
        self._q[_X], self._q[_Y] = pose[:, 0], pose[:, 1]
        self._q[_COS], self._q[_SIN] = np.cos(pose[:, 2]), np.sin(pose[:, 2])
        self._q[_VX:] = velocity.T
        world = self._world
        self._act = _Actuation.at(steering, throttle, self.params.wheelbase, world.cm1, world.cm2)
        self._delayed[:] = 0.0 if in_flight is None else in_flight
        self._delay_head = 0
        return self._state()

    def actuate(self, commands: np.ndarray) -> np.ndarray:
        """(T, 2, N) actual steering and throttle at the end of each period, actuators only.

        ``commands`` (T, 2, N): steering (rad) and throttle per period, as :meth:`apply` takes
        them; from rest and an empty delay line, with each world's steering offset. The
        actuators do not depend on the car's motion, so this is :meth:`apply`'s actuator part
        without the rigid body (the car's state is not touched).
        """
        commands = np.asarray(commands, dtype=np.float64)
        count, n, d = commands.shape[0], self.num_worlds, self.action_delay_steps
        if commands.shape != (count, 2, n):
            raise ValueError(f"commands must have shape (T, 2, {n}), got {commands.shape}")
        p, world = self.params, self._world
        target = np.empty_like(commands)
        np.clip(commands[:, 0], -p.max_steering, p.max_steering, out=target[:, 0])
        np.clip(commands[:, 1], -1.0, 1.0, out=target[:, 1])
        if d:
            target = np.concatenate([np.zeros((d, 2, n)), target[:-d]])
        target[:, 0] += self._offset
        act = _Actuation.rest(n)
        out = np.empty_like(target)
        for t in range(count):
            for _ in range(self.n_substeps):
                act = self._actuation_after(self._stage_gains[1], act, target[t], world)
            out[t, 0], out[t, 1] = act.steer, act.throttle
        return out

    def apply(self, command: Batch) -> Batch:
        """Hold ``command`` for one control period (``n_substeps`` physics steps)."""
        steer_cmd = self._command_row(command, "steering")
        throttle_cmd = self._command_row(command, "throttle")
        if "goal" in command:
            goal = np.asarray(command["goal"], dtype=np.float64)
            if goal.shape != (self.num_worlds, 3):
                raise ValueError(
                    f"command['goal'] must have shape ({self.num_worlds}, 3), got {goal.shape}"
                )
            self._goal[:] = goal
        p = self.params
        clipped = np.empty((2, self.num_worlds))
        np.clip(steer_cmd, -p.max_steering, p.max_steering, out=clipped[0])
        np.clip(throttle_cmd, -1.0, 1.0, out=clipped[1])
        if self.action_delay_steps:
            # The oldest command in flight reaches the actuators; this one takes its place.
            oldest = self._delayed[self._delay_head].copy()
            self._delayed[self._delay_head] = clipped
            self._delay_head = (self._delay_head + 1) % self.action_delay_steps
            clipped = oldest
        self._command[:] = clipped
        self._command[0] += self._offset

        if self.use_kernels:
            self._kernel_substeps()
        else:
            self._reference_substeps()
        if self.trail_length:
            self._trail_head = (self._trail_head + 1) % self.trail_length
            self._trail[self._trail_head] = self._q[:2].T
        self._readings.advance()
        finite = np.isfinite(self._q).all(axis=0)
        if not finite.all():
            logger.warning(
                "race car worlds %s became non-finite; their readings are invalid until reset",
                np.flatnonzero(~finite).tolist(),
            )
            self._readings.diverged |= ~finite
        return self._state()

    def _kernel_substeps(self) -> None:
        """The control period of every world in one compiled call (:mod:`.racecar_kernels`)."""
        world = self._world
        if self._constants_of is not self.params:
            p, (half, end) = self.params, self._stage_gains
            low, high = p.blend_speed
            self._constants = np.array(
                [
                    self.physics_dt,
                    p.lf,
                    p.lr,
                    1.0 / p.wheelbase,
                    1.0 / p.rolling_smoothing_speed,
                    1.0 / p.kinematic_relaxation,
                    low,
                    1.0 / (high - low),
                    p.tire_b_front,
                    p.tire_b_rear,
                    p.tire_c_front,
                    p.tire_c_rear,
                    *half,
                    *end,
                ]
            )
            self._constants_of = p
        racecar_kernels.rk4_substeps(
            self._q,
            tuple(self._act),
            self._command,
            (
                world.inv_mass,
                world.inv_inertia,
                world.cm1,
                world.cm2,
                world.viscous,
                world.cr0,
                world.cr2,
                world.fx_max,
            ),
            world.neg_peak_force,
            self._constants,
            self.n_substeps,
            self.dynamics == "dynamic",
        )

    def _reference_substeps(self) -> None:
        """The control period in NumPy, the specification of :meth:`_kernel_substeps`.

        In blocks of worlds small enough for the RK4 temporaries to stay in cache.
        """
        for start in range(0, self.num_worlds, WORLDS_PER_BLOCK):
            block = slice(start, start + WORLDS_PER_BLOCK)
            q = self._q[:, block]  # a view: the substeps update the state in place
            act = self._act.take(block)
            world = self._world.take(block)
            command = self._command[:, block]
            for _ in range(self.n_substeps):
                act = self._rk4_substep(q, act, command, world)
            self._act.put(block, act)
            # Keep the heading a unit vector (RK4 preserves it to high order, not exactly).
            q[_COS:_VX] *= 1.0 / np.sqrt(q[_COS] * q[_COS] + q[_SIN] * q[_SIN])

    def _command_row(self, command: Batch, key: str) -> np.ndarray:
        if key not in command:
            raise ValueError(f"the race car command needs {key!r}, got keys {sorted(command)}")
        value = np.asarray(command[key], dtype=np.float64)
        if value.shape != (self.num_worlds,):
            raise ValueError(
                f"command[{key!r}] must have shape ({self.num_worlds},), got {value.shape}"
            )
        if not np.isfinite(value).all():
            raise ValueError(f"command[{key!r}] holds non-finite values: {value}")
        return value

    def _actuation_after(
        self,
        gains: tuple[float, float, float],
        act: _Actuation,
        command: np.ndarray,
        world: _WorldParams,
    ) -> _Actuation:
        """Servo and ESC states a stage time after the substep's start (exact lag, held command).

        Servo: first-order lag toward the command, its change limited to ``max_steering_rate``
        times the elapsed time. ESC: first-order lag.
        """
        steer_gain, max_change, throttle_gain = gains
        steer = command[0] - act.steer
        steer *= steer_gain
        np.minimum(steer, max_change, out=steer)
        np.maximum(steer, -max_change, out=steer)
        steer += act.steer
        throttle = command[1] - act.throttle
        throttle *= throttle_gain
        throttle += act.throttle
        return _Actuation.at(steer, throttle, self.params.wheelbase, world.cm1, world.cm2)

    def _longitudinal_acceleration(
        self, vx: np.ndarray, act: _Actuation, world: _WorldParams
    ) -> np.ndarray:
        """(Drive - resistance) / m, the force clipped to the traction limit (module docstring).

        ``C_m1 d - v_x (C_m2 |d| + C_v + C_r2 |v_x|) - C_r0 tanh(v_x / v_eps)``.
        """
        force = np.abs(vx)
        force *= world.cr2
        force += act.back_emf
        force += world.viscous
        force *= vx
        np.subtract(act.drive, force, out=force)
        rolling = vx * (1.0 / self.params.rolling_smoothing_speed)
        np.tanh(rolling, out=rolling)
        rolling *= world.cr0
        force -= rolling
        np.minimum(force, world.fx_max, out=force)
        np.maximum(force, -world.fx_max, out=force)
        force *= world.inv_mass
        return force

    def _rk4_substep(
        self, q: np.ndarray, act: _Actuation, command: np.ndarray, world: _WorldParams
    ) -> _Actuation:
        """One classic RK4 step of ``q`` (in place); the actuators exact at the stage times.

        Returns the actuator state at the end of the substep.
        """
        h = self.physics_dt
        rates = self._kinematic_rates if self.dynamics == "kinematic" else self._dynamic_rates
        act_half = self._actuation_after(self._stage_gains[0], act, command, world)
        act_end = self._actuation_after(self._stage_gains[1], act, command, world)
        k1 = rates(q, act, world)
        k2 = rates(q + (0.5 * h) * k1, act_half, world)
        k3 = rates(q + (0.5 * h) * k2, act_half, world)
        k4 = rates(q + h * k3, act_end, world)
        k2 += k3
        k1 += k4
        k1 += 2.0 * k2
        k1 *= h / 6.0
        q += k1
        if self.dynamics == "kinematic":
            # No slip: vy and omega are set by vx and the steering angle.
            np.multiply(q[_VX], act_end.tan_over_l, out=q[_OMEGA])
            np.multiply(q[_OMEGA], self.params.lr, out=q[_VY])
        return act_end

    @staticmethod
    def _pose_rates(q: np.ndarray, vy: np.ndarray, omega: np.ndarray, out: np.ndarray) -> None:
        """Rows x, y, cos psi, sin psi of the rates: body velocities turned into the arena."""
        heading = q[_COS : _SIN + 1]  # (cos, sin): the body x axis in the arena
        normal = np.empty_like(heading)  # (-sin, cos): the body y axis
        np.negative(q[_SIN], out=normal[0])
        normal[1] = q[_COS]
        np.multiply(heading, q[_VX], out=out[_X : _Y + 1])
        out[_X : _Y + 1] += normal * vy
        np.multiply(normal, omega, out=out[_COS : _SIN + 1])

    def _kinematic_rates(self, q: np.ndarray, act: _Actuation, world: _WorldParams) -> np.ndarray:
        """d/dt of the state under the kinematic bicycle (rows of vy and omega: zero)."""
        out = np.empty_like(q)
        omega = q[_VX] * act.tan_over_l
        self._pose_rates(q, omega * self.params.lr, omega, out)
        out[_VX] = self._longitudinal_acceleration(q[_VX], act, world)
        out[_VY:] = 0.0
        return out

    def _dynamic_rates(self, q: np.ndarray, act: _Actuation, world: _WorldParams) -> np.ndarray:
        """d/dt of the state under the dynamic bicycle, blended to kinematic at low speed."""
        p = self.params
        out = np.empty_like(q)
        vx, vy, omega = q[_VX], q[_VY], q[_OMEGA]
        self._pose_rates(q, vy, omega, out)

        # Tyres, front (row 0, velocity in the wheel's frame) and rear (row 1, body frame).
        forward = np.empty((2, q.shape[1]))
        side = np.empty_like(forward)
        front_lateral = p.lf * omega
        front_lateral += vy
        np.multiply(vx, act.cos, out=forward[0])
        forward[0] += front_lateral * act.sin
        np.multiply(front_lateral, act.cos, out=side[0])
        side[0] -= vx * act.sin
        forward[1] = vx
        np.multiply(omega, -p.lr, out=side[1])
        side[1] += vy
        np.abs(forward, out=forward)
        # Slip angles, then the simplified Pacejka force opposing them: -D sin(C atan(B alpha)).
        force = np.arctan2(side, forward)
        force *= self._tire_b
        np.arctan(force, out=force)
        force *= self._tire_c
        np.sin(force, out=force)
        force *= world.neg_peak_force
        force_front, force_rear = force

        # Dynamic bicycle (Kabzan et al. 2020).
        ax = self._longitudinal_acceleration(vx, act, world)
        dyn = np.empty((3, q.shape[1]))  # rows: d/dt of vx, vy, omega
        np.multiply(vy, omega, out=dyn[0])
        dyn[0] += ax
        dyn[0] -= force_front * act.sin * world.inv_mass
        front_y = force_front * act.cos
        np.add(force_rear, front_y, out=dyn[1])
        dyn[1] *= world.inv_mass
        dyn[1] -= vx * omega
        np.multiply(front_y, p.lf, out=dyn[2])
        dyn[2] -= force_rear * p.lr
        dyn[2] *= world.inv_inertia

        # Kinematic bicycle: no-slip omega = vx tan(delta) / L and vy = lr omega, reached
        # through their derivatives plus a relaxation with time constant tau.
        kin = out[_VX:]
        inv_relax = 1.0 / p.kinematic_relaxation
        kin[0] = ax
        np.multiply(ax, act.tan_over_l, out=kin[2])
        kin[2] += (vx * act.tan_over_l - omega) * inv_relax
        np.multiply(kin[2], p.lr, out=kin[1])
        kin[1] += (p.lr * omega - vy) * inv_relax

        # Blend weight 0 below blend_speed[0], 1 above blend_speed[1] (planar speed).
        low, high = p.blend_speed
        weight = vx * vx
        weight += vy * vy
        np.sqrt(weight, out=weight)
        weight -= low
        weight *= 1.0 / (high - low)
        np.minimum(weight, 1.0, out=weight)
        np.maximum(weight, 0.0, out=weight)
        dyn -= kin
        dyn *= weight
        kin += dyn
        return out

    def _headings(self) -> np.ndarray:
        """Heading psi of every world, in [-pi, pi]."""
        return np.arctan2(self._q[_SIN], self._q[_COS])

    def _state(self) -> Batch:
        q = self._q
        pose = np.empty((self.num_worlds, 3))
        pose[:, 0] = q[_X]
        pose[:, 1] = q[_Y]
        pose[:, 2] = self._headings()
        return {
            "pose": pose,
            "velocity": q[_VX:].T.copy(),
            "steering": self._act.steer.copy(),
            "throttle": self._act.throttle.copy(),
            **self._readings.keys(),
        }

    # -- rendering -----------------------------------------------------------------------------

    def render_world(
        self, world: int, task_state: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Top-down RGB frame (render_size x render_size x 3, uint8) of world ``world``.

        :param task_state: that world's task variables; its ``"goal"`` (3,) pose is drawn (the
            last ``command["goal"]`` if none is given).
        """
        goal = None if task_state is None else task_state.get("goal")
        if not 0 <= world < self.num_worlds:
            raise ValueError(f"world must be in [0, {self.num_worlds}), got {world}")
        if goal is None:
            goal = self._goal[world]
        trail = None
        if self.trail_length:
            order = (self._trail_head + 1 + np.arange(self.trail_length)) % self.trail_length
            trail = self._trail[order, world]
        q = self._q[:, world]
        return draw_topdown(
            pose=np.array([q[_X], q[_Y], math.atan2(q[_SIN], q[_COS])]),
            steering=float(self._act.steer[world]),
            params=self.params,
            arena_half_size=self.arena_half_size,
            goal=goal,
            trail=trail,
            size=self.render_size,
            goal_radius=self.goal_radius,
        )


class _WorldParams(NamedTuple):
    """Per-world physical constants (after domain randomisation), each (N,) or (2, N)."""

    mass: np.ndarray
    inv_mass: np.ndarray
    inv_inertia: np.ndarray
    friction: np.ndarray
    cm1: np.ndarray
    cm2: np.ndarray
    viscous: np.ndarray
    cr0: np.ndarray
    cr2: np.ndarray
    fx_max: np.ndarray
    neg_peak_force: np.ndarray

    def take(self, block: slice) -> _WorldParams:
        """Views of the worlds in ``block``."""
        return _WorldParams(*(value[..., block] for value in self))


class _Actuation(NamedTuple):
    """Servo and ESC state of every world with what the rates need of it.

    Steering angle with its sine, cosine and tan / wheelbase; throttle duty with the motor's
    drive force ``C_m1 d`` and back-EMF gain ``C_m2 |d|``.
    """

    steer: np.ndarray
    sin: np.ndarray
    cos: np.ndarray
    tan_over_l: np.ndarray
    throttle: np.ndarray
    drive: np.ndarray
    back_emf: np.ndarray

    @classmethod
    def at(
        cls,
        steer: np.ndarray,
        throttle: np.ndarray,
        wheelbase: float,
        cm1: np.ndarray,
        cm2: np.ndarray,
    ) -> _Actuation:
        sin, cos = np.sin(steer), np.cos(steer)
        tan_over_l = sin / cos
        tan_over_l *= 1.0 / wheelbase
        back_emf = np.abs(throttle)
        back_emf *= cm2
        return cls(steer, sin, cos, tan_over_l, throttle, cm1 * throttle, back_emf)

    @classmethod
    def rest(cls, n: int) -> _Actuation:
        zeros = [np.zeros(n) for _ in range(6)]
        return cls(zeros[0], zeros[1], np.ones(n), *zeros[2:])

    def take(self, block: slice) -> _Actuation:
        """Views of the worlds in ``block``."""
        return _Actuation(*(value[block] for value in self))

    def put(self, block: slice, other: _Actuation) -> None:
        """Write ``other`` (the worlds of ``block``) into these arrays, in place."""
        for mine, theirs in zip(self, other, strict=True):
            mine[block] = theirs

    def set_rest(self, ids: np.ndarray) -> None:
        """Straight wheels and zero throttle in worlds ``ids`` (in place)."""
        for name, row in zip(self._fields, self, strict=True):
            row[ids] = 1.0 if name == "cos" else 0.0


def _lag_gain(h: float, time_constant: float) -> float:
    """Fraction of the remaining error a first-order lag removes in ``h`` seconds."""
    return 1.0 if time_constant == 0 else -math.expm1(-h / time_constant)


def _rows(name: str, value: Any, count: int, width: int | None) -> np.ndarray:
    """``value`` broadcast to (count, width) (or (count,)), finite, or a ValueError naming it."""
    array = np.asarray(value, dtype=np.float64)
    shape = (count,) if width is None else (count, width)
    try:
        array = np.broadcast_to(array, shape).copy()
    except ValueError:
        single = "a scalar" if width is None else f"({width},)"
        raise ValueError(
            f"reset option {name!r} must be {single} or have shape {shape}, got {array.shape}"
        ) from None
    if not np.isfinite(array).all():
        raise ValueError(f"reset option {name!r} must be finite, got {array}")
    return array


# -- drawing ------------------------------------------------------------------------------------

_FLOOR = (222, 224, 228)
_GRID = (200, 203, 209)
_ARENA = (90, 95, 105)
_GOAL = (30, 150, 70)
_BODY = (215, 60, 40)
_BODY_EDGE = (120, 30, 20)
_WINDSHIELD = (255, 215, 190)
_WHEEL = (25, 25, 25)
_TRAIL = (40, 110, 220)
_SHIFT = 4  # fixed-point bits for sub-pixel OpenCV drawing


def draw_topdown(
    pose: np.ndarray,
    steering: float,
    params: CarParams,
    arena_half_size: float,
    goal: np.ndarray | None = None,
    trail: np.ndarray | None = None,
    size: int = 256,
    goal_radius: float = car_robot.PARKING_RADIUS,
) -> np.ndarray:
    """A top-down RGB picture of the arena, the goal, the car and its trail (OpenCV).

    The view shows the whole arena with a 5 % margin, x to the right and y up; grid lines every
    metre, the goal as a ``goal_radius`` circle with a heading tick, the car as an oriented body
    with four wheels (front wheels turned by ``steering``) and a light windshield at the front.
    """
    import cv2

    frame = np.empty((size, size, 3), dtype=np.uint8)
    frame[:] = _FLOOR
    half_view = arena_half_size * 1.05
    scale = size / (2.0 * half_view)  # pixels per metre

    def to_px(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        px = np.empty_like(points)
        px[:, 0] = (points[:, 0] + half_view) * scale
        px[:, 1] = (half_view - points[:, 1]) * scale
        return np.round(px * (1 << _SHIFT)).astype(np.int32)

    def polygon(points: np.ndarray, color: tuple[int, int, int]) -> None:
        cv2.fillPoly(frame, [to_px(points)], color, cv2.LINE_AA, _SHIFT)

    for metre in np.arange(-math.floor(arena_half_size), math.floor(arena_half_size) + 1):
        ends = to_px(np.array([[metre, -arena_half_size], [metre, arena_half_size]]))
        cv2.line(frame, tuple(ends[0]), tuple(ends[1]), _GRID, 1, cv2.LINE_AA, _SHIFT)
        ends = to_px(np.array([[-arena_half_size, metre], [arena_half_size, metre]]))
        cv2.line(frame, tuple(ends[0]), tuple(ends[1]), _GRID, 1, cv2.LINE_AA, _SHIFT)
    corners = to_px(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * arena_half_size)
    cv2.polylines(frame, [corners], True, _ARENA, 1, cv2.LINE_AA, _SHIFT)

    if goal is not None and np.isfinite(goal).all():
        gx, gy, gpsi = (float(v) for v in goal)
        centre = to_px(np.array([gx, gy]))[0]
        radius = round(goal_radius * scale * (1 << _SHIFT))
        cv2.circle(frame, tuple(centre), radius, _GOAL, 1, cv2.LINE_AA, _SHIFT)
        tick = np.array([gx + goal_radius * math.cos(gpsi), gy + goal_radius * math.sin(gpsi)])
        tip = to_px(tick)[0]
        cv2.line(frame, tuple(centre), tuple(tip), _GOAL, 1, cv2.LINE_AA, _SHIFT)
        cross = 0.06
        for dx, dy in ((cross, cross), (cross, -cross)):
            ends = to_px(np.array([[gx - dx, gy - dy], [gx + dx, gy + dy]]))
            cv2.line(frame, tuple(ends[0]), tuple(ends[1]), _GOAL, 1, cv2.LINE_AA, _SHIFT)

    if trail is not None:
        trail = np.asarray(trail, dtype=np.float64)
        trail = trail[np.isfinite(trail).all(axis=1)]
        if len(trail) >= 2:
            cv2.polylines(frame, [to_px(trail)], False, _TRAIL, 1, cv2.LINE_AA, _SHIFT)

    x, y, psi = (float(v) for v in pose)
    rotation = np.array([[math.cos(psi), -math.sin(psi)], [math.sin(psi), math.cos(psi)]])
    centre = np.array([x, y])

    def body_to_world(points: np.ndarray) -> np.ndarray:
        return points @ rotation.T + centre

    # Body centred between the axles, overhanging both equally.
    mid = 0.5 * (params.lf - params.lr)
    half_l, half_w = 0.5 * params.length, 0.5 * params.width
    wheel_l, wheel_w = 0.13, 0.06
    wheel_y = half_w - 0.5 * wheel_w
    wheel = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [0.5 * wheel_l, 0.5 * wheel_w]
    turned = wheel @ np.array(
        [[math.cos(steering), math.sin(steering)], [-math.sin(steering), math.cos(steering)]]
    )
    for axle_x, shape in ((params.lf, turned), (-params.lr, wheel)):
        for side in (-1.0, 1.0):
            polygon(body_to_world(shape + np.array([axle_x, side * wheel_y])), _WHEEL)
    body = np.array(
        [
            [mid - half_l, -half_w + wheel_w],
            [mid + half_l, -half_w + wheel_w * 1.5],
            [mid + half_l, half_w - wheel_w * 1.5],
            [mid - half_l, half_w - wheel_w],
        ]
    )
    cv2.polylines(frame, [to_px(body_to_world(body))], True, _BODY_EDGE, 2, cv2.LINE_AA, _SHIFT)
    polygon(body_to_world(body), _BODY)
    windshield = np.array(
        [
            [mid + 0.12 * half_l, -0.5 * half_w],
            [mid + 0.45 * half_l, -0.4 * half_w],
            [mid + 0.45 * half_l, 0.4 * half_w],
            [mid + 0.12 * half_l, 0.5 * half_w],
        ]
    )
    polygon(body_to_world(windshield), _WINDSHIELD)
    return frame
