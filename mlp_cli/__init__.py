"""mlp: train, evaluate and explain multilayer perceptrons, as a CLI and as a library.

In a notebook:
    from mlp_cli import Config, train
    result = train(Config(impl="concise", epochs=3))  # shows its progress; progress=False for none

The names below are imported on first use, so that `mlp --help` does not pay for importing torch.
"""

import importlib
from typing import Any

__version__ = "0.4.0"

EXPORTS = {
    "Config": "mlp_cli.config",
    "load_config": "mlp_cli.config",
    "MlpError": "mlp_cli.errors",
    "DataModule": "mlp_cli.data",
    "load_data": "mlp_cli.data",
    "build_model": "mlp_cli.models",
    "MLPScratch": "mlp_cli.models",
    "MLPConcise": "mlp_cli.models",
    "train": "mlp_cli.notebook",  # with progress shown; mlp_cli.training.train takes any Reporter
    "Trainer": "mlp_cli.trainer",
    "resume_run": "mlp_cli.training",
    "evaluate": "mlp_cli.evaluation",
    "evaluate_checkpoint": "mlp_cli.evaluation",
    "load_checkpoint": "mlp_cli.checkpoint",
}
__all__ = list(EXPORTS)


def __dir__() -> list[str]:
    """The module's names with the lazy exports, so that tab completion in a notebook offers them."""
    return sorted({*globals(), *EXPORTS})


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module 'mlp_cli' has no attribute {name!r}")
    return getattr(importlib.import_module(EXPORTS[name]), name)
