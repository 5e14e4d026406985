"""A whole `mlp train` as a user runs it, against the plain PyTorch script it wraps, measured side by side.

  whole run     `mlp train --impl IMPL` (D2L defaults, 10 epochs) as a subprocess, wall clock, start-up
                included, against `python benchmarks/plain_reference.py` (imports included), once with
                torch's own threads (every core, spinning while they wait) and once with the threads mlp
                chooses (OMP_NUM_THREADS, OMP_WAIT_POLICY=PASSIVE), and mlp also with torch's threads;
                alternating, --rounds of each; medians and the ratios
  breakdown     one in-process run with timing hooks around the library's calls: training pass,
                evaluation, checkpoints, metrics file, terminal display, curve-drawing requests, the rest
  training pass mlp's Trainer.train_epoch (scratch, concise) and the plain script's loop, alternating epoch by
                epoch in this process at the same thread count; medians and ratios
  start-up      `mlp train --epochs 1` minus its epoch, against `import torch` + reading the data set
  best-fashion  configs/best-fashion.toml's seconds per epoch (--best-epochs of it) against the matrix
                products of one of its epochs (forward and backward, preallocated tensors: the floor)

    .venv/bin/python benchmarks/bench_run.py [--rounds 3] [--json results.json] [--skip-best]
"""

import argparse
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import plain_reference
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from mlp_cli import trainer, training
from mlp_cli.config import available_cores, load_config
from mlp_cli.curves import CurvesReporter
from mlp_cli.data import DataModule, load_data
from mlp_cli.events import ReporterGroup
from mlp_cli.models import model_for
from mlp_cli.reporting import RichReporter
from mlp_cli.trainer import EpochProgress, Trainer

BENCHMARKS = Path(__file__).parent
MLP = Path(sys.executable).parent / "mlp"
TRAIN_SAMPLES = 60000


def wall_seconds(command: list[str], environment: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **(environment or {})})
    return time.perf_counter() - started


