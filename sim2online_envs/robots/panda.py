"""Franka Emika Panda with the Franka Hand and a D455: every fact, written once (NumPy only).

The task (:mod:`sim2online_envs.tasks.panda`), the simulator and its MJCF loading
(:mod:`sim2online_envs.sim.panda`: joint ranges, torque limits and the hand's travel, speed and
force are written into the model from here, the TCP offset checked), the safety limits, the reset
helpers, the scripted controller and the real arm's drivers read these names; none of them
writes the numbers again. Nothing here imports a simulator.

World frame: origin at the robot base on the table top, x forward (away from the base), y to the
robot's left, z up; metres. The TCP is the fingertip centre, :data:`TCP_OFFSET` from the flange.

Raw state every Panda backend reports (arrays with a leading batch axis B; :data:`STATE_KEYS`):

===================  ===============  =====  =====  ============================================
key                  shape            unit   frame  meaning
===================  ===============  =====  =====  ============================================
``pixels``           (B, 64, 64, 1)   -      -      grayscale camera image, uint8 (the side is
                                                    the task's ``image_size``)
``tip_pos``          (B, 3)           m      world  TCP (fingertip centre) position
``tip_target``       (B, 3)           m      world  Cartesian target the controller tracks, as
                                                    applied (after limits)
``gripper_opening``  (B,)             m      -      distance between the fingers, 0 ... 0.08
``gripper_closed``   (B,)             -      -      last gripper command, 1.0 closed / 0.0 open
``gripper_holding``  (B,)             -      -      1.0 while the closed fingers squeeze
                                                    something (libfranka ``is_grasped``)
``arm_qpos``         (B, 7)           rad    joint  joint angles
``object_pos``       (B, 3)           m      world  object centre (sim: physics; real: marker)
``object_quat``      (B, 4)           -      world  object orientation (w, x, y, z)
``object_size``      (B,)             m      -      cube edge or ball diameter
===================  ===============  =====  =====  ============================================

Command every Panda backend takes (:data:`COMMAND_KEYS`):

===================  ===============  =====  =====  ============================================
key                  shape            unit   frame  meaning
===================  ===============  =====  =====  ============================================
``tip_target``       (B, 3)           m      world  TCP target for this control period
``gripper_closed``   (B,)             -      -      > 0.5 closes the gripper, else opens it
``gripper_force``    (B,)             N      -      optional grasp force (drivers that grasp
                                                    with a force, libfranka ``grasp``)
===================  ===============  =====  =====  ============================================

Sources: joint and torque limits, Franka's published limits ("Robot and interface
specifications", frankaemika.github.io/docs/control_parameters.html); finger travel, finger speed
and the 70 N continuous grasp force, the Franka Hand product manual and datasheet; the Cartesian
impedance controller, franka_ros (frankaemika/franka_ros, ``franka_example_controllers``); the
D455 colour sensor's field of view (90 x 65 deg) and resolution (1280 x 800), the Intel
RealSense D400 datasheet.
"""

from __future__ import annotations

import math

import numpy as np

from sim2online_envs.robots.spec import CameraSpec, KeySpec

