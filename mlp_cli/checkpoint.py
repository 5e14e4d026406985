"""Checkpoints: the one schema (TrainState), written atomically, loaded without running code, checked before use,
turned back into models.

A checkpoint file is TrainState.to_dict() saved by torch.save: tensors and plain values only, so that it loads
with weights_only=True. Nothing outside this module spells its keys.
"""

import contextlib
import dataclasses
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlp_cli.config import Config, is_int, is_number, validate_settings
from mlp_cli.errors import CheckpointError, MlpError, first_line, os_reason
from mlp_cli.events import EpochMetrics
from mlp_cli.models import model_for, parameter_shapes_for

CHECKPOINT_FORMAT = "mlp-checkpoint"
# 1 (mlp 0.1): the model's input size and class names under "model"; 2 (mlp 0.2): under "architecture"
FORMAT_VERSION = 2
REQUIRED_KEYS = ("config", "architecture", "model_state", "epoch", "metrics")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive (since torch 1.6)
PICKLE_PROTO = b"\x80"  # ... or, before that, a pickle (protocol 2 or later)
SHOWN_CHARACTERS = 40  # of a bad value quoted in an error message


@dataclass(frozen=True)
class Architecture:
    """What the weights and the config do not say about the model: its input size and its classes' names."""

    num_inputs: int
    num_outputs: int
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class RankSums:
    """One rank's running sums of an epoch in progress (under torchrun each rank adds up its own part)."""

    samples_done: int
    loss_sum: torch.Tensor
    correct: torch.Tensor


@dataclass(frozen=True)
class SavedProgress:
    """An epoch stopped part-way (Ctrl-C, SIGTERM): enough to continue it exactly, on the CPU."""

    order_state: torch.Tensor  # the data-order generator's state before the epoch's permutation was drawn
    batches_done: int
    totals: RankSums  # over all ranks
    seconds: float
    by_rank: tuple[RankSums, ...] | None = None  # under torchrun: each rank's own sums, in rank order


@dataclass(frozen=True)
class RngStates:
    """The random generators a resumed run continues: dropout's (torch's global one) and the data order's."""

    torch_state: torch.Tensor  # torch's global generator, which draws dropout's masks
    data_order: torch.Tensor  # at the next epoch boundary
    torch_by_rank: tuple[torch.Tensor, ...] | None = None  # under torchrun: each rank's own dropout stream


@dataclass(frozen=True)
class TrainState:
    """A checkpoint: the model and, for last.pt, everything needed to resume the run exactly where it stopped."""

    config: dict[str, Any]  # the run's settings, as config_to_dict writes them (validated by restore_model)
    architecture: Architecture
    model_state: dict[str, torch.Tensor]  # the plain model's, never DDP's (no "module." prefixes)
    metrics: tuple[EpochMetrics, ...]  # one row per finished epoch
    optimizer_state: dict[str, Any] | None = None  # None: the weights alone, which evaluate but cannot resume
    progress: SavedProgress | None = None  # None at an epoch boundary
    rng: RngStates | None = None

    @property
    def epoch(self) -> int:
        """Finished epochs."""
        return len(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint as torch.save writes it (format FORMAT_VERSION)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config,
            "architecture": {"num_inputs": self.architecture.num_inputs,
                             "num_outputs": self.architecture.num_outputs,
                             "class_names": list(self.architecture.class_names)},
            "model_state": self.model_state,
            "optimizer_state": self.optimizer_state,
            "epoch": self.epoch,
            "metrics": [dataclasses.asdict(row) for row in self.metrics],
            "progress": None if self.progress is None else progress_to_dict(self.progress),
            "rng": None if self.rng is None else {
                "torch": self.rng.torch_state, "data_order": self.rng.data_order,
                **({} if self.rng.torch_by_rank is None else {"torch_by_rank": list(self.rng.torch_by_rank)})},
        }

    @classmethod
    def from_dict(cls, saved: Any, path: Path) -> "TrainState":
        """The state a loaded checkpoint holds, of any format this mlp reads, once every key is checked.

        Raises:
            CheckpointError: not an mlp checkpoint, damaged, or of a newer format.
        """
        saved = upgraded(saved, path)
        problem = schema_problem(saved)
        if problem:
            raise CheckpointError(f"{path}: damaged checkpoint, {problem}")
        shape, progress, rng = saved["architecture"], saved.get("progress"), saved.get("rng")
        return cls(
            config=saved["config"],
            architecture=Architecture(shape["num_inputs"], shape["num_outputs"], tuple(shape["class_names"])),
            model_state=saved["model_state"],
            metrics=tuple(EpochMetrics(**row) for row in saved["metrics"]),
            optimizer_state=saved.get("optimizer_state"),
            progress=None if progress is None else progress_from_dict(progress),
            rng=None if rng is None else RngStates(rng["torch"], rng["data_order"],
                                                   tuple(rng["torch_by_rank"]) if "torch_by_rank" in rng else None),
        )


def sums_to_dict(sums: RankSums) -> dict[str, Any]:
    return {"samples_done": sums.samples_done, "loss_sum": sums.loss_sum, "correct": sums.correct}


def progress_to_dict(progress: SavedProgress) -> dict[str, Any]:
    saved = {"order_state": progress.order_state, "batches_done": progress.batches_done,
             **sums_to_dict(progress.totals), "seconds": progress.seconds}
    if progress.by_rank is not None:
        saved["by_rank"] = [sums_to_dict(sums) for sums in progress.by_rank]
    return saved


