"""Seconds per training epoch of two checkouts of mlp, side by side: is a change to the code any slower?

Each round trains the same run (D2L's defaults on real Fashion-MNIST unless --synthetic; the rich display off)
once with each checkout, in a fresh process, alternating, so that the machine's noise falls on both alike.
The epoch times are the loop's own (EpochMetrics.seconds: the training pass, evaluation excluded).

    .venv/bin/python benchmarks/bench_versions.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 3] [--epochs 3]

e.g. `git worktree add /tmp/old HEAD~5` and compare /tmp/old with this checkout.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

RUN = """
import json, sys, tempfile
from pathlib import Path
from mlp_cli.config import load_config
from mlp_cli.training import train
settings = json.loads(sys.argv[1])
with tempfile.TemporaryDirectory() as folder:
    result = train(load_config(None, settings), Path(folder) / "run")
print(json.dumps([row.seconds for row in result.history]))
"""


def epoch_seconds(checkout: Path, settings: dict) -> list[float]:
    """The epoch times of one run of checkout's mlp, in its own process."""
    done = subprocess.run([sys.executable, "-c", RUN, json.dumps(settings)], capture_output=True, text=True,
                          check=True, cwd=checkout, env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--impl", default="scratch")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="default: where mlp finds Fashion-MNIST")
    args = parser.parse_args()
    settings = {"impl": args.impl, "epochs": args.epochs, "threads": args.threads, "device": "cpu",
                "report_every": args.epochs, "data_dir": args.data_dir}
    times: dict[str, list[float]] = {"old": [], "new": []}
    for round_number in range(1, args.rounds + 1):
        for name in ("old", "new"):
            seconds = epoch_seconds(getattr(args, name).resolve(), settings)
            times[name] += seconds[1:]  # the first epoch warms up allocators and caches
            print(f"round {round_number} {name}: " + " ".join(f"{value:.3f}" for value in seconds), flush=True)
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"\nmedian s/epoch ({args.impl}, {args.threads or 'all'} threads): old {old:.3f}  new {new:.3f}  "
          f"new/old {new / old:.3f}")


if __name__ == "__main__":
    main()
