"""Setting up a run: `mlp train` and `mlp train --resume` share one set-up, then hand the run to a Trainer.

train() starts a run in a new folder; resume_run() continues one from its last.pt, after checking that the
checkpoint, the flags and the folder allow it. Both work the same under torchrun, in every process.
"""

import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlp_cli.checkpoint import TrainState, load_checkpoint, restore_model, save_checkpoint
from mlp_cli.config import (
    RESUMABLE_CHANGES,
    Config,
    config_to_dict,
    config_to_toml,
    is_int,
    is_number,
    validate_settings,
)
from mlp_cli.data import DataModule, hold_out, load_data
from mlp_cli.devices import configure_threads, prepare_device
from mlp_cli.distributed import Ranks, launched_ranks, process_group
from mlp_cli.errors import CheckpointError, ConfigError, MlpError, first_line
from mlp_cli.events import NULL_REPORTER, FitResult, Reporter
from mlp_cli.models import forward_multiply_adds, model_for
from mlp_cli.optimization import make_optimizer
from mlp_cli.runs import (
    BEST_CHECKPOINT,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    create_run_dir,
    remove_temporary_files,
    write_metrics,
    write_text_atomically,
)
from mlp_cli.signals import StopRequest
from mlp_cli.trainer import Trainer, derive_seed, find_best_epoch, selection_split


def train(config: Config, out: Path | None = None, reporter: Reporter = NULL_REPORTER,
          stop: StopRequest | None = None, overwrite: bool = False, data: DataModule | None = None) -> FitResult:
    """Load the data, build the model from config.seed, and fit it in a new run folder.

    Launched by torchrun, each process calls train: they join one process group and train with DDP.
    data: the whole data set already in memory on the device (a sweep worker loads it once for all its trials).

    Raises:
        MlpError: the device, the data or the run folder is not usable; or training stopped early.
    """
    ranks = launched_ranks()
    device, threads, data = set_up(config, ranks, data)
    torch.manual_seed(config.seed)
    # built on the CPU so that a seed gives the same initial weights on every device
    model = model_for(config, data.num_inputs, data.num_classes)
    model.to(device)
    seed_rank(config, ranks)
    with process_group(ranks, device, config.backend, config.dist_timeout) as ranks:
        run_dir = ranks.on_main(functools.partial(create_run_dir, out, config.impl, config_to_toml(config), overwrite))
        return fit(Trainer(config, model, data, run_dir, reporter, stop, ranks), threads)


def resume_run(path: Path, overrides: dict[str, Any], reporter: Reporter = NULL_REPORTER,
               stop: StopRequest | None = None, data: DataModule | None = None) -> FitResult:
    """Continue the run that wrote checkpoint path (or the run folder path), in its own folder, exactly where it
    stopped.

    Under torchrun every process reads the checkpoint (on several machines, path must be visible to all),
    whatever the number of processes that wrote it.

    Raises:
        MlpError: the checkpoint is not resumable, a flag conflicts with it, or there is nothing left to do.
    """
    ranks = launched_ranks()
    path = path / LAST_CHECKPOINT if path.is_dir() else path  # a run folder resumes from its last.pt
    state, config, model = load_resumable(path, overrides)
    device, threads, data = set_up(config, ranks, data)
    model.to(device)
    with process_group(ranks, device, config.backend, config.dist_timeout) as ranks:
        run_dir = path.parent
        ranks.on_main(functools.partial(write_config, run_dir, config))
        ranks.on_main(functools.partial(repair_run_files, run_dir, state, config))
        return fit(Trainer(config, model, data, run_dir, reporter, stop, ranks, state), threads)


def set_up(config: Config, ranks: Ranks, loaded: DataModule | None) -> tuple[torch.device, int, DataModule]:
    """The device and its thread count, and the data set for config on it."""
    device = prepare_device(config, ranks)
    data = load_training_data(config, device, loaded)
    return device, configure_threads_for(config, data, ranks.local_world_size), data


def configure_threads_for(config: Config, data: DataModule, processes_here: int = 1) -> int:
    """Set torch's CPU threads for config's model on data: config.threads, or for 0 mlp's choice from the model's
    size (devices.configure_threads), shared among processes_here processes of the job on this machine."""
    multiply_adds = forward_multiply_adds(config, data.num_inputs, data.num_classes)
    return configure_threads(config.threads, processes_here, multiply_adds)


def fit(trainer: Trainer, threads: int) -> FitResult:
    """Tell the reporter what is about to happen, then train."""
    trainer.reporter.on_start(trainer.describe(threads))
    return trainer.fit()


def load_training_data(config: Config, device: torch.device, loaded: DataModule | None = None) -> DataModule:
    """The data set for config, with config.val_size training images held out (the same ones on every resume).

    loaded: the whole data set already in memory on device.
    """
    data_dir = Path(config.data_dir) if config.data_dir else None
    data = loaded if loaded is not None else load_data(config.dataset, data_dir, device)
    if not config.val_size:
        return data
    return hold_out(data, config.val_size, torch.Generator().manual_seed(derive_seed(config.seed, "validation")))


def seed_rank(config: Config, ranks: Ranks) -> None:
    """Under torchrun, give each rank its own torch RNG stream once the (identical) model is built, so that
    the ranks' dropout masks are independent rather than copies of each other."""
    if ranks.is_distributed:
        torch.manual_seed(derive_seed(config.seed, f"rank:{ranks.rank}"))


