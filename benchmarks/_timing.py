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


def best_rate(
    step: Callable[[], object],
    items_per_call: int,
    *,
    seconds: float,
    repeats: int = 3,
    warmup_calls: int = 2,
) -> float:
    """Items per second of ``step()``: the best of ``repeats`` timed blocks of about ``seconds``.

    On a shared machine the fastest block is the most reproducible estimate of what the code
    costs (other processes only ever slow a block down).
    """
    for _ in range(warmup_calls):
        step()
    start = time.perf_counter()
    step()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, math.ceil(seconds / once))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            step()
        best = min(best, time.perf_counter() - start)
    return items_per_call * calls / best


def format_rate(rate: float) -> str:
    """Three significant digits with a thousands separator: 1,230,000 or 45.6."""
    if rate >= 100:
        digits = max(0, len(str(int(rate))) - 3)
        return f"{round(rate, -digits):,.0f}"
    return f"{rate:.3g}"


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (what docs/performance.md shows)."""
    lines = [
        "| section | benchmark | worlds | rate | unit | ratio | target |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.section} | {row.name} | {row.worlds} | {format_rate(row.rate)} | {row.unit} "
            f"| {row.ratio} | {row.target} |"
        )
    notes = [f"- {row.section} / {row.name}: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
