"""`mlp train --nproc-per-node N`: torchrun's own launcher (torch.distributed.run), called in this process.

It starts N processes of `python -m mlp_cli train ...` on this machine, exactly as
`torchrun --standalone --nproc-per-node N -m mlp_cli train ...` would, and waits for them.
"""

import ctypes
import logging
import os
import signal
import sys

import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

from mlp_cli.config import available_cores
from mlp_cli.errors import MlpError

PR_SET_PDEATHSIG = 1  # linux/prctl.h: the signal this process gets when its parent dies


def check_can_launch(processes: int) -> None:
    """Raise MlpError if `processes` processes cannot be started from here."""
    if dist.is_torchelastic_launched():
        raise MlpError("--nproc-per-node: this process was already started by torchrun; leave the flag out")
    if processes < 1:
        raise MlpError(f"--nproc-per-node {processes}: expected 1 or more processes")
    cores = available_cores()
    if processes > cores:
        # each process holds its own copy of the data set and runs at least one thread: past the cores they
        # only queue for them, and past the memory they get killed
        raise MlpError(f"--nproc-per-node {processes}: this machine lets mlp run on {cores} "
                       f"core{'s' if cores != 1 else ''}; more processes than cores train no faster and each "
                       f"holds a copy of the data; use 1 to {cores}")


def exit_with_launcher() -> None:
    """Have Linux send this worker SIGTERM when its launcher (torchrun's agent, its parent) dies.

    Without it, a launcher killed by the OOM killer or kill -9 leaves its workers running, or blocked in a
    collective until --dist-timeout. SIGTERM stops a worker as Ctrl-C would (last.pt saved where it can be).
    Elsewhere than on Linux this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): the worker keeps the old behaviour
    if os.getppid() == 1:  # the launcher died before the request was made: adopted by init already
        os.kill(os.getpid(), signal.SIGTERM)


class ForcedKillsOnly(logging.Filter):
    """Of torchrun's own log lines, which repeat what the processes and mlp already say, the one that does not:
    a process that had not stopped 30 s after SIGTERM was killed, so its last words (how to resume) are lost."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Unable to shutdown process"):
            return False
        pid = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = "warning: process %s did not stop within 30 s of SIGTERM; torchrun killed it", (pid,)
        return True


def quiet_torchrun_logs() -> None:
    """Silence torchrun's log lines but for ForcedKillsOnly's (its loggers set their own levels: each is set)."""
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.elastic.agent.server.api").setLevel(logging.CRITICAL)
    processes = logging.getLogger("torch.distributed.elastic.multiprocessing.api")
    processes.setLevel(logging.WARNING)
    if not any(isinstance(existing, ForcedKillsOnly) for existing in processes.filters):
        processes.addFilter(ForcedKillsOnly())


def launch_training(processes: int, train_arguments: list[str]) -> int:
    """Train with `processes` processes on this machine; the job's exit code, rank 0's when it reported.

    Raises:
        MlpError: the job cannot start, or another rank than 0 failed first (its own message is above).
    """
    check_can_launch(processes)
    # what torchrun would set (and warn about); each process sets its own thread count from --threads anyway
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // processes)))
    quiet_torchrun_logs()
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
