"""Per-trial overhead of `mlp sweep` against one `mlp train` process per trial, side by side.

Both train the same N runs (the default config with seeds 0..N-1, so each run does the same work): once as N
`mlp train` commands, once as one `mlp sweep --param seed=0,...` with one in-process worker. Overhead is a
run's wall time minus its training loop's own seconds (metrics.jsonl): start-up, data loading, evaluation,
checkpoints and, for the sweep, the database and the curves.

    .venv/bin/python benchmarks/bench_sweep.py [--trials 4] [--epochs 1] [--hidden 256] [--data-dir DIR]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train_seconds(run_dir: Path) -> float:
    """The training loop's own seconds of a run folder."""
    return sum(json.loads(line)["seconds"] for line in (run_dir / "metrics.jsonl").read_text().splitlines())


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlp_cli", *command, "--quiet"], check=True, cwd=cwd,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--hidden", default="256")
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    machine = ["--val-size", str(args.val_size), "--threads", str(args.threads),
               *(["--data-dir", args.data_dir] if args.data_dir else [])]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        train_overheads = []
        for seed in range(args.trials):
            flags = ["--epochs", str(args.epochs), "--hidden", args.hidden, "--seed", str(seed), *machine]
            wall = timed(["train", *flags, "--out", f"run{seed}"], work)
            train_overheads.append(wall - train_seconds(work / f"run{seed}"))
        seeds = ",".join(map(str, range(args.trials)))
        params = ["--param", f"seed={seeds}", "--param", f"epochs={args.epochs}", "--param", f"hidden={args.hidden}"]
        wall = timed(["sweep", "--name", "bench", *params, *machine], work)
        trained = sum(train_seconds(path) for path in (work / "sweeps/bench/trials").iterdir())
        shown = subprocess.run([sys.executable, "-m", "mlp_cli", "sweep", "show", "bench", "--json"], check=True,
                               cwd=work, capture_output=True, text=True)
        # a trial's own wall seconds in the worker (claim, data split, training, evaluation, files, database)
        in_worker = sorted(row["seconds"] - train_seconds(work / "sweeps/bench" / row["run_dir"])
                           for row in json.loads(shown.stdout)["trials"])
    sweep_overhead = (wall - trained) / args.trials
    mean_train = sum(train_overheads) / len(train_overheads)
    print(f"{args.trials} runs of {args.epochs} epoch(s), hidden {args.hidden}, {args.threads} thread(s)")
    print(f"mlp train, one process per run: overhead {mean_train:.2f} s per run "
          f"({', '.join(f'{value:.2f}' for value in train_overheads)})")
    print(f"mlp sweep, one worker:          overhead {sweep_overhead:.2f} s per trial "
          f"(whole sweep {wall:.1f} s, of which training {trained:.1f} s, one start-up shared by all)")
    print(f"  inside the worker, per trial beyond its training loop: {', '.join(f'{v:.2f}' for v in in_worker)} s "
          "(the first trial also pays the first-use imports)")


if __name__ == "__main__":
    main()
