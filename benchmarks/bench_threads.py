"""Seconds per epoch of mlp's thread choices, on an idle machine and beside a busy one.

A busy neighbour is one process spinning a Python loop on one core. Each setup is one `mlp train` command on a
synthetic data set the size of Fashion-MNIST (random pixels: the speed of an epoch does not depend on them);
the setups alternate, so that any other load on the machine hurts them alike. Seconds per epoch are the
training loop's own (metrics.jsonl "seconds"), without start-up and evaluation.

Setups: mlp's default (`--threads 0`: one thread for a small model, every core for a big one, with the passive
OpenMP wait policy the CLI sets when the environment names none), `--threads 1`, every core (passive), every
core with OMP_WAIT_POLICY=ACTIVE (OpenMP threads spin while they wait: torch's own default), and every core
with a short spin (GOMP_SPINCOUNT=10000) before sleeping.

    .venv/bin/python benchmarks/bench_threads.py [--epochs 3] [--repeats 3] [--train-count 60000] [--hidden 256]
"""

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from mlp_cli.config import available_cores

IMAGE_MAGIC, LABEL_MAGIC, SIDE, NUM_CLASSES = 0x00000803, 0x00000801, 28, 10
TEST_COUNT = 10000
CORES = available_cores()
PASSED_ENVIRONMENT = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")  # what a setup may change
SETUPS = {  # name: (flags, environment changes)
    "--threads 0 (default: mlp chooses)": (["--threads", "0"], {}),
    "--threads 1": (["--threads", "1"], {}),
    f"--threads {CORES} (every core)": (["--threads", str(CORES)], {}),
    f"--threads {CORES}, OMP_WAIT_POLICY=ACTIVE": (["--threads", str(CORES)], {"OMP_WAIT_POLICY": "ACTIVE"}),
    f"--threads {CORES}, GOMP_SPINCOUNT=10000": (["--threads", str(CORES)], {"GOMP_SPINCOUNT": "10000"}),
}
BUSY_LOOP = "while True: pass"


def write_synthetic_dataset(folder: Path, train_count: int) -> Path:
    """The four IDX files of a data set of random 28x28 images and labels."""
    generator = torch.Generator().manual_seed(0)
    for prefix, count in (("train", train_count), ("t10k", TEST_COUNT)):
        images = torch.randint(0, 256, (count, SIDE, SIDE), generator=generator, dtype=torch.uint8)
        labels = torch.randint(0, NUM_CLASSES, (count,), generator=generator, dtype=torch.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", IMAGE_MAGIC, count, SIDE, SIDE) + images.numpy().tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", LABEL_MAGIC, count) + labels.numpy().tobytes())
    return folder


def seconds_per_epoch(flags: list[str], changes: dict[str, str], out: Path) -> float:
    """The median training seconds per epoch of one `mlp train` command."""
    environment = {key: value for key, value in os.environ.items() if key not in PASSED_ENVIRONMENT}
    subprocess.run([sys.executable, "-m", "mlp_cli", "train", *flags, "--out", str(out), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL, env={**environment, **changes})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(row["seconds"] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setup and load, alternating")
    parser.add_argument("--train-count", type=int, default=60000, help="training images (Fashion-MNIST: 60000)")
    parser.add_argument("--hidden", default="256", help="hidden widths, e.g. 1024,512 (best-fashion.toml's)")
    args = parser.parse_args()
    seconds = {(load, name): [] for load in ("idle", "busy") for name in SETUPS}
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = write_synthetic_dataset(Path(scratch), args.train_count)
        common = ["--data-dir", str(data_dir), "--hidden", args.hidden, "--epochs", str(args.epochs),
                  "--device", "cpu", "--seed", "0", "--report-every", str(args.epochs)]
        for repeat in range(args.repeats):
            for load in ("idle", "busy"):
                neighbour = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if load == "busy" else None
                try:
                    for index, (name, (flags, changes)) in enumerate(SETUPS.items()):
                        value = seconds_per_epoch(common + flags, changes, Path(scratch) / f"{repeat}-{load}-{index}")
                        seconds[load, name].append(value)
                        print(f"run {repeat + 1}/{args.repeats}, {load}, {name}: {value:.2f} s per epoch", flush=True)
                finally:
                    if neighbour is not None:
                        neighbour.kill()
                        neighbour.wait()
    print(f"\n{CORES} cores, {args.train_count} training images, D2L defaults but --hidden {args.hidden}, "
          f"{args.epochs} epochs x "
          f"{args.repeats} runs each (median seconds per epoch; ratio to --threads 1 under the same load):")
    print("| setup | idle s/epoch | idle ratio | busy s/epoch | busy ratio |\n|---|---|---|---|---|")
    for name in SETUPS:
        cells = []
        for load in ("idle", "busy"):
            median, single = statistics.median(seconds[load, name]), statistics.median(seconds[load, "--threads 1"])
            cells += [f"{median:.2f}", f"{median / single:.2f}"]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
