"""Unitree Go1: every fact about the robot, written once (NumPy and the standard library only).

The task (:mod:`sim2online_envs.tasks.go1`), the simulator and its MJCF loading
(:mod:`sim2online_envs.sim.go1`: joint ranges, PD gains, torque limits and the home keyframe are
written into the model from here), the safety limits, the reset helpers, and the real robot's
driver and twin read these names; none of them writes the numbers again. Nothing here imports a
simulator, so a real env builds its task without MuJoCo.

Joint order is the unitree_legged_sdk's motor order: legs FR, FL, RR, RL, each hip (abduction),
thigh, calf, so that index i means the same motor in sim and on the robot.

Raw state every Go1 backend reports (a dict of arrays with a leading batch axis B;
:data:`STATE_KEYS`):

=================  ===========  =======  ==========  =========================================
key                shape        unit     frame       meaning
=================  ===========  =======  ==========  =========================================
``joint_pos``      (B, 12)      rad      joint       joint angles, SDK motor order
``joint_vel``      (B, 12)      rad/s    joint       joint velocities
``torque``         (B, 12)      N·m      joint       motor torques of the last physics step
``base_quat``      (B, 4)       -        IMU→world   trunk orientation, (w, x, y, z)
``base_rot``       (B, 3, 3)    -        IMU→world   the same as a rotation matrix, body to world
``gyro``           (B, 3)       rad/s    body        trunk angular velocity
``local_linvel``   (B, 3)       m/s      body        trunk linear velocity
``accelerometer``  (B, 3)       m/s²     body        specific force at the IMU
``foot_pos``       (B, 4, 3)    m        world       foot centres, FR FL RR RL
``foot_vel``       (B, 4, 3)    m/s      world       foot velocities
``foot_contact``   (B, 4)       bool     -           foot touches the ground
``trunk_contact``  (B,)         bool     -           trunk touches the ground
=================  ===========  =======  ==========  =========================================

Command every Go1 backend takes (:data:`COMMAND_KEYS`):

=================  ===========  =======  ==========  =========================================
key                shape        unit     frame       meaning
=================  ===========  =======  ==========  =========================================
``joint_targets``  (B, 12)      rad      joint       PD position targets (Kp 35, Kd 0.5)
=================  ===========  =======  ==========  =========================================

Sources: kinematics (hip offsets, thigh offset, link lengths, foot radius) from unitree_ros
``go1_description/xacro/const.xacro``; joint limits and torque limits (the unitree_legged_sdk Go1
motors) from MuJoCo Menagerie ``unitree_go1/go1.xml``; the home pose, joint friction loss and
armature from MuJoCo Playground ``mujoco_playground/_src/locomotion/go1/xmls/go1_mjx_feetonly.xml``
and ``scene_mjx_feetonly_flat_terrain.xml`` (keyframe "home"); PD gains and the 50 Hz control
period from MuJoCo Playground ``mujoco_playground/_src/locomotion/go1/joystick.py``
(default_config). ``docs/parameters.md`` tabulates them with their sources.
"""

from __future__ import annotations

import numpy as np

from sim2online_envs.robots.spec import KeySpec

__all__ = [
    "ALIASES",
    "CALF_LENGTH",
    "COMMAND_KEYS",
    "CONTROLLER_MODULE",
    "CONTROL_DT",
    "FOOT_NAMES",
    "FOOT_RADIUS",
    "HIP_OFFSETS",
    "HOME_JOINT_POS",
    "HOME_TRUNK_HEIGHT",
    "JOINT_ARMATURE",
    "JOINT_FRICTIONLOSS",
    "JOINT_LOWER",
    "JOINT_NAMES",
    "JOINT_UPPER",
    "KD",
    "KP",
    "NAME",
    "NUM_FEET",
    "NUM_JOINTS",
    "REAL_ENTRY_POINT",
    "REAL_ID",
    "RESET_INSTRUCTIONS",
    "SAFETY_JOINT_MARGIN",
    "SAFETY_MAX_TARGET_CHANGE",
    "SAFETY_MAX_TILT",
    "SAFETY_MIN_HEIGHT",
    "SIM_ENTRY_POINT",
    "SIM_ID",
    "STATE_KEYS",
    "THIGH_LENGTH",
    "THIGH_OFFSET",
    "TORQUE_LIMITS",
    "feet_in_trunk",
    "trunk_height",
]

# -- names and ids -------------------------------------------------------------------------------

