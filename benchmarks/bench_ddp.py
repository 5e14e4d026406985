"""Seconds per epoch of DDP with 2 processes x 1 thread against 1 process x 2 threads, side by side.

Both run the same `mlp train` (same seed, same global batch, so the same training) on the same cores; the
runs alternate so that a noisy neighbour hurts both alike. Seconds per epoch are the training loop's own
(metrics.jsonl "seconds", rank 0 under DDP), without start-up and evaluation; the wall time of each whole
command is printed too.

    .venv/bin/python benchmarks/bench_ddp.py [--epochs 3] [--repeats 3] [--impl scratch] [--data-dir DIR]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETUPS = {
    "1 process x 2 threads": ["--threads", "2"],
    "2 processes x 1 thread (DDP, gloo)": ["--nproc-per-node", "2", "--threads", "1"],
}


def run_training(flags: list[str], out: Path) -> tuple[list[float], float, float]:
    """Seconds of each epoch, final test accuracy and wall seconds of one `mlp train` command."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlp_cli", "train", *flags, "--out", str(out), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["seconds"] for row in rows], rows[-1]["test_accuracy"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setup, alternating")
    parser.add_argument("--impl", default="scratch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--data-dir", help="default: where mlp looks (Debian's package, the cache, ...)")
    args = parser.parse_args()
    common = ["--impl", args.impl, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
              "--device", "cpu", "--seed", "0", *(["--data-dir", args.data_dir] if args.data_dir else [])]
    epoch_seconds = {name: [] for name in SETUPS}
    walls = {name: [] for name in SETUPS}
    accuracies = {name: set() for name in SETUPS}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for index, (name, flags) in enumerate(SETUPS.items()):
                seconds, accuracy, wall = run_training(common + flags, Path(scratch) / f"{repeat}-{index}")
                epoch_seconds[name] += seconds
                walls[name].append(wall)
                accuracies[name].add(round(accuracy, 4))
                print(f"run {repeat + 1}/{args.repeats}, {name}: {statistics.median(seconds):.2f} s per epoch, "
                      f"{wall:.1f} s in all, test accuracy {accuracy:.4f}", flush=True)
    print(f"\n{args.impl}, batch {args.batch_size}, {args.epochs} epochs x {args.repeats} runs each "
          f"(median seconds per epoch of the training loop):")
    medians = {name: statistics.median(seconds) for name, seconds in epoch_seconds.items()}
    for name, median in medians.items():
        wall = statistics.median(walls[name])
        print(f"  {name:36s} {median:6.2f} s per epoch   (whole command: median {wall:.1f} s; "
              f"test accuracy {', '.join(map(str, sorted(accuracies[name])))})")
    single, ddp = medians.values()
    print(f"  DDP / single process: {ddp / single:.2f} ({'DDP' if ddp < single else 'one process'} is faster)")


if __name__ == "__main__":
    main()
