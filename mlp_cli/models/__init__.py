"""build_model: the scratch and concise MLPs behind one call."""

from collections.abc import Sequence

import torch
from torch import nn

from mlp_cli.models.concise import MLPConcise
from mlp_cli.models.scratch import MLPScratch

__all__ = ["MLPConcise", "MLPScratch", "build_model"]


def build_model(impl: str, num_inputs: int, num_hiddens: Sequence[int], num_outputs: int,
                sigma: float, activation: str = "relu", dropout: float = 0.0) -> nn.Module:
    """A ready-to-train MLP: for concise, the lazy layers are materialized by one forward pass.

    sigma sets the scratch model's weight init (N(0, sigma^2)); concise keeps torch's default init, as in D2L.
    activation is the hidden layers' nonlinearity and dropout the probability of dropping a hidden unit while
    training: hand-written in scratch, torch's modules in concise.
    """
    if impl == "scratch":
        return MLPScratch(num_inputs, num_hiddens, num_outputs, sigma, activation, dropout)
    if impl == "concise":
        model = MLPConcise(num_hiddens, num_outputs, activation, dropout)
        # materialize before anything reads shapes, copies, saves or loads the parameters
        model(torch.zeros(1, num_inputs))
        return model
    raise ValueError(f"unknown impl {impl!r}")
