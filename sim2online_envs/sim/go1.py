"""The simulated Unitree Go1: N domain-randomised worlds on ``mujoco.batch.Batch``.

:class:`Go1VectorBackend` is the only Go1 simulator: the single env runs it with one world
``make_vec`` with many, so both share every
line of randomisation, stepping and state extraction. ``Batch`` steps each world with the same
``mj_step`` as a plain ``MjData`` loop, bit for bit, and with one world it is as fast as that loop
(measured within 1 %, and a persistent one-world batch gets the sensors after each control period
for free), so no separate single-world code path is needed.

Per reset, each world draws from its own generator, in this order: floor friction, link mass
scales, trunk added mass, joint friction-loss scales, joint armature scales, the trunk's
centre-of-mass offset (all six only with ``domain_randomization``), then the initial heading,
joint-angle noise and base-velocity noise.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import math
import os
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

import mujoco
import mujoco.batch
import numpy as np

from sim2online_envs.core import Backend, Batch, SimReadings
from sim2online_envs.robots import go1 as go1_robot
from sim2online_envs.robots.go1 import (
    FOOT_NAMES,
    HOME_JOINT_POS,
    JOINT_LOWER,
    JOINT_NAMES,
    JOINT_UPPER,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TIMESTEP",
    "Go1DomainRandomization",
    "Go1SimConfig",
    "Go1VectorBackend",
    "check_model",
    "load_model",
]

#: Size of the MjData arena; a fallen Go1 uses about 45 kB of it.
_ARENA_BYTES = 512 * 1024


#: Physics step [s] (MuJoCo Playground's Go1 joystick sim_dt).
DEFAULT_TIMESTEP = 0.004


def load_model(timestep: float = DEFAULT_TIMESTEP) -> mujoco.MjModel:
    """The Go1 MJCF (``assets/go1.xml``) compiled, with the robot's facts written into it.

    The MJCF holds the bodies, geoms, inertias and sensors; the joint ranges (the position
    actuators inherit them as their ctrlrange), the joint friction loss and armature, the PD
    gains, the torque limits and the home keyframe come from :mod:`sim2online_envs.robots.go1`
    (as MuJoCo Playground's
    Go1 base writes Kp and Kd into the model), so the XML is no second source of them. The
    compiled model is then checked against the robot module, its leg kinematics included.

    :param timestep: physics step [s].
    """
    if not (isinstance(timestep, (int, float)) and math.isfinite(timestep) and timestep > 0):
        raise ValueError(f"timestep must be a positive number of seconds, got {timestep!r}")
    xml = importlib.resources.files("sim2online_envs").joinpath("assets/go1.xml").read_text()
    spec = mujoco.MjSpec.from_string(xml)
    spec.memory = _ARENA_BYTES
    spec.option.timestep = float(timestep)
    _write_robot_facts(spec)
    model = spec.compile()
    check_model(model)
    return model


def _write_robot_facts(spec: mujoco.MjSpec) -> None:
    """Joint ranges, friction loss and armature, PD gains, torque limits and the home keyframe,
    from the robot module."""
    for index, name in enumerate(JOINT_NAMES):
        joint = spec.joint(name)
        joint.range = [JOINT_LOWER[index], JOINT_UPPER[index]]
        joint.frictionloss = go1_robot.JOINT_FRICTIONLOSS[index]
        joint.armature = go1_robot.JOINT_ARMATURE[index]
        # actuator i drives joint i (the unitree_legged_sdk's motor order, checked below)
        actuator = spec.actuator(name.removesuffix("_joint"))
        # a position servo: force = Kp (target - q) - Kd qdot, clamped to the torque limit
        actuator.gainprm[0] = go1_robot.KP
        actuator.biasprm[:3] = [0.0, -go1_robot.KP, -go1_robot.KD]
        limit = go1_robot.TORQUE_LIMITS[index]
        actuator.forcerange = [-limit, limit]
        actuator.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    home = spec.key("home")
    home.qpos = [0.0, 0.0, go1_robot.HOME_TRUNK_HEIGHT, 1.0, 0.0, 0.0, 0.0, *HOME_JOINT_POS]
    home.ctrl = list(HOME_JOINT_POS)


def check_model(model: mujoco.MjModel) -> None:
    """Raise a RuntimeError where the compiled model disagrees with the robot module.

    Joint and actuator order, joint ranges, friction loss and armature, actuator ctrlrange
    (inherited from the joints), PD gains, torque limits, home keyframe, and the leg kinematics
    the safety limits and the real robot's height estimate use (hip offsets, thigh offset,
    thigh and calf lengths, foot radius).
    """
    names = tuple(model.joint(i).name for i in range(1, model.njnt))
    if names != JOINT_NAMES:
        raise RuntimeError(f"go1.xml joints {names} differ from the robot's {JOINT_NAMES}")
    driven = tuple(model.joint(int(j)).name for j in model.actuator_trnid[:, 0])
    if driven != JOINT_NAMES:
        raise RuntimeError(f"go1.xml actuators drive {driven}, not the robot's {JOINT_NAMES}")
    home = model.key("home")
    kp, kd = go1_robot.KP, go1_robot.KD
    legs = [model.body(f"{leg}_hip").id for leg in FOOT_NAMES]
    thighs = [model.body(f"{leg}_thigh").id for leg in FOOT_NAMES]
    calves = [model.body(f"{leg}_calf").id for leg in FOOT_NAMES]
    feet = [model.geom(f"{leg}_foot").id for leg in FOOT_NAMES]
    thigh_y = np.sign(go1_robot.HIP_OFFSETS[:, 1]) * go1_robot.THIGH_OFFSET
    checks = {
        "home keyframe joints": (home.qpos[7:], HOME_JOINT_POS),
        "home keyframe trunk height": (home.qpos[2], go1_robot.HOME_TRUNK_HEIGHT),
        "home keyframe ctrl": (home.ctrl, HOME_JOINT_POS),
        "joint lower limits": (model.jnt_range[1:, 0], JOINT_LOWER),
        "joint upper limits": (model.jnt_range[1:, 1], JOINT_UPPER),
        "joint limited": (model.jnt_limited[1:], np.ones(len(JOINT_NAMES))),
        "joint friction loss": (model.dof_frictionloss[6:], go1_robot.JOINT_FRICTIONLOSS),
        "joint armature": (model.dof_armature[6:], go1_robot.JOINT_ARMATURE),
        "Kp": (model.actuator_gainprm[:, 0], np.full(len(JOINT_NAMES), kp)),
        "Kp, Kd bias": (model.actuator_biasprm[:, :3], np.tile([0.0, -kp, -kd], (12, 1))),
        "torque limits": (
            model.actuator_forcerange,
            np.stack([-go1_robot.TORQUE_LIMITS, go1_robot.TORQUE_LIMITS], 1),
        ),
        "hip offsets": (model.body_pos[legs], go1_robot.HIP_OFFSETS),
        "thigh offsets": (model.body_pos[thighs], np.stack([0 * thigh_y, thigh_y, 0 * thigh_y], 1)),
        "thigh lengths": (model.body_pos[calves, 2], np.full(4, -go1_robot.THIGH_LENGTH)),
        "calf lengths": (model.geom_pos[feet, 2], np.full(4, -go1_robot.CALF_LENGTH)),
        "foot radius": (model.geom_size[feet, 0], np.full(4, go1_robot.FOOT_RADIUS)),
    }
    for what, (model_value, robot_value) in checks.items():
        if not np.array_equal(np.asarray(model_value, dtype=np.float64), robot_value):
            raise RuntimeError(
                f"go1.xml {what} {model_value} differ from sim2online_envs.robots.go1's "
                f"{robot_value}"
            )
    # MuJoCo inherits the ctrlrange as middle -+ half-range, which may round in the last bit
    ctrlrange = np.stack([JOINT_LOWER, JOINT_UPPER], 1)
    if not np.allclose(model.actuator_ctrlrange, ctrlrange, rtol=0.0, atol=1e-12):
        raise RuntimeError(
            f"go1.xml actuator ctrlrange {model.actuator_ctrlrange} differ from the joint limits "
            f"of sim2online_envs.robots.go1 {ctrlrange}"
        )
    if not (model.actuator_ctrllimited.all() and model.actuator_forcelimited.all()):
        raise RuntimeError("go1.xml actuators must limit their ctrl and force")


def _check_offscreen_gl() -> None:
    """Fail clearly, rather than abort in OpenGL, where mujoco cannot render headless."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        backend = getattr(getattr(mujoco, "GLContext", None), "__module__", "")
        if backend.startswith("mujoco.glfw"):
            raise RuntimeError(
                "mujoco was imported before sim2online_envs and chose GLFW, which needs a display: "
                "import sim2online_envs first, or set MUJOCO_GL=egl (or osmesa) in the environment"
            )


