"""Reset prompts: the operator resets the scene between episodes on a real robot.

:class:`ResetPromptWrapper` does three things, only for real backends (``backend.kind !=
"sim"``) unless forced with ``ResetPromptConfig(enabled=True)``:

* **At the end of an episode** (the step that returns ``terminated`` or ``truncated``) it asks
  the operator to label the episode: ``success``, ``failure``, ``discard``, ``retry`` (discard
  and run the same episode again: same seed, same random draws) or ``stop``. The label lands in
  ``info["operator"]``; ``success_reward`` / ``failure_reward`` are added to the last reward (a
  sparse, human-given reward); ``info["is_success"]`` follows the label
  (``label_overrides_success``); ``discard`` and ``retry`` set ``info["discard_episode"]``
  (:class:`~sim2online_envs.wrappers.recording.RecordEpisodes` then skips the episode).
* **In ``reset()``** it tells the operator what to do for this robot
  (:data:`RESET_INSTRUCTIONS`) and waits for ``ready``. Where the robot can reset itself it
  offers ``auto`` (:class:`DriveBackReset` for the car, :class:`PandaHomeReset`, and the Go1's
  backend's ``home()``); the operator confirms again after it ran. ``stop`` raises
  :class:`OperatorStopError`.
* **Mid-episode**, :meth:`ResetPromptWrapper.request_abort` (thread-safe, e.g. from a key
  handler or a GUI) ends the episode at the next step as truncated (``"operator_abort"``).

It never waits silently: every wait is logged with its timeout; a reset prompt that times out
``max_timeouts`` times raises :class:`OperatorTimeoutError` naming the prompt; a label prompt that
times out labels the episode ``"unlabelled"`` and logs a warning.

Operators are pluggable (:class:`Operator`): :class:`TerminalOperator` (a line on stdin, read
with ``select`` and a timeout, never a bare ``input()``), :class:`KeyPressOperator` (one key,
no Enter), :class:`CallableOperator` (your function, e.g. a GUI or a foot pedal) and
:class:`ScriptedOperator` (a list of answers, for tests and unattended runs).
"""

from __future__ import annotations

import abc
import logging
import math
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

import gymnasium as gym
import numpy as np

from sim2online_envs import robots

logger = logging.getLogger(__name__)

#: ``info["truncation_reason"]`` of an episode ended by :meth:`ResetPromptWrapper.request_abort`.
OPERATOR_ABORT = "operator_abort"


class OperatorTimeoutError(TimeoutError):
    """No valid answer from the operator in time."""


class OperatorStopError(RuntimeError):
    """The operator chose to stop the session."""


class OperatorUnavailableError(RuntimeError):
    """The operator channel cannot be used (no terminal, input closed)."""


@dataclass(frozen=True)
class Choice:
    """One answer the operator can give: its name, the key that selects it, what it does."""

    name: str
    key: str
    description: str


#: Choices after an episode.
LABEL_CHOICES = (
    Choice("success", "y", "the task was solved"),
    Choice("failure", "n", "the task was not solved"),
    Choice("discard", "d", "drop this episode (bad data: collision, tracking loss, …)"),
    Choice("retry", "r", "drop this episode and run the same one again"),
    Choice("stop", "q", "stop the session"),
)

#: Choices before an episode; ``auto`` only where an automatic reset exists.
READY = Choice("ready", "c", "the scene is reset: start the episode")
AUTO = Choice("auto", "a", "run the automatic reset, then confirm")
STOP = Choice("stop", "q", "stop the session")

#: What the operator does between episodes, per robot (``Task.robot``), from the robot modules.
RESET_INSTRUCTIONS: dict[str, str] = {
    name: module.RESET_INSTRUCTIONS for name, module in robots.ROBOT_MODULES.items()
}


# --------------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------------


