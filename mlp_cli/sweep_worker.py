"""One worker process of `mlp sweep --workers N`: reads its plan (JSON) on stdin and trains trials until none
is left. Started by mlp_cli.sweep.run_worker_processes, never by hand."""

import sys

from mlp_cli.errors import MlpError, TrainingStoppedError
from mlp_cli.signals import stop_on_signals
from mlp_cli.sweep import plan_from_json, run_worker


def main() -> int:
    """Exit code: 0 when no trial is left, 128 + signal when stopped, 1 with a one-line error."""
    plan = plan_from_json(sys.stdin.read())
    with stop_on_signals() as stop:
        try:
            run_worker(plan, stop)
        except TrainingStoppedError as err:
            return err.exit_code
        except MlpError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
