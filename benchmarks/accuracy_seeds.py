"""Final and best test accuracy of `mlp train` (D2L defaults) over several seeds, on the real data.

SGD at lr 0.1 ends 10 epochs with a test accuracy that moves by about a point from one data order to
the next; this prints the spread, so that one lucky or unlucky seed is not mistaken for the model's level.
With --pipeline torchvision it trains the same models the tutorial way (torchvision's FashionMNIST with
ToTensor and a shuffling DataLoader, as D2L's Trainer does), to compare like with like.

    .venv/bin/python benchmarks/accuracy_seeds.py --seeds 0 1 2 3 4 [--pipeline torchvision] [--json FILE]
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from bench_epoch import torchvision_root
from torch.nn import functional

from mlp_cli.config import IMPLS, Config, load_config
from mlp_cli.data import DATASETS, default_cache_dir, find_dataset_dir
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
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results = {}
    spec = DATASETS["fashion-mnist"]
    folder = find_dataset_dir(spec, None, default_cache_dir())
    root = torchvision_root(folder, Path(tempfile.mkdtemp())) if args.pipeline != "mlp" else None
    with tempfile.TemporaryDirectory() as runs:
        for impl in args.impls:
            rows = []
            for seed in args.seeds:
                if root is None:
                    history = train(load_config(None, {"impl": impl, "seed": seed}), Path(runs) / f"{impl}-{seed}")
                    accuracies = [row.test_accuracy for row in history.history]
                else:
                    accuracies = train_tutorial_way(impl, seed, root)
                rows.append({"seed": seed, "final": accuracies[-1], "best": max(accuracies)})
                print(f"{args.pipeline:11} {impl:8} seed {seed}: final test acc {accuracies[-1]:.4f}, "
                      f"best {max(accuracies):.4f}", flush=True)
            finals = [row["final"] for row in rows]
            summary = {"mean_final": statistics.mean(finals), "min_final": min(finals), "max_final": max(finals)}
            print(f"{args.pipeline:11} {impl:8} final test accuracy over {len(finals)} seeds: "
                  f"mean {summary['mean_final']:.4f}, min {summary['min_final']:.4f}, max {summary['max_final']:.4f}")
            results[impl] = {"runs": rows, **summary}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
