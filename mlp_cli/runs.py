"""Run folders on disk: making a new one, and summarising old ones from config.toml and metrics.jsonl.

No torch here, so `mlp runs` answers at once.
"""

import contextlib
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlp_cli.config import Config, config_to_dict, is_int, is_number, read_toml, validate_settings
from mlp_cli.errors import MlpError
from mlp_cli.events import EpochMetrics

RUNS_ROOT = Path("runs")
CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
# what writes interrupted by a kill leave behind: .last.pt.PID.tmp, .config.toml.PID.tmp, .curves.png.tmp.png, ...
TEMPORARY_PATTERNS = (".config.toml.*tmp", ".metrics.jsonl.*tmp", ".last.pt.*tmp", ".best.pt.*tmp", ".curves.png.tmp*")
MAX_SAME_NAME = 1000  # runs started in the same second get -2, -3, ...

DEFAULT_SETTINGS = config_to_dict(Config())


@dataclass(frozen=True)
class RunSummary:
    """One run folder as `mlp runs` lists it; a damaged folder has its problem and no numbers."""

    path: str
    name: str  # the folder's path relative to the folder listed: what tells runs apart
    impl: str | None
    dataset: str | None
    hidden: list[int] | None
    epochs_done: int
    epochs_planned: int | None
    best_test_accuracy: float | None
    best_epoch: int | None
    updated: str  # ISO time of the latest metrics row (or of the config if none)
    settings: dict[str, Any] = field(default_factory=dict)  # every setting of config.toml, defaults filled in
    problem: str | None = None  # why the folder could not be read (config.toml or metrics.jsonl damaged)


def check_metrics_row(row: Any) -> str | None:
    """What is wrong with one metrics.jsonl row, or None if it can be listed and plotted."""
    if not isinstance(row, dict):
        return f"a row is {type(row).__name__}, expected an object"
    epoch = row.get("epoch")
    if not is_int(epoch) or epoch < 1:
        return f"a row has epoch {epoch!r}, expected an integer >= 1"
    for column in dataclasses.fields(EpochMetrics)[1:]:  # after epoch
        value = row.get(column.name)
        if column.default is dataclasses.MISSING and not is_number(value):  # measured every epoch
            return f"epoch {epoch} has {column.name} {value!r}, expected a number"
        if value is not None and not is_number(value):
            return f"epoch {epoch} has {column.name} {value!r}, expected a number or null"
    return None


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of run_dir/metrics.jsonl, one per epoch (none if the run has not finished an epoch).

    Each row is checked, so that a listing or a plot never meets a row it cannot use.

    Raises:
        MlpError: the file cannot be read, is not JSON lines, or a row lacks its epoch or metrics.
    """
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    try:
        lines = path.read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as err:
        raise MlpError(f"{path}: cannot read the metrics ({err})") from err
    for number, row in enumerate(rows, start=1):
        problem = check_metrics_row(row)
        if problem:
            raise MlpError(f"{path}: row {number}: {problem}")
    return rows


def write_metrics(run_dir: Path, history: list[EpochMetrics]) -> None:
    """Rewrite metrics.jsonl from the history, atomically: after a resume it matches the checkpoint exactly.

    Raises:
        MlpError: the folder is not writable or the disk is full.
    """
    path = run_dir / METRICS_FILE
    try:
        write_text_atomically(path, "".join(json.dumps(dataclasses.asdict(row)) + "\n" for row in history))
    except OSError as err:
        raise MlpError(f"{path}: cannot write metrics ({err.strerror or err})") from err


def read_run_settings(run_dir: Path) -> dict[str, Any]:
    """run_dir's config.toml, validated as `mlp train --config` would, as plain values with defaults filled in.

    Raises:
        MlpError: the file is missing, not TOML, or holds a setting that is unknown, mistyped or out of range.
    """
    config_path = run_dir / CONFIG_FILE
    table = read_toml(config_path)
    if not table:
        raise MlpError(f"{config_path}: empty config (the run's settings are lost)")
    return config_to_dict(validate_settings(table, {key: f"{config_path}: {key}" for key in table}))


def summarize_run(run_dir: Path, root: Path | None = None) -> RunSummary | None:
    """A summary of run_dir, or None if it is not a run folder (no config.toml).

    A damaged folder gets a summary with its problem, so that it is listed (and explained), never hidden.
    """
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        return None
    name = str(run_dir.relative_to(root)) if root is not None else str(run_dir)
    try:
        settings = read_run_settings(run_dir)
        rows = read_metrics(run_dir)
    except MlpError as err:
        return RunSummary(path=str(run_dir), name=name, impl=None, dataset=None, hidden=None, epochs_done=0,
                          epochs_planned=None, best_test_accuracy=None, best_epoch=None,
                          updated=modified(config_path), problem=str(err))
    scored = [row for row in rows if is_number(row.get("test_accuracy")) and math.isfinite(row["test_accuracy"])]
    best = max(scored, key=lambda row: row["test_accuracy"]) if scored else None
    return RunSummary(
        path=str(run_dir), name=name, impl=settings["impl"], dataset=settings["dataset"], hidden=settings["hidden"],
        epochs_done=len(rows), epochs_planned=settings["epochs"],
        best_test_accuracy=best["test_accuracy"] if best else None, best_epoch=best["epoch"] if best else None,
        updated=modified(run_dir / METRICS_FILE if rows else config_path), settings=settings,
    )


def modified(path: Path) -> str:
    """path's modification time in ISO format (seconds), or "?" if it vanished meanwhile."""
    try:
        return datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
    except OSError:
        return "?"


