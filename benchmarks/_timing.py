"""Timing helpers and the result table shared by the benchmark scripts."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence


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
    #: CPU µs per item of every timed block, in order (measure_interleaved's pairs line up).
    block_cpu_us: tuple[float, ...] = ()


def median_ratio(numerator: Measurement, denominator: Measurement) -> float:
    """The median over timed blocks of numerator / denominator CPU per item: blocks measured
    in turn (:func:`measure_interleaved`) saw the same load, so each pair's ratio is fair."""
    ratios = sorted(
        a / b for a, b in zip(numerator.block_cpu_us, denominator.block_cpu_us, strict=True)
    )
    if not ratios:
        raise ValueError("no timed blocks to compare")
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else 0.5 * (ratios[middle - 1] + ratios[middle])


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


def measure_interleaved(
    steps: Mapping[str, Callable[[], object]],
    items_per_call: int,
    *,
    seconds: float,
    repeats: int = 3,
    warmup_calls: int = 2,
) -> dict[str, Measurement]:
    """:func:`measure` for several steps whose ratio matters, their blocks taken in turn.

    On a shared machine the load drifts within seconds; measuring one step's blocks after the
    other's lets the drift into the ratio, alternating them gives both the same conditions.
    """
    calls: dict[str, int] = {}
    for name, step in steps.items():
        for _ in range(warmup_calls):
            step()
        start = time.perf_counter()
        step()
        calls[name] = max(1, math.ceil(seconds / max(time.perf_counter() - start, 1e-7)))
    walls: dict[str, list[float]] = {name: [] for name in steps}
    cpus: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls[name]):
                step()
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(time.process_time() - start_cpu)
    results = {}
    for name in steps:
        items = items_per_call * calls[name]
        block_cpu = tuple(1e6 * cpu / items for cpu in cpus[name])
        results[name] = Measurement(items / min(walls[name]), min(block_cpu), block_cpu)
    return results


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
