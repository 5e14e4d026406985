"""The one training loop for both models: minibatch SGD on softmax cross-entropy, metrics, checkpoints.

It knows nothing about the terminal: it tells a Reporter what happens, with plain numbers.
"""

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from mlp_cli.augment import augment_batch
from mlp_cli.checkpoint import load_checkpoint, restore_model, save_checkpoint
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
from mlp_cli.devices import prepare_device
from mlp_cli.distributed import SINGLE_PROCESS, Ranks, launched_ranks, process_group
from mlp_cli.errors import (
    CheckpointError,
    ConfigError,
    MlpError,
    TrainingDivergedError,
    TrainingStoppedError,
    first_line,
)
from mlp_cli.events import NULL_REPORTER, BatchProgress, EpochMetrics, FitResult, Reporter, TrainingPlan
from mlp_cli.models import build_model
from mlp_cli.optim import SGD, Optimizer
from mlp_cli.runs import (
    BEST_CHECKPOINT,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    METRICS_FILE,
    create_run_dir,
    remove_temporary_files,
    write_text_atomically,
)
from mlp_cli.signals import StopRequest

REPORT_INTERVAL_SECONDS = 0.1  # each report reads the loss back from the device: a few times a second at most


def precision_context(data: DataModule, config: Config) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass when config asks for it; float32 otherwise."""
    device_type = data.train_labels.device.type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.precision == "bf16")


@dataclass(frozen=True)
class SplitMetrics:
    loss: float  # mean cross-entropy
    accuracy: float
    confusion: torch.Tensor  # (q, q) counts on the CPU: row = true class, column = predicted class
    # (n,) predicted class of every image of the split, in file order, on the CPU; None when several
    # processes shared the work (each saw only its part)
    predictions: torch.Tensor | None


def evaluate(model: nn.Module, data: DataModule, split: str, config: Config,
             ranks: Ranks = SINGLE_PROCESS) -> SplitMetrics:
    """Mean cross-entropy loss, accuracy and confusion matrix of model on a whole split.

    Under torchrun each rank evaluates its part of every batch and the sums are added up over the ranks,
    so every rank gets the numbers of the whole split.
    """
    model.eval()
    device, classes = data.train_labels.device, data.num_classes
    loss_sum = torch.zeros((), device=device)
    counts = torch.zeros(classes * classes, dtype=torch.long, device=device)
    predictions = []
    with torch.inference_mode(), precision_context(data, config):
        for images, labels in data.batches(split, config.batch_size, ranks=ranks):
            logits = model(images)
            loss_sum += functional.cross_entropy(logits, labels, reduction="sum")
            predictions.append(logits.argmax(dim=1))
            counts += torch.bincount(labels * classes + predictions[-1], minlength=classes * classes)
    confusion = ranks.sum(counts).reshape(classes, classes).cpu()
    count = len(data.split(split)[1])
    return SplitMetrics(ranks.sum(loss_sum).item() / count, confusion.trace().item() / count, confusion,
                        None if ranks.is_distributed else torch.cat(predictions).cpu())


@dataclass
class EpochProgress:
    """The running sums of the epoch in progress: a checkpoint taken mid-epoch keeps them to continue exactly."""

    order_state: torch.Tensor  # the data-order generator's state before this epoch's permutation was drawn
    batches_done: int
    samples_done: int
    loss_sum: torch.Tensor
    correct: torch.Tensor
    seconds: float

    @classmethod
    def start(cls, generator: torch.Generator, device: torch.device) -> "EpochProgress":
        return cls(generator.get_state(), 0, 0, torch.zeros((), device=device),
                   torch.zeros((), dtype=torch.long, device=device), 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"order_state": self.order_state, "batches_done": self.batches_done,
                "samples_done": self.samples_done, "loss_sum": self.loss_sum.cpu(),
                "correct": self.correct.cpu(), "seconds": self.seconds}

    def to_checkpoint(self, ranks: Ranks = SINGLE_PROCESS) -> dict[str, Any]:
        """The epoch in progress as a checkpoint keeps it: the sums over all ranks, and under torchrun each
        rank's own sums too (called on every rank)."""
        saved = self.summed(ranks).to_dict()
        if ranks.is_distributed:
            own = {"samples_done": self.samples_done, "loss_sum": self.loss_sum.cpu(), "correct": self.correct.cpu()}
            saved["by_rank"] = ranks.gather(own)
        return saved

    @classmethod
    def from_dict(cls, saved: dict[str, Any], device: torch.device,
                  ranks: Ranks = SINGLE_PROCESS) -> "EpochProgress":
        """The saved epoch in progress, with this rank's share of its running sums.

        Resumed on as many ranks as wrote it, each rank continues its own sums, so the epoch's totals are
        added in the same order as in an unbroken run (the same to the bit). On another number of ranks,
        rank 0 takes the totals and the others start from zero: the totals then agree up to rounding.
        """
        by_rank = saved.get("by_rank")
        if by_rank is not None and len(by_rank) == ranks.world_size:
            sums = by_rank[ranks.rank]
        elif ranks.is_main:
            sums = saved
        else:
            sums = {"samples_done": 0, "loss_sum": torch.zeros_like(saved["loss_sum"]),
                    "correct": torch.zeros_like(saved["correct"])}
        return cls(saved["order_state"], saved["batches_done"], sums["samples_done"], sums["loss_sum"].to(device),
                   sums["correct"].to(device), saved["seconds"])

    def summed(self, ranks: Ranks) -> "EpochProgress":
        """The sums over all ranks (each rank adds up its own part of every batch); the same on every rank."""
        if not ranks.is_distributed:
            return self
        counts = ranks.sum(torch.stack([self.correct, torch.tensor(self.samples_done, device=self.correct.device)]))
        return dataclasses.replace(self, loss_sum=ranks.sum(self.loss_sum.clone()), correct=counts[0],
                                   samples_done=int(counts[1]))


