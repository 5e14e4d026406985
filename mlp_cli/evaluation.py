"""Measuring a model on a split: the loss, accuracy and confusions that training records and `mlp eval` reports."""

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

from mlp_cli.checkpoint import load_checkpoint, restore_model
from mlp_cli.config import SPLITS, Config
from mlp_cli.data import DataModule, load_data
from mlp_cli.devices import resolve_device
from mlp_cli.distributed import SINGLE_PROCESS, Ranks
from mlp_cli.errors import MlpError
from mlp_cli.events import Evaluation


def precision_context(data: DataModule, config: Config) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass when config asks for it; float32 otherwise."""
    device_type = data.train_labels.device.type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.precision == "bf16")


@dataclass(frozen=True)
class SplitMetrics:
    loss: float  # mean cross-entropy
    accuracy: float
    confusion: torch.Tensor  # (q, q) counts on the CPU: row = true class, column = predicted class


def evaluate(model: nn.Module, data: DataModule, split: str, config: Config,
             ranks: Ranks = SINGLE_PROCESS) -> SplitMetrics:
    """Mean cross-entropy loss, accuracy and confusion matrix of model on a whole split.

    Under torchrun each rank evaluates its part of every batch and the sums are added up over the ranks,
    so every rank gets the numbers of the whole split.
    """
    model.eval()
    device, classes = data.train_labels.device, data.num_classes
    loss_sum = torch.zeros((), device=device)
    counts = torch.zeros(classes * classes, dtype=torch.long, device=device)
    with torch.inference_mode(), precision_context(data, config):
        for images, labels in data.batches(split, config.batch_size, share=ranks.share):
            logits = model(images)
            loss_sum += functional.cross_entropy(logits, labels, reduction="sum")
            counts += torch.bincount(labels * classes + logits.argmax(dim=1), minlength=classes * classes)
    confusion = ranks.sum(counts).reshape(classes, classes).cpu()
    count = len(data.split(split)[1])
    return SplitMetrics(ranks.sum(loss_sum).item() / count, confusion.trace().item() / count, confusion)


def predict_split(model: nn.Module, data: DataModule, split: str, config: Config) -> torch.Tensor:
    """The (n,) predicted class of every image of a split, in file order, on the CPU."""
    model.eval()
    with torch.inference_mode(), precision_context(data, config):
        return torch.cat([model(images).argmax(dim=1) for images, _ in data.batches(split, config.batch_size)]).cpu()


def evaluate_checkpoint(path: Path | str, split: str = "test", data_dir: Path | None = None,
                        device: str = "auto", errors_image: Path | None = None) -> Evaluation:
    """Loss, accuracy and confusions of a saved model on a split of the data set it was trained on.

    errors_image, if given, receives a grid of misclassified images with their true and predicted labels.

    Raises:
        MlpError: the checkpoint or the data cannot be used.
    """
    path = Path(path)
    if split not in SPLITS:
        raise MlpError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    state = load_checkpoint(path)
    config, model = restore_model(state, path)
    torch_device = resolve_device(device)
    stored_dir = Path(config.data_dir) if config.data_dir else None
    data = load_data(config.dataset, data_dir or stored_dir, torch_device)
    if data.num_inputs != state.architecture.num_inputs:
        raise MlpError(f"{data.source}: images have {data.num_inputs} pixels, the model expects "
                       f"{state.architecture.num_inputs}")
    model = model.to(torch_device)
    metrics = evaluate(model, data, split, config)
    stopped_after_batch = state.progress.batches_done if state.progress else None
    # weights saved mid-epoch (after a Ctrl-C) are not the ones whose accuracy was recorded
    recorded = (state.metrics[-1].test_accuracy if state.metrics and split == "test" and state.progress is None
                else None)
    # in float64, so that --json shows 0.8776666666666667 rather than float32 noise (0.8776666522026062)
    confusion = metrics.confusion.double()
    per_class = confusion.diag() / confusion.sum(dim=1).clamp(min=1)
    if errors_image is not None:
        from mlp_cli.plots import plot_mistakes  # matplotlib only when a picture is asked for

        images, labels = data.split(split)
        plot_mistakes(images.cpu(), labels.cpu(), predict_split(model, data, split, config), data.class_names,
                      errors_image)
    return Evaluation(str(path), state.epoch, split, metrics.loss, metrics.accuracy, recorded, stopped_after_batch,
                      class_names=list(data.class_names), per_class_accuracy=per_class.tolist(),
                      confusion=metrics.confusion.tolist())
