"""``SimPanda-v0``: pick a cube with a Franka Panda from 64x64 grayscale images, at 20 Hz."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from sim2online_envs.config import coerce_config
from sim2online_envs.env import TaskEnv
from sim2online_envs.safety import PandaLimits, SafetyConfig
from sim2online_envs.sim.panda import OBJECTS, PandaSimConfig, PandaVectorBackend
from sim2online_envs.tasks.panda import PandaPickTask, PandaTaskConfig

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "PandaEnv"]

#: Values of ``backend=`` this env accepts (the real arm and its twin come with the hardware).
BACKENDS = ("sim",)


class PandaEnv(TaskEnv):
    """Pick a cube with a Franka Emika Panda and bring it to a goal above the table.

    ## Description

    A Franka Panda (7-DoF arm and Franka Hand, modelled from Franka's published kinematics,
    limits and masses) stands on a table with a 5 cm cube in front of it. The policy sees a
    64x64 grayscale image from a fixed Intel RealSense D455 in front of the robot and the
    fingertip position and gripper opening; it moves the fingertip centre in Cartesian steps and
    opens or closes the gripper. A damped-least-squares differential-IK controller keeps the hand
    pointing down and drives joint position servos at the physics rate (500 Hz). The same task
    runs on the real arm (Cartesian impedance control, the cube pose from a fiducial marker).
    ``object="soft_ball"`` swaps the cube for a compliant foam ball that gives way under the
    grasp and rolls: the sim-to-sim "reality" for a policy pretrained on the cube.

    ## Action Space

    ``Box(-1, 1, (4,), float32)``, held for one control period (0.05 s by default):

    | Num | Action | Min | Max | Meaning                                                   |
    |-----|--------|-----|-----|-----------------------------------------------------------|
    | 0   | dx     | -1  | 1   | tip target step along world x, times 0.005 m               |
    | 1   | dy     | -1  | 1   | tip target step along world y, times 0.005 m               |
    | 2   | dz     | -1  | 1   | tip target step along world z, times 0.005 m               |
    | 3   | g      | -1  | 1   | g < 0 closes the gripper, g >= 0 opens it (the study's)    |

    The step is added to the controller's tip target, which is then held within 0.04 m of the
    measured tip per axis (no wind-up against the table) and clamped to the workspace box
    x in [0.30, 0.68], y in [-0.3, 0.3], z in [0.015, 0.35] m (reachable with the hand down).
    The fingers move at 0.1 m/s each (a full close takes 0.4 s) from wherever they are and
    squeeze what they meet with the Franka Hand's continuous grasp force, 70 N. Actions outside
    the box are clipped; non-finite actions raise a ValueError.

    ## Observation Space

    ``Dict``:

    | Key      | Space                              | Meaning                                   |
    |----------|------------------------------------|-------------------------------------------|
    | pixels   | ``Box(0, 255, (64, 64, 1), uint8)`` | grayscale D455 image (``image_size``)     |
    | state    | ``Box(4,)`` float32                 | see below                                 |

    | Num | Observation     | Min  | Max  | Unit | Meaning                                 |
    |-----|-----------------|------|------|------|-----------------------------------------|
    | 0   | tip x           | -1.0 | 1.0  | m    | fingertip centre, world frame           |
    | 1   | tip y           | -1.0 | 1.0  | m    |                                         |
    | 2   | tip z           | -0.2 | 1.4  | m    | 0 is the table top                      |
    | 3   | gripper opening | 0    | 0.08 | m    | distance between the fingers            |

    World frame: origin at the robot base on the table top, x forward, y left, z up. The cube
    and goal positions are not observed (on hardware they come from a marker and are used only
    for reward and success); they are in ``info`` and in ``env.unwrapped.backend.privileged()``.

    ## Rewards

    Progress terms (each the change of one stage's potential over the step) plus a success
    bonus; each weighted term is in ``info["reward_terms"]``, weights in
    :class:`~sim2online_envs.tasks.panda.PandaTaskConfig`:

    | Term         | Value                                                      | Weight |
    |--------------|------------------------------------------------------------|--------|
    | ``approach`` | d(tip, cube) before the step - after (m)                   | 10     |
    | ``grasp``    | grasped after - grasped before (+1 / -1 / 0)               | 1      |
    | ``lift``     | gain of the cube's height above rest, up to the goal's (m) | 10     |
    | ``carry``    | d(cube, goal) before - after (m)                           | 10     |
    | ``success``  | 1 when d(cube, goal) < 0.05 m                               | 10     |

    ``grasped``: the closed gripper squeezes something (the fingers stopped on it; on the real
    hand libfranka's ``is_grasped``) and the cube's centre is within 2.5 cm of the fingertip
    centre.

    ## Starting State

    The arm at its home posture (fingertip centre at the study's start (0.661, 0, 0.179) m, hand
    pointing down, fingers along y, gripper open). The cube rests on the table at x ~ U(0.50, 0.65),
    y ~ U(-0.10, 0.10) m with yaw ~ U(-30, 30) deg. The goal is above the cube's start at a
    height ~ U(0.10, 0.20) m above the table (the goal is not observed, so by default it is
    reached by lifting the cube straight up; ``goal_xy_offset_low/high`` in the task config move
    it sideways). The scene is the study's: a dark table (gray 0.21), a 5 cm cube with an ArUco
    marker on each face, one directional light in front of the robot. With
    ``domain_randomization`` each reset also draws, over the study's ranges, the light's place
    (a box 1.5-3 m in front, 0.8-1.5 m up), its aim (turned up to 20 deg) and its shadows (on
    with p = 0.75), the camera's pose (+-5 cm per axis, turned up to 10 deg), the table's gray
    (0-0.25) and an image brightness scale (x0.75-2.0), and the floor and wall gray.
    ``reset(options={"object_pos": (x, y, z), "object_yaw": yaw})`` places the cube.

    ## Episode End

    * Termination: success (d(cube, goal) < 0.05 m), or the cube's centre leaves the box
      x in [0.15, 0.85], y in [-0.45, 0.45], z in [-0.05, 0.6] m (``info["object_lost"]``).
    * Truncation: after 250 steps (12.5 s), ``info["truncation_reason"] = "time_limit"``.

    ``info`` also holds ``is_success``, ``goal`` (m), ``goal_distance`` (m) and ``grasped``.

    ## Arguments

    | Argument                 | Default    | Meaning                                        |
    |--------------------------|------------|------------------------------------------------|
    | ``backend``              | ``"sim"``  | ``"sim"``: the MuJoCo simulator                |
    | ``object``               | ``"cube"`` | ``"cube"`` or ``"soft_ball"``                  |
    | ``domain_randomization`` | ``True``   | light, camera, grays, brightness per reset     |
    | ``control_dt``           | ``0.05``   | seconds per step (a multiple of 0.002 s)       |
    | ``image_size``           | ``64``     | side of the square grayscale image, pixels     |
    | ``max_episode_steps``    | ``250``    | time limit in steps (through ``gym.make`` pass |
    |                          |            | it in ``task_config``: gym.make keeps          |
    |                          |            | ``max_episode_steps`` for its own TimeLimit)   |
    | ``task_config``          | ``None``   | ``PandaTaskConfig`` or a dict of overrides     |
    | ``sim_config``           | ``None``   | ``PandaSimConfig`` or a dict of overrides      |
    |                          |            | (not control_dt, image_size: set those above)  |
    | ``render_mode``          | ``None``   | ``"rgb_array"``: 240x320 colour overview, goal |

    ## Version History

    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    limits_class = PandaLimits

    def __init__(
        self,
        backend: str = "sim",
        object: str = "cube",
        domain_randomization: bool = True,
        control_dt: float | None = None,
        image_size: int | None = None,
        max_episode_steps: int | None = None,
        task_config: PandaTaskConfig | Mapping[str, Any] | None = None,
        sim_config: PandaSimConfig | Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        safety: SafetyConfig | Mapping[str, Any] | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(
                f"SimPanda backend must be one of {BACKENDS}, got {backend!r} (the real arm and "
                "its twin are separate backends of the hardware package)"
            )
        task = self.build_task(control_dt, image_size, max_episode_steps, task_config)
        vector_backend = self.build_backend(
            task, 1, object, domain_randomization, sim_config, num_threads=1
        )
        #: The simulator (one world); ``self.backend`` is its single-world view.
        self.sim = vector_backend
        super().__init__(task, vector_backend, render_mode=render_mode, safety=safety)

    # -- construction shared with make_vec -------------------------------------------------------

    @staticmethod
    def build_task(
        control_dt: float | None = None,
        image_size: int | None = None,
        max_episode_steps: int | None = None,
        task_config: PandaTaskConfig | Mapping[str, Any] | None = None,
    ) -> PandaPickTask:
        """The pick task with the ``control_dt``, ``image_size`` and T overrides applied."""
        config = coerce_config(PandaTaskConfig, task_config, "task_config")
        overrides: dict[str, Any] = {}
        if control_dt is not None:
            overrides["control_dt"] = control_dt
        if image_size is not None:
            overrides["image_size"] = image_size
        if max_episode_steps is not None:
            overrides["max_episode_steps"] = max_episode_steps
        return PandaPickTask(dataclasses.replace(config, **overrides) if overrides else config)

    @staticmethod
    def build_backend(
        task: PandaPickTask,
        num_worlds: int,
        object: str = "cube",
        domain_randomization: bool = True,
        sim_config: PandaSimConfig | Mapping[str, Any] | None = None,
        num_threads: int | None = None,
    ) -> PandaVectorBackend:
        """The MuJoCo simulator of ``num_worlds`` scenes, matched to the task's timing and image."""
        if object not in OBJECTS:
            raise ValueError(f"object must be one of {sorted(OBJECTS)}, got {object!r}")
        config = coerce_config(PandaSimConfig, sim_config, "sim_config")
        # The task owns the control period and the image size (they are in its spaces); a
        # different value in sim_config would otherwise be overridden without a word.
        explicit = set(sim_config) if isinstance(sim_config, Mapping) else set()
        for name in ("control_dt", "image_size"):
            given, used = getattr(config, name), getattr(task.config, name)
            default = getattr(PandaSimConfig, name)
            if given != used and (name in explicit or given != default):
                raise ValueError(
                    f"sim_config {name}={given!r} disagrees with the task's {name}={used!r}; "
                    f"set {name} with the env argument of that name (or in task_config)"
                )
        config = dataclasses.replace(
            config, control_dt=task.config.control_dt, image_size=task.config.image_size
        )
        return PandaVectorBackend(
            num_worlds,
            object=object,
            domain_randomization=domain_randomization,
            config=config,
            num_threads=num_threads,
        )

    @classmethod
    def build_vector(
        cls,
        num_worlds: int,
        num_threads: int | None = None,
        object: str = "cube",
        domain_randomization: bool = True,
        control_dt: float | None = None,
        image_size: int | None = None,
        max_episode_steps: int | None = None,
        task_config: PandaTaskConfig | Mapping[str, Any] | None = None,
        sim_config: PandaSimConfig | Mapping[str, Any] | None = None,
    ) -> tuple[PandaPickTask, PandaVectorBackend]:
        """The task and a ``num_worlds`` simulator for ``make_vec`` (same kwargs as the env)."""
        task = cls.build_task(control_dt, image_size, max_episode_steps, task_config)
        backend = cls.build_backend(
            task, num_worlds, object, domain_randomization, sim_config, num_threads
        )
        return task, backend