def list_runs(root: Path) -> list[RunSummary]:
    """Every run folder directly under root, newest first; damaged ones too, each with its problem.

    Raises:
        MlpError: root is not a folder.
    """
    if not root.is_dir():
        raise MlpError(f"{root}: no such folder of runs (train first, or pass the folder that holds them)")
    summaries = [summary for path in root.iterdir() if path.is_dir() and (summary := summarize_run(path, root))]
    return sorted(summaries, key=lambda summary: summary.updated, reverse=True)


def differing_settings(runs: list[RunSummary]) -> list[str]:
    """The settings whose values are not the same in every readable run: what tells the runs apart.

    epochs is left out: `mlp runs` shows it in its own column, as epochs done out of planned.
    """
    readable = [run for run in runs if run.problem is None]
    return [key for key in DEFAULT_SETTINGS
            if key != "epochs" and len({json.dumps(run.settings.get(key)) for run in readable}) > 1]


def non_default_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings whose value is not Config's default, in Config's order: what makes a run this run."""
    return {key: value for key, value in settings.items()
            if key in DEFAULT_SETTINGS and value != DEFAULT_SETTINGS[key]}


def setting_text(value: Any) -> str:
    """A setting's value as a person would type it after its flag (256,128 for a list; - for none)."""
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def find_run_dirs(folder: Path) -> list[Path]:
    """folder itself if it is a run folder, else the run folders directly inside it (by name)."""
    if not folder.is_dir() or (folder / METRICS_FILE).exists() or (folder / CONFIG_FILE).exists():
        return [folder]
    inside = sorted(path for path in folder.iterdir()
                    if path.is_dir() and ((path / METRICS_FILE).exists() or (path / CONFIG_FILE).exists()))
    return inside or [folder]


def create_run_dir(out: Path | None, impl: str, config_text: str, overwrite: bool = False) -> Path:
    """A new run folder holding config_text as its config.toml: out if given, else runs/DATE-TIME-IMPL.

    Writing config.toml claims the folder: it appears complete or not at all, and only if no run holds the
    folder, so two runs started at once can never both claim it. Leftover temporary files of a run killed
    while saving are removed. overwrite allows an explicit out that holds a run: its run files are removed first.

    Raises:
        MlpError: out already holds files (and overwrite is off), or the folder or its config cannot be written.
    """
    try:
        if out is None:
            run_dir = make_new_folder(impl)
        else:
            run_dir = out
            prepare_out_folder(out, overwrite)
            out.mkdir(parents=True, exist_ok=True)
        try:
            write_text_atomically(run_dir / CONFIG_FILE, config_text, exclusive=True)
        except FileExistsError as err:
            raise MlpError(f"--out {out}: another run claimed this folder just now; choose a new folder") from err
        except OSError:
            if out is None:  # the folder was made for this run: leave nothing behind
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
            raise
    except OSError as err:
        raise MlpError(f"{out or RUNS_ROOT}: cannot create a run folder there ({err.strerror or err})") from err
    return run_dir


def prepare_out_folder(out: Path, overwrite: bool) -> None:
    """Check that out may receive a new run (it holds no run files, or overwrite is on) and clear it for one."""
    if out.exists() and not out.is_dir():
        raise MlpError(f"--out {out}: is a file, expected a folder for the run")
    if not out.exists():
        return
    # what a killed run's writes left does not make a folder a run (and is checked before anything is deleted)
    if any(not is_temporary(path) for path in out.iterdir()):
        if not overwrite:
            raise MlpError(f"--out {out}: already exists and is not empty; runs are never overwritten: "
                           "choose a new folder, or pass --overwrite to replace that run")
        for name in (CONFIG_FILE, METRICS_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT):
            (out / name).unlink(missing_ok=True)
    remove_temporary_files(out)


def make_new_folder(impl: str) -> Path:
    """A folder runs/DATE-TIME-IMPL that did not exist: mkdir fails for a name another run took first."""
    stem = f"{datetime.now():%Y%m%d-%H%M%S}-{impl}"
    RUNS_ROOT.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, MAX_SAME_NAME):
        run_dir = RUNS_ROOT / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise MlpError(f"{RUNS_ROOT}: too many runs named {stem}-*")


def is_temporary(path: Path) -> bool:
    """Whether path is one of the temporary files (.NAME.PID.tmp) that a write makes before its file is replaced."""
    return any(path.match(pattern) for pattern in TEMPORARY_PATTERNS)


def remove_temporary_files(run_dir: Path) -> None:
    """Delete the temporary files that a run killed while writing left in run_dir."""
    for path in run_dir.iterdir():
        if is_temporary(path):
            with contextlib.suppress(OSError):
                path.unlink()


def write_text_atomically(path: Path, text: str, exclusive: bool = False) -> None:
    """Write text to path through a synced temporary file, so path never holds a part of it.

    exclusive: fail with FileExistsError if path exists. The complete file is hard-linked into place, which
    fails if the name is taken: the check and the write are one step. Where the file system has no hard
    links, an empty file created with O_EXCL claims the name first and the text then replaces it.

    Raises:
        OSError: the folder is not writable, the disk is full, the file is too large, ...
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as file:  # TOML and JSON lines are UTF-8
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if not exclusive:
            os.replace(temporary, path)
            return
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise  # the name is taken: that is the answer
        except OSError:  # no hard links here (e.g. FAT, some network shares)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