def resumed_config(saved: Config, overrides: dict[str, Any], path: Path) -> Config:
    """The saved config with the few settings a resume may change; any other difference is refused.

    Raises:
        ConfigError: a flag contradicts the checkpoint's setting.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    sources = {key: f"--{key.replace('_', '-')}" for key in given}
    requested = validate_settings({**config_to_dict(saved), **given}, sources)
    for key in given:
        if key not in RESUMABLE_CHANGES and getattr(requested, key) != getattr(saved, key):
            allowed = ", ".join(f"--{name.replace('_', '-')}" for name in RESUMABLE_CHANGES)
            raise ConfigError(f"{sources[key]} {given[key]} conflicts with {path} ({key} = {getattr(saved, key)!r}); "
                              f"a resumed run keeps its settings, only {allowed} may change")
    return requested


def load_resumable(path: Path, overrides: dict[str, Any]) -> tuple[TrainState, Config, nn.Module]:
    """The checkpoint's state at path, the config to continue it with, and its model, once all are checked.

    Raises:
        MlpError: the checkpoint is not resumable, a flag conflicts with it, or there is nothing left to do.
    """
    last = path.parent / LAST_CHECKPOINT
    if path.name != LAST_CHECKPOINT and last.is_file() and path.is_file() and not path.samefile(last):
        # resuming writes the folder's last.pt: from another checkpoint it would overwrite later epochs
        raise CheckpointError(f"{path}: only a run's last checkpoint can be resumed, and resuming from this one "
                              f"would overwrite {last}; resume with: mlp train --resume {last}")
    state = load_checkpoint(path)
    if state.optimizer_state is None or state.rng is None:
        raise CheckpointError(f"{path}: checkpoint has no optimizer or RNG state, so it cannot be resumed")
    saved, model = restore_model(state, path)
    config = resumed_config(saved, overrides, path)
    check_optimizer_state(state.optimizer_state, model, config, path)
    if state.epoch >= config.epochs:
        if launched_ranks().is_main:  # a finished run killed between its last writes is still made whole
            repair_run_files(path.parent, state, config)
        raise ConfigError(f"{path}: the run already has {state.epoch} epochs; pass --epochs N with N > "
                          f"{state.epoch} to train further")
    return state, config, model


def check_optimizer_state(state: dict[str, Any], model: nn.Module, config: Config, path: Path) -> None:
    """Raise CheckpointError unless the saved optimizer state fits the model and the optimizer config names.

    torch's load_state_dict accepts a state whose tensors have other shapes, or whose settings are strings,
    and the run would fail later inside optimizer.step with a traceback.
    """
    fresh = make_optimizer(model, config)
    expected = fresh.state_dict()["param_groups"]
    groups, shapes = state["param_groups"], [parameter.shape for parameter in model.parameters()]
    problem = None
    if len(groups) != len(expected) or any(group.get("params") != want["params"]
                                           for group, want in zip(groups, expected, strict=False)):
        problem = "its parameter groups are not those of the model"
    elif any(not is_like(group[key], want[key]) for group, want in zip(groups, expected, strict=True)
             for key in want.keys() & group.keys() - {"params"}):  # another torch may know other settings
        problem = "a setting of its parameter groups has the wrong type"
    elif not all(is_int(index) and 0 <= index < len(shapes) and isinstance(entry, dict) and all(
            isinstance(value, torch.Tensor) and (value.dim() == 0 or value.shape == shapes[index])
            for value in entry.values()) for index, entry in state["state"].items()):
        problem = "its per-parameter state does not fit the model's parameters"
    else:
        try:
            fresh.load_state_dict(state)
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            problem = first_line(err)
    if problem:
        raise CheckpointError(f"{path}: damaged checkpoint, the optimizer state cannot be resumed ({problem})")


def is_like(saved: Any, expected: Any) -> bool:
    """Whether an optimizer setting read from a checkpoint has the kind of value torch's own has."""
    if is_number(expected):
        return is_number(saved)
    if isinstance(expected, tuple | list):
        return (isinstance(saved, tuple | list) and len(saved) == len(expected)
                and all(is_like(item, want) for item, want in zip(saved, expected, strict=True)))
    return type(saved) is type(expected)


def repair_run_files(run_dir: Path, state: TrainState, config: Config) -> None:
    """Bring metrics.jsonl and best.pt up to date with last.pt (state), which a kill between the writes of
    an epoch (trainer.save_epoch) may have left one epoch behind; and remove what interrupted writes left.

    Raises:
        MlpError: a file cannot be written.
    """
    remove_temporary_files(run_dir)
    history = list(state.metrics)
    write_metrics(run_dir, history)
    best_epoch = find_best_epoch(history, selection_split(config))
    if best_epoch == 0 or best_epoch != state.epoch or state.progress is not None:
        return  # best.pt is only ever behind by last.pt's own epoch, saved at its end
    best = run_dir / BEST_CHECKPOINT
    try:
        is_current = load_checkpoint(best).epoch == best_epoch
    except CheckpointError:  # missing, or a half-written file that a kill left
        is_current = False
    if not is_current:
        save_checkpoint(state, best)


def write_config(run_dir: Path, config: Config) -> None:
    """Replace run_dir/config.toml with config in one step.

    Raises:
        MlpError: the folder is not writable or the disk is full.
    """
    path = run_dir / CONFIG_FILE
    try:
        write_text_atomically(path, config_to_toml(config))
    except OSError as err:
        raise MlpError(f"{path}: cannot write the run's config ({err.strerror or err})") from err
