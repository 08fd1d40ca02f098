"""docs/parameters.md against the code: every preset value is in its table, and equal.

The Go1 section is checked by ``tests/test_parameters_go1.py``, the Panda's at the end of this
file. The race car section has one table per preset (``### Preset "<name>"``); each row's Field is a
preset key (``dynamics``, ``car.mass``, ``randomization.mass_scale``) and its Value a number (4
significant digits), a ``(low, high)`` pair, or a name.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from parameter_tables import DOC, MINUS, NUMBER, TIMES, code, numbers, same, section_rows

from sim2online_envs.robots import racecar


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
    values = _flat(racecar.PRESETS[preset])
    assert sorted(table) == sorted(values), "fields differ between the table and the code"
    wrong = {f: (table[f], values[f]) for f in values if not _same(table[f], values[f])}
    assert not wrong, f"table values differ from the code (table, code): {wrong}"


def test_every_racecar_preset_has_a_table_and_the_default_is_named() -> None:
    assert sorted(_tables("Race car")) == sorted(racecar.PRESETS)
    assert f'### Preset "{racecar.DEFAULT_PRESET}" (default)' in DOC.read_text()


def test_the_checker_catches_a_wrong_value() -> None:
    assert not _same("0.5", 0.6) and _same("0.4278", 0.4278074866)
    assert _same("(0.9697, 1.03)", (0.96969697, 1.0303030)) and not _same("(0.5, 1.5)", (0.5, 2.0))


# -- Panda ---------------------------------------------------------------------------------------
#
# One table under ``## Panda``: each row's Field is a Python expression of the code (names in
# ``_panda_namespace``), its Value the numbers printed to their last digit ("× n" repeats them),
# "on"/"off" for booleans or a name; a Randomised cell's ``U(low, high)`` before a ``sim.<field>``
# is that field's range (a (low, high) pair, a +-jitter or a 0-to-largest turn).

#: PandaSimConfig fields the table leaves out: rendering quality, the calibration file, the IK
#: of the "joint_servo" variant, the camera (its rows read the robot module's CAMERA, which the
#: config's defaults are), and what the task sets (control period, image size).
_PANDA_UNLISTED = {
    "render_size",
    "pixel_samples",
    "pixel_shadow_size",
    "pixel_tessellation",
    "pixel_supersample",
    "overview_samples",
    "overview_shadow_size",
    "overview_tessellation",
    "camera_calibration",
    "camera_fovy",
    "camera_pos",
    "camera_target",
    "control_dt",
    "image_size",
    "ik_damping",
    "ik_orientation_gain",
    "ik_nullspace_gain",
    "ik_max_error",
    # the impedance settings are listed as the robot module's facts they default to
    "translational_stiffness",
    "rotational_stiffness",
    "nullspace_stiffness",
    "target_time_constant",
}


def _panda_namespace() -> dict[str, object]:
    from sim2online_envs.robots import panda
    from sim2online_envs.sim import panda as scene
    from sim2online_envs.tasks.panda import PandaTaskConfig

    return {
        "panda": panda,
        "sim": scene.PandaSimConfig(),
        "task": PandaTaskConfig(),
        "cube": scene.OBJECTS["cube"],
        "scene": scene,
    }


PANDA_ROWS = section_rows("Panda")


@pytest.mark.parametrize("row", PANDA_ROWS, ids=[row["Quantity"] for row in PANDA_ROWS])
def test_each_panda_value_is_the_codes(row: dict[str, str]) -> None:
    value = eval(code(row["Field"]), {"__builtins__": {}}, _panda_namespace())
    assert same(row["Value"], value), f"{row['Quantity']}: table {row['Value']!r}, code {value!r}"


@pytest.mark.parametrize("row", PANDA_ROWS, ids=[row["Quantity"] for row in PANDA_ROWS])
def test_each_panda_randomised_range_is_the_codes(row: dict[str, str]) -> None:
    from sim2online_envs.sim.panda import PandaSimConfig

    draw = re.search(rf"U\(({NUMBER}), ({NUMBER})\)[^`]*`sim\.(\w+)`", row["Randomised"])
    if draw is None:
        return
    low_text, high_text, field = draw.groups()
    (low, high), tolerance = numbers(f"{low_text} {high_text}")
    value = np.asarray(getattr(PandaSimConfig(), field), dtype=np.float64)
    if field == "object_xy_low":  # the x or y range: low from this field, high from _high
        index = 0 if "x range" in row["Quantity"] else 1
        expected = np.array([value[index], PandaSimConfig().object_xy_high[index]])
    elif value.shape == (2,):  # a (low, high) range
        expected = value
    elif low < 0:  # a +- jitter
        expected = np.array([-value, value])
    else:  # a turn by up to the value
        expected = np.array([0.0, value])
    assert np.all(np.abs(expected - [low, high]) <= tolerance), (
        f"{row['Quantity']}: {row['Randomised']!r} against {field} = {value}"
    )


def test_every_panda_setting_and_randomisation_has_a_row() -> None:
    """Each PandaSimConfig field (but rendering, the calibration file, the servo variant's IK and
    what the task or the robot module's rows set) and each impedance fact is in the table; the
    impedance settings default to the robot module's facts."""
    from sim2online_envs.robots import panda
    from sim2online_envs.sim.panda import PandaSimConfig

    written = " ".join(f"{row['Field']} {row['Randomised']}" for row in PANDA_ROWS)
    for field in dataclasses.fields(PandaSimConfig):
        if field.name not in _PANDA_UNLISTED:
            assert f"sim.{field.name}" in written, field.name
    for name in panda.__all__:
        if name.startswith("IMPEDANCE_"):
            assert f"panda.{name}`" in written, name
    config = PandaSimConfig()
    assert config.translational_stiffness == panda.IMPEDANCE_TRANSLATIONAL_STIFFNESS
    assert config.rotational_stiffness == panda.IMPEDANCE_ROTATIONAL_STIFFNESS
    assert config.nullspace_stiffness == panda.IMPEDANCE_NULLSPACE_STIFFNESS
    assert config.target_time_constant == panda.IMPEDANCE_FILTER_TIME_CONSTANT
    assert (config.camera_pos, config.camera_target, config.camera_fovy) == (
        panda.CAMERA.pos,
        panda.CAMERA.target,
        panda.CAMERA.fovy,
    )


def test_the_panda_checker_catches_a_wrong_value() -> None:
    assert same(f"{MINUS}2.8973, 1.7628", [-2.8973, 1.7628])
    assert not same("0.05", 0.1) and same("28.28", 28.2842712)
    assert same(f"0.55 {TIMES} 3", (0.55, 0.55, 0.55))
    assert not same("impedance", "joint_servo") and same("on", True)
