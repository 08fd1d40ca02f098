"""The 1:10 RC race car and its arena: every fact, written once (NumPy and the standard library).

The parking task (:mod:`sim2online_envs.tasks.racecar`), the NumPy simulator
(:mod:`sim2online_envs.sim.racecar`: :class:`~sim2online_envs.sim.racecar.CarParams` defaults), the
scripted parking controller, the safety limits, the reset helpers and the real car's driver read
these names; none of them writes the numbers again.

Arena frame: origin at the arena centre (the default goal), x and y on the floor, z up; the
heading psi is measured from x, counter-clockwise. Body frame: x forward, y left.

Raw state every race car backend reports (arrays with a leading batch axis B;
:data:`STATE_KEYS`):

=============  =======  ============  =======  ================================================
key            shape    unit          frame    meaning
=============  =======  ============  =======  ================================================
``pose``       (B, 3)   m, m, rad     arena    x, y of the centre of mass, heading psi in
                                               [-pi, pi] (real car: motion capture)
``velocity``   (B, 3)   m/s, m/s,     body     vx (forward), vy (left), yaw rate omega
                        rad/s
``steering``   (B,)     rad           -        the servo's actual steering angle
``throttle``   (B,)     -             -        the ESC's actual duty cycle in [-1, 1]
=============  =======  ============  =======  ================================================

Command every race car backend takes (:data:`COMMAND_KEYS`):

=============  =======  ============  =======  ================================================
key            shape    unit          frame    meaning
=============  =======  ============  =======  ================================================
``steering``   (B,)     rad           -        steering angle target, within
                                               +-:data:`MAX_STEERING` (positive turns left)
``throttle``   (B,)     -             -        duty cycle in [-1, 1] (negative: reverse/brake)
``goal``       (B, 3)   m, m, rad     arena    optional: the goal pose, drawn by renderers
                                               (not a control input)
=============  =======  ============  =======  ================================================

Car parameters come as named presets (:data:`PRESETS`, plain data; the simulator builds its
``CarParams`` and ``RandomizationRanges`` from them): ``"study"`` (the default,
:data:`DEFAULT_PRESET`), the sim-to-online study's 1:10 car, its values taken from the study's
public config (:data:`STUDY_CONFIG`, :data:`STUDY_BOUNDS`); and ``"f1tenth"``, the F1TENTH gym's
vehicle (O'Kelly et al., "F1TENTH: an open-source evaluation environment for continuous control
and reinforcement learning", PMLR 123, 2020) with the ORCA motor model (Liniger, Domahidi and
Morari, OCAM 2015) scaled to its mass. Each value's source is in ``docs/parameters.md``. The
module-level car constants (:data:`LF`, :data:`MASS`, :data:`MAX_STEERING`, ...) are the default
preset's. The 60 Hz control rate (the paper's; the study's code ran at 30 Hz), the 0.3 m parking
radius and the arena follow the study's car setup.
"""

from __future__ import annotations

import math

import numpy as np

from sim2online_envs.robots.spec import KeySpec

__all__ = [
    "ALIASES",
    "ARENA_HALF_SIZE",
    "BODY_LENGTH",
    "BODY_WIDTH",
    "COMMAND_KEYS",
    "CONTROLLER_MODULE",
    "CONTROL_DT",
    "DEFAULT_PRESET",
    "INERTIA_Z",
    "LF",
    "LR",
    "MASS",
    "MAX_STEERING",
    "MAX_STEERING_RATE",
    "MAX_THROTTLE",
    "NAME",
    "PARKING_RADIUS",
    "PRESETS",
    "REAL_ENTRY_POINT",
    "REAL_ID",
    "RESET_HOME",
    "RESET_HOME_TOLERANCE",
    "RESET_INSTRUCTIONS",
    "RESET_TURNING_RADIUS",
    "SAFETY_ARENA_HIGH",
    "SAFETY_ARENA_LOW",
    "SAFETY_MAX_SPEED",
    "SAFETY_OUTSIDE_MAX_SPEED",
    "SIM_ENTRY_POINT",
    "SIM_ID",
    "START_DISTANCE_RANGE",
    "STATE_KEYS",
    "STUDY_BOUNDS",
    "STUDY_CONFIG",
    "out_of_arena",
]

# -- names and ids -------------------------------------------------------------------------------

