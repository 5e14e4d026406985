"""`mlp predict`: the user's own images, prepared like the data set's, classified with probabilities."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mlp_cli.cli import app
from mlp_cli.data import load_data
from mlp_cli.predict import load_image

runner = CliRunner()
TRAIN = ["--hidden", "32", "--batch-size", "16", "--epochs", "8", "--lr", "0.5", "--threads", "1"]


@pytest.fixture
def trained(data_dir: Path) -> Path:
    result = runner.invoke(app, ["train", "--data-dir", str(data_dir), "--out", "run", *TRAIN])
    assert result.exit_code == 0, result.output
    return Path("run/best.pt")


def save_test_image(data_dir: Path, index: int, path: Path, invert: bool = False, scale: int = 1) -> int:
    """Write test image `index` of the data set as a picture file; returns its label."""
    data = load_data("fashion-mnist", data_dir)
    pixels = (data.test_images[index, 0] * 255).round().to(torch.uint8).numpy()
    image = Image.fromarray(255 - pixels if invert else pixels)
    image.resize((28 * scale, 28 * scale)).save(path)
    return int(data.test_labels[index])


def test_a_28_by_28_png_is_read_exactly_as_the_data_set_holds_it(data_dir: Path) -> None:
    save_test_image(data_dir, 0, Path("same.png"))
    expected = load_data("fashion-mnist", data_dir).test_images[0]
    assert torch.equal(load_image(Path("same.png"), 28, invert=False), expected)


def test_predict_names_the_right_classes_for_png_and_jpeg(data_dir: Path, trained: Path) -> None:
    names = load_data("fashion-mnist", data_dir).class_names
    labels = [save_test_image(data_dir, 0, Path("a.png"), scale=4), save_test_image(data_dir, 1, Path("b.jpg"))]
    result = runner.invoke(app, ["predict", str(trained), "a.png", "b.jpg", "--top-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)
    assert [p["classes"][0] for p in predictions] == [names[label] for label in labels]
    for prediction in predictions:
        assert len(prediction["classes"]) == 3
        assert prediction["probabilities"] == sorted(prediction["probabilities"], reverse=True)
        assert 0 < sum(prediction["probabilities"]) <= 1 + 1e-6


def test_invert_handles_dark_objects_on_light_backgrounds(data_dir: Path, trained: Path) -> None:
    save_test_image(data_dir, 2, Path("light.png"))
    save_test_image(data_dir, 2, Path("dark.png"), invert=True)
    normal = json.loads(runner.invoke(app, ["predict", str(trained), "light.png", "--json"]).stdout)
    inverted = json.loads(runner.invoke(app, ["predict", str(trained), "dark.png", "--invert", "--json"]).stdout)
    assert normal[0]["classes"] == inverted[0]["classes"]
    assert normal[0]["probabilities"] == pytest.approx(inverted[0]["probabilities"])


def test_an_unreadable_image_is_one_error_line_and_the_others_are_still_classified(
        data_dir: Path, trained: Path) -> None:
    save_test_image(data_dir, 0, Path("good.png"))
    Path("broken.png").write_bytes(b"not a picture")
    result = runner.invoke(app, ["predict", str(trained), "broken.png", "good.png"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [line for line in result.stderr.strip().splitlines()
                                                  if line.startswith("error: broken.png")]
    assert "good.png" in result.stdout and "broken.png" not in result.stdout
    assert "Traceback" not in result.output


def test_predict_help_explains_the_light_on_dark_convention() -> None:
    result = runner.invoke(app, ["predict", "--help"])
    assert "--invert" in result.stdout and "light" in result.stdout and "dark" in result.stdout


def test_top_k_out_of_range_is_a_one_line_error(data_dir: Path, trained: Path) -> None:
    save_test_image(data_dir, 0, Path("good.png"))
    result = runner.invoke(app, ["predict", str(trained), "good.png", "--top-k", "11"])
    assert result.exit_code == 1 and result.stderr.startswith("error: --top-k 11: expected 1 to 10")
