"""The one training loop for both models, as in D2L's Trainer.fit: for each epoch, train on minibatches (softmax
cross-entropy, the optimizer's step), evaluate, record the metrics, save the checkpoints.

It knows nothing about the terminal: it tells a Reporter what happens, with plain numbers. It knows nothing about
how many processes share the work either: Ranks (distributed.py) wraps the model, hands out the parts of a batch,
sums across processes and lets rank 0 alone write; in one process each of those does the plain thing.
"""

import dataclasses
import functools
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn
from torch.nn import functional

from mlp_cli.augment import augment_batch
from mlp_cli.checkpoint import Architecture, RankSums, RngStates, SavedProgress, TrainState, save_checkpoint
from mlp_cli.config import Config, config_to_dict
from mlp_cli.data import DataModule
from mlp_cli.distributed import SINGLE_PROCESS, Ranks
from mlp_cli.errors import TrainingDivergedError, TrainingStoppedError
from mlp_cli.evaluation import evaluate, precision_context
from mlp_cli.events import NULL_REPORTER, BatchProgress, EpochMetrics, FitResult, Reporter, TrainingPlan
from mlp_cli.optimization import learning_rate, make_optimizer
from mlp_cli.runs import BEST_CHECKPOINT, LAST_CHECKPOINT, write_metrics
from mlp_cli.signals import StopRequest

REPORT_INTERVAL_SECONDS = 0.1  # each report reads the loss back from the device: a few times a second at most


@dataclass
class EpochProgress:
    """The running sums of the epoch in progress, on the device, this rank's own: a checkpoint taken mid-epoch
    keeps them to continue exactly."""

    order_state: torch.Tensor  # the data-order generator's state before this epoch's permutation was drawn
    batches_done: int  # by all ranks together: each takes its part of every batch
    samples_done: int
    loss_sum: torch.Tensor
    correct: torch.Tensor
    seconds: float

    @classmethod
    def start(cls, generator: torch.Generator, device: torch.device) -> "EpochProgress":
        return cls(generator.get_state(), 0, 0, torch.zeros((), device=device),
                   torch.zeros((), dtype=torch.long, device=device), 0.0)

    def summed(self, ranks: Ranks) -> "EpochProgress":
        """The sums over all ranks (each rank adds up its own part of every batch); the same on every rank."""
        counts = ranks.sum(torch.stack([self.correct, torch.tensor(self.samples_done, device=self.correct.device)]))
        return dataclasses.replace(self, loss_sum=ranks.sum(self.loss_sum.clone()), correct=counts[0],
                                   samples_done=int(counts[1]))

    def to_saved(self, ranks: Ranks) -> SavedProgress:
        """The epoch in progress as a checkpoint keeps it: the totals and each rank's own sums (called on every
        rank)."""
        def on_cpu(progress: EpochProgress) -> RankSums:
            return RankSums(progress.samples_done, progress.loss_sum.cpu(), progress.correct.cpu())

        return SavedProgress(self.order_state, self.batches_done, on_cpu(self.summed(ranks)), self.seconds,
                             tuple(ranks.gather(on_cpu(self))))

    @classmethod
    def from_saved(cls, saved: SavedProgress, device: torch.device, ranks: Ranks) -> "EpochProgress":
        """The saved epoch in progress, with this rank's share of its running sums.

        Resumed on as many ranks as wrote it, each rank continues its own sums, so the epoch's totals are
        added in the same order as in an unbroken run (the same to the bit). On another number of ranks,
        rank 0 takes the totals and the others start from zero: the totals then agree up to rounding.
        """
        if saved.by_rank is not None and len(saved.by_rank) == ranks.world_size:
            sums = saved.by_rank[ranks.rank]
        elif ranks.is_main:
            sums = saved.totals
        else:
            sums = RankSums(0, torch.zeros_like(saved.totals.loss_sum), torch.zeros_like(saved.totals.correct))
        return cls(saved.order_state, saved.batches_done, sums.samples_done, sums.loss_sum.to(device),
                   sums.correct.to(device), saved.seconds)


