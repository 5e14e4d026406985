"""Classify the user's own images with a trained checkpoint, prepared the way the data set's images are."""

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from mlp_cli.checkpoint import load_checkpoint, restore_model
from mlp_cli.data import PIXEL_MAX
from mlp_cli.errors import MlpError


@dataclass(frozen=True)
class Prediction:
    image: str
    classes: list[str]  # the top k, most probable first
    probabilities: list[float]
    error: str | None = None  # set, and the lists empty, when the image could not be read


def load_image(path: Path, side: int, invert: bool) -> torch.Tensor:
    """A (1, side, side) float image in [0, 1]: grayscale, resized with antialiasing, optionally inverted.

    Fashion-MNIST and MNIST show a light object on a dark background; a photo of a dark object on a light
    background needs invert=True.

    Raises:
        MlpError: the file cannot be read as an image.
    """
    from PIL import Image, UnidentifiedImageError  # installed with torchvision

    try:
        with Image.open(path) as image:
            gray = image.convert("L").resize((side, side), Image.Resampling.LANCZOS)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise MlpError(f"{path}: cannot read the image ({err})") from err
    pixels = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).reshape(1, side, side)
    images = pixels.float().div_(PIXEL_MAX)
    return 1 - images if invert else images


def predict_images(checkpoint_path: Path, image_paths: list[Path], top_k: int, invert: bool) -> list[Prediction]:
    """The top_k classes and probabilities for each image; an unreadable image gets an error, not a stop.

    Raises:
        MlpError: the checkpoint is unusable, its model does not take square images, or top_k is out of range.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    _, model = restore_model(checkpoint, checkpoint_path)
    names = checkpoint["model"]["class_names"]
    side = math.isqrt(checkpoint["model"]["num_inputs"])
    if side * side != checkpoint["model"]["num_inputs"]:
        raise MlpError(f"{checkpoint_path}: the model does not take square images")
    if not 1 <= top_k <= len(names):
        raise MlpError(f"--top-k {top_k}: expected 1 to {len(names)}")
    model.eval()
    predictions = []
    for path in image_paths:
        try:
            image = load_image(path, side, invert)
        except MlpError as err:
            predictions.append(Prediction(str(path), [], [], error=str(err)))
            continue
        with torch.inference_mode():
            probabilities = torch.softmax(model(image.unsqueeze(0)), dim=1)[0]
        top = torch.topk(probabilities, top_k)
        predictions.append(Prediction(str(path), [names[i] for i in top.indices.tolist()], top.values.tolist()))
    return predictions
