"""The book's minibatch SGD (D2L 3.4), written out: the default optimizer, without torch.optim's machinery.

torch.optim.SGD computes the same step, but its first use imports torch._dynamo (seconds of start-up) and
every step and zero_grad passes through dynamo's wrappers. This class performs torch.optim.SGD's own
tensor operations for momentum 0, in the same order, so the weights are the same to the bit (tested), and
its state_dict has torch's layout, so checkpoints of either load into the other.
"""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


class SGD:
    """w <- w - lr * (dL/dw + weight_decay * w), for each parameter, after every minibatch."""

    def __init__(self, parameters: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0):
        self.params = list(parameters)
        # one group, as torch.optim keeps it: the training loop sets group["lr"] every epoch
        self.param_groups: list[dict[str, Any]] = [{"params": self.params, "lr": lr, "weight_decay": weight_decay}]

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        for param in self.params:
            if param.grad is None:
                continue
            gradient = param.grad
            if group["weight_decay"] != 0:
                gradient = gradient.add(param, alpha=group["weight_decay"])
            param.add_(gradient, alpha=-group["lr"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.SGD's layout (no per-parameter state without momentum)."""
        group = self.param_groups[0]
        return {"state": {}, "param_groups": [{
            "lr": group["lr"], "momentum": 0, "dampening": 0, "weight_decay": group["weight_decay"],
            "nesterov": False, "maximize": False, "foreach": None, "differentiable": False, "fused": None,
            "params": list(range(len(self.params)))}]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take the learning rate and weight decay of a saved SGD (this class's or torch.optim.SGD's)."""
        saved = state["param_groups"][0]
        if saved.get("momentum", 0) or len(saved["params"]) != len(self.params):
            raise ValueError("the saved optimizer state is not plain SGD over these parameters")
        self.param_groups[0]["lr"] = saved["lr"]
        self.param_groups[0]["weight_decay"] = saved["weight_decay"]


Optimizer = torch.optim.Optimizer | SGD  # what the training loop steps
