"""Reading docs/parameters.md's tables for the tests that hold them equal to the code.

A Field cell is one code expression in backticks; a Value cell holds numbers printed to their
last digit ("× n" repeats them), "on"/"off" for booleans, or a name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

DOC = Path(__file__).resolve().parents[1] / "docs" / "parameters.md"
MINUS, TIMES = "\u2212", "\u00d7"  # as the docs print them
NUMBER = rf"[{MINUS}-]?\d+(?:\.\d+)?"
COLUMNS = ["Quantity", "Field", "Value", "Unit", "Source", "Randomised"]


def section_rows(section: str) -> list[dict[str, str]]:
    """The first table's rows under ``## <section>``, as {column: cell}."""
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/parameters.md has no '## {section}' section"
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for line in match.group(1).splitlines():
        if not line.startswith("|"):
            if header is not None and rows:
                break  # the first table only
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("-: "):
            rows.append(dict(zip(header, cells, strict=True)))
    assert header == COLUMNS, header
    return rows


def code(cell: str) -> str:
    """The code expression of a table cell written as one backticked span (e.g. a Field column)."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"a Field cell must be one code expression in backticks, got {cell!r}"
    return match.group(1)


def numbers(text: str) -> tuple[np.ndarray, float]:
    """The numbers of a cell, with "× n" repeats, and half a unit of the last printed digit."""
    repeat = re.search(rf"{TIMES}\s*(\d+)\s*$", text)
    body = text[: repeat.start()] if repeat else text
    found = re.findall(NUMBER, body)
    assert found, f"no number in {text!r}"
    values = np.array([float(value.replace(MINUS, "-")) for value in found])
    decimals = max(len(value.partition(".")[2]) for value in found)
    if repeat:
        values = np.tile(values, int(repeat.group(1)))
    return values, 0.5 * 10.0**-decimals


def same(written: str, value: Any) -> bool:
    """Whether a Value cell states ``value`` (to its last printed digit)."""
    if written in ("on", "off"):
        return isinstance(value, bool) and value == (written == "on")
    if isinstance(value, str):
        return written == value
    expected, tolerance = numbers(written)
    actual = np.ravel(np.asarray(value, dtype=np.float64))
    return actual.shape == expected.shape and bool(
        np.all(np.abs(actual - expected) <= tolerance * (1 + 1e-9))
    )
