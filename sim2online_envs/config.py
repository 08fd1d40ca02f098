"""Config dataclasses from what users pass: None, an instance, or a mapping of overrides.

Every env takes its task and simulator settings either as the config dataclass or as a dict of
the fields to change (``task_config={"max_episode_steps": 200}``), which is what fits in
``gym.make`` keyword arguments and in YAML/JSON run files. One function turns either into the
dataclass, and a misspelt field name fails naming the valid ones instead of being ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["coerce_config", "replace_fields"]

ConfigT = TypeVar("ConfigT")


def replace_fields(instance: ConfigT, overrides: Mapping[str, Any], name: str = "") -> ConfigT:
    """``dataclasses.replace`` with a TypeError that names the unknown and the valid fields.

    A mapping given for a field that holds a config dataclass changes that config's fields in
    turn (``{"weights": {"pose": 0.0}}``), as a YAML or JSON run file writes it.
    """
    what = name or type(instance).__name__
    known = {field.name for field in dataclasses.fields(instance)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{what} has unknown fields {unknown}; known fields: {sorted(known)}")
    changes = dict(overrides)
    for key, value in overrides.items():
        current = getattr(instance, key)
        if isinstance(value, Mapping) and dataclasses.is_dataclass(current):
            changes[key] = replace_fields(current, value, f"{what}.{key}")
    return dataclasses.replace(instance, **changes)  # type: ignore[type-var]


def coerce_config(cls: type[ConfigT], value: Any, name: str) -> ConfigT:
    """``value`` as a ``cls``: None gives the defaults, a mapping overrides some of them."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return replace_fields(cls(), value, name)
    raise TypeError(
        f"{name} must be a {cls.__name__}, a mapping of its fields or None, "
        f"got {type(value).__name__}"
    )
