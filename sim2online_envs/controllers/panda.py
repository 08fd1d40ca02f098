"""Scripted privileged Panda controller: over the cube, down, close, lift, carry to the goal.

It reads what the policy may not see (the object's position and size, the goal) and is
memoryless: the phase follows from the geometry of each step, so the same function drives one
env or a batch of worlds and recovers by itself when a grasp slips.

=========== ================================================= ==============================
phase       when                                              target, gripper
=========== ================================================= ==============================
carry       the gripper squeezes the object (object centre     goal, closed
            near the tip)
rise        tip low and far from the object in x, y           straight up to hover height,
                                                              open
align       tip high, not above the object                    above the object, open
descend     above the object, tip not yet at its centre       object centre, open
close       tip at the object's centre                        stay, closed
=========== ================================================= ==============================

Actions are proportional to the distance of the controller's tip target (the state's
``tip_target``, what the arm is being driven to) from the phase's target, saturated at the action
bound, so the controller uses the env's action space like a policy does. The phases follow the
measured tip. Acting on the target rather than on the measured tip is what keeps the controller
from winding up against an arm that lags (the real arm's Cartesian controller, the twin): the
target settles where the phase wants it and the arm follows, instead of the target being pushed
on for as long as the arm has not arrived. It proves the
task solvable and the reward and success wiring right (tests), demonstrates the task
(``sim2online demo``) and can collect an offline buffer with ``make_vec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from sim2online_envs.controllers import ScriptedPolicy
from sim2online_envs.core import TaskEnv
from sim2online_envs.robots.panda import GRIPPER_CLOSE_SIGN, MAX_TIP_STEP

__all__ = ["PandaScriptedController", "ScriptedPickConfig", "make_controller", "scripted_actions"]


@dataclass(frozen=True)
class ScriptedPickConfig:
    """Tolerances and gains of the scripted pick (m)."""

    #: Height of the tip above the object's centre while moving over it.
    hover_height: float = 0.07
    #: Horizontal tip-object error below which the tip descends.
    align_tolerance: float = 0.008
    #: Vertical tip-object error below which the gripper closes.
    close_tolerance: float = 0.008
    #: Tip-object distance under which the squeezed object counts as held.
    hold_radius: float = 0.025
    #: Metres of tip displacement per step at full action (the task's ``max_tip_step``).
    max_tip_step: float = MAX_TIP_STEP
    #: Proportional gain: action = gain * error / max_tip_step, clipped to [-1, 1].
    gain: float = 1.0


def scripted_actions(
    tip_pos: np.ndarray,
    gripper_holding: np.ndarray,
    object_pos: np.ndarray,
    goal: np.ndarray,
    config: ScriptedPickConfig | None = None,
    tip_target: np.ndarray | None = None,
) -> np.ndarray:
    """(B, 4) float32 actions for a batch of worlds.

    :param tip_pos: (B, 3) measured fingertip centres (m).
    :param gripper_holding: (B,) whether the closed gripper squeezes something (the state's
        ``gripper_holding``).
    :param object_pos: (B, 3) object centres (m).
    :param goal: (B, 3) goals (m).
    :param tip_target: (B, 3) the tip targets the arm is driven to (the state's ``tip_target``);
        the steps are computed from them (None: from the measured tips).
    """
    cfg = config or ScriptedPickConfig()
    tip = np.atleast_2d(np.asarray(tip_pos, dtype=np.float64))
    obj = np.atleast_2d(np.asarray(object_pos, dtype=np.float64))
    goal = np.atleast_2d(np.asarray(goal, dtype=np.float64))
    holding = np.asarray(gripper_holding, dtype=np.float64).reshape(-1) > 0.5
    if not (tip.shape == obj.shape == goal.shape and tip.shape[1:] == (3,)):
        raise ValueError(
            f"tip_pos, object_pos and goal must be (B, 3) alike, got {tip.shape}, {obj.shape}, "
            f"{goal.shape}"
        )
    if holding.shape != (tip.shape[0],):
        raise ValueError(f"gripper_holding must be ({tip.shape[0]},), got {holding.shape}")

    held = holding & (np.linalg.norm(obj - tip, axis=1) < cfg.hold_radius)
    xy_error = np.linalg.norm(obj[:, :2] - tip[:, :2], axis=1)
    hover_z = obj[:, 2] + cfg.hover_height
    aligned = xy_error < cfg.align_tolerance
    low = tip[:, 2] < obj[:, 2] + 0.5 * cfg.hover_height
    rise = ~held & ~aligned & low & (xy_error > 2 * cfg.align_tolerance)
    at_object = aligned & (np.abs(tip[:, 2] - obj[:, 2]) < cfg.close_tolerance)

    above = np.column_stack([obj[:, :2], hover_z])
    target = np.where(aligned[:, None], obj, above)  # descend when aligned, else align
    target = np.where(rise[:, None], np.column_stack([tip[:, :2], hover_z]), target)
    target = np.where((at_object & ~held)[:, None], tip, target)  # close in place
    target = np.where(held[:, None], goal, target)
    close = held | at_object

    action = np.empty((tip.shape[0], 4), dtype=np.float32)
    reference = tip if tip_target is None else np.atleast_2d(np.asarray(tip_target, np.float64))
    action[:, :3] = np.clip(cfg.gain * (target - reference) / cfg.max_tip_step, -1.0, 1.0)
    action[:, 3] = np.where(close, GRIPPER_CLOSE_SIGN, -GRIPPER_CLOSE_SIGN)
    return action


#: How far (m) a resting cube's centre may sit below half its size: the simulator's contact
#: penetration. The controller never aims lower than that.
RESTING_SLACK = 0.002


class PandaScriptedController(ScriptedPolicy):
    """The scripted pick for one env: ``policy(obs) -> action`` reading the env's ground truth.

    Also offers SB3's ``predict(obs, state, episode_start, deterministic) -> (action, state)``.
    """

    def __init__(self, env: gym.Env, config: ScriptedPickConfig | None = None):
        self.env = env.unwrapped
        if not isinstance(self.env, TaskEnv):
            raise TypeError(
                "the scripted Panda controller reads the ground truth of a TaskEnv (backend, "
                f"task_state, state); got {type(self.env).__name__}"
            )
        task_config = getattr(getattr(self.env, "task", None), "config", None)
        step = getattr(task_config, "max_tip_step", None)
        base = config or ScriptedPickConfig()
        if step is not None and config is None:
            base = ScriptedPickConfig(max_tip_step=float(step))
        self.config = base

    def __call__(self, observation: Any) -> np.ndarray:
        """The action (4,) float32 for the env's current state (``observation`` for its tip)."""
        del observation  # the ground truth below includes the observed tip
        raw = self.env.state
        object_pos = np.array(self.env.backend.privileged()["object_pos"], dtype=np.float64)
        # A cube cannot sit lower than on the table (z = 0 in the base frame): on hardware the
        # marker pose drifts several mm low while the fingers hide the markers at the grasp,
        # and chasing it presses the hand into the cube.
        floor = 0.5 * np.asarray(raw["object_size"], dtype=np.float64).reshape(-1) - RESTING_SLACK
        object_pos[:, 2] = np.maximum(object_pos[:, 2], floor)
        action = scripted_actions(
            raw["tip_pos"],
            raw["gripper_holding"],
            object_pos,
            self.env.task_state["goal"],
            self.config,
            tip_target=raw["tip_target"],
        )
        return action[0]


def make_controller(env: gym.Env) -> PandaScriptedController:
    """The Panda's scripted controller for ``env`` (a SimPanda env, possibly wrapped)."""
    space = env.action_space
    if getattr(space, "shape", None) != (4,):
        raise ValueError(f"expected a Panda env with a (4,) action space, got {space}")
    return PandaScriptedController(env)
