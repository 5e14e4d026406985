"""The book's SGD, written out: the same steps as torch.optim.SGD, without its start-up cost."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional

from mlp_cli.config import load_config
from mlp_cli.models import build_model
from mlp_cli.optim import SGD
from mlp_cli.optimization import make_optimizer


def train_steps(optimizer_class: type, weight_decay: float, impl: str) -> dict[str, torch.Tensor]:
    """Weights after 20 minibatch steps of one model from seed 0 on seeded random data."""
    torch.manual_seed(0)
    model = build_model(impl, 784, [32, 16], 10, 0.1)
    optimizer = optimizer_class(model.parameters(), lr=0.1, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        images, labels = torch.rand(16, 784, generator=generator), torch.randint(0, 10, (16,), generator=generator)
        loss = functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return {key: value.clone() for key, value in model.state_dict().items()}


@pytest.mark.parametrize("impl", ["scratch", "concise"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_the_written_out_sgd_steps_equal_torch_optim_sgd_to_the_bit(impl: str, weight_decay: float) -> None:
    # exact: the same tensor operations (grad + wd * w, then w - lr * grad) in the same order as torch's
    ours, torchs = train_steps(SGD, weight_decay, impl), train_steps(torch.optim.SGD, weight_decay, impl)
    assert all(torch.equal(ours[key], torchs[key]) for key in ours)
    untrained = build_model(impl, 784, [32, 16], 10, 0.1).state_dict()
    assert not all(torch.equal(ours[key], untrained[key]) for key in ours)


def test_its_state_dict_has_torchs_layout_both_ways() -> None:
    model = build_model("scratch", 784, [8], 10, 0.1)
    saved_by_torch = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=0.001).state_dict()
    ours = SGD(model.parameters(), lr=0.1)
    ours.load_state_dict(saved_by_torch)
    assert ours.param_groups[0]["lr"] == 0.05 and ours.param_groups[0]["weight_decay"] == 0.001
    restored = torch.optim.SGD(model.parameters(), lr=0.1)
    restored.load_state_dict(ours.state_dict())
    assert restored.param_groups[0]["lr"] == 0.05 and restored.param_groups[0]["weight_decay"] == 0.001


def test_a_momentum_state_is_refused() -> None:
    model = build_model("scratch", 784, [8], 10, 0.1)
    with_momentum = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).state_dict()
    with pytest.raises(ValueError, match="not plain SGD"):
        SGD(model.parameters(), lr=0.1).load_state_dict(with_momentum)


def test_a_default_run_does_not_import_torch_dynamo(data_dir: Path) -> None:
    code = ("import sys; from pathlib import Path; from mlp_cli.config import load_config; "
            "from mlp_cli.training import train; "
            f"train(load_config(None, {{'data_dir': {str(data_dir)!r}, 'epochs': 1, 'hidden': '16', 'threads': 1}}), "
            "Path('run')); print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_runs_fused_on_the_cpu_and_an_unfused_checkpoint_resumes_unfused(name: str) -> None:
    model = torch.nn.Linear(4, 2)
    config = load_config(None, {"optimizer": name, "lr": 1e-3})
    optimizer = make_optimizer(model, config)
    assert optimizer.param_groups[0]["fused"] is True
    unfused = type(optimizer)(model.parameters(), lr=1e-3)  # as mlp made it before 0.3.0
    model(torch.ones(1, 4)).sum().backward()
    unfused.step()
    optimizer.load_state_dict(unfused.state_dict())
    assert optimizer.param_groups[0]["fused"] is None
