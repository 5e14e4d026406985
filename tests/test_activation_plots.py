"""`mlp plot-activation` in the terminal: every label on an axis sits where the curve has that value."""

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mlp_cli.activations import ACTIVATIONS, sample_activation
from mlp_cli.cli import X_STEP, app
from mlp_cli.plots import TEXT_PLOT_HEIGHT, TEXT_PLOT_WIDTH, activation_text_plot

NOT_CURVE = " │─▁▔"  # blank cells, and the axes uniplot draws at x = 0 and y = 0
NUMBER = re.compile(r"-?\d+(\.\d+)?(e-?\d+)?")


def panels(text: str) -> list[tuple[list[str], list[str], str]]:
    """Each panel of a text plot: its body rows (inside the frame), their labels, and the x-label line."""
    lines, found = text.split("\n"), []
    for top, line in enumerate(lines):
        if line.startswith("┌"):
            body = lines[top + 1:top + 1 + TEXT_PLOT_HEIGHT]
            assert lines[top + 1 + TEXT_PLOT_HEIGHT].startswith("└")
            rows = [row[1:TEXT_PLOT_WIDTH + 1] for row in body]
            labels = [row[TEXT_PLOT_WIDTH + 2:].strip() for row in body]
            found.append((rows, labels, lines[top + 2 + TEXT_PLOT_HEIGHT]))
    return found


def assert_y_labels_tell_every_drawn_value(rows: list[str], labels: list[str], x: torch.Tensor,
                                           y: torch.Tensor) -> None:
    """The labels define one linear scale (value per row); every drawn cell shows a value of the curve at its x
    that the scale gives its row, within one row."""
    labelled = [(row, float(label)) for row, label in enumerate(labels) if label]
    assert len(labelled) >= 3, labels
    rows_of, values_of = torch.tensor([r for r, _ in labelled], dtype=torch.float64), torch.tensor(
        [v for _, v in labelled], dtype=torch.float64)
    slope = ((rows_of - rows_of.mean()) * (values_of - values_of.mean())).sum() / ((rows_of - rows_of.mean())**2).sum()
    offset = values_of.mean() - slope * rows_of.mean()
    one_row = abs(slope.item())
    for row, value in labelled:
        assert abs(offset + slope * row - value) <= one_row / 2, labelled  # labels evenly spaced
    column_width = (x[-1] - x[0]).item() / (2 * TEXT_PLOT_WIDTH - 1) * 2  # two half-block pixels a cell
    drawn = 0
    for row, cells in enumerate(rows):
        shown = (offset + slope * row).item()
        for column, cell in enumerate(cells):
            if cell in NOT_CURVE:
                continue
            # the cell's x extent, widened by one sample: uniplot joins consecutive samples with a line
            left = x[0].item() + (column - 0.25) * column_width - X_STEP
            right = x[0].item() + (column + 0.75) * column_width + X_STEP
            inside = y[(x >= left) & (x <= right)]
            assert max(inside.min().item() - shown, shown - inside.max().item()) <= one_row, (row, shown, cells)
            drawn += 1
    assert drawn >= TEXT_PLOT_WIDTH / 2


def assert_x_labels_sit_at_their_x(axis_line: str, x: torch.Tensor) -> None:
    """Each number under the frame is centred on the column that draws that x, within a column."""
    column_width = (x[-1] - x[0]).item() / (2 * TEXT_PLOT_WIDTH - 1) * 2
    matches = list(NUMBER.finditer(axis_line))
    assert len(matches) >= 2, axis_line
    for match in matches:
        column = (match.start() + match.end() - 1) / 2 - 1  # the line has no left border
        at_column = x[0].item() + (column + 0.25) * column_width
        assert abs(at_column - float(match.group())) <= column_width, (match.group(), at_column)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("x_range", [(-6.0, 6.0), (-8.0, 8.0), (-2.0, 3.0)])
def test_every_activation_and_gradient_is_labelled_where_its_curve_has_that_value(
        name: str, x_range: tuple[float, float]) -> None:
    x, y, grad = sample_activation(name, *x_range, X_STEP)
    text = activation_text_plot([name], x, [y], [grad], color=False)
    for (rows, labels, axis_line), curve in zip(panels(text), (y, grad), strict=True):
        assert_y_labels_tell_every_drawn_value(rows, labels, x, curve)
        assert_x_labels_sit_at_their_x(axis_line, x)


def test_the_sigmoid_plot_from_the_issue_has_1_at_the_top_and_0_at_the_bottom() -> None:
    x, y, _ = sample_activation("sigmoid", -6.0, 6.0, X_STEP)
    _, labels, _ = panels(activation_text_plot(["sigmoid"], x, [y], None, color=False))[0]
    assert labels[0] == "1" and labels[-1] == "0" and "0.5" in labels


def test_several_activations_are_overlaid_with_a_legend_and_told_apart_without_colour() -> None:
    result = CliRunner().invoke(app, ["plot-activation", "relu", "sigmoid", "tanh", "--range", "-3", "3"])
    assert result.exit_code == 0, result.output
    assert "relu(x), sigmoid(x), tanh(x)" in result.stdout and "grad of relu, sigmoid, tanh" in result.stdout
    assert len(panels(result.stdout)) == 2
    for rows, _, _ in panels(result.stdout):
        drawn = {cell for row in rows for cell in row if cell not in NOT_CURVE}
        assert len(drawn) >= 3  # one symbol per activation, as the legend shows
    legend = [line for line in result.stdout.splitlines() if "relu" in line and "sigmoid" in line and "tanh" in line
              and "(x)" not in line and "grad" not in line]
    assert len(legend) == 2  # under each panel


def test_several_activations_make_one_image_with_a_legend_in_each_panel(tmp_path: Path) -> None:
    from matplotlib.image import imread

    assert CliRunner().invoke(app, ["plot-activation", "relu", "--out", tmp_path / "one.png"]).exit_code == 0
    result = CliRunner().invoke(app, ["plot-activation", "relu", "sigmoid", "tanh", "--out", tmp_path / "three.png"])
    assert result.exit_code == 0, result.output
    one, three = imread(tmp_path / "one.png"), imread(tmp_path / "three.png")
    assert one.shape == three.shape  # the same two panels, more curves in each
    assert not (one[..., :3] == three[..., :3]).all()


def test_a_misspelt_activation_is_a_usage_error_with_a_suggestion() -> None:
    result = CliRunner().invoke(app, ["plot-activation", "relu", "tahn"])
    assert result.exit_code == 2
    assert "did you mean tanh?" in " ".join(result.stderr.split())
