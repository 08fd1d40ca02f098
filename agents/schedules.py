"""Schedules over gradient steps (not environment steps, not SB3's progress fraction).

The online fraction α of :class:`~sim2online_envs.agents.buffers.MixingReplayBuffer` follows the
number of minibatches drawn so far, so that the study's "0.5 → 1 over 10k gradient steps" means
the same thing whatever the episode length or ``gradient_steps`` per episode.

A schedule is any callable ``step -> float``. :func:`as_step_schedule` turns the accepted
spellings (a float, a callable, a ``(start, end, n_steps)`` tuple) into one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

#: What a user may pass wherever a step schedule is accepted.
StepScheduleLike = float | int | tuple[float, float, int] | Callable[[int], float]


@dataclass(frozen=True)
class ConstantStepSchedule:
    """The same value at every step."""

    value: float

    def __call__(self, step: int) -> float:
        del step
        return self.value


@dataclass(frozen=True)
class LinearStepSchedule:
    """Linear from ``start`` at step 0 to ``end`` at step ``n_steps``, constant afterwards.

    The study's online-fraction schedule is ``LinearStepSchedule(0.5, 1.0, 10_000)``.
    """

    start: float
    end: float
    n_steps: int

    def __post_init__(self) -> None:
        if not isinstance(self.n_steps, int) or isinstance(self.n_steps, bool) or self.n_steps < 0:
            raise ValueError(
                f"LinearStepSchedule n_steps must be an int >= 0, got {self.n_steps!r}"
            )

    def __call__(self, step: int) -> float:
        if self.n_steps == 0 or step >= self.n_steps:
            return float(self.end)
        fraction = max(step, 0) / self.n_steps
        return float(self.start + fraction * (self.end - self.start))


def as_step_schedule(value: StepScheduleLike, name: str = "schedule") -> Callable[[int], float]:
    """A callable ``step -> float`` from a float, a ``(start, end, n_steps)`` tuple or a callable.

    ``name`` is used in error messages, so that a bad ``online_fraction`` says so.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a float, a (start, end, n_steps) tuple or a callable")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        return ConstantStepSchedule(float(value))
    if isinstance(value, (tuple, list)):
        if len(value) != 3:
            raise ValueError(
                f"{name} as a sequence must be (start, end, n_steps), got {len(value)} items"
            )
        start, end, n_steps = value
        return LinearStepSchedule(float(start), float(end), int(n_steps))
    if callable(value):
        return value
    raise TypeError(
        f"{name} must be a float, a (start, end, n_steps) tuple or a callable, "
        f"got {type(value).__name__}"
    )
