"""Fashion-MNIST and MNIST held in memory as tensors: find the IDX files, read and check them, batch by index.

The data sets are tiny (Fashion-MNIST's training images are 47 MB as uint8), so whole splits live as tensors
on the training device and a batch is an index slice: no per-sample Python, no PIL, no worker processes.
"""

import dataclasses
import gzip
import math
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from mlp_cli.config import SPLITS
from mlp_cli.errors import DataError

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions: (count, rows, cols)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension: (count,)
IDX_UNSIGNED_BYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
PIXEL_MAX = 255.0
# Far above any data set of small images (MNIST train: 47 MB), far below what would exhaust memory
MAX_IDX_BYTES = 2**30
READ_CHUNK_BYTES = 2**24
MAX_PREVIEW_IMAGES = 400  # a 20 x 20 grid: more is unreadable, and slow and memory-hungry to draw
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set may already be on disk, and what its labels mean."""

    title: str
    torchvision_name: str  # the torchvision class, and the folder it downloads into: ROOT/NAME/raw
    class_names: tuple[str, ...]
    system_dirs: tuple[Path, ...]


DATASETS = {
    "fashion-mnist": DatasetSpec(
        title="Fashion-MNIST",
        torchvision_name="FashionMNIST",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),  # Debian's dataset-fashion-mnist
    ),
    "mnist": DatasetSpec(
        title="MNIST",
        torchvision_name="MNIST",
        class_names=tuple(str(digit) for digit in range(10)),
        system_dirs=(Path("/usr/share/datasets/mnist"),),
    ),
}


def default_cache_dir() -> Path:
    """The torchvision-style root where downloads go and later runs look first."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlp"


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """The raw or gzipped IDX file named stem in folder, if there is one."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def has_all_files(folder: Path) -> bool:
    """Whether folder holds all four IDX files of a data set."""
    return all(find_idx_file(folder, stem) for stems in SPLIT_FILES.values() for stem in stems)


def find_dataset_dir(spec: DatasetSpec, data_dir: Path | None, cache_dir: Path,
                     system_dirs: Sequence[Path] | None = None, download: bool = True) -> Path:
    """The folder holding the data set's IDX files: data_dir, else the cache, system folders, download.

    Raises:
        DataError: nothing found (naming every place tried) or the download failed.
    """
    expected = ", ".join(stem + "[.gz]" for stems in SPLIT_FILES.values() for stem in stems)
    if data_dir is not None:
        for folder in (data_dir, data_dir / spec.torchvision_name / "raw"):
            if has_all_files(folder):
                return folder
        raise DataError(f"{data_dir}: no {spec.title} files there (expected {expected})")
    cache_folder = cache_dir / spec.torchvision_name / "raw"
    candidates = [cache_folder, *(spec.system_dirs if system_dirs is None else system_dirs)]
    for folder in candidates:
        if has_all_files(folder):
            return folder
    tried = ", ".join(str(folder) for folder in candidates)
    how_to_fix = f"pass --data-dir FOLDER with the four IDX files ({expected})"
    if not download:
        raise DataError(f"{spec.title} not found (looked in {tried}); {how_to_fix}")
    try:
        download_with_torchvision(spec, cache_dir)
    except (RuntimeError, OSError, DataError) as err:
        reason = describe_failure(err)
        raise DataError(f"{spec.title} not found (looked in {tried}) and the download failed ({reason}); "
                        f"{how_to_fix}") from err
    return cache_folder


def describe_failure(err: Exception) -> str:
    """err's message on one line, never empty: torchvision's spreads over lines, with the cause on the last."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines) or type(err).__name__


def locate_dataset(dataset: str, data_dir: Path | None = None) -> Path:
    """The folder of the data set's files, downloaded first if need be: what load_data will read.

    Raises:
        DataError: the data set is not there and cannot be downloaded.
    """
    return find_dataset_dir(DATASETS[dataset], data_dir, default_cache_dir())


