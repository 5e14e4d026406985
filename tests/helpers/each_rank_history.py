"""Train through the library under torchrun and write what this rank saw, for the tests of DDP.

Usage: torchrun ... tests/helpers/each_rank_history.py DATA_DIR OUT_DIR REPORT_PREFIX
Writes REPORT_PREFIX.RANK.json: the epoch metrics train() returned on this rank, and the files it wrote itself.
"""

import dataclasses
import json
import os
import sys
from pathlib import Path

import mlp_cli.trainer
import mlp_cli.training
from mlp_cli.config import load_config

data_dir, out_dir, report_prefix = sys.argv[1:]
written = []
for module, name in ((mlp_cli.trainer, "save_checkpoint"), (mlp_cli.trainer, "write_metrics"),
                     (mlp_cli.training, "create_run_dir")):
    original = getattr(module, name)

    def recording(*args, original=original, name=name):
        written.append(name)
        return original(*args)

    setattr(module, name, recording)
config = load_config(None, {"data_dir": data_dir, "hidden": (32,), "batch_size": 16, "epochs": 2, "device": "cpu"})
result = mlp_cli.training.train(config, Path(out_dir))
rows = [dataclasses.asdict(row) | {"seconds": None} for row in result.history]
report = {"history": rows, "written": written, "run_dir": str(result.run_dir)}
Path(f"{report_prefix}.{os.environ['RANK']}.json").write_text(json.dumps(report))
