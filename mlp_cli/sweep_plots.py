"""The pictures of a finished sweep, written into its folder.

A grid over one param: validation accuracy against the param (accuracy.png); over two: a labelled heatmap.
A search: Optuna's optimization history and parameter importances. Always: the chosen trial's curves.
"""

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mlp_cli.config import is_number
from mlp_cli.errors import MlpError
from mlp_cli.plots import FIGURE_DPI, PANEL_SIZE_INCHES, plot_curves, save_figure
from mlp_cli.runs import read_metrics

if TYPE_CHECKING:
    from mlp_cli.sweep import SweepReport, TrialRow

ACCURACY_FILE = "accuracy.png"
HISTORY_FILE = "history.png"
IMPORTANCES_FILE = "importances.png"
CHOSEN_CURVES_FILE = "chosen-curves.png"
LOG_AXIS_RATIO = 10  # numeric values spanning more than this factor are drawn on a log axis


def draw_sweep_pictures(study: Any, report: "SweepReport", sweep_dir: Path,
                        on_event: Callable[[str], None] | None = None) -> list[str]:
    """Write the sweep's pictures and return their paths."""
    written = []
    scored = [row for row in report.trials if row.val_accuracy is not None]
    # a param given one value (e.g. epochs=2) is a setting of every trial, not an axis
    varied = [name for name in report.param_names if len({row.params.get(name) for row in report.trials}) > 1]
    if report.search == "grid" and len(varied) in (1, 2) and scored:
        path = sweep_dir / ACCURACY_FILE
        if len(varied) == 1:
            plot_accuracy_line(scored, varied[0], path)
        else:
            plot_accuracy_heatmap(scored, varied, path)
        written.append(path)
    if report.search != "grid":
        written += plot_optuna_figures(study, sweep_dir, on_event)
    if report.chosen:
        run_dir = Path(report.chosen["run_dir"])
        rows = read_metrics(run_dir)
        if rows:
            plot_curves([(f"trial {report.chosen['trial']}", rows)], sweep_dir / CHOSEN_CURVES_FILE)
            written.append(sweep_dir / CHOSEN_CURVES_FILE)
    return [str(path) for path in written]


def sort_key(value: Any) -> tuple:
    """Numbers by size, layer lists such as "512x256" by their sizes, other text alphabetically."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return (2, str(value))
    if isinstance(value, str):
        sizes = value.split("x")
        return (0, *map(int, sizes)) if all(size.isdigit() for size in sizes) else (1, value)
    return (0, value)


def ordered_values(rows: list["TrialRow"], name: str) -> list[Any]:
    """The values a param took, in their natural order."""
    return sorted({row.params[name] for row in rows}, key=sort_key)


def as_number(value: Any) -> int | float | None:
    """A param value as a number for an x axis (hidden=1024 is stored as the text "1024"), else None."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if is_number(value) else None


def plot_accuracy_line(rows: list["TrialRow"], name: str, path: Path) -> None:
    """Best validation accuracy of each trial against the value of the one swept param."""
    from matplotlib.figure import Figure

    accuracy = {row.params[name]: row.val_accuracy for row in rows if row.val_accuracy is not None}
    values = sorted(accuracy, key=sort_key)
    figure = Figure(figsize=PANEL_SIZE_INCHES, layout="constrained")
    axes = figure.subplots()
    numbers = [number for number in map(as_number, values) if number is not None]
    is_numeric = len(numbers) == len(values)
    positions = numbers if is_numeric else list(range(len(values)))
    is_ordered = all(sort_key(value)[0] == 0 for value in values)  # numbers, layer sizes: a line; names: points
    heights = [accuracy[value] for value in values]
    axes.plot(positions, heights, marker="o", linestyle="-" if is_ordered else "none")
    for position, height in zip(positions, heights, strict=True):
        axes.annotate(f"{height:.4f}", (position, height), textcoords="offset points", xytext=(0, 6),
                      ha="center", fontsize="small")
    axes.margins(x=0.1, y=0.15)
    if is_numeric and min(numbers) > 0 and max(numbers) / min(numbers) > LOG_AXIS_RATIO:
        axes.set_xscale("log")
    axes.set_xticks(positions, [str(value) for value in values])
    axes.minorticks_off()
    axes.set_xlabel(name)
    axes.set_ylabel("validation accuracy (best epoch)")
    axes.grid(True, alpha=0.3)
    save_figure(figure, path)


def plot_accuracy_heatmap(rows: list["TrialRow"], names: list[str], path: Path) -> None:
    """Best validation accuracy of each pair of values of the two swept params, each cell labelled."""
    from matplotlib.figure import Figure

    rows_values, column_values = ordered_values(rows, names[0]), ordered_values(rows, names[1])
    accuracy = {(row.params[names[0]], row.params[names[1]]): row.val_accuracy
                for row in rows if row.val_accuracy is not None}
    grid = [[accuracy.get((first, second), math.nan) for second in column_values] for first in rows_values]
    figure = Figure(figsize=(1.2 * len(column_values) + 2.5, 0.6 * len(rows_values) + 1.8), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(grid, cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=axes, label="validation accuracy")
    axes.set_xticks(range(len(column_values)), [str(value) for value in column_values])
    axes.set_yticks(range(len(rows_values)), [str(value) for value in rows_values])
    axes.set_xlabel(names[1])
    axes.set_ylabel(names[0])
    finite = [value for line in grid for value in line if not math.isnan(value)]
    middle = (min(finite) + max(finite)) / 2
    for row, line in enumerate(grid):
        for column, value in enumerate(line):
            if not math.isnan(value):
                axes.text(column, row, f"{value:.3f}", ha="center", va="center", fontsize="small",
                          color="black" if value > middle else "white")
    save_figure(figure, path)


def plot_optuna_figures(study: Any, sweep_dir: Path, on_event: Callable[[str], None] | None) -> list[Path]:
    """Optuna's optimization history and parameter importances (PED-ANOVA: no scikit-learn needed)."""
    import matplotlib

    matplotlib.use("Agg")  # optuna's plots use pyplot: never a GUI backend here
    import optuna
    from matplotlib import pyplot
    from matplotlib.figure import Figure

    written = []
    figures = (
        (HISTORY_FILE, lambda: optuna.visualization.matplotlib.plot_optimization_history(study)),
        (IMPORTANCES_FILE, lambda: optuna.visualization.matplotlib.plot_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())),
    )
    for name, draw in figures:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the matplotlib plots are "experimental"
            try:
                axes = draw()
            except (ValueError, RuntimeError) as err:  # e.g. too few complete trials for importances
                if on_event:
                    on_event(f"{name} not drawn: {err}")
                continue
        if name == HISTORY_FILE:
            axes.set_ylabel("validation accuracy (best epoch)")
        figure = cast(Figure, axes.figure)  # optuna draws with pyplot.subplots(): a whole figure, no SubFigure
        figure.set_size_inches(7, 4)
        figure.tight_layout()
        try:
            figure.savefig(sweep_dir / name, dpi=FIGURE_DPI)
        except (OSError, ValueError) as err:
            raise MlpError(f"{sweep_dir / name}: cannot write the image ({err})") from err
        finally:
            pyplot.close(figure)
        written.append(sweep_dir / name)
    return written
