"""Timing helpers and the result table shared by the benchmark scripts."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence


@dataclasses.dataclass
class Row:
    """One measured rate, and optionally its ratio to another row of the same table."""

    section: str
    name: str
    worlds: int | str
    rate: float
    unit: str = "world-steps/s"
    ratio: str = ""
    target: str = ""
    note: str = ""
    #: CPU time of this process (all its threads) per item, in microseconds; None where the
    #: work runs in other processes (SubprocVecEnv).
    cpu_us: float | None = None


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Items per second (wall clock) and CPU microseconds per item of this process."""

    rate: float
    cpu_us: float


def measure(
    step: Callable[[], object],
    items_per_call: int,
    *,
    seconds: float,
    repeats: int = 3,
    warmup_calls: int = 2,
) -> Measurement:
    """Rate of ``step()``: the best of ``repeats`` timed blocks of about ``seconds`` each.

    On a shared machine the fastest block is the most reproducible estimate of what the code
    costs (other processes only ever slow a block down). The CPU time is the least any block
    used: it counts every thread of this process and not the time others took the cores away.
    """
    for _ in range(warmup_calls):
        step()
    start = time.perf_counter()
    step()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, math.ceil(seconds / once))
    best_wall = best_cpu = math.inf
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            step()
        best_wall = min(best_wall, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    items = items_per_call * calls
    return Measurement(items / best_wall, 1e6 * best_cpu / items)


def format_rate(rate: float) -> str:
    """Three significant digits with a thousands separator: 1,230,000 or 45.6."""
    if rate >= 100:
        digits = max(0, len(str(int(rate))) - 3)
        return f"{round(rate, -digits):,.0f}"
    return f"{rate:.3g}"


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (what docs/performance.md shows)."""
    lines = [
        "| section | benchmark | worlds | rate | unit | CPU µs per item | ratio | target |",
        "|---|---|---:|---:|---|---:|---|---|",
    ]
    for row in rows:
        cpu = "-" if row.cpu_us is None else f"{row.cpu_us:.3g}"
        lines.append(
            f"| {row.section} | {row.name} | {row.worlds} | {format_rate(row.rate)} | {row.unit} "
            f"| {cpu} | {row.ratio} | {row.target} |"
        )
    notes = [f"- {row.section} / {row.name}: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
