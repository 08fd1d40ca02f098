"""One world as a Gymnasium env: :class:`TaskEnv` formats what the step loop returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from sim2online_envs.core import Backend, Task, unbatch
from sim2online_envs.loop import LoopViews, StepLoop, StepResult
from sim2online_envs.safety import CommandLimits, SafetyConfig

_WORLD = np.zeros(1, dtype=np.int64)


class TaskEnv(LoopViews, gym.Env):
    """A Gymnasium env made of one :class:`~sim2online_envs.core.Task` and a one-world
    :class:`~sim2online_envs.core.Backend`, stepped by :class:`~sim2online_envs.loop.StepLoop`.

    ``info`` on every step holds ``reward_terms`` (each term's weighted value), ``is_success``,
    the task's own keys, ``safety`` (interventions of the limits, the abort reason, the applied
    action), ``timing`` (the backend's clock telemetry; empty in simulators) and, on
    truncation, ``truncation_reason`` (with ``fault_detail``, the device's own words, when an
    invalid reading ended the episode). Robot env classes subclass this and document their
    spaces, rewards and arguments in their docstring.

    :param task: the robot's task.
    :param backend: a one-world backend (simulator with ``num_worlds=1``, or a robot).
    :param render_mode: None or "rgb_array".
    :param safety: action handling and limits (:class:`~sim2online_envs.safety.SafetyConfig`
        or a dict of its fields); default: NaN actions raise, the env's own limits.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 30}
    #: The robot's command limits, built from the task (``SafetyConfig.limits == "auto"``).
    limits_class: ClassVar[type[CommandLimits] | None] = None

    def __init__(
        self,
        task: Task,
        backend: Backend,
        render_mode: str | None = None,
        safety: SafetyConfig | Mapping[str, Any] | None = None,
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if backend.num_worlds != 1:
            raise ValueError(f"TaskEnv needs a one-world backend, got {backend.num_worlds} worlds")
        self.task = task
        self.backend = backend
        self.loop = StepLoop(task, backend, safety, self.limits_class)
        self.render_mode = render_mode
        self.observation_space = task.observation_space
        self.action_space = task.action_space
        self.control_dt = task.control_dt
        self.max_episode_steps = task.max_episode_steps
        self.metadata = {**self.metadata, "render_fps": round(1.0 / task.control_dt)}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        loop = self.loop
        obs = loop.reset_all([(options, _WORLD)], [self.np_random])
        assert loop.state is not None and loop.task_state is not None
        info: dict[str, Any] = {
            "is_success": bool(self.task.success(loop.state, loop.task_state)[0])
        }
        info.update(unbatch(self.task.info(loop.state, loop.task_state)))
        info["safety"] = loop.safety_info(0, None)
        info["timing"] = self.backend.telemetry()
        return unbatch(obs), info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        array = np.asarray(action)
        expected = self.action_space.shape
        if array.shape != expected:
            # No silent reshape: a (2, 2) array is not a 4-D action, nor a (1, A) batch one.
            raise ValueError(
                f"action has {array.size} components in shape {array.shape}, the action "
                f"space {int(np.prod(expected))} in shape {expected}"
            )
        result = self.loop.step(array.reshape(1, -1), [self.np_random])
        return self._format(result)

    def _format(self, result: StepResult) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        info: dict[str, Any] = {
            "reward_terms": dict(
                zip(self.task.reward_term_names, result.reward_terms[:, 0].tolist(), strict=True)
            ),
            "is_success": bool(result.success[0]),
        }
        for key, value in result.task_info.items():
            info[key] = unbatch(value)
        info["safety"] = self.loop.safety_info(0, result)
        info["timing"] = self.backend.telemetry()
        terminated = bool(result.terminated[0])
        truncated = bool(result.truncated[0])
        if truncated:
            info["truncation_reason"] = str(result.reasons[0])
            if result.invalid[0]:
                info["fault_detail"] = self.backend.fault_detail(0)
        return unbatch(result.observation), float(result.reward[0]), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        task_state = self.loop.task_state
        return self.backend.render_world(0, None if task_state is None else unbatch(task_state))

    def stop(self) -> None:
        """Put the robot in its safe state now (the backend's ``stop``)."""
        self.backend.stop()

    def close(self) -> None:
        self.backend.close()
        super().close()