class Operator(abc.ABC):
    """The person at the robot, behind some input channel."""

    @abc.abstractmethod
    def ask(self, message: str, choices: Sequence[Choice], timeout: float | None) -> str:
        """Show ``message`` and ``choices``; return the chosen :attr:`Choice.name`.

        Raises :class:`OperatorTimeoutError` when no valid answer arrives within ``timeout`` seconds
        (None: wait without limit).
        """

    def tell(self, message: str) -> None:
        """Inform the operator without waiting for an answer."""
        logger.info("%s", message)


def format_prompt(message: str, choices: Sequence[Choice]) -> str:
    """The message followed by one line per choice: ``[key] name: description``."""
    lines = [message, *(f"  [{c.key}] {c.name}: {c.description}" for c in choices)]
    return "\n".join(lines)


def match_choice(answer: str, choices: Sequence[Choice], default: str | None = None) -> str | None:
    """The name of the choice ``answer`` selects (its key or its name), or None."""
    text = answer.strip().lower()
    if not text:
        return default
    for choice in choices:
        if text in (choice.key.lower(), choice.name.lower()):
            return choice.name
    return None


def _remaining(deadline: float) -> float | None:
    return None if math.isinf(deadline) else max(0.0, deadline - time.monotonic())


class TerminalOperator(Operator):
    """Reads one line from a terminal (stdin by default), with a timeout.

    The answer is a choice's key or name; an empty line selects ``default`` when the prompt has
    one (``ready`` before an episode). Reads use ``select`` and ``os.read`` on the file
    descriptor, so a timeout really returns (POSIX terminals, pipes and sockets). On a terminal,
    what was typed before the prompt appeared is dropped (``discard_typeahead``): a stray Enter
    during the episode must not confirm the next reset.
    """

    def __init__(
        self,
        input_stream: IO[Any] | None = None,
        output: IO[str] | None = None,
        discard_typeahead: bool = True,
    ):
        self.input_stream = input_stream if input_stream is not None else sys.stdin
        self.output = output if output is not None else sys.stderr
        self.discard_typeahead = discard_typeahead
        self._buffer = b""

    def _discard_typeahead(self, fd: int) -> None:
        """On a terminal, drop what was typed before the prompt appeared: an Enter pressed
        during the episode must not confirm the next reset. Pipes keep their scripted input."""
        if self.discard_typeahead and os.isatty(fd):
            import termios

            self._buffer = b""
            termios.tcflush(fd, termios.TCIFLUSH)

    def ask(self, message: str, choices: Sequence[Choice], timeout: float | None) -> str:
        default = READY.name if any(c.name == READY.name for c in choices) else None
        try:
            fd = self.input_stream.fileno()
        except (AttributeError, OSError, ValueError) as error:
            raise OperatorUnavailableError(
                f"no readable terminal for the operator: {error}"
            ) from error
        self._discard_typeahead(fd)
        hint = " (Enter = ready)" if default else ""
        self.output.write(format_prompt(message, choices) + f"\n> choose{hint}: ")
        self.output.flush()
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            while b"\n" not in self._buffer:
                remaining = _remaining(deadline)
                if remaining == 0.0:
                    raise OperatorTimeoutError(f"no answer within {timeout} s")
                ready, _, _ = select.select([fd], [], [], remaining)
                if not ready:
                    continue
                chunk = os.read(fd, 1024)
                if not chunk:
                    raise OperatorUnavailableError("the operator's input was closed (end of file)")
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\n", 1)
            name = match_choice(line.decode(errors="replace"), choices, default)
            if name is not None:
                return name
            keys = ", ".join(c.key for c in choices)
            self.output.write(f"unknown answer {line.decode(errors='replace')!r}; one of {keys}: ")
            self.output.flush()


