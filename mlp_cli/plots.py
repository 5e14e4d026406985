"""Matplotlib figures, drawn on a bare Figure (no pyplot: no GUI backend, no global figure list)."""

from pathlib import Path

import torch

from mlp_cli.errors import MlpError

FIGURE_DPI = 120
PANEL_SIZE_INCHES = (4.5, 3.2)


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
    try:
        figure.savefig(path, dpi=FIGURE_DPI)
    except (OSError, ValueError) as err:
        raise MlpError(f"{path}: cannot write the image ({err})") from err
