"""Every setting of a training run in one frozen dataclass: defaults < TOML file < command-line flags."""

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard

from mlp_cli.errors import ConfigError

# Each list of names is written once, here, as a Literal: the CLI declares its choices with the Literal (so
# --help, shell completion and typo messages follow it), the library checks and builds from the tuple.
Impl = Literal["scratch", "concise"]
Dataset = Literal["fashion-mnist", "mnist"]
Precision = Literal["fp32", "bf16"]
# hidden-layer nonlinearities both models implement (scratch by hand, concise with torch's modules)
Activation = Literal["relu", "sigmoid", "tanh", "identity", "leaky-relu", "elu", "gelu", "silu", "softplus"]
Optimizer = Literal["sgd", "momentum", "adam", "adamw"]
Schedule = Literal["none", "step", "cosine"]
Augmentation = Literal["shift", "flip"]
Init = Literal["book", "normal", "kaiming", "xavier"]
Backend = Literal["auto", "gloo", "nccl"]  # of torch.distributed under torchrun; auto: nccl on CUDA, else gloo
Split = Literal["train", "test"]  # the data sets' own splits (a validation split is cut from train)
IMPLS: tuple[str, ...] = typing.get_args(Impl)
DATASETS: tuple[str, ...] = typing.get_args(Dataset)
DEFAULT_DATASET: Dataset = "fashion-mnist"  # D2L's
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
ACTIVATIONS: tuple[str, ...] = typing.get_args(Activation)
OPTIMIZERS: tuple[str, ...] = typing.get_args(Optimizer)
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)
AUGMENTATIONS: tuple[str, ...] = typing.get_args(Augmentation)
INITS: tuple[str, ...] = typing.get_args(Init)
BACKENDS: tuple[str, ...] = typing.get_args(Backend)
SPLITS: tuple[str, ...] = typing.get_args(Split)
# what `mlp train --resume` may change; everything else is the checkpoint's (training.py checks it)
RESUMABLE_CHANGES = ("epochs", "device", "threads", "data_dir", "backend", "dist_timeout", "tensorboard",
                     "tb_histograms")
DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")  # cuda may name its device: cuda:N
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Config:
    """A training run. The defaults are D2L's (section 5.2): 784-256-10, SGD lr 0.1, batch 256, 10 epochs."""

    impl: str = "scratch"  # scratch: nn.Parameter + hand-written ReLU; concise: nn.Sequential + LazyLinear
    dataset: str = DEFAULT_DATASET
    data_dir: str | None = None  # a folder with the four IDX files; None searches the usual places
    hidden: tuple[int, ...] = (256,)  # one entry per hidden layer: H1, H2, ...
    activation: str = "relu"  # of the hidden layers; identity shows the collapse to one affine map
    sigma: float = 0.01  # std of the scratch model's normal weight init (concise keeps torch's init)
    init: str = "book"  # book: each model as in D2L; normal (N(0, sigma^2)), kaiming or xavier for both
    optimizer: str = "sgd"  # minibatch SGD as in the book; momentum (SGD with momentum), adam, adamw
    lr: float = 0.1
    momentum: float = 0.9  # used by the momentum optimizer only
    weight_decay: float = 0.0  # L2 penalty added to the gradient (decoupled for adamw)
    dropout: float = 0.0  # probability of zeroing each hidden unit while training (D2L 5.6)
    schedule: str = "none"  # learning rate per epoch: none, step (x0.1 at 50% and 75%), cosine (to 0)
    warmup_epochs: int = 0  # linear warm-up from lr / (warmup + 1) before the schedule
    label_smoothing: float = 0.0  # the training loss's target smoothing; evaluation losses stay plain
    augment: tuple[str, ...] = ()  # shift (by up to 2 pixels) and/or flip (left-right), on training batches
    batch_size: int = 256
    epochs: int = 10
    seed: int = 0  # seeds the weights and the data order: same seed, same run (on one device)
    val_size: int = 0  # hold out this many training images to choose best.pt; 0 uses the test split (D2L)
    report_every: int = 1  # evaluate the test split every N epochs (and after the last)
    train_metrics: bool = False  # also evaluate the whole train split then (as the Flux example does)
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    threads: int = 0  # CPU threads for torch's kernels; 0: one for a small model, every core for a big one
    precision: str = "fp32"  # bf16 runs the forward pass under autocast: faster on some hardware, less exact
    backend: str = "auto"  # under torchrun: gloo (CPU) or nccl (CUDA); auto picks by device
    dist_timeout: float = 300.0  # seconds a process waits for the others under torchrun before giving up
    tensorboard: bool = False  # also write TensorBoard event files into RUN/tb (mlp board shows them)
    tb_histograms: int = 0  # with tensorboard: weight and gradient histograms every N epochs; 0 writes none

    def __post_init__(self) -> None:
        """Check every field as config files and flags are checked, so `Config(...)` in a notebook fails early,
        with the CLI's message; a list or a single int for hidden becomes a tuple (the field stays hashable).

        Raises:
            ConfigError: naming the field, the value and what is allowed.
        """
        for field in dataclasses.fields(self):
            # frozen: __setattr__ is refused, and normalising here is what construction is for
            object.__setattr__(self, field.name, check_setting(field.name, field.name, getattr(self, field.name)))


