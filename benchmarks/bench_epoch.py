"""Seconds per training epoch, measured side by side in one run, with D2L's defaults (784-256-10, batch 256):

  A          mlp's own epoch, through the code `mlp train` runs (train_epoch with the rich progress display)
  B          the tutorial pipeline: torchvision FashionMNIST + ToTensor + DataLoader(shuffle=True, num_workers=0)
  C_blas     only the matrix multiplications of one epoch (X W1, H W2; H^T dO, dO W2^T, X^T dH) through
             torch.addmm / torch.mm on preallocated tensors: the floor
  C_onednn   the same products through oneDNN (torch._C._nn.mkldnn_linear, a private API, used here only
             to show what the hardware can do)

Also: evaluation of the test split against a training epoch, `mlp --help` against `import torch`, and
bf16 autocast against float32 (speed and accuracy). Medians of --repeats runs; ratios come from this run only.

    .venv/bin/python benchmarks/bench_epoch.py [--synthetic] [--device cpu|cuda] [--json results.json]
"""

import argparse
import gzip
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from torch.nn import functional

from mlp_cli.config import Config, load_config
from mlp_cli.data import (
    DATASETS,
    GZIP_MAGIC,
    SPLIT_FILES,
    default_cache_dir,
    find_dataset_dir,
    find_idx_file,
    load_data,
)
from mlp_cli.devices import resolve_device
from mlp_cli.evaluation import evaluate
from mlp_cli.events import TrainingPlan
from mlp_cli.models import build_model
from mlp_cli.reporting import RichReporter
from mlp_cli.trainer import EpochProgress, Trainer
from mlp_cli.training import configure_threads_for

IDX_HEADERS = {"images": (0x00000803, 3), "labels": (0x00000801, 1)}
TRAIN_SAMPLES, TEST_SAMPLES, IMAGE_SIDE = 60000, 10000, 28


def median_seconds(run: Callable[[], object], repeats: int, synchronize: Callable[[], None]) -> float:
    """Median wall time of run() over repeats, after one untimed warm-up call."""
    run()
    synchronize()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def write_synthetic_root(root: Path) -> Path:
    """Random uint8 images and labels in Fashion-MNIST's shape, as raw IDX files in a torchvision root."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", TRAIN_SAMPLES), ("test", TEST_SAMPLES)):
        images = torch.randint(0, 256, (count, IMAGE_SIDE, IMAGE_SIDE), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (count,), dtype=torch.uint8, generator=generator)
        for stem, tensor in zip(SPLIT_FILES[split], (images, labels), strict=True):
            header = IDX_HEADERS["images" if tensor.dim() == 3 else "labels"][0].to_bytes(4, "big")
            header += b"".join(size.to_bytes(4, "big") for size in tensor.shape)
            (raw / stem).write_bytes(header + tensor.numpy().tobytes())
    return root


def torchvision_root(folder: Path, root: Path) -> Path:
    """A torchvision root (ROOT/FashionMNIST/raw, uncompressed) made from the files mlp found."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stems in SPLIT_FILES.values():
        for stem in stems:
            content = find_idx_file(folder, stem).read_bytes()
            (raw / stem).write_bytes(gzip.decompress(content) if content.startswith(GZIP_MAGIC) else content)
    return root


def measure_mlp_epoch(config: Config, data, repeats: int, synchronize) -> tuple[float, float, float]:
    """(seconds per training epoch, seconds per test evaluation, final test accuracy) of mlp's own loop."""
    torch.manual_seed(config.seed)
    model = build_model(config.impl, data.num_inputs, config.hidden, data.num_classes, config.sigma)
    model.to(data.train_labels.device)
    screen = Console(file=io.StringIO(), force_terminal=True, width=120)  # rendered, as on a terminal
    device = data.train_labels.device
    plan = TrainingPlan(config.impl, config.hidden, 0, str(device), 0, config.precision,
                        config.dataset, str(data.source), len(data.train_labels), len(data.test_labels),
                        config.batch_size, 1, repeats + 1, 0, "benchmark")
    epochs = iter(range(1, 1000))

    def epoch() -> None:
        trainer.train_epoch(next(epochs), EpochProgress.start(trainer.generator, device))

    with RichReporter(screen) as reporter:
        trainer = Trainer(config, model, data, Path("unused"), reporter)  # its loop only: nothing is saved
        reporter.on_start(plan)
        train_seconds = median_seconds(epoch, repeats, synchronize)
    eval_seconds = median_seconds(lambda: evaluate(model, data, "test", config), repeats, synchronize)
    return train_seconds, eval_seconds, evaluate(model, data, "test", config).accuracy