class KeyPressOperator(TerminalOperator):
    """One key press selects a choice (no Enter needed); Enter selects ``ready``.

    Needs a terminal (the key is read in cbreak mode, restored afterwards). Keys pressed before
    the prompt appeared are dropped, and so are escape sequences (arrow and function keys: the
    up arrow sends ``ESC [ A``, whose last byte must not select ``auto``).
    """

    def ask(self, message: str, choices: Sequence[Choice], timeout: float | None) -> str:
        import termios
        import tty

        default = READY.name if any(c.name == READY.name for c in choices) else None
        try:
            fd = self.input_stream.fileno()
            saved = termios.tcgetattr(fd)
        except (AttributeError, OSError, ValueError, termios.error) as error:
            raise OperatorUnavailableError(
                f"KeyPressOperator needs a terminal on its input: {error}; use TerminalOperator "
                "or CallableOperator"
            ) from error
        self._discard_typeahead(fd)
        self.output.write(format_prompt(message, choices) + "\n> press a key: ")
        self.output.flush()
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        try:
            tty.setcbreak(fd)
            while True:
                remaining = _remaining(deadline)
                if remaining == 0.0:
                    raise OperatorTimeoutError(f"no key pressed within {timeout} s")
                ready, _, _ = select.select([fd], [], [], remaining)
                if not ready:
                    continue
                key = os.read(fd, 1).decode(errors="replace")
                if not key:
                    raise OperatorUnavailableError("the operator's input was closed (end of file)")
                if key == "\x1b":
                    _drain_escape_sequence(fd)
                    continue
                name = match_choice("" if key in "\r\n" else key, choices, default)
                if name is not None:
                    self.output.write(f"{name}\n")
                    self.output.flush()
                    return name
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _drain_escape_sequence(fd: int, gap: float = 0.05) -> None:
    """Read and drop the rest of an escape sequence (its bytes arrive together)."""
    while select.select([fd], [], [], gap)[0]:
        if not os.read(fd, 32):
            return


class CallableOperator(Operator):
    """Asks ``function(message, choices)``, which returns a choice's name or key.

    The function runs in a daemon thread so that the timeout holds even if it blocks; after a
    timeout its late answer is ignored.
    """

    def __init__(self, function: Callable[[str, Sequence[Choice]], str]):
        if not callable(function):
            raise TypeError(f"CallableOperator needs a callable, got {type(function).__name__}")
        self.function = function

    def ask(self, message: str, choices: Sequence[Choice], timeout: float | None) -> str:
        result: dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                result["answer"] = self.function(message, choices)
            except Exception as error:  # handed to the caller's thread below
                result["error"] = error
            finally:
                done.set()

        threading.Thread(target=call, name="operator-callable", daemon=True).start()
        if not done.wait(timeout):
            raise OperatorTimeoutError(f"the operator function gave no answer within {timeout} s")
        if "error" in result:
            raise result["error"]
        name = match_choice(str(result["answer"]), choices)
        if name is None:
            raise ValueError(
                f"operator function answered {result['answer']!r}; expected one of "
                f"{[c.name for c in choices]}"
            )
        return name


#: A :class:`ScriptedOperator` answer that simulates the operator not answering in time.
TIMEOUT = "<timeout>"


class ScriptedOperator(Operator):
    """Answers from a list, in order (``TIMEOUT`` simulates silence); records every prompt.

    ``asked`` holds ``(message, choice names)`` for each prompt, so tests can check what the
    operator was told.
    """

    def __init__(self, answers: Iterable[str]):
        self._answers = list(answers)
        self.asked: list[tuple[str, tuple[str, ...]]] = []
        self.told: list[str] = []

    def ask(self, message: str, choices: Sequence[Choice], timeout: float | None) -> str:
        self.asked.append((message, tuple(c.name for c in choices)))
        if not self._answers:
            raise OperatorUnavailableError(
                f"ScriptedOperator ran out of answers at prompt {len(self.asked)}: {message!r}"
            )
        answer = self._answers.pop(0)
        if answer == TIMEOUT:
            raise OperatorTimeoutError(f"scripted timeout after {timeout} s")
        name = match_choice(answer, choices)
        if name is None:
            raise ValueError(
                f"scripted answer {answer!r} is not one of {[c.name for c in choices]}"
            )
        return name

    def tell(self, message: str) -> None:
        self.told.append(message)
        super().tell(message)


