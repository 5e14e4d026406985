"""Beyond the book: schedules, label smoothing and augmentation, checked against their definitions."""

import math
from pathlib import Path

import pytest
import torch

from mlp_cli.augment import flip_images, shift_images
from mlp_cli.checkpoint import load_checkpoint
from mlp_cli.config import load_config
from mlp_cli.errors import ConfigError
from mlp_cli.optimization import learning_rate
from mlp_cli.training import resume_run, train


def rates(**settings: object) -> list[float]:
    config = load_config(None, {"lr": 1.0, **settings})
    return [learning_rate(config, epoch) for epoch in range(1, config.epochs + 1)]


def test_no_schedule_keeps_the_learning_rate() -> None:
    assert rates(epochs=4) == [1.0] * 4


def test_step_schedule_divides_by_ten_at_half_and_three_quarters() -> None:
    assert rates(epochs=8, schedule="step") == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_schedule_after_a_linear_warmup() -> None:
    values = rates(epochs=6, schedule="cosine", warmup_epochs=2)
    assert values[:2] == pytest.approx([1 / 3, 2 / 3])
    assert values[2:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)])


def test_shift_moves_pixels_by_at_most_two_with_zero_fill_and_keeps_shapes() -> None:
    images = torch.zeros(500, 1, 28, 28)
    images[:, 0, 14, 14] = 1.0  # one bright pixel in the middle of every image
    shifted = shift_images(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    rows, cols = (shifted[:, 0] == 1).nonzero()[:, 1], (shifted[:, 0] == 1).nonzero()[:, 2]
    assert len(rows) == 500  # each pixel moved, none lost
    assert (rows - 14).abs().max() <= 2 and (cols - 14).abs().max() <= 2
    assert len({(r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True)}) == 25  # all 5x5 offsets
    edge = torch.ones(1, 1, 28, 28)
    moved = shift_images(edge.expand(200, 1, 28, 28).clone(), 2, torch.Generator().manual_seed(1))
    assert (moved == 0).any() and set(moved.unique().tolist()) <= {0.0, 1.0}  # zero fill, no new values


def test_flip_mirrors_about_half_of_the_images() -> None:
    images = torch.rand(1000, 1, 28, 28)
    flipped = flip_images(images, torch.Generator().manual_seed(0))
    is_mirrored = (flipped == images.flip(-1)).flatten(1).all(dim=1)
    is_same = (flipped == images).flatten(1).all(dim=1)
    assert (is_mirrored | is_same).all()
    assert is_mirrored.float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_label_smoothing_changes_the_training_loss_only(data_dir: Path) -> None:
    common = {"data_dir": str(data_dir), "hidden": (16,), "batch_size": 16, "epochs": 1, "threads": 1}
    plain = train(load_config(None, common), Path("plain")).history[0]
    smooth = train(load_config(None, {**common, "label_smoothing": 0.2}), Path("smooth")).history[0]
    assert smooth.train_loss != plain.train_loss
    assert smooth.test_loss is not None  # evaluated with the plain loss


def test_augmented_runs_resume_exactly(data_dir: Path) -> None:
    settings = {"data_dir": str(data_dir), "hidden": (16,), "batch_size": 16, "threads": 1,
                "augment": "shift,flip", "schedule": "cosine", "warmup_epochs": 1, "dropout": 0.1}
    train(load_config(None, {**settings, "epochs": 2}), Path("a"))
    resume_run(Path("a/last.pt"), {"epochs": 4})
    train(load_config(None, {**settings, "epochs": 4}), Path("b"))
    a, b = load_checkpoint(Path("a/last.pt")).model_state, load_checkpoint(Path("b/last.pt")).model_state
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_unknown_augmentation_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"--augment: .* expected some of shift, flip"):
        load_config(None, {"augment": "rotate"})
