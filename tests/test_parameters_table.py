"""docs/parameters.md against the code: every preset value is in its table, and equal.

The race car section has one table per preset (``### Preset "<name>"``); each row's Field is a
preset key (``dynamics``, ``car.mass``, ``randomization.mass_scale``) and its Value a number (4
significant digits), a ``(low, high)`` pair, or a name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sim2online_envs.robots import racecar

DOC = Path(__file__).resolve().parent.parent / "docs" / "parameters.md"


def _tables(section: str) -> dict[str, dict[str, str]]:
    """Preset name -> {field: value text} of the tables under ``## <section>``."""
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/parameters.md has no '## {section}' section"
    tables: dict[str, dict[str, str]] = {}
    current = None
    for line in match.group(1).splitlines():
        heading = re.match(r'^### Preset "(\w+)"', line)
        if heading:
            current = tables.setdefault(heading.group(1), {})
            continue
        if line.startswith("### "):
            current = None
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if current is not None and len(cells) >= 3 and cells[1].startswith("`"):
            field = cells[1].strip("`")
            assert field not in current, f"{field} listed twice"
            current[field] = cells[2]
    return tables


def _flat(preset: dict) -> dict[str, object]:
    flat = {key: value for key, value in preset.items() if key not in ("car", "randomization")}
    flat.update({f"car.{key}": value for key, value in preset["car"].items()})
    flat.update({f"randomization.{key}": value for key, value in preset["randomization"].items()})
    return flat


def _same(written: str, value: object) -> bool:
    if isinstance(value, str):
        return written == value
    if isinstance(value, tuple):
        parts = re.fullmatch(r"\(([^,]+),\s*([^)]+)\)", written)
        return bool(parts) and all(
            _same(part, item) for part, item in zip(parts.groups(), value, strict=True)
        )
    return float(written) == pytest.approx(float(value), rel=5e-4, abs=1e-9)


@pytest.mark.parametrize("preset", sorted(racecar.PRESETS))
def test_racecar_table_equals_the_preset(preset: str) -> None:
    table = _tables("Race car").get(preset)
    assert table is not None, f"docs/parameters.md has no table for preset {preset!r}"
    code = _flat(racecar.PRESETS[preset])
    assert sorted(table) == sorted(code), "fields differ between the table and the code"
    wrong = {f: (table[f], code[f]) for f in code if not _same(table[f], code[f])}
    assert not wrong, f"table values differ from the code (table, code): {wrong}"


def test_every_racecar_preset_has_a_table_and_the_default_is_named() -> None:
    assert sorted(_tables("Race car")) == sorted(racecar.PRESETS)
    assert f'### Preset "{racecar.DEFAULT_PRESET}" (default)' in DOC.read_text()


def test_the_checker_catches_a_wrong_value() -> None:
    assert not _same("0.5", 0.6) and _same("0.4278", 0.4278074866)
    assert _same("(0.9697, 1.03)", (0.96969697, 1.0303030)) and not _same("(0.5, 1.5)", (0.5, 2.0))
