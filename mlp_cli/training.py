"""The one training loop for both models: minibatch SGD on softmax cross-entropy, metrics, checkpoints.

It knows nothing about the terminal: it tells a Reporter what happens, with plain numbers.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional

from mlp_cli.checkpoint import load_checkpoint, save_checkpoint
from mlp_cli.config import DEVICE_PATTERN, Config, config_to_dict, config_to_toml, validate_settings
from mlp_cli.data import SPLITS, DataModule, load_data
from mlp_cli.errors import CheckpointError, MlpError
from mlp_cli.models import build_model

REPORT_INTERVAL_SECONDS = 0.1  # each report reads the loss back from the device: a few times a second at most
RUNS_ROOT = Path("runs")
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.toml"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


@dataclass(frozen=True)
class TrainingPlan:
    """What is about to happen, for the reporter to show before the first batch."""

    impl: str
    hidden: tuple[int, ...]
    num_parameters: int
    device: str
    threads: int
    precision: str
    dataset: str
    data_source: str
    train_samples: int
    test_samples: int
    batch_size: int
    num_epochs: int
    run_dir: str


@dataclass(frozen=True)
class BatchProgress:
    epoch: int
    samples_done: int  # in this epoch
    loss: float  # of the latest batch


@dataclass(frozen=True)
class EpochMetrics:
    """One row of metrics.jsonl."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float  # training time of the epoch, evaluation excluded


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    history: list[EpochMetrics]
    best_epoch: int

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / BEST_CHECKPOINT


class Reporter(Protocol):
    """Receives training events; RichReporter draws them, tests record them."""

    def on_start(self, plan: TrainingPlan) -> None: ...
    def on_batch(self, progress: BatchProgress) -> None: ...
    def on_epoch(self, metrics: EpochMetrics) -> None: ...
    def on_checkpoint(self, path: Path) -> None: ...


class NullReporter:
    """Reports nothing: the default for notebooks and scripts."""

    def on_start(self, plan: TrainingPlan) -> None: ...
    def on_batch(self, progress: BatchProgress) -> None: ...
    def on_epoch(self, metrics: EpochMetrics) -> None: ...
    def on_checkpoint(self, path: Path) -> None: ...


NULL_REPORTER = NullReporter()