def check_finite(loss: torch.Tensor | float, where: str, config: Config, last_good: str) -> None:
    """Raise TrainingDivergedError if loss is NaN or infinite (a non-finite batch loss poisons the running sum)."""
    if not math.isfinite(float(loss)):
        raise TrainingDivergedError(
            f"the loss became NaN or infinite {where}; stopped, last good checkpoint: {last_good}; "
            f"try a lower learning rate than --lr {config.lr}")


def train_epoch(model: nn.Module, optimizer: Optimizer, data: DataModule, config: Config,
                generator: torch.Generator, epoch: int, progress: EpochProgress, reporter: Reporter,
                stop: StopRequest | None = None, last_good: str = "none", ranks: Ranks = SINGLE_PROCESS) -> bool:
    """Continue the epoch from progress (updated in place with this rank's sums); False if stopped by a signal.

    Under torchrun, model is the DistributedDataParallel wrapper and this rank trains on its part of each batch.
    """
    model.train()
    generator.set_state(progress.order_state)  # the same permutation again, then skip the batches done
    started, next_report = time.perf_counter(), time.perf_counter() + REPORT_INTERVAL_SECONDS
    train_count = len(data.train_labels)
    num_batches = math.ceil(train_count / config.batch_size)
    batches = data.batches("train", config.batch_size, generator, skip=progress.batches_done, ranks=ranks)
    for images, labels in batches:
        batch_count = min(config.batch_size, train_count - progress.batches_done * config.batch_size)  # all ranks
        if config.augment:
            # seeded by (seed, epoch, batch): the same draws again when an interrupted epoch is resumed
            batch_seed = derive_seed(config.seed, f"augment:{epoch}:{progress.batches_done}")
            images = augment_batch(images, config.augment, torch.Generator().manual_seed(batch_seed),
                                   ranks.share(batch_count), batch_count)
        with precision_context(data, config):
            logits = model(images)  # (n, q)
            summed_loss = functional.cross_entropy(logits, labels, label_smoothing=config.label_smoothing,
                                                   reduction="sum")
        # the mean over the whole batch: DDP averages the ranks' gradients, so each rank divides by the
        # batch size over the number of ranks (one process: the plain mean), whatever its own part's size
        loss = summed_loss / (batch_count / ranks.world_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # summed on the device and read only when reporting: no host sync per batch
        progress.loss_sum.add_(summed_loss.detach())
        progress.correct.add_((logits.detach().argmax(dim=1) == labels).sum())
        progress.batches_done += 1
        progress.samples_done += len(labels)
        if ranks.is_main and time.perf_counter() >= next_report:
            if not ranks.is_distributed:  # several ranks check their summed loss together, after the epoch
                where = f"in epoch {epoch} (detected at batch {progress.batches_done})"
                check_finite(progress.loss_sum, where, config, last_good)
            samples_seen = min(progress.batches_done * config.batch_size, train_count)  # by all ranks
            reporter.on_batch(BatchProgress(epoch, samples_seen, summed_loss.item() / max(len(labels), 1)))
            next_report = time.perf_counter() + REPORT_INTERVAL_SECONDS
        if ranks.agree_to_stop(stop, progress.batches_done, num_batches):
            progress.seconds += time.perf_counter() - started
            return False
    progress.seconds += time.perf_counter() - started
    return True


def derive_seed(seed: int, purpose: str) -> int:
    """A seed for one random stream, independent of the others drawn from the same user seed.

    Seeding the data-order generator with the user's seed itself would replay the very numbers that drew
    the initial weights (torch.manual_seed and Generator.manual_seed start the same Mersenne Twister), so
    each epoch's order would be a function of W1's values.
    """
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # a non-negative 63-bit integer


@dataclass
class RunState:
    """Where a run stands between batches: what fit() needs to start or continue it."""

    optimizer_state: dict[str, Any] | None
    history: list[EpochMetrics]
    progress: dict[str, Any] | None  # EpochProgress.to_dict() of the epoch in progress, None at a boundary
    order_state: torch.Tensor | None  # the data-order generator at the next epoch boundary
    torch_rng: torch.Tensor | None  # this rank's global torch RNG (dropout masks)


FRESH_RUN = RunState(None, [], None, None, None)


def make_optimizer(model: nn.Module, config: Config) -> Optimizer:
    """Minibatch SGD as in the book (written out, see optim.py), SGD with momentum, Adam (the Flux example's
    choice) or AdamW.

    Raises:
        MlpError: torch cannot start an optimizer: its first one imports torch._dynamo, which needs a
            writable temporary folder (not the case under `ulimit -f 0` or with a read-only /tmp).
    """
    try:
        return choose_optimizer(model, config)
    except OSError as err:
        raise MlpError(f"torch cannot start the {config.optimizer} optimizer ({err.strerror or err}); it needs "
                       "a writable temporary folder (set TMPDIR to one)") from err


def choose_optimizer(model: nn.Module, config: Config) -> Optimizer:
    """The optimizer config names, over model's parameters."""
    parameters, lr, decay = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "momentum":
        return torch.optim.SGD(parameters, lr=lr, momentum=config.momentum, weight_decay=decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    return SGD(parameters, lr=lr, weight_decay=decay)


def make_checkpoint(model: nn.Module, optimizer: Optimizer, data: DataModule, config: Config,
                    history: list[EpochMetrics], progress: EpochProgress | None,
                    generator: torch.Generator, ranks: Ranks = SINGLE_PROCESS) -> dict[str, Any]:
    """Everything needed to evaluate the model, or to resume the run exactly (plain types and tensors only).

    progress is this rank's epoch in progress (its own sums), or None at an epoch boundary.

    model is the plain module, never the DDP wrapper, so the weights load into a single process as they are.
    Called on every rank under torchrun: it collects each rank's RNG state (their dropout masks differ).
    """
    rng = {"torch": torch.get_rng_state(), "data_order": generator.get_state()}
    if ranks.is_distributed:
        rng["torch_by_rank"] = ranks.gather(torch.get_rng_state())
    return {
        "config": config_to_dict(config),
        "model": {"num_inputs": data.num_inputs, "num_outputs": data.num_classes,
                  "class_names": list(data.class_names)},
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "epoch": len(history),
        "metrics": [dataclasses.asdict(row) for row in history],
        "progress": None if progress is None else progress.to_checkpoint(ranks),
        "rng": rng,
    }


def fit(model: nn.Module, data: DataModule, config: Config, run_dir: Path, reporter: Reporter = NULL_REPORTER,
        state: RunState = FRESH_RUN, stop: StopRequest | None = None, ranks: Ranks = SINGLE_PROCESS) -> FitResult:
    """Train model up to config.epochs, writing metrics and last/best checkpoints into run_dir.

    Under torchrun every rank calls fit; they train one model together and only rank 0 writes files.

    Raises:
        TrainingStoppedError: a stop was requested; last.pt holds the run mid-epoch, ready to resume.
        TrainingDivergedError: the loss became NaN or infinite; nothing was saved after the last good epoch.
    """
    device = data.train_labels.device
    trained = ranks.parallel(model, device)  # what the training steps run: model, or DDP around it
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "data-order"))
    if state.optimizer_state is not None:
        optimizer.load_state_dict(state.optimizer_state)
        generator.set_state(state.order_state)
        torch.set_rng_state(state.torch_rng)
    history = list(state.history)
    selected_by = selection_split(config)
    best_epoch = find_best_epoch(history, selected_by)
    last_good = str(run_dir / LAST_CHECKPOINT) if history else "none (no epoch finished)"
    for epoch in range(len(history) + 1, config.epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, epoch)
        if state.progress is not None and epoch == len(state.history) + 1:
            progress = EpochProgress.from_dict(state.progress, device, ranks)
        else:
            progress = EpochProgress.start(generator, device)
        finished = train_epoch(trained, optimizer, data, config, generator, epoch, progress, reporter, stop,
                               last_good, ranks)
        if not finished:
            path = run_dir / LAST_CHECKPOINT
            checkpoint = make_checkpoint(model, optimizer, data, config, history, progress, generator, ranks)
            ranks.on_main(functools.partial(save_checkpoint, checkpoint, path))
            raise TrainingStoppedError(f"stopped in epoch {epoch} after batch {progress.batches_done}; saved {path}; "
                                  f"resume with: mlp train --resume {path}", stop.exit_code)
        progress = progress.summed(ranks)
        check_finite(progress.loss_sum, f"in epoch {epoch} (detected at batch {progress.batches_done})", config,
                     last_good)
        reporter.on_batch(BatchProgress(epoch, progress.samples_done, progress.loss_sum.item() / progress.samples_done,
                                        dict(model.named_parameters())))
        history.append(measure_epoch(model, data, config, epoch, progress, last_good, ranks))
        accuracy = selection_accuracy(history[-1], selected_by)
        is_best = accuracy is not None and (
            best_epoch == 0 or accuracy > selection_accuracy(history[best_epoch - 1], selected_by))
        best_epoch = epoch if is_best else best_epoch
        checkpoint = make_checkpoint(model, optimizer, data, config, history, None, generator, ranks)
        saved = [run_dir / LAST_CHECKPOINT, *([run_dir / BEST_CHECKPOINT] if is_best else [])]
        ranks.on_main(functools.partial(save_epoch, checkpoint, saved, run_dir, history))
        last_good = str(run_dir / LAST_CHECKPOINT)
        reporter.on_epoch(history[-1])  # after the files: a reporter that fails (a picture) costs no checkpoint
        for path in saved:
            reporter.on_checkpoint(path)
    return FitResult(run_dir, history, best_epoch, selected_by)


