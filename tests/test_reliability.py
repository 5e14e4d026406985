"""Never lose a run: exact resume, atomic checkpoints, signals, divergence, safe loading, bad settings."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support import assert_runs_identical, small_config
from typer.testing import CliRunner

from mlp_cli import checkpoint as checkpoint_module
from mlp_cli.checkpoint import FORMAT_VERSION, TrainState, load_checkpoint, save_checkpoint
from mlp_cli.cli import app
from mlp_cli.config import FIELD_TYPES, validate_settings
from mlp_cli.data import DATASETS, find_dataset_dir
from mlp_cli.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    MlpError,
    TrainingDivergedError,
    TrainingStoppedError,
)
from mlp_cli.signals import StopRequest
from mlp_cli.training import resume_run, train

runner = CliRunner()


class StopAfter(StopRequest):
    """A stop request that arrives, as SIGINT would, after a given number of batches."""

    def __init__(self, batches: int):
        super().__init__()
        self.batches_left = batches

    @property
    def is_requested(self) -> bool:
        self.batches_left -= 1
        if self.batches_left <= 0:
            self.signal_number = signal.SIGINT
        return self.signal_number is not None


@pytest.mark.parametrize("impl", ["scratch", "concise"])
def test_resuming_after_three_epochs_equals_an_uninterrupted_five_epoch_run(data_dir: Path, impl: str) -> None:
    train(small_config(data_dir, impl=impl, epochs=3), Path("interrupted"))
    resumed = resume_run(Path("interrupted/last.pt"), {"epochs": 5})
    train(small_config(data_dir, impl=impl, epochs=5), Path("straight"))
    assert resumed.run_dir == Path("interrupted")
    assert [row.epoch for row in resumed.history] == [1, 2, 3, 4, 5]
    assert_runs_identical(Path("interrupted"), Path("straight"))


def test_a_run_stopped_mid_epoch_resumes_as_if_never_stopped(data_dir: Path) -> None:
    # 96 training images in batches of 16: 6 batches per epoch; stop in epoch 2 after its 3rd batch
    with pytest.raises(TrainingStoppedError, match=r"stopped in epoch 2 after batch 3; saved stopped/last\.pt"):
        train(small_config(data_dir, epochs=4), Path("stopped"), stop=StopAfter(9))
    saved = load_checkpoint(Path("stopped/last.pt"))
    assert saved.epoch == 1 and saved.progress is not None and saved.progress.batches_done == 3
    report = json.loads(runner.invoke(app, ["eval", "stopped/last.pt", "--json"]).stdout)
    assert report["stopped_after_batch"] == 3 and report["recorded_accuracy"] is None
    resume_run(Path("stopped/last.pt"), {})
    train(small_config(data_dir, epochs=4), Path("straight"))
    assert_runs_identical(Path("stopped"), Path("straight"))


@pytest.mark.parametrize(("flag", "value"), [("impl", "concise"), ("hidden", "64"), ("lr", 0.5)])
def test_resuming_with_a_conflicting_setting_is_refused(data_dir: Path, flag: str, value: object) -> None:
    train(small_config(data_dir, epochs=1), Path("run"))
    with pytest.raises(ConfigError, match=rf"--{flag} .* conflicts with run/last\.pt .* only --epochs"):
        resume_run(Path("run/last.pt"), {flag: value, "epochs": 2})


def test_resuming_a_finished_run_asks_for_more_epochs(data_dir: Path) -> None:
    train(small_config(data_dir, epochs=2), Path("run"))
    with pytest.raises(ConfigError, match=r"already has 2 epochs; pass --epochs N with N > 2"):
        resume_run(Path("run/last.pt"), {})


def test_resume_from_the_command_line_appends_to_the_same_run(data_dir: Path) -> None:
    common = ["--data-dir", str(data_dir), "--hidden", "16", "--batch-size", "16", "--threads", "1"]
    assert runner.invoke(app, ["train", *common, "--epochs", "1", "--out", "run"]).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", "run/last.pt", "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert len(Path("run/metrics.jsonl").read_text().splitlines()) == 3
    assert load_checkpoint(Path("run/last.pt")).epoch == 3
    refused = runner.invoke(app, ["train", "--resume", "run/last.pt", "--epochs", "4", "--out", "elsewhere"])
    assert refused.exit_code == 1 and "leave out --config and --out" in refused.stderr


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_intact(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train(small_config(data_dir, epochs=1), Path("run"))
    before = Path("run/last.pt").read_bytes()

    def save_half_then_fail(obj: object, file) -> None:
        file.write(before[: len(before) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", save_half_then_fail)
    with pytest.raises(CheckpointError, match=r"run/last\.pt: cannot save checkpoint \(No space left on device\)"):
        save_checkpoint(load_checkpoint(Path("run/last.pt")), Path("run/last.pt"))
    assert Path("run/last.pt").read_bytes() == before
    assert load_checkpoint(Path("run/last.pt")).epoch == 1
    assert sorted(path.name for path in Path("run").iterdir()) == ["best.pt", "config.toml", "last.pt",
                                                                   "metrics.jsonl"]


def test_a_save_refused_by_the_file_system_is_a_clear_error(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train(small_config(data_dir, epochs=1), Path("run"))
    before = Path("run/last.pt").read_bytes()

    def refuse(source: object, target: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint_module.os, "replace", refuse)
    with pytest.raises(CheckpointError, match="Permission denied"):
        save_checkpoint(load_checkpoint(Path("run/last.pt")), Path("run/last.pt"))
    assert Path("run/last.pt").read_bytes() == before
    assert not list(Path("run").glob(".*tmp"))


def test_a_huge_learning_rate_stops_at_once_naming_epoch_and_batch(data_dir: Path) -> None:
    with pytest.raises(TrainingDivergedError, match=r"NaN or infinite in epoch 1 \(detected at batch \d+\).*"
                                                    r"try a lower learning rate than --lr 1e\+30"):
        train(small_config(data_dir, lr=1e30, epochs=5), Path("run"))
    assert not Path("run/last.pt").exists()


def test_divergence_keeps_the_last_good_checkpoint(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlp_cli import training
    from mlp_cli.optim import SGD

    real_step = SGD.step
    steps = {"count": 0}

    def step_then_poison(self):
        steps["count"] += 1
        real_step(self)
        if steps["count"] == 8:  # in epoch 2 (6 batches per epoch)
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))

    monkeypatch.setattr(SGD, "step", step_then_poison)
    with pytest.raises(TrainingDivergedError, match=r"in epoch 2 .* last good checkpoint: run/last\.pt"):
        training.train(small_config(data_dir, epochs=3), Path("run"))
    assert load_checkpoint(Path("run/last.pt")).epoch == 1
    assert len(Path("run/metrics.jsonl").read_text().splitlines()) == 1


def test_divergence_from_the_command_line_is_a_one_line_error(data_dir: Path) -> None:
    result = runner.invoke(app, ["train", "--data-dir", str(data_dir), "--lr", "1e30", "--threads", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "lower learning rate" in errors[0]
    assert result.stderr.rstrip().endswith(errors[0])


def test_damaged_checkpoint_bytes_always_give_a_checkpoint_error(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    path = tmp_path / "damaged.pt"
    for size in (1, 2, 7, 64, 2048) * 40:
        path.write_bytes(torch.randint(0, 256, (size,), generator=generator, dtype=torch.uint8).numpy().tobytes())
        with pytest.raises(CheckpointError, match=r"damaged\.pt"):
            load_checkpoint(path)


def test_a_checkpoint_from_a_newer_mlp_is_refused(tmp_path: Path) -> None:
    torch.save({"format": "mlp-checkpoint", "format_version": FORMAT_VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=rf"format {FORMAT_VERSION + 1} is newer than this mlp reads "
                                              rf"\({FORMAT_VERSION}\); upgrade mlp"):
        load_checkpoint(tmp_path / "future.pt")


def test_an_explicit_out_holding_a_run_needs_overwrite(data_dir: Path) -> None:
    train(small_config(data_dir, epochs=1), Path("run"))
    with pytest.raises(MlpError, match="pass --overwrite"):
        train(small_config(data_dir, epochs=2), Path("run"))
    train(small_config(data_dir, epochs=2), Path("run"), overwrite=True)
    assert load_checkpoint(Path("run/last.pt")).epoch == 2
    assert len(Path("run/metrics.jsonl").read_text().splitlines()) == 2


def test_a_download_cut_off_halfway_leaves_nothing_a_later_run_would_trust(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def partial_fetch(spec: object, root: Path) -> None:
        write_dataset(root / "FashionMNIST" / "raw", compress=True)
        path = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:100])
        raise OSError("connection reset by peer")

    monkeypatch.setattr("mlp_cli.data.fetch_with_torchvision", partial_fetch)
    spec = DATASETS["fashion-mnist"]
    with pytest.raises(DataError, match="the download failed"):
        find_dataset_dir(spec, None, tmp_path / "cache", [], download=True)
    with pytest.raises(DataError, match="not found"):
        find_dataset_dir(spec, None, tmp_path / "cache", [], download=False)


def test_a_corrupt_download_is_not_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def corrupt_fetch(spec: object, root: Path) -> None:
        raw = write_dataset(root / "FashionMNIST" / "raw")
        (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")

    monkeypatch.setattr("mlp_cli.data.fetch_with_torchvision", corrupt_fetch)
    with pytest.raises(DataError, match="download failed"):
        find_dataset_dir(DATASETS["fashion-mnist"], None, tmp_path / "cache", [], download=True)
    assert not (tmp_path / "cache" / "FashionMNIST").exists()


def start_training(data_dir: Path, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "mlp_cli", "train", "--data-dir", str(data_dir), "--hidden", "16",
               "--batch-size", "4", "--epochs", "100000", "--threads", "1", "--out", str(out)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(("signal_number", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_resumable_checkpoint_and_exits_with_the_shell_code(
        tmp_path: Path, signal_number: int, exit_code: int) -> None:
    data_dir = write_dataset(tmp_path / "data")
    process = start_training(data_dir, tmp_path / "run")
    deadline = time.monotonic() + 60
    while not (tmp_path / "run" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr and "error" not in stderr  # a stop on request is no failure
    assert stderr.rstrip().splitlines()[-1].startswith("stopped in epoch ")
    assert f"resume with: mlp train --resume {tmp_path / 'run' / 'last.pt'}" in stderr
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    more = str(saved.epoch + 1)
    resumed = runner.invoke(app, ["train", "--resume", str(tmp_path / "run" / "last.pt"), "--epochs", more])
    assert resumed.exit_code == 0, resumed.output


SETTING_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                           st.text(max_size=20), st.lists(st.integers(-5, 5), max_size=3), st.dictionaries(
                               st.text(max_size=5), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*FIELD_TYPES, "dropout", "learning_rate"]), SETTING_VALUES, max_size=6))
def test_any_settings_give_a_config_or_a_config_error(values: dict) -> None:
    try:
        validate_settings(values)
    except ConfigError as err:
        assert "\n" not in str(err)


FLAG_VALUES = {
    "--impl": st.sampled_from(["scratch", "concise", "Scratch", "", "mlp"]),
    "--hidden": st.one_of(st.lists(st.integers(-2, 12), min_size=0, max_size=3).map(
        lambda sizes: ",".join(map(str, sizes))), st.text(max_size=6)),
    "--lr": st.one_of(st.sampled_from(["nan", "inf", "-1", "0", "1e-3", "abc", "1e400"]),
                      st.floats(-10, 10).map(str)),
    "--batch-size": st.one_of(st.integers(-3, 40).map(str), st.text(max_size=4)),
    "--sigma": st.one_of(st.floats(-1, 1).map(str), st.sampled_from(["nan", "-inf", "x"])),
    "--seed": st.one_of(st.integers(-5, 2**64).map(str), st.text(max_size=3)),
    "--device": st.sampled_from(["cpu", "auto", "tpu", "cuda:x", ""]),
    "--precision": st.sampled_from(["fp32", "bf16", "fp16", ""]),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(list(FLAG_VALUES)), st.none(), max_size=4).flatmap(
    lambda chosen: st.fixed_dictionaries({flag: FLAG_VALUES[flag] for flag in chosen})))
def test_any_train_flags_give_a_clean_run_or_a_clean_error(tmp_path_factory: pytest.TempPathFactory,
                                                            flags: dict) -> None:
    data_dir = write_dataset(tmp_path_factory.mktemp("data"))
    argv = ["train", "--data-dir", str(data_dir), "--epochs", "1", "--threads", "1",
            "--out", str(tmp_path_factory.mktemp("run"))]
    for flag, value in flags.items():
        argv += [flag, value]
    result = runner.invoke(app, argv)
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0])


def test_checkpoints_in_a_run_folder_are_never_left_half_written(data_dir: Path) -> None:
    train(small_config(data_dir, epochs=2), Path("run"))
    assert not [path for path in Path("run").iterdir() if path.name.startswith(".")]
    assert os.path.getsize("run/last.pt") > 0


class Killed(BaseException):
    """What a kill -9 or a second Ctrl-C does to a run: it ends at once, no handler runs."""


def kill_when_saving(monkeypatch: pytest.MonkeyPatch, name: str, epoch: int, midway: bool = False):
    """Make the run die the first time it saves name (last.pt or best.pt) at the end of epoch: before the
    write starts, or (midway) with half of the file written, as a second Ctrl-C inside the write would.

    Returns a function that brings back the real saving, for the next command (a new process in real life)."""
    from mlp_cli import trainer

    real_save, real_torch_save = trainer.save_checkpoint, checkpoint_module.torch.save
    armed = {"save": True}

    def torch_save_half(obj: dict, file) -> None:
        real_torch_save(obj, file)
        file.truncate(file.tell() // 2)
        raise Killed

    def save(state: TrainState, path: Path) -> None:
        if armed["save"] and path.name == name and state.epoch == epoch:
            armed["save"] = False
            if not midway:
                raise Killed
            monkeypatch.setattr(checkpoint_module.torch, "save", torch_save_half)
        real_save(state, path)

    monkeypatch.setattr(trainer, "save_checkpoint", save)

    def restore() -> None:
        monkeypatch.setattr(trainer, "save_checkpoint", real_save)
        monkeypatch.setattr(checkpoint_module.torch, "save", real_torch_save)

    return restore


def best_epoch_in_metrics(run_dir: Path) -> int:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(rows, key=lambda row: row["test_accuracy"])["epoch"]


def evaluated_epoch(checkpoint: str) -> int:
    result = runner.invoke(app, ["eval", checkpoint, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["epoch"]


LEARNS_EVERY_EPOCH = {"optimizer": "adam", "lr": 0.01}  # here: test accuracy rises in epochs 1 to 3


@pytest.mark.parametrize(("epoch", "midway"), [(1, False), (2, False), (2, True)],
                         ids=["killed before any best.pt", "killed between last.pt and best.pt",
                              "killed inside the best.pt write"])
def test_after_a_kill_while_saving_a_resume_makes_best_pt_the_epoch_the_metrics_call_best(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, epoch: int, midway: bool) -> None:
    restart = kill_when_saving(monkeypatch, "best.pt", epoch, midway)
    with pytest.raises(Killed):
        train(small_config(data_dir, epochs=epoch, **LEARNS_EVERY_EPOCH), Path("run"))
    restart()
    result = runner.invoke(app, ["train", "--resume", "run/last.pt"])  # nothing left to train
    assert result.exit_code == 1 and f"already has {epoch} epochs" in result.stderr
    assert load_checkpoint(Path("run/last.pt")).epoch == epoch
    assert evaluated_epoch("run/best.pt") == best_epoch_in_metrics(Path("run")) == epoch
    assert not list(Path("run").glob(".*tmp"))


def test_the_summary_after_resuming_a_run_killed_before_best_pt_names_what_best_pt_holds(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    restart = kill_when_saving(monkeypatch, "best.pt", 3)
    with pytest.raises(Killed):
        train(small_config(data_dir, epochs=3, **LEARNS_EVERY_EPOCH), Path("run"))
    restart()
    result = runner.invoke(app, ["train", "--resume", "run", "--epochs", "4"])
    assert result.exit_code == 0, result.output
    assert "resuming run/last.pt" in result.stderr
    summary_epoch = int(re.search(r"at epoch (\d+): run/best\.pt", result.stdout).group(1))
    assert evaluated_epoch("run/best.pt") == summary_epoch == best_epoch_in_metrics(Path("run"))


def test_metrics_are_never_ahead_of_the_last_checkpoint(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kill_when_saving(monkeypatch, "last.pt", 2)
    with pytest.raises(Killed):
        train(small_config(data_dir, epochs=3), Path("run"))
    assert len(Path("run/metrics.jsonl").read_text().splitlines()) == load_checkpoint(Path("run/last.pt")).epoch


def test_resuming_from_best_pt_is_refused_rather_than_overwriting_later_epochs(data_dir: Path) -> None:
    train(small_config(data_dir, epochs=2, **LEARNS_EVERY_EPOCH), Path("run"))
    Path("run/best.pt").write_bytes(Path("run/last.pt").read_bytes())  # as if epoch 1 were the best
    before = Path("run/last.pt").read_bytes()
    result = runner.invoke(app, ["train", "--resume", "run/best.pt", "--epochs", "3"])
    assert result.exit_code == 1, result.output
    assert "would overwrite run/last.pt; resume with: mlp train --resume run/last.pt" in result.stderr
    assert Path("run/last.pt").read_bytes() == before


def test_leftover_temporary_files_are_removed_by_a_resume_and_by_overwrite(data_dir: Path) -> None:
    train(small_config(data_dir, epochs=1), Path("run"))
    for name in (".last.pt.4242.tmp", ".best.pt.4242.tmp", ".metrics.jsonl.tmp", ".curves.png.tmp.png"):
        Path("run", name).write_bytes(b"left by a kill -9")
    resume_run(Path("run/last.pt"), {"epochs": 2})
    assert not [path.name for path in Path("run").iterdir() if path.name.startswith(".")]
    Path("run/.last.pt.4242.tmp").write_bytes(b"left by a kill -9")
    train(small_config(data_dir, epochs=1), Path("run"), overwrite=True)
    assert not [path.name for path in Path("run").iterdir() if path.name.startswith(".")]


def test_an_out_holding_a_run_is_refused_before_any_of_its_files_is_touched(data_dir: Path) -> None:
    train(small_config(data_dir, epochs=1), Path("run"))
    Path("run/.last.pt.4242.tmp").write_bytes(b"being written by that run")
    with pytest.raises(MlpError, match="pass --overwrite"):
        train(small_config(data_dir, epochs=1), Path("run"))
    assert Path("run/.last.pt.4242.tmp").read_bytes() == b"being written by that run"


def test_a_folder_holding_only_a_killed_runs_temporary_file_can_take_a_new_run(data_dir: Path) -> None:
    Path("run").mkdir()
    Path("run/.config.toml.4242.tmp").write_text("impl = ")
    train(small_config(data_dir, epochs=1), Path("run"))
    assert load_checkpoint(Path("run/last.pt")).epoch == 1


def test_a_disk_full_inside_torchs_writer_is_one_checkpoint_error_and_keeps_the_old_file(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train(small_config(data_dir, epochs=1), Path("run"))
    before = Path("run/last.pt").read_bytes()

    def fail_as_torch_does(obj: object, file) -> None:
        file.write(before[:100])
        try:
            raise OSError(28, "No space left on device")
        except OSError:  # torch's zip writer then fails on its own, with the OSError as context
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2624 vs 2518") from None

    monkeypatch.setattr(checkpoint_module.torch, "save", fail_as_torch_does)
    with pytest.raises(CheckpointError, match=r"^run/last\.pt: cannot save checkpoint \(No space left on device\)$"):
        save_checkpoint(load_checkpoint(Path("run/last.pt")), Path("run/last.pt"))
    assert Path("run/last.pt").read_bytes() == before
    assert not list(Path("run").glob(".*tmp"))


def run_with_file_size_limit(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """mlp run as `ulimit -f 0` would: every write of a byte fails with EFBIG (as on a full disk)."""
    import resource

    def no_file_writes() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    # as from a shell: without the cache folder that torch, once imported here, put in the environment
    env = {key: value for key, value in os.environ.items() if key != "TORCHINDUCTOR_CACHE_DIR"}
    return subprocess.run([sys.executable, "-m", "mlp_cli", *argv], cwd=cwd, capture_output=True, text=True,
                          preexec_fn=no_file_writes, timeout=120, env={**env, "PYTHONDONTWRITEBYTECODE": "1"})


def assert_one_error_line(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    assert all(fragment in lines[0] for fragment in fragments), stderr


def test_a_new_run_that_cannot_write_is_one_line_and_leaves_nothing_that_blocks_its_folder(
        tmp_path: Path, data_dir: Path) -> None:
    argv = ["train", "--data-dir", str(data_dir), "--hidden", "8", "--epochs", "1", "--threads", "1", "-q"]
    failed = run_with_file_size_limit([*argv, "--out", "run"], tmp_path)
    assert failed.returncode == 1
    assert_one_error_line(failed.stderr, "run", "File too large")
    assert not Path("run/config.toml").exists()
    failed = run_with_file_size_limit(argv, tmp_path)  # a runs/DATE folder is not left behind either
    assert failed.returncode == 1 and not list(Path("runs").iterdir())
    assert runner.invoke(app, [*argv, "--out", "run"]).exit_code == 0
    before = Path("run/config.toml").read_text()
    resumed = run_with_file_size_limit(["train", "--resume", "run/last.pt", "--epochs", "2"], tmp_path)
    assert resumed.returncode == 1
    assert_one_error_line(resumed.stderr)  # torch itself finds no writable temporary folder first
    assert Path("run/config.toml").read_text() == before


def test_a_resume_that_cannot_rewrite_the_config_is_one_line_and_keeps_it(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlp_cli import runs

    train(small_config(data_dir, epochs=1), Path("run"))
    before = Path("run/config.toml").read_text()

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs.os, "fsync", disk_full)
    result = runner.invoke(app, ["train", "--resume", "run", "--epochs", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == (
        "error: run/config.toml: cannot write the run's config (No space left on device)")
    assert Path("run/config.toml").read_text() == before
    assert not list(Path("run").glob(".*tmp"))


def test_a_read_only_out_folder_is_one_line(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlp_cli import runs

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(args[0]))

    monkeypatch.setattr(runs, "open", refuse, raising=False)  # as a chmod would (these tests may run as root)
    result = runner.invoke(app, ["train", "--data-dir", str(data_dir), "--epochs", "1", "--out", "run"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == "error: run: cannot create a run folder there (Permission denied)"


def test_two_runs_cannot_both_claim_one_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlp_cli import runs

    real_prepare = runs.prepare_out_folder

    def other_run_claims_it_meanwhile(out: Path, overwrite: bool) -> None:
        real_prepare(out, overwrite)  # the folder was empty when checked ...
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text('impl = "concise"\n')  # ... and another run wrote its config since

    monkeypatch.setattr(runs, "prepare_out_folder", other_run_claims_it_meanwhile)
    with pytest.raises(MlpError, match="another run claimed this folder"):
        runs.create_run_dir(Path("run"), "scratch", 'impl = "scratch"\n')
    assert Path("run/config.toml").read_text() == 'impl = "concise"\n'


def crafted(checkpoint: dict, key: str, value: object) -> dict:
    """checkpoint with one key (a dotted path such as rng.torch or metrics.0.train_loss) set to value."""
    *parents, last = [int(part) if part.isdigit() else part for part in key.split(".")]
    target = checkpoint
    for parent in parents:
        target = target[parent]
    target[last] = value
    return checkpoint


CRAFTED = {
    "metrics not rows": ("metrics", [1, 2]),
    "progress not a table": ("progress", 1),
    "progress with damaged per-rank sums": ("progress", {
        "order_state": torch.Generator().get_state(), "batches_done": 1, "samples_done": 4,
        "loss_sum": torch.tensor(1.0), "correct": torch.tensor(1), "seconds": 0.1, "by_rank": [1, 2]}),
    "epoch a string": ("epoch", "2"),
    "epoch negative": ("epoch", -1),
    "too few class names": ("architecture.class_names", ["T-shirt"]),
    "format version 0": ("format_version", 0),
    "format version -1": ("format_version", -1),
    "damaged torch rng": ("rng.torch", torch.zeros(3)),
    "damaged data-order rng": ("rng.data_order", "state"),
    "optimizer state of the wrong shape": ("optimizer_state.state", {0: {"momentum_buffer": torch.zeros(3)}}),
    "optimizer setting a string": ("optimizer_state.param_groups.0.momentum", "0.9"),
    "optimizer without groups": ("optimizer_state", {"state": {}}),
    "weights of another model": ("model_state.W1", torch.zeros(2, 2)),
    "a huge model claimed": ("config.hidden", [300000]),
    "a metrics row with a string": ("metrics.0.train_loss", "low"),
}


@pytest.fixture
def trained_run(data_dir: Path) -> dict:
    """A run of two epochs with momentum (so the optimizer has per-parameter state), and its raw last.pt."""
    train(small_config(data_dir, epochs=2, optimizer="momentum"), Path("run"))
    return torch.load("run/last.pt", weights_only=True)


@pytest.mark.parametrize("case", CRAFTED)
def test_a_crafted_checkpoint_of_plausible_keys_is_one_line_for_eval_predict_and_resume(
        trained_run: dict, data_dir: Path, case: str) -> None:
    Path("crafted").mkdir()
    torch.save(crafted(trained_run, *CRAFTED[case]), "crafted/last.pt")
    Image.new("L", (28, 28)).save("image.png")
    for argv in (["eval", "crafted/last.pt", "--data-dir", str(data_dir)],
                 ["predict", "crafted/last.pt", "image.png"],
                 ["train", "--resume", "crafted/last.pt", "--epochs", "3"]):
        if argv[0] != "train" and case.startswith("optimizer"):
            continue  # eval and predict do not use the optimizer's state
        result = runner.invoke(app, argv)
        assert result.exit_code == 1, (argv, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (argv, repr(result.exception))
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: crafted/last.pt: "), (argv, result.stderr)


def test_a_huge_model_claimed_by_a_small_checkpoint_is_refused_before_it_is_built(
        trained_run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlp_cli import checkpoint

    built = []
    monkeypatch.setattr(checkpoint, "model_for", lambda *args: built.append(args))
    torch.save(crafted(trained_run, "config.hidden", [300000]), "huge.pt")
    with pytest.raises(CheckpointError, match=r"W1 has shape \(784, 32\) but the stored config describes "
                                              r"\(784, 300000\)"):
        checkpoint.restore_model(load_checkpoint(Path("huge.pt")), Path("huge.pt"))
    assert built == []  # refused from the shapes alone: no 2.3 GB model was allocated


def test_a_metrics_row_without_an_optional_field_still_evaluates(trained_run: dict, data_dir: Path) -> None:
    del trained_run["metrics"][1]["test_accuracy"]
    torch.save(trained_run, "older.pt")
    result = runner.invoke(app, ["eval", "older.pt", "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["recorded_accuracy"] is None
