"""`mlp train --nproc-per-node N`: torchrun's own launcher (torch.distributed.run), called in this process.

It starts N processes of `python -m mlp_cli train ...` on this machine, exactly as
`torchrun --standalone --nproc-per-node N -m mlp_cli train ...` would, and waits for them.
"""

import logging
import os

import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

from mlp_cli.devices import available_cores
from mlp_cli.errors import MlpError


def check_can_launch(processes: int) -> None:
    """Raise MlpError if `processes` processes cannot be started from here."""
    if dist.is_torchelastic_launched():
        raise MlpError("--nproc-per-node: this process was already started by torchrun; leave the flag out")
    if processes < 1:
        raise MlpError(f"--nproc-per-node {processes}: expected 1 or more processes")


def launch_training(processes: int, train_arguments: list[str]) -> int:
    """Train with `processes` processes on this machine; the job's exit code, rank 0's when it reported.

    Raises:
        MlpError: the job cannot start, or another rank than 0 failed first (its own message is above).
    """
    check_can_launch(processes)
    # what torchrun would set (and warn about); each process sets its own thread count from --threads anyway
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // processes)))
    # torchrun's own log lines repeat what the processes and this function already say
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    arguments = ["--standalone", f"--nproc-per-node={processes}", "--module", "mlp_cli", "train", *train_arguments]
    try:
        run(parse_args(arguments))
    except SignalException as err:  # this launcher was interrupted: torchrun passed the signal on and waited
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        main_failure = err.failures.get(0)
        if main_failure is not None and main_failure.exitcode > 0:  # rank 0 said what happened (or was stopped)
            return main_failure.exitcode
        rank, failure = err.get_first_failure()
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        raise MlpError(f"rank {rank} of {processes} {how} (its message, if any, is above); "
                       f"torchrun stopped the other processes") from None
    return 0
