"""Matplotlib figures, drawn on a bare Figure (no pyplot: no GUI backend, no global figure list).

Every picture is written by save_figure, which first checks the name with check_image_path: the file named on
the command line is exactly the file written and reported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only types the arguments here; `mlp plot-curves` does not need to import it
    import torch
    from matplotlib.figure import Figure

from mlp_cli.errors import MlpError

FIGURE_DPI = 120
PANEL_SIZE_INCHES = (4.5, 3.2)
CONFUSION_INCHES = 7.5
CURVES_SIZE_INCHES = (10.0, 3.6)  # the two panels, without the legend below them
CURVES_LEGEND_ROW_INCHES = 0.22  # a row of the legend grows the figure by this much
CURVES_LEGEND_COLUMNS = 3
CYCLE_COLOURS = 10  # matplotlib's default colour cycle, C0 to C9
CURVES_DPI = 80  # with no layout engine: a cheap drawing (made by the curves drawer process, see curves.py)
CURVES_FILE = "curves.png"
TEXT_PLOT_WIDTH, TEXT_PLOT_HEIGHT = 60, 12  # in terminal cells
MIN_TICK_STEPS, MAX_TICK_STEPS = 3, 6  # between the y labels of a terminal plot
FLAT_CURVE_SPAN = 1e-6
PIXELS_PER_ROW = {"block": 2, "ascii": 1}  # uniplot's half blocks draw two points a row; ASCII one
GRID_COLUMNS = 8
GRID_CELL_INCHES = 1.3
MAX_MISTAKES_SHOWN = 32


def activation_panels(names: list[str], ys: list[torch.Tensor], grads: list[torch.Tensor] | None,
                      ) -> list[tuple[list[torch.Tensor], str]]:
    """The panels of an activation plot, as (curves, title): the functions, then (if given) their gradients."""
    panels = [(ys, ", ".join(f"{name}(x)" for name in names))]
    return panels if grads is None else [*panels, (grads, f"grad of {', '.join(names)}")]


def plot_activation(names: list[str], x: torch.Tensor, ys: list[torch.Tensor], grads: list[torch.Tensor] | None,
                    path: Path) -> None:
    """Write D2L's pair of figures (5.1.2): the activations, and beside them their gradients, as one image;
    several activations share each panel, with a legend.

    Raises:
        MlpError: the image cannot be written (bad folder, unknown file type).
    """
    from matplotlib.figure import Figure  # slow import, needed only here

    panels = activation_panels(names, ys, grads)
    figure = Figure(figsize=(PANEL_SIZE_INCHES[0] * len(panels), PANEL_SIZE_INCHES[1]), layout="constrained")
    for axes, (curves, label) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        for name, values in zip(names, curves, strict=True):
            axes.plot(x.numpy(), values.numpy(), label=name)
        axes.set_xlabel("x")
        axes.set_title(label)
        axes.grid(True, alpha=0.3)
        if len(names) > 1:
            axes.legend(fontsize="small")
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


# the formats matplotlib writes (with Pillow, installed by torchvision), by file name suffix
IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp", ".gif", ".tif", ".tiff", ".eps", ".ps",
                  ".svgz", ".avif")


def check_image_path(path: Path, option: str = "") -> Path:
    """path, if an image can be written under exactly that name; commands call it before any slow work.

    matplotlib chooses the format from the suffix and, when there is none, writes NAME.png instead of NAME, so a
    name without a known image suffix (or a folder) is refused rather than written elsewhere than reported.

    Raises:
        MlpError: path is a folder, has no image suffix, or its folder does not exist.
    """
    where = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise MlpError(f"{where}: is a folder, expected an image file name such as {path / 'figure.png'}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise MlpError(f"{where}: not an image file name, expected one ending in {', '.join(IMAGE_SUFFIXES[:5])}, "
                       f"... (e.g. {path.name}.png)")
    if not path.parent.is_dir():
        raise MlpError(f"{where}: cannot write the image, no such folder {path.parent}")
    return path


def save_figure(figure: Figure, path: Path, dpi: int = FIGURE_DPI) -> None:
    """Write figure as an image; the format follows the file name (PNG, SVG, PDF, ...).

    Raises:
        MlpError: the name is not an image file name (check_image_path), or the file cannot be written.
    """
    check_image_path(path)
    try:
        figure.savefig(path, dpi=dpi)
    except (OSError, ValueError) as err:
        raise MlpError(f"{path}: cannot write the image ({err})") from err


def plot_curves(runs: list[tuple[str, list[dict]]], path: Path) -> None:
    """Learning curves like D2L's board: losses on the left, accuracies on the right, one colour per run.

    The legend sits below the panels, never over a curve: a colour per run, then dashed = train and
    solid = test. Each legend row makes the figure taller, so 20 runs read as well as 2.

    Raises:
        MlpError: the image cannot be written.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    colours = run_colours(len(runs))
    handles = [Line2D([], [], color=colour, marker=".", label=label) for (label, _), colour in zip(runs, colours,
                                                                                                 strict=True)]
    handles += [Line2D([], [], color="gray", linestyle="--", label="train"),
                Line2D([], [], color="gray", linestyle="-", label="test")]
    legend_rows = math.ceil(len(handles) / CURVES_LEGEND_COLUMNS)
    legend_inches = legend_rows * CURVES_LEGEND_ROW_INCHES + 0.5  # + the x label above it
    width, panels_height = CURVES_SIZE_INCHES
    height = panels_height + legend_inches
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=0.07, right=0.98, bottom=(legend_inches + 0.1) / height,
                           top=1 - 0.35 / height, wspace=0.22)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for (_, rows), colour in zip(runs, colours, strict=True):
        epochs = [row["epoch"] for row in rows]
        for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
            axes.plot(epochs, [row[f"train_{metric}"] for row in rows], color=colour, linestyle="--", marker=".")
            tested = [row for row in rows if row.get(f"test_{metric}") is not None]  # report_every skips some
            axes.plot([row["epoch"] for row in tested], [row[f"test_{metric}"] for row in tested], color=colour,
                      linestyle="-", marker=".")
    for axes, name in ((loss_axes, "cross-entropy loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.25
        axes.set_title(name)
        axes.grid(True, alpha=0.3)
    figure.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.02 / height), ncols=min(
        CURVES_LEGEND_COLUMNS, len(handles)), fontsize="small", frameon=False)
    save_figure(figure, path, CURVES_DPI)


