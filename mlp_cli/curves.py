"""RUN/curves.png kept current without slowing training: a separate process draws the newest metrics.

A matplotlib drawing costs a few tenths of a second of Python, as long as a small epoch, and in a thread it
would hold the GIL the training loop needs. So the training process only sends the metrics rows, one JSON line
at most every MIN_SECONDS_BETWEEN_DRAWINGS, to `python -m mlp_cli.curves`, which draws them into a temporary
file and moves it into place (never half-written). The last rows are always sent when training ends, however
it ends. A run that finishes waits for the drawer; a run stopped by Ctrl-C or SIGTERM, or ended by an error, does
not: the drawer, in a session of its own, draws the last rows and exits by itself. A stop must never wait on a
picture (torchrun kills a worker that has not stopped 30 s after SIGTERM, before it says how to resume). A
drawing that fails is a warning on stderr, never a lost run.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, cast

from mlp_cli.errors import MlpError, os_reason

if TYPE_CHECKING:
    from mlp_cli.events import BatchProgress, EpochMetrics, TrainingPlan

MIN_SECONDS_BETWEEN_DRAWINGS = 5.0  # the picture is at most this (plus one drawing) behind the metrics
FINAL_DRAWING_TIMEOUT_SECONDS = 60.0
DRAWER_COMMAND = [sys.executable, "-m", "mlp_cli.curves"]


class CurvesReporter:
    """A Reporter that has curves.png redrawn off the training path; use it as a context manager."""

    def __init__(self, min_interval: float = MIN_SECONDS_BETWEEN_DRAWINGS) -> None:
        self.min_interval = min_interval
        self.run_dir: Path | None = None
        self.last_epoch = 0
        self.rows: list[dict] = []
        self.drawings_requested = 0
        self._drawn_rows = 0  # how many rows the last request held
        self._last_request = -float("inf")
        self._drawer: subprocess.Popen[str] | None = None
        self.last_drawer: subprocess.Popen[str] | None = None  # the drawer, still drawing perhaps, after close()

    def on_start(self, plan: "TrainingPlan") -> None:
        from mlp_cli.runs import read_metrics

        self.run_dir = Path(plan.run_dir)
        try:  # a resumed run: the epochs before this start are in the folder already
            self.rows = [row for row in read_metrics(self.run_dir) if row.get("epoch", 0) < plan.first_epoch]
        except MlpError:
            self.rows = []
        self._drawn_rows = len(self.rows)
        self.last_epoch = plan.num_epochs
        self._start_drawer()  # now, so that it has imported matplotlib by the time there is something to draw

    def on_batch(self, progress: "BatchProgress") -> None:
        self._request_if_due()

    def on_epoch(self, metrics: "EpochMetrics") -> None:
        self.rows.append(dataclasses.asdict(metrics))
        if metrics.epoch == self.last_epoch:  # drawn while the last checkpoints are written, not after
            self._request()
        else:
            self._request_if_due()

    def on_checkpoint(self, path: Path) -> None:
        """Checkpoints do not change the curves."""

    def __enter__(self) -> "CurvesReporter":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(wait=kind is None)

    def close(self, wait: bool = True) -> None:
        """Send the last rows if they are not drawn yet; wait for the drawer to finish, or leave it drawing."""
        if self.rows and len(self.rows) != self._drawn_rows:
            self._request()
        if self._drawer is None:
            return
        try:
            requests_of(self._drawer).close()
            if wait:
                self._drawer.wait(timeout=FINAL_DRAWING_TIMEOUT_SECONDS)
        except OSError:  # the drawer was gone already
            pass
        except subprocess.TimeoutExpired:
            self._drawer.kill()
        self.last_drawer, self._drawer = self._drawer, None

    def _request_if_due(self) -> None:
        new_rows = len(self.rows) != self._drawn_rows
        if new_rows and time.monotonic() - self._last_request >= self.min_interval:
            self._request()

    def _request(self) -> None:
        if self.run_dir is None:
            return
        requests = requests_of(self._start_drawer())
        try:
            requests.write(json.dumps({"run_dir": str(self.run_dir), "rows": self.rows}) + "\n")
            requests.flush()
        except OSError:  # the drawer is gone (it said why on stderr): training goes on without pictures
            return
        self.drawings_requested += 1
        self._drawn_rows, self._last_request = len(self.rows), time.monotonic()

    def _start_drawer(self) -> subprocess.Popen[str]:
        if self._drawer is None:
            # a session of its own: Ctrl-C at the terminal goes to training alone, which then asks for a last drawing
            self._drawer = subprocess.Popen(DRAWER_COMMAND, stdin=subprocess.PIPE, text=True, start_new_session=True)
        return self._drawer


def requests_of(drawer: subprocess.Popen[str]) -> IO[str]:
    """The drawer's input pipe (typeshed types Popen.stdin as optional; with stdin=PIPE it never is None)."""
    return cast(IO[str], drawer.stdin)


def draw_curves(run_dir: Path, rows: list[dict]) -> Path:
    """Draw rows into run_dir/curves.png, replacing the file in one step."""
    from mlp_cli.plots import CURVES_FILE, plot_curves

    path = run_dir / CURVES_FILE
    temporary = run_dir / f".{CURVES_FILE}.tmp.png"
    try:
        plot_curves([(run_dir.name, rows)], temporary)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def warm_up() -> None:
    """Draw one picture nobody sees, while training starts: matplotlib's first drawing loads fonts and takes
    twice as long as the next ones (0.34 s against 0.15 s measured), and the first real drawing is often the
    last one, which a finished run waits for."""
    sample = {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 1.0, "test_accuracy": 0.5}
    try:
        with tempfile.TemporaryDirectory() as folder:
            draw_curves(Path(folder), [sample])
    except Exception:  # only a head start: a real drawing reports its own failure
        pass


def serve(requests: IO[str]) -> None:
    """Draw each request (a JSON line: run_dir and rows) until the input ends; warn once if drawing fails."""
    import matplotlib.backends.backend_agg  # noqa: F401  (the slow import, done while training starts)

    from mlp_cli.plots import CURVES_FILE

    warm_up()
    warned = False
    for line in requests:
        request = json.loads(line)
        try:
            draw_curves(Path(request["run_dir"]), request["rows"])
        except Exception as err:  # a picture must never cost the run: say it once, keep serving
            if not warned:
                print(f"warning: cannot draw {Path(request['run_dir']) / CURVES_FILE} ({os_reason(err)}); training "
                      "goes on",
                      file=sys.stderr, flush=True)
                warned = True


if __name__ == "__main__":
    serve(sys.stdin)
    # every picture is in place: skip the interpreter's teardown of matplotlib's objects, which took 0.2 s that a
    # finished run waits for (the drawing itself: 0.15 s)
    sys.stderr.flush()
    os._exit(0)
