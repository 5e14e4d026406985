"""The `mlp` command line, as a user meets it: train, eval, plot-activation, and one-line errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_dataset
from typer.testing import CliRunner

from mlp_cli.activations import activation_curve
from mlp_cli.cli import X_START, X_STEP, X_STOP, app

runner = CliRunner()
SMALL = ["--hidden", "32", "--batch-size", "16", "--epochs", "2", "--device", "cpu", "--threads", "1"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args])


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit code 1, a single `error: ...` line on stderr naming the problem, and no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def assert_usage_error(result, *fragments: str) -> None:
    """Exit code 2 (a mistake in the command line), the usage and the problem on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = " ".join(result.stderr.replace("│", " ").split())  # the message may wrap inside a box
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("impl", ["scratch", "concise"])
def test_train_then_eval_reports_the_accuracy_recorded_during_training(data_dir: Path, impl: str) -> None:
    trained = invoke("train", "--impl", impl, "--data-dir", data_dir, "--out", "run", *SMALL)
    assert trained.exit_code == 0, trained.output
    assert "best test accuracy" in trained.stdout and "run/best.pt" in trained.stdout
    assert "epoch 2/2" in trained.stderr
    rows = [json.loads(line) for line in Path("run/metrics.jsonl").read_text().splitlines()]
    for checkpoint, row in (("run/last.pt", rows[-1]), ("run/best.pt", max(rows, key=lambda r: r["test_accuracy"]))):
        evaluated = invoke("eval", checkpoint, "--json")
        assert evaluated.exit_code == 0, evaluated.output
        report = json.loads(evaluated.stdout)
        assert report["epoch"] == row["epoch"]
        assert report["accuracy"] == row["test_accuracy"]
        assert report["loss"] == row["test_loss"]


def test_eval_shows_a_table_and_can_evaluate_the_train_split(data_dir: Path) -> None:
    assert invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL).exit_code == 0
    table = invoke("eval", "run/last.pt")
    assert table.exit_code == 0 and "accuracy" in table.stdout and "during training" in table.stdout
    on_train = json.loads(invoke("eval", "run/last.pt", "--split", "train", "--json").stdout)
    assert on_train["split"] == "train" and on_train["recorded_accuracy"] is None
    assert 0.0 <= on_train["accuracy"] <= 1.0


def test_eval_finds_data_through_data_dir_when_the_training_folder_is_gone(data_dir: Path, tmp_path: Path) -> None:
    assert invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL).exit_code == 0
    moved = data_dir.rename(tmp_path / "moved")
    assert invoke("eval", "run/last.pt").exit_code == 1
    assert invoke("eval", "run/last.pt", "--data-dir", moved).exit_code == 0