class Trainer:
    """One run: the model, its optimizer, the data, the data-order generator, the ranks that share the work,
    the reporter and the run folder. fit() trains it to config.epochs, from the start or from a TrainState.

    Under torchrun every rank makes a Trainer and calls fit(); they train one model together, and only rank 0
    reports and writes files.
    """

    def __init__(self, config: Config, model: nn.Module, data: DataModule, run_dir: Path,
                 reporter: Reporter = NULL_REPORTER, stop: StopRequest | None = None,
                 ranks: Ranks = SINGLE_PROCESS, state: TrainState | None = None) -> None:
        self.config, self.model, self.data, self.run_dir, self.stop, self.ranks = (
            config, model, data, run_dir, stop, ranks)
        self.reporter = reporter if ranks.is_main else NULL_REPORTER
        self.device = data.train_labels.device
        self.trained = ranks.parallel(model, self.device)  # what the training steps run: model, or DDP around it
        self.optimizer = make_optimizer(model, config)
        self.generator = torch.Generator().manual_seed(derive_seed(config.seed, "data-order"))
        self.selected_by = selection_split(config)
        self.history: list[EpochMetrics] = []
        self.resumed_progress: EpochProgress | None = None  # the first epoch's, when resumed mid-epoch
        if state is not None:
            self.restore(state)
        self.best_epoch = find_best_epoch(self.history, self.selected_by)

    def fit(self) -> FitResult:
        """Train up to config.epochs, writing metrics and last/best checkpoints into the run folder.

        Raises:
            TrainingStoppedError: a stop was requested; last.pt holds the run mid-epoch, ready to resume.
            TrainingDivergedError: the loss became NaN or infinite; nothing was saved after the last good epoch.
        """
        for epoch in range(len(self.history) + 1, self.config.epochs + 1):
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(self.config, epoch)
            progress = self.resumed_progress or EpochProgress.start(self.generator, self.device)
            self.resumed_progress = None
            if not self.train_epoch(epoch, progress):
                self.save_stopped(epoch, progress)
            progress = progress.summed(self.ranks)
            self.reporter.on_batch(BatchProgress(epoch, progress.samples_done,
                                                 progress.loss_sum.item() / progress.samples_done,
                                                 dict(self.model.named_parameters())))
            row = self.measure_epoch(epoch, progress)
            self.history.append(row)
            is_best = self.is_best(row)
            self.best_epoch = epoch if is_best else self.best_epoch
            saved = self.save_epoch(is_best)
            self.reporter.on_epoch(row)  # after the files: a reporter that fails (a picture) costs no checkpoint
            for path in saved:
                self.reporter.on_checkpoint(path)
        return FitResult(self.run_dir, self.history, self.best_epoch, self.run_dir / BEST_CHECKPOINT,
                         self.selected_by)

    def train_epoch(self, epoch: int, progress: EpochProgress) -> bool:
        """Continue the epoch from progress (updated in place with this rank's sums); False if stopped by a signal.

        Raises:
            TrainingDivergedError: the running loss became NaN or infinite.
        """
        self.trained.train()
        self.generator.set_state(progress.order_state)  # the same permutation again, then skip the batches done
        started, next_report = time.perf_counter(), time.perf_counter() + REPORT_INTERVAL_SECONDS
        train_count = len(self.data.train_labels)
        num_batches = math.ceil(train_count / self.config.batch_size)
        batches = self.data.batches("train", self.config.batch_size, self.generator, skip=progress.batches_done,
                                    share=self.ranks.share)
        for images, labels in batches:
            batch_count = min(self.config.batch_size, train_count - progress.batches_done * self.config.batch_size)
            summed_loss, correct = self.train_step(epoch, progress.batches_done, images, labels, batch_count)
            # summed on the device and read only when reporting or checking: no host sync per batch
            progress.loss_sum.add_(summed_loss)
            progress.correct.add_(correct)
            progress.batches_done += 1
            progress.samples_done += len(labels)
            if time.perf_counter() >= next_report:
                samples_seen = min(progress.batches_done * self.config.batch_size, train_count)  # by all ranks
                self.reporter.on_batch(BatchProgress(epoch, samples_seen, summed_loss.item() / max(len(labels), 1)))
                next_report = time.perf_counter() + REPORT_INTERVAL_SECONDS
            check = self.ranks.check_in(self.stop, progress.loss_sum, progress.batches_done, num_batches)
            if not check.finite:
                self.diverged(f"in epoch {epoch} (detected at batch {progress.batches_done})")
            if check.stop:
                progress.seconds += time.perf_counter() - started
                return False
        progress.seconds += time.perf_counter() - started
        return True

    def train_step(self, epoch: int, batch: int, images: torch.Tensor, labels: torch.Tensor,
                   batch_count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One minibatch step on this rank's part of a batch of batch_count images (all ranks); the part's summed
        loss and number of correct predictions, detached."""
        config = self.config
        if config.augment:
            # seeded by (seed, epoch, batch): the same draws again when an interrupted epoch is resumed
            batch_seed = derive_seed(config.seed, f"augment:{epoch}:{batch}")
            images = augment_batch(images, config.augment, torch.Generator().manual_seed(batch_seed),
                                   self.ranks.share(batch_count), batch_count)
        with precision_context(self.data, config):
            logits = self.trained(images)  # (n, q)
            summed_loss = functional.cross_entropy(logits, labels, label_smoothing=config.label_smoothing,
                                                   reduction="sum")
        # the mean over the whole batch: DDP averages the ranks' gradients, so each rank divides by the
        # batch size over the number of ranks (one process: the plain mean), whatever its own part's size
        loss = summed_loss / (batch_count / self.ranks.world_size)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return summed_loss.detach(), (logits.detach().argmax(dim=1) == labels).sum()

    def measure_epoch(self, epoch: int, progress: EpochProgress) -> EpochMetrics:
        """The epoch's metrics row: running train averages (progress: summed over the ranks) always; the test split
        (and with train_metrics, the whole train split) evaluated every report_every epochs and after the last."""
        config = self.config
        row = EpochMetrics(epoch, progress.loss_sum.item() / progress.samples_done,
                           progress.correct.item() / progress.samples_done, seconds=progress.seconds,
                           lr=learning_rate(config, epoch))
        if epoch % config.report_every and epoch != config.epochs:
            return row
        if config.val_size:
            val = evaluate(self.model, self.data, "val", config, self.ranks)
            self.check_finite(val.loss, f"on the validation split after epoch {epoch}")
            row = dataclasses.replace(row, val_loss=val.loss, val_accuracy=val.accuracy)
        if not config.val_size or epoch == config.epochs:  # with a validation split, test once, at the end
            test = evaluate(self.model, self.data, "test", config, self.ranks)
            self.check_finite(test.loss, f"on the test split after epoch {epoch}")
            row = dataclasses.replace(row, test_loss=test.loss, test_accuracy=test.accuracy)
        if config.train_metrics:
            train = evaluate(self.model, self.data, "train", config, self.ranks)
            row = dataclasses.replace(row, train_eval_loss=train.loss, train_eval_accuracy=train.accuracy)
        return row

    def is_best(self, row: EpochMetrics) -> bool:
        accuracy = selection_accuracy(row, self.selected_by)
        if accuracy is None:
            return False
        best = None if self.best_epoch == 0 else selection_accuracy(self.history[self.best_epoch - 1], self.selected_by)
        return best is None or accuracy > best

    def save_epoch(self, is_best: bool) -> list[Path]:
        """Save the finished epoch (last.pt, best.pt if it is the best so far, metrics.jsonl); the checkpoints."""
        state = self.state(progress=None)
        saved = [self.run_dir / LAST_CHECKPOINT, *([self.run_dir / BEST_CHECKPOINT] if is_best else [])]
        self.ranks.on_main(functools.partial(save_epoch, state, saved, self.run_dir))
        return saved

    def save_stopped(self, epoch: int, progress: EpochProgress) -> NoReturn:
        """Save the run mid-epoch into last.pt and stop (a signal asked for it)."""
        path = self.run_dir / LAST_CHECKPOINT
        state = self.state(progress)
        self.ranks.on_main(functools.partial(save_checkpoint, state, path))
        exit_code = self.stop.exit_code if self.stop else 1
        raise TrainingStoppedError(f"stopped in epoch {epoch} after batch {progress.batches_done}; saved {path}; "
                                   f"resume with: mlp train --resume {path}", exit_code)

    def state(self, progress: EpochProgress | None) -> TrainState:
        """Everything needed to evaluate the model, or to resume the run exactly (called on every rank: it
        collects each rank's dropout RNG state and running sums). progress: None at an epoch boundary."""
        return TrainState(
            config=config_to_dict(self.config),
            architecture=Architecture(self.data.num_inputs, self.data.num_classes, tuple(self.data.class_names)),
            model_state=self.model.state_dict(),  # the plain module's: loads into one process as it is
            metrics=tuple(self.history),
            optimizer_state=self.optimizer.state_dict(),
            progress=None if progress is None else progress.to_saved(self.ranks),
            rng=RngStates(torch.get_rng_state(), self.generator.get_state(),
                          tuple(self.ranks.gather(torch.get_rng_state()))),
        )

    def restore(self, state: TrainState) -> None:
        """Continue from a checkpoint's state: its optimizer, its random streams, its metrics, its epoch part-done."""
        assert state.optimizer_state is not None and state.rng is not None  # load_resumable checked it
        self.optimizer.load_state_dict(state.optimizer_state)
        self.generator.set_state(state.rng.data_order)
        torch.set_rng_state(rank_rng_state(state.rng, self.config, self.ranks))
        self.history = list(state.metrics)
        if state.progress is not None:
            self.resumed_progress = EpochProgress.from_saved(state.progress, self.device, self.ranks)

    def describe(self, threads: int) -> TrainingPlan:
        """What is about to happen, for the reporter to show before the first batch."""
        config, data = self.config, self.data
        return TrainingPlan(
            impl=config.impl, hidden=config.hidden, num_parameters=sum(p.numel() for p in self.model.parameters()),
            device=str(self.device), threads=threads, precision=config.precision,
            dataset=config.dataset, data_source=str(data.source),
            train_samples=len(data.train_labels), test_samples=len(data.test_labels),
            batch_size=config.batch_size, first_epoch=len(self.history) + 1, num_epochs=config.epochs,
            val_size=config.val_size, run_dir=str(self.run_dir), processes=self.ranks.world_size,
            settings=tuple(config_to_dict(config).items()),
        )

    def check_finite(self, loss: float, where: str) -> None:
        if not math.isfinite(loss):
            self.diverged(where)

    def diverged(self, where: str) -> NoReturn:
        last_good = self.run_dir / LAST_CHECKPOINT if self.history else "none (no epoch finished)"
        raise TrainingDivergedError(f"the loss became NaN or infinite {where}; stopped, last good checkpoint: "
                                    f"{last_good}; try a lower learning rate than --lr {self.config.lr}")


def save_epoch(state: TrainState, paths: list[Path], run_dir: Path) -> None:
    """Save a finished epoch: last.pt, then best.pt when the epoch is the best so far, then metrics.jsonl.

    In this order a kill between two writes leaves best.pt and metrics.jsonl at most one epoch behind last.pt,
    never ahead of it, and that epoch is in last.pt: resuming brings both up to date (repair_run_files).
    Writing best.pt first instead would leave, after such a kill, a best.pt of an epoch that no other file
    records, and the previous best lost.
    """
    for path in paths:
        save_checkpoint(state, path)
    write_metrics(run_dir, list(state.metrics))


def derive_seed(seed: int, purpose: str) -> int:
    """A seed for one random stream, independent of the others drawn from the same user seed.

    Seeding the data-order generator with the user's seed itself would replay the very numbers that drew
    the initial weights (torch.manual_seed and Generator.manual_seed start the same Mersenne Twister), so
    each epoch's order would be a function of W1's values.
    """
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # a non-negative 63-bit integer


def rank_rng_state(saved: RngStates, config: Config, ranks: Ranks) -> torch.Tensor:
    """This rank's torch RNG state from a checkpoint's: its own if the run had as many ranks, else rank 0's
    for rank 0 and a fresh stream for the others (their dropout masks then differ from an unbroken run)."""
    if saved.torch_by_rank is not None and len(saved.torch_by_rank) == ranks.world_size:
        return saved.torch_by_rank[ranks.rank]
    if ranks.is_main:
        return saved.torch_state
    return torch.Generator().manual_seed(derive_seed(config.seed, f"rank:{ranks.rank}:resumed")).get_state()


def selection_split(config: Config) -> str:
    """The split whose accuracy chooses best.pt: the held-out validation split if any, else test (D2L's way)."""
    return "val" if config.val_size else "test"


def selection_accuracy(row: EpochMetrics, split: str) -> float | None:
    """The accuracy that chooses best.pt: validation with a held-out split, else test (the book's way)."""
    return row.val_accuracy if split == "val" else row.test_accuracy


def find_best_epoch(history: list[EpochMetrics], split: str) -> int:
    """The first epoch with the highest accuracy on split (as fit keeps best.pt), or 0 if none was measured."""
    scored = [row for row in history if selection_accuracy(row, split) is not None]
    return max(scored, key=lambda row: selection_accuracy(row, split) or 0.0).epoch if scored else 0