# --------------------------------------------------------------------------------------------
# Automatic resets
# --------------------------------------------------------------------------------------------


class AutoReset(abc.ABC):
    """A routine that brings the robot back to its start by itself (the operator confirms)."""

    description: str = "automatic reset"

    def available(self, env: gym.Env) -> bool:
        """Whether it can run now (the env has a state; the backend has the needed hooks)."""
        try:
            _ = env.unwrapped.state  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):
            return False
        return True

    @abc.abstractmethod
    def run(self, env: gym.Env) -> bool:
        """Drive the robot back; return whether it reached the start."""


def _wrap_angle(angle: np.ndarray | float) -> Any:
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


@dataclass(frozen=True)
class DriveBackReset(AutoReset):
    """Race car: drive back to ``home`` (x, y), the start marker, then stop.

    The default home lies 2 m from the arena centre (the goal), inside the task's start range.

    Steers towards the home point (in reverse when it lies behind the car), throttle
    proportional to the distance, speed limited to ``max_speed``; stops within ``tolerance``
    metres. Steps the underlying TaskEnv, so the safety guard still filters every command.
    Relies on the state keys ``pose`` (x, y, ψ) and ``velocity`` (vx, vy, ω); action
    (steering, throttle), steering positive to the left (ψ increasing).
    """

    home: tuple[float, float] = robots.racecar.RESET_HOME
    tolerance: float = robots.racecar.RESET_HOME_TOLERANCE
    max_speed: float = 1.0
    steering_gain: float = 2.0
    distance_gain: float = 1.0
    speed_gain: float = 1.0
    max_steps: int = 1200

    description = "drive back to the start and stop"
    #: Radius of the tightest turn, m (1:10 car at full lock, with margin): a home inside a
    #: full-lock circle cannot be reached by turning; the car first backs off in a straight line
    #: until home lies ``1 + hysteresis`` radii from the circle's centre.
    turning_radius: float = robots.racecar.RESET_TURNING_RADIUS
    hysteresis: float = 0.4

    def control(
        self, pose: np.ndarray, velocity: np.ndarray, backing_off: bool = False
    ) -> tuple[float, float, bool, bool]:
        """(steering, throttle) in [-1, 1] towards home, arrived, and the back-off mode."""
        x, y, yaw = (float(value) for value in pose)
        vx = float(velocity[0])
        dx, dy = self.home[0] - x, self.home[1] - y
        distance = math.hypot(dx, dy)
        if distance < self.tolerance:
            brake = float(np.clip(-self.speed_gain * vx, -1, 1))
            return 0.0, brake, abs(vx) < 0.05, False
        ahead = math.cos(yaw) * dx + math.sin(yaw) * dy  # home in the car's frame
        left = -math.sin(yaw) * dx + math.cos(yaw) * dy
        from_centre = math.hypot(ahead, abs(left) - self.turning_radius)
        if from_centre < self.turning_radius:
            backing_off = True
        elif from_centre > (1.0 + self.hysteresis) * self.turning_radius:
            backing_off = False
        bearing = float(_wrap_angle(math.atan2(dy, dx) - yaw))
        speed = min(self.max_speed, self.distance_gain * distance)
        if backing_off:  # straight, away from home
            steering, target_speed = 0.0, -math.copysign(0.5 * self.max_speed, ahead)
        elif abs(bearing) <= math.pi / 2:
            steering, target_speed = self.steering_gain * bearing, speed
        else:  # home behind: reverse, steering the rear towards it
            steering = -self.steering_gain * float(_wrap_angle(bearing - math.pi))
            target_speed = -speed
        throttle = self.speed_gain * (target_speed - vx)
        return float(np.clip(steering, -1, 1)), float(np.clip(throttle, -1, 1)), False, backing_off

    def run(self, env: gym.Env) -> bool:
        base = env.unwrapped
        backing_off = False
        for _ in range(self.max_steps):
            state = base.state  # type: ignore[attr-defined]
            steering, throttle, arrived, backing_off = self.control(
                state["pose"][0], state["velocity"][0], backing_off
            )
            if arrived:
                return True
            base.step(np.array([steering, throttle], dtype=np.float32))
        logger.warning("car auto reset did not reach %s within %d steps", self.home, self.max_steps)
        return False


