"""Run folders on disk: making a new one, and summarising old ones from config.toml and metrics.jsonl.

No torch here, so `mlp runs` answers at once.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mlp_cli.config import read_toml
from mlp_cli.errors import MlpError

RUNS_ROOT = Path("runs")
CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


@dataclass(frozen=True)
class RunSummary:
    path: str
    impl: str
    dataset: str
    hidden: list[int]
    epochs_done: int
    epochs_planned: int
    best_test_accuracy: float | None
    best_epoch: int | None
    updated: str  # ISO time of the latest metrics row (or of the config if none)


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of run_dir/metrics.jsonl, one per epoch (none if the run has not finished an epoch).

    Raises:
        MlpError: the file cannot be read or is not JSON lines.
    """
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise MlpError(f"{path}: cannot read the metrics ({err})") from err


def summarize_run(run_dir: Path) -> RunSummary | None:
    """A summary of run_dir, or None if it is not a run folder (no config.toml)."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        config = read_toml(config_path)
        rows = read_metrics(run_dir)
    except MlpError:
        return None  # a damaged or foreign folder is not listed rather than stopping the listing
    scored = [row for row in rows if row.get("test_accuracy") is not None]
    best = max(scored, key=lambda row: row["test_accuracy"]) if scored else None
    newest = run_dir / METRICS_FILE if rows else config_path
    return RunSummary(
        path=str(run_dir), impl=str(config.get("impl", "?")), dataset=str(config.get("dataset", "?")),
        hidden=list(config.get("hidden", [])), epochs_done=len(rows), epochs_planned=int(config.get("epochs", 0)),
        best_test_accuracy=best["test_accuracy"] if best else None, best_epoch=best["epoch"] if best else None,
        updated=datetime.fromtimestamp(newest.stat().st_mtime).isoformat(timespec="seconds"),
    )


def list_runs(root: Path) -> list[RunSummary]:
    """Every run folder directly under root, newest first.

    Raises:
        MlpError: root is not a folder.
    """
    if not root.is_dir():
        raise MlpError(f"{root}: no such folder of runs (train first, or pass the folder that holds them)")
    summaries = [summary for path in root.iterdir() if path.is_dir() and (summary := summarize_run(path))]
    return sorted(summaries, key=lambda summary: summary.updated, reverse=True)


def create_run_dir(out: Path | None, impl: str, overwrite: bool = False) -> Path:
    """A new, empty run folder: out if given, else runs/DATE-TIME-IMPL (never an existing run's folder).

    overwrite allows an explicit out that holds a run: its run files are removed first.

    Raises:
        MlpError: out already holds files (and overwrite is off), or cannot be created.
    """
    try:
        if out is not None:
            if out.exists() and not out.is_dir():
                raise MlpError(f"--out {out}: is a file, expected a folder for the run")
            if out.exists() and any(out.iterdir()):
                if not overwrite:
                    raise MlpError(f"--out {out}: already exists and is not empty; runs are never overwritten: "
                                   "choose a new folder, or pass --overwrite to replace that run")
                for name in (CONFIG_FILE, METRICS_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT):
                    (out / name).unlink(missing_ok=True)
            out.mkdir(parents=True, exist_ok=True)
            return out
        stem = f"{datetime.now():%Y%m%d-%H%M%S}-{impl}"
        RUNS_ROOT.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            run_dir = RUNS_ROOT / (stem if attempt == 1 else f"{stem}-{attempt}")
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                continue
    except OSError as err:
        raise MlpError(f"cannot create a run folder ({err})") from err
    raise MlpError(f"{RUNS_ROOT}: too many runs named {stem}-*")