def save_epoch(checkpoint: dict[str, Any], paths: list[Path], run_dir: Path, history: list[EpochMetrics]) -> None:
    """Save a finished epoch: last.pt, then best.pt when the epoch is the best so far, then metrics.jsonl.

    In this order a kill between two writes leaves best.pt and metrics.jsonl at most one epoch behind last.pt,
    never ahead of it, and that epoch is in last.pt: resuming brings both up to date (repair_run_files).
    Writing best.pt first instead would leave, after such a kill, a best.pt of an epoch that no other file
    records, and the previous best lost.
    """
    for path in paths:
        save_checkpoint(checkpoint, path)
    write_metrics(run_dir, history)


def selection_split(config: Config) -> str:
    """The split whose accuracy chooses best.pt: the held-out validation split if any, else test (D2L's way)."""
    return "val" if config.val_size else "test"


def find_best_epoch(history: list[EpochMetrics], split: str) -> int:
    """The first epoch with the highest accuracy on split (as fit keeps best.pt), or 0 if none was measured."""
    scored = [row for row in history if selection_accuracy(row, split) is not None]
    return max(scored, key=lambda row: selection_accuracy(row, split)).epoch if scored else 0


def learning_rate(config: Config, epoch: int) -> float:
    """The learning rate of a (1-based) epoch: linear warm-up, then the schedule over the remaining epochs."""
    if epoch <= config.warmup_epochs:
        return config.lr * epoch / (config.warmup_epochs + 1)
    done = (epoch - config.warmup_epochs - 1) / max(config.epochs - config.warmup_epochs, 1)  # 0 at the start
    if config.schedule == "step":
        return config.lr * (0.1 if done >= 0.5 else 1.0) * (0.1 if done >= 0.75 else 1.0)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * done))
    return config.lr