#: The robot's name (``Task.robot``, ``make_env("go1")``, file names).
NAME = "go1"
#: Other names ``make_env`` accepts for it.
ALIASES = ("unitree_go1",)
#: Gymnasium ids: the simulator and the real robot (same spaces, other backend).
SIM_ID = "SimGo1-v0"
REAL_ID = "RealGo1-v0"
#: Where registration finds the env class and the demo its scripted controller (strings: the
#: robot module imports neither).
SIM_ENTRY_POINT = "sim2online_envs.envs.go1:Go1Env"
#: The real robot's env (its driver libraries load only when it is made).
REAL_ENTRY_POINT = "sim2online_envs.hardware.go1.env:RealGo1Env"
CONTROLLER_MODULE = "sim2online_envs.controllers.go1"

# -- joints --------------------------------------------------------------------------------------

#: Legs in the unitree_legged_sdk's motor order; each leg has a hip, thigh and calf joint.
FOOT_NAMES = ("FR", "FL", "RR", "RL")
JOINT_NAMES = tuple(
    f"{leg}_{part}_joint" for leg in FOOT_NAMES for part in ("hip", "thigh", "calf")
)
NUM_JOINTS = 12
NUM_FEET = 4
#: Standing pose [rad]: hip (abduction) +0.1 on the right legs and -0.1 on the left ones (each
#: foot 2.7 cm in towards the body), thigh 0.9, calf -1.8 (MuJoCo Playground's "home" keyframe,
#: mujoco_playground/_src/locomotion/go1/xmls/scene_mjx_feetonly_flat_terrain.xml, the pose the
#: study's real Go1 policy is offset from too). The task's actions are offsets from it.
HOME_JOINT_POS = np.array([0.1, 0.9, -1.8, -0.1, 0.9, -1.8] * 2)
#: Joint limits [rad] per leg: hip (abduction), thigh, calf (Menagerie go1.xml; Go1 URDF).
JOINT_LOWER = np.array([-0.863, -0.686, -2.818] * 4)
JOINT_UPPER = np.array([0.863, 4.501, -0.888] * 4)
#: Motor torque limits [N·m]: hip and thigh 23.7, calf 35.55 (unitree_legged_sdk Go1 motors,
#: via Menagerie go1.xml).
TORQUE_LIMITS = np.array([23.7, 23.7, 35.55] * 4)
#: Joint dry friction (MuJoCo frictionloss) [N·m] per leg: hip 0.3, thigh 0.3, calf 1.0
#: (MuJoCo Playground go1_mjx_feetonly.xml, classes abduction, hip, knee).
JOINT_FRICTIONLOSS = np.array([0.3, 0.3, 1.0] * 4)
#: Reflected rotor inertia (MuJoCo armature) [kg·m²] of every joint (MuJoCo Playground
#: go1_mjx_feetonly.xml, class go1).
JOINT_ARMATURE = np.full(12, 0.005)
#: The motors' PD position loop: stiffness [N·m/rad] and damping [N·m·s/rad] (MuJoCo
#: Playground go1 joystick default_config Kp, Kd). The same on every joint.
KP = 35.0
KD = 0.5

# -- timing --------------------------------------------------------------------------------------

#: Control period [s]: 50 Hz (MuJoCo Playground go1 joystick ctrl_dt; the study's Go1 rate).
CONTROL_DT = 0.02

# -- leg kinematics (unitree_ros go1_description const.xacro) -----------------------------------

#: Hip joints in the trunk frame [m], FR FL RR RL.
HIP_OFFSETS = np.array(
    [
        [0.1881, -0.04675, 0.0],
        [0.1881, 0.04675, 0.0],
        [-0.1881, -0.04675, 0.0],
        [-0.1881, 0.04675, 0.0],
    ]
)
#: Thigh joint offset from the hip joint along y [m] (outward: -y on the right legs).
THIGH_OFFSET = 0.08
#: Thigh (thigh joint to knee) and calf (knee to foot centre) lengths [m].
THIGH_LENGTH = 0.213
CALF_LENGTH = 0.213
#: Radius of the foot sphere [m].
FOOT_RADIUS = 0.02


