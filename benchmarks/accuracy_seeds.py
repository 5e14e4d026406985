"""Final and best test accuracy of `mlp train` (D2L defaults) over several seeds, on the real data.

SGD at lr 0.1 ends 10 epochs with a test accuracy that moves by about a point from one data order to
the next; this prints the spread, so that one lucky or unlucky seed is not mistaken for the model's level.
With --pipeline torchvision it trains the same models the tutorial way (torchvision's FashionMNIST with
ToTensor and a shuffling DataLoader, as D2L's Trainer does), to compare like with like.

    .venv/bin/python benchmarks/accuracy_seeds.py --seeds 0 1 2 3 4 [--pipeline torchvision] [--json FILE]
    .venv/bin/python benchmarks/accuracy_seeds.py --config configs/best-fashion.toml --seeds 0 1 2

With --config, each seed's wall time is printed too, and for a config with a validation split the accuracy is
that of best.pt (the epoch chosen on validation) on the test split.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_epoch import torchvision_root
from torch.nn import functional

from mlp_cli.config import IMPLS, Config, load_config
from mlp_cli.data import DATASETS, default_cache_dir, find_dataset_dir
from mlp_cli.evaluation import evaluate_checkpoint
from mlp_cli.models import build_model
from mlp_cli.training import train


def train_tutorial_way(impl: str, seed: int, root: Path) -> list[float]:
    """Test accuracy per epoch of D2L's procedure on torchvision's per-sample pipeline."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import FashionMNIST
    from torchvision.transforms import ToTensor

    config = Config(impl=impl, seed=seed)
    torch.manual_seed(seed)
    model = build_model(impl, 784, config.hidden, 10, config.sigma)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    train_loader = DataLoader(FashionMNIST(str(root), train=True, transform=ToTensor()),
                              batch_size=config.batch_size, shuffle=True)
    test_loader = DataLoader(FashionMNIST(str(root), train=False, transform=ToTensor()),
                             batch_size=config.batch_size)
    accuracies = []
    for _ in range(config.epochs):
        for images, labels in train_loader:
            loss = functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            correct = sum((model(images).argmax(1) == labels).sum().item() for images, labels in test_loader)
        accuracies.append(correct / len(test_loader.dataset))
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--pipeline", choices=["mlp", "torchvision"], default="mlp")
    parser.add_argument("--config", type=Path, help="train this config (its impl) instead of the defaults")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results = {}
    spec = DATASETS["fashion-mnist"]
    folder = find_dataset_dir(spec, None, default_cache_dir())
    root = torchvision_root(folder, Path(tempfile.mkdtemp())) if args.pipeline != "mlp" else None
    impls = [load_config(args.config).impl] if args.config else args.impls
    with tempfile.TemporaryDirectory() as runs:
        for impl in impls:
            rows = []
            for seed in args.seeds:
                started = time.perf_counter()
                if root is None:
                    config = load_config(args.config, {"impl": impl, "seed": seed})
                    run = train(config, Path(runs) / f"{impl}-{seed}")
                    accuracies = [row.test_accuracy for row in run.history if row.test_accuracy is not None]
                    # with a validation split, the model that counts is the one it chose: best.pt, on the test split
                    final = evaluate_checkpoint(run.best_checkpoint).accuracy if config.val_size else accuracies[-1]
                else:
                    accuracies = train_tutorial_way(impl, seed, root)
                    final = accuracies[-1]
                seconds = time.perf_counter() - started
                rows.append({"seed": seed, "final": final, "best": max(accuracies), "seconds": seconds})
                print(f"{args.pipeline:11} {impl:8} seed {seed}: final test acc {final:.4f}, "
                      f"best {max(accuracies):.4f}, {seconds:.0f} s", flush=True)
            finals = [row["final"] for row in rows]
            summary = {"mean_final": statistics.mean(finals), "min_final": min(finals), "max_final": max(finals),
                       "stdev_final": statistics.stdev(finals) if len(finals) > 1 else 0.0}
            print(f"{args.pipeline:11} {impl:8} final test accuracy over {len(finals)} seeds: "
                  f"mean {summary['mean_final']:.4f} (sd {summary['stdev_final']:.4f}), "
                  f"min {summary['min_final']:.4f}, max {summary['max_final']:.4f}")
            results[impl] = {"runs": rows, **summary}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