def selection_accuracy(row: EpochMetrics, split: str) -> float | None:
    """The accuracy that chooses best.pt: validation with a held-out split, else test (the book's way)."""
    return row.val_accuracy if split == "val" else row.test_accuracy


def measure_epoch(model: nn.Module, data: DataModule, config: Config, epoch: int, progress: EpochProgress,
                  last_good: str, ranks: Ranks = SINGLE_PROCESS) -> EpochMetrics:
    """The epoch's metrics row: running train averages (progress: summed over the ranks) always; the test split
    (and with train_metrics, the whole train split) evaluated every report_every epochs and after the last."""
    row = EpochMetrics(epoch, progress.loss_sum.item() / progress.samples_done,
                       progress.correct.item() / progress.samples_done, seconds=progress.seconds,
                       lr=learning_rate(config, epoch))
    if epoch % config.report_every and epoch != config.epochs:
        return row
    if config.val_size:
        val = evaluate(model, data, "val", config, ranks)
        check_finite(val.loss, f"on the validation split after epoch {epoch}", config, last_good)
        row = dataclasses.replace(row, val_loss=val.loss, val_accuracy=val.accuracy)
    if not config.val_size or epoch == config.epochs:  # with a validation split, test once, at the end
        test = evaluate(model, data, "test", config, ranks)
        check_finite(test.loss, f"on the test split after epoch {epoch}", config, last_good)
        row = dataclasses.replace(row, test_loss=test.loss, test_accuracy=test.accuracy)
    if config.train_metrics:
        train = evaluate(model, data, "train", config, ranks)
        row = dataclasses.replace(row, train_eval_loss=train.loss, train_eval_accuracy=train.accuracy)
    return row