@dataclasses.dataclass(frozen=True)
class Go1DomainRandomization:
    """Ranges of the per-reset domain randomisation: MuJoCo Playground's Go1 ranges
    (``mujoco_playground/_src/locomotion/go1/randomize.py``, ``domain_randomize``).

    Each pair is (low, high) of a uniform draw; scales multiply the model's nominal values.
    ``trunk_com_offset`` is added to each coordinate of the trunk's centre of mass (its body
    frame), one draw per axis.
    """

    floor_friction: tuple[float, float] = (0.4, 1.0)
    link_mass_scale: tuple[float, float] = (0.9, 1.1)
    trunk_added_mass: tuple[float, float] = (-1.0, 1.0)  # kg
    joint_frictionloss_scale: tuple[float, float] = (0.9, 1.1)
    joint_armature_scale: tuple[float, float] = (1.0, 1.05)
    trunk_com_offset: tuple[float, float] = (-0.05, 0.05)  # m

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            low, high = getattr(self, field.name)
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(
                    f"Go1DomainRandomization.{field.name} must be (low, high) with low <= high, "
                    f"got {(low, high)}"
                )


@dataclasses.dataclass(frozen=True)
class Go1SimConfig:
    """Physics, reset and rendering settings of the Go1 simulator.

    :param timestep: physics step [s]; the control period must be a whole number of them.
    :param randomization: the domain-randomisation ranges.
    :param reset_joint_noise: half-width [rad] of uniform noise on the home joint angles.
    :param reset_base_velocity_noise: half-width of uniform noise on the trunk's linear [m/s]
        and angular [rad/s] velocity.
    :param reset_random_heading: start at a uniformly random yaw (commands are body-frame, so
        the heading only matters for what the world sees).
    :param render_height: rendered frame height [px].
    :param render_width: rendered frame width [px].
    """

    timestep: float = DEFAULT_TIMESTEP
    randomization: Go1DomainRandomization = dataclasses.field(
        default_factory=Go1DomainRandomization
    )
    reset_joint_noise: float = 0.05
    reset_base_velocity_noise: float = 0.1
    reset_random_heading: bool = True
    render_height: int = 240
    render_width: int = 320

    def __post_init__(self) -> None:
        for name in ("reset_joint_noise", "reset_base_velocity_noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Go1SimConfig.{name} must be a number >= 0, got {value!r}")
        for name in ("render_height", "render_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Go1SimConfig.{name} must be an int >= 1, got {value!r}")


