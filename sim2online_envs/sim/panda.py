"""MuJoCo simulator of the Franka Panda pick-cube scene, N worlds on ``mujoco.batch.Batch``.

The scene is composed with MuJoCo's spec API, as the study's: the arm and hand of
``assets/panda.xml`` on a dark table, a 5 cm cube textured with its ArUco markers (or, for
sim-to-sim mismatch, a compliant foam ball), a fixed camera where the real Intel RealSense D455
stands, an overview camera for ``render_mode="rgb_array"``, one directional light in front of the
robot (and the headlight).

Control: the Task sends a Cartesian tip target and a gripper command once per control period.
By default (``arm_control="impedance"``) the arm tracks it as the study's real arm does, through
franka_ros's Cartesian impedance controller (:func:`add_impedance_controller`, the robot
module's ``IMPEDANCE_*``): the target is the equilibrium of a spring-damper on the TCP's pose,
reached through the real controller's first-order filter, and its force ``J^T (-K e - D J dq)``
acts at every physics step inside ``Batch.step(nstep=n_substeps)`` (MuJoCo's site-transmission
actuators, so no Python runs per physics substep); the controller's small null-space and
Coriolis torques (:meth:`PandaVectorBackend.joint_torques`) are evaluated once per control
period and held. The arm is compliant: it lags a moving target and gives way under contact. With
``arm_control="joint_servo"`` the target instead becomes joint targets through one
damped-least-squares differential-IK step over all worlds
(:meth:`PandaVectorBackend.joint_targets`, also the hardware's joint mode) that stiff joint
position servos track, almost perfectly. Either way gravity compensation (``gravcomp``) stands
for the real arm's own. The gripper moves at the Franka Hand's speed from its current width and
squeezes with at most its continuous grasp force (the robot module's ``FINGER_SPEED``,
``GRASP_FORCE``; see ``assets/panda.xml``); ``gripper_holding`` reports that it has closed on
something.

Images: one ``mujoco.Renderer`` (128x128 by default: twice ``image_size``) renders every world
in turn: each world's randomised model fields and its configuration are copied into a
render-only ``MjModel``/``MjData`` pair, kinematics run there (no dynamics), and the RGB frame
becomes grayscale, is area-averaged down to 64x64 and scaled by the world's brightness factor.
See :meth:`PandaVectorBackend.render_pixels`.

Speed: a frame costs most of a control step on a CPU renderer. The defaults (128 px without
anti-aliasing, a 128 px shadow map, area-averaged to 64 px) are among the cheapest settings that
keep the shadows, close to a fine reference; ``PandaSimConfig(pixel_shadow_size=0)`` leaves the
shadows out for about a third of the cost (under the study's light they fall mostly behind the
arm and the cube). llvmpipe spends its time on vertices (every geom is drawn three times with
shadows on) more than on pixels, and for such small frames it is cheaper on one thread:
``LP_NUM_THREADS=0`` in the environment before the first renderer is made. The measurements are
in docs/performance.md ("64×64 grayscale camera frames on a CPU").

Randomness: :meth:`PandaVectorBackend.reset_worlds` draws, from each world's generator and in this
order, the object's position and yaw, then the light (position, turn, shadows), the camera pose,
the table and floor grays and the brightness scale. The randomisation is drawn (and discarded)
with ``domain_randomization`` off too, so that a seed gives the same episode, object placement
and the task's goal drawn after the reset, with and without domain randomisation.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import mujoco
import mujoco.batch
import numpy as np

from sim2online_envs.core import Backend, Batch, SimReadings
from sim2online_envs.kinematics import dls_step
from sim2online_envs.robots import panda as panda_robot
from sim2online_envs.robots.panda import (
    ARM_JOINT_NAMES,
    CAMERA,
    CUBE_SIZE,
    FINGER_JOINT_NAMES,
    HOME_QPOS,
    HOME_TIP_POS,
    MARKER_DICTIONARY,
    MARKER_FACES,
    MARKER_LENGTH,
    MAX_GRIPPER_OPENING,
    TIP_DOWN_ROTATION,
)
from sim2online_envs.vision import (
    face_image,
    load_calibration,
    marker_in_cube,
    mujoco_camera,
    policy_image,
)

logger = logging.getLogger(__name__)

__all__ = [
    "HOME_QPOS",
    "HOME_TIP_POS",
    "OBJECTS",
    "TIP_DOWN_ROTATION",
    "ObjectSpec",
    "PandaSimConfig",
    "PandaVectorBackend",
    "add_impedance_controller",
    "add_marker_faces",
    "build_scene",
    "camera_pose",
    "check_model",
    "scene_spec",
    "write_robot_facts",
]

#: The robot model (arm + hand), written from Franka's published kinematics.
PANDA_XML = Path(__file__).resolve().parent.parent / "assets" / "panda.xml"

# The arm's and the hand's facts (home posture and tip, joint names, the hand-down orientation,
# the opening) are sim2online_envs.robots.panda's; this module re-exports the first three.
ARM_JOINTS = ARM_JOINT_NAMES
FINGER_JOINTS = FINGER_JOINT_NAMES
#: Fully open gripper (m).
GRIPPER_OPEN = MAX_GRIPPER_OPENING
#: The scene's lighting: the headlight (at the rendering camera) and the directional light's
#: diffuse colour, set so that the study's black table and marker cube render at the gray
#: levels of its real frame (docs/parameters.md).
HEADLIGHT_AMBIENT = (0.55, 0.55, 0.55)
HEADLIGHT_DIFFUSE = (0.25, 0.25, 0.25)
LIGHT_DIFFUSE = (0.55, 0.55, 0.55)
#: The closed gripper holds something when its width target is this far inside the measured
#: width (m): the fingers have stopped on an object and squeeze it (25 N at the servo's gain).
HOLD_LAG = 0.01
#: The arm controllers :class:`PandaSimConfig` offers.
ARM_CONTROLS = ("impedance", "joint_servo")


@dataclass(frozen=True)
class ObjectSpec:
    """The object to pick: a rigid cube or a compliant ball.

    :param kind: "box" or "sphere".
    :param size: edge length of the cube or diameter of the ball (m).
    :param mass: kg.
    :param friction: MuJoCo (sliding, torsional, rolling) friction.
    :param solref: contact (time constant s, damping ratio); larger time constants are softer.
    :param solimp: contact impedance (d0, dwidth, width, ...); a wide, low impedance gives way.
    :param rgba: colour.
    """

    kind: str
    size: float
    mass: float
    friction: tuple[float, float, float]
    solref: tuple[float, float]
    solimp: tuple[float, float, float]
    rgba: tuple[float, float, float, float]


#: The two objects. The cube: 5 cm, 0.1 kg (a hardwood or dense 3D-printed block, like the one on
#: the real table), rigid contacts. The soft ball: a 5.5 cm foam ball of 40 g whose contacts give
#: way by several millimetres under the 70 N grasp (20 ms contact time constant, low impedance) and
#: which rolls: the sim-to-sim "reality" for a policy pretrained on the cube.
OBJECTS: dict[str, ObjectSpec] = {
    "cube": ObjectSpec(
        kind="box",
        size=CUBE_SIZE,
        mass=0.1,
        friction=(1.0, 0.005, 0.0001),
        solref=(0.004, 1.0),
        solimp=(0.95, 0.99, 0.001),
        rgba=(0.9, 0.9, 0.9, 1.0),
    ),
    "soft_ball": ObjectSpec(
        kind="sphere",
        size=0.055,
        mass=0.04,
        friction=(1.2, 0.01, 0.002),
        solref=(0.02, 0.8),
        solimp=(0.5, 0.95, 0.012),
        rgba=(0.95, 0.75, 0.1, 1.0),
    ),
}


@dataclass(frozen=True)
class PandaSimConfig:
    """Physics, controller, camera and randomisation settings of the Panda simulator.

    Positions are in the world frame: origin at the robot base on the table top, x forward, z up.
    """

    #: Physics step (s); ``control_dt`` must be a whole multiple of it.
    physics_dt: float = 0.002
    #: Control period (s): one :meth:`PandaVectorBackend.apply` advances this much.
    control_dt: float = panda_robot.CONTROL_DT
    #: Side of the square grayscale observation image (px).
    image_size: int = CAMERA.image_size
    #: (height, width) of the colour ``rgb_array`` frames of the overview camera.
    render_size: tuple[int, int] = (240, 320)
    #: Vertical field of view of the fixed D455 camera (deg). The D455 colour sensor sees
    #: about 90 x 65 deg; a centre square crop of its image (what the real env feeds the policy,
    #: resized to ``image_size``) spans its full 65 deg height.
    camera_fovy: float = CAMERA.fovy
    #: D455 position and the point it looks at (the robot module's :data:`CAMERA`): in front of
    #: the robot, a little to its left, looking back and down at the workspace.
    camera_pos: tuple[float, float, float] = CAMERA.pos
    camera_target: tuple[float, float, float] = CAMERA.target
    #: A calibration file (``sim2online calibrate panda-camera``): when given, the D455's pose
    #: and field of view come from it (:func:`sim2online_envs.vision.mujoco_camera`: the
    #: calibrated camera pose, the fovy of the policy's crop) instead of the three fields above,
    #: so the simulator renders from where the user's camera stands.
    camera_calibration: str | None = None
    #: Region the object's centre is placed in at reset (x, y), and its yaw range (+-rad).
    object_xy_low: tuple[float, float] = (0.50, -0.10)
    object_xy_high: tuple[float, float] = (0.65, 0.10)
    object_yaw_range: float = math.pi / 6
    #: How the arm tracks the tip target: "impedance", the real arm's Cartesian impedance
    #: controller (the robot module's ``IMPEDANCE_*``: torques from a spring-damper on the TCP's
    #: pose, at the physics rate), or "joint_servo", one damped-least-squares IK step per control
    #: period into stiff joint position servos (nearly perfect tracking).
    arm_control: str = "impedance"
    #: The impedance controller's stiffnesses (translation N/m, rotation N m/rad, null space
    #: N m/rad; each damped critically, 2 sqrt(k)) and its equilibrium filter's time constant
    #: (s; 0: none), the real controller's by default.
    translational_stiffness: float = panda_robot.IMPEDANCE_TRANSLATIONAL_STIFFNESS
    rotational_stiffness: float = panda_robot.IMPEDANCE_ROTATIONAL_STIFFNESS
    nullspace_stiffness: float = panda_robot.IMPEDANCE_NULLSPACE_STIFFNESS
    target_time_constant: float = panda_robot.IMPEDANCE_FILTER_TIME_CONSTANT
    #: Differential IK ("joint_servo"): damping (m), orientation gain, null-space gain toward
    #: the home posture, and the largest position error one IK step acts on (m).
    ik_damping: float = 0.02
    ik_orientation_gain: float = 1.0
    ik_nullspace_gain: float = 0.3
    ik_max_error: float = 0.08
    #: Domain randomisation, the study's (``pick_cartesian.py`` ``domain_randomize`` in
    #: yardenas/safe-learning, Playground's ``randomize_vision``; digest: /work/shared/research/
    #: study_code.md, section 1.5), used when enabled. The one directional light stands in this
    #: box (m), aimed at the start tip and turned by up to ``light_dir_jitter`` (rad) about a
    #: random axis, and casts shadows with probability ``light_shadow_probability``; without
    #: randomisation it stands at the box's centre, aimed at the start tip, with shadows.
    light_pos_low: tuple[float, float, float] = (1.5, -0.2, 0.8)
    light_pos_high: tuple[float, float, float] = (3.0, 0.2, 1.5)
    light_dir_jitter: float = math.radians(20.0)
    light_shadow_probability: float = 0.75
    #: The D455 moves by up to this per axis (m) and turns by up to ``camera_rot_jitter`` (rad)
    #: about a random axis (the study's +-5 cm and 10 deg).
    camera_pos_jitter: float = 0.05
    camera_rot_jitter: float = math.radians(10.0)
    #: Gray level of the table top (the study's floor, on which the robot and the cube stand):
    #: drawn from ``table_gray_range`` (the study's), ``table_gray`` without randomisation (the
    #: black cloth of the study's real table; see docs/parameters.md for the gray levels it
    #: renders at).
    table_gray_range: tuple[float, float] = (0.0, 0.25)
    table_gray: float = 0.21
    #: Gray level of the floor below the table and the wall behind the robot (not in the
    #: study's scene, which has neither; this package's range).
    floor_gray_range: tuple[float, float] = (0.15, 0.7)
    #: The image's gray levels are scaled by a factor from this range (the study's
    #: ``obs_noise.brightness`` of ``franka_sim_to_real.yaml``).
    brightness_range: tuple[float, float] = (0.75, 2.0)
    #: Texture the cube's faces with its ArUco markers (:func:`add_marker_faces`, the robot
    #: module's dictionary, ids and layout, as on the real cube).
    cube_markers: bool = True
    #: Observation images: multisampling (MSAA) samples, shadow-map size (0: no shadows, which
    #: leaves out the arm's and the object's shadows), tessellation of capsules and spheres
    #: (slices, stacks; coarse, as 64x64 pixels cannot show more), and supersampling: the frame
    #: is rendered at ``pixel_supersample`` times ``image_size`` and area-averaged down. The
    #: defaults (128 px without MSAA, area-averaged, 128 px shadow map) came out of
    #: ``benchmarks/images.py``: closer to a high-quality render (0.9 gray levels off on
    #: average) than 64 px with 4x MSAA and a 256 px shadow map (1.0), at about 40 % less CPU
    #: per frame on llvmpipe.
    pixel_samples: int = 0
    pixel_shadow_size: int = 128
    pixel_tessellation: tuple[int, int] = (12, 6)
    pixel_supersample: int = 2
    #: Overview (rgb_array) frames: MSAA samples, shadow-map size and tessellation, for people to
    #: look at.
    overview_samples: int = 4
    overview_shadow_size: int = 1024
    overview_tessellation: tuple[int, int] = (28, 16)

    def __post_init__(self) -> None:
        for name in ("physics_dt", "control_dt"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        n_substeps = round(self.control_dt / self.physics_dt)
        if n_substeps < 1 or abs(n_substeps * self.physics_dt - self.control_dt) > 1e-9:
            raise ValueError(
                f"control_dt={self.control_dt} must be a whole multiple of physics_dt="
                f"{self.physics_dt} (got {self.control_dt / self.physics_dt:.4f} substeps)"
            )
        if self.arm_control not in ARM_CONTROLS:
            raise ValueError(f"arm_control must be one of {ARM_CONTROLS}, got {self.arm_control!r}")
        for name in ("translational_stiffness", "rotational_stiffness", "nullspace_stiffness"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        tau = self.target_time_constant
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau >= 0):
            raise ValueError(f"target_time_constant must be a number of seconds >= 0, got {tau!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int):
            raise TypeError(f"image_size must be an int, got {type(self.image_size).__name__}")
        if not 8 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [8, 512] px, got {self.image_size}")
        if len(self.render_size) != 2 or min(self.render_size) < 8:
            raise ValueError(f"render_size must be (height, width) >= 8 px, got {self.render_size}")
        for name in ("pixel_samples", "pixel_shadow_size", "overview_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        supersample = self.pixel_supersample
        if isinstance(supersample, bool) or not isinstance(supersample, int):
            raise TypeError(f"pixel_supersample must be an int, got {type(supersample).__name__}")
        if not 1 <= supersample <= 8 or self.image_size * supersample > 2048:
            raise ValueError(
                f"pixel_supersample must be in [1, 8] with image_size * pixel_supersample <= "
                f"2048 px, got {supersample} (image_size={self.image_size})"
            )

    @property
    def n_substeps(self) -> int:
        """Physics steps per control period (exact; checked at construction)."""
        n_substeps = round(self.control_dt / self.physics_dt)
        assert abs(n_substeps * self.physics_dt - self.control_dt) < 1e-9
        return n_substeps


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def _look_at_quat(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Quaternion of a MuJoCo camera at ``pos`` looking at ``target`` with world z up."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    mat = np.stack([right, up, -forward], axis=1)  # camera looks along its -z
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.ravel())
    return quat


def _random_turn(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    """A rotation (quaternion w, x, y, z) by U(0, ``max_angle``) rad about a random axis whose
    x and z components are U(-1, 1) and y component U(0, 1), normalised: the study's (and
    Playground's) ``perturb_orientation``."""
    axis = np.array([rng.uniform(-1.0, 1.0), rng.uniform(0.0, 1.0), rng.uniform(-1.0, 1.0)])
    angle = rng.uniform(0.0, max_angle)
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, _unit(axis), angle)
    return quat