def write_metrics(run_dir: Path, history: list[EpochMetrics]) -> None:
    """Rewrite metrics.jsonl from the history, atomically: after a resume it matches the checkpoint exactly."""
    path = run_dir / METRICS_FILE
    try:
        write_text_atomically(path, "".join(json.dumps(dataclasses.asdict(row)) + "\n" for row in history))
    except OSError as err:
        raise MlpError(f"{path}: cannot write metrics ({err.strerror or err})") from err


def load_training_data(config: Config, device: torch.device, loaded: DataModule | None = None) -> DataModule:
    """The data set for config, with config.val_size training images held out (the same ones on every resume).

    loaded: the whole data set already in memory on device (a sweep worker loads it once for all its trials).
    """
    data_dir = Path(config.data_dir) if config.data_dir else None
    data = loaded if loaded is not None else load_data(config.dataset, data_dir, device)
    if not config.val_size:
        return data
    return hold_out(data, config.val_size, torch.Generator().manual_seed(derive_seed(config.seed, "validation")))


def describe_run(config: Config, model: nn.Module, device: torch.device, threads: int, data: DataModule,
                 run_dir: Path, first_epoch: int, ranks: Ranks = SINGLE_PROCESS) -> TrainingPlan:
    return TrainingPlan(
        impl=config.impl, hidden=config.hidden, num_parameters=sum(p.numel() for p in model.parameters()),
        device=str(device), threads=threads, precision=config.precision,
        dataset=config.dataset, data_source=str(data.source),
        train_samples=len(data.train_labels), test_samples=len(data.test_labels),
        batch_size=config.batch_size, first_epoch=first_epoch, num_epochs=config.epochs, val_size=config.val_size,
        run_dir=str(run_dir), processes=ranks.world_size, settings=tuple(config_to_dict(config).items()),
    )


def seed_rank(config: Config, ranks: Ranks) -> None:
    """Under torchrun, give each rank its own torch RNG stream once the (identical) model is built, so that
    the ranks' dropout masks are independent rather than copies of each other."""
    if ranks.is_distributed:
        torch.manual_seed(derive_seed(config.seed, f"rank:{ranks.rank}"))


def start_run_dir(out: Path | None, config: Config, overwrite: bool) -> Path:
    """A new run folder holding the resolved config."""
    return create_run_dir(out, config.impl, config_to_toml(config), overwrite)


def train(config: Config, out: Path | None = None, reporter: Reporter = NULL_REPORTER,
          stop: StopRequest | None = None, overwrite: bool = False, data: DataModule | None = None) -> FitResult:
    """Load the data, build the model from config.seed, and fit it in a new run folder.

    Launched by torchrun, each process calls train: they join one process group and train with DDP.

    Raises:
        MlpError: the device, the data or the run folder is not usable; or training stopped early.
    """
    ranks = launched_ranks()
    device, threads = prepare_device(config, ranks)
    data = load_training_data(config, device, data)
    torch.manual_seed(config.seed)
    # built on the CPU so that a seed gives the same initial weights on every device
    model = build_model(config.impl, data.num_inputs, config.hidden, data.num_classes, config.sigma,
                        config.activation, config.dropout, config.init)
    model.to(device)
    seed_rank(config, ranks)
    with process_group(ranks, device, config.backend, config.dist_timeout) as ranks:
        run_dir = ranks.on_main(functools.partial(start_run_dir, out, config, overwrite))
        reporter.on_start(describe_run(config, model, device, threads, data, run_dir, 1, ranks))
        return fit(model, data, config, run_dir, reporter, FRESH_RUN, stop, ranks)


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


