"""`mlp runs`, `mlp plot-curves` and the pictures and tables around them, as a user comparing runs meets them.

Run folders are written here by hand (config.toml from a Config, metrics.jsonl rows), as training writes them,
so that damaged and oddly named folders can be made exactly.
"""

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from mlp_cli.cli import app
from mlp_cli.config import Config, config_to_dict, config_to_toml
from mlp_cli.events import Evaluation, TrainingPlan
from mlp_cli.reporting import RichReporter, evaluation_tables, runs_table
from mlp_cli.runs import differing_settings, list_runs

runner = CliRunner()
SMALL = ["--hidden", "32", "--batch-size", "16", "--epochs", "1", "--device", "cpu", "--threads", "1"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BOX_CHARACTERS = set("┏┃━┡│└─┌┐┘")


def invoke(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args])


def make_run(folder: Path, epochs_done: int = 2, **settings: object) -> Path:
    """A run folder as training leaves it: its config.toml and one metrics.jsonl row per finished epoch."""
    folder.mkdir(parents=True)
    config = Config(**settings)
    (folder / "config.toml").write_text(config_to_toml(config))
    rows = [{"epoch": epoch, "train_loss": 1.0 / epoch, "train_accuracy": 0.5 + epoch / 100,
             "test_loss": 1.1 / epoch, "test_accuracy": 0.6 + epoch / 100, "seconds": 0.1}
            for epoch in range(1, epochs_done + 1)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def render(renderable: object, width: int) -> str:
    screen = io.StringIO()
    Console(file=screen, width=width, force_terminal=True, color_system=None).print(renderable)
    return screen.getvalue()


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (PNG spec: right after the 8-byte signature and chunk header)."""
    return struct.unpack(">II", path.read_bytes()[16:24])


# 16.4: damaged run folders

DAMAGED_CONFIGS = {
    "epochs-inf": "epochs = inf\n",
    "epochs-text": 'epochs = "ten"\n',
    "not-toml": "epochs = [\n",
    "empty-config": "",
}
DAMAGED_METRICS = {
    "row-list": "[1, 2]\n",
    "row-string": '"epoch 1"\n',
    "row-without-epoch": '{"train_loss": 1.0, "train_accuracy": 0.5}\n',
    "row-text-loss": '{"epoch": 1, "train_loss": "low", "train_accuracy": 0.5}\n',
}


def make_damaged_runs(root: Path) -> None:
    for name, text in DAMAGED_CONFIGS.items():
        make_run(root / name)
        (root / name / "config.toml").write_text(text)
    for name, text in DAMAGED_METRICS.items():
        make_run(root / name)
        (root / name / "metrics.jsonl").write_text(text)


def test_runs_lists_good_runs_and_marks_each_damaged_folder_with_its_reason() -> None:
    make_run(Path("runs/good"), lr=0.5)
    make_damaged_runs(Path("runs"))
    listed = invoke("runs")
    assert listed.exit_code == 0, listed.output
    rows = {line.split("\t")[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"good", *DAMAGED_CONFIGS, *DAMAGED_METRICS}
    assert "2/10" in rows["good"] and "0.6200 (epoch 2)" in rows["good"]
    for name in (*DAMAGED_CONFIGS, *DAMAGED_METRICS):
        assert rows[name].split("\t")[-1].startswith(f"runs/{name}/"), rows[name]
    assert "not valid TOML" in rows["not-toml"] and "empty config" in rows["empty-config"]
    assert "epochs" in rows["epochs-inf"] and "epochs" in rows["epochs-text"]
    assert "epoch None" in rows["row-without-epoch"] and "is list" in rows["row-list"]
    by_path = {run["name"]: run for run in json.loads(invoke("runs", "--json").stdout)}
    assert by_path["good"]["problem"] is None and by_path["good"]["best_test_accuracy"] == pytest.approx(0.62)
    assert "row 1" in by_path["row-string"]["problem"]


def test_runs_does_not_crash_on_a_single_size_hidden_setting() -> None:
    make_run(Path("runs/good"))
    make_run(Path("runs/hidden-5"))
    (Path("runs/hidden-5/config.toml")).write_text("hidden = 5\n")
    listed = invoke("runs", "--json")
    assert listed.exit_code == 0, listed.output
    hidden_5 = next(run for run in json.loads(listed.stdout) if run["name"] == "hidden-5")
    assert hidden_5["problem"] is not None or hidden_5["hidden"] == [5]  # refused, or read as one layer of 5


def test_plot_curves_skips_damaged_runs_with_a_warning_and_plots_the_rest() -> None:
    make_run(Path("runs/good"))
    make_damaged_runs(Path("runs"))
    result = invoke("plot-curves", "runs/good", "runs/row-list", "runs/row-without-epoch", "--out", "curves.png")
    assert result.exit_code == 0, result.output
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(line.startswith("warning: skipped runs/row-") for line in warnings)
    assert Path("curves.png").read_bytes().startswith(PNG_SIGNATURE)


def test_plot_curves_with_only_damaged_runs_is_a_one_line_error() -> None:
    make_damaged_runs(Path("runs"))
    result = invoke("plot-curves", "runs/row-string", "runs/missing", "--out", "curves.png")
    assert_one_line_error(result, "no run with finished epochs", "runs/row-string/metrics.jsonl: row 1",
                          "runs/missing: no metrics.jsonl")
    assert not Path("curves.png").exists()


# 16.5: user text is shown as typed, never read as rich markup

def test_runs_shows_folder_names_with_brackets_as_they_are() -> None:
    make_run(Path("x[/b]/[red]run"))
    make_run(Path("x[/b]/plain"), lr=0.3)
    table = render(runs_table(list_runs(Path("x[/b]")), Path("x[/b]"), 200), 200)
    assert "runs in x[/b]" in table and "[red]run" in table
    listed = invoke("runs", "x[/b]")
    assert listed.exit_code == 0, listed.output
    assert "[red]run" in listed.stdout


def test_eval_and_predict_of_a_checkpoint_in_a_bracketed_folder_show_its_path(data_dir: Path) -> None:
    assert invoke("train", "--data-dir", data_dir, "--out", "x[/b]", *SMALL).exit_code == 0
    evaluated = invoke("eval", "x[/b]/best.pt")
    assert evaluated.exit_code == 0, evaluated.output
    assert "x[/b]/best.pt" in evaluated.stdout
    Image.new("L", (28, 28), 0).save("[red]img.png")
    predicted = invoke("predict", "x[/b]/best.pt", "[red]img.png")
    assert predicted.exit_code == 0, predicted.output
    assert "predictions of x[/b]/best.pt" in predicted.stdout and "[red]img.png" in predicted.stdout


def test_eval_tables_show_bracketed_class_names_and_paths_as_they_are() -> None:
    names = [f"[bold]class {index}" for index in range(10)]
    result = Evaluation(checkpoint="[red]run/best.pt", epoch=1, split="test", loss=0.5, accuracy=0.5,
                        recorded_accuracy=None, stopped_after_batch=None, class_names=names,
                        per_class_accuracy=[0.5] * 10, confusion=[[1] * 10 for _ in range(10)])
    shown = "".join(render(table, 100) for table in evaluation_tables(result))
    assert "[red]run/best.pt" in shown and "[bold]class 9" in shown


# 16.8: pictures are written under exactly the name reported, or refused

@pytest.mark.parametrize("command", [
    ["plot-activation", "relu", "--out"],
    ["plot-curves", "runs/good", "--out"],
])
def test_picture_commands_refuse_a_name_without_an_image_suffix_or_a_folder(command: list[str]) -> None:
    make_run(Path("runs/good"))
    Path("pictures").mkdir()
    assert_one_line_error(invoke(*command, "grid"), "grid", "not an image file name")
    assert not Path("grid").exists() and not Path("grid.png").exists()
    assert_one_line_error(invoke(*command, "pictures"), "pictures", "is a folder")
    assert list(Path("pictures").iterdir()) == [] and not Path("pictures.png").exists()
    written = invoke(*command, "pictures/figure.svg")
    assert written.exit_code == 0, written.output
    assert "wrote pictures/figure.svg" in written.stdout and Path("pictures/figure.svg").is_file()


def test_eval_refuses_picture_names_before_evaluating(data_dir: Path) -> None:
    assert invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL).exit_code == 0
    assert_one_line_error(invoke("eval", "run/best.pt", "--errors", "grid"), "--errors grid", "not an image")
    assert_one_line_error(invoke("eval", "run/best.pt", "--confusion", "run"), "--confusion run", "is a folder")
    assert not Path("grid.png").exists() and not Path("run.png").exists()
    written = invoke("eval", "run/best.pt", "--errors", "grid.PNG")
    assert written.exit_code == 0 and "wrote grid.PNG" in written.stderr
    assert Path("grid.PNG").read_bytes().startswith(PNG_SIGNATURE)


def test_data_preview_refuses_a_name_without_an_image_suffix(data_dir: Path) -> None:
    assert_one_line_error(invoke("data", "preview", "--data-dir", data_dir, "--out", "grid"), "grid", "not an image")
    assert not Path("grid.png").exists()


# 15.1: run names are never cut; piped output is plain

LONG_NAMES = ["20261202-165323-scratch", "20261202-165323-scratch-2", "20261202-170101-concise"]


@pytest.mark.parametrize("width", [60, 80, 160])
def test_runs_on_a_terminal_never_cuts_run_names(width: int) -> None:
    for number, name in enumerate(LONG_NAMES):
        make_run(Path("runs") / name, lr=0.1 + number / 10, activation=["relu", "tanh", "sigmoid"][number])
    shown = render(runs_table(list_runs(Path("runs")), Path("runs"), width), width)
    assert "…" not in shown
    for name in LONG_NAMES:
        assert any(name in line for line in shown.splitlines()), shown
    assert all(len(line) <= width for line in shown.splitlines())


def test_runs_into_a_pipe_prints_one_plain_full_line_per_run() -> None:
    for number, name in enumerate(LONG_NAMES):
        make_run(Path("runs") / name, hidden=(64 * (number + 1),))
    listed = invoke("runs")
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.stdout.splitlines()
    assert header.split("\t")[:4] == ["run", "epochs", "best test acc", "updated"]
    assert sorted(row.split("\t")[0] for row in rows) == sorted(LONG_NAMES)
    assert not BOX_CHARACTERS & set(listed.stdout) and "…" not in listed.stdout
    assert all(len(row.split("\t")) == len(header.split("\t")) for row in rows)


# 15.2: the settings that tell runs apart

def test_runs_shows_only_the_settings_that_differ_between_runs() -> None:
    make_run(Path("runs/a"), hidden=(256,), lr=0.1, epochs=5)
    make_run(Path("runs/b"), hidden=(256, 128), lr=0.1, epochs=10, optimizer="adam")
    assert differing_settings(list_runs(Path("runs"))) == ["hidden", "optimizer"]
    header, *rows = invoke("runs").stdout.splitlines()
    assert header.split("\t")[4:] == ["hidden", "optimizer"]
    cells = {row.split("\t")[0]: row.split("\t")[4:] for row in rows}
    assert cells == {"a": ["256", "sgd"], "b": ["256,128", "adam"]}
    listed = {run["name"]: run for run in json.loads(invoke("runs", "--json").stdout)}
    assert listed["b"]["settings"]["optimizer"] == "adam" and listed["a"]["settings"]["lr"] == 0.1


def test_training_header_names_every_setting_not_at_its_default() -> None:
    settings = config_to_dict(Config(lr=0.5, hidden=(256, 128), activation="tanh"))
    plan = TrainingPlan(impl="scratch", hidden=(256, 128), num_parameters=1, device="cpu", threads=1,
                        precision="fp32", dataset="fashion-mnist", data_source="data", train_samples=96,
                        test_samples=40, batch_size=256, first_epoch=1, num_epochs=10, val_size=0, run_dir="run",
                        settings=tuple(settings.items()))
    screen = io.StringIO()
    RichReporter(Console(file=screen, width=200)).on_start(plan)
    header = next(line for line in screen.getvalue().splitlines() if line.startswith("settings not at"))
    assert header == "settings not at their default: hidden 256,128, activation tanh, lr 0.5"


def test_training_header_from_a_real_run_lists_its_flags(data_dir: Path) -> None:
    result = invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL, "--lr", "0.3")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stderr.splitlines() if line.startswith("settings not at"))
    for expected in ("hidden 32", "lr 0.3", "batch_size 16", "epochs 1", "device cpu", "threads 1"):
        assert expected in line
    assert "impl" not in line and "optimizer" not in line


# 15.6: the confusion matrix's counts stay whole at 60 columns

@pytest.mark.parametrize("width", [60, 80])
def test_eval_confusion_matrix_counts_appear_in_full_at_narrow_widths(width: int) -> None:
    confusion = [[1000 if row == column else row * 10 + column for column in range(10)] for row in range(10)]
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"]
    result = Evaluation(checkpoint="runs/a/best.pt", epoch=1, split="test", loss=0.5, accuracy=0.5,
                        recorded_accuracy=None, stopped_after_batch=None, class_names=names,
                        per_class_accuracy=[0.5] * 10, confusion=confusion)
    shown = render(evaluation_tables(result)[-1], width)
    assert "…" not in shown
    matrix_rows = [line.split() for line in shown.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [[int(cell) for cell in row[1:]] for row in matrix_rows] == confusion
    legend = render(evaluation_tables(result)[1], width)
    assert all(name in legend for name in names)


# 15.7: plot-curves on a folder of runs

def test_plot_curves_of_a_folder_plots_every_run_in_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlp_cli.plots

    for name in ("a", "b", "c"):
        make_run(Path("runs") / name)
    plotted = []
    monkeypatch.setattr(mlp_cli.plots, "plot_curves", lambda runs, path: plotted.extend(runs))
    assert invoke("plot-curves", "runs").exit_code == 0
    assert [label for label, _ in plotted] == ["a", "b", "c"]


def test_plot_curves_labels_runs_of_the_same_name_by_their_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlp_cli.plots

    make_run(Path("first/run"))
    make_run(Path("second/run"))
    plotted = []
    monkeypatch.setattr(mlp_cli.plots, "plot_curves", lambda runs, path: plotted.extend(runs))
    assert invoke("plot-curves", "first/run", "second/run").exit_code == 0
    assert [label for label, _ in plotted] == ["first/run", "second/run"]


def test_plot_curves_grows_the_figure_with_the_legend_of_many_runs() -> None:
    for number in range(12):
        make_run(Path("many") / f"run-{number}")
    assert invoke("plot-curves", "many/run-0", "many/run-1", "--out", "two.png").exit_code == 0
    assert invoke("plot-curves", "many", "--out", "twelve.png").exit_code == 0
    (two_width, two_height), (twelve_width, twelve_height) = png_size(Path("two.png")), png_size(Path("twelve.png"))
    assert twelve_width == two_width and twelve_height > two_height


def test_plot_curves_keeps_the_legend_outside_the_axes(monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    import mlp_cli.plots

    figures = []
    monkeypatch.setattr(mlp_cli.plots, "save_figure", lambda figure, path, dpi: figures.append(figure))
    rows = [{"epoch": epoch, "train_loss": 1.0 / epoch, "train_accuracy": 0.9, "test_loss": 1.0,
             "test_accuracy": 0.9} for epoch in range(1, 4)]
    mlp_cli.plots.plot_curves([(f"run-{number}", rows) for number in range(8)], Path("curves.png"))
    renderer = FigureCanvasAgg(figures[0]).get_renderer()
    legend = figures[0].legends[0].get_window_extent(renderer)
    for axes in figures[0].axes:
        assert not legend.overlaps(axes.get_tightbbox(renderer))  # neither the curves nor the tick labels
    assert len(figures[0].legends[0].get_texts()) == 8 + 2  # a colour per run, then train and test


def test_runs_answers_without_importing_torch_or_matplotlib() -> None:
    make_run(Path("runs/a"))
    script = ("import sys; from typer.testing import CliRunner; from mlp_cli.cli import app; "
              "result = CliRunner().invoke(app, ['runs']); assert result.exit_code == 0, result.output; "
              "print(sorted({'torch', 'matplotlib'} & set(sys.modules)))")
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert shown.stdout.strip() == "[]"
