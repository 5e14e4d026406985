"""What a person sees while training: a live bar with loss and samples/s, and a table row per epoch."""

import io
from pathlib import Path

from rich.console import Console
from support import small_config

from mlp_cli.events import EpochMetrics
from mlp_cli.reporting import RichReporter
from mlp_cli.training import train


def run_with_console(data_dir: Path, console: Console) -> None:
    config = small_config(data_dir, hidden=(16,), batch_size=8, epochs=2)
    with RichReporter(console) as reporter:
        train(config, Path("run"), reporter)


def test_a_terminal_gets_a_live_bar_with_loss_and_speed_and_a_metrics_table(data_dir: Path) -> None:
    screen = io.StringIO()
    run_with_console(data_dir, Console(file=screen, force_terminal=True, width=150, color_system=None))
    shown = screen.getvalue()
    assert "epoch 2/2" in shown and "samples/s" in shown and "loss " in shown and "ETA" in shown
    assert "epoch metrics" in shown and "test acc" in shown
    assert "epoch 1/2: train loss" not in shown  # no plain lines on a terminal: the table has them


def test_a_log_file_gets_one_plain_line_per_epoch_then_the_table(data_dir: Path) -> None:
    log = io.StringIO()
    run_with_console(data_dir, Console(file=log, force_terminal=False, width=150))
    lines = log.getvalue().splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ") and "train loss" in line]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"]
    assert "test acc" in epoch_lines[0]
    assert any("test acc" in line and "┃" in line for line in lines)  # the closing table's header
    assert "\x1b[" not in log.getvalue()  # no cursor movement or colour in a log


def bar_of(reporter: RichReporter) -> str:
    """The progress bar's line as the terminal shows it now."""
    screen = io.StringIO()
    bar = reporter.progress.make_tasks_table(reporter.progress.tasks)
    Console(file=screen, width=150, color_system=None).print(bar)
    return screen.getvalue()


def test_the_bar_shows_no_loss_rather_than_nan_before_the_epochs_first_report() -> None:
    reporter = RichReporter(Console(file=io.StringIO(), force_terminal=True, width=150))
    assert "loss -" in bar_of(reporter) and "nan" not in bar_of(reporter)  # what a run stopped at once shows
    reporter.num_epochs = 2
    reporter.on_epoch(EpochMetrics(epoch=1, train_loss=0.5, train_accuracy=0.8))
    assert "loss -" in bar_of(reporter) and "nan" not in bar_of(reporter)  # stopped early in epoch 2
