"""Image augmentation for whole batches on the device: random shifts and flips, no per-sample Python.

The images may be one process's rows of a larger batch (under torchrun): the random draws are always made for
the whole batch and the rows' own are used, so the result does not depend on how many processes share it.
"""

import torch

MAX_SHIFT_PIXELS = 2
WHOLE_BATCH = slice(None)


def shift_images(images: torch.Tensor, max_shift: int, generator: torch.Generator, rows: slice = WHOLE_BATCH,
                 batch_count: int | None = None) -> torch.Tensor:
    """Each image (n, c, h, w) moved by its own random (dy, dx) in [-max_shift, max_shift], zero fill.

    images are `rows` of a batch of batch_count images (default: the whole batch).
    """
    count, channels, height, width = images.shape
    drawn = (batch_count or count, 1, 1)
    dy = torch.randint(-max_shift, max_shift + 1, drawn, generator=generator)[rows].to(images.device)
    dx = torch.randint(-max_shift, max_shift + 1, drawn, generator=generator)[rows].to(images.device)
    rows_from = torch.arange(height, device=images.device).view(1, height, 1) - dy  # (n, h, 1): source row
    cols_from = torch.arange(width, device=images.device).view(1, 1, width) - dx  # (n, 1, w): source column
    inside = (rows_from >= 0) & (rows_from < height) & (cols_from >= 0) & (cols_from < width)  # (n, h, w)
    source = (rows_from.clamp(0, height - 1) * width + cols_from.clamp(0, width - 1)).reshape(count, 1, height * width)
    moved = images.reshape(count, channels, height * width).gather(2, source.expand(count, channels, -1))
    return moved.reshape(count, channels, height, width) * inside.unsqueeze(1)


def flip_images(images: torch.Tensor, generator: torch.Generator, rows: slice = WHOLE_BATCH,
                batch_count: int | None = None) -> torch.Tensor:
    """Each image mirrored left to right with probability 1/2 (images are `rows` of a batch of batch_count)."""
    is_flipped = (torch.rand(batch_count or len(images), generator=generator)[rows] < 0.5).to(images.device)
    return torch.where(is_flipped.view(-1, 1, 1, 1), images.flip(-1), images)


def augment_batch(images: torch.Tensor, augmentations: tuple[str, ...], generator: torch.Generator,
                  rows: slice = WHOLE_BATCH, batch_count: int | None = None) -> torch.Tensor:
    """images with each named augmentation applied ("shift", "flip"), in that order."""
    if "shift" in augmentations:
        images = shift_images(images, MAX_SHIFT_PIXELS, generator, rows, batch_count)
    if "flip" in augmentations:
        images = flip_images(images, generator, rows, batch_count)
    return images
