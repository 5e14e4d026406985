"""Run folders on disk: making a new one, and summarising old ones from config.toml and metrics.jsonl.

No torch here, so `mlp runs` answers at once.
"""

import contextlib
import json
import os
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
# what writes interrupted by a kill leave behind: .last.pt.PID.tmp, .config.toml.PID.tmp, .curves.png.tmp.png, ...
TEMPORARY_PATTERNS = (".config.toml.*tmp", ".metrics.jsonl.*tmp", ".last.pt.*tmp", ".best.pt.*tmp", ".curves.png.tmp*")
MAX_SAME_NAME = 1000  # runs started in the same second get -2, -3, ...


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