#: The robot's name (``Task.robot``, ``make_env("racecar")``, file names).
NAME = "racecar"
#: Other names ``make_env`` accepts for it.
ALIASES = ("car", "race_car")
#: Gymnasium ids: the simulator and the real car (same spaces, other backend).
SIM_ID = "SimRaceCar-v0"
REAL_ID = "RealRaceCar-v0"
#: Where registration finds the env class and the demo its scripted controller.
SIM_ENTRY_POINT = "sim2online_envs.envs.racecar:RaceCarEnv"
#: The real robot's env (its driver libraries load only when it is made).
REAL_ENTRY_POINT = "sim2online_envs.hardware.racecar.env:RealRaceCarEnv"
CONTROLLER_MODULE = "sim2online_envs.controllers.racecar"

# -- the study's car, as its public config writes it ---------------------------------------------

#: The study's car model parameters, verbatim (yardenas/safe-learning @ cc35736,
#: ``ss2r/configs/environment/rccar_real.yaml``, ``train_params.nominal``; the model that reads
#: them: ``ss2r/benchmark_suites/rccar/model.py``). Its grips ``d_f``, ``d_r`` are peak lateral
#: forces over g (N / (m/s^2)); its longitudinal force is ``c_m_1 d - c_m_2^2 v - c_d^2 v|v|``.
STUDY_CONFIG: dict[str, float] = {
    "m": 1.65,
    "l_f": 0.13,
    "l_r": 0.17,
    "i_com": 0.06,
    "d_f": 0.4,
    "d_r": 0.3,
    "b_f": 2.75,
    "c_f": 1.45,
    "b_r": 5.0,
    "c_r": 1.3,
    "c_m_1": 30.0,
    "c_m_2": 1.25,
    "c_d": 0.0,
    "steering_limit": 0.6,
    "max_throttle": 0.4,
}
#: The study's domain-randomisation bounds (same file, ``train_params.bounds``), those this
#: package reproduces (the rest: ``docs/parameters.md``).
STUDY_BOUNDS: dict[str, tuple[float, float]] = {
    "m": (1.6, 1.7),
    "i_com": (0.03, 0.18),
    "angle_offset": (-0.15, 0.15),
    "c_m_1": (10.0, 40.0),
    "c_m_2": (1.0, 1.5),
    "d_f": (0.25, 0.6),
    "d_r": (0.15, 0.45),
}
#: The study's action delay in its pretraining and hardware runs: one step of its 1/30 s
#: (``ss2r/configs/experiment/rccar_sim_to_real.yaml``: ``action_delay: 1``, ``dt: 0.03333333``).
_STUDY_ACTION_DELAY = 1.0 / 30.0
_STUDY_WHEELBASE = STUDY_CONFIG["l_f"] + STUDY_CONFIG["l_r"]
#: Peak lateral tyre force over static axle load, front and rear: 0.428 and 0.420; the package's
#: one friction coefficient takes the front's.
_STUDY_GRIP_FRONT = (
    STUDY_CONFIG["d_f"] * _STUDY_WHEELBASE / (STUDY_CONFIG["m"] * STUDY_CONFIG["l_r"])
)
_STUDY_GRIP_REAR = (
    STUDY_CONFIG["d_r"] * _STUDY_WHEELBASE / (STUDY_CONFIG["m"] * STUDY_CONFIG["l_f"])
)

# -- the F1TENTH car (F1TENTH gym vehicle parameters, ORCA motor scaled by mass) ----------------

_F1TENTH_MASS = 3.74
#: ORCA's motor and resistance (1:43 car, 0.041 kg), scaled by the mass ratio.
_ORCA_SCALE = _F1TENTH_MASS / 0.041
_F1TENTH_TIRE_C_FRONT = 1.2
_F1TENTH_TIRE_C_REAR = 1.2691

# -- presets -------------------------------------------------------------------------------------

