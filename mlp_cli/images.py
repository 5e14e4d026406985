"""The user's own images, prepared as the data set's are, and classified by any model: torch-free (numpy, PIL).

`mlp predict CHECKPOINT` (torch) and `mlp predict model.onnx` (onnxruntime) share this one preparation, so an
image gives the model the same input either way: grayscale, resized with antialiasing to the model's side,
gray level / 255, inverted on request. Sizes are checked from the header before anything is decoded.
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlp_cli.errors import MlpError

if TYPE_CHECKING:
    from PIL.Image import Image

PIXEL_MAX = np.float32(255)  # the data sets' scaling (mlp_cli.data.PIXEL_MAX, in a torch module)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")  # what a folder argument is searched for
# 64 megapixels: above a 48-megapixel phone photo, far below what a crafted 400-kilobyte PNG can claim
# (20000 x 20000) and would cost gigabytes to decode
MAX_IMAGE_PIXELS = 2**26
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # PIL's modes for 16-bit (and 32-bit) gray
SIXTEEN_TO_EIGHT_BITS = 257  # 65535 / 255: 16-bit white is 8-bit white
BORDER_PIXELS = 2  # the frame of the model's input that is inspected for a light background
LIGHT_LEVEL = 0.5  # a pixel above this (in [0, 1]) counts as light
LIGHT_BORDER_SHARE = 0.5  # a border with more light pixels than this is "mostly light"

# a (1, side, side) float32 image in [0, 1] -> its class probabilities, (classes,)
Classifier = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Prediction:
    image: str
    classes: list[str]  # the top k, most probable first
    probabilities: list[float]
    error: str | None = None  # set, and the lists empty, when the image could not be read
    has_light_border: bool = False  # the input the model saw looks like a dark object on a light background
    saved_input: str | None = None  # where --save-input wrote the image the model saw


def load_image(path: Path, side: int, invert: bool) -> np.ndarray:
    """A (1, side, side) float32 image in [0, 1]: grayscale, resized with antialiasing, optionally inverted.

    Fashion-MNIST and MNIST show a light object on a dark background; a photo of a dark object on a light
    background needs invert=True. The pixel count is checked from the header before anything is decoded.

    Raises:
        MlpError: the file cannot be read as an image, or it has more than MAX_IMAGE_PIXELS pixels.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL only warns between its own limit and twice that; a warning here is an error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise MlpError(f"{path}: {width} x {height} pixels is too large to read "
                                   f"(at most {MAX_IMAGE_PIXELS:,} pixels); scale the image down first")
                gray = to_eight_bit_gray(image).resize((side, side), Image.Resampling.LANCZOS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise MlpError(f"{path}: too large to read ({err})") from err
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise MlpError(f"{path}: cannot read the image ({err})") from err
    pixels = np.asarray(gray, dtype=np.uint8).reshape(1, side, side).astype(np.float32) / PIXEL_MAX
    return 1 - pixels if invert else pixels


def to_eight_bit_gray(image: "Image") -> "Image":
    """image in PIL's 8-bit gray mode "L"; 16-bit gray is scaled (white stays white), where PIL would clip at 255."""
    from PIL import Image

    if image.mode not in SIXTEEN_BIT_MODES:
        return image.convert("L")
    values = np.asarray(image).astype(np.int64).clip(0, 2**16 - 1)
    return Image.fromarray(np.round(values / SIXTEEN_TO_EIGHT_BITS).astype(np.uint8), mode="L")


def has_light_border(image: np.ndarray) -> bool:
    """Whether most of the outer frame of a (1, side, side) image in [0, 1] is light: a light background."""
    frame = np.ones(image.shape, dtype=bool)
    frame[:, BORDER_PIXELS:-BORDER_PIXELS, BORDER_PIXELS:-BORDER_PIXELS] = False
    return float((image[frame] > LIGHT_LEVEL).mean()) > LIGHT_BORDER_SHARE


def save_image(image: np.ndarray, path: Path) -> None:
    """Write a (1, side, side) image in [0, 1] as an 8-bit gray PNG, exactly as the model saw it."""
    from PIL import Image

    pixels = np.round(image[0] * PIXEL_MAX).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path, format="PNG")


def expand_image_paths(paths: list[Path]) -> list[Path]:
    """paths with every folder replaced by its image files (IMAGE_SUFFIXES, any case), sorted by name.

    A folder without images stays as it is, so that it gets its own error line.
    """
    expanded = []
    for path in paths:
        found = sorted(item for item in path.iterdir()
                       if item.is_file() and item.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else []
        expanded += found or [path]
    return expanded


def light_border_hint(predictions: list[Prediction], invert: bool) -> str | None:
    """One sentence for the images that look like dark objects on a light background, or None if there are none."""
    light = [prediction.image for prediction in predictions if prediction.has_light_border]
    if not light:
        return None
    if len(light) == 1:
        which = f"{light[0]} is"
    else:
        which = f"{'the' if len(light) == len(predictions) else f'{len(light)} of'} {len(predictions)} images are"
    advice = ("--invert made them so: try without it" if invert
              else "pass --invert for a dark object on a light background")
    return (f"{which} mostly light around the edge, but the model expects a light object on a dark "
            f"background (as in its data set); {advice}")


def classify_images(classify: Classifier, names: list[str], side: int, image_paths: list[Path], top_k: int,
                    invert: bool, save_dir: Path | None = None) -> list[Prediction]:
    """The top_k classes and probabilities for each image (folders: each image in them); a bad image gets an error.

    save_dir, if given, receives each image as the model saw it (side x side gray PNG, named after the image).

    Raises:
        MlpError: top_k is out of range, or save_dir cannot be written.
    """
    if not 1 <= top_k <= len(names):
        raise MlpError(f"--top-k {top_k}: expected 1 to {len(names)}")
    predictions, saved_names = [], set[str]()
    for path in expand_image_paths(image_paths):
        try:
            if path.is_dir():
                raise MlpError(f"{path}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
            image = load_image(path, side, invert)
        except MlpError as err:
            predictions.append(Prediction(str(path), [], [], error=str(err)))
            continue
        saved = None if save_dir is None else save_model_input(image, save_dir, path, saved_names)
        probabilities = classify(image)
        top = np.argsort(-probabilities, kind="stable")[:top_k]
        predictions.append(Prediction(str(path), [names[i] for i in top], [float(probabilities[i]) for i in top],
                                      has_light_border=has_light_border(image), saved_input=saved))
    return predictions


def save_model_input(image: np.ndarray, save_dir: Path, source: Path, taken: set[str]) -> str:
    """Write image into save_dir as SOURCE-NAME.png (-2, -3... when two inputs share a name); its path.

    Raises:
        MlpError: the folder cannot be created or written.
    """
    name, number = f"{source.stem}.png", 1
    while name in taken:
        number += 1
        name = f"{source.stem}-{number}.png"
    taken.add(name)
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        save_image(image, save_dir / name)
    except OSError as err:
        raise MlpError(f"--save-input {save_dir}: cannot write {name} ({err.strerror or err})") from err
    return str(save_dir / name)