@dataclass(frozen=True)
class PandaHomeReset(AutoReset):
    """Panda: open the gripper and move the tip back to ``home``, through the env's own action.

    Relies on the state keys ``tip_pos`` and ``tip_target`` (the target the action moves; the
    tip alone where a state has no target) and the action (Δx, Δy, Δz, g), g of the sign opposite
    to the robot module's ``GRIPPER_CLOSE_SIGN`` opening the gripper; a unit action moves the
    target by the task's ``max_tip_step`` (m). The default home is the robot module's home tip.

    The action moves a target, never the tip itself: a real impedance arm can settle short of
    its target (joint friction, an unmodelled payload) by more than ``tolerance``. Once the
    target is home and every tip of the last ``settle_steps`` steps lies within
    ``settle_distance`` of the newest, the routine stops and reports that it did not reach the
    start (the operator is told and decides) instead of waiting out ``max_steps``.
    """

    home: tuple[float, float, float] = tuple(robots.panda.HOME_TIP_POS.tolist())
    tolerance: float = robots.panda.RESET_HOME_TOLERANCE
    max_steps: int = 200
    settle_steps: int = 20
    settle_distance: float = 5e-4

    description = "open the gripper and move the arm home"

    def run(self, env: gym.Env) -> bool:
        base = env.unwrapped
        step = float(
            getattr(getattr(base.task, "config", None), "max_tip_step", robots.panda.MAX_TIP_STEP)
        )  # type: ignore[attr-defined]
        home = np.asarray(self.home, dtype=np.float64)
        tips_with_target_home: list[np.ndarray] = []
        for _ in range(self.max_steps):
            state = base.state  # type: ignore[attr-defined]
            tip = np.asarray(state["tip_pos"][0], dtype=np.float64)
            if np.linalg.norm(home - tip) < self.tolerance:
                return True
            # Steer the target, not the tip: the action moves the target, and the compliant arm
            # trails it, so steering on the tip's error winds the target up and circles home.
            target = np.asarray(state.get("tip_target", state["tip_pos"])[0], dtype=np.float64)
            if np.linalg.norm(home - target) < 1e-6:
                tips_with_target_home.append(tip)
                window = tips_with_target_home[-self.settle_steps - 1 :]
                spread = max(float(np.linalg.norm(t - window[-1])) for t in window)
                if len(window) > self.settle_steps and spread < self.settle_distance:
                    logger.warning(
                        "Panda auto reset: the target is home but the tip settled %.1f mm from it "
                        "(tolerance %.1f mm)",
                        1e3 * np.linalg.norm(home - tip),
                        1e3 * self.tolerance,
                    )
                    return False
            else:
                tips_with_target_home.clear()
            delta = np.clip((home - target) / step, -1.0, 1.0)
            opening = -robots.panda.GRIPPER_CLOSE_SIGN
            base.step(np.array([*delta, opening], dtype=np.float32))
        logger.warning(
            "Panda auto reset did not reach %s within %d steps", self.home, self.max_steps
        )
        return False


@dataclass(frozen=True)
class HomeReset(AutoReset):
    """Runs the backend's own ``home()`` (the Go1 stands up), part of every backend's contract.

    Available on real backends (a simulator places its world at reset instead).
    """

    description = "stand up"

    def available(self, env: gym.Env) -> bool:
        return getattr(getattr(env.unwrapped, "backend", None), "kind", "sim") != "sim"

    def run(self, env: gym.Env) -> bool:
        env.unwrapped.backend.home()  # type: ignore[attr-defined]
        return True


