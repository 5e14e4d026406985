"""Where training runs: the device, its thread count and whether it can do the requested precision."""

import os

import torch

from mlp_cli.config import DEVICE_PATTERN, Config
from mlp_cli.errors import MlpError


def resolve_device(name: str) -> torch.device:
    """The torch device for a --device value; auto prefers cuda, then mps, then cpu.

    Raises:
        MlpError: the requested accelerator is not available on this machine.
    """
    if not DEVICE_PATTERN.fullmatch(name):
        raise MlpError(f"--device {name}: expected auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MlpError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise MlpError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise MlpError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    return device


def check_precision(device: torch.device, precision: str) -> None:
    """Raise MlpError if device cannot run precision (bf16 autocast works on CPUs and most CUDA GPUs)."""
    if precision != "bf16":
        return
    if device.type == "mps":
        raise MlpError("--precision bf16: not supported on mps; use --precision fp32")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MlpError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use fp32")


def configure_threads(threads: int) -> int:
    """Set torch's CPU thread count before any work (0 = every core this process may run on); return it."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    count = threads or available
    torch.set_num_threads(count)
    return count



def prepare_device(config: Config) -> tuple[torch.device, int]:
    """The device and thread count for config, set up before any tensor work."""
    device = resolve_device(config.device)
    check_precision(device, config.precision)
    return device, configure_threads(config.threads)
