"""D2L's MLPScratch (5.2.1): parameters as plain nn.Parameter tensors and a hand-written ReLU."""

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from mlp_cli.activations import TRAINING_ACTIVATIONS


def dropout_layer(X: torch.Tensor, dropout: float) -> torch.Tensor:
    """Zero each element with probability dropout and scale the rest by 1 / (1 - dropout) (D2L 5.6.2)."""
    mask = (torch.rand(X.shape, device=X.device) > dropout).float()
    return mask * X / (1.0 - dropout)


def column_major(W: torch.Tensor) -> torch.Tensor:
    """W's values, with each column contiguous in memory: how nn.Linear stores its weight (as W.T, row-major).

    The shape and every value stay the book's; only the memory order changes, so that H @ W takes the matrix
    kernels nn.Linear takes. With 10 output columns the row-major product and its weight gradient ran 2-6x
    slower (a 256 x 256 H: 100 and 170 us against 55 and 28 us); gradients and optimizer state follow the
    parameter's layout.
    """
    return W.T.contiguous().T


class MLPScratch(nn.Module):
    """H1 = sigma(X W1 + b1), H2 = sigma(H1 W2 + b2), ..., O = H_L W_{L+1} + b_{L+1} (D2L 5.1, 5.2.1).

    With one hidden layer and ReLU this is exactly the book's model: H = ReLU(X W1 + b1), O = H W2 + b2.
    """

    def __init__(self, num_inputs: int, num_hiddens: Sequence[int], num_outputs: int, sigma: float,
                 activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.num_inputs = num_inputs
        self.dropout = dropout
        self.activation = TRAINING_ACTIVATIONS[activation]
        self.num_layers = len(num_hiddens) + 1
        widths = [num_inputs, *num_hiddens, num_outputs]
        # registered in a fixed order W1, b1, W2, b2, ...: the names are checkpoint keys, the order is the
        # optimizer's parameter order
        for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(widths), start=1):
            W = torch.randn(fan_in, fan_out) * sigma  # the book's draw, element for element
            self.register_parameter(f"W{layer}", nn.Parameter(column_major(W)))
            self.register_parameter(f"b{layer}", nn.Parameter(torch.zeros(fan_out)))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = X.reshape((-1, self.num_inputs))  # (n, d)
        H = X
        for layer in range(1, self.num_layers):
            W, b = getattr(self, f"W{layer}"), getattr(self, f"b{layer}")
            H = self.activation(H @ W + b)  # (n, h_layer)
            if self.training and self.dropout > 0:
                H = dropout_layer(H, self.dropout)
        W, b = getattr(self, f"W{self.num_layers}"), getattr(self, f"b{self.num_layers}")
        O = H @ W + b  # (n, q)
        return O
