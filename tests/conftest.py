"""Shared fixtures: tiny IDX data sets written from the format spec, never the real data or the network."""

import gzip
import os
import struct
from pathlib import Path

# Typer and rich read these when they are imported: plain, uncoloured, unwrapped help and errors in tests.
os.environ["_TYPER_FORCE_DISABLE_TERMINAL"] = "1"
os.environ["TERMINAL_WIDTH"] = "200"
os.environ["COLUMNS"] = "200"
os.environ.pop("FORCE_COLOR", None)
os.environ.pop("GITHUB_ACTIONS", None)

import pytest
import torch
from hypothesis import settings

# support.py's comparisons say which values differed, as asserts in the tests themselves do
pytest.register_assert_rewrite("support")

# the property tests draw the same examples on every run and machine: a CI failure reproduces here
settings.register_profile("reproducible", derandomize=True, database=None)
settings.load_profile("reproducible")

torch.set_num_threads(1)  # the CI machine has 2 cores; pytest and torch's thread pool should not fight

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
ROWS = COLS = 28
NUM_CLASSES = 10
TRAIN_COUNT = 96
TEST_COUNT = 40


def write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes, compress: bool = False) -> Path:
    """An IDX file: big-endian magic, one big-endian uint32 per dimension, then the bytes."""
    content = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload
    if compress:
        path = path.with_name(path.name + ".gz")
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def make_images_and_labels(count: int, seed: int) -> tuple[bytes, bytes]:
    """Learnable images: each class lights up its own band of rows, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (count,), generator=generator, dtype=torch.uint8)
    images = torch.randint(0, 60, (count, ROWS, COLS), generator=generator, dtype=torch.uint8)
    band = ROWS // NUM_CLASSES
    for index, label in enumerate(labels.tolist()):
        images[index, label * band:(label + 1) * band, :] = 230
    return images.numpy().tobytes(), labels.numpy().tobytes()


def write_dataset(folder: Path, compress: bool = False, train_count: int = TRAIN_COUNT,
                  test_count: int = TEST_COUNT) -> Path:
    """The four Fashion-MNIST file names in folder, holding small synthetic splits."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count, seed in (("train", train_count, 1), ("t10k", test_count, 2)):
        images, labels = make_images_and_labels(count, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", IMAGE_MAGIC, (count, ROWS, COLS), images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", LABEL_MAGIC, (count,), labels, compress)
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A folder with raw (uncompressed) synthetic IDX files."""
    return write_dataset(tmp_path / "data")


@pytest.fixture
def gz_data_dir(tmp_path: Path) -> Path:
    """A folder with gzipped synthetic IDX files, as Debian and the original site ship them."""
    return write_dataset(tmp_path / "data-gz", compress=True)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs go to a temporary working folder and the download cache to a temporary home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLP_DATA_DIR", raising=False)


@pytest.fixture(autouse=True)
def seeded_torch() -> None:
    """Every test sees the same random tensors, so a failure reproduces on the next run."""
    torch.manual_seed(0)
