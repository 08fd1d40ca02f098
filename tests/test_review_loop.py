"""Review of the one-step-loop refactor (issue 9): each test pins one bug found in review.

* a ``stop()`` from another thread that lands while ``apply`` is sending must leave the device in
  its safe state (the command must not overtake the stop);
* ``stop()`` must be re-entrant in the calling thread (a Ctrl-C handler calling it while the
  same thread is inside ``stop()`` must not deadlock);
* the vector env must give the same answer as the single env to bool / integer actions;
* ``make_env`` on a real backend must refuse turned-off limits however they are spelled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import gymnasium as gym
import numpy as np
import pytest

import sim2online_envs
from sim2online_envs.hardware.base import ClockConfig, Reading, RealBackend
from sim2online_envs.safety import SafetyConfig


class Recorder(RealBackend):
    """A device that records what reached it, in order."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__(ClockConfig(control_dt=0.01, watchdog_periods=None))
        self.events: list[str] = []
        self.on_send: Callable[[], None] | None = None
        self.on_stop: Callable[[], None] | None = None

    def send_command(self, command: Mapping[str, np.ndarray]) -> None:
        hook, self.on_send = self.on_send, None
        if hook is not None:
            hook()
        self.events.append("send")

    def read(self, max_age: float) -> Reading:
        return Reading({"pos": np.zeros(2)}, stamp=time.monotonic())

    def stop_devices(self) -> None:
        hook, self.on_stop = self.on_stop, None
        if hook is not None:
            hook()
        self.events.append("stop")


def _start(backend: RealBackend) -> None:
    backend.reset_worlds(np.zeros(1, dtype=np.int64), [np.random.default_rng(0)])


def test_a_stop_from_another_thread_during_send_is_not_overtaken_by_the_command() -> None:
    backend = Recorder()
    _start(backend)
    stopper = threading.Thread(target=backend.stop)

    def stop_arrives_now() -> None:
        # The other thread's stop() lands after apply() checked the latch, before the command
        # reached the device.
        stopper.start()
        stopper.join(0.5)

    backend.on_send = stop_arrives_now
    state = backend.apply({"force": np.zeros(1)})
    stopper.join(5.0)
    assert backend.stopped and not state["valid"][0]
    assert backend.events[-1] == "stop", backend.events  # the device ends in its safe state
    backend.close()


def test_stop_is_reentrant_in_its_own_thread() -> None:
    """A SIGINT handler calling stop() while the main thread is inside stop() must not hang."""
    backend = Recorder()
    _start(backend)
    backend.on_stop = backend.stop  # the re-entrant call, as a signal handler would make it
    caller = threading.Thread(target=backend.stop, daemon=True)
    caller.start()
    caller.join(5.0)
    assert not caller.is_alive(), "stop() deadlocked on its own lock"
    assert backend.stopped
    backend.close()


@pytest.mark.parametrize(
    ("safety", "dtype"),
    [(None, bool), ({"allow_integer_actions": False}, np.int64)],
)
def test_the_vec_env_refuses_the_action_dtypes_the_single_env_refuses(
    safety: dict | None, dtype: type
) -> None:
    kwargs = {} if safety is None else {"safety": safety}
    env = gym.make("SimRaceCar-v0", **kwargs)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="dtype"):
        env.step(np.zeros(2, dtype=dtype))
    venv = sim2online_envs.make_vec("SimRaceCar-v0", 2, seed=0, **kwargs)
    venv.reset()
    with pytest.raises(TypeError, match="dtype"):
        venv.step(np.zeros((2, 2), dtype=dtype))
    venv.close()
    env.close()


@pytest.mark.parametrize("safety", [{"limits": None}, SafetyConfig(limits=None)])
def test_make_env_on_a_real_backend_refuses_limits_off_however_spelled(safety: object) -> None:
    with pytest.raises(ValueError, match="always runs its limits"):
        env = sim2online_envs.make_env("racecar", "twin", safety=safety)
        env.close()
