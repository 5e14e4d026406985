"""D2L's concise MLP (5.2.2): nn.Sequential with lazily sized linear layers."""

from collections.abc import Sequence

from torch import nn

ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "identity": nn.Identity, "leaky-relu": nn.LeakyReLU,
    "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "softplus": nn.Softplus,
}


class MLPConcise(nn.Sequential):
    """Flatten, then (LazyLinear, activation[, Dropout]) per hidden layer, then a LazyLinear to the outputs.

    LazyLinear infers its input width at the first forward, as in the book; build_model runs that forward.
    """

    def __init__(self, num_hiddens: Sequence[int], num_outputs: int, activation: str = "relu",
                 dropout: float = 0.0):
        layers: list[nn.Module] = [nn.Flatten()]
        for width in num_hiddens:
            layers += [nn.LazyLinear(width), ACTIVATION_MODULES[activation]()]
            if dropout > 0:  # only then, so that the book's model keeps its layer numbers (checkpoint keys)
                layers.append(nn.Dropout(dropout))
        layers.append(nn.LazyLinear(num_outputs))
        super().__init__(*layers)