def camera_pose(config: PandaSimConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """The D455's position (m), quaternion (w, x, y, z) and fovy (deg) for ``config``: from its
    calibration file when it names one, else from ``camera_pos``, ``camera_target`` and
    ``camera_fovy``."""
    if config.camera_calibration is not None:
        return mujoco_camera(load_calibration(config.camera_calibration))
    pos = np.array(config.camera_pos, dtype=np.float64)
    return pos, _look_at_quat(pos, np.array(config.camera_target)), float(config.camera_fovy)


def build_scene(object: str = "cube", config: PandaSimConfig | None = None) -> mujoco.MjModel:
    """Compile the pick scene of :func:`scene_spec` with the config's arm controller
    (:func:`add_impedance_controller` for "impedance") and check it against the robot module."""
    config = config or PandaSimConfig()
    spec = scene_spec(object, config)
    if config.arm_control == "impedance":
        add_impedance_controller(spec, config)
    model = spec.compile()
    check_model(model)
    return model


def add_impedance_controller(spec: mujoco.MjSpec, config: PandaSimConfig | None = None) -> None:
    """Drive the spec's arm by the real arm's Cartesian impedance law, at the physics rate.

    ``tau = J^T (-K e - D J dq)`` is MuJoCo's own: six position actuators on the TCP site, each
    measured against a fixed reference site (``refsite``), whose length is one component of the
    TCP's position in the world (``tcp_x``, ``tcp_y``, ``tcp_z``: control = the equilibrium
    position, reached through a first-order filter of ``target_time_constant``, the real
    controller's equilibrium filter) or of its rotation vector from the hand-down orientation
    :data:`TIP_DOWN_ROTATION` (``tcp_rx``, ``tcp_ry``, ``tcp_rz``: control 0), with gain K and
    damping ``D = 2 sqrt(K)``; the force along each maps to joint torques through the site's
    Jacobian. The joint servos become torque motors (``joint1`` ... ``joint7``) that add the
    null-space and Coriolis terms (:meth:`PandaVectorBackend.apply`), and each joint's total
    actuator torque is capped at the robot's torque limit (``actfrcrange``).
    """
    config = config or PandaSimConfig()
    r = panda_robot
    for index, name in enumerate(ARM_JOINT_NAMES):
        limit = float(r.ARM_TORQUE_LIMITS[index])
        joint = spec.joint(name)
        joint.actfrcrange = [-limit, limit]
        joint.actfrclimited = mujoco.mjtLimited.mjLIMITED_TRUE
        motor = spec.actuator(name)
        motor.set_to_motor()
        motor.inheritrange = 0
        motor.ctrlrange = [-limit, limit]
        motor.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
    world = spec.worldbody
    world.add_site(name="impedance_origin", group=5)
    down = np.zeros(4)
    mujoco.mju_mat2Quat(down, TIP_DOWN_ROTATION.ravel())
    world.add_site(name="impedance_down", quat=list(down), group=5)
    axes = np.eye(3)
    translational = config.translational_stiffness
    rotational = config.rotational_stiffness
    for index, axis in enumerate("xyz"):
        position = spec.add_actuator(
            name=f"tcp_{axis}",
            trntype=mujoco.mjtTrn.mjTRN_SITE,
            target="tcp",
            refsite="impedance_origin",
            gear=[*axes[index], 0.0, 0.0, 0.0],
        )
        position.set_to_position(
            kp=translational,
            kv=2.0 * math.sqrt(translational),
            timeconst=config.target_time_constant if config.target_time_constant > 0 else -1,
        )
        rotation = spec.add_actuator(
            name=f"tcp_r{axis}",
            trntype=mujoco.mjtTrn.mjTRN_SITE,
            target="tcp",
            refsite="impedance_down",
            gear=[0.0, 0.0, 0.0, *axes[index]],
        )
        rotation.set_to_position(kp=rotational, kv=2.0 * math.sqrt(rotational))


def scene_spec(object: str = "cube", config: PandaSimConfig | None = None) -> mujoco.MjSpec:
    """The pick scene as an ``MjSpec``: table, robot, object, goal marker, cameras, lights.

    :func:`build_scene` compiles it; the twin (:mod:`sim2online_envs.hardware.panda.twin`) adds
    its occluder before compiling.
    """
    if object not in OBJECTS:
        raise ValueError(f"object must be one of {sorted(OBJECTS)}, got {object!r}")
    config = config or PandaSimConfig()
    obj = OBJECTS[object]
    spec = mujoco.MjSpec.from_file(str(PANDA_XML))  # the robot; the scene is added around it
    write_robot_facts(spec)
    spec.modelname = f"panda_pick_{object}"
    spec.option.timestep = config.physics_dt
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    height, width = config.render_size
    pixel_render_size = config.image_size * config.pixel_supersample
    spec.visual.global_.offwidth = max(width, pixel_render_size)
    spec.visual.global_.offheight = max(height, pixel_render_size)
    spec.visual.quality.offsamples = config.pixel_samples
    spec.visual.quality.shadowsize = config.pixel_shadow_size
    spec.visual.quality.numslices, spec.visual.quality.numstacks = config.pixel_tessellation
    spec.visual.headlight.ambient = list(HEADLIGHT_AMBIENT)
    spec.visual.headlight.diffuse = list(HEADLIGHT_DIFFUSE)
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]

    world = spec.worldbody
    # Floor 0.75 m below the table top; table top at z = 0 (the robot base stands on it).
    world.add_geom(
        name="floor",
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[3.0, 3.0, 0.5],
        pos=[0.0, 0.0, -0.75],
        rgba=[0.4, 0.4, 0.42, 1.0],
        contype=0,
        conaffinity=1,
    )
    # A wall behind the robot, so that the camera sees a room rather than the void.
    world.add_geom(
        name="wall",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.02, 2.0, 1.2],
        pos=[-0.7, 0.0, 0.3],
        rgba=[0.55, 0.56, 0.58, 1.0],
        contype=0,
        conaffinity=0,
    )
    table_gray = float(config.table_gray)
    world.add_geom(
        name="table",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.6, 0.7, 0.375],
        pos=[0.35, 0.0, -0.375],
        rgba=[table_gray, table_gray, table_gray, 1.0],
        contype=0,
        conaffinity=1,
        friction=[0.8, 0.005, 0.0001],
    )
    # The study's one directional light, in front of the robot, aimed at the start tip.
    light_pos = (np.asarray(config.light_pos_low) + np.asarray(config.light_pos_high)) / 2
    world.add_light(
        name="key",
        type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
        pos=list(light_pos),
        dir=list(_unit(HOME_TIP_POS - light_pos)),
        diffuse=list(LIGHT_DIFFUSE),
        specular=[0.0, 0.0, 0.0],
        castshadow=True,
    )
    cam_pos, cam_quat, cam_fovy = camera_pose(config)
    world.add_camera(name=CAMERA.name, pos=list(cam_pos), quat=list(cam_quat), fovy=cam_fovy)
    overview_pos = np.array([1.15, -0.75, 0.7])
    world.add_camera(
        name="overview",
        pos=list(overview_pos),
        quat=list(_look_at_quat(overview_pos, np.array([0.35, 0.0, 0.22]))),
        fovy=50.0,
    )

    body = world.add_body(name="object", pos=[0.5, 0.0, obj.size / 2])
    body.add_freejoint(name="object")
    half = obj.size / 2
    body.add_geom(
        name="object",
        type=mujoco.mjtGeom.mjGEOM_BOX if obj.kind == "box" else mujoco.mjtGeom.mjGEOM_SPHERE,
        size=[half, half, half] if obj.kind == "box" else [half, 0.0, 0.0],
        mass=obj.mass,
        friction=list(obj.friction),
        solref=list(obj.solref),
        solimp=[*obj.solimp, 0.5, 2.0],
        condim=6 if obj.kind == "sphere" else 4,
        rgba=list(obj.rgba),
        contype=1,
        conaffinity=1,
    )
    if config.cube_markers and obj.kind == "box":
        add_marker_faces(spec, obj.size)
    # The goal: a translucent marker (site group 5) that only the overview camera shows.
    goal = world.add_body(name="goal", mocap=True, pos=[0.5, 0.0, 0.2])
    goal.add_site(name="goal", size=[0.02, 0.0, 0.0], rgba=[0.1, 0.8, 0.2, 0.5], group=5)
    return spec


