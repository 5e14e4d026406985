"""`mlp export` to ONNX, and `mlp predict model.onnx`: the same numbers as torch, without torch."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import write_dataset
from PIL import Image
from support import mlp_in_a_fresh_process
from typer.testing import CliRunner

from mlp_cli.checkpoint import load_checkpoint, restore_model
from mlp_cli.cli import app
from mlp_cli.config import Config
from mlp_cli.data import load_data
from mlp_cli.training import train

runner = CliRunner()
TOLERANCE = 1e-5  # onnxruntime's kernels add in another order than torch's: equal to float32 rounding, not bits


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """For each impl, a checkpoint trained briefly on the synthetic set and its export; plus the data folder."""
    folder = tmp_path_factory.mktemp("export")
    data_dir = write_dataset(folder / "data")
    paths = {"data": data_dir}
    for impl in ("scratch", "concise"):
        config = Config(impl=impl, hidden=(32,), batch_size=16, epochs=2, lr=0.5, device="cpu", threads=1,
                        data_dir=str(data_dir))
        checkpoint = train(config, folder / impl).best_checkpoint
        result = runner.invoke(app, ["export", str(checkpoint), "--out", str(folder / f"{impl}.onnx")])
        assert result.exit_code == 0, result.output
        paths[impl], paths[f"{impl}.onnx"] = checkpoint, folder / f"{impl}.onnx"
    return paths


def torch_outputs(checkpoint: Path, images: torch.Tensor) -> np.ndarray:
    checkpoint_data = load_checkpoint(checkpoint)
    _, model = restore_model(checkpoint_data, checkpoint)
    model.eval()
    with torch.inference_mode():
        return model(images).numpy()


def onnx_outputs(model: Path, images: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


@pytest.mark.parametrize("impl", ["scratch", "concise"])
def test_onnxruntime_gives_torchs_logits_on_a_whole_split_for_any_batch_size(
        exported: dict[str, Path], impl: str) -> None:
    images = load_data("fashion-mnist", exported["data"]).test_images  # (40, 1, 28, 28), traced with batch 2
    expected = torch_outputs(exported[impl], images)
    whole = onnx_outputs(exported[f"{impl}.onnx"], images.numpy())
    one_by_one = np.concatenate([onnx_outputs(exported[f"{impl}.onnx"], images[i:i + 1].numpy())
                                 for i in range(3)])
    assert whole.shape == expected.shape == (40, 10)
    assert np.abs(whole - expected).max() <= TOLERANCE
    assert np.array_equal(whole.argmax(axis=1), expected.argmax(axis=1))
    assert np.abs(one_by_one - expected[:3]).max() <= TOLERANCE


def test_the_export_describes_its_input_and_classes_and_has_a_dynamic_batch(exported: dict[str, Path]) -> None:
    model = onnx.load(str(exported["scratch.onnx"]))
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert json.loads(metadata["class_names"]) == list(load_data("fashion-mnist", exported["data"]).class_names)
    assert json.loads(metadata["input_size"]) == [1, 28, 28]
    assert metadata["pixel_scale"] == "1/255" and "light object on a dark background" in metadata["pixel_layout"]
    assert metadata["output"] == "logits"
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # a named, free dimension


def test_probabilities_export_ends_with_a_softmax(exported: dict[str, Path]) -> None:
    out = exported["concise.onnx"].with_name("probabilities.onnx")
    result = runner.invoke(app, ["export", str(exported["concise"]), "--out", str(out), "--probabilities"])
    assert result.exit_code == 0, result.output
    images = load_data("fashion-mnist", exported["data"]).test_images
    expected = torch.softmax(torch.from_numpy(torch_outputs(exported["concise"], images)), dim=1).numpy()
    actual = onnx_outputs(out, images.numpy())
    assert np.abs(actual - expected).max() <= TOLERANCE
    assert np.allclose(actual.sum(axis=1), 1, atol=TOLERANCE)
    metadata = {prop.key: prop.value for prop in onnx.load(str(out)).metadata_props}
    assert metadata["output"] == "probabilities"


def write_test_images(data_dir: Path, count: int) -> list[str]:
    images = load_data("fashion-mnist", data_dir).test_images
    names = []
    for index in range(count):
        pixels = (images[index, 0] * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).resize((56, 56)).save(f"image{index}.png")  # resized: the loaders must agree
        names.append(f"image{index}.png")
    return names


@pytest.mark.parametrize("invert", [False, True])
def test_predict_with_the_onnx_model_matches_predict_with_the_checkpoint(
        exported: dict[str, Path], invert: bool) -> None:
    images = write_test_images(exported["data"], 4)
    flags = ["--top-k", "3", "--json", *(["--invert"] if invert else [])]
    from_torch = runner.invoke(app, ["predict", str(exported["scratch"]), *images, *flags])
    from_onnx = runner.invoke(app, ["predict", str(exported["scratch.onnx"]), *images, *flags])
    assert from_torch.exit_code == 0 and from_onnx.exit_code == 0, from_onnx.output
    for expected, actual in zip(json.loads(from_torch.stdout), json.loads(from_onnx.stdout), strict=True):
        assert actual["image"] == expected["image"] and actual["classes"] == expected["classes"]
        assert actual["probabilities"] == pytest.approx(expected["probabilities"], abs=TOLERANCE)


def test_predict_with_an_onnx_model_never_imports_torch(exported: dict[str, Path]) -> None:
    images = write_test_images(exported["data"], 1)
    result, loaded = mlp_in_a_fresh_process("predict", exported["scratch.onnx"], images[0], "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])[0]["classes"]
    assert "torch" not in loaded


def test_predict_with_a_file_that_is_not_an_onnx_model_is_a_one_line_error(exported: dict[str, Path]) -> None:
    images = write_test_images(exported["data"], 1)
    Path("broken.onnx").write_bytes(b"not a model")
    for model, fragment in (("broken.onnx", "not a readable ONNX model"), ("missing.onnx", "no such ONNX model")):
        result = runner.invoke(app, ["predict", model, *images])
        assert result.exit_code == 1
        assert result.stderr.strip().splitlines() == [line for line in result.stderr.strip().splitlines()
                                                      if line.startswith(f"error: {model}: {fragment}")]
        assert result.stderr.strip() and "Traceback" not in result.output


def test_export_of_a_missing_checkpoint_is_a_one_line_error() -> None:
    result = runner.invoke(app, ["export", "missing.pt", "--out", "model.onnx"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: missing.pt: no such checkpoint (a run folder holds last.pt and best.pt)"
    assert not Path("model.onnx").exists()
