"""What many tests share: a small run's settings, and comparisons of two run folders, exact or approximate.

Fixtures (data_dir, the temporary working folder) are in conftest.py; scripts that tests start are in helpers/.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlp_cli.checkpoint import load_checkpoint
from mlp_cli.config import Config, load_config

# A run that takes a second on the synthetic data: 96 training images in 6 batches of 16, 3 epochs of a
# 784-32-10 MLP on one CPU thread (one thread and the CPU, so that the same seed gives the same floats, PITFALLS
# D4), seed 0. A test that needs other values passes them: small_config(data_dir, epochs=5).
SMALL = {"hidden": (32,), "batch_size": 16, "epochs": 3, "seed": 0, "device": "cpu", "threads": 1}


def small_config(data_dir: Path, **changes: object) -> Config:
    """The SMALL run on the data set in data_dir, with changes (Config's field names) on top."""
    return load_config(None, {"data_dir": str(data_dir), **SMALL, **changes})


def as_flags(data_dir: Path, **changes: object) -> list[str]:
    """The flags of small_config(data_dir, **changes) for `mlp train`: --data-dir DIR --hidden 32 ..."""
    flags = []
    for key, value in {"data_dir": data_dir, **SMALL, **changes}.items():
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        flags += [f"--{key.replace('_', '-')}", text]
    return flags


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model's parameters saved in a checkpoint, by name."""
    return load_checkpoint(checkpoint).model_state


def metric_rows(run_dir: Path) -> list[dict]:
    """The rows of run_dir/metrics.jsonl without their wall-clock seconds, which differ from run to run."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def assert_runs_identical(first: Path, second: Path) -> None:
    """Bit-equal final weights (last.pt) and equal metrics rows in two run folders.

    Only for runs whose float operations happen in the same order by construction (same process count,
    threads, device and batch shapes, e.g. a resumed run against an unbroken one): anything else may agree on
    one CPU and differ on another (PITFALLS D4, M4).
    """
    one, other = weights(first / "last.pt"), weights(second / "last.pt")
    assert one.keys() == other.keys()
    differing = [key for key in one if not torch.equal(one[key], other[key])]
    assert not differing, f"weights differ: {differing}"
    assert metric_rows(first) == metric_rows(second)


def assert_runs_close(first: Path, second: Path, tolerance: float) -> None:
    """Final weights (last.pt) and every metric number within an absolute tolerance in two run folders.

    For runs that do the same arithmetic in another order, e.g. DDP summing each rank's half-batch gradients
    where one process sums the whole batch: the rounding differs in the last bits and grows with every step
    (PITFALLS D4, M3), so the caller states a tolerance that fits its number of steps.
    """
    one, other = weights(first / "last.pt"), weights(second / "last.pt")
    assert list(one) == list(other)
    for key in one:
        torch.testing.assert_close(other[key], one[key], rtol=0, atol=tolerance)
    for row, other_row in zip(metric_rows(first), metric_rows(second), strict=True):
        assert row.keys() == other_row.keys()
        for key, value in row.items():
            assert value == pytest.approx(other_row[key], abs=tolerance), (key, row["epoch"])


# `mlp ARGUMENTS` in this interpreter's main(), then the names of every module it imported, as JSON on stderr
IMPORTS_REPORTED = """import json, sys
from mlp_cli.cli import main
sys.argv = ["mlp", *sys.argv[1:]]
try:
    main()
    code = 0
except SystemExit as stop:
    code = stop.code
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def mlp_in_a_fresh_process(*arguments: str | Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`mlp ARGUMENTS` run by a new interpreter, and the modules it had imported by the end: for the tests of what a
    command never loads (the last line of its stderr is that list)."""
    result = subprocess.run([sys.executable, "-c", IMPORTS_REPORTED, *map(str, arguments)], capture_output=True,
                            text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    return result, set(json.loads(lines[-1])) if lines else set()
