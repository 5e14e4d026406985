"""curves.png: drawn by a separate process from the newest metrics, so pictures never slow or stop training."""

import io
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import mlp_in_a_fresh_process, small_config

from mlp_cli import curves as curves_module
from mlp_cli.curves import CurvesReporter, serve, warm_up
from mlp_cli.errors import TrainingStoppedError
from mlp_cli.events import EpochMetrics, ReporterGroup
from mlp_cli.plots import plot_curves
from mlp_cli.runs import read_metrics
from mlp_cli.signals import StopRequest
from mlp_cli.training import resume_run, train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def expected_picture(run_dir: Path, name: str) -> bytes:
    """The curves of run_dir's metrics as drawn directly, in this process."""
    plot_curves([(run_dir.name, read_metrics(run_dir))], Path(name))
    return Path(name).read_bytes()


def test_drawings_are_rate_limited_and_the_last_one_shows_every_epoch(data_dir: Path) -> None:
    with CurvesReporter(min_interval=3600) as curves:
        train(small_config(data_dir, hidden=(16,), batch_size=256, epochs=3), Path("run"), curves)
    assert curves.drawings_requested == 2  # after the first epoch, then the last rows when training ended
    picture = Path("run/curves.png").read_bytes()
    assert picture.startswith(PNG_SIGNATURE)
    assert picture == expected_picture(Path("run"), "expected.png")
    assert not list(Path("run").glob(".curves*"))  # no temporary file left


def test_a_resumed_run_draws_its_earlier_epochs_too(data_dir: Path) -> None:
    with CurvesReporter(min_interval=3600) as curves:
        train(small_config(data_dir, hidden=(16,), batch_size=256, epochs=2), Path("run"), curves)
    with CurvesReporter(min_interval=3600) as curves:
        resume_run(Path("run/last.pt"), {"epochs": 3}, curves)
    assert [row["epoch"] for row in curves.rows] == [1, 2, 3]
    assert Path("run/curves.png").read_bytes() == expected_picture(Path("run"), "expected.png")


class StopAfterEpoch:
    """A reporter that asks the run to stop, as Ctrl-C would, once `epoch` has finished."""

    def __init__(self, stop: StopRequest, epoch: int) -> None:
        self.stop, self.epoch = stop, epoch

    def on_start(self, plan: object) -> None: ...
    def on_batch(self, progress: object) -> None: ...
    def on_checkpoint(self, path: Path) -> None: ...

    def on_epoch(self, metrics: EpochMetrics) -> None:
        if metrics.epoch == self.epoch:
            self.stop.signal_number = signal.SIGINT


def test_a_stopped_run_leaves_the_drawer_to_finish_the_picture_on_its_own(data_dir: Path) -> None:
    stop = StopRequest()
    config = small_config(data_dir, hidden=(16,), batch_size=256, epochs=5)
    with pytest.raises(TrainingStoppedError), CurvesReporter(min_interval=3600) as curves:
        train(config, Path("run"), ReporterGroup(curves, StopAfterEpoch(stop, 2)), stop)
    drawer = curves.last_drawer
    assert drawer is not None
    drawer.wait(timeout=120)  # what the stopped command no longer does
    assert [row["epoch"] for row in read_metrics(Path("run"))] == [1, 2]
    assert Path("run/curves.png").read_bytes() == expected_picture(Path("run"), "expected.png")


def test_a_stop_never_waits_for_a_slow_drawer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torchrun kills a worker still running 30 s after SIGTERM: a stop that waited for a picture lost its message
    monkeypatch.setattr(curves_module, "DRAWER_COMMAND", [sys.executable, "-c", "import time; time.sleep(120)"])
    started = time.monotonic()
    with pytest.raises(TrainingStoppedError), CurvesReporter(min_interval=0) as curves:
        curves.on_start(SimpleNamespace(run_dir=str(tmp_path), first_epoch=1, num_epochs=3))
        curves.on_epoch(EpochMetrics(1, 2.0, 0.3, test_loss=1.9, test_accuracy=0.4))
        raise TrainingStoppedError("stopped in epoch 2", 130)
    waited = time.monotonic() - started
    curves.last_drawer.kill()
    curves.last_drawer.wait()
    assert waited < 60  # the drawer sleeps for 120 s; returning at once takes well under a second


