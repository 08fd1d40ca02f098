"""docs/parameters.md, section Go1: every row's value and randomised range are the code's.

Each row's Field is a Python expression of the code (names in :func:`_namespace`), its Value
the numbers printed to their last digit ("× n" repeats them, "on"/"off" are booleans), its
Randomised cell either "no"/"-"/a description or a draw ``U(low, high)`` followed by the
``dr.<field>`` holding the range. And the other way: every randomised range and every preset
is in the table.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np
import pytest
from parameter_tables import MINUS, NUMBER, TIMES, code, numbers, same, section_rows

from sim2online_envs.robots import go1
from sim2online_envs.sim.go1 import Go1DomainRandomization, Go1SimConfig, load_model
from sim2online_envs.tasks.go1 import PRESETS, Go1TaskConfig


def _namespace() -> dict[str, Any]:
    return {
        "go1": go1,
        "playground": Go1TaskConfig.from_preset("playground"),
        "study_prior": Go1TaskConfig.from_preset("study_prior"),
        "sim": Go1SimConfig(),
        "dr": Go1DomainRandomization(),
        "model": load_model(),
    }


ROWS = section_rows("Go1")


@pytest.mark.parametrize("row", ROWS, ids=[row["Quantity"] for row in ROWS])
def test_each_value_is_the_codes(row: dict[str, str]) -> None:
    value = eval(code(row["Field"]), {"__builtins__": {}}, _namespace())
    assert same(row["Value"], value), f"{row['Quantity']}: table {row['Value']!r}, code {value!r}"


@pytest.mark.parametrize("row", ROWS, ids=[row["Quantity"] for row in ROWS])
def test_each_randomised_range_is_the_codes(row: dict[str, str]) -> None:
    cell = row["Randomised"]
    draw = re.search(rf"U\(({NUMBER}), ({NUMBER})\)\s.*`dr\.(\w+)`", cell)
    if draw is None:
        assert "dr." not in cell, f"{row['Quantity']}: unparsed range {cell!r}"
        return
    low, high, field = draw.groups()
    written, tolerance = numbers(f"{low} {high}")
    actual = np.asarray(getattr(Go1DomainRandomization(), field), dtype=np.float64)
    assert np.all(np.abs(actual - written) <= tolerance), f"{field}: {cell!r} against {actual}"


def test_every_randomised_range_is_in_the_table() -> None:
    written = {
        match.group(1) for row in ROWS for match in re.finditer(r"`dr\.(\w+)`", row["Randomised"])
    }
    fields = {field.name for field in dataclasses.fields(Go1DomainRandomization)}
    assert written == fields


def test_the_presets_are_the_table_and_playground_is_the_default() -> None:
    """The defaults are the "playground" preset, which the table lists; "study_prior" differs
    from it in the command range only, the table's other row for it."""
    assert Go1TaskConfig() == Go1TaskConfig.from_preset("playground")
    assert sorted(PRESETS) == ["playground", "study_prior"]
    prior = Go1TaskConfig.from_preset("study_prior")
    changed = {
        field.name
        for field in dataclasses.fields(Go1TaskConfig)
        if getattr(prior, field.name) != getattr(Go1TaskConfig(), field.name)
    }
    assert changed == {"command_range"}
    fields = " ".join(row["Field"] for row in ROWS)
    assert "study_prior.command_half_widths" in fields


def test_every_task_number_and_reward_weight_is_in_the_table() -> None:
    """A new task setting, noise scale or reward weight must get a row."""
    fields = " ".join(row["Field"] for row in ROWS)
    # the range by its half-widths, the groups field by field, None (a random interval) and
    # the control period as the robot module's
    skip = {"command_range", "noise", "weights", "command_resample_steps", "control_dt"}
    for field in dataclasses.fields(Go1TaskConfig):
        if field.name not in skip:
            assert f"playground.{field.name}" in fields, field.name
    for name, group in (("noise", "Go1ObsNoise"), ("weights", "Go1RewardWeights")):
        for field in dataclasses.fields(getattr(Go1TaskConfig(), name)):
            if field.name != "level":
                assert f"playground.{name}.{field.name}" in fields, (group, field.name)


def test_the_checker_catches_a_wrong_value() -> None:
    pose = f"0.1, 0.9, {MINUS}1.8 {TIMES} 2"
    assert same(pose, [0.1, 0.9, -1.8, 0.1, 0.9, -1.8])
    assert not same(pose, go1.HOME_JOINT_POS)  # the left legs are -0.1
    assert same("0.2915", go1.HOME_TRUNK_HEIGHT)
    assert not same("0.2875", go1.HOME_TRUNK_HEIGHT)
    assert not same("on", False) and same("off", False)
    assert math.isclose(numbers(f"{MINUS}0.0002")[0][0], -0.0002)