def load_resumable(path: Path, overrides: dict[str, Any]) -> tuple[dict[str, Any], Config, nn.Module]:
    """The checkpoint at path, the config to continue it with, and its model, once all are checked.

    Raises:
        MlpError: the checkpoint is not resumable, a flag conflicts with it, or there is nothing left to do.
    """
    last = path.parent / LAST_CHECKPOINT
    if path.name != LAST_CHECKPOINT and last.is_file() and path.is_file() and not path.samefile(last):
        # resuming writes the folder's last.pt: from another checkpoint it would overwrite later epochs
        raise CheckpointError(f"{path}: only a run's last checkpoint can be resumed, and resuming from this one "
                              f"would overwrite {last}; resume with: mlp train --resume {last}")
    checkpoint = load_checkpoint(path)
    if "optimizer_state" not in checkpoint or "rng" not in checkpoint:
        raise CheckpointError(f"{path}: checkpoint has no optimizer or RNG state, so it cannot be resumed")
    saved, model = restore_model(checkpoint, path)
    config = resumed_config(saved, overrides, path)
    check_optimizer_state(checkpoint["optimizer_state"], model, config, path)
    if checkpoint["epoch"] >= config.epochs:
        if launched_ranks().is_main:  # a finished run killed between its last writes is still made whole
            repair_run_files(path.parent, checkpoint, config)
        raise ConfigError(f"{path}: the run already has {checkpoint['epoch']} epochs; pass --epochs N with N > "
                          f"{checkpoint['epoch']} to train further")
    return checkpoint, config, model


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


def repair_run_files(run_dir: Path, checkpoint: dict[str, Any], config: Config) -> None:
    """Bring metrics.jsonl and best.pt up to date with last.pt (checkpoint), which a kill between the writes of
    an epoch (save_epoch) may have left one epoch behind; and remove what interrupted writes left.

    Raises:
        MlpError: a file cannot be written.
    """
    remove_temporary_files(run_dir)
    history = [EpochMetrics(**row) for row in checkpoint["metrics"]]
    write_metrics(run_dir, history)
    best_epoch = find_best_epoch(history, selection_split(config))
    if best_epoch == 0 or best_epoch != checkpoint["epoch"] or checkpoint.get("progress") is not None:
        return  # best.pt is only ever behind by last.pt's own epoch, saved at its end
    best = run_dir / BEST_CHECKPOINT
    try:
        is_current = load_checkpoint(best)["epoch"] == best_epoch
    except CheckpointError:  # missing, or a half-written file that a kill left
        is_current = False
    if not is_current:
        save_checkpoint(checkpoint, best)


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


def rank_rng_state(saved: dict[str, Any], config: Config, ranks: Ranks) -> torch.Tensor:
    """This rank's torch RNG state from a checkpoint's: its own if the run had as many ranks, else rank 0's
    for rank 0 and a fresh stream for the others (their dropout masks then differ from an unbroken run)."""
    by_rank = saved.get("torch_by_rank")
    if by_rank is not None and len(by_rank) == ranks.world_size:
        return by_rank[ranks.rank]
    if ranks.is_main:
        return saved["torch"]
    return torch.Generator().manual_seed(derive_seed(config.seed, f"rank:{ranks.rank}:resumed")).get_state()


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
    checkpoint, config, model = load_resumable(path, overrides)
    device, threads = prepare_device(config, ranks)
    data = load_training_data(config, device, data)
    model.to(device)
    with process_group(ranks, device, config.backend, config.dist_timeout) as ranks:
        run_dir = path.parent
        ranks.on_main(functools.partial(write_config, run_dir, config))
        ranks.on_main(functools.partial(repair_run_files, run_dir, checkpoint, config))
        history = [EpochMetrics(**row) for row in checkpoint["metrics"]]
        state = RunState(checkpoint["optimizer_state"], history, checkpoint.get("progress"),
                         checkpoint["rng"]["data_order"], rank_rng_state(checkpoint["rng"], config, ranks))
        reporter.on_start(describe_run(config, model, device, threads, data, run_dir, checkpoint["epoch"] + 1, ranks))
        return fit(model, data, config, run_dir, reporter, state, stop, ranks)
