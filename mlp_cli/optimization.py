"""The optimizer and the learning-rate schedule a Config names."""

import math

import torch
from torch import nn

from mlp_cli.config import Config
from mlp_cli.errors import MlpError
from mlp_cli.optim import SGD, Optimizer

FUSED_ADAM_DEVICES = ("cpu", "cuda")


def make_optimizer(model: nn.Module, config: Config) -> Optimizer:
    """Minibatch SGD as in the book (written out, see optim.py), SGD with momentum, Adam (the Flux example's
    choice) or AdamW.

    Raises:
        MlpError: torch cannot start an optimizer: its first one imports torch._dynamo, which needs a
            writable temporary folder (not the case under `ulimit -f 0` or with a read-only /tmp).
    """
    try:
        return choose_optimizer(model, config)
    except OSError as err:
        raise MlpError(f"torch cannot start the {config.optimizer} optimizer ({err.strerror or err}); it needs "
                       "a writable temporary folder (set TMPDIR to one)") from err


def choose_optimizer(model: nn.Module, config: Config) -> Optimizer:
    """The optimizer config names, over model's parameters."""
    parameters, lr, decay = list(model.parameters()), config.lr, config.weight_decay
    if config.optimizer == "momentum":
        return torch.optim.SGD(parameters, lr=lr, momentum=config.momentum, weight_decay=decay)
    # torch's fused Adam(W) updates every parameter in one kernel: 3 to 6 times faster per step than its
    # default loop on the CPU (configs/best-fashion.toml's epoch: 4.7 s against 5.3 s, measured in one run).
    # A checkpoint of a run started unfused keeps "fused": None in its param_groups: its resume stays unfused.
    fused = parameters[0].device.type in FUSED_ADAM_DEVICES if parameters else False
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=decay, fused=fused or None)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay, fused=fused or None)
    return SGD(parameters, lr=lr, weight_decay=decay)


def learning_rate(config: Config, epoch: int) -> float:
    """The learning rate of a (1-based) epoch: linear warm-up, then the schedule over the remaining epochs."""
    if epoch <= config.warmup_epochs:
        return config.lr * epoch / (config.warmup_epochs + 1)
    done = (epoch - config.warmup_epochs - 1) / max(config.epochs - config.warmup_epochs, 1)  # 0 at the start
    if config.schedule == "step":
        return config.lr * (0.1 if done >= 0.5 else 1.0) * (0.1 if done >= 0.75 else 1.0)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * done))
    return config.lr
