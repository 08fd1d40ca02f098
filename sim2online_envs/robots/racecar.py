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

Sources: geometry, mass, yaw inertia, steering limit and steering rate are the F1TENTH gym's
vehicle parameters (O'Kelly et al., "F1TENTH: an open-source evaluation environment for
continuous control and reinforcement learning", PMLR 123, 2020); the 60 Hz control rate, the
0.3 m parking radius and the arena follow the sim-to-online study's car setup.
"""

from __future__ import annotations

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
    "INERTIA_Z",
    "LF",
    "LR",
    "MASS",
    "MAX_STEERING",
    "MAX_STEERING_RATE",
    "NAME",
    "PARKING_RADIUS",
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

# -- the car (F1TENTH gym vehicle parameters) ---------------------------------------------------

#: Centre of mass to front axle and to rear axle [m].
LF = 0.15875
LR = 0.17145
#: Body length and width [m] (for drawing).
BODY_LENGTH = 0.58
BODY_WIDTH = 0.31
#: Mass [kg] and yaw moment of inertia about the centre of mass [kg·m²].
MASS = 3.74
INERTIA_Z = 0.04712
#: Steering angle limit [rad] (action[0] = +1 asks for it) and the servo's rate limit [rad/s].
MAX_STEERING = 0.4189
MAX_STEERING_RATE = 3.2

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
#: Radius of the tightest turn the automatic reset plans with [m]: the kinematic full-lock
#: radius (LF + LR) / tan(MAX_STEERING), 0.74 m, with margin.
RESET_TURNING_RADIUS = 0.8
