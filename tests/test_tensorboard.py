"""`mlp train --tensorboard` and `mlp board`: event files TensorBoard reads, and the real server showing them."""

import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from typer.testing import CliRunner

from mlp_cli.cli import app
from mlp_cli.config import Config
from mlp_cli.optimization import learning_rate

runner = CliRunner()
SMALL = ["--hidden", "32", "--batch-size", "16", "--device", "cpu", "--threads", "1"]
SERVER_WAIT_SECONDS = 90  # generous: TensorBoard's start and first read of the folder on a loaded machine


def train(data_dir: Path, out: str, *flags: str) -> list[dict]:
    result = runner.invoke(app, ["train", "--data-dir", str(data_dir), "--out", out, *SMALL, *flags])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]


def read_events(run_dir: str) -> EventAccumulator:
    events = EventAccumulator(str(Path(run_dir, "tb")), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in events.Scalars(tag)}


def test_every_epochs_losses_accuracies_and_learning_rate_are_scalars(data_dir: Path) -> None:
    rows = train(data_dir, "run", "--tensorboard", "--epochs", "4", "--schedule", "step", "--val-size", "16",
                 "--train-metrics")
    events = read_events("run")
    for field, tag in (("train_loss", "loss/train"), ("train_accuracy", "accuracy/train"),
                       ("val_loss", "loss/val"), ("val_accuracy", "accuracy/val"),
                       ("train_eval_accuracy", "accuracy/train_eval")):
        assert scalars(events, tag) == pytest.approx({row["epoch"]: row[field] for row in rows}, rel=1e-6)
    assert scalars(events, "accuracy/test") == pytest.approx({4: rows[-1]["test_accuracy"]}, rel=1e-6)  # val: once
    config = Config(epochs=4, schedule="step")
    assert scalars(events, "lr") == pytest.approx({epoch: learning_rate(config, epoch) for epoch in range(1, 5)})
    assert [row["lr"] for row in rows] == [learning_rate(config, epoch) for epoch in range(1, 5)]
    assert sorted(scalars(events, "time/epoch_seconds")) == [1, 2, 3, 4]


def test_the_runs_settings_are_hparams_with_the_final_metrics_named(data_dir: Path) -> None:
    train(data_dir, "run", "--tensorboard", "--epochs", "1", "--lr", "0.25", "--hidden", "32,16")
    content = read_events("run").PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == 0.25 and hparams["hidden"].string_value == "32,16"
    assert hparams["impl"].string_value == "scratch" and hparams["tensorboard"].string_value == "true"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {info.name.tag for info in experiment.metric_infos}
    assert {"accuracy/test", "loss/test", "accuracy/train", "loss/train"} <= metric_tags


def test_histograms_of_weights_and_gradients_every_n_epochs_only_when_asked(data_dir: Path) -> None:
    train(data_dir, "with", "--tensorboard", "--epochs", "3", "--tb-histograms", "2")
    histograms = read_events("with").Tags()["histograms"]
    assert {"weights/W1", "weights/b2", "gradients/W1", "gradients/b2"} <= set(histograms)
    assert [event.step for event in read_events("with").Histograms("gradients/W1")] == [2]
    train(data_dir, "without", "--tensorboard", "--epochs", "1")
    assert read_events("without").Tags()["histograms"] == []


def test_training_without_the_flag_writes_no_event_files(data_dir: Path) -> None:
    train(data_dir, "run", "--epochs", "1")
    assert not Path("run/tb").exists()


def test_a_resumed_run_can_start_logging_to_tensorboard(data_dir: Path) -> None:
    train(data_dir, "run", "--epochs", "1")
    result = runner.invoke(app, ["train", "--resume", "run/last.pt", "--epochs", "2", "--tensorboard"])
    assert result.exit_code == 0, result.output
    assert sorted(scalars(read_events("run"), "loss/train")) == [2]


def test_a_negative_histogram_interval_is_a_one_line_error(data_dir: Path) -> None:
    result = runner.invoke(app, ["train", "--data-dir", str(data_dir), "--tb-histograms", "-1"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --tb-histograms: -1 is not allowed") and "Traceback" not in result.output


def test_the_cli_and_plain_training_never_import_tensorboard(data_dir: Path) -> None:
    code = ("import sys\n"
            f"sys.argv = ['mlp', 'train', '--data-dir', {str(data_dir)!r}, '--out', 'run', '--epochs', '1', "
            "'--quiet', '--threads', '1', '--hidden', '8']\n"
            "from mlp_cli.cli import main\n"
            "try:\n    main()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
            "print('tensorboard imported:', any(name.split('.')[0] == 'tensorboard' for name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "tensorboard imported: False" in result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def first_line(stream, timeout: float) -> str:
    """The first line of a pipe, or "" if none comes within timeout (so a stuck server fails the test)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


def read_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_board_serves_a_runs_scalars_over_http_on_localhost(data_dir: Path) -> None:
    rows = train(data_dir, "runs/first", "--tensorboard", "--epochs", "2")
    port = free_port()
    board = subprocess.Popen([sys.executable, "-m", "mlp_cli", "board", "runs", "--port", str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        announced = first_line(board.stdout, SERVER_WAIT_SECONDS)
        assert f"http://127.0.0.1:{port}/" in announced, announced
        query = urllib.parse.urlencode({"run": "first/tb", "tag": "loss/train"})
        deadline, points = time.monotonic() + SERVER_WAIT_SECONDS, []
        while not points and time.monotonic() < deadline:  # the server reads the folder in the background
            points = read_json(f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?{query}") or []
            time.sleep(0.5)
        # each point is [wall time, step, value]
        assert {step: value for _, step, value in points} == pytest.approx(
            {row["epoch"]: row["train_loss"] for row in rows}, rel=1e-6)
        assert "first/tb" in read_json(f"http://127.0.0.1:{port}/data/runs")
    finally:
        board.send_signal(signal.SIGINT)
        try:
            code = board.wait(timeout=30)
        finally:
            board.kill()  # never left running, whatever failed above
    assert code == 0


def test_board_on_a_missing_folder_is_a_one_line_error() -> None:
    result = runner.invoke(app, ["board", "nowhere"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: nowhere: no such folder of runs (train with --tensorboard first, or pass the folder)"]
