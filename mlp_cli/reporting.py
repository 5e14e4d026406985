"""The terminal side of training: a rich progress bar per epoch above a growing table of epoch metrics."""

from pathlib import Path
from types import TracebackType

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from mlp_cli.evaluation import Evaluation
from mlp_cli.events import BatchProgress, EpochMetrics, TrainingPlan

REFRESHES_PER_SECOND = 4  # redraws are throttled by rich's own timer, never forced per batch


class SamplesPerSecondColumn(ProgressColumn):
    """Training throughput of the current epoch."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} samples/s" if speed else "- samples/s", style="progress.data.speed")


class ProgressWithTable(Progress):
    """A Progress that draws a table of finished epochs above its bar, in one live display."""

    def __init__(self, table: Table, *columns: ProgressColumn | str, **kwargs) -> None:
        self.table = table
        super().__init__(*columns, **kwargs)

    def get_renderables(self) -> list[RenderableType]:
        tasks_table = self.make_tasks_table(self.tasks)
        return [self.table, tasks_table] if self.table.row_count else [tasks_table]


def number(value: float | None) -> str:
    """Four decimals, or "-" for a metric not measured in this epoch."""
    return "-" if value is None else f"{value:.4f}"


def new_metrics_table(has_validation: bool) -> Table:
    table = Table(title="epoch metrics", title_justify="left")
    headers = ("epoch", "train loss", "train acc", *(("val loss", "val acc") if has_validation else ()),
               "test loss", "test acc", "seconds")
    for header in headers:
        table.add_column(header, justify="right")
    return table


class RichReporter:
    """Shows training live on a terminal; elsewhere (a pipe, a CI log) prints a plain line per epoch.

    Use it as a context manager around fit(), so the live display is closed even when training fails.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.is_live = console.is_terminal
        self.num_epochs = 0
        self.has_validation = False
        self.table = new_metrics_table(has_validation=False)
        self.progress = ProgressWithTable(
            self.table,
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}"),
            SamplesPerSecondColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=REFRESHES_PER_SECOND,
            disable=not self.is_live,
        )
        # "-" until the epoch's first report (a few per second): NaN there read as a diverged run when stopped early
        self.task = self.progress.add_task("epoch", total=None, loss=number(None))

    def __enter__(self) -> "RichReporter":
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.progress.stop()
        if not self.is_live and self.table.row_count:
            self.console.print(self.table)

    def on_start(self, plan: TrainingPlan) -> None:
        self.num_epochs = plan.num_epochs
        self.has_validation = plan.val_size > 0
        if self.has_validation:
            self.table = self.progress.table = new_metrics_table(has_validation=True)
        layers = "-".join(str(width) for width in plan.hidden)
        threads = f"{plan.threads} thread{'s' if plan.threads != 1 else ''}"
        where, batch = f"on {plan.device} ({threads}, {plan.precision})", f"batch {plan.batch_size}"
        if plan.processes > 1:
            where = f"on {plan.processes} processes (DDP; rank 0 on {plan.device}, {threads}, {plan.precision})"
            batch += f" in all (about {plan.batch_size // plan.processes} per process)"
        self.console.print(
            f"training {plan.impl} MLP (hidden {layers}, {plan.num_parameters:,} parameters) {where}; "
            f"{plan.dataset} from {plan.data_source} ({plan.train_samples:,} train, {plan.test_samples:,} test); "
            f"{batch}, {plan.num_epochs} epochs; run folder {plan.run_dir}",
            markup=False, soft_wrap=True,
        )
        self.progress.reset(self.task, total=plan.train_samples,
                            description=f"epoch {plan.first_epoch}/{plan.num_epochs}")

    def on_batch(self, progress: BatchProgress) -> None:
        self.progress.update(self.task, completed=progress.samples_done, loss=number(progress.loss),
                             description=f"epoch {progress.epoch}/{self.num_epochs}")

    def on_epoch(self, metrics: EpochMetrics) -> None:
        validation = (number(metrics.val_loss), number(metrics.val_accuracy)) if self.has_validation else ()
        cells = (f"{metrics.epoch}", number(metrics.train_loss), number(metrics.train_accuracy), *validation,
                 number(metrics.test_loss), number(metrics.test_accuracy), f"{metrics.seconds:.2f}")
        self.table.add_row(*cells)
        if not self.is_live:
            named = ", ".join(f"{column.header} {cell}" for column, cell in zip(self.table.columns[1:-1], cells[1:-1],
                                                                               strict=True))
            self.console.print(f"epoch {metrics.epoch}/{self.num_epochs}: {named} ({cells[-1]} s)", markup=False,
                               soft_wrap=True)
        if metrics.epoch < self.num_epochs:
            self.progress.reset(self.task, description=f"epoch {metrics.epoch + 1}/{self.num_epochs}",
                                loss=number(None))

    def on_checkpoint(self, path: Path) -> None:
        """Checkpoints are listed once at the end, by the command, rather than every epoch."""


def evaluation_tables(result: Evaluation) -> list[Table]:
    """What `mlp eval` shows: the overall numbers, accuracy per class, and the confusion matrix."""
    summary = Table(title=f"mlp eval {result.checkpoint}", show_header=False, title_justify="left")
    epoch = str(result.epoch)
    if result.stopped_after_batch is not None:
        epoch += f" (stopped {result.stopped_after_batch} batches into epoch {result.epoch + 1})"
    recorded = "" if result.recorded_accuracy is None else f" (during training: {result.recorded_accuracy:.4f})"
    for name, value in (("epoch", epoch), ("split", result.split), ("loss", f"{result.loss:.4f}"),
                        ("accuracy", f"{result.accuracy:.4f}{recorded}")):
        summary.add_row(name, value)
    per_class = Table(title="accuracy per class", title_justify="left")
    per_class.add_column("class")
    per_class.add_column("accuracy", justify="right")
    per_class.add_column("images", justify="right")
    for name, accuracy, row in zip(result.class_names, result.per_class_accuracy, result.confusion, strict=True):
        per_class.add_row(name, f"{accuracy:.4f}", str(sum(row)))
    confusion = Table(title="confusion matrix (rows: true class, columns: predicted)", title_justify="left")
    confusion.add_column("true \\ predicted")
    for index in range(len(result.class_names)):
        confusion.add_column(str(index), justify="right")
    for index, (name, row) in enumerate(zip(result.class_names, result.confusion, strict=True)):
        cells = [f"[bold]{count}[/bold]" if column == index else str(count) for column, count in enumerate(row)]
        confusion.add_row(f"{index} {escape(name)}", *cells)
    return [summary, per_class, confusion]
