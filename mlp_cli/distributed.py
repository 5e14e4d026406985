"""Several processes training one model: DistributedDataParallel, set up from what torchrun tells each process.

torchrun starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE in each. Every process
holds the whole data set and the same model; each takes its own part of every batch, DDP averages the
gradients, and Ranks sums whatever else must agree (metrics) so that all processes take the same decisions.
A process that was not launched by torchrun is Ranks(): rank 0 of 1, and every method here does nothing.
"""

import contextlib
import dataclasses
import gc
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mlp_cli.errors import MlpError
from mlp_cli.signals import StopRequest

Result = TypeVar("Result")

# the running loss is checked, and under torchrun a stop request (Ctrl-C, SIGTERM) agreed on, every this many
# batches: one small all-reduce costs about 0.3 ms with gloo on a 2-core machine (measured), several percent of a
# training step, and reading the loss back waits for the device, so not every batch
CHECK_EVERY_BATCHES = 16


class CheckIn(NamedTuple):
    """What every rank agreed on after a batch."""

    stop: bool  # a rank was asked to stop (its StopRequest's shared_signal says how, on every rank)
    finite: bool  # every rank's running loss is a number (a NaN or inf on one rank means the weights are lost)


class DistributedError(MlpError):
    """Another process of the job failed, stopped or stopped answering."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes that train one model together."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the rank on this machine: picks the GPU
    local_world_size: int = 1  # processes on this machine: share its CPU cores
    control: Any = None  # a gloo group for small CPU messages when the training group is nccl

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 prints progress and writes the run folder; the others only compute."""
        return self.rank == 0

    def share(self, count: int) -> slice:
        """This rank's contiguous part of count items (a batch): the parts differ in size by one at most."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """tensor summed over all ranks, in place, on every rank."""
        if self.is_distributed:
            dist.all_reduce(tensor)
        return tensor

    def check_in(self, stop: StopRequest | None, loss_sum: torch.Tensor, batches_done: int,
                 num_batches: int) -> CheckIn:
        """Whether to stop, and whether the running loss is still finite, after the same batch on every rank.

        A stop request is looked at after every batch in one process; the loss, and under torchrun both, every
        CHECK_EVERY_BATCHES batches of the epoch's num_batches and after its last.
        """
        if batches_done % CHECK_EVERY_BATCHES and batches_done != num_batches:
            return CheckIn(stop=not self.is_distributed and stop is not None and stop.is_requested, finite=True)
        flags = torch.tensor([0 if stop is None else stop.signal_number or 0,
                              0 if math.isfinite(loss_sum.item()) else 1])
        if self.is_distributed:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.control)
        signal_number, not_finite = flags.tolist()
        if stop is not None and signal_number:
            stop.shared_signal = signal_number
        return CheckIn(stop=stop is not None and stop.is_requested, finite=not not_finite)

    def gather(self, value: Any) -> list[Any]:
        """value from every rank, in rank order (small picklable values: RNG states)."""
        if not self.is_distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.control)
        return gathered

    def on_main(self, action: Callable[[], Result]) -> Result:
        """action's result, computed on rank 0 only (writing files) and sent to every rank.

        Also a barrier: no rank goes on before rank 0 is done, so nobody reads a half-written file.

        Raises:
            MlpError: the one action raised on rank 0, raised on every rank so that all stop together.
        """
        if not self.is_distributed:
            return action()
        outcome: list[Any] = [None]
        if self.is_main:
            try:
                outcome = [(action(), None)]
            except MlpError as err:
                outcome = [(None, err)]
        dist.broadcast_object_list(outcome, src=0, group=self.control)
        result, error = outcome[0]
        if error is not None:
            error.same_on_every_rank = True
            raise error
        return result

    def parallel(self, model: nn.Module, device: torch.device) -> nn.Module:
        """model wrapped in DistributedDataParallel (which averages gradients in backward), or model itself.

        Construction broadcasts rank 0's weights, so every rank starts from the same model; the lazy
        layers of the concise model must already be materialized (build_model does that).
        """
        if not self.is_distributed:
            return model
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


SINGLE_PROCESS = Ranks()


def launched_ranks() -> Ranks:
    """Where torchrun placed this process, from its environment; Ranks() when torchrun did not start it."""
    if not dist.is_torchelastic_launched():
        return SINGLE_PROCESS
    return Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]),
                 int(os.environ["LOCAL_WORLD_SIZE"]))


def choose_backend(backend: str, device: torch.device) -> str:
    """gloo on CPU, nccl on CUDA, unless --backend says otherwise.

    Raises:
        MlpError: the backend cannot drive this device, or this torch was built without it.
    """
    chosen = ("nccl" if device.type == "cuda" else "gloo") if backend == "auto" else backend
    if chosen == "nccl" and device.type != "cuda":
        raise MlpError(f"--backend nccl needs CUDA devices, but this run uses {device}; use --backend gloo")
    available = {"gloo": dist.is_gloo_available, "nccl": dist.is_nccl_available}
    if chosen not in available or not available[chosen]():
        raise MlpError(f"--backend {chosen}: not available in this torch build")
    return chosen


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device, backend: str, timeout_seconds: float) -> Iterator[Ranks]:
    """Join the job's process group for the block (nothing to join for a single process), then leave it.

    A collective that waits longer than timeout_seconds for another rank fails instead of hanging, and
    the failures of other ranks surface here as one DistributedError.
    """
    if not ranks.is_distributed:
        yield ranks
        return
    chosen = choose_backend(backend, device)
    timeout = timedelta(seconds=timeout_seconds)
    with reported_as_distributed_error(timeout_seconds):
        dist.init_process_group(chosen, timeout=timeout, device_id=device if device.type == "cuda" else None)
        try:
            control = dist.new_group(backend="gloo", timeout=timeout) if chosen != "gloo" else None
            yield dataclasses.replace(ranks, control=control)
        finally:
            # free what still refers to the group (reference cycles around DDP and its pending work) while the
            # interpreter is whole: left to its shutdown, gloo's threads aborted the process in about 1 run
            # in 10 here ("terminate called without an active exception")
            gc.collect()
            dist.destroy_process_group()


@contextlib.contextmanager
def reported_as_distributed_error(timeout_seconds: float) -> Iterator[None]:
    """Turn torch's errors about the other processes (gloo's and nccl's RuntimeErrors) into one clear line."""
    try:
        yield
    except RuntimeError as err:
        text = str(err)
        if not (isinstance(err, dist.DistError) or "gloo" in text or "NCCL" in text):
            raise
        # gloo's text: "[path/to/file.cc:561] Connection closed by peer [address]. This is typically ..."
        detail = text.strip().splitlines()[0].split("] ", 1)[-1].split(". ")[0] if text.strip() else type(err).__name__
        if "Timed out" in text or "timeout" in text.lower():
            reason = (f"no answer from the other processes within --dist-timeout {timeout_seconds:g} s "
                      f"(one is stuck or was stopped)")
        else:
            reason = "lost contact with another process of the job (it failed or was stopped; see its message)"
        raise DistributedError(f"{reason} ({detail[:200]})") from err