def whole_runs(impl: str, rounds: int, data_dir: str | None, out: Path, threads: int) -> dict[str, float]:
    """Median (and lowest, highest) wall seconds of `mlp train --impl IMPL` and of the plain script with torch's
    own threads, run alternately with the plain script at the threads mlp chooses (threads, waiting passively)
    and mlp at torch's: the first ratio is what a user sees, the other two what mlp adds at equal threads."""
    data = [] if data_dir is None else ["--data-dir", data_dir]
    reference = [sys.executable, str(BENCHMARKS / "plain_reference.py"), *([data_dir] if data_dir else [])]
    mlps_threads = {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    # GNU OpenMP's own default when the environment names no policy: spin 300,000 times, then sleep
    torchs_threads = (["--threads", str(available_cores())], {"GOMP_SPINCOUNT": "300000"})
    times: dict[str, list[float]] = defaultdict(list)
    for index in range(rounds):
        mlp = [str(MLP), "train", "--impl", impl, *data, "--quiet", "--out"]
        times["mlp"].append(wall_seconds([*mlp, str(out / f"{impl}-{index}")]))
        times["plain"].append(wall_seconds(reference))
        times["plain, mlp's threads"].append(wall_seconds(reference, mlps_threads))
        times["mlp, torch's threads"].append(wall_seconds([*mlp, str(out / f"{impl}-{index}-torch"),
                                                           *torchs_threads[0]], torchs_threads[1]))
    medians = {name: statistics.median(values) for name, values in times.items()}
    spread = {f"{name} {which.__name__}": which(values) for name, values in times.items() for which in (min, max)}
    pairs = [mlp / plain for mlp, plain in zip(times["mlp"], times["plain"], strict=True)]  # run side by side
    return {**medians, **spread, "ratio of a pair, min": min(pairs), "ratio of a pair, max": max(pairs),
            "mlp's threads": threads, "ratio": medians["mlp"] / medians["plain"],
            "ratio at mlp's threads": medians["mlp"] / medians["plain, mlp's threads"],
            "ratio at torch's threads": medians["mlp, torch's threads"] / medians["plain"]}


def timed(buckets: dict[str, float], name: str, function: Callable) -> Callable:
    """function, adding its wall time to buckets[name]."""
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            buckets[name] += time.perf_counter() - started
    return wrapper


def breakdown(impl: str, epochs: int, data_dir: str | None, out: Path) -> dict[str, float]:
    """Seconds per epoch of each part of one in-process run, from hooks around the library's calls."""
    buckets: dict[str, float] = defaultdict(float)
    hooks = {(Trainer, "train_epoch"): "training pass", (trainer, "evaluate"): "evaluation",
             (trainer, "save_checkpoint"): "checkpoints", (trainer, "write_metrics"): "metrics file"}
    for method in ("on_start", "on_batch", "on_epoch", "on_checkpoint"):
        hooks[(RichReporter, method)] = "terminal display"
        hooks[(CurvesReporter, method)] = "curve drawing (requests)"
    originals = {key: getattr(*key) for key in hooks if hasattr(*key)}
    for (owner, name), original in originals.items():
        setattr(owner, name, timed(buckets, hooks[(owner, name)], original))
    try:
        config = load_config(None, {"impl": impl, "epochs": epochs, "data_dir": data_dir})
        screen = Console(file=io.StringIO(), force_terminal=True, width=120)  # rendered, as on a terminal
        moments = {"called": time.perf_counter()}
        with RichReporter(screen) as terminal, CurvesReporter() as curves:
            on_start = terminal.on_start  # the loop starts right after the run is described

            def mark_start(plan: object) -> None:
                moments["started"] = time.perf_counter()
                on_start(plan)

            terminal.on_start = mark_start
            training.train(config, out / f"breakdown-{impl}", ReporterGroup(terminal, curves))
            moments["trained"] = time.perf_counter()
        moments["closed"] = time.perf_counter()
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)
    # the display is called from inside the training pass: count it once, as display
    buckets["training pass"] -= buckets["terminal display"] + buckets["curve drawing (requests)"]
    parts = {name: seconds / epochs for name, seconds in buckets.items()}
    epoch = (moments["trained"] - moments["started"]) / epochs
    parts["everything else"] = epoch - sum(parts.values())
    parts["whole epoch"] = epoch
    parts["beyond training pass and evaluation"] = 1 - (parts["training pass"] + parts["evaluation"]) / epoch
    parts["once: set-up (data, model) before the first epoch"] = moments["started"] - moments["called"]
    parts["once: waiting for the last drawing"] = moments["closed"] - moments["trained"]
    return parts


def training_passes(rounds: int, data: DataModule, out: Path, threads: int) -> dict[str, float]:
    """Median seconds of one training pass (an epoch's steps, no evaluation) of mlp's Trainer, scratch and
    concise, and of the plain script's loop, alternating epoch by epoch in this process, at the thread count mlp
    chooses for the book's model (threads), so that only the loops differ."""
    torch.set_num_threads(threads)
    passes: dict[str, Callable[[int], object]] = {}
    for impl in ("scratch", "concise"):
        config = load_config(None, {"impl": impl})
        torch.manual_seed(config.seed)
        model = model_for(config, data.num_inputs, data.num_classes)
        trainer_of_impl = Trainer(config, model, data, out / f"pass-{impl}")
        passes[f"mlp {impl}"] = lambda epoch, run=trainer_of_impl: run.train_epoch(
            epoch, EpochProgress.start(run.generator, run.device))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_x, train_y = data.train_images.reshape(-1, data.num_inputs), data.train_labels
    passes["plain loop"] = lambda epoch: plain_reference.train_pass(model, optimizer, train_x, train_y)
    times: dict[str, list[float]] = defaultdict(list)
    for epoch in range(rounds + 1):  # the first round warms up
        for name, one_pass in passes.items():
            started = time.perf_counter()
            one_pass(epoch + 1)
            if epoch:
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"threads": threads, **medians, "scratch / plain loop": medians["mlp scratch"] / medians["plain loop"],
            "concise / plain loop": medians["mlp concise"] / medians["plain loop"]}


