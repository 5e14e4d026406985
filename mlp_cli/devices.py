"""Where training runs: the device, its thread count and whether it can do the requested precision."""

import math

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


# The multiply-adds of one batch's forward pass from which a model gets every core under --threads 0. mlp's
# OpenMP threads wait passively (cli.use_passive_openmp_threads), so every parallel kernel pays for waking them:
# on this project's 2-core machine a second thread made an epoch of the book's 784-256-10 MLP (51 million per
# batch of 256) slower, broke even at 784-512 and 784-1024 (0.1 and 0.2 billion), and paid off for 784-1024-512
# (0.34 billion) and 784-2048 (0.41 billion). README, "Threads"; benchmarks/bench_threads.py.
PARALLEL_MULTIPLY_ADDS = 250_000_000


def check_threads(threads: int) -> None:
    """Refuse more threads than this process has cores, before anything is loaded.

    Raises:
        MlpError: more threads than this process has cores.
    """
    cores = available_cores()
    if threads > cores:
        # refused rather than capped: a silent cap would hide the setting, and more threads than cores only
        # add waiting (a measured 60x slower epoch with 1000 threads on 2 cores)
        raise MlpError(f"--threads {threads}: this process may run on {cores} core{'s' if cores != 1 else ''}; "
                       f"more threads than cores only slow torch down (use 0 to let mlp choose, or 1 to {cores})")


def configure_threads(threads: int, processes_here: int = 1, multiply_adds: float = math.inf) -> int:
    """Set torch's CPU thread count and return it.

    0 chooses from the model's size (multiply_adds: of one batch's forward pass) and the machine, never from
    its load of the moment (the thread count may change the order of float sums): one thread for a model under
    PARALLEL_MULTIPLY_ADDS, else the cores this process may run on, shared among the processes of the job on
    this machine (two processes with two threads each on two cores run far slower than with one each).

    Raises:
        MlpError: more threads than this process has cores.
    """
    check_threads(threads)
    shared_cores = max(1, available_cores() // processes_here)
    count = threads or (shared_cores if multiply_adds >= PARALLEL_MULTIPLY_ADDS else 1)
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


def prepare_device(config: Config, ranks: Ranks = SINGLE_PROCESS) -> torch.device:
    """The device for config (and this process's rank), after checking that it can run config's precision and
    threads; configure_threads sets the threads once the model's size is known."""
    device = resolve_rank_device(config.device, ranks) if ranks.is_distributed else resolve_device(config.device)
    check_precision(device, config.precision)
    check_threads(config.threads)
    return device
