"""The data module: finding IDX files, reading and checking them, and batching whole splits by index."""

import gzip
import struct
import tracemalloc
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_MAGIC, LABEL_MAGIC, TEST_COUNT, TRAIN_COUNT, write_dataset, write_idx

from mlp_cli.data import DATASETS, download_with_torchvision, find_dataset_dir, hold_out, load_data, read_idx
from mlp_cli.errors import DataError

FASHION = DATASETS["fashion-mnist"]


def test_raw_and_gzipped_files_give_the_same_tensors(data_dir: Path, gz_data_dir: Path) -> None:
    raw, gz = load_data("fashion-mnist", data_dir), load_data("fashion-mnist", gz_data_dir)
    assert torch.equal(raw.train_images, gz.train_images)
    assert torch.equal(raw.test_labels, gz.test_labels)


def test_splits_are_float_images_in_unit_range_and_integer_labels(data_dir: Path) -> None:
    data = load_data("fashion-mnist", data_dir)
    assert data.train_images.shape == (TRAIN_COUNT, 1, 28, 28)
    assert data.test_images.shape == (TEST_COUNT, 1, 28, 28)
    assert data.train_images.dtype == torch.float32
    assert data.train_images.min() >= 0.0 and data.train_images.max() <= 1.0
    assert data.train_labels.dtype == torch.int64
    assert data.num_inputs == 784 and data.num_classes == 10


