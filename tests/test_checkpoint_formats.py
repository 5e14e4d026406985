"""Checkpoints written by earlier versions of mlp still evaluate and resume; new ones are in the current format.

tests/data/format1/ holds two checkpoints of format 1, written by mlp before TrainState (git 5f13e67) on the
synthetic data set of conftest.py: finished.pt (2 epochs) and stopped.pt (stopped after batch 1 of epoch 2),
with the settings and the test metrics measured when they were written in expected.json.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mlp_cli.checkpoint import FORMAT_VERSION, load_checkpoint
from mlp_cli.cli import app
from mlp_cli.config import load_config
from mlp_cli.training import resume_run, train

FORMAT_1 = Path(__file__).parent / "data" / "format1"
EXPECTED = json.loads((FORMAT_1 / "expected.json").read_text())
# written on another machine: its BLAS may add in another order, so the numbers agree up to rounding (PITFALLS M4)
TOLERANCE = 1e-5
runner = CliRunner()


def test_a_format_1_checkpoint_loads_as_the_current_state() -> None:
    state = load_checkpoint(FORMAT_1 / "finished.pt")
    assert state.epoch == EXPECTED["epoch"] == len(state.metrics)
    assert (state.architecture.num_inputs, state.architecture.num_outputs) == (784, 10)
    assert state.progress is None and state.optimizer_state is not None and state.rng is not None
    stopped = load_checkpoint(FORMAT_1 / "stopped.pt")
    assert stopped.epoch == 1 and stopped.progress is not None and stopped.progress.batches_done == 1


def test_a_format_1_checkpoint_evaluates_as_when_it_was_written(data_dir: Path) -> None:
    result = runner.invoke(app, ["eval", str(FORMAT_1 / "finished.pt"), "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["loss"] == pytest.approx(EXPECTED["test_loss"], abs=TOLERANCE)
    assert report["accuracy"] == pytest.approx(EXPECTED["test_accuracy"], abs=TOLERANCE)


def test_a_format_1_checkpoint_stopped_mid_epoch_resumes_like_an_unbroken_run(data_dir: Path) -> None:
    Path("old").mkdir()
    shutil.copy(FORMAT_1 / "stopped.pt", "old/last.pt")
    resumed = resume_run(Path("old/last.pt"), {"data_dir": str(data_dir)})
    settings = {**EXPECTED["settings"], "data_dir": str(data_dir)}
    unbroken = train(load_config(None, settings), Path("new"))
    assert [row.epoch for row in resumed.history] == [1, 2]
    for old_row, new_row in zip(resumed.history, unbroken.history, strict=True):
        assert old_row.train_loss == pytest.approx(new_row.train_loss, abs=TOLERANCE)
        assert old_row.test_accuracy == pytest.approx(new_row.test_accuracy, abs=TOLERANCE)
    old, new = load_checkpoint(Path("old/last.pt")), load_checkpoint(Path("new/last.pt"))
    for name, weights in new.model_state.items():
        torch.testing.assert_close(old.model_state[name], weights, atol=TOLERANCE, rtol=0)


def test_a_resumed_format_1_run_is_saved_in_the_current_format(data_dir: Path) -> None:
    Path("old").mkdir()
    shutil.copy(FORMAT_1 / "finished.pt", "old/last.pt")
    resume_run(Path("old/last.pt"), {"data_dir": str(data_dir), "epochs": 3})
    saved = torch.load("old/last.pt", weights_only=True)
    assert saved["format_version"] == FORMAT_VERSION and "architecture" in saved and "model" not in saved
    assert load_checkpoint(Path("old/last.pt")).epoch == 3
