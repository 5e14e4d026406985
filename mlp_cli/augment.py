"""Image augmentation for whole batches on the device: random shifts and flips, no per-sample Python."""

import torch

MAX_SHIFT_PIXELS = 2


def shift_images(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image (n, c, h, w) moved by its own random (dy, dx) in [-max_shift, max_shift], zero fill."""
    count, channels, height, width = images.shape
    dy = torch.randint(-max_shift, max_shift + 1, (count, 1, 1), generator=generator).to(images.device)
    dx = torch.randint(-max_shift, max_shift + 1, (count, 1, 1), generator=generator).to(images.device)
    rows = torch.arange(height, device=images.device).view(1, height, 1) - dy  # (n, h, 1): source row
    cols = torch.arange(width, device=images.device).view(1, 1, width) - dx  # (n, 1, w): source column
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)  # (n, h, w)
    source = (rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)).reshape(count, 1, height * width)
    moved = images.reshape(count, channels, height * width).gather(2, source.expand(count, channels, -1))
    return moved.reshape(count, channels, height, width) * inside.unsqueeze(1)


def flip_images(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left to right with probability 1/2."""
    is_flipped = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(is_flipped.view(-1, 1, 1, 1), images.flip(-1), images)


def augment_batch(images: torch.Tensor, augmentations: tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    """images with each named augmentation applied ("shift", "flip"), in that order."""
    if "shift" in augmentations:
        images = shift_images(images, MAX_SHIFT_PIXELS, generator)
    if "flip" in augmentations:
        images = flip_images(images, generator)
    return images