def test_pixels_are_scaled_exactly_as_totensor_does(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", IMAGE_MAGIC, (1, 2, 2), bytes([0, 51, 128, 255]))
    assert read_idx(path, IMAGE_MAGIC).tolist() == [[[0, 51], [128, 255]]]
    write_dataset(tmp_path / "d")
    data = load_data("fashion-mnist", tmp_path / "d")
    raw = read_idx(tmp_path / "d" / "train-images-idx3-ubyte", IMAGE_MAGIC)
    assert torch.equal(data.train_images[:, 0], raw.float() / 255)


def test_datasets_carry_their_class_names() -> None:
    assert DATASETS["fashion-mnist"].class_names == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert DATASETS["mnist"].class_names == tuple("0123456789")


def test_mnist_reads_the_same_file_layout(data_dir: Path) -> None:
    data = load_data("mnist", data_dir)
    assert data.class_names[3] == "3" and len(data.train_labels) == TRAIN_COUNT


def test_data_dir_comes_first_then_cache_then_system_folders(tmp_path: Path) -> None:
    given, cache, system = tmp_path / "given", tmp_path / "cache", tmp_path / "system"
    for folder in (given, cache / "FashionMNIST" / "raw", system):
        write_dataset(folder)
    assert find_dataset_dir(FASHION, given, cache, [system], download=False) == given
    assert find_dataset_dir(FASHION, None, cache, [system], download=False) == cache / "FashionMNIST" / "raw"
    assert find_dataset_dir(FASHION, None, tmp_path / "empty", [system], download=False) == system


def test_a_torchvision_root_is_accepted_as_data_dir(tmp_path: Path) -> None:
    write_dataset(tmp_path / "root" / "FashionMNIST" / "raw")
    found = find_dataset_dir(FASHION, tmp_path / "root", tmp_path / "cache", [], download=False)
    assert found == tmp_path / "root" / "FashionMNIST" / "raw"


def test_a_given_data_dir_without_the_files_is_an_error_not_a_silent_fallback(tmp_path: Path) -> None:
    write_dataset(tmp_path / "system")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no Fashion-MNIST files there \(expected train-images-idx3-ubyte"):
        find_dataset_dir(FASHION, tmp_path / "empty", tmp_path / "cache", [tmp_path / "system"])


def test_nothing_found_lists_every_place_tried_and_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found \(looked in .*cache.*nowhere\); pass --data-dir"):
        find_dataset_dir(FASHION, None, tmp_path / "cache", [tmp_path / "nowhere"], download=False)


def test_a_failed_download_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_download(spec: object, cache_dir: Path) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr("mlp_cli.data.download_with_torchvision", failing_download)
    with pytest.raises(DataError, match="the download failed"):
        find_dataset_dir(FASHION, None, tmp_path / "cache", [], download=True)


def test_a_failed_download_names_its_cause_even_when_torchvision_puts_it_on_a_later_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline_download(spec: object, cache_dir: Path) -> None:  # torchvision's message when offline
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://example.org/, got:\n"
                           "<urlopen error [Errno -2] Name or service not known>\n")

    monkeypatch.setattr("mlp_cli.data.download_with_torchvision", offline_download)
    with pytest.raises(DataError) as raised:
        find_dataset_dir(DATASETS["mnist"], None, tmp_path / "cache", [], download=True)
    assert "\n" not in str(raised.value)
    assert "download failed (Error downloading train-images-idx3-ubyte.gz: Tried http://example.org/, got: " \
           "<urlopen error [Errno -2] Name or service not known>)" in str(raised.value)


def test_downloaded_files_are_found_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(spec: object, cache_dir: Path) -> None:
        write_dataset(cache_dir / "FashionMNIST" / "raw")

    monkeypatch.setattr("mlp_cli.data.download_with_torchvision", fake_download)
    assert find_dataset_dir(FASHION, None, tmp_path / "cache", [], download=True).parent.name == "FashionMNIST"


def test_a_download_finished_first_by_another_process_is_kept(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    kept = write_dataset(cache / "FashionMNIST" / "raw")  # what another rank put in place meanwhile
    (kept / "mark").write_text("the first copy")
    monkeypatch.setattr("mlp_cli.data.fetch_with_torchvision",
                        lambda spec, root: write_dataset(root / "FashionMNIST" / "raw"))
    download_with_torchvision(DATASETS["fashion-mnist"], cache)
    assert (kept / "mark").exists()
    assert [path.name for path in cache.iterdir()] == ["FashionMNIST"]  # the staging folder is gone


def test_a_download_replaces_an_incomplete_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    (cache / "FashionMNIST" / "raw").mkdir(parents=True)
    (cache / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"cut off")
    monkeypatch.setattr("mlp_cli.data.fetch_with_torchvision",
                        lambda spec, root: write_dataset(root / "FashionMNIST" / "raw"))
    download_with_torchvision(DATASETS["fashion-mnist"], cache)
    assert len(load_data("fashion-mnist", cache / "FashionMNIST" / "raw").train_labels) == TRAIN_COUNT


def test_bad_magic_number_names_the_file(data_dir: Path) -> None:
    write_idx(data_dir / "train-images-idx3-ubyte", LABEL_MAGIC, (3,), bytes(3))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: not an IDX image file \(magic 0x00000801"):
        load_data("fashion-mnist", data_dir)


def test_length_that_disagrees_with_the_dimensions_is_an_error(data_dir: Path) -> None:
    write_idx(data_dir / "t10k-images-idx3-ubyte", IMAGE_MAGIC, (TEST_COUNT, 28, 28), bytes(100))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: header declares \d+ bytes"):
        load_data("fashion-mnist", data_dir)


def test_zero_sized_image_dimensions_are_an_error(data_dir: Path) -> None:
    write_idx(data_dir / "t10k-images-idx3-ubyte", IMAGE_MAGIC, (TEST_COUNT, 0, 28), b"")
    with pytest.raises(DataError, match="bad dimensions"):
        load_data("fashion-mnist", data_dir)


def test_image_and_label_counts_must_agree(data_dir: Path) -> None:
    write_idx(data_dir / "t10k-labels-idx1-ubyte", LABEL_MAGIC, (TEST_COUNT - 1,), bytes(TEST_COUNT - 1))
    with pytest.raises(DataError, match=rf"has {TEST_COUNT} images but .*t10k-labels-idx1-ubyte has"):
        load_data("fashion-mnist", data_dir)


def test_labels_out_of_range_are_an_error(data_dir: Path) -> None:
    write_idx(data_dir / "train-labels-idx1-ubyte", LABEL_MAGIC, (TRAIN_COUNT,), bytes([10] * TRAIN_COUNT))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: label 10 out of range \(expected 0 to 9\)"):
        load_data("fashion-mnist", data_dir)


def test_truncated_gzip_is_an_error_naming_the_file(gz_data_dir: Path) -> None:
    path = gz_data_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated or corrupt gzip file"):
        load_data("fashion-mnist", gz_data_dir)


def test_gzip_is_recognised_by_content_not_by_name(data_dir: Path) -> None:
    path = data_dir / "train-labels-idx1-ubyte"
    path.write_bytes(gzip.compress(path.read_bytes()))
    assert len(load_data("fashion-mnist", data_dir).train_labels) == TRAIN_COUNT


def test_shuffled_batches_cover_every_sample_once_in_a_seeded_order(data_dir: Path) -> None:
    data = load_data("fashion-mnist", data_dir)
    batches = list(data.batches("train", 25, torch.Generator().manual_seed(3)))
    assert [len(labels) for _, labels in batches] == [25, 25, 25, 21]
    seen = torch.cat([images.reshape(len(images), -1) for images, _ in batches])
    matches = (seen[:, None, :] == data.train_images.reshape(1, TRAIN_COUNT, -1)).all(dim=2)  # (seen, stored)
    assert torch.equal(matches.sum(dim=0), torch.ones(TRAIN_COUNT, dtype=torch.long))
    assert not torch.equal(matches, torch.eye(TRAIN_COUNT, dtype=torch.bool))  # shuffled, not file order
    again = list(data.batches("train", 25, torch.Generator().manual_seed(3)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    other = list(data.batches("train", 25, torch.Generator().manual_seed(4)))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(batches, other, strict=True))


def test_unshuffled_batches_keep_file_order(data_dir: Path) -> None:
    data = load_data("fashion-mnist", data_dir)
    labels = torch.cat([labels for _, labels in data.batches("test", 16)])
    assert torch.equal(labels, data.test_labels)


def test_each_epoch_draws_a_new_order_and_a_seed_repeats_the_sequence(data_dir: Path) -> None:
    data = load_data("fashion-mnist", data_dir)

    def epoch_orders(seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return [torch.cat([labels for _, labels in data.batches("train", 32, generator)]) for _ in range(3)]

    first, again = epoch_orders(11), epoch_orders(11)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(torch.equal(order.sort().values, data.train_labels.sort().values) for order in first)


def test_an_idx_split_with_zero_items_is_a_one_line_error(data_dir: Path) -> None:
    write_idx(data_dir / "t10k-images-idx3-ubyte", IMAGE_MAGIC, (0, 28, 28), b"")
    write_idx(data_dir / "t10k-labels-idx1-ubyte", LABEL_MAGIC, (0,), b"")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: the header declares 0 images"):
        load_data("fashion-mnist", data_dir)


def test_a_header_claiming_more_than_the_size_limit_is_refused_before_reading(data_dir: Path) -> None:
    # 70000 images of 4096 x 4096 pixels: 1.2 TB promised by a 16-byte header
    write_idx(data_dir / "train-images-idx3-ubyte", IMAGE_MAGIC, (70000, 4096, 4096), bytes(1000), compress=True)
    (data_dir / "train-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: header declares .* more than the"):
        load_data("fashion-mnist", data_dir)


def test_a_gzip_that_inflates_beyond_its_header_is_refused_without_inflating_it_all(data_dir: Path) -> None:
    # a valid header for 3 labels, then 64 MB of zeros that compress to about 64 KB
    path = data_dir / "train-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb") as file:
        file.write(struct.pack(">II", LABEL_MAGIC, 3))
        for _ in range(64):
            file.write(bytes(2**20))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: header declares 3 bytes .* file has more"):
            read_idx(path, LABEL_MAGIC)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # bytes; the whole file would be 64 MB


def test_a_split_that_is_not_there_is_an_error_never_another_split(data_dir: Path) -> None:
    data = load_data("fashion-mnist", data_dir)
    with pytest.raises(DataError, match=r"no 'val' split \(this data has train, test\)"):
        data.split("val")  # nothing was held out: the test split must not stand in for it
    held = hold_out(data, 16, torch.Generator().manual_seed(0))
    assert len(held.split("val")[1]) == 16
    with pytest.raises(DataError, match="no 'dev' split"):
        held.split("dev")
