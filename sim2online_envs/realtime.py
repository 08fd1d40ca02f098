"""Real-time scheduling for the control loop: the thread that steps the robot runs ``SCHED_FIFO``.

A control loop at 60 Hz that shares its cores with a learner, Ray's processes or anybody else's
job misses ticks whenever the scheduler gives its core away at the moment its sleep ends. Under
a fixed-priority real-time policy the woken loop preempts every normal task at once, which is
how libfranka's own loop (and every ROS control node) is meant to run. Only the calling thread
is raised: ``SCHED_RESET_ON_FORK`` makes every thread and process it starts afterwards (the
learner, Ray's head, torch's pools) a normal task again, so nothing else inherits the priority.

Needs ``CAP_SYS_NICE`` or an ``rtprio`` limit (``/etc/security/limits.conf``: ``@realtime -
rtprio 80``); without it :func:`enter_realtime` raises :class:`RealtimeUnavailableError` naming
what to change, never silently runs at normal priority. Linux only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Highest priority accepted: leave the kernel's own threads (IRQ threads at 50 on PREEMPT_RT,
#: watchdogs at 99) above the loop unless the user asks otherwise.
MAX_PRIORITY = 98


class RealtimeUnavailableError(RuntimeError):
    """The calling thread could not be given a real-time policy (and why)."""


@dataclass(frozen=True)
class SchedulingState:
    """A thread's policy, priority and CPU affinity, to restore with :func:`leave_realtime`."""

    policy: int
    priority: int
    cpus: frozenset[int]


def current_scheduling() -> SchedulingState:
    """The calling thread's scheduling policy, priority and CPUs."""
    _require_linux()
    return SchedulingState(
        policy=os.sched_getscheduler(0),
        priority=os.sched_getparam(0).sched_priority,
        cpus=frozenset(os.sched_getaffinity(0)),
    )


def enter_realtime(priority: int, cpus: Iterable[int] | None = None) -> SchedulingState:
    """Run the calling thread under ``SCHED_FIFO`` at ``priority`` (1 … 98), optionally pinned
    to ``cpus``; returns the previous state for :func:`leave_realtime`."""
    _require_linux()
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {priority!r}")
    if not 1 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be in 1 … {MAX_PRIORITY}, got {priority}")
    pinned: set[int] | None = None
    if cpus is not None:
        pinned = {int(cpu) for cpu in cpus}
        available = os.sched_getaffinity(0)
        if not pinned or not pinned <= available:
            raise ValueError(f"cpus must be a non-empty subset of {sorted(available)}, got {cpus}")
    previous = current_scheduling()
    policy = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    try:
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except PermissionError as error:
        raise RealtimeUnavailableError(
            f"SCHED_FIFO at priority {priority} was refused ({error.strerror}): run with "
            "CAP_SYS_NICE (e.g. `sudo setcap cap_sys_nice+ep $(readlink -f $(which python))`) "
            "or give your group an rtprio limit in /etc/security/limits.conf "
            f"(`@realtime - rtprio {priority}`, then log in again)"
        ) from error
    if pinned is not None:
        try:
            os.sched_setaffinity(0, pinned)
        except OSError:
            _restore_while_unwinding(previous)
            raise
    logger.info(
        "control loop thread at SCHED_FIFO priority %d%s",
        priority,
        f" on CPUs {sorted(pinned)}" if pinned is not None else "",
    )
    return previous


def leave_realtime(previous: SchedulingState) -> None:
    """Restore the state :func:`enter_realtime` returned.

    Clearing ``SCHED_RESET_ON_FORK`` again needs ``CAP_SYS_NICE``; a thread raised through an
    ``rtprio`` limit alone keeps the flag (its later children start normal, as they would anyway)
    rather than fail here and hide the exception the loop may be unwinding with.
    """
    _require_linux()
    param = os.sched_param(previous.priority)
    try:
        os.sched_setscheduler(0, previous.policy, param)
    except PermissionError:
        os.sched_setscheduler(0, previous.policy | os.SCHED_RESET_ON_FORK, param)
    os.sched_setaffinity(0, previous.cpus)


@contextmanager
def realtime_loop(priority: int | None, cpus: Iterable[int] | None = None) -> Iterator[None]:
    """The calling thread under ``SCHED_FIFO`` at ``priority`` inside the block and restored
    after it; ``None`` or 0 leaves it as it is (the command lines' default)."""
    if not priority:
        yield
        return
    previous = enter_realtime(priority, cpus)
    try:
        yield
    except BaseException:
        _restore_while_unwinding(previous)
        raise
    leave_realtime(previous)


def _restore_while_unwinding(previous: SchedulingState) -> None:
    """Restore, logging (not raising) a failure: the exception in flight is the one to see."""
    try:
        leave_realtime(previous)
    except OSError:
        logger.exception("could not restore the thread's scheduling to %s", previous)


def _require_linux() -> None:
    if not hasattr(os, "sched_setscheduler") or not hasattr(os, "SCHED_RESET_ON_FORK"):
        raise RealtimeUnavailableError("real-time scheduling is supported on Linux only")


__all__ = [
    "MAX_PRIORITY",
    "RealtimeUnavailableError",
    "SchedulingState",
    "current_scheduling",
    "enter_realtime",
    "leave_realtime",
    "realtime_loop",
]
