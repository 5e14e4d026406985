"""Matplotlib figures, drawn on a bare Figure (no pyplot: no GUI backend, no global figure list)."""

import contextlib
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlp_cli.events import BatchProgress, EpochMetrics, TrainingPlan

from mlp_cli.errors import MlpError

FIGURE_DPI = 120
PANEL_SIZE_INCHES = (4.5, 3.2)
CONFUSION_INCHES = 7.5
CURVES_SIZE_INCHES = (10.0, 3.6)
CURVES_DPI = 80  # with no layout engine: ~0.07 s a drawing, cheap enough to redraw after every epoch
CURVES_FILE = "curves.png"
TEXT_PLOT_WIDTH, TEXT_PLOT_HEIGHT = 60, 12  # in terminal cells
GRID_COLUMNS = 8
GRID_CELL_INCHES = 1.3
MAX_MISTAKES_SHOWN = 32


def plot_activation(name: str, x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor | None, path: Path) -> None:
    """Write D2L's pair of figures (5.1.2): the activation, and beside it its gradient, as one image.

    Raises:
        MlpError: the image cannot be written (bad folder, unknown file type).
    """
    from matplotlib.figure import Figure  # slow import, needed only here

    panels = [(y, f"{name}(x)")] + ([] if grad is None else [(grad, f"grad of {name}")])
    figure = Figure(figsize=(PANEL_SIZE_INCHES[0] * len(panels), PANEL_SIZE_INCHES[1]), layout="constrained")
    for axes, (values, label) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        axes.plot(x.numpy(), values.numpy())
        axes.set_xlabel("x")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
    save_figure(figure, path)


def plot_confusion(confusion: list[list[int]], class_names: list[str], title: str, path: Path) -> None:
    """Write the confusion matrix as a heatmap with class names on both axes and the count in each cell.

    Raises:
        MlpError: the image cannot be written.
    """
    from matplotlib.figure import Figure

    size = len(class_names)
    figure = Figure(figsize=(CONFUSION_INCHES, CONFUSION_INCHES), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(range(size), class_names, rotation=45, ha="right")
    axes.set_yticks(range(size), class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    brightest = max(max(row) for row in confusion) or 1
    for row, counts in enumerate(confusion):
        for column, count in enumerate(counts):
            colour = "white" if count > brightest / 2 else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=colour, fontsize="small")
    save_figure(figure, path)


def save_figure(figure: "Figure", path: Path, dpi: int = FIGURE_DPI) -> None:
    """Write figure as an image; the format follows the file name (PNG, SVG, PDF, ...)."""
    try:
        figure.savefig(path, dpi=dpi)
    except (OSError, ValueError) as err:
        raise MlpError(f"{path}: cannot write the image ({err})") from err


def plot_curves(runs: list[tuple[str, list[dict]]], path: Path) -> None:
    """Learning curves like D2L's board: losses on the left, accuracies on the right, one colour per run.

    Raises:
        MlpError: the image cannot be written.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=CURVES_SIZE_INCHES)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.9, wspace=0.22)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    colours = [f"C{index}" for index in range(len(runs))]
    for (label, rows), colour in zip(runs, colours, strict=True):
        prefix = f"{label}: " if len(runs) > 1 else ""
        epochs = [row["epoch"] for row in rows]
        for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
            axes.plot(epochs, [row[f"train_{metric}"] for row in rows], color=colour, linestyle="--",
                      marker=".", label=f"{prefix}train {metric}")
            tested = [row for row in rows if row.get(f"test_{metric}") is not None]  # report_every skips some
            axes.plot([row["epoch"] for row in tested], [row[f"test_{metric}"] for row in tested], color=colour,
                      linestyle="-", marker=".", label=f"{prefix}test {metric}")
    for axes, name in ((loss_axes, "cross-entropy loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.set_title(name)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    save_figure(figure, path, CURVES_DPI)


def write_curves(run_dir: Path) -> Path:
    """Draw run_dir's metrics into run_dir/curves.png, replacing the file in one step."""
    from mlp_cli.runs import read_metrics

    path = run_dir / CURVES_FILE
    temporary = run_dir / f".{CURVES_FILE}.tmp.png"
    plot_curves([(run_dir.name, read_metrics(run_dir))], temporary)
    temporary.replace(path)
    return path


class CurvesReporter:
    """Redraws the run folder's curves.png after every epoch (a Reporter, so training knows no matplotlib)."""

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self.has_failed = False  # warned once already: later failures are quiet

    def on_start(self, plan: "TrainingPlan") -> None:
        self.run_dir = Path(plan.run_dir)

    def on_batch(self, progress: "BatchProgress") -> None:
        """Nothing to draw between epochs."""

    def on_epoch(self, metrics: "EpochMetrics") -> None:
        """Redraw curves.png; a failure to draw is a warning on stderr (once), never the end of the run."""
        try:
            write_curves(self.run_dir)
        except Exception as err:  # a picture must never stop training, whatever broke it
            with contextlib.suppress(OSError):
                (self.run_dir / f".{CURVES_FILE}.tmp.png").unlink(missing_ok=True)
            if not self.has_failed:
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                print(f"warning: cannot draw {self.run_dir / CURVES_FILE} ({reason}); training goes on",
                      file=sys.stderr)
            self.has_failed = True

    def on_checkpoint(self, path: Path) -> None:
        """Checkpoints do not change the curves."""


def activation_text_plot(name: str, x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor | None,
                         color: bool) -> str:
    """The activation (and its gradient) drawn in Unicode for the terminal, one plot under the other.

    uniplot is used because it is maintained, has a one-call API that returns a string (testable), and draws at
    twice the terminal's resolution with half blocks.
    """
    from uniplot import plot_to_string

    panels = [(y, f"{name}(x)")] + ([] if grad is None else [(grad, f"grad of {name}")])
    return "\n".join(plot_to_string(values.tolist(), x.tolist(), title=title, width=TEXT_PLOT_WIDTH,
                                     height=TEXT_PLOT_HEIGHT, color=color, lines=True)
                      for values, title in panels)


def plot_image_grid(images: torch.Tensor, titles: list[str], path: Path) -> None:
    """Images (n, 1, h, w) in [0, 1] as a grid of grayscale pictures, each with its title (D2L's show_images).

    Raises:
        MlpError: the image cannot be written.
    """
    from matplotlib.figure import Figure

    columns = min(GRID_COLUMNS, max(len(images), 1))
    rows = max(math.ceil(len(images) / columns), 1)
    figure = Figure(figsize=(columns * GRID_CELL_INCHES, rows * (GRID_CELL_INCHES + 0.25)), layout="constrained")
    for cell, axes in enumerate(figure.subplots(rows, columns, squeeze=False).flat):
        axes.set_axis_off()
        if cell < len(images):
            axes.imshow(images[cell, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes.set_title(titles[cell], fontsize="small")
    save_figure(figure, path)


def plot_mistakes(images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor,
                  class_names: tuple[str, ...], path: Path) -> None:
    """The first misclassified images of a split, titled "true -> predicted", as a grid."""
    wrong = (predictions != labels).nonzero().flatten()[:MAX_MISTAKES_SHOWN]
    titles = [f"{class_names[labels[i]]}\n-> {class_names[predictions[i]]}" for i in wrong.tolist()]
    plot_image_grid(images[wrong], titles, path)