def startup(data_dir: str | None, rounds: int, out: Path) -> dict[str, float]:
    """`mlp train --epochs 1` minus its epoch, against `import torch` plus reading the data set."""
    data = [] if data_dir is None else ["--data-dir", data_dir]
    where = f"Path({data_dir!r})" if data_dir else "None"
    read = f"from pathlib import Path; from mlp_cli.data import load_data; load_data('fashion-mnist', {where})"
    times: dict[str, list[float]] = defaultdict(list)
    for index in range(rounds):
        run_dir = out / f"startup-{index}"
        times["mlp train --epochs 1"].append(wall_seconds([str(MLP), "train", *data, "--epochs", "1", "--quiet",
                                                           "--out", str(run_dir)]))
        epoch = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["seconds"]
        times["its epoch"].append(epoch)
        times["import torch + read data"].append(wall_seconds([sys.executable, "-c", f"import torch; {read}"]))
    result = {name: statistics.median(values) for name, values in times.items()}
    result["start-up"] = result["mlp train --epochs 1"] - result["its epoch"]
    return result


def matmul_floor(sizes: list[int], batch_size: int, repeats: int = 3) -> float:
    """Seconds of one epoch's matrix products of an MLP with these layer sizes, forward and backward."""
    full, rest = divmod(TRAIN_SAMPLES, batch_size)
    batches = [batch_size] * full + ([rest] if rest else [])
    weights = [torch.randn(n_in, n_out) for n_in, n_out in itertools.pairwise(sizes)]
    activations = {size: [torch.rand(size, width) for width in sizes] for size in set(batches)}

    def epoch() -> None:
        for size in batches:
            H = activations[size]
            for layer, W in enumerate(weights):
                torch.mm(H[layer], W, out=H[layer + 1])  # forward
            for layer in reversed(range(len(weights))):
                torch.mm(H[layer].T, H[layer + 1])  # dW = H^T dH
                if layer:
                    torch.mm(H[layer + 1], weights[layer].T, out=H[layer])  # dH of the layer below

    epoch()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def best_fashion(epochs: int, data_dir: str | None, out: Path) -> dict[str, float]:
    config = load_config(BENCHMARKS.parent / "configs" / "best-fashion.toml", {"epochs": epochs, "data_dir": data_dir})
    result = training.train(config, out / "best-fashion")
    per_epoch = statistics.median(row.seconds for row in result.history)
    floor = matmul_floor([784, *config.hidden, 10], config.batch_size)
    return {"seconds per epoch": per_epoch, "matmul floor": floor, "ratio": per_epoch / floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the breakdown run")
    parser.add_argument("--best-epochs", type=int, default=3)
    parser.add_argument("--pass-rounds", type=int, default=5, help="training passes of each loop, alternating")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--skip-best", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    data = load_data("fashion-mnist", Path(arguments.data_dir) if arguments.data_dir else None)  # fails early
    threads = training.configure_threads_for(load_config(None, {}), data)  # the book's model: mlp's choice
    results: dict[str, dict] = {"cpu": {"model": cpu_model(), "threads": torch.get_num_threads()}}
    console = Console()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for impl in ("scratch", "concise"):
            runs = whole_runs(impl, arguments.rounds, arguments.data_dir, out, threads)
            results[f"whole run, {impl}"] = runs
            results[f"per epoch, {impl}"] = breakdown(impl, arguments.epochs, arguments.data_dir, out)
        results["training pass"] = training_passes(arguments.pass_rounds, data, out, threads)
        results["start-up"] = startup(arguments.data_dir, arguments.rounds, out)
        if not arguments.skip_best:
            results["best-fashion.toml"] = best_fashion(arguments.best_epochs, arguments.data_dir, out)
    for title, figures in results.items():
        table = Table(title=title, title_justify="left")
        table.add_column("what")
        table.add_column("value", justify="right")
        for name, value in figures.items():
            table.add_row(name, f"{value:.3f}" if isinstance(value, float) else str(value))
        console.print(table)
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2))


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