def test_the_last_epoch_is_drawn_as_soon_as_its_metrics_are_known(tmp_path: Path) -> None:
    """Not when the reporter closes: the drawing overlaps the last checkpoints, and a finished run waits less."""
    with CurvesReporter(min_interval=3600) as curves:
        curves.on_start(SimpleNamespace(run_dir=str(tmp_path), first_epoch=1, num_epochs=2))
        curves.on_epoch(EpochMetrics(1, 2.0, 0.3, test_loss=1.9, test_accuracy=0.4))
        curves.on_epoch(EpochMetrics(2, 1.5, 0.5, test_loss=1.4, test_accuracy=0.6))
        assert curves.drawings_requested == 2  # the second within the hour the interval asks for
    assert curves.drawings_requested == 2  # closing had nothing left to send
    assert curves.last_drawer.returncode == 0  # the drawer ended cleanly once its input ended
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_SIGNATURE)


def test_the_training_process_never_imports_matplotlib(data_dir: Path) -> None:
    result, loaded = mlp_in_a_fresh_process("train", "--data-dir", data_dir, "--epochs", "2", "--hidden", "16",
                                            "--threads", "1", "--out", "run", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "matplotlib" not in loaded
    assert Path("run/curves.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_drawing_that_fails_is_one_warning_and_the_drawer_goes_on(tmp_path: Path, capsys) -> None:
    blocked, fine = tmp_path / "blocked", tmp_path / "fine"
    (blocked / "curves.png").mkdir(parents=True)  # a folder where the picture should go
    fine.mkdir()
    row = {"epoch": 1, "train_loss": 2.0, "train_accuracy": 0.3, "test_loss": 1.9, "test_accuracy": 0.4}
    requests = [f'{{"run_dir": "{folder}", "rows": [{__import__("json").dumps(row)}]}}\n'
                for folder in (blocked, blocked, fine)]
    serve(io.StringIO("".join(requests)))
    warnings = capsys.readouterr().err.strip().splitlines()
    assert warnings == [f"warning: cannot draw {blocked / 'curves.png'} (Is a directory); training goes on"]
    assert (fine / "curves.png").read_bytes().startswith(PNG_SIGNATURE)


def test_training_goes_on_when_the_drawer_is_gone(tmp_path: Path) -> None:
    curves = CurvesReporter(min_interval=0)
    curves.on_start(SimpleNamespace(run_dir=str(tmp_path), first_epoch=1, num_epochs=3))
    curves.on_epoch(EpochMetrics(1, 2.0, 0.3, test_loss=1.9, test_accuracy=0.4))
    curves._drawer.kill()
    curves._drawer.wait()
    curves.on_epoch(EpochMetrics(2, 1.5, 0.5, test_loss=1.4, test_accuracy=0.6))  # no exception
    curves.close()


def test_a_picture_that_cannot_be_drawn_warns_once_and_training_goes_on(data_dir: Path, capfd) -> None:
    class FolderWhereThePictureGoes:
        def on_start(self, plan: object) -> None:
            (Path(plan.run_dir) / "curves.png").mkdir()

        def on_batch(self, progress: object) -> None: ...
        def on_epoch(self, metrics: object) -> None: ...
        def on_checkpoint(self, path: Path) -> None: ...

    config = small_config(data_dir, hidden=(16,), batch_size=256, epochs=2)
    with CurvesReporter(min_interval=0) as curves:
        train(config, Path("run"), ReporterGroup(FolderWhereThePictureGoes(), curves))
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: cannot draw run/curves.png (Is a directory); training goes on"]
    assert curves.drawings_requested == 2 and len(read_metrics(Path("run"))) == 2


def test_the_drawer_draws_a_practice_picture_before_its_first_request_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    practice = tmp_path / "temporary"
    practice.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(practice))
    drawn: list[Path] = []
    monkeypatch.setattr(curves_module, "draw_curves", lambda run_dir, rows: drawn.append(run_dir))
    serve(io.StringIO(""))  # no request at all: the practice drawing alone
    assert len(drawn) == 1 and drawn[0].parent == practice
    assert list(practice.iterdir()) == []  # its folder is gone


def test_a_practice_picture_that_fails_is_silent(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/folder")
    warm_up()
    assert capsys.readouterr().err == ""
