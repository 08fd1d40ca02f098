"""``SimGo1-v0``: the Unitree Go1 joystick task in MuJoCo."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sim2online_envs.config import coerce_config, replace_fields
from sim2online_envs.env import TaskEnv
from sim2online_envs.safety import Go1Limits, SafetyConfig
from sim2online_envs.sim.go1 import Go1SimConfig, Go1VectorBackend
from sim2online_envs.tasks.go1 import PRESETS, Go1JoystickTask, Go1TaskConfig

__all__ = ["BACKENDS", "Go1Env"]

#: Backends Go1Env can be built on (the real robot and its twin will join them).
BACKENDS = ("sim",)


class Go1Env(TaskEnv):
    """Unitree Go1 quadruped tracking a joystick velocity command, at 50 Hz.

    ## Description

    A 12 kg Unitree Go1 (our own MJCF from the published link lengths, masses and joint limits;
    ``sim2online_envs/assets/go1.xml``) stands on a flat floor. Each leg has a hip (abduction),
    thigh and calf joint, driven by position-controlled motors with Kp = 35 N·m/rad and
    Kd = 0.5 N·m·s/rad and torque limits of 23.7 / 23.7 / 35.55 N·m. The policy must follow a
    body-frame velocity command (forward ``vx``, lateral ``vy``, yaw rate ``ωz``) that is drawn
    at reset and resampled at random times, components set to zero at random. By default
    (``preset="playground"``) the task is MuJoCo Playground's Go1 joystick task: its rewards,
    command ranges and resampling, observation noise, home pose, joint friction and armature and
    domain randomisation (every value and its source in ``docs/parameters.md``). The sim-to-sim
    "reality gap" of the sim-to-online study is a lower floor friction (``friction=``) and the
    study's narrow-command prior (``preset="study_prior"``: ``command_range="narrow"``).

    ## Action Space

    ``Box(-1, 1, (12,), float32)``: joint position targets ``home + 0.5 · a`` [rad], clipped to
    the joint limits, held for one control period (5 physics steps of 4 ms). Home is
    Playground's standing pose: hip (abduction) +0.1 rad on the right legs and −0.1 rad on the
    left ones, thigh 0.9, calf −1.8 rad.

    | Num | Joint (unitree_legged_sdk order) | Home [rad] | Range [rad]     |
    |-----|----------------------------------|------------|-----------------|
    | 0   | FR hip (abduction)               | 0.1        | −0.863 … 0.863  |
    | 1   | FR thigh                         | 0.9        | −0.686 … 4.501  |
    | 2   | FR calf (knee)                   | −1.8       | −2.818 … −0.888 |
    | 3-5 | FL hip, thigh, calf              | −0.1, 0.9, −1.8 | as FR      |
    | 6-8 | RR hip, thigh, calf              | as FR      | as FR           |
    | 9-11| RL hip, thigh, calf              | as FL      | as FR           |

    ## Observation Space

    ``Box(-inf, inf, (48,), float32)``, proprioception only (what the real robot measures):

    | Num   | Observation                                  | Unit  |
    |-------|----------------------------------------------|-------|
    | 0-2   | trunk linear velocity, body frame            | m/s   |
    | 3-5   | trunk angular velocity (gyro), body frame    | rad/s |
    | 6-8   | gravity direction in the body frame (0,0,−1 upright) | - |
    | 9-20  | joint angles − home, in action order         | rad   |
    | 21-32 | joint velocities                             | rad/s |
    | 33-44 | last action (clipped to [−1, 1])             | -     |
    | 45-47 | command (vx, vy, ωz)                         | m/s, m/s, rad/s |

    Uniform observation noise with MuJoCo Playground's half-widths is on by default (linear
    velocity 0.1, gyro 0.2, gravity 0.05, joint angles 0.03, joint velocities 1.5, in the units
    above; the last action and the command are exact); ``obs_noise=False`` switches it off.

    ## Rewards

    The reward is the sum of weighted terms, each ``weight · value · 0.02 s`` (MuJoCo
    Playground's weights), every one reported in ``info["reward_terms"]``:

    | Term              | Value                                            | Weight  |
    |-------------------|--------------------------------------------------|---------|
    | tracking_lin_vel  | exp(−‖v*_xy − v_xy‖² / 0.25), body frame         | 1.0     |
    | tracking_ang_vel  | exp(−(ω*_z − ω_z)² / 0.25)                       | 0.5     |
    | lin_vel_z         | v_z², world frame                                | −0.5    |
    | ang_vel_xy        | ω_x² + ω_y², world frame                         | −0.05   |
    | orientation       | x² + y² of the trunk's up axis                   | −5.0    |
    | dof_pos_limits    | Σ rad beyond 95 % of each joint's range          | −1.0    |
    | pose              | exp(−Σ w (q − q_home)²), w = 1, 1, 0.1 per leg   | 0.5     |
    | termination       | 1 on a fall                                      | −1.0    |
    | stand_still       | Σ abs(q − q_home) when ‖command‖ < 0.01          | −1.0    |
    | torques           | ‖τ‖₂ + ‖τ‖₁                                      | −0.0002 |
    | action_rate       | ‖a − a_prev‖²                                    | −0.01   |
    | energy            | Σ abs(q̇) abs(τ)                                  | −0.001  |
    | feet_clearance    | Σ abs(z_foot − 0.1) √‖v_foot,xy‖                 | −2.0    |
    | feet_height       | Σ (swing peak / 0.1 − 1)² at touchdown           | −0.2    |
    | feet_slip         | Σ ‖v_foot,xy‖² of feet in contact                | −0.1    |
    | feet_air_time     | Σ (air time − 0.1 s) at touchdown                | 0.1     |
    | clip_at_zero      | lifts a negative total to 0 (Playground's clip)  | -       |

    The feet terms (but clearance) only count while the command is non-zero. Weights and
    settings live in :class:`~sim2online_envs.tasks.go1.Go1TaskConfig` (``task_config=``).

    ## Starting State

    The home pose with the feet on the floor, a uniformly random heading, joint angles
    perturbed by U(−0.05, 0.05) rad, trunk velocities by U(−0.1, 0.1) m/s or rad/s. With
    ``domain_randomization`` (default) every reset also draws the floor friction U(0.4, 1.0),
    link masses ×U(0.9, 1.1), an added trunk mass U(−1, 1) kg, joint friction loss ×U(0.9, 1.1),
    armature ×U(1.0, 1.05) and the trunk's centre of mass +U(−0.05, 0.05) m on each axis
    (Playground's ranges). The command is drawn uniformly in ±``command_range``.

    ## Commands

    The command at reset is uniform in ±``command_range`` ("full": ±(1.5 m/s, 0.8 m/s,
    1.2 rad/s), Playground's; "narrow": ±(0.5, 0.8, 1.2), the study's prior). It is resampled
    after an exponentially distributed time of mean 5 s (a new one after each resample); at a
    resample each component changes with probability 0.5, to a uniform draw with probability
    (0.9, 0.25, 0.5) for (vx, vy, ωz) and to zero otherwise, so a robot is told to stand still
    now and then (the ``stand_still`` term). ``task_config={"command_resample_steps": N}`` uses a
    fixed clock of N steps instead.
    ``reset(options={"qpos": ..., "qvel": ...})`` starts from an exact MuJoCo state instead
    (19 and 18 numbers: trunk position, quaternion wxyz, joint angles; velocities).

    ## Episode End

    * Termination: a fall, i.e. the trunk's up axis tilts more than 60° from vertical
      (world z < 0.5) or the trunk touches the floor.
    * Truncation: after 1000 steps (20 s), with ``info["truncation_reason"] = "time_limit"``;
      change it with ``task_config={"max_episode_steps": T}``.

    ``info["is_success"]`` is always False (velocity tracking has no success state);
    ``info["command"]`` holds the current command.

    ## Arguments

    | Argument               | Default   | Description                                        |
    |------------------------|-----------|----------------------------------------------------|
    | backend                | "sim"     | "sim" (MuJoCo); the real robot will be added       |
    | preset                 | "playground" | "playground" (Playground's joystick task) or    |
    |                        |           | "study_prior" (its narrow commands)                |
    | command_range          | None      | the preset's ("full" ±(1.5, 0.8, 1.2)), "narrow"    |
    |                        |           | ±(0.5, 0.8, 1.2) or three half-widths (vx, vy, ωz) |
    | domain_randomization   | True      | re-draw friction, masses, trunk centre of mass,    |
    |                        |           | joint friction and armature                        |
    | friction               | None      | fix the floor friction (e.g. 0.3) for a mismatch   |
    | obs_noise              | None      | the preset's (on); False switches the noise off    |
    | render_mode            | None      | None or "rgb_array" (240×320 tracking camera)      |
    | task_config            | None      | a Go1TaskConfig (replaces the preset) or a dict of |
    |                        |           | fields to change on the preset                     |
    | sim_config             | None      | a Go1SimConfig (timestep, ranges, reset noise) or  |
    |                        |           | a dict of fields to change                         |
    | num_threads            | None      | MuJoCo batch threads (single env: 1)               |

    ```python
    import gymnasium as gym
    import sim2online_envs  # registers the ids

    env = gym.make("SimGo1-v0", preset="study_prior", friction=0.3)
    obs, info = env.reset(seed=0)
    ```

    ## Version History

    * v0: first version; defaults made MuJoCo Playground's joystick task (observation noise on,
      full command range, random resampling with zeroed components, ±0.1 rad abduction home,
      Playground's joint friction and armature, trunk centre-of-mass randomisation).
    """

    limits_class = Go1Limits

    def __init__(
        self,
        backend: str = "sim",
        *,
        preset: str | None = None,
        command_range: str | tuple[float, float, float] | None = None,
        domain_randomization: bool = True,
        friction: float | None = None,
        obs_noise: bool | None = None,
        render_mode: str | None = None,
        task_config: Go1TaskConfig | Mapping[str, Any] | None = None,
        sim_config: Go1SimConfig | Mapping[str, Any] | None = None,
        num_threads: int | None = None,
        safety: SafetyConfig | Mapping[str, Any] | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        task, vector_backend = self.build_vector(
            num_worlds=1,
            num_threads=num_threads,
            preset=preset,
            command_range=command_range,
            domain_randomization=domain_randomization,
            friction=friction,
            obs_noise=obs_noise,
            task_config=task_config,
            sim_config=sim_config,
        )
        super().__init__(task, vector_backend, render_mode=render_mode, safety=safety)

    @classmethod
    def build_task(
        cls,
        *,
        preset: str | None = None,
        command_range: str | tuple[float, float, float] | None = None,
        obs_noise: bool | None = None,
        task_config: Go1TaskConfig | Mapping[str, Any] | None = None,
    ) -> Go1JoystickTask:
        """The task for these arguments: the preset's config (default "playground",
        :data:`~sim2online_envs.tasks.go1.PRESETS`) with the fields of a ``task_config`` dict
        changed, or a whole ``Go1TaskConfig``, then ``command_range`` and ``obs_noise`` replaced
        where they are not None."""
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if isinstance(task_config, Go1TaskConfig):
            if preset is not None:
                raise ValueError("give a preset or a whole Go1TaskConfig, not both")
            base = task_config
        else:
            base = Go1TaskConfig.from_preset(preset or "playground")
            if isinstance(task_config, Mapping):
                base = replace_fields(base, task_config, "task_config")
            elif task_config is not None:
                coerce_config(Go1TaskConfig, task_config, "task_config")  # names the bad type
        overrides: dict[str, Any] = {}
        if command_range is not None:
            overrides["command_range"] = command_range
        if obs_noise is not None:
            overrides["obs_noise"] = bool(obs_noise)
        return Go1JoystickTask(dataclasses.replace(base, **overrides))

    @classmethod
    def build_vector(
        cls,
        num_worlds: int,
        num_threads: int | None = None,
        *,
        backend: str = "sim",
        preset: str | None = None,
        command_range: str | tuple[float, float, float] | None = None,
        domain_randomization: bool = True,
        friction: float | None = None,
        obs_noise: bool | None = None,
        task_config: Go1TaskConfig | Mapping[str, Any] | None = None,
        sim_config: Go1SimConfig | Mapping[str, Any] | None = None,
    ) -> tuple[Go1JoystickTask, Go1VectorBackend]:
        """The task and a simulator of ``num_worlds`` worlds, as ``make_vec`` needs them.

        Takes the env's keyword arguments (but ``render_mode``), so that ``make_vec`` and
        ``gym.make`` build the same worlds from the same arguments.
        """
        if backend != "sim":
            raise ValueError(f"only the 'sim' backend can be batched, got backend={backend!r}")
        task = cls.build_task(
            preset=preset, command_range=command_range, obs_noise=obs_noise, task_config=task_config
        )
        vector_backend = Go1VectorBackend(
            num_worlds,
            control_dt=task.control_dt,
            domain_randomization=domain_randomization,
            friction=friction,
            num_threads=num_threads,
            config=coerce_config(Go1SimConfig, sim_config, "sim_config"),
        )
        return task, vector_backend