def download_with_torchvision(spec: DatasetSpec, cache_dir: Path) -> None:
    """Fetch the data set into cache_dir/NAME/raw, all or nothing.

    torchvision downloads into a staging folder; the files are checked like any others and only then moved
    into place, so a download cut off halfway never leaves files that a later run would take as the data set.
    Several processes may download at once (the ranks of a first DDP run): the first to finish puts its copy
    in place and the others keep it, so that no reader ever sees the folder disappear.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    try:
        fetch_with_torchvision(spec, staging)
        staged = staging / spec.torchvision_name / "raw"
        check_dataset_files(spec, staged)
        target = cache_dir / spec.torchvision_name / "raw"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staged, target)  # atomic; refused when target is a folder with files in it
        except OSError:
            if is_complete_dataset(spec, target):  # another process finished first
                return
            shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier copy, never a valid one
            os.replace(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_dataset_files(spec: DatasetSpec, folder: Path) -> None:
    """Raise DataError unless folder holds both splits of the data set, valid."""
    for split in SPLITS:
        load_split(folder, split, len(spec.class_names))


def is_complete_dataset(spec: DatasetSpec, folder: Path) -> bool:
    try:
        check_dataset_files(spec, folder)
    except DataError:
        return False
    return True


def fetch_with_torchvision(spec: DatasetSpec, root: Path) -> None:
    """torchvision's download (checksummed, then extracted) into root/NAME/raw."""
    import torchvision.datasets  # slow to import; only needed on first use without local files

    getattr(torchvision.datasets, spec.torchvision_name)(root=str(root), train=True, download=True)


def read_idx(path: Path, expected_magic: int) -> torch.Tensor:
    """An IDX file as a uint8 tensor of its declared shape, after checking its header and length.

    The header is checked before the data is read, and no more than the header promises is inflated, so a
    small gzip that would inflate to gigabytes (or a header that claims them) costs nothing.

    Raises:
        DataError: wrong magic number, bad or empty dimensions, or a length that does not match the header.
    """
    try:
        with open(path, "rb") as file:
            is_gzip = file.read(len(GZIP_MAGIC)) == GZIP_MAGIC
            file.seek(0)
            # a GzipFile reads bytes as a binary file does, but typeshed does not call it a BinaryIO
            stream: BinaryIO = gzip.GzipFile(fileobj=file, mode="rb") if is_gzip else file  # type: ignore[assignment]
            return read_idx_stream(path, stream, expected_magic)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: truncated or corrupt gzip file ({err})") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from err


