"""Where training runs: the device, its thread count and whether it can do the requested precision."""


import torch

from mlp_cli.config import DEVICE_PATTERN, Config, available_cores
from mlp_cli.distributed import SINGLE_PROCESS, Ranks
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


def configure_threads(threads: int, processes_here: int = 1) -> int:
    """Set torch's CPU thread count before any work and return it.

    0 shares the cores this process may run on among the processes of the job on this machine: two
    processes with two threads each on two cores run far slower than with one each (oversubscription).

    Raises:
        MlpError: more threads than this process has cores.
    """
    cores = available_cores()
    if threads > cores:
        # refused rather than capped: a silent cap would hide the setting, and more threads than cores only
        # add waiting (a measured 60x slower epoch with 1000 threads on 2 cores)
        raise MlpError(f"--threads {threads}: this process may run on {cores} core{'s' if cores != 1 else ''}; "
                       f"more threads than cores only slow torch down (use 0 for every core, or 1 to {cores})")
    count = threads or max(1, cores // processes_here)
    torch.set_num_threads(count)
    return count


def resolve_rank_device(name: str, ranks: Ranks) -> torch.device:
    """The device of this process of a distributed job: the CPU, or the GPU numbered by its local rank.

    Raises:
        MlpError: the device cannot be shared out by rank (mps, an explicit cuda:N) or there are too few GPUs.
    """
    if not DEVICE_PATTERN.fullmatch(name):
        raise MlpError(f"--device {name}: expected auto, cpu or cuda under torchrun")
    if name == "mps" or (name != "auto" and ":" in name):
        raise MlpError(f"--device {name}: under torchrun each process takes cuda:LOCAL_RANK; "
                       f"use --device cuda, cpu or auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    resolve_device(name)  # raises if CUDA is not available
    if ranks.local_rank >= torch.cuda.device_count():
        raise MlpError(f"local rank {ranks.local_rank} needs a GPU, but this machine has "
                       f"{torch.cuda.device_count()}; start at most that many processes per node")
    device = torch.device("cuda", ranks.local_rank)
    torch.cuda.set_device(device)
    return device


def prepare_device(config: Config, ranks: Ranks = SINGLE_PROCESS) -> tuple[torch.device, int]:
    """The device and thread count for config (and this process's rank), set up before any tensor work."""
    device = resolve_rank_device(config.device, ranks) if ranks.is_distributed else resolve_device(config.device)
    check_precision(device, config.precision)
    return device, configure_threads(config.threads, ranks.local_world_size)
