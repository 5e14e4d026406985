"""The library's front door for notebooks and scripts: `train(Config(...))` shows its progress as it goes.

training.train reports to whatever Reporter it is given and knows nothing of terminals; this wrapper picks
rich's reporter, which draws a live bar on a terminal and prints a line per epoch elsewhere (a Jupyter cell,
a log), so a notebook user sees the run advance without wiring a reporter.
"""

from pathlib import Path

from mlp_cli.config import Config
from mlp_cli.events import FitResult


def train(config: Config | None = None, out: Path | str | None = None, *, progress: bool = True,
          overwrite: bool = False) -> FitResult:
    """Train config (D2L's defaults if None) into a new run folder, showing progress unless progress=False.

    Raises:
        MlpError: the device, the data or the run folder is not usable; or training stopped early.
    """
    from rich.console import Console

    from mlp_cli.events import NULL_REPORTER
    from mlp_cli.reporting import RichReporter
    from mlp_cli.training import train as train_run

    config = Config() if config is None else config
    out = None if out is None else Path(out)
    if not progress:
        return train_run(config, out, NULL_REPORTER, overwrite=overwrite)
    with RichReporter(Console(stderr=True, highlight=False)) as reporter:
        return train_run(config, out, reporter, overwrite=overwrite)
