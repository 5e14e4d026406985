"""Evaluating a saved model: rebuild it from its checkpoint alone and measure it on a split."""

from dataclasses import dataclass
from pathlib import Path

from mlp_cli.checkpoint import load_checkpoint, restore_model
from mlp_cli.data import SPLITS, load_data
from mlp_cli.devices import resolve_device
from mlp_cli.errors import MlpError
from mlp_cli.training import evaluate


@dataclass(frozen=True)
class Evaluation:
    """What `mlp eval` reports."""

    checkpoint: str
    epoch: int
    split: str
    loss: float
    accuracy: float
    recorded_accuracy: float | None  # the test accuracy logged for this epoch during training
    stopped_after_batch: int | None  # set when the run was stopped mid-epoch: batches into the next epoch
    class_names: list[str]
    per_class_accuracy: list[float]  # in the order of class_names
    confusion: list[list[int]]  # row = true class, column = predicted class


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
    checkpoint = load_checkpoint(path)
    config, model = restore_model(checkpoint, path)
    torch_device = resolve_device(device)
    stored_dir = Path(config.data_dir) if config.data_dir else None
    data = load_data(config.dataset, data_dir or stored_dir, torch_device)
    if data.num_inputs != checkpoint["model"]["num_inputs"]:
        raise MlpError(f"{data.source}: images have {data.num_inputs} pixels, the model expects "
                       f"{checkpoint['model']['num_inputs']}")
    metrics = evaluate(model.to(torch_device), data, split, config)
    epoch, progress = checkpoint["epoch"], checkpoint.get("progress")
    stopped_after_batch = progress["batches_done"] if progress else None
    rows = [row for row in checkpoint["metrics"] if row.get("epoch") == epoch]
    # weights saved mid-epoch (after a Ctrl-C) are not the ones whose accuracy was recorded
    recorded = rows[0]["test_accuracy"] if rows and split == "test" and progress is None else None
    # in float64, so that --json shows 0.8776666666666667 rather than float32 noise (0.8776666522026062)
    confusion = metrics.confusion.cpu().double()
    per_class = confusion.diag() / confusion.sum(dim=1).clamp(min=1)
    if errors_image is not None:
        from mlp_cli.plots import plot_mistakes  # matplotlib only when a picture is asked for

        images, labels = data.split(split)
        plot_mistakes(images.cpu(), labels.cpu(), metrics.predictions, data.class_names, errors_image)
    return Evaluation(str(path), epoch, split, metrics.loss, metrics.accuracy, recorded, stopped_after_batch,
                      class_names=list(data.class_names), per_class_accuracy=per_class.tolist(),
                      confusion=metrics.confusion.tolist())