#: Named car presets: ``dynamics`` (the simulator's default model), ``max_throttle`` (duty cycle
#: of action[1] = 1), ``action_delay`` (s, command to actuator), ``car`` (``CarParams`` fields)
#: and ``randomization`` (``RandomizationRanges`` fields: scale ranges, and the additive
#: ``steering_offset`` range in rad). Actuator lags are this package's choice for a hobby servo
#: and ESC in both (the study's model has none).
PRESETS: dict[str, dict] = {
    "study": {
        # The study pretrains on its dynamic (blended) model with wide randomisation
        # (rccar_sim_to_real.yaml: environment rccar_real, use_blend 1.0).
        "dynamics": "dynamic",
        "max_throttle": STUDY_CONFIG["max_throttle"],
        "action_delay": _STUDY_ACTION_DELAY,
        "car": {
            "lf": STUDY_CONFIG["l_f"],
            "lr": STUDY_CONFIG["l_r"],
            # Drawing only: a 1:10 touring body (this package's choice; the study gives none).
            "length": 0.45,
            "width": 0.2,
            "mass": STUDY_CONFIG["m"],
            "inertia_z": STUDY_CONFIG["i_com"],
            "friction": _STUDY_GRIP_FRONT,
            "tire_b_front": STUDY_CONFIG["b_f"],
            "tire_c_front": STUDY_CONFIG["c_f"],
            "tire_b_rear": STUDY_CONFIG["b_r"],
            "tire_c_rear": STUDY_CONFIG["c_r"],
            "motor_cm1": STUDY_CONFIG["c_m_1"],
            "motor_cm2": 0.0,
            "viscous_drag": STUDY_CONFIG["c_m_2"] ** 2,
            "rolling_resistance": 0.0,
            "drag": STUDY_CONFIG["c_d"] ** 2,
            "max_steering": STUDY_CONFIG["steering_limit"],
            # A standard hobby servo, 0.1 s per 60 degrees (the study's model has no servo).
            "max_steering_rate": math.radians(60.0) / 0.1,
            "steering_offset": 0.0,
            "steering_time_constant": 0.05,
            "throttle_time_constant": 0.05,
        },
        "randomization": {
            "mass_scale": tuple(v / STUDY_CONFIG["m"] for v in STUDY_BOUNDS["m"]),
            "friction_scale": (
                min(
                    STUDY_BOUNDS["d_f"][0] / STUDY_CONFIG["d_f"],
                    STUDY_BOUNDS["d_r"][0] / STUDY_CONFIG["d_r"],
                ),
                max(
                    STUDY_BOUNDS["d_f"][1] / STUDY_CONFIG["d_f"],
                    STUDY_BOUNDS["d_r"][1] / STUDY_CONFIG["d_r"],
                ),
            ),
            "motor_cm1_scale": tuple(v / STUDY_CONFIG["c_m_1"] for v in STUDY_BOUNDS["c_m_1"]),
            "motor_cm2_scale": (1.0, 1.0),
            "resistance_scale": (1.0, 1.0),
            "inertia_scale": tuple(v / STUDY_CONFIG["i_com"] for v in STUDY_BOUNDS["i_com"]),
            "viscous_drag_scale": tuple(
                (v / STUDY_CONFIG["c_m_2"]) ** 2 for v in STUDY_BOUNDS["c_m_2"]
            ),
            "steering_offset": STUDY_BOUNDS["angle_offset"],
        },
    },
    "f1tenth": {
        "dynamics": "kinematic",
        "max_throttle": 1.0,
        "action_delay": 0.0,
        "car": {
            "lf": 0.15875,
            "lr": 0.17145,
            "length": 0.58,
            "width": 0.31,
            "mass": _F1TENTH_MASS,
            "inertia_z": 0.04712,
            "friction": 1.0489,
            # Pacejka B = C_S / C: the small-slip stiffness B C mu F_z is F1TENTH's C_S mu F_z.
            "tire_b_front": 4.718 / _F1TENTH_TIRE_C_FRONT,
            "tire_c_front": _F1TENTH_TIRE_C_FRONT,
            "tire_b_rear": 5.4562 / _F1TENTH_TIRE_C_REAR,
            "tire_c_rear": _F1TENTH_TIRE_C_REAR,
            "motor_cm1": 0.287 * _ORCA_SCALE,
            "motor_cm2": 0.0545 * _ORCA_SCALE,
            "viscous_drag": 0.0,
            "rolling_resistance": 0.0518 * _ORCA_SCALE,
            "drag": 0.00035 * _ORCA_SCALE,
            "max_steering": 0.4189,
            "max_steering_rate": 3.2,
            "steering_offset": 0.0,
            "steering_time_constant": 0.05,
            "throttle_time_constant": 0.05,
        },
        "randomization": {
            "mass_scale": (0.9, 1.1),
            "friction_scale": (0.8, 1.2),
            "motor_cm1_scale": (0.85, 1.15),
            "motor_cm2_scale": (0.85, 1.15),
            "resistance_scale": (0.7, 1.3),
            "inertia_scale": (1.0, 1.0),
            "viscous_drag_scale": (1.0, 1.0),
            "steering_offset": (0.0, 0.0),
        },
    },
}
#: The preset ``SimRaceCar-v0`` and the simulator use unless told otherwise.
DEFAULT_PRESET = "study"
_DEFAULT_CAR = PRESETS[DEFAULT_PRESET]["car"]