def measure_tutorial_epoch(config: Config, root: Path, device: torch.device, repeats: int, synchronize) -> float:
    """Seconds per epoch of the same model and optimizer fed by torchvision's per-sample pipeline."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import FashionMNIST
    from torchvision.transforms import ToTensor

    torch.manual_seed(config.seed)
    model = build_model(config.impl, 784, config.hidden, 10, config.sigma).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    loader = DataLoader(FashionMNIST(str(root), train=True, transform=ToTensor()),
                        batch_size=config.batch_size, shuffle=True, num_workers=0)

    def epoch() -> None:
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            loss = functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return median_seconds(epoch, repeats, synchronize)


def batch_sizes(config: Config) -> list[int]:
    full, rest = divmod(TRAIN_SAMPLES, config.batch_size)
    return [config.batch_size] * full + ([rest] if rest else [])


def measure_matmul_floor(config: Config, device: torch.device, repeats: int, synchronize) -> float:
    """Seconds for the five matrix products per batch of one epoch, on preallocated tensors (torch.addmm/mm)."""
    inputs, hidden, outputs = 784, config.hidden[0], 10
    tensors = {}
    for size in set(batch_sizes(config)):
        tensors[size] = [torch.rand(size, inputs, device=device), torch.empty(size, hidden, device=device),
                         torch.empty(size, outputs, device=device), torch.randn(size, outputs, device=device),
                         torch.empty(size, hidden, device=device)]
    W1, W2 = torch.randn(inputs, hidden, device=device), torch.randn(hidden, outputs, device=device)
    b1, b2 = torch.zeros(hidden, device=device), torch.zeros(outputs, device=device)
    dW1, dW2 = torch.empty_like(W1), torch.empty_like(W2)

    def epoch() -> None:
        for size in batch_sizes(config):
            X, H, O, dO, dH = tensors[size]
            torch.addmm(b1, X, W1, out=H)      # forward  X W1 + b1
            torch.addmm(b2, H, W2, out=O)      # forward  H W2 + b2
            torch.mm(H.T, dO, out=dW2)         # backward H^T dO
            torch.mm(dO, W2.T, out=dH)         # backward dO W2^T
            torch.mm(X.T, dH, out=dW1)         # backward X^T dH

    return median_seconds(epoch, repeats, synchronize)


def measure_onednn_floor(config: Config, repeats: int) -> float | None:
    """The same five products through oneDNN on CPU tensors in its own layout; None if unavailable."""
    if not torch.backends.mkldnn.is_available():
        return None
    linear = torch._C._nn.mkldnn_linear  # computes input @ weight^T + bias
    inputs, hidden, outputs = 784, config.hidden[0], 10
    W1_t, W2_t = torch.randn(hidden, inputs).to_mkldnn(), torch.randn(outputs, hidden).to_mkldnn()
    W2 = torch.randn(hidden, outputs).to_mkldnn()
    b1, b2 = torch.zeros(hidden).to_mkldnn(), torch.zeros(outputs).to_mkldnn()
    operands = {}
    for size in set(batch_sizes(config)):
        operands[size] = {
            "X": torch.rand(size, inputs).to_mkldnn(), "H": torch.rand(size, hidden).to_mkldnn(),
            "X_t": torch.rand(inputs, size).to_mkldnn(), "H_t": torch.rand(hidden, size).to_mkldnn(),
            "dO": torch.randn(size, outputs).to_mkldnn(), "dO_t": torch.randn(outputs, size).to_mkldnn(),
            "dH_t": torch.randn(hidden, size).to_mkldnn(),
        }

    def epoch() -> None:
        for size in batch_sizes(config):
            o = operands[size]
            linear(o["X"], W1_t, b1)           # X W1 + b1
            linear(o["H"], W2_t, b2)           # H W2 + b2
            linear(o["H_t"], o["dO_t"])        # H^T dO
            linear(o["dO"], W2)                # dO W2^T
            linear(o["X_t"], o["dH_t"])        # X^T dH

    return median_seconds(epoch, repeats, lambda: None)


def measure_startup(repeats: int) -> dict[str, float]:
    """Median seconds of `mlp --help` and of `python -c "import torch"`, each in a fresh process."""
    mlp = Path(sys.executable).parent / "mlp"
    commands = {"mlp --help": [str(mlp), "--help"], "import torch": [sys.executable, "-c", "import torch"]}
    result = {}
    for name, command in commands.items():
        result[name] = median_seconds(lambda c=command: subprocess.run(c, capture_output=True, check=True),
                                      repeats, lambda: None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="random data of Fashion-MNIST's shape")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="0 lets mlp choose, as mlp train does")
    parser.add_argument("--accuracy-epochs", type=int, default=10, help="epochs for the bf16/fp32 comparison")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    device = resolve_device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    workspace = Path(tempfile.mkdtemp())
    if args.synthetic:
        root = write_synthetic_root(workspace / "synthetic")
        data_dir = root
    else:
        data_dir = find_dataset_dir(DATASETS["fashion-mnist"], None, default_cache_dir())
        root = torchvision_root(data_dir, workspace / "torchvision")
    data = load_data("fashion-mnist", data_dir, device)
    threads = configure_threads_for(load_config(None, {"threads": args.threads}), data)  # the book's model
    figures: dict[str, object] = {"device": str(device), "threads": threads, "repeats": args.repeats,
                                  "data": "synthetic" if args.synthetic else str(data_dir),
                                  "torch": torch.__version__}
    print(f"device {device}, {threads} threads, data {figures['data']}, torch {torch.__version__}")

    base = load_config(None, {"device": str(device), "threads": threads})
    c_blas = measure_matmul_floor(base, device, args.repeats, synchronize)
    c_onednn = measure_onednn_floor(base, args.repeats) if device.type == "cpu" else None
    figures["C_blas"], figures["C_onednn"] = c_blas, c_onednn
    for impl in ("scratch", "concise"):
        config = load_config(None, {"impl": impl, "device": str(device), "threads": threads})
        a, evaluation, _ = measure_mlp_epoch(config, data, args.repeats, synchronize)
        b = measure_tutorial_epoch(config, root, device, args.repeats, synchronize)
        figures[impl] = {"A": a, "B": b, "eval_test": evaluation, "A/C_blas": a / c_blas, "B/A": b / a,
                         "eval/A": evaluation / a, "A/C_onednn": a / c_onednn if c_onednn else None}
    print_epoch_table(figures)

    startup = measure_startup(max(args.repeats, 5))
    figures["startup"] = {**startup, "ratio": startup["mlp --help"] / startup["import torch"]}
    print(f"\nstart-up: mlp --help {startup['mlp --help']:.3f} s, python -c 'import torch' "
          f"{startup['import torch']:.3f} s, ratio {figures['startup']['ratio']:.2f} (target <= 0.3)")

    if not args.skip_bf16:
        figures["precision"] = compare_precisions(data, device, threads, args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def print_epoch_table(figures: dict) -> None:
    samples = TRAIN_SAMPLES
    c_blas, c_onednn = figures["C_blas"], figures["C_onednn"]
    print(f"\n{'':22}{'s/epoch':>10}{'samples/s':>12}")
    print(f"{'C_blas (matmuls only)':22}{c_blas:10.3f}{samples / c_blas:12,.0f}")
    if c_onednn:
        print(f"{'C_onednn (matmuls)':22}{c_onednn:10.3f}{samples / c_onednn:12,.0f}")
    for impl in ("scratch", "concise"):
        row = figures[impl]
        print(f"{'A ' + impl + ' (mlp)':22}{row['A']:10.3f}{samples / row['A']:12,.0f}")
        print(f"{'B ' + impl + ' (DataLoader)':22}{row['B']:10.3f}{samples / row['B']:12,.0f}")
        print(f"{'  eval of test split':22}{row['eval_test']:10.3f}")
    print(f"\n{'ratio':22}{'scratch':>10}{'concise':>10}   target")
    targets = {"A/C_blas": "<= 1.25", "A/C_onednn": "<= 1.5 (stretch)", "B/A": ">= 5", "eval/A": "<= 0.10"}
    for ratio, target in targets.items():
        values = [figures[impl][ratio] for impl in ("scratch", "concise")]
        cells = "".join(f"{value:10.2f}" if value is not None else f"{'-':>10}" for value in values)
        print(f"{ratio:22}{cells}   {target}")


def compare_precisions(data, device: torch.device, threads: int, args: argparse.Namespace) -> dict:
    """Seconds per epoch and test accuracy after --accuracy-epochs, fp32 against bf16 autocast (scratch)."""
    results = {}
    print(f"\nprecision (scratch, {args.accuracy_epochs} epochs)   s/epoch   test accuracy")
    for precision in ("fp32", "bf16"):
        config = load_config(None, {"device": str(device), "threads": threads, "precision": precision})
        torch.manual_seed(config.seed)
        model = build_model(config.impl, data.num_inputs, config.hidden, data.num_classes, config.sigma).to(device)
        trainer = Trainer(config, model, data, Path("unused"))  # its loop only: nothing is saved
        times = []
        for epoch in range(1, args.accuracy_epochs + 1):
            started = time.perf_counter()
            trainer.train_epoch(epoch, EpochProgress.start(trainer.generator, device))
            synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
            synchronize()
            times.append(time.perf_counter() - started)
        accuracy = evaluate(model, data, "test", config).accuracy
        results[precision] = {"seconds_per_epoch": statistics.median(times), "test_accuracy": accuracy}
        print(f"{precision:36}{statistics.median(times):8.3f}   {accuracy:.4f}")
    return results


if __name__ == "__main__":
    main()
