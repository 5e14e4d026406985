"""Classify the user's own images with a trained checkpoint (images prepared by mlp_cli.images)."""

import math
from pathlib import Path

import numpy as np
import torch

from mlp_cli.checkpoint import load_checkpoint, restore_model
from mlp_cli.errors import MlpError
from mlp_cli.images import Prediction, classify_images


def predict_images(checkpoint_path: Path, image_paths: list[Path], top_k: int, invert: bool,
                   save_dir: Path | None = None) -> list[Prediction]:
    """The top_k classes and probabilities for each image (folders: each image in them); a bad image gets an error.

    save_dir, if given, receives each image as the model saw it (28x28 gray PNG, named after the image).

    Raises:
        MlpError: the checkpoint is unusable, its model does not take square images, top_k is out of range,
            or save_dir cannot be written.
    """
    state = load_checkpoint(checkpoint_path)
    _, model = restore_model(state, checkpoint_path)
    side = math.isqrt(state.architecture.num_inputs)
    if side * side != state.architecture.num_inputs:
        raise MlpError(f"{checkpoint_path}: the model does not take square images")
    model.eval()

    def classify(image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(model(torch.from_numpy(image).unsqueeze(0)), dim=1)[0].numpy()

    return classify_images(classify, list(state.architecture.class_names), side, image_paths, top_k, invert, save_dir)
