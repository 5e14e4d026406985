"""ONNX export: a trained checkpoint as a self-describing .onnx file that onnxruntime runs without torch."""

import json
import math
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from mlp_cli import __version__
from mlp_cli.checkpoint import load_checkpoint, restore_model
from mlp_cli.data import PIXEL_MAX
from mlp_cli.errors import MlpError

ONNX_OPSET = 18  # the opset torch's exporter targets by default; onnxruntime >= 1.14 runs it
INPUT_NAME = "images"
TRACE_BATCH = 2  # the example batch the exporter traces with; the batch dimension is declared dynamic anyway


class WithSoftmax(nn.Module):
    """The model followed by a softmax over the classes: for consumers that want probabilities, not logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(images), dim=1)


def model_metadata(class_names: list[str], side: int, dataset: str, probabilities: bool) -> dict[str, str]:
    """What a consumer needs to feed the model and read its output, as ONNX metadata (string values only)."""
    return {
        "class_names": json.dumps(class_names),
        "input_size": json.dumps([1, side, side]),  # (channels, height, width) of one image; batch is dynamic
        "pixel_scale": f"1/{PIXEL_MAX:g}",  # the input is gray level / 255, in [0, 1]
        "pixel_layout": "light object on a dark background (invert photos of dark objects on light)",
        "dataset": dataset,
        "output": "probabilities" if probabilities else "logits",
        "producer": f"mlp {__version__}",
    }


def export_onnx(checkpoint_path: Path, out: Path, probabilities: bool = False) -> dict[str, str]:
    """Write the checkpoint's model to out as ONNX (dynamic batch, metadata); return the metadata written.

    Raises:
        MlpError: the checkpoint is unusable, its model does not take square images, or out cannot be written.
    """
    state = load_checkpoint(checkpoint_path)
    config, model = restore_model(state, checkpoint_path)
    num_inputs = state.architecture.num_inputs
    side = math.isqrt(num_inputs)
    if side * side != num_inputs:
        raise MlpError(f"{checkpoint_path}: the model does not take square images")
    metadata = model_metadata(list(state.architecture.class_names), side, config.dataset, probabilities)
    export_model(WithSoftmax(model) if probabilities else model, side, metadata, out)
    return metadata


def export_model(model: nn.Module, side: int, metadata: dict[str, str], out: Path) -> None:
    """Export model (images (n, 1, side, side) in [0, 1] -> (n, classes)) to out, atomically.

    Raises:
        MlpError: out cannot be written.
    """
    import onnx

    model.eval()
    example = torch.zeros(TRACE_BATCH, 1, side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals mean nothing to a user
        program = torch.onnx.export(
            model, (example,), input_names=[INPUT_NAME], output_names=[metadata["output"]],
            dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=ONNX_OPSET, dynamo=True, verbose=False)
    if program is None:  # only the legacy exporter (dynamo=False) returns nothing
        raise MlpError(f"{out}: torch.onnx.export returned no model")
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {**{prop.key: prop.value for prop in proto.metadata_props}, **metadata})
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        onnx.save(proto, str(temporary))
        os.replace(temporary, out)
    except OSError as err:
        raise MlpError(f"{out}: cannot write the ONNX model ({err.strerror or err})") from err
    finally:
        temporary.unlink(missing_ok=True)
