"""Control-rate timing at the race car's 60 Hz: info present and plausible, misses counted.

The machine is shared, so the checks are the ones the wrapper guarantees (never faster than the
rate, consistent bookkeeping) plus loose plausibility, not tight latency thresholds.
"""

from __future__ import annotations

import math
import time

import gymnasium as gym
import numpy as np
import pytest
from sim2online_envs.wrappers.timing import (
    TIMING,
    ControlRateWrapper,
    TimingConfig,
    precise_sleep_until,
)

import sim2online_envs  # noqa: F401  (registers the ids)

KEYS = {
    "period",
    "target_period",
    "jitter",
    "lateness",
    "deadline_missed",
    "deadline_misses",
    "observation_age",
    "step_duration",
}


def test_precise_sleep_never_returns_early() -> None:
    for delay in (0.0, 0.001, 0.004):
        deadline = time.perf_counter() + delay
        precise_sleep_until(deadline)
        assert time.perf_counter() >= deadline


def test_timing_info_at_60_hz_is_present_and_plausible() -> None:
    env = ControlRateWrapper(gym.make("SimRaceCar-v0"))
    target = 1.0 / 60.0
    assert env.period == pytest.approx(target)
    env.reset(seed=0)
    timings = []
    started = time.perf_counter()
    for _ in range(30):
        *_, info = env.step(np.zeros(2, dtype=np.float32))
        timings.append(info["timing"])
    elapsed = time.perf_counter() - started
    assert all(set(t) == KEYS for t in timings)
    assert math.isnan(timings[0]["period"])
    periods = np.array([t["period"] for t in timings[1:]])
    # Never faster than the rate: a period is cut by at most the miss tolerance (a tenth).
    assert np.all(periods >= 0.9 * target - 1e-6)
    assert elapsed >= 29 * target
    # Plausible: on time most of the time even on a shared machine.
    assert np.median(periods) < 3 * target
    for t in timings[1:]:
        assert t["jitter"] == pytest.approx(t["period"] - target)
        assert t["lateness"] >= 0 and t["observation_age"] >= 0 and t["step_duration"] >= 0
    missed = [t["deadline_missed"] for t in timings]
    assert timings[-1]["deadline_misses"] == sum(missed)


def test_a_slow_loop_misses_deadlines_and_can_be_truncated() -> None:
    config = TimingConfig(period=0.01, max_consecutive_misses=2)
    env = ControlRateWrapper(gym.make("SimRaceCar-v0"), config)
    env.reset(seed=0)
    *_, info = env.step(np.zeros(2, dtype=np.float32))  # may or may not be on time
    consecutive = int(info["timing"]["deadline_missed"])
    for _ in range(3):
        time.sleep(0.05)  # the policy takes five periods: a certain miss
        _, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
        timing = info["timing"]
        assert timing["deadline_missed"]
        assert timing["lateness"] >= 0.03 and timing["observation_age"] >= 0.05
        consecutive += 1
        assert truncated == (consecutive >= 2) and not terminated
        if truncated:
            break
    assert info["truncation_reason"] == TIMING
    assert info["timing"]["deadline_misses"] == consecutive


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="period"):
        TimingConfig(period=0.0)
    with pytest.raises(ValueError, match="max_consecutive_misses"):
        TimingConfig(max_consecutive_misses=0)
    # NaN compares false: a NaN tolerance would never count a miss, a NaN spin never sleep.
    with pytest.raises(ValueError, match="miss_tolerance"):
        TimingConfig(miss_tolerance=float("nan"))
    with pytest.raises(ValueError, match="spin"):
        TimingConfig(spin=float("nan"))
    with pytest.raises(RuntimeError, match="reset"):
        ControlRateWrapper(gym.make("SimRaceCar-v0")).step(np.zeros(2, dtype=np.float32))