def run_colours(count: int) -> list:
    """A distinct colour per run: matplotlib's ten-colour cycle, or evenly spaced turbo colours beyond ten."""
    from matplotlib import colormaps

    if count <= CYCLE_COLOURS:
        return [f"C{index}" for index in range(count)]
    return [colormaps["turbo"](index / (count - 1)) for index in range(count)]


def activation_text_plot(names: list[str], x: torch.Tensor, ys: list[torch.Tensor],
                         grads: list[torch.Tensor] | None, color: bool) -> str:
    """Activations (and their gradients) drawn in Unicode for the terminal, one panel under the other, several
    activations overlaid in a panel with a legend.

    uniplot is used because it is maintained, has a one-call API that returns a string (testable), and draws at
    twice the terminal's resolution with half blocks. Its own y labels can sit rows away from their values (the
    sigmoid's "1" at 0.8), so each panel gets labels placed here, on the row its curve crosses that value.
    """
    panels = activation_panels(names, ys, grads)
    legend = names if len(names) > 1 else None
    return "\n".join(text_panel(title, x, curves, legend, color) for curves, title in panels)


def text_panel(title: str, x: torch.Tensor, curves: list[torch.Tensor], legend: list[str] | None,
               color: bool) -> str:
    """One uniplot panel of curves over x, its y range the curves' own, with y labels on the right rows."""
    from uniplot import plot_to_string

    low, high = min(curve.min().item() for curve in curves), max(curve.max().item() for curve in curves)
    if high - low < FLAT_CURVE_SPAN:  # a constant (identity's gradient): a range around it
        low, high = low - 1, high + 1
    step = tick_step(low, high)
    # widened to multiples of the step: the top and bottom rows get labels too
    low, high = math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step
    # without colour, several curves are told apart by their ASCII symbols (one row per character)
    character_set = "block" if color or legend is None else "ascii"
    text = plot_to_string([curve.tolist() for curve in curves], [x.tolist()] * len(curves), title=title,
                          width=TEXT_PLOT_WIDTH, height=TEXT_PLOT_HEIGHT, color=color, lines=True,
                          y_min=low, y_max=high, y_labels=False, legend_labels=legend, character_set=character_set)
    return label_y_axis(text, low, high, PIXELS_PER_ROW[character_set])


def label_y_axis(text: str, low: float, high: float, pixels_per_row: int) -> str:
    """The plot text with round y values written beside the rows that uniplot draws them on (low and high are
    multiples of tick_step(low, high))."""
    lines = text.split("\n")
    first_row = next(index for index, line in enumerate(lines) if line.startswith("┌")) + 1
    pixels = TEXT_PLOT_HEIGHT * pixels_per_row
    labelled: dict[int, str] = {}
    step = tick_step(low, high)
    for index in range(round(low / step), round(high / step) + 1):
        value = round(index * step, 12) + 0.0  # + 0.0: no "-0" label
        # uniplot's mapping (pixel_matrix.render): y_min on the bottom pixel, y_max on the top, rounded
        pixel_from_bottom = round((pixels - 1) * (value - low) / (high - low))
        row = (pixels - 1 - pixel_from_bottom) // pixels_per_row
        labelled.setdefault(row, f"{value:g}")
    for row, label in labelled.items():
        lines[first_row + row] += f" {label}"
    return "\n".join(lines)


def tick_step(low: float, high: float) -> float:
    """The round step (1, 2, 2.5 or 5 times a power of ten) whose multiples enclose low..high most tightly
    in 3 to 6 steps: the y labels' spacing."""
    power = math.floor(math.log10(high - low))
    candidates = [factor * 10.0**exponent for exponent in (power - 1, power) for factor in (1, 2, 2.5, 5)]

    def steps(step: float) -> int:
        return math.ceil(high / step - 1e-9) - math.floor(low / step + 1e-9)

    fitting = [step for step in candidates if MIN_TICK_STEPS <= steps(step) <= MAX_TICK_STEPS] or candidates
    return min(fitting, key=lambda step: (steps(step) * step, -step))


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
