"""The terminal side of `mlp sweep`: a live table of trials on stderr, and the ranked result on stdout."""

from contextlib import AbstractContextManager
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from mlp_cli.sweep import SweepReport

LIVE_REFRESHES_PER_SECOND = 2


def trials_table(report: SweepReport, title: str) -> Table:
    """One row per trial: its params, state, epochs done, best validation accuracy and seconds."""
    table = Table(title=title, title_justify="left")
    headers = ("#", "trial", *report.param_names, "state", "epoch", "val acc", "seconds")
    for header in headers:
        table.add_column(escape(header), justify="left" if header in report.param_names or header == "state"
                         else "right")
    for rank, row in enumerate(report.trials, 1):
        accuracy = "-" if row.val_accuracy is None else f"{row.val_accuracy:.4f}"
        state = row.state + (f" ({row.attempts} attempts)" if row.attempts > 1 else "")
        table.add_row(str(rank), str(row.trial), *(escape(str(row.params.get(name, "-"))) for name in
                                                  report.param_names),
                      state, str(row.epoch), accuracy, f"{row.seconds:.1f}")
    return table


def chosen_line(report: SweepReport) -> str:
    """The chosen trial and its test accuracy, said as what it is."""
    chosen = report.chosen
    if not report.is_done:
        waiting = sum(1 for row in report.trials if row.state in ("waiting", "running"))
        return f"not finished: {waiting} of {len(report.trials)} trials waiting or running"
    if chosen is None:
        return "no trial completed, so none was chosen"
    params = ", ".join(f"{name}={value}" for name, value in chosen["params"].items())
    line = f"chosen on validation accuracy {chosen['val_accuracy']:.4f}: trial {chosen['trial']} ({params})"
    if chosen.get("test_accuracy") is None:
        return f"{line}; test accuracy not measured here ({chosen.get('note', 'no checkpoint')})"
    return f"{line}; its test accuracy {chosen['test_accuracy']:.4f} ({chosen['checkpoint']})"


class LiveTrials(AbstractContextManager):
    """The live table while a sweep runs (on a terminal), and a plain line per trial event everywhere."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = Live(console=console, refresh_per_second=LIVE_REFRESHES_PER_SECOND, transient=True)

    def __enter__(self) -> "LiveTrials":
        if self.console.is_terminal:
            self.live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.console.is_terminal:
            self.live.stop()

    def update(self, report: SweepReport) -> None:
        if self.console.is_terminal:
            self.live.update(trials_table(report, f"sweep {report.name}"))

    def event(self, line: str) -> None:
        self.console.print(line, markup=False, soft_wrap=True, highlight=False)
