"""Checkpoints: written atomically, loaded without running code, checked before use, turned back into models."""

import contextlib
import dataclasses
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlp_cli.config import Config, is_int, is_number, validate_settings
from mlp_cli.errors import CheckpointError, MlpError, first_line, os_reason
from mlp_cli.events import EpochMetrics
from mlp_cli.models import build_model, parameter_shapes

CHECKPOINT_FORMAT = "mlp-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("config", "model", "model_state", "epoch", "metrics")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive (since torch 1.6)
PICKLE_PROTO = b"\x80"  # ... or, before that, a pickle (protocol 2 or later)
SHOWN_CHARACTERS = 40  # of a bad value quoted in an error message


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write checkpoint to path through a temporary file in the same folder, so path is never half-written.

    Raises:
        CheckpointError: the folder is not writable or the disk is full; path keeps its old content.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save({"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, **checkpoint}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as err:
        # on a full disk torch's zip writer fails with its own RuntimeError ("unexpected pos ..."), raised
        # while the OSError that caused it (ENOSPC, EFBIG) is being handled: name that cause when there is one
        raise CheckpointError(f"{path}: cannot save checkpoint ({os_reason(err)})") from err
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, on the CPU, loaded with weights_only=True so a crafted file cannot run code.

    Every key is checked here, once (check_checkpoint), so that eval, predict and resume can trust the rest.

    Raises:
        CheckpointError: the file is missing, unreadable, not an mlp checkpoint, damaged, or from a newer mlp.
    """
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (a run folder holds last.pt and best.pt)")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file such as {path / 'best.pt'}")
    if not looks_like_torch_file(path):
        raise CheckpointError(f"{path}: not a checkpoint (not a file saved by torch; a run folder holds "
                              "last.pt and best.pt)")
    try:
        with warnings.catch_warnings():
            # damaged bytes also make torch warn (e.g. "Detected pickle protocol 160"): the error below says it
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message advises weights_only=False, which is exactly what must not be done here
        blocked = re.search(r"GLOBAL (\S+)", str(err))
        why = (f"it refers to {blocked.group(1)}, which could run code" if blocked
               else "it is corrupt, or holds more than tensors and plain values")
        raise CheckpointError(f"{path}: refused to load, not a safe mlp checkpoint ({why})") from err
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from err
    except Exception as err:
        # on damaged bytes the unpickler fails in many ways (RuntimeError, EOFError, IndexError, KeyError,
        # UnicodeDecodeError, BadZipFile, ... all seen with random files): every one means "not readable"
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or not a torch file)") from err
    check_checkpoint(path, checkpoint)
    return checkpoint


def looks_like_torch_file(path: Path) -> bool:
    """Whether path starts as torch.save writes: a zip archive, or (torch before 1.6) a pickle."""
    try:
        with open(path, "rb") as file:
            start = file.read(len(ZIP_MAGIC))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from err
    return start == ZIP_MAGIC or start.startswith(PICKLE_PROTO)


def check_checkpoint(path: Path, checkpoint: Any) -> None:
    """Raise CheckpointError unless checkpoint is an mlp checkpoint this version can read, with every key of the
    right type: a crafted or damaged file is refused here in one line, not by a traceback deep in eval or resume.

    The weights' shapes are checked against the stored config by restore_model, the optimizer's state
    against the model by training.load_resumable.
    """
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an mlp checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    version = checkpoint.get("format_version")
    if not is_int(version) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this mlp reads "
                              f"({FORMAT_VERSION}); upgrade mlp")
    if version < 1:
        raise CheckpointError(f"{path}: checkpoint format {version!r} was never written by mlp (its formats are 1 to "
                              f"{FORMAT_VERSION}); the file is damaged or crafted")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    problem = schema_problem(checkpoint)
    if problem:
        raise CheckpointError(f"{path}: damaged checkpoint, {problem}")


def schema_problem(checkpoint: dict[str, Any]) -> str | None:
    """What is wrong with the checkpoint's keys (e.g. "epoch is '2', expected an integer >= 0"), or None."""
    if not isinstance(checkpoint["config"], dict):
        return f"config is {short(checkpoint['config'])}, expected a table of settings"
    model = checkpoint["model"]
    if not isinstance(model, dict) or not all(is_int(model.get(key)) and model[key] >= 1
                                              for key in ("num_inputs", "num_outputs")):
        return f"model is {short(model)}, expected num_inputs and num_outputs >= 1"
    names = model.get("class_names")
    if not (isinstance(names, list) and len(names) == model["num_outputs"]
            and all(isinstance(name, str) for name in names)):
        return f"model.class_names is {short(names)}, expected {model['num_outputs']} names"
    state = checkpoint["model_state"]
    if not (isinstance(state, dict) and all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                            for key, value in state.items())):
        return "model_state is not a table of named tensors"
    epoch = checkpoint["epoch"]
    if not is_int(epoch) or epoch < 0:
        return f"epoch is {short(epoch)}, expected an integer >= 0"
    return (metrics_problem(checkpoint["metrics"], epoch) or progress_problem(checkpoint.get("progress"))
            or optimizer_problem(checkpoint.get("optimizer_state")) or rng_problem(checkpoint.get("rng")))


def metrics_problem(rows: Any, epoch: int) -> str | None:
    """Whether metrics holds one row per finished epoch, each with the fields of EpochMetrics as numbers.

    A row without an optional field (e.g. val_accuracy, from an older mlp) gets it as None, in place.
    """
    if not isinstance(rows, list) or len(rows) != epoch:
        return f"metrics is {short(rows)}, expected {epoch} rows (one per finished epoch)"
    fields = {field.name: field for field in dataclasses.fields(EpochMetrics)}
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or row.get("epoch") != number or not is_int(row["epoch"]):
            return f"metrics row {number} is {short(row)}, expected a table with epoch = {number}"
        unknown = set(row) - set(fields)
        if unknown:
            return f"metrics row {number} has unknown fields {', '.join(sorted(map(str, unknown)))}"
        for name, field in fields.items():
            is_required = field.default is dataclasses.MISSING
            if name not in row and is_required:
                return f"metrics row {number} has no {name}"
            value = row.setdefault(name, field.default)
            if name != "epoch" and not (is_number(value) or (value is None and not is_required)):
                return f"metrics row {number}: {name} is {short(value)}, expected a number"
    return None


def progress_problem(progress: Any) -> str | None:
    """Whether progress (the epoch in progress of a checkpoint taken mid-epoch) is None or well formed."""
    if progress is None:
        return None
    if not isinstance(progress, dict):
        return f"progress is {short(progress)}, expected a table or none"
    for key in ("batches_done", "samples_done"):
        if not is_int(progress.get(key)) or progress[key] < 0:
            return f"progress.{key} is {short(progress.get(key))}, expected an integer >= 0"
    if not is_number(progress.get("seconds")):
        return f"progress.seconds is {short(progress.get('seconds'))}, expected a number"
    for key in ("loss_sum", "correct"):
        if not isinstance(progress.get(key), torch.Tensor):
            return f"progress.{key} is {short(progress.get(key))}, expected a tensor"
    by_rank = progress.get("by_rank")  # under torchrun: each rank's own running sums
    if by_rank is not None and not (isinstance(by_rank, list) and all(
            isinstance(sums, dict) and is_int(sums.get("samples_done")) and sums["samples_done"] >= 0
            and isinstance(sums.get("loss_sum"), torch.Tensor) and isinstance(sums.get("correct"), torch.Tensor)
            for sums in by_rank)):
        return f"progress.by_rank is {short(by_rank)}, expected each rank's samples_done, loss_sum and correct"
    return rng_state_problem("progress.order_state", progress.get("order_state"))


def optimizer_problem(state: Any) -> str | None:
    """Whether the optimizer's state has torch's shape (its fit to the model is checked when resuming)."""
    if state is None:
        return None
    if not (isinstance(state, dict) and isinstance(state.get("state"), dict)
            and isinstance(state.get("param_groups"), list)
            and all(isinstance(group, dict) for group in state["param_groups"])):
        return "optimizer_state is not an optimizer's state (state and param_groups)"
    return None


def rng_problem(rng: Any) -> str | None:
    """Whether the saved random number generators' states can be restored."""
    if rng is None:
        return None
    if not isinstance(rng, dict):
        return f"rng is {short(rng)}, expected a table of generator states"
    by_rank = rng.get("torch_by_rank", [])
    if not isinstance(by_rank, list):
        return f"rng.torch_by_rank is {short(by_rank)}, expected a list"
    for name, state in [("rng.torch", rng.get("torch")), ("rng.data_order", rng.get("data_order")),
                        *((f"rng.torch_by_rank[{rank}]", value) for rank, value in enumerate(by_rank))]:
        problem = rng_state_problem(name, state)
        if problem:
            return problem
    return None


def rng_state_problem(name: str, state: Any) -> str | None:
    """Whether state is a CPU generator state that torch accepts (tried on a throwaway generator)."""
    try:
        torch.Generator().set_state(state)
    except (TypeError, RuntimeError, ValueError):
        return f"{name} is not a random generator's state"
    return None


def short(value: Any) -> str:
    """A value as a message shows it: its repr, cut to a few dozen characters (a tensor by its type)."""
    text = type(value).__name__ if isinstance(value, torch.Tensor) else repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else text[:SHOWN_CHARACTERS] + "..."


def restore_model(checkpoint: dict[str, Any], path: Path) -> tuple[Config, nn.Module]:
    """The config and trained model stored in a checkpoint, rebuilt from the checkpoint alone.

    The weights' shapes are compared with the ones the config describes before the model is built, so a small
    file claiming a huge model is refused without allocating it.

    Raises:
        CheckpointError: the stored config or weights do not fit the model they describe.
    """
    try:
        config = validate_settings(checkpoint["config"])
        shape = checkpoint["model"]
        arguments = (config.impl, shape["num_inputs"], config.hidden, shape["num_outputs"], config.sigma,
                     config.activation, config.dropout, config.init)
        expected = parameter_shapes(config.impl, shape["num_inputs"], config.hidden, shape["num_outputs"],
                                    config.dropout)
        problem = state_shape_problem(expected, checkpoint["model_state"])
        if problem:
            raise CheckpointError(problem)
        model = build_model(*arguments)
        model.load_state_dict(checkpoint["model_state"])
    except (MlpError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: checkpoint does not describe a usable model ({first_line(err)})") from err
    return config, model


def state_shape_problem(expected: dict[str, tuple[int, ...]], saved: dict[str, torch.Tensor]) -> str | None:
    """How the saved weights differ from the model's (missing or extra names, another shape), or None."""
    if expected.keys() != saved.keys():
        return f"weights {', '.join(sorted(saved))} do not match the model's {', '.join(sorted(expected))}"
    for name, shape in expected.items():
        if tuple(saved[name].shape) != shape:
            return f"{name} has shape {tuple(saved[name].shape)} but the stored config describes {shape}"
    return None