def add_marker_faces(
    spec: mujoco.MjSpec,
    cube_size: float = CUBE_SIZE,
    dictionary: str = MARKER_DICTIONARY,
    marker_length: float = MARKER_LENGTH,
    pixels: int = 250,
) -> None:
    """Texture the faces of the spec's cube (body "object") with its ArUco markers.

    Each face gets a thin visual-only square just outside the cube, textured with
    :func:`sim2online_envs.vision.face_image` (the printed sheet's image) in the layout of
    :data:`~sim2online_envs.robots.panda.MARKER_FACES`.
    """
    body = spec.body("object")
    half = cube_size / 2
    for marker_id in MARKER_FACES:
        gray = face_image(marker_id, dictionary, cube_size, marker_length, pixels)
        rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
        name = f"aruco{marker_id}"
        texture = spec.add_texture(
            name=name,
            type=mujoco.mjtTexture.mjTEXTURE_2D,
            width=rgb.shape[1],
            height=rgb.shape[0],
            nchannel=3,
        )
        texture.data = rgb.tobytes()
        material = spec.add_material(name=name)
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = name
        frame = marker_in_cube(marker_id, cube_size)
        right, up, normal = frame[:3, 0], frame[:3, 1], frame[:3, 2]
        centre = normal * (half + 0.0003)
        corners = [
            centre - right * half + up * half,
            centre + right * half + up * half,
            centre + right * half - up * half,
            centre - right * half - up * half,
        ]
        mesh = spec.add_mesh(
            name=name,
            uservert=np.asarray(corners).ravel().tolist(),
            userface=[0, 2, 1, 0, 3, 2],
            usertexcoord=[0, 0, 1, 0, 1, 1, 0, 1],
        )
        mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL
        body.add_geom(
            name=name,
            type=mujoco.mjtGeom.mjGEOM_MESH,
            meshname=name,
            material=name,
            contype=0,
            conaffinity=0,
            mass=1e-5,
        )


