"""`mlp` with one rank of a torchrun job failing on purpose, for the tests of failures under DDP.

Usage: torchrun ... tests/helpers/faulty_rank.py RANK CALL KIND mlp-arguments...
On rank RANK, the CALL-th loss computation raises (KIND raise), sends the process SIGTERM (sigterm) or
never returns (hang); the other ranks run `mlp` unchanged.
"""

import os
import signal
import sys
import time

from torch.nn import functional

from mlp_cli.cli import main

fault_rank, fault_call, kind, *mlp_arguments = sys.argv[1:]
if int(os.environ["RANK"]) == int(fault_rank):
    cross_entropy, calls = functional.cross_entropy, [0]

    def faulty_cross_entropy(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(fault_call):
            if kind == "raise":
                raise RuntimeError("injected fault")
            if kind == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            if kind == "hang":
                # torchrun's SIGTERM ends it, rather than its SIGKILL 30 s later, to keep the test short
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                while True:
                    time.sleep(1)
        return cross_entropy(*args, **kwargs)

    functional.cross_entropy = faulty_cross_entropy
sys.argv = ["mlp", *mlp_arguments]
main()
