"""Activation functions by name (D2L 5.1.2), for the models and for `mlp plot-activation`."""

from collections.abc import Callable

import torch
from torch.nn import functional


def relu(X: torch.Tensor) -> torch.Tensor:
    """ReLU(x) = max(x, 0), written out as in D2L 5.2.1 rather than taken from torch."""
    a = torch.zeros_like(X)
    return torch.max(X, a)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "leaky-relu": functional.leaky_relu,
    "elu": functional.elu,
    "gelu": functional.gelu,
    "silu": functional.silu,
    "softplus": functional.softplus,
}


def activation_curve(name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation's values at x and its derivative there, computed by autograd (D2L 5.1.2)."""
    x = x.detach().clone().requires_grad_(True)
    y = ACTIVATIONS[name](x)
    # each y_i depends only on x_i, so the gradient of sum(y) is the elementwise derivative
    y.backward(torch.ones_like(x))
    return y.detach(), x.grad