FIELD_TYPES: dict[str, Any] = typing.get_type_hints(Config)

# Each check returns None when the value is allowed, else the text "expected ..." for the message.
RANGE_CHECKS: dict[str, typing.Callable[[Any], str | None]] = {
    "impl": lambda v: expected_name(v, IMPLS),
    "dataset": lambda v: expected_name(v, DATASETS),
    "data_dir": lambda v: None if v is None or v.strip() else "a folder path",
    "hidden": lambda v: None if v and all(size >= 1 for size in v) else "one or more sizes >= 1",
    "activation": lambda v: expected_name(v, ACTIVATIONS),
    "optimizer": lambda v: expected_name(v, OPTIMIZERS),
    "momentum": lambda v: None if 0 <= v < 1 else "a number in [0, 1)",
    "weight_decay": lambda v: None if math.isfinite(v) and v >= 0 else "a finite number >= 0",
    "dropout": lambda v: None if 0 <= v < 1 else "a number in [0, 1)",
    "schedule": lambda v: expected_name(v, SCHEDULES),
    "warmup_epochs": lambda v: None if v >= 0 else "an integer >= 0",
    "label_smoothing": lambda v: None if 0 <= v < 1 else "a number in [0, 1)",
    "augment": lambda v: expected_names(v, AUGMENTATIONS),
    "init": lambda v: expected_name(v, INITS),
    "sigma": lambda v: None if math.isfinite(v) and v > 0 else "a finite number > 0",
    "lr": lambda v: None if math.isfinite(v) and v > 0 else "a finite number > 0",
    "batch_size": lambda v: None if v >= 1 else "an integer >= 1",
    "epochs": lambda v: None if v >= 1 else "an integer >= 1",
    "seed": lambda v: None if 0 <= v <= MAX_SEED else f"an integer from 0 to {MAX_SEED}",
    "device": lambda v: None if DEVICE_PATTERN.fullmatch(v) else "auto, cpu, cuda, cuda:N or mps",
    "val_size": lambda v: None if v >= 0 else "an integer >= 0",
    "report_every": lambda v: None if v >= 1 else "an integer >= 1",
    "train_metrics": lambda v: None,
    "threads": lambda v: None if v >= 0 else "an integer >= 0 (0 lets mlp choose)",
    "precision": lambda v: expected_name(v, PRECISIONS),
    "backend": lambda v: expected_name(v, BACKENDS),
    "dist_timeout": lambda v: None if math.isfinite(v) and v > 0 else "a number of seconds > 0",
    "tensorboard": lambda v: None,
    "tb_histograms": lambda v: None if v >= 0 else "an integer >= 0 (0 writes no histograms)",
}


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Merge defaults, a TOML file and flags (None = not given) into a validated Config.

    Raises:
        ConfigError: the file is missing or malformed, or a key is unknown, mistyped or out of range.
    """
    settings: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        values = read_toml(path)
        if not values:  # an empty or truncated file would otherwise train silently with the defaults
            raise ConfigError(f"{path}: config file holds no settings (empty); give at least one, e.g. "
                              f'impl = "{Config.impl}"')
        for key, value in values.items():
            settings[key], sources[key] = value, f"{path}: {key}"
    for key, value in (overrides or {}).items():
        if value is not None:
            settings[key], sources[key] = value, f"--{key.replace('_', '-')}"
    return validate_settings(settings, sources)


def read_toml(path: Path) -> dict[str, Any]:
    """The key/value pairs of a TOML config file, as parsed."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: config file not found") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config file ({err})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err