def read_idx_stream(path: Path, stream: BinaryIO, expected_magic: int) -> torch.Tensor:
    """read_idx on an open (possibly inflating) stream: header first, then exactly the bytes it declares."""
    expected_dims = expected_magic & 0xFF
    header_size = 4 + 4 * expected_dims
    header = stream.read(header_size)
    magic = int.from_bytes(header[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: not an IDX {'image' if expected_dims == 3 else 'label'} file "
                        f"(magic 0x{magic:08x}, expected 0x{expected_magic:08x})")
    if len(header) < header_size:
        raise DataError(f"{path}: too short for an IDX header ({len(header)} bytes)")
    dims = struct.unpack(f">{expected_dims}I", header[4:])
    if dims[0] == 0:
        raise DataError(f"{path}: the header declares 0 {'images' if expected_dims == 3 else 'labels'} "
                        f"(an empty split; the file is incomplete or not this data set's)")
    if any(size == 0 for size in dims[1:]):
        raise DataError(f"{path}: bad dimensions {dims} (an image needs rows and cols >= 1)")
    declared = math.prod(dims)
    if declared > MAX_IDX_BYTES:
        raise DataError(f"{path}: header declares {declared:,} bytes of data for shape {dims}, more than "
                        f"the {MAX_IDX_BYTES:,} this tool reads (corrupt, or not a data set of small images)")
    payload = read_at_most(stream, declared + 1)  # one byte more than declared reveals a file that is too long
    if len(payload) != declared:
        found = f"{len(payload)}" if len(payload) < declared else "more"
        raise DataError(f"{path}: header declares {declared} bytes of data for shape {dims}, "
                        f"file has {found} (truncated or corrupt)")
    return torch.frombuffer(payload, dtype=torch.uint8).reshape(dims)


def read_at_most(stream: BinaryIO, size: int) -> bytearray:
    """Up to size bytes of stream, in chunks: memory follows what the file holds, not what a header claims."""
    content = bytearray()
    while len(content) < size:
        chunk = stream.read(min(READ_CHUNK_BYTES, size - len(content)))
        if not chunk:
            break
        content += chunk
    return content


def load_split(folder: Path, split: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, rows, cols) as float32 in [0, 1] and labels (n,) as int64, checked against each other.

    Raises:
        DataError: a file is bad, the counts disagree, or a label is out of range.
    """
    images_stem, labels_stem = SPLIT_FILES[split]
    images_path, labels_path = find_idx_file(folder, images_stem), find_idx_file(folder, labels_stem)
    if images_path is None or labels_path is None:
        raise DataError(f"{folder}: missing {images_stem if images_path is None else labels_stem}[.gz]")
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(f"{labels_path}: label {int(labels.max())} out of range (expected 0 to {num_classes - 1})")
    # (n, rows, cols) uint8 -> (n, 1, rows, cols) float32, as torchvision's ToTensor gives, once for all epochs
    return images.unsqueeze(1).float().div_(PIXEL_MAX), labels.long()


def whole_batch(count: int) -> slice:
    """The part of a batch of count images that one process takes when it trains alone: all of it."""
    return slice(0, count)


@dataclass(frozen=True)
class DataModule:
    """Both splits of a data set as tensors on one device, handed out in batches by index."""

    name: str
    source: Path
    class_names: tuple[str, ...]
    train_images: torch.Tensor  # (n_train, 1, rows, cols)
    train_labels: torch.Tensor  # (n_train,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    val_images: torch.Tensor | None = None  # held out of the training split by hold_out()
    val_labels: torch.Tensor | None = None

    @property
    def num_inputs(self) -> int:
        """Pixels per image: the input width d of the MLP."""
        return math.prod(self.train_images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The (images, labels) of "train", "test", or "val" when images were held out (hold_out).

        Raises:
            DataError: no such split here (a programming error made visible, never a silent other split).
        """
        if split == "train":
            return self.train_images, self.train_labels
        if split == "test":
            return self.test_images, self.test_labels
        if split == "val" and self.val_images is not None and self.val_labels is not None:
            return self.val_images, self.val_labels
        known = ", ".join(["train", "test", *(["val"] if self.val_labels is not None else [])])
        raise DataError(f"{self.source}: no {split!r} split (this data has {known})")

    def batches(self, split: str, batch_size: int, generator: torch.Generator | None = None,
                skip: int = 0, share: Callable[[int], slice] = whole_batch,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches: shuffled by generator's permutation if given, else in file order.

        The last batch may be smaller, as with a DataLoader without drop_last. skip leaves out the first
        batches, so that an epoch interrupted after `skip` batches continues with the same order. Under
        several processes every process draws the same permutation and takes its own part of each batch
        (share, given a batch's size: Ranks.share): together they see exactly the batches of one process.
        """
        images, labels = self.split(split)
        count = len(labels)
        starts = range(skip * batch_size, count, batch_size)
        # drawn on the CPU so that a seed gives the same order on every device
        order = None if generator is None else torch.randperm(count, generator=generator).to(labels.device)
        for start in starts:
            part = share(min(batch_size, count - start))
            rows = slice(start + part.start, start + part.stop)
            if order is None:
                yield images[rows], labels[rows]
            else:
                indices = order[rows]
                # index_select gathers rows about twice as fast as images[indices] (measured on CPU)
                yield images.index_select(0, indices), labels.index_select(0, indices)


def hold_out(data: DataModule, count: int, generator: torch.Generator) -> DataModule:
    """data with count random training images moved to a validation split, for honest model selection.

    Raises:
        DataError: count leaves no training images.
    """
    total = len(data.train_labels)
    if not 1 <= count < total:
        raise DataError(f"--val-size {count}: the training split has {total} images; expected 1 to {total - 1}")
    order = torch.randperm(total, generator=generator).to(data.train_labels.device)
    kept, held = order[count:].sort().values, order[:count].sort().values
    images, labels = data.train_images, data.train_labels
    return dataclasses.replace(data, train_images=images.index_select(0, kept),
                               train_labels=labels.index_select(0, kept), val_images=images.index_select(0, held),
                               val_labels=labels.index_select(0, held))


def load_data(dataset: str, data_dir: Path | None = None, device: torch.device | str = "cpu",
              cache_dir: Path | None = None, system_dirs: Sequence[Path] | None = None,
              download: bool = True) -> DataModule:
    """Find, read and check a data set, and place both splits on device.

    Raises:
        DataError: the data set is unknown, missing, or its files are bad.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}, expected one of {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    folder = find_dataset_dir(spec, data_dir, cache_dir or default_cache_dir(), system_dirs, download)
    train_images, train_labels = load_split(folder, "train", len(spec.class_names))
    test_images, test_labels = load_split(folder, "test", len(spec.class_names))
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(f"{folder}: train images are {tuple(train_images.shape[2:])} pixels "
                        f"but test images are {tuple(test_images.shape[2:])}")
    return DataModule(dataset, folder, spec.class_names, train_images.to(device), train_labels.to(device),
                      test_images.to(device), test_labels.to(device))


@dataclass(frozen=True)
class SplitInfo:
    split: str
    count: int
    image_shape: list[int]  # (channels, rows, cols)
    class_counts: dict[str, int]


def describe_data(data: DataModule) -> list[SplitInfo]:
    """Size, image shape and images per class of each split: what `mlp data info` shows."""
    described = []
    for split in SPLITS:
        images, labels = data.split(split)
        counts = torch.bincount(labels.cpu(), minlength=data.num_classes).tolist()
        described.append(SplitInfo(split, len(labels), list(images.shape[1:]), dict(zip(data.class_names, counts,
                                                                                          strict=True))))
    return described