#: Automatic reset per robot (``Task.robot``).
DEFAULT_AUTO_RESETS: dict[str, Callable[[], AutoReset]] = {
    "panda": PandaHomeReset,
    "go1": HomeReset,
    "racecar": DriveBackReset,
}


# --------------------------------------------------------------------------------------------
# The wrapper
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetPromptConfig:
    """Settings of :class:`ResetPromptWrapper`.

    Attributes:
        enabled: None (default): active only for real backends; True forces it on in sim
            (demos, tests), False turns it off.
        instructions: What to tell the operator before each episode; default per robot
            (:data:`RESET_INSTRUCTIONS`).
        timeout: Seconds to wait for ``ready`` per prompt; None: no limit.
        max_timeouts: Reset prompts that may time out in a row before :class:`OperatorTimeoutError`.
        ask_label: Ask for a success/failure label when an episode ends.
        label_timeout: Seconds to wait for the label; then the episode is ``"unlabelled"``.
        success_reward: Added to the last reward of an episode labelled ``success``.
        failure_reward: Added to the last reward of an episode labelled ``failure``.
        label_overrides_success: ``info["is_success"]`` of the last step follows the label.
        auto_reset: ``"auto"``: the robot's default (:data:`DEFAULT_AUTO_RESETS`); None: none.
    """

    enabled: bool | None = None
    instructions: str | None = None
    timeout: float | None = 600.0
    max_timeouts: int = 3
    ask_label: bool = True
    label_timeout: float | None = 120.0
    success_reward: float = 0.0
    failure_reward: float = 0.0
    label_overrides_success: bool = True
    auto_reset: AutoReset | Literal["auto"] | None = "auto"

    def __post_init__(self) -> None:
        for name in ("timeout", "label_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 seconds or None, got {value}")
        if self.max_timeouts < 1:
            raise ValueError(f"max_timeouts must be >= 1, got {self.max_timeouts}")


