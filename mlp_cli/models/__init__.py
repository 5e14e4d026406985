"""build_model: the scratch and concise MLPs behind one call; model_for: the one a run's Config describes."""

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from mlp_cli.config import Config
from mlp_cli.models.concise import MLPConcise
from mlp_cli.models.scratch import MLPScratch

__all__ = ["MLPConcise", "MLPScratch", "build_model", "forward_multiply_adds", "model_for", "parameter_shapes",
           "parameter_shapes_for"]


def model_for(config: Config, num_inputs: int, num_outputs: int) -> nn.Module:
    """The model config describes (every model setting is read here, and only here), for data of num_inputs
    pixels and num_outputs classes."""
    return build_model(config.impl, num_inputs, config.hidden, num_outputs, config.sigma, config.activation,
                       config.dropout, config.init)


def parameter_shapes_for(config: Config, num_inputs: int, num_outputs: int) -> dict[str, tuple[int, ...]]:
    """The name and shape of every parameter model_for(config, ...) makes, without making them."""
    return parameter_shapes(config.impl, num_inputs, config.hidden, num_outputs, config.dropout)


def forward_multiply_adds(config: Config, num_inputs: int, num_outputs: int) -> int:
    """The multiply-adds of the matrix products of one training batch's forward pass (the backward pass does
    about twice as many): what decides whether the model is worth more than one CPU thread."""
    widths = [num_inputs, *config.hidden, num_outputs]
    return config.batch_size * sum(fan_in * fan_out for fan_in, fan_out in itertools.pairwise(widths))


def build_model(impl: str, num_inputs: int, num_hiddens: Sequence[int], num_outputs: int,
                sigma: float, activation: str = "relu", dropout: float = 0.0, init: str = "book") -> nn.Module:
    """A ready-to-train MLP: for concise, the lazy layers are materialized by one forward pass.

    init "book" keeps each model's own initialisation as in D2L (scratch: N(0, sigma^2); concise: torch's
    default); "normal", "kaiming" and "xavier" draw every weight matrix of either model the same way.
    activation is the hidden layers' nonlinearity and dropout the probability of dropping a hidden unit while
    training: hand-written in scratch, torch's modules in concise.
    """
    if impl == "scratch":
        model: nn.Module = MLPScratch(num_inputs, num_hiddens, num_outputs, sigma, activation, dropout)
    elif impl == "concise":
        model = MLPConcise(num_hiddens, num_outputs, activation, dropout)
        # materialize before anything reads shapes, copies, saves or loads the parameters
        model(torch.zeros(1, num_inputs))
    else:
        raise ValueError(f"unknown impl {impl!r}")
    if init != "book":
        initialize(model, init, sigma)
    return model


def parameter_shapes(impl: str, num_inputs: int, num_hiddens: Sequence[int], num_outputs: int,
                     dropout: float = 0.0) -> dict[str, tuple[int, ...]]:
    """The name and shape of every parameter build_model makes, without making them.

    A checkpoint's weights are compared with these before its model is built, so a small file that claims a
    huge model is refused without allocating it (a test keeps this in step with build_model).
    """
    layers = list(itertools.pairwise([num_inputs, *num_hiddens, num_outputs]))
    if impl == "scratch":  # W (fan_in, fan_out) as in the book
        return {name: shape for layer, (fan_in, fan_out) in enumerate(layers, start=1)
                for name, shape in ((f"W{layer}", (fan_in, fan_out)), (f"b{layer}", (fan_out,)))}
    # concise: Flatten at index 0, then per hidden layer LazyLinear, activation[, Dropout]; the output layer last
    modules_per_layer = 3 if dropout > 0 else 2
    return {name: shape for layer, (fan_in, fan_out) in enumerate(layers)
            for name, shape in ((f"{1 + layer * modules_per_layer}.weight", (fan_out, fan_in)),
                                (f"{1 + layer * modules_per_layer}.bias", (fan_out,)))}


def weight_std(init: str, fan_in: int, fan_out: int, sigma: float) -> float:
    """The normal distribution's std: sigma, He et al.'s sqrt(2 / fan_in) or Glorot's sqrt(2 / (fan_in + fan_out))."""
    if init == "kaiming":
        return math.sqrt(2.0 / fan_in)
    if init == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    return sigma


@torch.no_grad()
def initialize(model: nn.Module, init: str, sigma: float) -> None:
    """Redraw every weight matrix from N(0, std^2) for the scheme, and zero every bias (D2L 5.4.2)."""
    for name, parameter in model.named_parameters():
        if parameter.dim() == 1:
            parameter.zero_()
            continue
        # scratch stores W as (fan_in, fan_out) like the book; nn.Linear stores weight as (fan_out, fan_in)
        fan_in, fan_out = parameter.shape if name.startswith("W") else reversed(parameter.shape)
        # drawn in row order whatever the parameter's memory layout (scratch's is column-major), so that a seed
        # draws the same weights as always
        parameter.copy_(torch.empty(parameter.shape).normal_(0.0, weight_std(init, fan_in, fan_out, sigma)))
