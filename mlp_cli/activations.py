"""Activation functions by name (D2L 5.1.2), for the models and for `mlp plot-activation`."""

import math
from collections.abc import Callable
from typing import Any

import torch

from mlp_cli.errors import MlpError

MAX_PLOT_POINTS = 100_000


def relu(X: torch.Tensor) -> torch.Tensor:
    """ReLU(x) = max(x, 0), written out as in D2L 5.2.1 rather than taken from torch."""
    a = torch.zeros_like(X)
    return torch.max(X, a)


class BookReLU(torch.autograd.Function):
    """relu(X) with the very gradient autograd derives for torch.max(X, zeros), in two kernels instead of five.

    That gradient is grad where x > 0 (or x is NaN), grad / 2 where x == 0 (a tie), and 0 where x < 0; autograd
    computes it with eq, div, where, lt and masked_fill_, whose boolean masks made them the slowest small kernels
    of a scratch step. threshold_backward gives the same numbers in one pass everywhere but at ties, which are
    rare (a pre-activation of exactly 0.0) and are mended with the book's grad / 2 whenever they may exist.
    """

    @staticmethod
    def forward(ctx: Any, X: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(X)
        return relu(X)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (X,) = ctx.saved_tensors
        grad_X = torch.ops.aten.threshold_backward(grad, X, 0)  # grad where x > 0 or NaN, else 0
        # on the CPU, one cheap reduction tells whether any x is 0 (or NaN); elsewhere, mend without a sync
        if X.device.type != "cpu" or (X.numel() and not X.abs().amin() > 0):
            grad_X = torch.where(X == 0, grad / 2, grad_X)
        return grad_X


def sigmoid(X: torch.Tensor) -> torch.Tensor:
    """sigmoid(x) = 1 / (1 + exp(-x)) (D2L 5.1.2.2), from exp(-|x|) so that neither branch can overflow."""
    z = torch.exp(-torch.abs(X))
    return torch.where(X >= 0, 1 / (1 + z), z / (1 + z))


def tanh(X: torch.Tensor) -> torch.Tensor:
    """tanh(x) = (1 - exp(-2x)) / (1 + exp(-2x)) = 2 sigmoid(2x) - 1 (D2L 5.1.2.3)."""
    return 2 * sigmoid(2 * X) - 1


def identity(X: torch.Tensor) -> torch.Tensor:
    """No nonlinearity: an MLP with it collapses to one affine map (D2L 5.1.1.2)."""
    return X


LEAKY_RELU_SLOPE = 0.01  # torch's default negative slope


def leaky_relu(X: torch.Tensor) -> torch.Tensor:
    """max(x, 0.01 x): a small slope instead of zero for negative inputs."""
    return torch.max(X, LEAKY_RELU_SLOPE * X)


def elu(X: torch.Tensor) -> torch.Tensor:
    """x for x > 0, exp(x) - 1 otherwise; exp of min(x, 0) so that the unused branch cannot overflow."""
    return torch.where(X > 0, X, torch.exp(torch.clamp(X, max=0)) - 1)


def gelu(X: torch.Tensor) -> torch.Tensor:
    """x Phi(x), with Phi the standard normal CDF: 0.5 x (1 + erf(x / sqrt 2))."""
    return 0.5 * X * (1 + torch.erf(X / math.sqrt(2)))


def silu(X: torch.Tensor) -> torch.Tensor:
    """x sigmoid(x) (also called swish)."""
    return X * sigmoid(X)


def softplus(X: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)), as max(x, 0) + log(1 + exp(-|x|)) so that exp never overflows."""
    return relu(X) + torch.log1p(torch.exp(-torch.abs(X)))


# every activation by name, each written out by hand: the scratch model's hidden layers and plot-activation
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "identity": identity,
    "leaky-relu": leaky_relu,
    "elu": elu,
    "gelu": gelu,
    "silu": silu,
    "softplus": softplus,
}


# the scratch model's hidden layers: the same functions, but ReLU's gradient in fewer kernels (equal by test)
TRAINING_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {**ACTIVATIONS, "relu": BookReLU.apply}


def activation_curve(name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation's values at x and its derivative there, computed by autograd (D2L 5.1.2)."""
    x = x.detach().clone().requires_grad_(True)
    y = ACTIVATIONS[name](x)
    # each y_i depends only on x_i, so the gradient of sum(y) is the elementwise derivative
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(x))
    return y.detach(), grad


def sample_activation(name: str, start: float, stop: float,
                      step: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x = start, start + step, ... (< stop), the activation there, and its autograd derivative.

    Raises:
        MlpError: the name is unknown, or the range is empty, not finite or too fine to plot.
    """
    if name not in ACTIVATIONS:
        raise MlpError(f"unknown activation {name!r}, expected one of {', '.join(ACTIVATIONS)}")
    if not (math.isfinite(start) and math.isfinite(stop) and start < stop):
        raise MlpError(f"--range {start} {stop}: expected two finite numbers, the first smaller")
    if (stop - start) / step > MAX_PLOT_POINTS:
        raise MlpError(f"--range {start} {stop}: more than {MAX_PLOT_POINTS:,} points at step {step}")
    x = torch.arange(start, stop, step)
    y, grad = activation_curve(name, x)
    return x, y, grad