__all__ = [
    "ALIASES",
    "ARM_JOINT_LOWER",
    "ARM_JOINT_NAMES",
    "ARM_JOINT_UPPER",
    "ARM_TORQUE_LIMITS",
    "CAMERA",
    "COMMAND_KEYS",
    "CONTROLLER_MODULE",
    "CONTROL_DT",
    "CUBE_SIZE",
    "FINGER_JOINT_NAMES",
    "FINGER_SPEED",
    "FINGER_TRAVEL",
    "GRASP_FORCE",
    "GRIPPER_CLOSE_SIGN",
    "HOME_QPOS",
    "HOME_TIP_POS",
    "IMPEDANCE_CYCLE",
    "IMPEDANCE_FILTER_GAIN",
    "IMPEDANCE_FILTER_TIME_CONSTANT",
    "IMPEDANCE_NULLSPACE_DAMPING",
    "IMPEDANCE_NULLSPACE_STIFFNESS",
    "IMPEDANCE_PINV_DAMPING",
    "IMPEDANCE_ROTATIONAL_DAMPING",
    "IMPEDANCE_ROTATIONAL_STIFFNESS",
    "IMPEDANCE_TRANSLATIONAL_DAMPING",
    "IMPEDANCE_TRANSLATIONAL_STIFFNESS",
    "MARKER_DICTIONARY",
    "MARKER_FACES",
    "MARKER_LENGTH",
    "MAX_GRIPPER_OPENING",
    "MAX_TARGET_LEAD",
    "MAX_TIP_STEP",
    "NAME",
    "REAL_ENTRY_POINT",
    "REAL_ID",
    "RESET_HOME_TOLERANCE",
    "RESET_INSTRUCTIONS",
    "SAFETY_MAX_GRIPPER_FORCE",
    "SAFETY_MAX_STEP",
    "SAFETY_WORKSPACE_HIGH",
    "SAFETY_WORKSPACE_LOW",
    "SIM_ENTRY_POINT",
    "SIM_ID",
    "STATE_KEYS",
    "TCP_OFFSET",
    "TIP_DOWN_ROTATION",
    "WORKSPACE_HIGH",
    "WORKSPACE_LOW",
]

# -- names and ids -------------------------------------------------------------------------------

#: The robot's name (``Task.robot``, ``make_env("panda")``, file names).
NAME = "panda"
#: Other names ``make_env`` accepts for it.
ALIASES = ("franka",)
#: Gymnasium ids: the simulator and the real arm (same spaces, other backend).
SIM_ID = "SimPanda-v0"
REAL_ID = "RealPanda-v0"
#: Where registration finds the env class and the demo its scripted controller.
SIM_ENTRY_POINT = "sim2online_envs.envs.panda:PandaEnv"
#: The real robot's env (its driver libraries load only when it is made).
REAL_ENTRY_POINT = "sim2online_envs.hardware.panda.env:RealPandaEnv"
CONTROLLER_MODULE = "sim2online_envs.controllers.panda"

# -- arm -----------------------------------------------------------------------------------------

#: Arm joints, base to flange (the MJCF's joint and actuator names).
ARM_JOINT_NAMES = tuple(f"joint{i}" for i in range(1, 8))
#: Joint position limits [rad] (Franka's published limits).
ARM_JOINT_LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
ARM_JOINT_UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
#: Joint torque limits [N·m]: 87 for joints 1-4, 12 for joints 5-7 (Franka's published limits).
ARM_TORQUE_LIMITS = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
#: Fingertip centre (TCP) from the flange along the flange's z [m] (Franka Hand manual).
TCP_OFFSET = 0.1034
#: Home joint posture [rad]: TCP at :data:`HOME_TIP_POS`, hand pointing down, fingers along
#: world y (solved once by DLS IK; tests check it by forward kinematics).
HOME_QPOS = np.array([0.0, 0.50203, 0.0, -1.75907, 0.0, 2.26110, 0.78540])
#: TCP position at the home posture (the episode's start), world frame [m]: the study's start
#: pose (its ``start_pos`` and the sim's ``low_home`` keyframe tip), 3 cm beyond the cube's row.
HOME_TIP_POS = np.array([0.661, 0.0, 0.179])
#: TCP orientation the Cartesian controller holds: x along world x, z straight down.
TIP_DOWN_ROTATION = np.diag([1.0, -1.0, -1.0])

# -- hand ----------------------------------------------------------------------------------------

#: Finger joints (each slides 0 ... FINGER_TRAVEL, coupled).
FINGER_JOINT_NAMES = ("finger_left", "finger_right")
#: Travel of each finger [m] (Franka Hand manual), so the opening is 0 ... 0.08 m.
FINGER_TRAVEL = 0.04
MAX_GRIPPER_OPENING = 2 * FINGER_TRAVEL
#: Largest finger speed [m/s] per finger (Franka Hand datasheet, 50 mm/s; the opening changes
#: twice as fast). The study's gripper commands ask for more (``speed 10``), which the hand caps.
FINGER_SPEED = 0.05
#: Continuous grasp force of the Franka Hand [N].
GRASP_FORCE = 70.0

