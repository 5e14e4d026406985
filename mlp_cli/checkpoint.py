"""Checkpoints: written atomically, loaded without running code, checked before use, turned back into models."""

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlp_cli.config import Config, validate_settings
from mlp_cli.errors import CheckpointError, MlpError
from mlp_cli.models import build_model

CHECKPOINT_FORMAT = "mlp-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("config", "model", "model_state", "epoch", "metrics")


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
    except OSError as err:
        raise CheckpointError(f"{path}: cannot save checkpoint ({err.strerror or err})") from err
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, on the CPU, loaded with weights_only=True so a crafted file cannot run code.

    Raises:
        CheckpointError: the file is missing, unreadable, not an mlp checkpoint, or from a newer mlp.
    """
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (a run folder holds last.pt and best.pt)")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file such as {path / 'best.pt'}")
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


def check_checkpoint(path: Path, checkpoint: Any) -> None:
    """Raise CheckpointError unless checkpoint is an mlp checkpoint this version can read."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an mlp checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    version = checkpoint.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this mlp reads "
                              f"({FORMAT_VERSION}); upgrade mlp")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")


def restore_model(checkpoint: dict[str, Any], path: Path) -> tuple[Config, nn.Module]:
    """The config and trained model stored in a checkpoint, rebuilt from the checkpoint alone.

    Raises:
        CheckpointError: the stored config or weights do not fit the model they describe.
    """
    try:
        config = validate_settings(checkpoint["config"])
        shape = checkpoint["model"]
        model = build_model(config.impl, shape["num_inputs"], config.hidden, shape["num_outputs"], config.sigma,
                            config.activation, config.dropout, config.init)
        model.load_state_dict(checkpoint["model_state"])
    except (MlpError, KeyError, TypeError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: checkpoint does not describe a usable model ({reason})") from err
    return config, model