class ResetPromptWrapper(gym.Wrapper):
    """Asks the operator to reset the scene and to label episodes (real robots; see module doc).

    Example::

        env = ResetPromptWrapper(env, TerminalOperator())
    """

    def __init__(
        self, env: gym.Env, operator: Operator, config: ResetPromptConfig | None = None
    ) -> None:
        super().__init__(env)
        if not isinstance(operator, Operator):
            raise TypeError(f"operator must be an Operator, got {type(operator).__name__}")
        self.operator = operator
        self.config = config = config if config is not None else ResetPromptConfig()
        base = env.unwrapped
        self.robot = getattr(getattr(base, "task", None), "robot", None)
        kind = getattr(getattr(base, "backend", None), "kind", "real")
        self.active = kind != "sim" if config.enabled is None else config.enabled
        self.instructions = config.instructions or RESET_INSTRUCTIONS.get(
            self.robot or "", "Reset the scene for the next episode."
        )
        auto = config.auto_reset
        if auto == "auto":
            factory = DEFAULT_AUTO_RESETS.get(self.robot or "")
            auto = factory() if factory is not None else None
        self.auto_reset = auto
        self._abort = threading.Event()
        self._stop_requested = False
        # How the last episode started (seed, options, generator state), and the start to
        # repeat when the operator chose "retry".
        self._last_start: dict[str, Any] | None = None
        self._retry_start: dict[str, Any] | None = None
        self.episode_labels: list[str] = []

    def request_abort(self) -> None:
        """End the running episode at the next step (truncated, ``"operator_abort"``)."""
        self._abort.set()

    # -- reset -----------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if not self.active:
            return self.env.reset(seed=seed, options=options)
        if self._stop_requested:
            raise OperatorStopError("the operator chose 'stop' at the end of the last episode")
        auto_runs = self._wait_until_ready()
        rng = getattr(self.env.unwrapped, "np_random", None)
        retry, self._retry_start = self._retry_start, None
        retried = retry is not None
        if retry is not None:
            # Same random draws as the discarded episode: same goal, command and randomisation.
            # A seeded episode is repeated with its seed (the generator state before the reset
            # is not the one the seed made); an unseeded one from the generator state.
            seed, options = retry["seed"], retry["options"]
            if seed is None and rng is not None and retry["rng_state"] is not None:
                rng.bit_generator.state = retry["rng_state"]
        self._last_start = {
            "seed": seed,
            "options": options,
            "rng_state": rng.bit_generator.state if rng is not None else None,
        }
        self._abort.clear()
        obs, info = self.env.reset(seed=seed, options=options)
        info["operator"] = {"auto_resets": auto_runs, "retry": retried}
        return obs, info

    def _wait_until_ready(self) -> int:
        auto_runs = 0
        timeouts = 0
        while True:
            choices = [READY, STOP]
            auto = self.auto_reset
            if auto is not None and auto.available(self.env):
                choices.insert(1, Choice(AUTO.name, AUTO.key, auto.description))
            logger.info(
                "waiting up to %s s for the operator to reset the scene",
                self.config.timeout if self.config.timeout is not None else "∞",
            )
            try:
                answer = self.operator.ask(self.instructions, choices, self.config.timeout)
            except OperatorTimeoutError as error:
                timeouts += 1
                logger.warning(
                    "no answer to the reset prompt (%s), %d of %d",
                    error,
                    timeouts,
                    self.config.max_timeouts,
                )
                if timeouts >= self.config.max_timeouts:
                    raise OperatorTimeoutError(
                        f"the operator did not confirm the reset within {self.config.timeout} s, "
                        f"{timeouts} times in a row; prompt was: {self.instructions!r}"
                    ) from error
                continue
            timeouts = 0
            if answer == READY.name:
                return auto_runs
            if answer == STOP.name:
                raise OperatorStopError("the operator chose 'stop' at the reset prompt")
            if answer == AUTO.name and auto is not None:
                auto_runs += 1
                reached = auto.run(self.env)
                self.operator.tell(
                    f"automatic reset {'done' if reached else 'did NOT reach the start'}; "
                    "check the scene and confirm"
                )

    # -- step ------------------------------------------------------------------------------

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not self.active:
            return obs, reward, terminated, truncated, info
        if self._abort.is_set() and not (terminated or truncated):
            self._abort.clear()
            truncated = True
            info["truncation_reason"] = OPERATOR_ABORT
            logger.warning("episode aborted by the operator")
        if (terminated or truncated) and self.config.ask_label:
            reward = self._label(reward, info)
        return obs, reward, terminated, truncated, info

    def _label(self, reward: float, info: dict[str, Any]) -> float:
        env_success = info.get("is_success")
        message = (
            f"Episode over ({info.get('truncation_reason', 'terminated')}; env success: "
            f"{env_success}). Label it:"
        )
        timeout = self.config.label_timeout
        logger.info(
            "waiting up to %s s for the operator to label the episode",
            timeout if timeout is not None else "∞",
        )
        try:
            label = self.operator.ask(message, LABEL_CHOICES, timeout)
        except OperatorTimeoutError as error:
            logger.warning("no episode label from the operator (%s): 'unlabelled'", error)
            label = "unlabelled"
        except OperatorUnavailableError as error:
            # The step has happened: return its transition; the next reset prompt fails loudly.
            logger.error("the operator cannot be asked for a label (%s): 'unlabelled'", error)
            label = "unlabelled"
        human_reward = 0.0
        if label == "success":
            human_reward = self.config.success_reward
        elif label == "failure":
            human_reward = self.config.failure_reward
        if label in ("success", "failure") and self.config.label_overrides_success:
            info["is_success"] = label == "success"
        if label in ("discard", "retry"):
            info["discard_episode"] = True
        if label == "retry":
            self._retry_start = self._last_start
        if label == "stop":
            self._stop_requested = True
        info["operator"] = {
            "label": label,
            "human_reward": human_reward,
            "env_is_success": env_success,
        }
        self.episode_labels.append(label)
        return float(reward) + human_reward
