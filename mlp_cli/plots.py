"""Matplotlib figures, drawn on a bare Figure (no pyplot: no GUI backend, no global figure list)."""

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from mlp_cli.errors import MlpError

FIGURE_DPI = 120
PANEL_SIZE_INCHES = (4.5, 3.2)
CONFUSION_INCHES = 7.5


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


def save_figure(figure: "Figure", path: Path) -> None:
    """Write figure as an image; the format follows the file name (PNG, SVG, PDF, ...)."""
    try:
        figure.savefig(path, dpi=FIGURE_DPI)
    except (OSError, ValueError) as err:
        raise MlpError(f"{path}: cannot write the image ({err})") from err