# The default preset's car, for the readers that need one number (real car calibration, resets).
#: Centre of mass to front axle and to rear axle [m].
LF = _DEFAULT_CAR["lf"]
LR = _DEFAULT_CAR["lr"]
#: Body length and width [m] (for drawing).
BODY_LENGTH = _DEFAULT_CAR["length"]
BODY_WIDTH = _DEFAULT_CAR["width"]
#: Mass [kg] and yaw moment of inertia about the centre of mass [kg·m²].
MASS = _DEFAULT_CAR["mass"]
INERTIA_Z = _DEFAULT_CAR["inertia_z"]
#: Steering angle limit [rad] (action[0] = +1 asks for it) and the servo's rate limit [rad/s].
MAX_STEERING = _DEFAULT_CAR["max_steering"]
MAX_STEERING_RATE = _DEFAULT_CAR["max_steering_rate"]
#: Throttle duty cycle that action[1] = +1 asks for.
MAX_THROTTLE = PRESETS[DEFAULT_PRESET]["max_throttle"]

# -- timing --------------------------------------------------------------------------------------

#: Control period [s]: 60 Hz (the paper; the study's code ran at 30 Hz).
CONTROL_DT = 1.0 / 60.0

# -- the arena -----------------------------------------------------------------------------------

#: Half the side of the square arena around the origin [m] (8 m x 8 m, the motion-capture area).
ARENA_HALF_SIZE = 4.0
#: Radius of the goal region around the goal [m] (the study's 1[d <= 0.3 m] bonus).
PARKING_RADIUS = 0.3
#: Distance of a start from the arena centre [m] (low, high).
START_DISTANCE_RANGE = (1.0, 3.0)


def out_of_arena(pose: np.ndarray, half_size: float = ARENA_HALF_SIZE) -> np.ndarray:
    """(...,) bool: the centre of mass is outside the square arena of ``half_size`` [m].

    ``pose`` (..., 3) x, y, psi. NaN coordinates count as inside: a lost pose is the validity
    check's business, not the arena's.
    """
    return (np.abs(pose[..., 0]) > half_size) | (np.abs(pose[..., 1]) > half_size)


# -- state and command keys (the tables of the module docstring) --------------------------------

STATE_KEYS: dict[str, KeySpec] = {
    "pose": KeySpec((3,), "float64", "m, m, rad", "arena", "x, y, heading psi"),
    "velocity": KeySpec((3,), "float64", "m/s, m/s, rad/s", "body", "vx, vy, yaw rate"),
    "steering": KeySpec((), "float64", "rad", "-", "actual steering angle"),
    "throttle": KeySpec((), "float64", "-", "-", "actual duty cycle"),
}
COMMAND_KEYS: dict[str, KeySpec] = {
    "steering": KeySpec((), "float64", "rad", "-", "steering angle target"),
    "throttle": KeySpec((), "float64", "-", "-", "duty cycle in [-1, 1]"),
    "goal": KeySpec((3,), "float64", "m, m, rad", "arena", "goal pose, for drawing only"),
}

# -- default safety limits (numbers only) --------------------------------------------------------

#: At or above this longitudinal speed [m/s] (either direction) the throttle may only brake.
SAFETY_MAX_SPEED = 3.0
#: The speed cap outside the arena [m/s], so that an automatic reset can still crawl back.
SAFETY_OUTSIDE_MAX_SPEED = 0.5
#: The arena box (x, y) [m] outside which an episode is aborted.
SAFETY_ARENA_LOW = (-ARENA_HALF_SIZE, -ARENA_HALF_SIZE)
SAFETY_ARENA_HIGH = (ARENA_HALF_SIZE, ARENA_HALF_SIZE)

# -- resets --------------------------------------------------------------------------------------

#: What the operator does between episodes.
RESET_INSTRUCTIONS = (
    "Race car: put the car back on the start marker, facing +x (or let it drive back with "
    "the automatic reset), check that motion capture tracks it. Keep the kill switch in hand."
)
#: The start marker (x, y) [m] the automatic reset drives back to: 2 m from the arena centre,
#: inside :data:`START_DISTANCE_RANGE`; it stops within :data:`RESET_HOME_TOLERANCE` [m].
RESET_HOME = (-2.0, 0.0)
RESET_HOME_TOLERANCE = 0.3
#: Radius of the tightest turn the automatic reset plans with [m]: above the kinematic full-lock
#: radius (LF + LR) / tan(MAX_STEERING) of every preset, with margin.
RESET_TURNING_RADIUS = 0.8
