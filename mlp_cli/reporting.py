"""The terminal side of training: a rich progress bar per epoch above a growing table of epoch metrics.

Also the tables of `mlp eval` and `mlp runs`. Text that a user chose (paths, run names, class names, settings)
goes into rich as Text, never as markup: a folder named `x[/b]` or `[red]run` is shown as it is.
"""

from pathlib import Path
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.padding import Padding
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from mlp_cli.events import BatchProgress, EpochMetrics, Evaluation, TrainingPlan
from mlp_cli.runs import RunSummary, differing_settings, non_default_settings, setting_text

REFRESHES_PER_SECOND = 4  # redraws are throttled by rich's own timer, never forced per batch
UNBOUNDED_WIDTH = 100_000  # columns: wide enough to measure any table at its natural width


class SamplesPerSecondColumn(ProgressColumn):
    """Training throughput of the current epoch."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} samples/s" if speed else "- samples/s", style="progress.data.speed")


class ProgressWithTable(Progress):
    """A Progress that draws a table of finished epochs above its bar, in one live display."""

    def __init__(self, table: Table, *columns: ProgressColumn | str, **kwargs: Any) -> None:
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
            markup=False, soft_wrap=not self.is_live,  # wrapped at words on a terminal, one line in a log
        )
        changed = ", ".join(f"{key} {setting_text(value)}"
                            for key, value in non_default_settings(dict(plan.settings)).items())
        self.console.print(f"settings not at their default: {changed or 'none (D2L defaults)'}",
                           markup=False, soft_wrap=not self.is_live)
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
    summary = Table(title="mlp eval", show_header=False, title_justify="left")
    epoch = str(result.epoch)
    if result.stopped_after_batch is not None:
        epoch += f" (stopped {result.stopped_after_batch} batches into epoch {result.epoch + 1})"
    recorded = "" if result.recorded_accuracy is None else f" (during training: {result.recorded_accuracy:.4f})"
    for name, value in (("checkpoint", result.checkpoint), ("epoch", epoch), ("split", result.split),
                        ("loss", f"{result.loss:.4f}"), ("accuracy", f"{result.accuracy:.4f}{recorded}")):
        summary.add_row(name, Text(value))
    per_class = Table(title="accuracy per class", title_justify="left")
    per_class.add_column("#", justify="right")  # the legend of the confusion matrix's numbered rows and columns
    per_class.add_column("class")
    per_class.add_column("accuracy", justify="right")
    per_class.add_column("images", justify="right")
    for index, (name, accuracy, row) in enumerate(zip(result.class_names, result.per_class_accuracy,
                                                      result.confusion, strict=True)):
        per_class.add_row(str(index), Text(name), f"{accuracy:.4f}", str(sum(row)))
    return [summary, per_class, confusion_table(result.confusion)]


def confusion_table(confusion: list[list[int]]) -> Table:
    """The confusion matrix with classes as numbers (named in the per-class table), narrow enough for 60 columns.

    Ten classes of four-digit counts need 55 columns when cells are separated by one space, as numpy prints a
    matrix; class names as row labels, or boxes around each cell, would crowd the counts into `7…`.
    """
    table = Table(title="confusion matrix (row: true #, column: predicted #)", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 0), collapse_padding=True, pad_edge=False)
    widest = max((len(str(count)) for row in confusion for count in row), default=1)
    table.add_column("#", justify="right", no_wrap=True)
    for index in range(len(confusion)):
        table.add_column(str(index), justify="right", no_wrap=True, min_width=widest)
    for index, row in enumerate(confusion):
        cells = [f"[bold]{count}[/bold]" if column == index else str(count) for column, count in enumerate(row)]
        table.add_row(str(index), *cells)
    return table


def runs_columns(runs: list[RunSummary]) -> tuple[list[str], list[list[str]]]:
    """The headers and rows `mlp runs` shows: name, progress, best accuracy, then the settings that differ.

    A damaged run folder gets a row too, with its problem in a last column, so it is never silently hidden.
    """
    settings = differing_settings(runs)
    has_problem = any(run.problem for run in runs)
    headers = ["run", "epochs", "best test acc", "updated", *settings, *(["problem"] if has_problem else [])]
    rows = []
    for run in runs:
        planned = "?" if run.epochs_planned is None else str(run.epochs_planned)
        best = "-" if run.best_test_accuracy is None else f"{run.best_test_accuracy:.4f} (epoch {run.best_epoch})"
        values = [setting_text(run.settings[key]) if run.problem is None else "?" for key in settings]
        problem = [run.problem or ""] if has_problem else []
        rows.append([run.name, f"{run.epochs_done}/{planned}", best, run.updated.replace("T", " "), *values,
                     *problem])
    return headers, rows


def runs_table(runs: list[RunSummary], folder: Path, width: int) -> RenderableType:
    """`mlp runs` on a terminal of `width` columns: run names are never cut.

    A table with a column per differing setting when it fits; on a narrower terminal each run gets its name on
    one line and its numbers and settings, wrapped, below it, because a table squeezed to fit cuts every cell
    into a column of letters.
    """
    headers, rows = runs_columns(runs)
    table = Table(title=Text(f"runs in {folder}"), title_justify="left")
    for position, header in enumerate(headers):
        table.add_column(header, no_wrap=position == 0, justify="right" if position in (1, 2) else "left")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    unbounded = Console(width=UNBOUNDED_WIDTH)  # a measurement is capped at the console's width
    if Measurement.get(unbounded, unbounded.options, table).maximum <= width:
        return table
    lines: list[RenderableType] = [Text(f"runs in {folder}", style="italic")]
    settings = differing_settings(runs)
    for run, row in zip(runs, rows, strict=True):
        lines.append(Text(run.name, style="bold", overflow="fold"))
        if run.problem:
            details = f"damaged: {run.problem}"
        else:
            details = f"{row[1]} epochs; best test acc {row[2]}; updated {row[3]}"
            details += "".join(f"\n{key} {setting_text(run.settings[key])}" for key in settings[:1])
            details += "".join(f", {key} {setting_text(run.settings[key])}" for key in settings[1:])
        lines.append(Padding(Text(details, overflow="fold"), (0, 0, 0, 2)))
    return Group(*lines)


def runs_plain_lines(runs: list[RunSummary]) -> list[str]:
    """`mlp runs` into a pipe or file: a header and one tab-separated line per run, nothing cut or boxed."""
    headers, rows = runs_columns(runs)
    return ["\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in line) for line in [headers, *rows]]
