"""The plain PyTorch script `mlp train` is measured against: D2L's concise MLP in forty lines, nothing else.

60k images as one float tensor, randperm batches, nn.Sequential, torch.optim.SGD, test accuracy after every
epoch; no progress display, no checkpoints, no pictures. Imports count: run it as a whole process.

    python benchmarks/plain_reference.py [DATA_DIR] [--epochs 10]
"""

import argparse
import gzip
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional


def read_idx(folder: Path, stem: str) -> torch.Tensor:
    """An IDX file (.gz or raw) as a uint8 tensor, its header dropped."""
    path = folder / f"{stem}.gz" if (folder / f"{stem}.gz").exists() else folder / stem
    content = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    dims = content[3]
    shape = [int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return torch.frombuffer(bytearray(content[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def train_pass(model: nn.Module, optimizer: torch.optim.Optimizer, train_x: torch.Tensor,
               train_y: torch.Tensor) -> None:
    """One epoch of minibatch SGD over randperm batches of 256 (bench_run times this loop beside mlp's)."""
    model.train()
    for batch in torch.randperm(len(train_y)).split(256):
        loss = functional.cross_entropy(model(train_x[batch]), train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", nargs="?", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--epochs", type=int, default=10)
    arguments = parser.parse_args()
    torch.manual_seed(0)
    train_x = read_idx(arguments.data_dir, "train-images-idx3-ubyte").float().div_(255).reshape(-1, 784)
    train_y = read_idx(arguments.data_dir, "train-labels-idx1-ubyte").long()
    test_x = read_idx(arguments.data_dir, "t10k-images-idx3-ubyte").float().div_(255).reshape(-1, 784)
    test_y = read_idx(arguments.data_dir, "t10k-labels-idx1-ubyte").long()
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(1, arguments.epochs + 1):
        train_pass(model, optimizer, train_x, train_y)
        model.eval()
        with torch.no_grad():
            accuracy = (model(test_x).argmax(dim=1) == test_y).float().mean().item()
        print(f"epoch {epoch}: test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