# -- control -------------------------------------------------------------------------------------

#: Control period [s]: 20 Hz-class Cartesian control (the study's Panda).
CONTROL_DT = 0.05
#: Tip target displacement per step at |a_i| = 1, per axis [m]: the study's 5 mm per 50 ms
#: (0.1 m/s; its ``action_scale``).
MAX_TIP_STEP = 0.005
#: The sign of the gripper action g that closes the hand: the study's ``a < 0`` closes
#: (``pick_cartesian.py``: ``close_gripper = action[3] < 0``).
GRIPPER_CLOSE_SIGN = -1.0
#: The arm's Cartesian impedance controller, the one the study's rig runs (franka_ros
#: ``franka_example_controllers/cartesian_impedance_example_controller``, launched by
#: panda-rl-kit's ``bringup_real.launch``; its ``cfg/compliance_param.cfg`` defaults): at 1 kHz,
#: ``tau = J^T (-K e - D J dq) + N (k_n (q_n - q) - d_n dq) + coriolis`` with ``e`` the TCP's
#: pose error to the equilibrium pose, ``D = 2 sqrt(K)`` (damping ratio 1 at unit mass), ``N``
#: the null-space projector ``I - J^T pinv(J^T)`` (damped pseudo-inverse) and ``q_n`` the
#: posture at the controller's start; the equilibrium follows the commanded pose through a
#: first-order filter, ``x_d += a (x_target - x_d)`` per cycle. libfranka's own
#: ``cartesian_impedance_control`` example is the same law at 150 N/m without the filter and the
#: null-space term. Stiffness: translation [N/m], rotation [N m/rad], null space [N m/rad].
IMPEDANCE_TRANSLATIONAL_STIFFNESS = 200.0
IMPEDANCE_ROTATIONAL_STIFFNESS = 10.0
IMPEDANCE_NULLSPACE_STIFFNESS = 0.5
#: Damping: critical for unit mass, ``2 sqrt(stiffness)`` [N s/m, N m s/rad].
IMPEDANCE_TRANSLATIONAL_DAMPING = 2.0 * math.sqrt(IMPEDANCE_TRANSLATIONAL_STIFFNESS)
IMPEDANCE_ROTATIONAL_DAMPING = 2.0 * math.sqrt(IMPEDANCE_ROTATIONAL_STIFFNESS)
IMPEDANCE_NULLSPACE_DAMPING = 2.0 * math.sqrt(IMPEDANCE_NULLSPACE_STIFFNESS)
#: The equilibrium filter's gain per control cycle (``filter_params_``) and the cycle [s]; as a
#: continuous first-order lag, its time constant [s].
IMPEDANCE_FILTER_GAIN = 0.005
IMPEDANCE_CYCLE = 0.001
IMPEDANCE_FILTER_TIME_CONSTANT = -IMPEDANCE_CYCLE / math.log(1.0 - IMPEDANCE_FILTER_GAIN)
#: Damping of the pseudo-inverse in the null-space projector (``pseudo_inversion.h``).
IMPEDANCE_PINV_DAMPING = 0.2
#: The tip target never leads the measured tip by more than this per axis [m].
MAX_TARGET_LEAD = 0.04
#: Box the tip target is clamped to [m], world frame: all of it reachable with the hand pointing
#: down (the far top corners within 3 mm); the lower z keeps the fingertips above the table.
WORKSPACE_LOW = (0.30, -0.30, 0.015)
WORKSPACE_HIGH = (0.68, 0.30, 0.35)

# -- the cube ------------------------------------------------------------------------------------

