"""Does an exported model compute what its checkpoint computes? Compare onnxruntime with torch on a whole split.

Usage: python benchmarks/onnx_agreement.py runs/NAME/best.pt model.onnx [--split test] [--data-dir DIR]

Prints the largest absolute difference of the outputs (logits, or probabilities for a --probabilities export)
and how many top-1 predictions agree.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from mlp_cli.checkpoint import load_checkpoint, restore_model
from mlp_cli.data import load_data

BATCH = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint)
    config, model = restore_model(checkpoint, args.checkpoint)
    model.eval()
    images, _ = load_data(config.dataset, args.data_dir).split(args.split)
    session = onnxruntime.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    is_probabilities = session.get_modelmeta().custom_metadata_map.get("output") == "probabilities"
    largest, agree = 0.0, 0
    for start in range(0, len(images), BATCH):
        batch = images[start:start + BATCH]
        with torch.inference_mode():
            expected = model(batch)
            expected = (torch.softmax(expected, dim=1) if is_probabilities else expected).numpy()
        actual = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
        largest = max(largest, float(np.abs(actual - expected).max()))
        agree += int((actual.argmax(axis=1) == expected.argmax(axis=1)).sum())
    print(json.dumps({"split": args.split, "images": len(images), "max_abs_diff": largest,
                      "top1_agreement": agree / len(images)}))


if __name__ == "__main__":
    main()
