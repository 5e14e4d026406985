"""`mlp` in which the process sends itself a signal at the CALL-th loss computation, for the sweep's fault tests.

Usage: python tests/helpers/sweep_fault.py CALL SIGNAL mlp-arguments...   (SIGNAL: KILL, INT or TERM)
KILL stands for a worker that dies outright (kill -9, the OOM killer); INT and TERM for Ctrl-C and kill.
"""

import os
import signal
import sys

from torch.nn import functional

from mlp_cli.cli import main

fault_call, signal_name, *mlp_arguments = sys.argv[1:]
cross_entropy, calls = functional.cross_entropy, [0]


def faulty_cross_entropy(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(fault_call):
        os.kill(os.getpid(), getattr(signal, f"SIG{signal_name}"))
    return cross_entropy(*args, **kwargs)


functional.cross_entropy = faulty_cross_entropy
sys.argv = ["mlp", *mlp_arguments]
main()