def feet_in_trunk(joint_pos: np.ndarray) -> np.ndarray:
    """Foot centres (B, 4, 3) in the trunk frame from joint angles (B, 12), by leg kinematics."""
    q = np.asarray(joint_pos, dtype=np.float64).reshape(-1, 4, 3)
    abduction, thigh, knee = q[..., 0], q[..., 1], q[..., 2]
    # In the hip frame, after the thigh and knee pitch joints (rotations about y):
    x = -THIGH_LENGTH * np.sin(thigh) - CALF_LENGTH * np.sin(thigh + knee)
    z = -THIGH_LENGTH * np.cos(thigh) - CALF_LENGTH * np.cos(thigh + knee)
    y = np.sign(HIP_OFFSETS[:, 1]) * THIGH_OFFSET
    # The abduction joint rotates about x.
    y_rot = y * np.cos(abduction) - z * np.sin(abduction)
    z_rot = y * np.sin(abduction) + z * np.cos(abduction)
    return HIP_OFFSETS + np.stack([x, y_rot, z_rot], axis=-1)


def trunk_height(joint_pos: np.ndarray, base_quat: np.ndarray) -> np.ndarray:
    """Trunk height (B,) above flat ground, from joint angles and the IMU orientation only.

    The lowest foot is taken to touch the ground. This needs no motion capture, so it holds the
    same on the real robot as in sim (standing at home: :data:`HOME_TRUNK_HEIGHT`).
    """
    feet = feet_in_trunk(joint_pos)
    quat = np.asarray(base_quat, dtype=np.float64).reshape(-1, 4)
    w, x, y, z = quat[:, 0:1], quat[:, 1:2], quat[:, 2:3], quat[:, 3:4]
    # Third row of the rotation matrix: the world z of a trunk-frame vector (element-wise, so
    # the answer does not depend on the batch size).
    foot_z = (
        2 * (x * z - w * y) * feet[..., 0]
        + 2 * (y * z + w * x) * feet[..., 1]
        + (1 - 2 * (x * x + y * y)) * feet[..., 2]
    )
    return -foot_z.min(axis=1) + FOOT_RADIUS


#: Trunk height [m] of the home keyframe: upright at the home pose with the lowest foot just
#: touching flat ground (from the leg kinematics; the legs are symmetric, so all four touch).
HOME_TRUNK_HEIGHT = float(trunk_height(HOME_JOINT_POS, np.array([1.0, 0.0, 0.0, 0.0]))[0])


# -- state and command keys (the tables of the module docstring) --------------------------------

STATE_KEYS: dict[str, KeySpec] = {
    "joint_pos": KeySpec((NUM_JOINTS,), "float64", "rad", "joint", "joint angles"),
    "joint_vel": KeySpec((NUM_JOINTS,), "float64", "rad/s", "joint", "joint velocities"),
    "torque": KeySpec((NUM_JOINTS,), "float64", "N·m", "joint", "motor torques"),
    "base_quat": KeySpec((4,), "float64", "-", "IMU→world", "trunk orientation (w, x, y, z)"),
    "base_rot": KeySpec((3, 3), "float64", "-", "IMU→world", "trunk rotation matrix"),
    "gyro": KeySpec((3,), "float64", "rad/s", "body", "trunk angular velocity"),
    "local_linvel": KeySpec((3,), "float64", "m/s", "body", "trunk linear velocity"),
    "accelerometer": KeySpec((3,), "float64", "m/s²", "body", "specific force at the IMU"),
    "foot_pos": KeySpec((NUM_FEET, 3), "float64", "m", "world", "foot centres"),
    "foot_vel": KeySpec((NUM_FEET, 3), "float64", "m/s", "world", "foot velocities"),
    "foot_contact": KeySpec((NUM_FEET,), "bool", "-", "-", "foot touches the ground"),
    "trunk_contact": KeySpec((), "bool", "-", "-", "trunk touches the ground"),
}
COMMAND_KEYS: dict[str, KeySpec] = {
    "joint_targets": KeySpec((NUM_JOINTS,), "float64", "rad", "joint", "PD position targets"),
}

# -- default safety limits (numbers only; the limits themselves live in the step loop) -----------

#: Joint targets stay this far inside the joint limits [rad].
SAFETY_JOINT_MARGIN = 0.05
#: Largest change of a joint target from one control period to the next [rad].
SAFETY_MAX_TARGET_CHANGE = 0.25
#: Abort when roll or pitch exceeds this [rad] (63°: just beyond the task's 60° fall test, so a
#: fall stays a termination and the abort is the backstop).
SAFETY_MAX_TILT = 1.1
#: Abort when the trunk is lower than this above the ground [m] (:func:`trunk_height`).
SAFETY_MIN_HEIGHT = 0.12

# -- resets --------------------------------------------------------------------------------------

#: What the operator does between episodes.
RESET_INSTRUCTIONS = (
    "Go1: set the robot on its feet in the middle of the mat, facing +x, legs free, tether "
    "slack (or let it stand up with the automatic reset). Keep the e-stop in hand."
)