def write_robot_facts(spec: mujoco.MjSpec) -> None:
    """Write the arm's joint and torque limits and the hand's travel, speed and force from
    :mod:`sim2online_envs.robots.panda` into the robot's spec (``assets/panda.xml`` leaves
    them out, so that it is no second source; the servos inherit the joint ranges as ctrlrange).
    """
    r = panda_robot
    for index, name in enumerate(ARM_JOINT_NAMES):
        spec.joint(name).range = [r.ARM_JOINT_LOWER[index], r.ARM_JOINT_UPPER[index]]
        actuator = spec.actuator(name)
        actuator.forcerange = [-r.ARM_TORQUE_LIMITS[index], r.ARM_TORQUE_LIMITS[index]]
        actuator.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    for name in FINGER_JOINT_NAMES:
        spec.joint(name).range = [0.0, r.FINGER_TRAVEL]
    gripper = spec.actuator("gripper")
    # ctrl: the opening's rate (both fingers: twice the finger speed); the activation is the
    # width target; the force saturates at the hand's continuous grasp force
    opening_speed = 2 * r.FINGER_SPEED
    gripper.ctrlrange = [-opening_speed, opening_speed]
    gripper.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
    gripper.actrange = [0.0, MAX_GRIPPER_OPENING]
    gripper.actlimited = mujoco.mjtLimited.mjLIMITED_TRUE
    gripper.forcerange = [-r.GRASP_FORCE, r.GRASP_FORCE]
    gripper.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE


def check_model(model: mujoco.MjModel) -> None:
    """Raise a RuntimeError where the compiled scene disagrees with the robot module: joint
    and torque limits, the hand's travel, speed, force and opening, the TCP offset. (The camera
    is the scene's setting, :class:`PandaSimConfig`, defaulting to the robot's :data:`CAMERA`.)
    """
    r = panda_robot
    arm = [model.joint(name).id for name in ARM_JOINT_NAMES]
    fingers = [model.joint(name).id for name in FINGER_JOINT_NAMES]
    servos = [model.actuator(name).id for name in ARM_JOINT_NAMES]
    gripper = model.actuator("gripper").id
    checks = {
        "arm joint lower limits": (model.jnt_range[arm, 0], r.ARM_JOINT_LOWER),
        "arm joint upper limits": (model.jnt_range[arm, 1], r.ARM_JOINT_UPPER),
        "arm torque limits": (model.actuator_forcerange[servos, 1], r.ARM_TORQUE_LIMITS),
        "finger travel": (model.jnt_range[fingers, 1], np.full(2, r.FINGER_TRAVEL)),
        "gripper speed": (model.actuator_ctrlrange[gripper, 1], 2 * r.FINGER_SPEED),
        "gripper opening": (model.actuator_actrange[gripper, 1], MAX_GRIPPER_OPENING),
        "grasp force": (model.actuator_forcerange[gripper, 1], r.GRASP_FORCE),
        "TCP offset": (model.site("tcp").pos, np.array([0.0, 0.0, r.TCP_OFFSET])),
    }
    if model.body("hand").id != model.site_bodyid[model.site("tcp").id]:
        raise RuntimeError("panda.xml: the site 'tcp' must be on the body 'hand'")
    for what, (model_value, robot_value) in checks.items():
        if not np.array_equal(np.asarray(model_value, dtype=np.float64), robot_value):
            raise RuntimeError(
                f"Panda scene {what} {model_value} differ from sim2online_envs.robots.panda's "
                f"{robot_value}"
            )


def _renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """A ``mujoco.Renderer``, with a clear error when no OpenGL context can be made."""
    try:
        return mujoco.Renderer(model, height, width)
    except mujoco.FatalError as error:
        raise RuntimeError(
            "MuJoCo could not create an OpenGL context for the Panda camera "
            f"(MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')!r}): {error}. MuJoCo picks its "
            "OpenGL platform when it is first imported; on a machine without a display set "
            "MUJOCO_GL=egl (or osmesa), or import sim2online_envs before mujoco, which does that."
        ) from error


def _option_rows(name: str, value: Any, count: int, width: int | None) -> np.ndarray:
    """Reset option ``value`` as finite (count, width) (or (count,)) rows, or a clear ValueError.

    One value for all reset worlds ((width,) or a scalar) is broadcast; NaN would make MuJoCo
    reset the world to its default pose with only a console warning.
    """
    shape = (count,) if width is None else (count, width)
    single = "a number" if width is None else f"of shape ({width},)"
    try:
        array = np.asarray(value, dtype=np.float64)
        array = np.broadcast_to(array, shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"reset option {name!r} must be {single} or of shape {shape} (a row per reset "
            f"world), got {value!r}"
        ) from None
    if not np.isfinite(array).all():
        raise ValueError(f"reset option {name!r} must be finite, got {value!r}")
    return array


