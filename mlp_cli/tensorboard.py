"""TensorBoard for runs: event files in RUN/tb (a Reporter, so the loop knows nothing of it) and `mlp board`.

tensorboard is imported only by a run that asks for it (`tensorboard = true`) and by `mlp board`, so plain
training and `mlp --help` never load it.
"""

from pathlib import Path
from types import TracebackType
from typing import Any

from mlp_cli.errors import MlpError
from mlp_cli.events import BatchProgress, EpochMetrics, TrainingPlan

TB_FOLDER = "tb"
LOCALHOST = "127.0.0.1"
# EpochMetrics field -> tag; metric first, so that TensorBoard's "loss" section holds the loss of every split
SCALAR_TAGS = {
    "train_loss": "loss/train", "train_accuracy": "accuracy/train",
    "train_eval_loss": "loss/train_eval", "train_eval_accuracy": "accuracy/train_eval",
    "val_loss": "loss/val", "val_accuracy": "accuracy/val",
    "test_loss": "loss/test", "test_accuracy": "accuracy/test",
    "lr": "lr", "seconds": "time/epoch_seconds",
}
# the metrics the HParams tab compares runs by: each one's latest value
HPARAM_METRICS = ("accuracy/test", "loss/test", "accuracy/train", "loss/train")
HPARAM_VAL_METRICS = ("accuracy/val", "loss/val")


class TensorBoardReporter:
    """Writes a run's epochs into RUN/tb when its config has tensorboard = true; otherwise does nothing.

    The run's settings in its plan decide (a resumed run's are its checkpoint's, with the flags a resume may
    change), so a resumed run keeps logging as it started. Events are flushed once per epoch: the writer's
    thread does the file work, the epoch never waits for a disk write.
    Use it as a context manager around training, so the event file is closed even when training fails.
    """

    def __init__(self) -> None:
        self.writer: Any = None  # a torch.utils.tensorboard.SummaryWriter once the run asks for one
        self.histogram_every = 0

    def __enter__(self) -> "TensorBoardReporter":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.writer is not None:
            self.writer.close()

    def on_start(self, plan: TrainingPlan) -> None:
        settings = dict(plan.settings)
        if not settings.get("tensorboard"):
            return
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package: only when asked for

        self.writer = SummaryWriter(log_dir=str(Path(plan.run_dir) / TB_FOLDER))
        self.histogram_every = int(settings.get("tb_histograms", 0))
        write_hparams(self.writer, settings, has_validation=plan.val_size > 0)
        self.writer.flush()

    def on_batch(self, progress: BatchProgress) -> None:
        if (self.writer is not None and progress.parameters is not None and self.histogram_every
                and progress.epoch % self.histogram_every == 0):
            write_histograms(self.writer, progress.epoch, progress.parameters)

    def on_epoch(self, metrics: EpochMetrics) -> None:
        if self.writer is None:
            return
        for field, tag in SCALAR_TAGS.items():
            value = getattr(metrics, field)
            if value is not None:
                self.writer.add_scalar(tag, value, metrics.epoch)
        self.writer.flush()

    def on_checkpoint(self, path: Path) -> None:
        """Checkpoints are not TensorBoard's business."""


def hparam_values(settings: dict[str, Any]) -> dict[str, int | float | str]:
    """The run's settings as the plain values TensorBoard's HParams tab takes (lists joined, unset ones left out).

    Booleans become "true"/"false": torch's hparams() would store them as the numbers 1 and 0.
    """
    values: dict[str, int | float | str] = {}
    for key, value in settings.items():
        if isinstance(value, list):
            values[key] = ",".join(map(str, value)) or "none"
        elif isinstance(value, bool):
            values[key] = "true" if value else "false"
        elif isinstance(value, int | float | str):
            values[key] = value
    return values


def write_hparams(writer: Any, settings: dict[str, Any], has_validation: bool) -> None:
    """Record the settings as the run's hparams, naming the scalar tags the HParams tab shows as its metrics.

    Written into the run's own event file (not the extra sub-run SummaryWriter.add_hparams creates), so the
    HParams tab and the scalar charts show one run under one name.
    """
    from torch.utils.tensorboard.summary import hparams

    metrics = HPARAM_METRICS + (HPARAM_VAL_METRICS if has_validation else ())
    experiment, session_start, _ = hparams(hparam_values(settings), dict.fromkeys(metrics, 0.0))
    file_writer = writer._get_file_writer()  # SummaryWriter has no public way to write a ready-made summary
    file_writer.add_summary(experiment)
    file_writer.add_summary(session_start)


def write_histograms(writer: Any, epoch: int, parameters: dict[str, Any]) -> None:
    """Histograms of every parameter and of its gradient from the epoch's last batch."""
    for name, parameter in parameters.items():
        writer.add_histogram(f"weights/{name}", parameter.detach().float().cpu(), epoch)
        if parameter.grad is not None:
            writer.add_histogram(f"gradients/{name}", parameter.grad.detach().float().cpu(), epoch)


def start_board(folder: Path, port: int | None) -> str:
    """Start TensorBoard on folder (its runs' tb folders), bound to this machine only; return its URL.

    The server runs in a background thread of this process; it stops when the process ends. Without a port
    TensorBoard takes 6006, or the next free port near it.

    Raises:
        MlpError: folder is not a folder, or the port is taken.
    """
    if not folder.is_dir():
        raise MlpError(f"{folder}: no such folder of runs (train with --tensorboard first, or pass the folder)")
    from tensorboard import program

    board = program.TensorBoard()
    # load_fast false: the pure-Python reader in this process, no separate data-server process to leave behind
    board.configure(argv=[None, "--logdir", str(folder), "--host", LOCALHOST, "--load_fast", "false",
                          *(["--port", str(port)] if port is not None else [])])
    try:
        return board.launch()
    except program.TensorBoardServerException as err:
        raise MlpError(f"cannot start TensorBoard on {LOCALHOST}:{port or 6006} ({err.msg})") from err