class Go1VectorBackend(Backend):
    """``num_worlds`` simulated Go1s on a flat floor, stepped together on a thread pool.

    :param num_worlds: number of worlds.
    :param control_dt: control period [s]; :meth:`apply` runs ``n_substeps = round(control_dt /
        timestep)`` physics steps, which must divide it exactly.
    :param domain_randomization: re-draw floor friction, link masses, joint friction loss,
        armature and the trunk's centre of mass at every reset (ranges in
        :class:`Go1DomainRandomization`).
    :param friction: set the floor's sliding friction coefficient to this value in every world
        (sim-to-sim mismatch, e.g. 0.3 for a slippery floor); with ``domain_randomization`` the
        other parameters are still randomised, and the friction draw is still made and ignored
        so that a seed gives the same worlds otherwise.
    :param num_threads: threads of the batch (None: 1 for one world, else all CPUs).
    :param persistent: keep one ``MjData`` per world, so that the sensor stage computed after
        each control period is reused by the next step (None: for a single world only, where
        it makes a step about 10 % faster; with many worlds it saves nothing measurable and
        costs about 0.3 MB per world). Results are bit-identical either way.
    :param config: physics, reset and rendering settings.

    State returned by :meth:`reset_worlds` and :meth:`apply`: the keys listed in
    :mod:`sim2online_envs.robots.go1` (``base_rot`` is the IMU site's ``site_xmat``), plus
    ``base_pos`` (N, 3) [m], ``qpos`` (N, 19) and ``qvel`` (N, 18), all copies.
    Commands: ``{"joint_targets": (N, 12)}`` position targets [rad] for the PD actuators.
    """

    kind: ClassVar[str] = "sim"

    def __init__(
        self,
        num_worlds: int = 1,
        *,
        control_dt: float = go1_robot.CONTROL_DT,
        domain_randomization: bool = True,
        friction: float | None = None,
        num_threads: int | None = None,
        persistent: bool | None = None,
        config: Go1SimConfig | None = None,
    ):
        if isinstance(num_worlds, bool) or not isinstance(num_worlds, (int, np.integer)):
            raise TypeError(f"num_worlds must be an int, got {type(num_worlds).__name__}")
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be at least 1, got {num_worlds}")
        if friction is not None and not (
            isinstance(friction, (int, float, np.floating))
            and not isinstance(friction, bool)
            and math.isfinite(friction)
            and friction > 0
        ):
            raise ValueError(f"friction must be a positive number or None, got {friction!r}")
        if num_threads is not None and (
            isinstance(num_threads, bool)
            or not isinstance(num_threads, (int, np.integer))
            or num_threads < 0
        ):
            raise ValueError(f"num_threads must be None or an int >= 0, got {num_threads!r}")
        self.config = config if config is not None else Go1SimConfig()
        if not isinstance(self.config, Go1SimConfig):
            raise TypeError(f"config must be a Go1SimConfig, got {type(self.config).__name__}")
        self.num_worlds = int(num_worlds)
        self.domain_randomization = bool(domain_randomization)
        self.friction = None if friction is None else float(friction)
        self.model = load_model(self.config.timestep)
        self.control_dt = float(control_dt)
        self.n_substeps = round(self.control_dt / self.model.opt.timestep)
        if self.n_substeps < 1 or not math.isclose(
            self.n_substeps * self.model.opt.timestep, self.control_dt, rel_tol=1e-9, abs_tol=1e-12
        ):
            raise ValueError(
                f"control_dt {self.control_dt} s is not a whole number of physics steps of "
                f"{self.model.opt.timestep} s"
            )
        if num_threads is None:
            num_threads = 1 if self.num_worlds == 1 else 0
        if persistent is None:
            persistent = self.num_worlds == 1
        self.batch = mujoco.batch.Batch(
            self.model, self.num_worlds, int(num_threads), persistent=bool(persistent)
        )

        model = self.model
        self._home_key = model.key("home").id
        self._floor_geom = model.geom("floor").id
        self._trunk_body = model.body("trunk").id
        self._foot_radius = float(model.geom(f"{FOOT_NAMES[0]}_foot").size[0])
        self._nominal_mass = model.body_mass.copy()
        self._nominal_inertia = model.body_inertia.copy()
        self._nominal_frictionloss = model.dof_frictionloss.copy()
        self._nominal_armature = model.dof_armature.copy()
        self._nominal_trunk_com = model.body_ipos[self._trunk_body].copy()
        self._nominal_friction = model.geom_friction[self._floor_geom].copy()

        # live views of the batch: state rows (writable) and outputs (refreshed by every call)
        self._qpos = self.batch.bind("qpos")
        self._qvel = self.batch.bind("qvel")
        self._ctrl = self.batch.bind("ctrl")
        self._xfrc = self.batch.bind("xfrc_applied")
        self._sensordata = self.batch.bind("sensordata")
        self._actuator_force = self.batch.bind("actuator_force")
        self._site_xmat = self.batch.bind("site_xmat")
        self._imu_site = model.site("imu").id
        self._sensor_slices = {
            name: self._sensor_block([name])
            for name in ("gyro", "accelerometer", "local_linvel", "orientation", "position")
        }
        self._foot_pos = self._sensor_block([f"{leg}_foot_pos" for leg in FOOT_NAMES])
        self._foot_vel = self._sensor_block([f"{leg}_foot_vel" for leg in FOOT_NAMES])
        # the feet's contact sensors then the trunk's: one comparison gives all five
        self._contacts = self._sensor_block(
            [*(f"{leg}_foot_contact" for leg in FOOT_NAMES), "trunk_contact"]
        )
        self._stage_vel = int(mujoco.mjtStage.mjSTAGE_VEL)
        # live view of the warning counters that mean MuJoCo reset a diverged simulation
        first = int(mujoco.mjtWarning.mjWARN_BADQPOS)
        last = int(mujoco.mjtWarning.mjWARN_BADQACC)
        self._divergence_counts = self.batch.warning[:, first : last + 1, 1]
        self._warnings_seen = self._divergence_counts.copy()
        self._readings = SimReadings(self.num_worlds, self.n_substeps * self.model.opt.timestep)
        self._warnings_seen_bytes = self._warnings_seen.tobytes()

        self._renderer: mujoco.Renderer | None = None
        self._render_model: mujoco.MjModel | None = None
        self._render_data: mujoco.MjData | None = None

    def _sensor_block(self, names: list[str]) -> slice:
        """The sensordata slice of consecutive sensors ``names`` (laid out so in go1.xml)."""
        start = int(self.model.sensor(names[0]).adr[0])
        stop = start
        for name in names:
            sensor = self.model.sensor(name)
            if int(sensor.adr[0]) != stop:
                raise RuntimeError(f"go1.xml: sensor {name!r} must follow {names[0]!r} directly")
            stop += int(sensor.dim[0])
        return slice(start, stop)

    # -- resets ------------------------------------------------------------------------------------

    def _draw_world(self, rng: np.random.Generator) -> dict[str, Any]:
        """All random numbers of one world's reset, in the documented order."""
        draws: dict[str, Any] = {}
        nbody = self.model.nbody - 1  # every body but the world
        njoint = len(JOINT_NAMES)
        if self.domain_randomization:
            ranges = self.config.randomization
            draws["floor_friction"] = rng.uniform(*ranges.floor_friction)
            draws["mass_scale"] = rng.uniform(*ranges.link_mass_scale, size=nbody)
            draws["trunk_added_mass"] = rng.uniform(*ranges.trunk_added_mass)
            draws["frictionloss_scale"] = rng.uniform(*ranges.joint_frictionloss_scale, size=njoint)
            draws["armature_scale"] = rng.uniform(*ranges.joint_armature_scale, size=njoint)
            draws["trunk_com_offset"] = rng.uniform(*ranges.trunk_com_offset, size=3)
        cfg = self.config
        draws["yaw"] = rng.uniform(-math.pi, math.pi) if cfg.reset_random_heading else 0.0
        draws["joint_noise"] = rng.uniform(-cfg.reset_joint_noise, cfg.reset_joint_noise, njoint)
        draws["base_velocity"] = rng.uniform(
            -cfg.reset_base_velocity_noise, cfg.reset_base_velocity_noise, 6
        )
        return draws

    def _randomize(self, ids: np.ndarray, draws: list[dict[str, Any]]) -> None:
        """Write the worlds' physical parameters (nominal values when not randomising)."""
        if not self.domain_randomization and self.friction is None:
            return  # every world keeps the model's nominal values: nothing to write
        friction = self.batch.expand("geom_friction")
        for world, world_draws in zip(ids, draws, strict=True):
            value = self._nominal_friction.copy()
            if "floor_friction" in world_draws:
                value[0] = world_draws["floor_friction"]
            if self.friction is not None:
                value[0] = self.friction
            friction[world, self._floor_geom] = value
        if not self.domain_randomization:
            return
        mass = self.batch.expand("body_mass")
        inertia = self.batch.expand("body_inertia")
        frictionloss = self.batch.expand("dof_frictionloss")
        armature = self.batch.expand("dof_armature")
        com = self.batch.expand("body_ipos")
        for world, world_draws in zip(ids, draws, strict=True):
            scale = np.concatenate([[1.0], world_draws["mass_scale"]])
            new_mass = self._nominal_mass * scale
            new_mass[self._trunk_body] += world_draws["trunk_added_mass"]
            # inertia follows the mass (same shape, denser or lighter material)
            ratio = np.divide(
                new_mass,
                self._nominal_mass,
                out=np.ones_like(new_mass),
                where=self._nominal_mass > 0,
            )
            mass[world] = new_mass
            inertia[world] = self._nominal_inertia * ratio[:, None]
            frictionloss[world, 6:] = (
                self._nominal_frictionloss[6:] * world_draws["frictionloss_scale"]
            )
            armature[world, 6:] = self._nominal_armature[6:] * world_draws["armature_scale"]
            offset = world_draws["trunk_com_offset"]
            com[world, self._trunk_body] = self._nominal_trunk_com + offset
        # masses, centres of mass and armature feed mj_setConst's derived constants
        self.batch.set_const(ids)

    def reset_worlds(
        self,
        ids: np.ndarray,
        rngs: list[np.random.Generator],
        options: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Re-randomise and reset worlds ``ids`` at the home pose with small noise.

        ``options`` may hold ``"qpos"`` (19,) or (len(ids), 19) and/or ``"qvel"`` (18,) or
        (len(ids), 18) to start from an exact state instead (the random draws are still made).
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or len(ids) != len(rngs):
            raise ValueError(f"need one generator per world id, got {len(rngs)} for ids {ids}")
        if len(ids) and (ids.min() < 0 or ids.max() >= self.num_worlds):
            raise ValueError(f"world ids must be in [0, {self.num_worlds}), got {ids}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"world ids must be unique, got {ids}")
        options = dict(options or {})
        unknown = set(options) - {"qpos", "qvel"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; known: 'qpos', 'qvel'")
        order = np.argsort(ids)  # the batch wants sorted ids
        ids, rngs = ids[order], [rngs[i] for i in order]
        draws = [self._draw_world(rng) for rng in rngs]
        if len(ids) == 0:
            return self._read_state()
        self._randomize(ids, draws)

        batch = self.batch
        batch.reset(ids, keyframe=self._home_key, stage=mujoco.mjtStage.mjSTAGE_NONE)
        qpos = self._qpos[ids]
        qvel = self._qvel[ids]
        for row, world_draws in enumerate(draws):
            half_yaw = 0.5 * world_draws["yaw"]
            qpos[row, 3:7] = (math.cos(half_yaw), 0.0, 0.0, math.sin(half_yaw))
            qpos[row, 7:] = np.clip(
                HOME_JOINT_POS + world_draws["joint_noise"], JOINT_LOWER, JOINT_UPPER
            )
            qvel[row, :6] = world_draws["base_velocity"]
        self._qpos[ids] = qpos
        self._qvel[ids] = qvel
        self._ctrl[ids] = HOME_JOINT_POS
        self._xfrc[ids] = 0.0
        exact = {key: self._option_rows(options, key, len(ids)) for key in options}
        if "qpos" in exact:
            self._qpos[ids] = exact["qpos"]
        if "qvel" in exact:
            self._qvel[ids] = exact["qvel"]
        if "qpos" not in exact:
            # put the lowest foot on the floor, whatever the joint noise did to the legs
            batch.forward(ids, stage=mujoco.mjtStage.mjSTAGE_POS)
            foot_z = self._sensordata[ids, self._foot_pos].reshape(len(ids), 4, 3)[:, :, 2]
            self._qpos[ids, 2] -= foot_z.min(axis=1) - self._foot_radius
        batch.forward(ids, stage=mujoco.mjtStage.mjSTAGE_ACC)
        self._warnings_seen[ids] = self._divergence_counts[ids]
        self._warnings_seen_bytes = self._warnings_seen.tobytes()
        self._readings.reset(ids)
        return self._read_state()

    def _option_rows(self, options: Mapping[str, Any], key: str, count: int) -> np.ndarray:
        size = self.model.nq if key == "qpos" else self.model.nv
        value = np.asarray(options[key], dtype=np.float64)
        if value.shape == (size,):
            value = np.broadcast_to(value, (count, size))
        if value.shape != (count, size) or not np.all(np.isfinite(value)):
            raise ValueError(
                f"options[{key!r}] must be finite, of shape ({size},) or ({count}, {size}), "
                f"got shape {value.shape}"
            )
        if key == "qpos":
            norms = np.linalg.norm(value[:, 3:7], axis=1)
            if np.any(norms < 1e-9):
                raise ValueError("options['qpos'][3:7] is the base quaternion and must be non-zero")
            value = value.copy()
            value[:, 3:7] /= norms[:, None]
        return value

    # -- stepping ------------------------------------------------------------------------------

    def apply(self, command: Batch) -> Batch:
        """Track ``command["joint_targets"]`` (N, 12) [rad] for one control period."""
        targets = np.asarray(command["joint_targets"], dtype=np.float64)
        if targets.shape != (self.num_worlds, len(JOINT_NAMES)):
            raise ValueError(
                f"joint_targets must have shape ({self.num_worlds}, {len(JOINT_NAMES)}), "
                f"got {targets.shape}"
            )
        # MuJoCo clamps the targets to the actuators' ctrlrange, the joint ranges
        self._ctrl[...] = targets
        # stage VEL: sensors and site positions describe the state after the last substep
        self.batch.step(nstep=self.n_substeps, stage=self._stage_vel)
        self._readings.advance()
        self._check_warnings()
        return self._read_state()

    def _check_warnings(self) -> None:
        counts = self._divergence_counts
        if counts.tobytes() != self._warnings_seen_bytes:  # one memcmp, whatever the worlds
            worlds = np.flatnonzero((counts != self._warnings_seen).any(axis=1))
            logger.warning(
                "MuJoCo reset the physics of worlds %s after a numerical instability (NaN or huge "
                "qpos, qvel or qacc); their readings are invalid until they are reset",
                worlds.tolist(),
            )
            self._readings.diverged[worlds] = True
            self._warnings_seen = counts.copy()
            self._warnings_seen_bytes = self._warnings_seen.tobytes()

    def _read_state(self) -> Batch:
        sensors = self._sensordata.copy()
        qpos = self._qpos.copy()
        qvel = self._qvel.copy()
        contacts = sensors[:, self._contacts] > 0.0
        count = self.num_worlds
        s = self._sensor_slices
        state = {
            "qpos": qpos,
            "qvel": qvel,
            "joint_pos": qpos[:, 7:],
            "joint_vel": qvel[:, 6:],
            "torque": self._actuator_force.copy(),
            "base_quat": sensors[:, s["orientation"]],
            "base_rot": self._site_xmat[:, self._imu_site].reshape(count, 3, 3).copy(),
            "gyro": sensors[:, s["gyro"]],
            "local_linvel": sensors[:, s["local_linvel"]],
            "accelerometer": sensors[:, s["accelerometer"]],
            "base_pos": sensors[:, s["position"]],
            "foot_pos": sensors[:, self._foot_pos].reshape(count, 4, 3),
            "foot_vel": sensors[:, self._foot_vel].reshape(count, 4, 3),
            "foot_contact": contacts[:, :4],
            "trunk_contact": contacts[:, 4],
        }
        state.update(self._readings.keys())
        return state

    # -- extras ----------------------------------------------------------------------------------

    def set_trunk_wrench(self, wrench: np.ndarray) -> None:
        """Apply an external force [N] and torque [N·m] (N, 6), world frame, at the trunk's
        centre of mass until changed (a push; zero it to release). Resets clear it."""
        wrench = np.asarray(wrench, dtype=np.float64)
        if wrench.shape not in ((6,), (self.num_worlds, 6)):
            raise ValueError(
                f"wrench must have shape (6,) or ({self.num_worlds}, 6), got {wrench.shape}"
            )
        self._xfrc[:, self._trunk_body] = wrench

    def privileged(self) -> dict[str, np.ndarray]:
        """Ground truth per world: base position and world velocities, physical parameters
        (floor friction, total mass [kg], the trunk's centre of mass in its body frame [m])."""
        friction = self.batch.expanded("geom_friction")
        mass = self.batch.expanded("body_mass")
        com = self.batch.expanded("body_ipos")
        return {
            "base_pos": self._qpos[:, :3].copy(),
            "base_linvel_world": self._qvel[:, :3].copy(),
            "floor_friction": (
                np.full(self.num_worlds, self._nominal_friction[0])
                if friction is None
                else friction[:, self._floor_geom, 0].copy()
            ),
            "total_mass": (
                np.full(self.num_worlds, self._nominal_mass.sum())
                if mass is None
                else mass.sum(axis=1)
            ),
            "trunk_com": (
                np.tile(self._nominal_trunk_com, (self.num_worlds, 1))
                if com is None
                else com[:, self._trunk_body].copy()
            ),
        }

    def render_world(
        self, world: int, task_state: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """An RGB frame (H, W, 3) uint8 of one world from the tracking camera."""
        del task_state
        if not 0 <= world < self.num_worlds:
            raise ValueError(f"world must be in [0, {self.num_worlds}), got {world}")
        if self._renderer is None:
            _check_offscreen_gl()
            self._render_model = self.batch.get_model(world)
            visual = self._render_model.vis.global_
            visual.offwidth = max(visual.offwidth, self.config.render_width)
            visual.offheight = max(visual.offheight, self.config.render_height)
            self._render_data = mujoco.MjData(self._render_model)
            self._renderer = mujoco.Renderer(
                self._render_model, height=self.config.render_height, width=self.config.render_width
            )
        model, data = self._render_model, self._render_data
        self.batch.get_model(world, model)
        self.batch.get_data(world, data)
        mujoco.mj_forward(model, data)
        self._renderer.update_scene(data, camera="tracking")
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
