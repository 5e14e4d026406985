"""Classify images with an exported .onnx model through onnxruntime: no torch, so it starts in a fraction of the time.

The images are prepared by mlp_cli.images, exactly as for `mlp predict CHECKPOINT`.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from mlp_cli.errors import MlpError, first_line
from mlp_cli.images import Prediction, classify_images


def open_onnx_model(path: Path) -> tuple[Any, dict[str, str]]:
    """An onnxruntime session for an `mlp export` file, and the file's metadata.

    Raises:
        MlpError: the file is missing, not an ONNX model, or not one written by mlp export.
    """
    import onnxruntime

    if not path.is_file():
        raise MlpError(f"{path}: no such ONNX model (write one with: mlp export CHECKPOINT --out {path})")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about graph internals, not the user's input
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types, not importable in a stable way
        raise MlpError(f"{path}: not a readable ONNX model ({first_line(err)})") from err
    metadata = session.get_modelmeta().custom_metadata_map
    if "class_names" not in metadata or "input_size" not in metadata:
        raise MlpError(f"{path}: no class names or input size in its metadata (export it with mlp export)")
    return session, metadata


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so that large logits do not overflow."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predict_onnx_images(model_path: Path, image_paths: list[Path], top_k: int, invert: bool,
                        save_dir: Path | None = None) -> list[Prediction]:
    """The top_k classes and probabilities for each image (folders: each image in them); a bad image gets an error.

    Raises:
        MlpError: the model is unusable, top_k is out of range, or save_dir cannot be written.
    """
    session, metadata = open_onnx_model(model_path)
    names = json.loads(metadata["class_names"])
    side = json.loads(metadata["input_size"])[-1]
    input_name, gives_probabilities = session.get_inputs()[0].name, metadata.get("output") == "probabilities"

    def classify(image: np.ndarray) -> np.ndarray:
        outputs = session.run(None, {input_name: image[np.newaxis]})[0]
        return (outputs if gives_probabilities else softmax(outputs))[0]

    return classify_images(classify, names, side, image_paths, top_k, invert, save_dir)
