"""Connection settings of every real robot, resolved one way.

Each robot's settings are a frozen dataclass (``hardware/<robot>/config.py``). A field's value
comes from, first to last:

1. a keyword argument (``gym.make("RealRaceCar-v0", port="/dev/ttyACM0")``);
2. an environment variable ``SIM2ONLINE_<ROBOT>_<FIELD>`` (``SIM2ONLINE_RACECAR_PORT``);
3. the ``[<robot>]`` table of a TOML file: ``$SIM2ONLINE_CONFIG``, else
   ``~/.config/sim2online/hardware.toml``;
4. the dataclass default.

Unknown keys, wherever they come from, fail naming the known ones: a misspelt setting must not
silently fall back to a default on a robot.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomllib

__all__ = ["CONFIG_PATH_VARIABLE", "DEFAULT_CONFIG_PATH", "env_prefix", "resolve_settings"]

#: The environment variable naming the TOML file, and the file used without it.
CONFIG_PATH_VARIABLE = "SIM2ONLINE_CONFIG"
DEFAULT_CONFIG_PATH = "~/.config/sim2online/hardware.toml"

_Settings = TypeVar("_Settings")


def env_prefix(robot: str) -> str:
    """The environment variables' prefix of ``robot``'s settings (``SIM2ONLINE_GO1_``)."""
    return f"SIM2ONLINE_{robot.upper()}_"


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The TOML file settings are read from."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(CONFIG_PATH_VARIABLE, DEFAULT_CONFIG_PATH)).expanduser()


def _from_text(field: dataclasses.Field, text: str, variable: str) -> Any:
    """A field's value from an environment variable's text, by the type of its default."""
    default = field.default
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"{variable}={text!r} is not a boolean")
        return lowered in ("1", "true", "yes", "on")
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            return tuple(float(part) for part in text.replace(",", " ").split())
    except ValueError as error:
        raise ValueError(f"{variable}={text!r}: {error}") from error
    return text


def _toml_table(path: Path, robot: str) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open("rb") as handle:
        try:
            table = tomllib.load(handle).get(robot, {})
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML: {error}") from error
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [{robot}] must be a table")
    return table


def _typed(field: dataclasses.Field, value: Any) -> Any:
    """TOML and keyword values in the field's type where that is unambiguous."""
    default = field.default
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def resolve_settings(
    settings_class: type[_Settings],
    robot: str,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> _Settings:
    """``settings_class`` from keyword arguments > environment > TOML file > defaults."""
    environ = os.environ if environ is None else environ
    fields = {field.name: field for field in dataclasses.fields(settings_class)}  # type: ignore[arg-type]
    known = sorted(fields)
    values: dict[str, Any] = {}
    path = config_path(environ)
    table = _toml_table(path, robot)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ValueError(f"{path} [{robot}] has unknown keys {unknown}; known keys: {known}")
    values.update(table)
    prefix = env_prefix(robot)
    for variable, text in environ.items():
        if not variable.startswith(prefix):
            continue
        name = variable[len(prefix) :].lower()
        if name not in fields:
            raise ValueError(f"unknown environment variable {variable}; known fields: {known}")
        values[name] = _from_text(fields[name], text, variable)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TypeError(f"unknown {robot} settings {unknown}; known settings: {known}")
    values.update(overrides)
    return settings_class(**{name: _typed(fields[name], value) for name, value in values.items()})