def test_config_file_with_flags_on_top(data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "mine.toml"
    config.write_text('impl = "concise"\nepochs = 5\nhidden = [16, 8]\n')
    result = invoke("train", "--config", config, "--epochs", "1", "--data-dir", data_dir, "--out", "run")
    assert result.exit_code == 0, result.output
    saved = Path("run/config.toml").read_text()
    assert 'impl = "concise"' in saved and "epochs = 1" in saved and "hidden = [16, 8]" in saved


def test_data_dir_comes_from_the_environment_too(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLP_DATA_DIR", str(data_dir))
    assert invoke("train", "--out", "run", *SMALL).exit_code == 0


@pytest.mark.parametrize(("flags", "fragments"), [
    (["--impl", "numpy"], ["--impl", "'numpy'", "scratch, concise"]),
    (["--dataset", "cifar10"], ["--dataset", "fashion-mnist, mnist"]),
])
def test_unknown_names_are_usage_errors_listing_the_known_ones(data_dir: Path, flags: list[str],
                                                               fragments: list[str]) -> None:
    assert_usage_error(invoke("train", "--data-dir", data_dir, *flags), *fragments)
    assert not Path("runs").exists()


@pytest.mark.parametrize(("flags", "fragments"), [
    (["--lr", "0"], ["--lr", "0.0", "> 0"]),
    (["--lr", "-0.5"], ["--lr", "-0.5"]),
    (["--epochs", "0"], ["--epochs", ">= 1"]),
    (["--batch-size", "-3"], ["--batch-size", ">= 1"]),
    (["--hidden", "256,x"], ["--hidden", "256,x"]),
])
def test_bad_training_flags_are_one_line_errors(data_dir: Path, flags: list[str], fragments: list[str]) -> None:
    assert_one_line_error(invoke("train", "--data-dir", data_dir, *flags), *fragments)
    assert not Path("runs").exists()


def test_unknown_key_in_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text("learning_rate = 0.1\n")
    assert_one_line_error(invoke("train", "--config", config), "typo.toml", "learning_rate", "unknown setting")


def test_missing_data_is_a_one_line_error_saying_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("train", "--data-dir", tmp_path / "empty")
    assert_one_line_error(result, "no Fashion-MNIST files", "train-images-idx3-ubyte")


def test_missing_checkpoint_is_a_one_line_error() -> None:
    assert_one_line_error(invoke("eval", "nowhere/best.pt"), "nowhere/best.pt", "no such checkpoint")


def test_a_file_torch_did_not_write_is_said_to_be_no_checkpoint_rather_than_unsafe(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint\n" * 80)  # fixed bytes: random ones fail in varying ways
    assert_one_line_error(invoke("eval", garbage), "garbage.pt", "not a checkpoint (not a file saved by torch")
    (tmp_path / "README.md").write_text("# mlp\n\nTrain MLPs.\n")
    result = invoke("eval", tmp_path / "README.md")
    assert_one_line_error(result, "README.md: not a checkpoint")
    assert "safe" not in result.stderr


def test_damaged_pickle_bytes_give_one_line_without_torchs_warning(tmp_path: Path, recwarn) -> None:
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"\x80\xa0" + bytes(100))  # pickle protocol 160: torch would warn about it
    assert_one_line_error(invoke("eval", damaged), "damaged.pt", "refused to load", "corrupt")
    assert [str(warning.message) for warning in recwarn] == []  # a warning would print lines of its own


def test_truncated_checkpoint_is_a_one_line_error(data_dir: Path) -> None:
    assert invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL).exit_code == 0
    Path("cut.pt").write_bytes(Path("run/last.pt").read_bytes()[:1000])
    assert_one_line_error(invoke("eval", "cut.pt"), "cut.pt", "not a readable checkpoint")


def test_a_checkpoint_that_would_run_code_is_refused_and_the_code_does_not_run(tmp_path: Path) -> None:
    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"format": "mlp-checkpoint", "payload": RunsCode()}, tmp_path / "evil.pt")
    assert_one_line_error(invoke("eval", tmp_path / "evil.pt"), "refused to load", "system")
    assert not (tmp_path / "pwned").exists()


def test_a_folder_given_as_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("eval", tmp_path / "empty"), "empty/best.pt", "no such checkpoint")


def test_eval_of_a_run_folder_evaluates_its_best_checkpoint_and_says_so(data_dir: Path) -> None:
    assert invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL).exit_code == 0
    result = invoke("eval", "run", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "evaluating run/best.pt"
    assert json.loads(result.stdout)["checkpoint"] == "run/best.pt"


def test_a_torch_file_that_is_not_a_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    assert_one_line_error(invoke("eval", tmp_path / "other.pt"), "not an mlp checkpoint")


def test_unknown_eval_device_is_a_one_line_error(data_dir: Path) -> None:
    assert invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL).exit_code == 0
    assert_one_line_error(invoke("eval", "run/last.pt", "--device", "tpu"), "--device tpu", "auto, cpu")