def validate_settings(settings: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> Config:
    """A Config from plain values, each checked for name, type and range.

    Raises:
        ConfigError: naming the key (and file or flag), the value and what is allowed.
    """
    sources = sources or {}
    values = {key: check_setting(sources.get(key, key), key, value) for key, value in settings.items()}
    return Config(**values)


def check_setting(where: str, key: str, value: Any) -> Any:
    """The value of setting key converted to its type, once its name, type and range are checked.

    The one check of a setting: files, flags and `Config(...)` all pass through it.

    Raises:
        ConfigError: "{where}: ..." naming the value and what is allowed.
    """
    if key not in FIELD_TYPES:
        known = ", ".join(FIELD_TYPES)
        close = difflib.get_close_matches(key, FIELD_TYPES, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"{where}: unknown setting ({hint}known settings: {known})")
    converted = coerce_value(where, value, FIELD_TYPES[key])
    problem = RANGE_CHECKS[key](converted)
    if problem:
        raise ConfigError(f"{where}: {value!r} is not allowed, expected {problem}")
    return converted


def expected_name(value: str, names: Sequence[str]) -> str | None:
    """None when value is one of names, else "one of a, b, c" and the nearest name if one is close."""
    if value in names:
        return None
    return f"one of {', '.join(names)}{did_you_mean(value, names)}"


def expected_names(values: Sequence[str], names: Sequence[str]) -> str | None:
    """None when every value is one of names, else "some of a, b" and the nearest name to the first stray."""
    strays = [value for value in values if value not in names]
    if not strays:
        return None
    return f"some of {', '.join(names)}{did_you_mean(strays[0], names)}"


def did_you_mean(value: str, names: Sequence[str]) -> str:
    """" (did you mean NAME?)" for the name closest to a typo, or "" when none is close."""
    close = difflib.get_close_matches(value, names, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the system tells it); torch-free, so that the
    CLI can plan threads and processes before importing torch."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def is_int(value: Any) -> TypeGuard[int]:
    """Whether value is an integer (a bool is not, although Python counts it as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> TypeGuard[float]:
    """Whether value is an int or a float (a bool is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def coerce_value(where: str, value: Any, expected: Any) -> Any:
    """The value converted to the field's type; a bool is never taken for a number."""
    if isinstance(expected, types.UnionType) and type(None) in typing.get_args(expected):
        if value is None:
            return None
        expected = next(arg for arg in typing.get_args(expected) if arg is not type(None))
    coerced: object  # None when the value's type does not fit the field
    if expected == tuple[str, ...]:
        coerced = coerce_names(value)
    elif expected == tuple[int, ...]:
        coerced = coerce_sizes(where, value)
    else:
        coerced = coerce_scalar(value, expected)
    if coerced is not None:
        return coerced
    type_names = {tuple[int, ...]: "a list of integers", tuple[str, ...]: "a list of names"}
    type_name = type_names.get(expected) or f"a {expected.__name__}"
    raise ConfigError(f"{where}: {value!r} has the wrong type, expected {type_name}")


def coerce_scalar(value: Any, expected: type) -> str | bool | float | None:
    """The value for a str, bool, int or float field, or None when its type does not fit."""
    if expected is str and isinstance(value, str):
        return value
    if expected is bool and isinstance(value, bool):
        return value
    if expected is int and is_int(value):
        return value
    if expected is float and is_number(value):
        return float(value)
    return None


def coerce_names(value: Any) -> tuple[str, ...] | None:
    """Names from "a,b" or a list of strings, or None when value is neither."""
    if isinstance(value, str):
        return tuple(part for part in value.split(",") if part)
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return None


def coerce_sizes(where: str, value: Any) -> tuple[int, ...] | None:
    """Sizes from an integer, "256,128" or a list of integers, or None when value is none of these."""
    if is_int(value):
        return (value,)  # one hidden layer: Config(hidden=256) as well as hidden = [256]
    if isinstance(value, str):
        return parse_sizes(where, value)
    if isinstance(value, list | tuple) and all(is_int(item) for item in value):
        return tuple(value)
    return None


def parse_sizes(where: str, text: str) -> tuple[int, ...]:
    """Hidden sizes from flag text such as "256" or "256,128"."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as err:
        raise ConfigError(
            f"{where}: {text!r} is not a list of sizes, expected integers separated by commas (e.g. 256,128)"
        ) from err


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain builtins (lists, not tuples), safe for JSON, TOML and weights-only checkpoints."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(config).items()}


def config_to_toml(config: Config) -> str:
    """TOML text that `--config` reads back into the same Config (None values are left out)."""
    lines = []
    for key, value in config_to_dict(config).items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
        elif isinstance(value, list):
            text = "[" + ", ".join(json.dumps(item) for item in value) + "]"
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
