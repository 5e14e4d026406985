"""Start-up of `mlp predict model.onnx image.png` (onnxruntime, no torch) against `python -c 'import torch'`.

Usage: python benchmarks/bench_onnx_startup.py [--repeats 5]

Makes a D2L scratch model (untrained: start-up does not depend on the weights), exports it, writes a PNG,
then times both commands as fresh processes and prints the medians and their ratio (the target is <= 0.3).
Run it on a quiet machine: other processes' load changes both times.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mlp_cli.export import export_model, model_metadata
from mlp_cli.models import build_model

SIDE = 28


def median_seconds(command: list[str], repeats: int) -> float:
    """The median wall time of command, run repeats times, after one untimed run that warms the file cache."""
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model_path, image_path = Path(folder) / "model.onnx", Path(folder) / "image.png"
        model = build_model("scratch", SIDE * SIDE, (256,), 10, 0.01, "relu", 0.0, "book")
        export_model(model, SIDE, model_metadata([str(i) for i in range(10)], SIDE, "mnist", False), model_path)
        pixels = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
        Image.fromarray(pixels).save(image_path)
        predict = median_seconds([sys.executable, "-m", "mlp_cli", "predict", str(model_path), str(image_path)],
                                 args.repeats)
        torch_import = median_seconds([sys.executable, "-c", "import torch"], args.repeats)
    print(json.dumps({"predict_onnx_s": round(predict, 3), "import_torch_s": round(torch_import, 3),
                      "ratio": round(predict / torch_import, 3)}))


if __name__ == "__main__":
    main()