def resolve_device(name: str) -> torch.device:
    """The torch device for a --device value; auto prefers cuda, then mps, then cpu.

    Raises:
        MlpError: the requested accelerator is not available on this machine.
    """
    if not DEVICE_PATTERN.fullmatch(name):
        raise MlpError(f"--device {name}: expected auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MlpError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise MlpError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise MlpError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    return device


def check_precision(device: torch.device, precision: str) -> None:
    """Raise MlpError if device cannot run precision (bf16 autocast works on CPUs and most CUDA GPUs)."""
    if precision != "bf16":
        return
    if device.type == "mps":
        raise MlpError("--precision bf16: not supported on mps; use --precision fp32")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MlpError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use fp32")


def configure_threads(threads: int) -> int:
    """Set torch's CPU thread count before any work (0 = every core this process may run on); return it."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    count = threads or available
    torch.set_num_threads(count)
    return count


def create_run_dir(out: Path | None, impl: str) -> Path:
    """A new, empty run folder: out if given, else runs/DATE-TIME-IMPL (never an existing run's folder).

    Raises:
        MlpError: out already holds files, or cannot be created.
    """
    try:
        if out is not None:
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                raise MlpError(f"--out {out}: already exists and is not empty; runs are never overwritten, "
                               "choose a new folder")
            out.mkdir(parents=True, exist_ok=True)
            return out
        stem = f"{datetime.now():%Y%m%d-%H%M%S}-{impl}"
        RUNS_ROOT.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            run_dir = RUNS_ROOT / (stem if attempt == 1 else f"{stem}-{attempt}")
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                continue
    except OSError as err:
        raise MlpError(f"cannot create a run folder ({err})") from err
    raise MlpError(f"{RUNS_ROOT}: too many runs named {stem}-*")


def precision_context(data: DataModule, config: Config) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass when config asks for it; float32 otherwise."""
    device_type = data.train_labels.device.type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.precision == "bf16")


def evaluate(model: nn.Module, data: DataModule, split: str, config: Config) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of model on a whole split."""
    model.eval()
    loss_sum = torch.zeros((), device=data.train_labels.device)
    correct = torch.zeros((), dtype=torch.long, device=data.train_labels.device)
    with torch.inference_mode(), precision_context(data, config):
        for images, labels in data.batches(split, config.batch_size):
            logits = model(images)
            loss_sum += functional.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(dim=1) == labels).sum()
    count = len(data.split(split)[1])
    return loss_sum.item() / count, correct.item() / count


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: DataModule, config: Config,
                generator: torch.Generator, epoch: int, reporter: Reporter) -> tuple[float, float]:
    """One pass over the shuffled training split; returns its mean loss and accuracy."""
    model.train()
    loss_sum = torch.zeros((), device=data.train_labels.device)
    correct = torch.zeros((), dtype=torch.long, device=data.train_labels.device)
    samples_done, next_report = 0, time.perf_counter() + REPORT_INTERVAL_SECONDS
    for images, labels in data.batches("train", config.batch_size, generator):
        with precision_context(data, config):
            logits = model(images)  # (n, q)
            loss = functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # summed on the device and read once per epoch: no host sync per batch
        loss_sum.add_(loss.detach(), alpha=len(labels))
        correct.add_((logits.detach().argmax(dim=1) == labels).sum())
        samples_done += len(labels)
        if time.perf_counter() >= next_report:
            reporter.on_batch(BatchProgress(epoch, samples_done, loss.item()))
            next_report = time.perf_counter() + REPORT_INTERVAL_SECONDS
    reporter.on_batch(BatchProgress(epoch, samples_done, loss.item()))
    return loss_sum.item() / samples_done, correct.item() / samples_done


def derive_seed(seed: int, purpose: str) -> int:
    """A seed for one random stream, independent of the others drawn from the same user seed.

    Seeding the data-order generator with the user's seed itself would replay the very numbers that drew
    the initial weights (torch.manual_seed and Generator.manual_seed start the same Mersenne Twister), so
    each epoch's order would be a function of W1's values.
    """
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # a non-negative 63-bit integer


def fit(model: nn.Module, data: DataModule, config: Config, run_dir: Path,
        reporter: Reporter = NULL_REPORTER) -> FitResult:
    """Train model for config.epochs, writing metrics and last/best checkpoints into run_dir."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "data-order"))
    history: list[EpochMetrics] = []
    best_epoch = 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        train_loss, train_accuracy = train_epoch(model, optimizer, data, config, generator, epoch, reporter)
        seconds = time.perf_counter() - started
        test_loss, test_accuracy = evaluate(model, data, "test", config)
        metrics = EpochMetrics(epoch, train_loss, train_accuracy, test_loss, test_accuracy, seconds)
        history.append(metrics)
        with open(run_dir / METRICS_FILE, "a") as file:
            file.write(json.dumps(dataclasses.asdict(metrics)) + "\n")
        reporter.on_epoch(metrics)
        checkpoint = {
            "config": config_to_dict(config),
            "model": {"num_inputs": data.num_inputs, "num_outputs": data.num_classes,
                      "class_names": list(data.class_names)},
            "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "epoch": epoch,
            "metrics": [dataclasses.asdict(row) for row in history],
            "rng": {"torch": torch.get_rng_state(), "data_order": generator.get_state()},
        }
        save_checkpoint(checkpoint, run_dir / LAST_CHECKPOINT)
        reporter.on_checkpoint(run_dir / LAST_CHECKPOINT)
        if best_epoch == 0 or test_accuracy > history[best_epoch - 1].test_accuracy:
            best_epoch = epoch
            save_checkpoint(checkpoint, run_dir / BEST_CHECKPOINT)
            reporter.on_checkpoint(run_dir / BEST_CHECKPOINT)
    return FitResult(run_dir, history, best_epoch)


def train(config: Config, out: Path | None = None, reporter: Reporter = NULL_REPORTER) -> FitResult:
    """Load the data, build the model from config.seed, and fit it in a new run folder.

    Raises:
        MlpError: the device, the data or the run folder is not usable.
    """
    device = resolve_device(config.device)
    check_precision(device, config.precision)
    threads = configure_threads(config.threads)
    data = load_data(config.dataset, Path(config.data_dir) if config.data_dir else None, device)
    torch.manual_seed(config.seed)
    # built on the CPU so that a seed gives the same initial weights on every device
    model = build_model(config.impl, data.num_inputs, config.hidden, data.num_classes, config.sigma)
    model.to(device)
    run_dir = create_run_dir(out, config.impl)
    (run_dir / CONFIG_FILE).write_text(config_to_toml(config))
    reporter.on_start(TrainingPlan(
        impl=config.impl, hidden=config.hidden, num_parameters=sum(p.numel() for p in model.parameters()),
        device=str(device), threads=threads, precision=config.precision,
        dataset=config.dataset, data_source=str(data.source),
        train_samples=len(data.train_labels), test_samples=len(data.test_labels),
        batch_size=config.batch_size, num_epochs=config.epochs, run_dir=str(run_dir),
    ))
    return fit(model, data, config, run_dir, reporter)


@dataclass(frozen=True)
class Evaluation:
    """What `mlp eval` reports."""

    checkpoint: str
    epoch: int
    split: str
    loss: float
    accuracy: float
    recorded_accuracy: float | None  # the test accuracy logged for this epoch during training


def restore_model(checkpoint: dict[str, Any], path: Path) -> tuple[Config, nn.Module]:
    """The config and trained model stored in a checkpoint, rebuilt from the checkpoint alone.

    Raises:
        CheckpointError: the stored config or weights do not fit the model they describe.
    """
    try:
        config = validate_settings(checkpoint["config"])
        shape = checkpoint["model"]
        model = build_model(config.impl, shape["num_inputs"], config.hidden, shape["num_outputs"], config.sigma)
        model.load_state_dict(checkpoint["model_state"])
    except (MlpError, KeyError, TypeError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: checkpoint does not describe a usable model ({reason})") from err
    return config, model


def evaluate_checkpoint(path: Path, split: str = "test", data_dir: Path | None = None,
                        device: str = "auto") -> Evaluation:
    """Loss and accuracy of a saved model on a split of the data set it was trained on.

    Raises:
        MlpError: the checkpoint or the data cannot be used.
    """
    if split not in SPLITS:
        raise MlpError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    checkpoint = load_checkpoint(path)
    config, model = restore_model(checkpoint, path)
    torch_device = resolve_device(device)
    stored_dir = Path(config.data_dir) if config.data_dir else None
    data = load_data(config.dataset, data_dir or stored_dir, torch_device)
    if data.num_inputs != checkpoint["model"]["num_inputs"]:
        raise MlpError(f"{data.source}: images have {data.num_inputs} pixels, the model expects "
                       f"{checkpoint['model']['num_inputs']}")
    loss, accuracy = evaluate(model.to(torch_device), data, split, config)
    epoch = checkpoint["epoch"]
    rows = [row for row in checkpoint["metrics"] if row.get("epoch") == epoch]
    recorded = rows[0]["test_accuracy"] if rows and split == "test" else None
    return Evaluation(str(path), epoch, split, loss, accuracy, recorded)
