"""Control-rate timing: hold a fixed control period and report how well it was held.

On hardware the policy must act at a fixed rate: the dynamics the policy learned assume one
control period between actions. :class:`ControlRateWrapper` sleeps before each step until the
next tick (a coarse ``time.sleep`` followed by a spin on ``time.perf_counter``, which holds the
tick to tens of microseconds where ``sleep`` alone overshoots by up to a millisecond or more) and
reports in ``info["timing"]``:

=================== ==============================================================================
key                 meaning
=================== ==============================================================================
``period``          seconds between this command and the previous one (NaN on the first step)
``target_period``   the period the wrapper holds
``jitter``          ``period - target_period``
``lateness``        seconds the command was sent after its tick (0 when on time)
``deadline_missed`` the command went out more than ``miss_tolerance`` after its tick
``deadline_misses`` missed deadlines in this episode
``observation_age`` seconds from the previous observation being returned to this command
                    being sent: policy latency plus waiting, i.e. how stale the state the
                    action was computed from is
``step_duration``   seconds the inner ``step`` took (command, physics or wire, observation)
=================== ==============================================================================

After a missed deadline the schedule restarts from the late command instead of rushing to catch
up (two quick commands would be worse for the robot than one late one), so no period is shorter
than ``target_period - miss_tolerance``. With
``max_consecutive_misses`` set, the episode is truncated (``"timing"``) when the loop keeps
falling behind.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

logger = logging.getLogger(__name__)

#: ``info["truncation_reason"]`` when the loop falls behind.
TIMING = "timing"


def precise_sleep_until(deadline: float, spin: float = 0.002) -> None:
    """Sleep until ``time.perf_counter()`` reaches ``deadline``.

    ``time.sleep`` covers all but the last ``spin`` seconds (the OS may wake us late); the rest
    is a busy wait on ``perf_counter``, so the return is within microseconds of the deadline.
    """
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        if remaining > spin:
            time.sleep(remaining - spin)


@dataclass(frozen=True)
class TimingConfig:
    """Settings of :class:`ControlRateWrapper`.

    Attributes:
        period: Control period in seconds; default the env's ``control_dt``.
        spin: Seconds before each tick spent busy-waiting instead of sleeping.
        miss_tolerance: Lateness (seconds) that counts as a missed deadline; default a tenth of
            the period.
        max_consecutive_misses: Truncate the episode (``"timing"``) after this many missed
            deadlines in a row; None: never.
    """

    period: float | None = None
    spin: float = 0.002
    miss_tolerance: float | None = None
    max_consecutive_misses: int | None = None

    def __post_init__(self) -> None:
        if self.period is not None and not self.period > 0:
            raise ValueError(f"period must be > 0 seconds, got {self.period}")
        if not self.spin >= 0:  # NaN too
            raise ValueError(f"spin must be >= 0 seconds, got {self.spin}")
        if self.miss_tolerance is not None and not self.miss_tolerance >= 0:
            raise ValueError(f"miss_tolerance must be >= 0 seconds, got {self.miss_tolerance}")
        if self.max_consecutive_misses is not None and self.max_consecutive_misses < 1:
            raise ValueError(
                f"max_consecutive_misses must be >= 1 or None, got {self.max_consecutive_misses}"
            )


class ControlRateWrapper(gym.Wrapper):
    """Holds a fixed control period with a precise sleep; reports timing in ``info["timing"]``.

    Example::

        env = ControlRateWrapper(gym.make("SimRaceCar-v0"))   # 60 Hz, the car's control_dt
    """

    def __init__(self, env: gym.Env, config: TimingConfig | None = None):
        super().__init__(env)
        self.config = config = config if config is not None else TimingConfig()
        period = config.period
        if period is None:
            period = getattr(env.unwrapped, "control_dt", None)
            if period is None:
                raise ValueError(
                    f"{type(env.unwrapped).__name__} has no control_dt; pass TimingConfig(period=…)"
                )
        self.period = float(period)
        self.miss_tolerance = (
            config.miss_tolerance if config.miss_tolerance is not None else 0.1 * self.period
        )
        self._next_tick = math.nan
        self._last_send = math.nan
        self._last_obs_time = math.nan
        self._misses = 0
        self._consecutive = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        now = time.perf_counter()
        self._next_tick = now + self.period
        self._last_send = math.nan
        self._last_obs_time = now
        self._misses = 0
        self._consecutive = 0
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if math.isnan(self._next_tick):
            raise RuntimeError("call reset() before step()")
        if time.perf_counter() < self._next_tick:
            precise_sleep_until(self._next_tick, self.config.spin)
        send = time.perf_counter()
        # Late beyond the tolerance (a slow policy, or the OS waking us late) is a miss: the
        # schedule restarts from this command. Otherwise it keeps its phase.
        lateness = max(0.0, send - self._next_tick)
        missed = lateness > self.miss_tolerance
        if missed:
            self._misses += 1
            self._consecutive += 1
        else:
            self._consecutive = 0
        self._next_tick = (send if missed else self._next_tick) + self.period
        period = send - self._last_send
        observation_age = send - self._last_obs_time
        self._last_send = send

        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last_obs_time = time.perf_counter()
        info["timing"] = {
            "period": period,
            "target_period": self.period,
            "jitter": period - self.period,
            "lateness": lateness,
            "deadline_missed": missed,
            "deadline_misses": self._misses,
            "observation_age": observation_age,
            "step_duration": self._last_obs_time - send,
        }
        limit = self.config.max_consecutive_misses
        if limit is not None and self._consecutive >= limit and not (terminated or truncated):
            truncated = True
            info["truncation_reason"] = TIMING
            logger.warning(
                "control loop missed %d deadlines in a row (period %.4f s): episode truncated",
                self._consecutive,
                self.period,
            )
        return obs, reward, terminated, truncated, info