def test_unknown_split_is_a_usage_error_naming_the_splits(data_dir: Path) -> None:
    assert invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL).exit_code == 0
    assert_usage_error(invoke("eval", "run/last.pt", "--split", "tets"), "--split", "train, test",
                       "did you mean test?")


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_plot_activation_writes_a_png_of_the_function_and_its_gradient(name: str) -> None:
    result = invoke("plot-activation", name, "--out", f"{name}.png")
    assert result.exit_code == 0, result.output
    assert Path(f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
    from matplotlib.image import imread

    with_grad = imread(f"{name}.png")
    assert invoke("plot-activation", name, "--no-grad", "--out", "alone.png").exit_code == 0
    alone = imread("alone.png")
    assert with_grad.shape[1] > 1.5 * alone.shape[1]  # two panels side by side, then one


def test_plot_activation_without_out_draws_in_the_terminal() -> None:
    result = invoke("plot-activation", "tanh")
    assert result.exit_code == 0, result.output
    assert "tanh(x)" in result.stdout and "grad of tanh" in result.stdout
    assert sum(ch in "▀▄▌▐▖▗▘▙▚▛▜▝▞▟█" for ch in result.stdout) > 50  # curves drawn with Unicode blocks
    assert not list(Path().glob("*.png"))
    alone = invoke("plot-activation", "tanh", "--no-grad")
    assert "grad of tanh" not in alone.stdout


def test_plot_activation_lists_every_activation() -> None:
    from mlp_cli.activations import ACTIVATIONS

    listed = invoke("plot-activation", "--list").stdout.split()
    assert listed == list(ACTIVATIONS)
    assert {"relu", "sigmoid", "tanh", "leaky-relu", "elu", "gelu", "silu", "softplus"} <= set(listed)


@pytest.mark.parametrize("name", ["leaky-relu", "elu", "gelu", "silu", "softplus", "identity"])
def test_every_listed_activation_plots(name: str) -> None:
    assert invoke("plot-activation", name, "--out", f"{name}.png").exit_code == 0
    assert invoke("plot-activation", name).exit_code == 0


def test_range_sets_the_plotted_x_values() -> None:
    from mlp_cli.activations import sample_activation

    x, y, grad = sample_activation("relu", -2.0, 3.0, X_STEP)
    assert x[0].item() == -2.0 and x[-1].item() == pytest.approx(2.9) and len(x) == len(y) == len(grad) == 50
    assert invoke("plot-activation", "sigmoid", "--range", "-4", "4", "--out", "s.png").exit_code == 0


@pytest.mark.parametrize("bounds", [["3", "1"], ["0", "0"], ["0", "inf"], ["-1e9", "1e9"]])
def test_bad_ranges_are_one_line_errors(bounds: list[str]) -> None:
    assert_one_line_error(invoke("plot-activation", "relu", "--range", *bounds), "--range")


def test_plot_activation_without_a_name_says_how_to_use_it() -> None:
    assert_one_line_error(invoke("plot-activation"), "mlp plot-activation relu", "--list")


def test_the_plotted_grid_is_d2ls_x_from_minus_8_to_7_9() -> None:
    x = torch.arange(X_START, X_STOP, X_STEP)
    assert len(x) == 160 and x[0].item() == -8.0 and x[-1].item() == pytest.approx(7.9)


def test_autograd_derivatives_match_the_closed_forms() -> None:
    x = torch.arange(X_START, X_STOP, X_STEP)
    _, relu_grad = activation_curve("relu", x)
    assert torch.equal(relu_grad, (x > 0).float())  # 0 or 1; the grid never hits 0 exactly
    sigmoid, sigmoid_grad = activation_curve("sigmoid", x)
    torch.testing.assert_close(sigmoid_grad, sigmoid * (1 - sigmoid))
    tanh, tanh_grad = activation_curve("tanh", x)
    torch.testing.assert_close(tanh_grad, 1 - tanh**2)


def test_unknown_activation_is_a_usage_error_listing_the_known_ones() -> None:
    assert_usage_error(invoke("plot-activation", "swish2"), "'swish2'", "relu, sigmoid, tanh")


def test_unwritable_plot_path_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(invoke("plot-activation", "relu", "--out", tmp_path / "no" / "such" / "dir.png"),
                          "cannot write the image")


def run_installed(*args: str, module: bool = False) -> subprocess.CompletedProcess:
    """Run the installed console script (or python -m mlp_cli) the way a user's shell does."""
    command = [sys.executable, "-m", "mlp_cli"] if module else [str(Path(sys.executable).parent / "mlp")]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


def test_the_mlp_console_script_and_python_dash_m_both_work() -> None:
    for module in (False, True):
        result = run_installed("--help", module=module)
        assert result.returncode == 0, result.stderr
        assert "train" in result.stdout and "plot-activation" in result.stdout


def test_errors_from_the_real_entry_point_have_no_traceback(tmp_path: Path) -> None:
    result = run_installed("eval", str(tmp_path / "missing.pt"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.pt'}: no such checkpoint "
                                                  "(a run folder holds last.pt and best.pt)"]


def test_train_help_shows_the_config_defaults() -> None:
    result = invoke("train", "--help")
    assert result.exit_code == 0
    for shown in ("[default: scratch]", "[default: 0.1]", "[default: 256]", "[default: 10]"):
        assert shown in result.stdout


@pytest.mark.parametrize("argv", [["--help"], ["plot-activation", "--help"], ["train", "--help"], ["runs", "--help"]])
def test_help_screens_do_not_import_torch(argv: list[str]) -> None:
    code = (f"import sys; sys.argv = ['mlp', *{argv!r}]\n"
            "from mlp_cli.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('torch imported:', 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "torch imported: False" in result.stdout


def test_unknown_precision_is_a_usage_error_and_negative_threads_a_one_line_error(data_dir: Path) -> None:
    assert_usage_error(invoke("train", "--data-dir", data_dir, "--precision", "fp8"), "--precision", "fp32, bf16")
    assert_one_line_error(invoke("train", "--data-dir", data_dir, "--threads", "-1"), "--threads", ">= 0")


@pytest.mark.parametrize("config", sorted(p.name for p in (Path(__file__).parent.parent / "configs").glob("*.toml")))
def test_every_shipped_config_trains_for_an_epoch(data_dir: Path, config: str) -> None:
    path = Path(__file__).parent.parent / "configs" / config
    # the synthetic set has 96 training images: a config's validation split is scaled down to fit
    held_out = ["--val-size", "16"] if "val_size" in path.read_text() else []
    result = invoke("train", "--config", path, "--epochs", "1", "--data-dir", data_dir, "--threads", "1",
                    "--out", "run", *held_out)
    assert result.exit_code == 0, result.output
    assert json.loads(Path("run/metrics.jsonl").read_text())["epoch"] == 1


def test_version_is_printed_and_matches_the_package() -> None:
    from mlp_cli import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"mlp {__version__}"


def test_quiet_training_prints_only_the_result(data_dir: Path) -> None:
    result = invoke("train", "--data-dir", data_dir, "--out", "run", "--quiet", *SMALL)
    assert result.exit_code == 0
    assert result.stderr == ""
    assert "best test accuracy" in result.stdout


def test_shell_completion_script_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    # typer finds the shell among this process's parents, and a test runner may have none (started by a service,
    # or reparented to init): this makes --show-completion take the shell's name instead, as typer's own tests do
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = run_installed("--show-completion", "bash")
    assert result.returncode == 0 and "complete" in result.stdout and "mlp" in result.stdout, result.stderr


def test_every_command_help_shows_an_example() -> None:
    for command in ("train", "eval", "plot-activation"):
        result = invoke(command, "--help")
        assert f"Example: mlp {command}" in result.stdout


def test_the_readme_library_snippet_runs_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    snippet = readme.split("### As a library", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(snippet.strip().splitlines()) <= 10
    cache = tmp_path / "cache"
    write_dataset(cache / "mlp" / "FashionMNIST" / "raw")  # where the library looks before system folders
    (tmp_path / "snippet.py").write_text(snippet)
    environment = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    result = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "scratch" in result.stdout and "concise" in result.stdout
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_eval_reports_per_class_accuracy_and_a_confusion_matrix(data_dir: Path) -> None:
    from mlp_cli.data import DATASETS

    assert invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL).exit_code == 0
    report = json.loads(invoke("eval", "run/last.pt", "--json").stdout)
    names = list(DATASETS["fashion-mnist"].class_names)
    assert report["class_names"] == names
    confusion = torch.tensor(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum().item() == 40  # the synthetic test split
    assert report["accuracy"] == confusion.trace().item() / 40
    per_class = [row[i] / max(sum(row), 1) for i, row in enumerate(report["confusion"])]
    assert report["per_class_accuracy"] == pytest.approx(per_class)
    table = invoke("eval", "run/last.pt")
    assert "accuracy per class" in table.stdout and "Ankle boot" in table.stdout
    assert "confusion matrix" in table.stdout and "T-shirt/top" in table.stdout


def test_eval_json_per_class_accuracies_are_exact_fractions_without_float32_noise(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlp_cli.evaluation import SplitMetrics

    assert invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL).exit_code == 0
    confusion = torch.diag(torch.arange(1, 11)) + 2  # row i: i + 3 right out of i + 21
    monkeypatch.setattr("mlp_cli.evaluation.evaluate", lambda *args, **kwargs: SplitMetrics(0.5, 0.5, confusion))
    report = json.loads(invoke("eval", "run/last.pt", "--json").stdout)
    assert report["per_class_accuracy"] == [(i + 3) / (i + 21) for i in range(10)]


def test_eval_writes_the_confusion_matrix_as_a_png(data_dir: Path) -> None:
    assert invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL).exit_code == 0
    result = invoke("eval", "run/last.pt", "--confusion", "confusion.png", "--errors", "errors.png")
    assert result.exit_code == 0
    assert Path("confusion.png").read_bytes().startswith(PNG_SIGNATURE)
    assert Path("errors.png").read_bytes().startswith(PNG_SIGNATURE)
    json_only = invoke("eval", "run/last.pt", "--json", "--confusion", "again.png")
    json.loads(json_only.stdout)  # nothing but JSON on stdout
    assert Path("again.png").exists()


def test_runs_lists_run_folders_newest_first_with_their_best_accuracy(data_dir: Path) -> None:
    assert invoke("train", "--data-dir", data_dir, "--out", "runs/first", *SMALL).exit_code == 0
    time.sleep(1.1)  # modification times have one-second resolution in the listing
    assert invoke("train", "--data-dir", data_dir, "--out", "runs/second", "--impl", "concise", *SMALL[:4],
                  "--epochs", "1", "--threads", "1").exit_code == 0
    Path("runs/not-a-run").mkdir()
    listed = json.loads(invoke("runs", "--json").stdout)
    assert [run["path"] for run in listed] == ["runs/second", "runs/first"]
    second, first = listed
    assert (second["impl"], second["epochs_done"], second["epochs_planned"]) == ("concise", 1, 1)
    rows = [json.loads(line) for line in Path("runs/first/metrics.jsonl").read_text().splitlines()]
    assert first["best_test_accuracy"] == max(row["test_accuracy"] for row in rows)
    assert "first" in [line.split("\t")[0] for line in invoke("runs").stdout.splitlines()]


def test_runs_of_a_missing_folder_is_a_one_line_error() -> None:
    assert_one_line_error(invoke("runs", "nowhere"), "nowhere", "no such folder")


def test_plot_curves_overlays_several_runs(data_dir: Path) -> None:
    for impl in ("scratch", "concise"):
        assert invoke("train", "--data-dir", data_dir, "--impl", impl, "--out", f"runs/{impl}", *SMALL).exit_code == 0
    result = invoke("plot-curves", "runs/scratch", "runs/concise", "--out", "both.png")
    assert result.exit_code == 0, result.output
    assert Path("both.png").read_bytes().startswith(PNG_SIGNATURE)
    Path("empty").mkdir()
    skipped = invoke("plot-curves", "runs/scratch", "empty", "--out", "one.png")
    assert skipped.exit_code == 0 and skipped.stderr.startswith("warning: skipped empty: no metrics.jsonl")
    assert_one_line_error(invoke("plot-curves", "empty"), "no run with finished epochs", "empty: no metrics.jsonl")


def test_data_info_says_where_the_data_is_and_counts_each_class(data_dir: Path) -> None:
    result = invoke("data", "info", "--data-dir", data_dir, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["source"] == str(data_dir)
    train_split, test_split = info["splits"]
    assert (train_split["count"], test_split["count"]) == (96, 40)
    assert train_split["image_shape"] == [1, 28, 28]
    from mlp_cli.data import load_data

    labels = load_data("fashion-mnist", data_dir).train_labels
    assert list(train_split["class_counts"].values()) == torch.bincount(labels, minlength=10).tolist()
    table = invoke("data", "info", "--data-dir", data_dir)
    assert str(data_dir) in table.stdout and "Ankle boot" in table.stdout


def test_data_preview_writes_a_labelled_grid(data_dir: Path) -> None:
    result = invoke("data", "preview", "--data-dir", data_dir, "--out", "grid.png", "--count", "10")
    assert result.exit_code == 0, result.output
    assert Path("grid.png").read_bytes().startswith(PNG_SIGNATURE)
    assert_one_line_error(invoke("data", "preview", "--data-dir", data_dir, "--count", "0"), "--count 0")


def test_data_preview_refuses_a_count_too_large_to_draw_before_drawing(data_dir: Path) -> None:
    result = invoke("data", "preview", "--data-dir", data_dir, "--out", "grid.png", "--count", "1000000")
    assert_one_line_error(result, "--count 1000000", "from 1 to 400")
    assert not Path("grid.png").exists()


def test_eval_errors_writes_a_grid_of_the_misclassified_images(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL).exit_code == 0
    shown = {}

    def record(images: torch.Tensor, titles: list[str], path: Path) -> None:
        shown.update(images=images, titles=titles)
        path.write_bytes(PNG_SIGNATURE)

    monkeypatch.setattr("mlp_cli.plots.plot_image_grid", record)
    report = json.loads(invoke("eval", "run/last.pt", "--errors", "errors.png", "--json").stdout)
    wrong = 40 - round(report["accuracy"] * 40)
    assert len(shown["titles"]) == min(wrong, 32)
    assert all(" -> " in title.replace("\n", " ") for title in shown["titles"])
    assert all(title.split("\n-> ")[0] != title.split("\n-> ")[1] for title in shown["titles"])
    assert Path("errors.png").exists()


def test_no_color_is_honoured_even_where_colour_is_forced() -> None:
    command = [str(Path(sys.executable).parent / "mlp"), "plot-activation", "relu", "--no-grad"]
    coloured = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "FORCE_COLOR": "1"})
    plain = subprocess.run(command, capture_output=True, text=True,
                           env={**os.environ, "FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" in coloured.stdout  # the test can tell colour from none
    assert "\x1b[" not in plain.stdout and "relu(x)" in plain.stdout


def test_training_with_a_validation_split_reports_it(data_dir: Path) -> None:
    result = invoke("train", "--data-dir", data_dir, "--out", "run", "--val-size", "24", *SMALL)
    assert result.exit_code == 0, result.output
    assert "best val accuracy" in result.stdout and "final test accuracy" in result.stdout
    assert "val acc" in result.stderr


def test_more_threads_than_cores_are_refused_in_one_line(data_dir: Path) -> None:
    result = invoke("train", "--data-dir", data_dir, "--out", "run", *SMALL[:-2], "--threads", "100000")
    assert_one_line_error(result, "--threads 100000: this process may run on", "more threads than cores")
    assert not Path("run/last.pt").exists()


def test_the_mlp_command_makes_openmp_threads_wait_passively_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlp_cli.cli import main

    monkeypatch.setattr(sys, "argv", ["mlp", "--version"])
    for preset, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        if preset is None:
            monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        else:
            monkeypatch.setenv("OMP_WAIT_POLICY", preset)
        with pytest.raises(SystemExit):
            main()
        assert os.environ["OMP_WAIT_POLICY"] == expected
