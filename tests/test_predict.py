"""`mlp predict`: the user's own images, prepared like the data set's, classified with probabilities."""

import json
import struct
import zlib
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mlp_cli.cli import app
from mlp_cli.data import load_data
from mlp_cli.images import load_image

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
    assert numpy.array_equal(load_image(Path("same.png"), 28, invert=False), expected.numpy())


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


def write_png_header(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height 8-bit gray pixels, with no pixel data: what a decompression bomb shows first."""
    def chunk(kind: bytes, content: bytes) -> bytes:
        return struct.pack(">I", len(content)) + kind + content + struct.pack(">I", zlib.crc32(kind + content))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [20000, 9000])  # beyond PIL's own bomb limit, and beyond ours only
def test_an_image_too_large_to_decode_is_one_error_line_and_the_others_are_still_classified(
        data_dir: Path, trained: Path, side: int) -> None:
    write_png_header(Path("bomb.png"), side, side)
    save_test_image(data_dir, 0, Path("good.png"))
    result = runner.invoke(app, ["predict", str(trained), "bomb.png", "good.png"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [line for line in result.stderr.strip().splitlines()
                                                  if line.startswith("error: bomb.png") and "too large" in line]
    assert "good.png" in result.stdout and "Traceback" not in result.output


def test_a_light_background_gets_one_hint_to_invert(data_dir: Path, trained: Path) -> None:
    save_test_image(data_dir, 0, Path("dark-on-light-1.png"), invert=True)
    save_test_image(data_dir, 1, Path("dark-on-light-2.png"), invert=True)
    save_test_image(data_dir, 2, Path("light-on-dark.png"))
    result = runner.invoke(app, ["predict", str(trained), "dark-on-light-1.png", "dark-on-light-2.png",
                                 "light-on-dark.png"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert "2 of 3 images" in notes[0] and "light object on a dark background" in notes[0]
    assert "--invert" in notes[0]
    inverted = runner.invoke(app, ["predict", str(trained), "dark-on-light-1.png", "--invert"])
    assert "note:" not in inverted.stderr
    plain = runner.invoke(app, ["predict", str(trained), "light-on-dark.png"])
    assert "note:" not in plain.stderr


def test_save_input_writes_the_28_by_28_image_the_model_saw(data_dir: Path, trained: Path) -> None:
    save_test_image(data_dir, 3, Path("photo.png"), invert=True, scale=5)
    result = runner.invoke(app, ["predict", str(trained), "photo.png", "--invert", "--save-input", "seen",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["saved_input"] == str(Path("seen/photo.png"))
    seen = Image.open("seen/photo.png")
    assert seen.size == (28, 28) and seen.mode == "L"
    model_input = load_image(Path("photo.png"), 28, invert=True)
    # the same 8-bit levels: the inverted input 1 - x/255 is a level up to float rounding
    assert numpy.array_equal(numpy.array(seen), (model_input[0] * 255).round().astype(numpy.uint8))


def test_a_folder_argument_classifies_every_image_in_it_by_name(data_dir: Path, trained: Path) -> None:
    Path("photos").mkdir()
    save_test_image(data_dir, 0, Path("photos/b.png"))
    save_test_image(data_dir, 1, Path("photos/a.jpg"))
    save_test_image(data_dir, 2, Path("photos/c.WEBP"))
    Path("photos/notes.txt").write_text("not an image")
    result = runner.invoke(app, ["predict", str(trained), "photos", "--json"])
    assert result.exit_code == 0, result.output
    assert [p["image"] for p in json.loads(result.stdout)] == [str(Path("photos", name))
                                                                for name in ("a.jpg", "b.png", "c.WEBP")]


def test_a_folder_without_images_is_one_error_line(data_dir: Path, trained: Path) -> None:
    Path("empty").mkdir()
    save_test_image(data_dir, 0, Path("good.png"))
    result = runner.invoke(app, ["predict", str(trained), "empty", "good.png"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["error: empty: no images in this folder "
                                                  "(looked for .png, .jpg, .jpeg, .bmp, .gif, .webp)"]
    assert "good.png" in result.stdout


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped() -> None:
    values = (torch.arange(28 * 28, dtype=torch.int64) * 83).reshape(28, 28)  # 0 to 65,000
    Image.fromarray(values.to(torch.int32).numpy().astype("uint16")).save("deep.png")
    assert Image.open("deep.png").mode == "I;16"
    expected = (values.double() / 257).round().float().reshape(1, 28, 28) / 255
    assert numpy.array_equal(load_image(Path("deep.png"), 28, invert=False), expected.numpy())