#: Edge of the cube to pick [m] (the study's 50 mm cube).
CUBE_SIZE = 0.05
#: The cube's ArUco markers: one per face, ids 0-5 of this OpenCV dictionary, the black square
#: this long [m], centred on its face with a white border.
MARKER_DICTIONARY = "DICT_4X4_50"
MARKER_LENGTH = 0.04
#: Marker id -> (face normal, the marker image's "up"), in the cube frame (x forward, z up when
#: resting): 0 +x, 1 -x, 2 +y, 3 -y (up toward +z), 4 on top, 5 underneath (up toward +x).
MARKER_FACES: dict[int, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    0: ((1, 0, 0), (0, 0, 1)),
    1: ((-1, 0, 0), (0, 0, 1)),
    2: ((0, 1, 0), (0, 0, 1)),
    3: ((0, -1, 0), (0, 0, 1)),
    4: ((0, 0, 1), (1, 0, 0)),
    5: ((0, 0, -1), (1, 0, 0)),
}

# -- camera --------------------------------------------------------------------------------------

#: The study's Intel RealSense D455: in front of the robot at (0.915, -0.02, 0.32) m, looking
#: back at it, 29 deg down (its sim camera ``euler="0 1.0646 1.5708"``, radians: the optical
#: axis meets the table top at (0.338, -0.02, 0)), with a 60 deg vertical field of view of the
#: centre square the policy gets, resized to 64 px (``mjx_single_cube_camera.xml``).
CAMERA = CameraSpec(
    name="d455",
    pos=(0.915, -0.02, 0.32),
    target=(0.33777, -0.02, 0.0),
    fovy=60.0,
    crop="center_square",
    image_size=64,
    grayscale=True,
    sensor_size=(800, 1280),
)

# -- state and command keys (the tables of the module docstring) --------------------------------

STATE_KEYS: dict[str, KeySpec] = {
    "pixels": KeySpec(
        (CAMERA.image_size, CAMERA.image_size, 1), "uint8", "-", "-", "grayscale camera image"
    ),
    "tip_pos": KeySpec((3,), "float64", "m", "world", "TCP position"),
    "tip_target": KeySpec((3,), "float64", "m", "world", "tip target as applied"),
    "gripper_opening": KeySpec((), "float64", "m", "-", "distance between the fingers"),
    "gripper_closed": KeySpec((), "float64", "-", "-", "last gripper command, 1 closed"),
    "gripper_holding": KeySpec((), "float64", "-", "-", "1 while squeezing something"),
    "arm_qpos": KeySpec((7,), "float64", "rad", "joint", "joint angles"),
    "object_pos": KeySpec((3,), "float64", "m", "world", "object centre"),
    "object_quat": KeySpec((4,), "float64", "-", "world", "object orientation (w, x, y, z)"),
    "object_size": KeySpec((), "float64", "m", "-", "cube edge or ball diameter"),
}
COMMAND_KEYS: dict[str, KeySpec] = {
    "tip_target": KeySpec((3,), "float64", "m", "world", "TCP target"),
    "gripper_closed": KeySpec((), "float64", "-", "-", "> 0.5 closes"),
    "gripper_force": KeySpec((), "float64", "N", "-", "optional grasp force"),
}

# -- default safety limits (numbers only) --------------------------------------------------------

#: The tip target is clamped into this box [m]: the task's own workspace, so a well-behaved task
#: never triggers it; tighten it for a first session on hardware.
SAFETY_WORKSPACE_LOW = WORKSPACE_LOW
SAFETY_WORKSPACE_HIGH = WORKSPACE_HIGH
#: Largest distance of the tip target from the measured tip [m]: the task's lead per axis, on
#: the diagonal (plus a rounding margin).
SAFETY_MAX_STEP = MAX_TARGET_LEAD * math.sqrt(3.0) + 1e-9
#: Cap on a commanded grasp force [N], below the hand's continuous 70 N.
SAFETY_MAX_GRIPPER_FORCE = 40.0

# -- resets --------------------------------------------------------------------------------------

#: What the operator does between episodes.
RESET_INSTRUCTIONS = (
    "Panda: put the cube back on the table inside the marked area, clear the workspace and "
    "the camera view. The arm must be at its home pose with the gripper open (automatic "
    "reset, or guide it by hand). Keep the user stop in reach."
)
#: The automatic reset moves the tip to :data:`HOME_TIP_POS` until it is this close [m].
RESET_HOME_TOLERANCE = 0.01
