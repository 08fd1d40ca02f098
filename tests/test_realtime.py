"""The control loop's real-time scheduling: only the calling thread is raised, threads it starts
afterwards are normal, the state is restored, and bad input or a refusal names the problem."""

from __future__ import annotations

import os
import threading

import pytest

from sim2online_envs import realtime
from sim2online_envs.realtime import (
    RealtimeUnavailableError,
    current_scheduling,
    enter_realtime,
    realtime_loop,
)

pytestmark = pytest.mark.skipif(
    not hasattr(os, "SCHED_RESET_ON_FORK"), reason="real-time scheduling is Linux only"
)


def _fifo_permitted() -> bool:
    if not hasattr(os, "sched_setscheduler"):
        return False
    probe: dict[str, bool] = {}

    def attempt() -> None:  # in a thread of its own, so this test's thread is never raised
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            probe["ok"] = True
        except OSError:
            probe["ok"] = False

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return probe["ok"]


def _in_thread(body):
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = body()
        except BaseException as error:  # handed back to the test's thread
            result["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10.0)
    assert not thread.is_alive()
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.mark.skipif(not _fifo_permitted(), reason="SCHED_FIFO not permitted here (no CAP_SYS_NICE)")
def test_the_loop_thread_runs_fifo_and_what_it_starts_does_not() -> None:
    def body():
        before = current_scheduling()
        with realtime_loop(20):
            inside = current_scheduling()
            child: dict = {}
            thread = threading.Thread(target=lambda: child.update(state=current_scheduling()))
            thread.start()
            thread.join()
        return before, inside, child["state"], current_scheduling()

    before, inside, child, after = _in_thread(body)
    assert inside.policy & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO and inside.priority == 20
    assert inside.policy & os.SCHED_RESET_ON_FORK
    assert child.policy == os.SCHED_OTHER and child.priority == 0  # not inherited
    assert after == before


@pytest.mark.skipif(not _fifo_permitted(), reason="SCHED_FIFO not permitted here (no CAP_SYS_NICE)")
def test_pinning_to_cpus_and_restoring_them() -> None:
    cpu = min(os.sched_getaffinity(0))

    def body():
        previous = enter_realtime(10, cpus=[cpu])
        pinned = current_scheduling()
        realtime.leave_realtime(previous)
        return previous, pinned, current_scheduling()

    previous, pinned, after = _in_thread(body)
    assert pinned.cpus == frozenset({cpu})
    assert after == previous


def test_zero_or_none_leaves_the_thread_as_it_is() -> None:
    before = current_scheduling()
    for priority in (0, None):
        with realtime_loop(priority):
            assert current_scheduling() == before


def test_bad_settings_name_the_problem() -> None:
    with pytest.raises(ValueError, match="priority must be in 1"):
        enter_realtime(99)
    with pytest.raises(ValueError, match="priority must be in 1"):
        enter_realtime(-3)
    with pytest.raises(TypeError, match="priority must be an int"):
        enter_realtime(5.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cpus must be a non-empty subset"):
        enter_realtime(5, cpus=[10_000])
    with pytest.raises(ValueError, match="cpus must be a non-empty subset"):
        enter_realtime(5, cpus=[])


def test_a_refusal_says_what_to_change(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with pytest.raises(RealtimeUnavailableError, match=r"CAP_SYS_NICE.*rtprio"):
        enter_realtime(50)


def test_leaving_keeps_the_fork_flag_when_clearing_it_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An rtprio-limited user may not clear SCHED_RESET_ON_FORK: leaving must still succeed."""
    calls: list[int] = []

    def set_scheduler(_pid: int, policy: int, _param) -> None:
        calls.append(policy)
        if not policy & os.SCHED_RESET_ON_FORK:
            raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", set_scheduler)
    monkeypatch.setattr(os, "sched_setaffinity", lambda _pid, _cpus: None)
    previous = realtime.SchedulingState(policy=os.SCHED_OTHER, priority=0, cpus=frozenset({0}))
    realtime.leave_realtime(previous)
    assert calls == [os.SCHED_OTHER, os.SCHED_OTHER | os.SCHED_RESET_ON_FORK]


def test_a_refused_pinning_restores_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "sched_setscheduler", lambda _pid, policy, _param: calls.append(policy))

    def refuse_affinity(_pid: int, cpus) -> None:
        if cpus == {0}:
            raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "sched_setaffinity", refuse_affinity)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    with pytest.raises(OSError, match="Invalid argument"):
        enter_realtime(10, cpus=[0])
    before = os.sched_getscheduler(0)
    assert calls == [os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, before]


def test_a_failed_restore_does_not_hide_the_loops_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    previous = realtime.SchedulingState(policy=os.SCHED_OTHER, priority=0, cpus=frozenset({0}))
    monkeypatch.setattr(realtime, "enter_realtime", lambda priority, cpus=None: previous)

    def refuse(_previous) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(realtime, "leave_realtime", refuse)
    with (
        caplog.at_level("ERROR"),
        pytest.raises(KeyError, match="the loop's own"),
        realtime_loop(10),
    ):
        raise KeyError("the loop's own")
    assert "could not restore" in caplog.text