def progress_from_dict(saved: dict[str, Any]) -> SavedProgress:
    def sums(table: dict[str, Any]) -> RankSums:
        return RankSums(table["samples_done"], table["loss_sum"], table["correct"])

    by_rank = saved.get("by_rank")
    return SavedProgress(saved["order_state"], saved["batches_done"], sums(saved), saved["seconds"],
                         None if by_rank is None else tuple(sums(table) for table in by_rank))


def upgraded(saved: Any, path: Path) -> dict[str, Any]:
    """A loaded checkpoint of any format this mlp reads, in the current format's keys.

    Raises:
        CheckpointError: not an mlp checkpoint, of a newer format, or missing a key every format has.
    """
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an mlp checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    version = saved.get("format_version")
    if not is_int(version) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this mlp reads "
                              f"({FORMAT_VERSION}); upgrade mlp")
    if version < 1:
        raise CheckpointError(f"{path}: checkpoint format {version!r} was never written by mlp (its formats are 1 to "
                              f"{FORMAT_VERSION}); the file is damaged or crafted")
    if version == 1 and "model" in saved:
        saved = {**{key: value for key, value in saved.items() if key != "model"}, "architecture": saved["model"]}
    missing = [key for key in REQUIRED_KEYS if key not in saved]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    return saved


def save_checkpoint(state: TrainState, path: Path) -> None:
    """Write state to path through a temporary file in the same folder, so path is never half-written.

    Raises:
        CheckpointError: the folder is not writable or the disk is full; path keeps its old content.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(state.to_dict(), file)
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


def load_checkpoint(path: Path) -> TrainState:
    """A checkpoint's state, on the CPU, loaded with weights_only=True so a crafted file cannot run code.

    Every key is checked here, once (TrainState.from_dict), so that eval, predict and resume can trust the rest.

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
    return TrainState.from_dict(checkpoint, path)


def looks_like_torch_file(path: Path) -> bool:
    """Whether path starts as torch.save writes: a zip archive, or (torch before 1.6) a pickle."""
    try:
        with open(path, "rb") as file:
            start = file.read(len(ZIP_MAGIC))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from err
    return start == ZIP_MAGIC or start.startswith(PICKLE_PROTO)


def schema_problem(checkpoint: dict[str, Any]) -> str | None:
    """What is wrong with the checkpoint's keys (e.g. "epoch is '2', expected an integer >= 0"), or None."""
    if not isinstance(checkpoint["config"], dict):
        return f"config is {short(checkpoint['config'])}, expected a table of settings"
    shape = checkpoint["architecture"]
    if not isinstance(shape, dict) or not all(is_int(shape.get(key)) and shape[key] >= 1
                                              for key in ("num_inputs", "num_outputs")):
        return f"architecture is {short(shape)}, expected num_inputs and num_outputs >= 1"
    names = shape.get("class_names")
    if not (isinstance(names, list) and len(names) == shape["num_outputs"]
            and all(isinstance(name, str) for name in names)):
        return f"architecture.class_names is {short(names)}, expected {shape['num_outputs']} names"
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
    if not is_int(progress.get("batches_done")) or progress["batches_done"] < 0:
        return f"progress.batches_done is {short(progress.get('batches_done'))}, expected an integer >= 0"
    if not is_number(progress.get("seconds")):
        return f"progress.seconds is {short(progress.get('seconds'))}, expected a number"
    by_rank = progress.get("by_rank")  # under torchrun: each rank's own running sums
    if by_rank is None:
        by_rank = []
    elif not isinstance(by_rank, list):
        return f"progress.by_rank is {short(by_rank)}, expected a list of each rank's sums"
    for name, sums in [("progress", progress), *((f"progress.by_rank[{rank}]", sums)
                                                 for rank, sums in enumerate(by_rank))]:
        problem = sums_problem(name, sums)
        if problem:
            return problem
    return rng_state_problem("progress.order_state", progress.get("order_state"))


def sums_problem(name: str, sums: Any) -> str | None:
    """Whether sums (RankSums as saved: the totals, or one rank's) holds samples_done >= 0 and two tensors."""
    if not isinstance(sums, dict):
        return f"{name} is {short(sums)}, expected a table of running sums"
    if not is_int(sums.get("samples_done")) or sums["samples_done"] < 0:
        return f"{name}.samples_done is {short(sums.get('samples_done'))}, expected an integer >= 0"
    for key in ("loss_sum", "correct"):
        if not isinstance(sums.get(key), torch.Tensor):
            return f"{name}.{key} is {short(sums.get(key))}, expected a tensor"
    return None


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


def restore_model(state: TrainState, path: Path) -> tuple[Config, nn.Module]:
    """The config and trained model stored in a checkpoint, rebuilt from the checkpoint alone.

    The weights' shapes are compared with the ones the config describes before the model is built, so a small
    file claiming a huge model is refused without allocating it.

    Raises:
        CheckpointError: the stored config or weights do not fit the model they describe.
    """
    try:
        config = validate_settings(state.config)
        shape = state.architecture
        expected = parameter_shapes_for(config, shape.num_inputs, shape.num_outputs)
        problem = state_shape_problem(expected, state.model_state)
        if problem:
            raise CheckpointError(problem)
        model = model_for(config, shape.num_inputs, shape.num_outputs)
        model.load_state_dict(state.model_state)
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