class PandaVectorBackend(Backend):
    """``num_worlds`` Panda pick scenes stepped together on a ``mujoco.batch.Batch``.

    State (each array with a leading world axis ``N``):

    ================== ================ =====================================================
    key                shape            meaning
    ================== ================ =====================================================
    pixels             (N, S, S, 1) u8  grayscale D455 image (S = ``image_size``)
    tip_pos            (N, 3)           TCP (fingertip centre) position, world frame (m)
    tip_target         (N, 3)           Cartesian target the controller tracks (m)
    gripper_opening    (N,)             distance between the fingers (m), 0 ... 0.08
    gripper_closed     (N,)             last gripper command, 1.0 closed / 0.0 open
    gripper_holding    (N,)             1.0 while the closed fingers squeeze something (like
                                        libfranka's ``GripperState.is_grasped``)
    arm_qpos           (N, 7)           joint angles (rad)
    object_pos         (N, 3)           object centre (m), privileged
    object_quat        (N, 4)           object orientation (w, x, y, z), privileged
    object_size        (N,)             cube edge or ball diameter (m)
    ================== ================ =====================================================

    Commands: ``tip_target`` (N, 3) in m and ``gripper_closed`` (N,) (> 0.5 closes).

    :param num_worlds: number of worlds.
    :param object: "cube" or "soft_ball".
    :param domain_randomization: randomise the light, the camera pose, the table and floor
        grays and the image brightness at every reset (the study's ranges).
    :param config: physics, controller, camera and randomisation settings.
    :param num_threads: threads of the batch (None: 1 for one world, else all CPUs).
    :param render_pixels: render the grayscale image into the state after each step (turn off
        for state-only data collection; ``pixels`` is then all zeros).
    """

    kind: ClassVar[str] = "sim"

    def __init__(
        self,
        num_worlds: int,
        object: str = "cube",
        domain_randomization: bool = True,
        config: PandaSimConfig | None = None,
        num_threads: int | None = None,
        render_pixels: bool = True,
    ):
        if isinstance(num_worlds, bool) or not isinstance(num_worlds, (int, np.integer)):
            raise TypeError(f"num_worlds must be an int, got {type(num_worlds).__name__}")
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        if object not in OBJECTS:
            raise ValueError(f"object must be one of {sorted(OBJECTS)}, got {object!r}")
        if not isinstance(domain_randomization, (bool, np.bool_)):
            raise TypeError(
                f"domain_randomization must be a bool, got {type(domain_randomization).__name__}"
            )
        if config is not None and not isinstance(config, PandaSimConfig):
            raise TypeError(f"config must be a PandaSimConfig, got {type(config).__name__}")
        if num_threads is not None and (
            isinstance(num_threads, bool)
            or not isinstance(num_threads, (int, np.integer))
            or num_threads < 0
        ):
            raise ValueError(f"num_threads must be None or an int >= 0, got {num_threads!r}")
        self.config = config or PandaSimConfig()
        self.num_worlds = int(num_worlds)
        self.object = object
        self.object_spec = OBJECTS[object]
        self.domain_randomization = bool(domain_randomization)
        self.render_pixels_enabled = bool(render_pixels)
        self.n_substeps = self.config.n_substeps
        self.model = build_scene(object, self.config)
        threads = (1 if self.num_worlds == 1 else 0) if num_threads is None else int(num_threads)
        self.batch = mujoco.batch.Batch(self.model, self.num_worlds, nthread=threads)

        m = self.model
        self._arm_qpos_adr = np.array([m.joint(j).qposadr[0] for j in ARM_JOINTS])
        self._arm_joint_ids = np.array([m.joint(j).id for j in ARM_JOINTS])
        self._arm_lo = m.jnt_range[self._arm_joint_ids, 0]
        self._arm_hi = m.jnt_range[self._arm_joint_ids, 1]
        self._finger_qpos_adr = np.array([m.joint(j).qposadr[0] for j in FINGER_JOINTS])
        self._object_qpos_adr = int(m.joint("object").qposadr[0])
        self._arm_act = np.array([m.actuator(j).id for j in ARM_JOINTS])
        self._arm_dof = np.array([m.joint(j).dofadr[0] for j in ARM_JOINTS])
        self._impedance = self.config.arm_control == "impedance"
        if self._impedance:
            self._tcp_act = np.array([m.actuator(f"tcp_{axis}").id for axis in "xyz"])
            self._tcp_act_adr = m.actuator_actadr[self._tcp_act]
        self._gripper_act = int(m.actuator("gripper").id)
        self._gripper_act_adr = int(m.actuator_actadr[self._gripper_act])
        self._gripper_speed = float(m.actuator_ctrlrange[self._gripper_act, 1])
        self._tcp = int(m.site("tcp").id)
        self._goal_mocap = int(m.body("goal").mocapid[0])
        self._camera = int(m.camera(CAMERA.name).id)
        self._overview = int(m.camera("overview").id)
        self._light = int(m.light("key").id)
        self._table_geom = int(m.geom("table").id)
        self._backdrop_geoms = np.array([m.geom("floor").id, m.geom("wall").id])

        b = self.batch
        self._qpos = b.bind("qpos")
        self._qvel = b.bind("qvel")
        self._ctrl = b.bind("ctrl")
        self._act = b.bind("act")
        self._site_xpos = b.bind("site_xpos")
        self._site_xmat = b.bind("site_xmat")
        self._xanchor = b.bind("xanchor")
        self._xaxis = b.bind("xaxis")
        self._qfrc_bias = b.bind("qfrc_bias")
        self._qfrc_gravcomp = b.bind("qfrc_gravcomp")
        # Live view of the warning counters that mean MuJoCo reset a diverged world to the
        # model's default pose (arm straight up, object at its default place).
        first = int(mujoco.mjtWarning.mjWARN_BADQPOS)
        last = int(mujoco.mjtWarning.mjWARN_BADQACC)
        self._divergence_counts = b.warning[:, first : last + 1, 1]
        self._warnings_seen = self._divergence_counts.copy()
        self._readings = SimReadings(num_worlds, self.config.control_dt)
        # Per-world model fields that domain randomisation writes (and rendering copies).
        self._randomized: dict[str, np.ndarray] = {}
        if self.domain_randomization:
            for name in (
                "light_pos",
                "light_dir",
                "light_castshadow",
                "cam_pos",
                "cam_quat",
                "geom_rgba",
            ):
                self._randomized[name] = b.expand(name)
        self._base_cam_pos = m.cam_pos.copy()
        self._base_cam_quat = m.cam_quat.copy()

        n = self.num_worlds
        self._tip_target = np.tile(HOME_TIP_POS, (n, 1))
        self._gripper_closed = np.zeros(n)
        self._brightness = np.ones(n)
        self._pixels = np.zeros((n, self.config.image_size, self.config.image_size, 1), np.uint8)

        # Rendering: one render-only model/data; each world's fields are copied in per frame.
        self._render_model = copy.copy(self.model)
        self._render_data = mujoco.MjData(self._render_model)
        self._pixel_renderer: mujoco.Renderer | None = None
        self._pixel_rgb: np.ndarray | None = None
        self._overview_renderer: mujoco.Renderer | None = None
        self._overview_option = mujoco.MjvOption()
        self._overview_option.sitegroup[5] = 1
        self._closed = False
        self._has_state = False
        logger.debug(
            "PandaVectorBackend: %d worlds of %s, %d substeps of %g s, %d threads, DR %s",
            self.num_worlds,
            object,
            self.n_substeps,
            self.config.physics_dt,
            self.batch.nthread,
            self.domain_randomization,
        )

    # ------------------------------------------------------------------ VectorBackend API

    def reset_worlds(
        self,
        ids: np.ndarray,
        rngs: list[np.random.Generator],
        options: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Re-randomise and reset worlds ``ids`` (one generator each); return all worlds' state.

        ``options`` may hold ``object_pos`` ((len(ids), 3) or (3,)) and ``object_yaw`` to place
        the object instead of drawing its pose (the draws are still made, so the generators
        advance alike).
        """
        self._check_open()
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(rngs) != len(ids):
            raise ValueError(f"reset_worlds got {len(ids)} ids but {len(rngs)} generators")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_worlds):
            raise ValueError(f"world ids must be in [0, {self.num_worlds}), got {ids.tolist()}")
        options = dict(options or {})
        unknown = set(options) - {"object_pos", "object_yaw"}
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; expected 'object_pos', 'object_yaw'"
            )
        placed_pos = placed_yaw = None
        if "object_pos" in options:
            placed_pos = _option_rows("object_pos", options["object_pos"], len(ids), 3)
        if "object_yaw" in options:
            placed_yaw = _option_rows("object_yaw", options["object_yaw"], len(ids), None)
        order = np.argsort(ids)
        ids, rngs = ids[order], [rngs[i] for i in order]
        if ids.size == 0:
            return self._state()
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        cfg = self.config
        half = self.object_spec.size / 2
        for k, (world, rng) in enumerate(zip(ids, rngs, strict=True)):
            xy = rng.uniform(cfg.object_xy_low, cfg.object_xy_high)
            yaw = rng.uniform(-cfg.object_yaw_range, cfg.object_yaw_range)
            pos = np.array([xy[0], xy[1], half]) if placed_pos is None else placed_pos[order[k]]
            if placed_yaw is not None:
                yaw = float(placed_yaw[order[k]])
            self._set_world_state(int(world), pos, yaw)
            # Drawn with randomisation off too: the generator then advances alike, so the task's
            # goal drawn after the reset does not depend on the switch.
            self._randomize(int(world), rng)
        self.batch.forward(ids, stage=mujoco.mjtStage.mjSTAGE_VEL)
        self._warnings_seen[ids] = self._divergence_counts[ids]
        self._readings.reset(ids)
        self._has_state = True
        if self.render_pixels_enabled:
            for world in ids:
                self._pixels[world] = self.render_pixels(int(world))
        return self._state()

    def apply(self, command: Batch) -> Batch:
        """Track ``command`` for one control period in every world; return all worlds' state."""
        self._check_open()
        if not self._has_state:
            raise RuntimeError("reset_worlds() must reset every world before apply()")
        target = np.asarray(command["tip_target"], dtype=np.float64)
        closed = np.asarray(command["gripper_closed"], dtype=np.float64).reshape(-1)
        n = self.num_worlds
        if target.shape != (n, 3):
            raise ValueError(f"command['tip_target'] must have shape ({n}, 3), got {target.shape}")
        if closed.shape != (n,):
            raise ValueError(
                f"command['gripper_closed'] must have shape ({n},), got {closed.shape}"
            )
        if not (np.isfinite(target).all() and np.isfinite(closed).all()):
            raise ValueError("command contains NaN or infinite values")
        self._tip_target[:] = target
        closed = (closed > 0.5).astype(np.float64)
        # A new gripper command starts moving from the current width, as the real hand does.
        switched = closed != self._gripper_closed
        if switched.any():
            opening = self._qpos[:, self._finger_qpos_adr].sum(axis=1)
            self._act[switched, self._gripper_act_adr] = np.clip(opening[switched], 0, GRIPPER_OPEN)
        self._gripper_closed[:] = closed
        if self._impedance:
            self._ctrl[:, self._tcp_act] = target
            self._ctrl[:, self._arm_act] = self.joint_torques()
        else:
            self._ctrl[:, self._arm_act] = self.joint_targets(target)
        self._ctrl[:, self._gripper_act] = np.where(
            closed > 0.5, -self._gripper_speed, self._gripper_speed
        )
        self.batch.step(nstep=self.n_substeps, stage=mujoco.mjtStage.mjSTAGE_VEL)
        self._readings.advance()
        self._check_divergence()
        if self.render_pixels_enabled:
            for world in range(n):
                self._pixels[world] = self.render_pixels(world)
        return self._state()

    def render_world(
        self, world: int, task_state: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """An RGB frame (H, W, 3) of world ``world`` from the overview camera.

        ``task_state["goal"]`` (3,), if given, is drawn as a translucent green ball (only in
        this view).
        """
        goal = None if task_state is None else task_state.get("goal")
        self._check_open()
        if self._overview_renderer is None:
            height, width = self.config.render_size
            # Samples, shadow map and tessellation are read when the renderer's context is made.
            quality = self._render_model.vis.quality
            quality.offsamples = self.config.overview_samples
            quality.shadowsize = self.config.overview_shadow_size
            quality.numslices, quality.numstacks = self.config.overview_tessellation
            try:
                self._overview_renderer = _renderer(self._render_model, height, width)
            finally:
                quality.offsamples = self.config.pixel_samples
                quality.shadowsize = self.config.pixel_shadow_size
                quality.numslices, quality.numstacks = self.config.pixel_tessellation
        self._load_render_world(world, goal)
        self._overview_renderer.update_scene(
            self._render_data, camera=self._overview, scene_option=self._overview_option
        )
        return self._overview_renderer.render().copy()

    def privileged(self) -> dict[str, np.ndarray]:
        """Object pose and velocity of every world (the real robot gets them from a marker)."""
        adr = self._object_qpos_adr
        dof = int(self.model.joint("object").dofadr[0])
        return {
            "object_pos": self._qpos[:, adr : adr + 3].copy(),
            "object_quat": self._qpos[:, adr + 3 : adr + 7].copy(),
            "object_vel": self._qvel[:, dof : dof + 3].copy(),
            "tip_pos": self._site_xpos[:, self._tcp].copy(),
        }

    def close(self) -> None:
        """Free the renderers (their GL contexts)."""
        for renderer in (self._pixel_renderer, self._overview_renderer):
            if renderer is not None:
                renderer.close()
        self._pixel_renderer = self._overview_renderer = None
        self._closed = True

    # ------------------------------------------------------------------ controller

    def joint_targets(self, tip_target: np.ndarray) -> np.ndarray:
        """(N, 7) joint targets: one damped-least-squares IK step toward ``tip_target``.

        Acts on the current state of every world: position error (clipped to
        ``ik_max_error``) and the orientation error to :data:`TIP_DOWN_ROTATION` as a 6-D task,
        the pull toward :data:`HOME_QPOS` projected into the task's null space.
        """
        cfg = self.config
        q = self._qpos[:, self._arm_qpos_adr]
        tip = self._site_xpos[:, self._tcp]
        rot = self._site_xmat[:, self._tcp].reshape(-1, 3, 3)
        jac = self._tcp_jacobian()
        q_target = dls_step(
            q,
            tip,
            rot,
            jac,
            tip_target,
            TIP_DOWN_ROTATION,
            HOME_QPOS,
            damping=cfg.ik_damping,
            max_error=cfg.ik_max_error,
            nullspace_gain=cfg.ik_nullspace_gain,
            orientation_gain=cfg.ik_orientation_gain,
        )
        return np.clip(q_target, self._arm_lo, self._arm_hi)

    def joint_torques(self) -> np.ndarray:
        """(N, 7) joint torques the impedance controller adds to its Cartesian spring-damper.

        The real controller's null-space term, ``N (k_n (q_home - q) - 2 sqrt(k_n) dq)`` with
        ``N = I - J^T pinv(J^T)`` (pseudo-inverse damped by the robot module's
        ``IMPEDANCE_PINV_DAMPING``), and its Coriolis compensation (MuJoCo's bias force less the
        gravity compensation), from the current state of every world; the motors hold them for
        the control period while the Cartesian spring-damper acts at every physics step.
        """
        k = self.config.nullspace_stiffness
        q = self._qpos[:, self._arm_qpos_adr]
        dq = self._qvel[:, self._arm_dof]
        jac_t = self._tcp_jacobian().transpose(0, 2, 1)  # (N, 7, 6)
        u, singular, vt = np.linalg.svd(jac_t, full_matrices=False)
        damping = panda_robot.IMPEDANCE_PINV_DAMPING
        scale = singular / (singular**2 + damping**2)
        pinv = vt.transpose(0, 2, 1) @ (scale[:, :, None] * u.transpose(0, 2, 1))  # (N, 6, 7)
        projector = np.eye(7) - jac_t @ pinv
        pull = k * (HOME_QPOS - q) - 2.0 * math.sqrt(k) * dq
        nullspace = (projector @ pull[:, :, None])[:, :, 0]
        coriolis = self._qfrc_bias[:, self._arm_dof] - self._qfrc_gravcomp[:, self._arm_dof]
        return nullspace + coriolis

    def _tcp_jacobian(self) -> np.ndarray:
        """(N, 6, 7) the TCP's Jacobian (linear rows, then angular) over the arm joints, from
        the joint anchors and axes MuJoCo computes."""
        tip = self._site_xpos[:, self._tcp]
        anchors = self._xanchor[:, self._arm_joint_ids]
        axes = self._xaxis[:, self._arm_joint_ids]
        jac_pos = np.cross(axes, tip[:, None, :] - anchors).transpose(0, 2, 1)  # (N, 3, 7)
        return np.concatenate([jac_pos, axes.transpose(0, 2, 1)], axis=1)

    # ------------------------------------------------------------------ rendering

    def render_pixels(self, world: int) -> np.ndarray:
        """The (S, S, 1) uint8 grayscale D455 image of world ``world`` at its current state.

        Rendered at ``pixel_supersample`` times S, then :func:`sim2online_envs.vision.policy_image`
        (the real camera's pipeline): grayscale, area-averaged down to S x S
        (``cv2.INTER_AREA``), scaled by the world's brightness factor. Every world is drawn
        alone, at the same place of one renderer's buffer, so a world's image does not depend on
        how many worlds the backend holds. (Drawing 64 worlds side by side into one buffer, read
        back once, changed one or two pixels in 2 or 3 of the 64 frames on llvmpipe, by up to 26
        gray levels: the viewport offset rounds differently; it saved about 10 % of the CPU
        there. See ``benchmarks/images.py``.)
        """
        self._check_open()
        size = self.config.image_size
        if self._pixel_renderer is None:
            render_size = size * self.config.pixel_supersample
            self._pixel_renderer = _renderer(self._render_model, render_size, render_size)
            self._pixel_rgb = np.empty((render_size, render_size, 3), np.uint8)
        self._load_render_world(world)
        self._pixel_renderer.update_scene(self._render_data, camera=self._camera)
        rgb = self._pixel_renderer.render(out=self._pixel_rgb)
        return policy_image(rgb, size, brightness=float(self._brightness[world]))

    def set_object_pose(self, world: int, pos: np.ndarray, quat: np.ndarray | None = None) -> Batch:
        """Teleport the object of one world at rest (tests, debugging); return the state."""
        self._check_open()
        adr = self._object_qpos_adr
        self._qpos[world, adr : adr + 3] = np.asarray(pos, float)
        if quat is not None:
            self._qpos[world, adr + 3 : adr + 7] = np.asarray(quat, float)
        dof = int(self.model.joint("object").dofadr[0])
        self._qvel[world, dof : dof + 6] = 0.0
        self.batch.forward(np.array([world]), stage=mujoco.mjtStage.mjSTAGE_VEL)
        if self.render_pixels_enabled:
            self._pixels[world] = self.render_pixels(world)
        return self._state()

    def set_arm_pose(self, world: int, arm_qpos: np.ndarray, opening: float | None = None) -> Batch:
        """Teleport the arm (joint angles, rad) and the fingers (``opening``, m) of one world at
        rest, the tip target and the controller's equilibrium on the tip (rendering a recorded
        pose, tests); return the state."""
        self._check_open()
        qpos = np.asarray(arm_qpos, dtype=np.float64)
        if qpos.shape != (7,) or not np.isfinite(qpos).all():
            raise ValueError(f"arm_qpos must be 7 finite joint angles, got {arm_qpos!r}")
        self._qpos[world, self._arm_qpos_adr] = np.clip(qpos, self._arm_lo, self._arm_hi)
        self._qvel[world, self._arm_dof] = 0.0
        if opening is not None:
            width = float(np.clip(opening, 0.0, GRIPPER_OPEN))
            self._qpos[world, self._finger_qpos_adr] = width / 2
            self._act[world, self._gripper_act_adr] = width
        self.batch.forward(np.array([world]), stage=mujoco.mjtStage.mjSTAGE_VEL)
        tip = self._site_xpos[world, self._tcp].copy()
        self._tip_target[world] = tip
        if self._impedance:
            self._ctrl[world, self._tcp_act] = tip
            filtered = self._tcp_act_adr >= 0
            self._act[world, self._tcp_act_adr[filtered]] = tip[filtered]
        else:
            self._ctrl[world, self._arm_act] = self._qpos[world, self._arm_qpos_adr]
        if self.render_pixels_enabled:
            self._pixels[world] = self.render_pixels(world)
        return self._state()

    @property
    def brightness(self) -> np.ndarray:
        """Each world's image brightness scale of the current episode."""
        return self._brightness.copy()

    # ------------------------------------------------------------------ internals

    def _set_world_state(self, world: int, object_pos: np.ndarray, yaw: float) -> None:
        qpos = self._qpos[world]
        qpos[self._arm_qpos_adr] = HOME_QPOS
        qpos[self._finger_qpos_adr] = GRIPPER_OPEN / 2
        adr = self._object_qpos_adr
        qpos[adr : adr + 3] = object_pos
        qpos[adr + 3 : adr + 7] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
        if self._impedance:
            self._ctrl[world, self._arm_act] = 0.0
            self._ctrl[world, self._tcp_act] = HOME_TIP_POS
            filtered = self._tcp_act_adr >= 0
            self._act[world, self._tcp_act_adr[filtered]] = HOME_TIP_POS[filtered]
        else:
            self._ctrl[world, self._arm_act] = HOME_QPOS
        self._ctrl[world, self._gripper_act] = self._gripper_speed
        self._act[world, self._gripper_act_adr] = GRIPPER_OPEN
        self._tip_target[world] = HOME_TIP_POS
        self._gripper_closed[world] = 0.0
        self._brightness[world] = 1.0

    def _randomize(self, world: int, rng: np.random.Generator) -> None:
        """Draw the world's light, camera, gray levels, brightness (fixed order); apply if
        enabled. The study's draws: the light's place in its box, its aim turned about a random
        axis, its shadows on or off; the camera shifted and turned; the table's gray."""
        cfg = self.config
        light_pos = rng.uniform(cfg.light_pos_low, cfg.light_pos_high)
        light_turn = _random_turn(rng, cfg.light_dir_jitter)
        shadows = rng.uniform() < cfg.light_shadow_probability
        cam_offset = rng.uniform(-cfg.camera_pos_jitter, cfg.camera_pos_jitter, 3)
        cam_turn = _random_turn(rng, cfg.camera_rot_jitter)
        table_gray = rng.uniform(*cfg.table_gray_range)
        floor_gray = rng.uniform(*cfg.floor_gray_range)
        brightness = rng.uniform(*cfg.brightness_range)
        if not self.domain_randomization:
            return
        self._brightness[world] = brightness

        light = self._light
        aim = _unit(HOME_TIP_POS - light_pos)
        light_dir = np.zeros(3)
        mujoco.mju_rotVecQuat(light_dir, aim, light_turn)
        self._randomized["light_pos"][world, light] = light_pos
        self._randomized["light_dir"][world, light] = light_dir
        self._randomized["light_castshadow"][world, light] = shadows
        cam = self._camera
        self._randomized["cam_pos"][world, cam] = self._base_cam_pos[cam] + cam_offset
        quat = np.zeros(4)
        mujoco.mju_mulQuat(quat, cam_turn, self._base_cam_quat[cam])
        self._randomized["cam_quat"][world, cam] = quat
        rgba = self._randomized["geom_rgba"]
        rgba[world, self._table_geom, :3] = table_gray
        rgba[world, self._backdrop_geoms, :3] = floor_gray

    def _load_render_world(self, world: int, goal: np.ndarray | None = None) -> None:
        """Copy world ``world``'s model fields and configuration into the render model/data.

        The goal marker (a mocap body that only carries a site) goes to ``goal``, or out of
        sight below the floor.
        """
        if not self._has_state:
            raise RuntimeError("reset_worlds() must run before rendering")
        rm, rd = self._render_model, self._render_data
        for name, values in self._randomized.items():
            getattr(rm, name)[:] = values[world]
        rd.qpos[:] = self._qpos[world]
        rd.mocap_pos[self._goal_mocap] = (0.0, 0.0, -5.0) if goal is None else goal
        mujoco.mj_kinematics(rm, rd)
        mujoco.mj_camlight(rm, rd)

    def _state(self) -> Batch:
        qpos = self._qpos
        adr = self._object_qpos_adr
        fingers = self._finger_qpos_adr
        return {
            "pixels": self._pixels.copy(),
            "tip_pos": self._site_xpos[:, self._tcp].copy(),
            "tip_target": self._tip_target.copy(),
            "gripper_opening": qpos[:, fingers[0]] + qpos[:, fingers[1]],
            "gripper_closed": self._gripper_closed.copy(),
            "gripper_holding": self._holding(),
            "arm_qpos": qpos[:, self._arm_qpos_adr].copy(),
            "object_pos": qpos[:, adr : adr + 3].copy(),
            "object_quat": qpos[:, adr + 3 : adr + 7].copy(),
            "object_size": np.full(self.num_worlds, self.object_spec.size),
            **self._readings.keys(),
        }

    def _holding(self) -> np.ndarray:
        """(N,) 1.0 where the closed gripper squeezes: its width target runs 1 cm (25 N) ahead."""
        opening = self._qpos[:, self._finger_qpos_adr].sum(axis=1)
        lag = opening - self._act[:, self._gripper_act_adr]
        return ((self._gripper_closed > 0.5) & (lag > HOLD_LAG)).astype(np.float64)

    def _check_divergence(self) -> None:
        """Log the worlds that MuJoCo reset after a numerical instability in the last step."""
        counts = self._divergence_counts
        diverged = (counts != self._warnings_seen).any(axis=1)
        if diverged.any():
            logger.warning(
                "MuJoCo reset the physics of Panda worlds %s after a numerical instability (NaN "
                "or huge qpos, qvel or qacc): their state jumped to the model's default pose; "
                "their readings are invalid until they are reset",
                np.flatnonzero(diverged).tolist(),
            )
            self._readings.diverged[diverged] = True
            self._warnings_seen = counts.copy()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this PandaVectorBackend is closed")
