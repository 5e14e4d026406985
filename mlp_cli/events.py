"""What training and evaluation tell the outside world: plain, frozen records and the Reporter interface that
receives them.

No torch here, so the terminal and plotting sides can use these types without importing it.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


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
    first_epoch: int  # 1, or later when a run resumes
    num_epochs: int
    val_size: int  # images held out for validation (0: the test split selects best.pt, as in D2L)
    run_dir: str
    processes: int = 1  # under torchrun: the ranks sharing each batch (batch_size is their total)
    settings: tuple[tuple[str, Any], ...] = ()  # (name, value) of every setting of the run's Config


@dataclass(frozen=True)
class BatchProgress:
    epoch: int
    samples_done: int  # in this epoch
    loss: float  # of the latest batch
    # given only with the end of an epoch's training pass: the model's named parameters, live tensors whose .grad
    # holds the epoch's last batch's gradient, for weight and gradient histograms; read them at once, never keep them
    parameters: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class EpochMetrics:
    """One row of metrics.jsonl."""

    epoch: int
    train_loss: float  # running averages over the epoch's batches, as D2L reports them
    train_accuracy: float
    test_loss: float | None = None  # None on epochs skipped by report_every (with val_size: all but the last)
    test_accuracy: float | None = None
    seconds: float = 0.0  # training time of the epoch, evaluation excluded
    train_eval_loss: float | None = None  # the whole train split after the epoch, with train_metrics
    train_eval_accuracy: float | None = None
    val_loss: float | None = None  # the held-out validation split, with val_size
    val_accuracy: float | None = None
    lr: float | None = None  # the learning rate the epoch trained with (None in runs from before it was recorded)


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    history: list[EpochMetrics]
    best_epoch: int
    best_checkpoint: Path
    selected_by: str = "test"  # the split whose accuracy chose best.pt: "val" with val_size, else "test"


@dataclass(frozen=True)
class Evaluation:
    """What `mlp eval` reports (evaluation.evaluate_checkpoint measures it)."""

    checkpoint: str
    epoch: int
    split: str
    loss: float
    accuracy: float
    recorded_accuracy: float | None  # the test accuracy logged for this epoch during training
    stopped_after_batch: int | None  # set when the run was stopped mid-epoch: batches into the next epoch
    class_names: list[str]
    per_class_accuracy: list[float]  # in the order of class_names
    confusion: list[list[int]]  # row = true class, column = predicted class


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


class ReporterGroup:
    """Passes every event to each of several reporters, in order (e.g. the terminal, then the curves)."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def on_start(self, plan: TrainingPlan) -> None:
        for reporter in self.reporters:
            reporter.on_start(plan)

    def on_batch(self, progress: BatchProgress) -> None:
        for reporter in self.reporters:
            reporter.on_batch(progress)

    def on_epoch(self, metrics: EpochMetrics) -> None:
        for reporter in self.reporters:
            reporter.on_epoch(metrics)

    def on_checkpoint(self, path: Path) -> None:
        for reporter in self.reporters:
            reporter.on_checkpoint(path)
