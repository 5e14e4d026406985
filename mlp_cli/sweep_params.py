"""The parameters of a sweep, from `--param NAME=VALUES` text: value lists for a grid, ranges for a search.

A value is checked exactly as `mlp train` checks the flag of the same setting (config.validate_settings), so
`--param lr=-1` fails with the message `--lr -1` would give. No optuna here: the CLI validates without it.
"""

import itertools
import math
from dataclasses import dataclass
from typing import Any

from mlp_cli.config import FIELD_TYPES, Config, config_to_dict, validate_settings
from mlp_cli.errors import ConfigError

LAYER_SEPARATOR = "x"  # hidden=512x256: two hidden layers, as a single value of a list
NAME_SEPARATOR = "+"  # augment=shift+flip: both augmentations, as a single value of a list
NO_NAMES = "none"  # augment=none: the empty list
LOG_PREFIX = "log:"
EXAMPLES = "e.g. hidden=64,128,512x256 (a list of values) or lr=log:0.001:1 (a range, for --search)"


@dataclass(frozen=True)
class Param:
    """One swept setting: a list of choices, or (for a search) a numeric range low..high."""

    name: str
    choices: tuple[Any, ...] = ()  # as Optuna stores them: bool, int, float or str (hidden as "512x256")
    low: float | None = None
    high: float | None = None
    is_log: bool = False
    is_int: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def describe(self) -> str:
        """The param as `--param` text in one normal form, to compare a sweep's definition with a rerun's."""
        if self.is_range:
            return f"{self.name}={LOG_PREFIX if self.is_log else ''}{self.low:g}:{self.high:g}"
        return f"{self.name}={','.join(map(format_choice, self.choices))}"


def format_choice(value: Any) -> str:
    """A choice as the user writes it (true/false for booleans)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_params(texts: list[str], base: Config, is_search: bool) -> list[Param]:
    """The swept settings of `--param` texts, every value validated against the base config.

    Raises:
        ConfigError: bad syntax, an unknown setting, a value `mlp train` would refuse, a name given twice,
            a range in a grid, or no params at all.
    """
    if not texts:
        raise ConfigError(f"nothing to sweep: give at least one --param NAME=VALUES ({EXAMPLES})")
    params: list[Param] = []
    for text in texts:
        param = parse_param(text, base, is_search)
        if any(seen.name == param.name for seen in params):
            raise ConfigError(f"--param {param.name}: given twice; list all its values in one --param")
        params.append(param)
    return params


def parse_param(text: str, base: Config, is_search: bool) -> Param:
    """One `--param NAME=VALUES` text."""
    name, equals, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not equals or not name:
        raise ConfigError(f"--param {text}: expected NAME=VALUES, {EXAMPLES}")
    if name not in FIELD_TYPES:
        raise ConfigError(f"--param {name}: unknown setting (known settings: {', '.join(FIELD_TYPES)})")
    kind = FIELD_TYPES[name]
    if kind in (int, float) and ":" in values:
        if not is_search:
            raise ConfigError(f"--param {text}: a range needs --search tpe or random; a grid takes a list of "
                              f"values, e.g. {name}=0.01,0.1")
        return parse_range(name, values, base)
    texts = [part.strip() for part in values.split(",")]
    if not values.strip() or "" in texts:
        raise ConfigError(f"--param {text}: an empty value; {EXAMPLES}")
    choices = tuple(to_choice(name, part, base) for part in texts)
    repeated = [format_choice(choice) for choice in choices if choices.count(choice) > 1]
    if repeated:
        raise ConfigError(f"--param {text}: {repeated[0]} is listed twice")
    return Param(name, choices)


def parse_range(name: str, text: str, base: Config) -> Param:
    """A numeric range `LOW:HIGH` or `log:LOW:HIGH` (log-uniform) of an int or float setting."""
    is_log = text.startswith(LOG_PREFIX)
    parts = text.removeprefix(LOG_PREFIX).split(":")
    is_int = FIELD_TYPES[name] is int
    if len(parts) != 2:
        raise ConfigError(f"--param {name}={text}: expected a range LOW:HIGH or log:LOW:HIGH")
    low, high = (setting_value(name, part.strip(), base) for part in parts)
    if not low < high:
        raise ConfigError(f"--param {name}={text}: the range is empty, expected LOW < HIGH")
    if is_log and low <= 0:
        raise ConfigError(f"--param {name}={text}: a log range needs LOW > 0")
    return Param(name, low=low, high=high, is_log=is_log, is_int=is_int)


def to_choice(name: str, text: str, base: Config) -> Any:
    """A value as Optuna stores a categorical choice (a list setting becomes its text, e.g. "512x256")."""
    value = setting_value(name, text, base)
    if isinstance(value, tuple):
        separator = LAYER_SEPARATOR if FIELD_TYPES[name] == tuple[int, ...] else NAME_SEPARATOR
        return separator.join(map(str, value)) or NO_NAMES
    return value


def setting_value(name: str, text: str, base: Config) -> Any:
    """The typed value of a setting from its text, checked as `mlp train --NAME text` would be.

    Raises:
        ConfigError: the text is not of the setting's type, or the value is out of range.
    """
    value = from_text(name, text)
    checked = validate_settings({**config_to_dict(base), name: value}, {name: f"--param {name}"})
    return getattr(checked, name)


def from_text(name: str, text: str) -> Any:
    """The text as the setting's type, or the text itself for validate_settings to name the problem."""
    kind = FIELD_TYPES[name]
    if kind == tuple[int, ...]:
        return text.replace(LAYER_SEPARATOR, ",")
    if kind == tuple[str, ...]:
        return "" if text == NO_NAMES else text.replace(NAME_SEPARATOR, ",")
    if kind is bool:
        return {"true": True, "false": False}.get(text.lower(), text)
    if kind in (int, float):
        try:
            number = int(text) if kind is int else float(text)
        except ValueError:
            return text
        return number if kind is int or math.isfinite(number) else text
    return text


def setting_from_choice(name: str, choice: Any) -> Any:
    """The value validate_settings takes for an Optuna choice (undoing to_choice)."""
    return from_text(name, choice) if isinstance(choice, str) else choice


def grid_points(params: list[Param]) -> list[dict[str, Any]]:
    """Every combination of the params' choices, the first param varying slowest."""
    names = [param.name for param in params]
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(p.choices for p in params))]


def describe_params(params: list[Param]) -> list[str]:
    return [param.describe() for param in params]
