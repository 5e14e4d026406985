"""`mlp sweep`: a grid or a search over settings, each trial an ordinary run folder, kept in a real database."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from mlp_cli.cli import app
from mlp_cli.evaluation import evaluate_checkpoint

runner = CliRunner()
HELPERS = Path(__file__).parent / "helpers"
# tiny trials: the synthetic set has 96 training images, 16 of them held out for validation
TINY = ["--val-size", "16", "--threads", "1", "--param", "batch_size=16", "--quiet"]
RUN_FILES = ("config.toml", "metrics.jsonl", "last.pt", "best.pt", "curves.png")


def sweep(*args: str | Path):
    return runner.invoke(app, ["sweep", *map(str, args)])


def sweep_json(*args: str | Path) -> dict:
    result = sweep(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def study_trials(name: str, storage: str | None = None) -> list[optuna.trial.FrozenTrial]:
    url = storage or f"sqlite:///{Path('sweeps', name, 'study.db').absolute()}"
    url = url.replace("postgresql://", "postgresql+psycopg://")
    return optuna.load_study(study_name=name, storage=url).get_trials()


def assert_each_point_trained_once(report: dict, points: set[tuple], names: list[str], name: str,
                                   storage: str | None = None) -> None:
    """Every grid point has exactly one trial, which completed at its first attempt in its own run folder."""
    trained = [tuple(str(row["params"][key]) for key in names) for row in report["trials"]]
    assert sorted(trained) == sorted(points)
    assert all(row["state"] == "complete" and row["attempts"] == 1 for row in report["trials"])
    trials = study_trials(name, storage)
    assert len(trials) == len(points)  # nothing failed, was retried, or was created beyond the grid
    for row in report["trials"]:
        metrics = Path("sweeps", name, row["run_dir"], "metrics.jsonl").read_text().splitlines()
        assert len(metrics) == 1  # one epoch each: no trial was trained twice into its folder


def test_a_grid_trains_exactly_its_product_as_ordinary_run_folders(data_dir: Path) -> None:
    report = sweep_json("--name", "g", "--data-dir", data_dir, "--param", "hidden=8,16x8", "--param", "lr=0.1,0.3",
                        "--param", "epochs=1", *TINY)
    params = sorted((row["params"]["hidden"], row["params"]["lr"]) for row in report["trials"])
    assert params == [("16x8", 0.1), ("16x8", 0.3), ("8", 0.1), ("8", 0.3)]
    assert len(study_trials("g")) == 4
    for row in report["trials"]:
        run_dir = Path("sweeps/g") / row["run_dir"]
        assert all((run_dir / name).is_file() for name in RUN_FILES)
        hidden = [int(size) for size in row["params"]["hidden"].split("x")]
        assert f"hidden = {hidden}" in (run_dir / "config.toml").read_text()
    ranked = [row["val_accuracy"] for row in report["trials"]]
    assert ranked == sorted(ranked, reverse=True)
    chosen = report["chosen"]
    assert chosen["trial"] == report["trials"][0]["trial"] and chosen["val_accuracy"] == ranked[0]
    assert chosen["test_accuracy"] == evaluate_checkpoint(chosen["checkpoint"], "test").accuracy
    assert Path("sweeps/g/accuracy.png").is_file() and Path("sweeps/g/chosen-curves.png").is_file()
    listed = runner.invoke(app, ["runs", "sweeps/g/trials", "--json"])
    assert len(json.loads(listed.stdout)) == 4
    shown = runner.invoke(app, ["sweep", "show", "g", "--json"])
    assert json.loads(shown.stdout)["trials"] == report["trials"]
    table = runner.invoke(app, ["sweep", "show", "g"])
    assert "chosen on validation accuracy" in table.stdout and "its test accuracy" in table.stdout


def test_the_same_command_again_trains_nothing_and_another_definition_is_refused(data_dir: Path,
                                                                                    tmp_path: Path) -> None:
    command = ["--name", "again", "--data-dir", data_dir, "--param", "hidden=8,16", "--param", "epochs=1", *TINY]
    first = sweep_json(*command)
    checkpoints = sorted(Path("sweeps/again/trials").glob("*/last.pt"))
    written = [path.stat().st_mtime_ns for path in checkpoints]
    second = sweep_json(*command)
    assert [path.stat().st_mtime_ns for path in checkpoints] == written
    assert second["trials"] == first["trials"] and len(study_trials("again")) == 2
    other_values = [*command[:5], "hidden=8,32", *command[6:]]
    assert_one_line_error(sweep(*other_values), "sweep again", "other params", "hidden=8,16", "hidden=8,32")
    base = tmp_path / "base.toml"
    base.write_text("lr = 0.5\n")
    assert_one_line_error(sweep(*command, "--config", base), "another base config", "lr = 0.1 there, 0.5 here")


@pytest.mark.parametrize(("param", "fragments"), [
    ("lr", ["--param lr", "expected NAME=VALUES"]),
    ("speed=1,2", ["--param speed", "unknown setting", "hidden"]),
    ("lr=0.1,-1", ["--param lr", "-1.0 is not allowed", "a finite number > 0"]),  # as `mlp train --lr -1` says
    ("hidden=8,big", ["--param hidden", "'big'", "not a list of sizes"]),
    ("lr=log:0.001:1", ["a range needs --search"]),
    ("hidden=8,8", ["8 is listed twice"]),
    ("lr=", ["an empty value"]),
])
def test_bad_params_are_one_line_errors_and_write_nothing(data_dir: Path, param: str, fragments: list[str]) -> None:
    assert_one_line_error(sweep("--data-dir", data_dir, "--param", param, *TINY[:-1]), *fragments)
    assert not Path("sweeps").exists()


def test_an_empty_grid_a_too_big_validation_split_and_an_unreachable_database_are_one_line_errors(
        data_dir: Path) -> None:
    assert_one_line_error(sweep("--data-dir", data_dir), "nothing to sweep", "--param")
    # a sweep holds out 5000 training images unless told otherwise: too many for the 96 of the test data
    assert_one_line_error(sweep("--data-dir", data_dir, "--param", "hidden=8"), "--val-size 5000", "96 images")
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = f"postgresql://mlp:secret@127.0.0.1:{port}/sweeps"
    assert_one_line_error(sweep("--data-dir", data_dir, "--param", "hidden=8", "--storage", unreachable, *TINY),
                          "cannot use the database", "mlp:***@127.0.0.1")
    assert not Path("sweeps").exists()
    assert_one_line_error(runner.invoke(app, ["sweep", "show", "nothing"]), "no such sweep")


def test_a_tpe_search_is_seeded_and_stays_in_its_ranges(data_dir: Path) -> None:
    args = ["--search", "tpe", "--trials", "3", "--data-dir", data_dir, "--param", "lr=log:0.01:1",
            "--param", "hidden=8,16", "--param", "dropout=0:0.5", "--param", "epochs=1", *TINY]
    first = sweep_json("--name", "s1", *args)
    second = sweep_json("--name", "s2", *args)
    assert [row["params"] for row in first["trials"]] == [row["params"] for row in second["trials"]]
    assert len(first["trials"]) == 3 and all(row["state"] == "complete" for row in first["trials"])
    for row in first["trials"]:
        assert 0.01 <= row["params"]["lr"] <= 1 and 0 <= row["params"]["dropout"] <= 0.5
        assert row["params"]["hidden"] in ("8", "16")
    assert Path("sweeps/s1/history.png").is_file()


def test_median_pruning_stops_a_trial_that_falls_behind_with_a_consistent_run_folder(data_dir: Path) -> None:
    # Optuna's median pruner waits for 5 trials; the sixth (lr 1e-6) stays at chance after its first epoch
    report = sweep_json("--name", "pr", "--prune", "median", "--data-dir", data_dir, "--param",
                        "lr=0.5,0.4,0.3,0.35,0.45,0.000001", "--param", "epochs=3", *TINY)
    states = {row["params"]["lr"]: (row["state"], row["epoch"]) for row in report["trials"]}
    assert states.pop(1e-06) == ("pruned", 1)
    assert set(states.values()) == {("complete", 3)}
    pruned = Path("sweeps/pr/trials/0005")
    assert len((pruned / "metrics.jsonl").read_text().splitlines()) == 1
    assert evaluate_checkpoint(pruned / "last.pt").epoch == 1  # its checkpoints match its metrics


def test_a_diverging_trial_is_recorded_as_such_and_never_chosen(data_dir: Path) -> None:
    report = sweep_json("--name", "dv", "--data-dir", data_dir, "--param", "lr=0.1,1e30", "--param", "epochs=1",
                        *TINY)
    states = {row["params"]["lr"]: row["state"] for row in report["trials"]}
    assert states == {0.1: "complete", 1e30: "diverged"}
    assert report["chosen"]["params"]["lr"] == 0.1
    assert sweep_json("--name", "dv", "--data-dir", data_dir, "--param", "lr=0.1,1e30", "--param", "epochs=1",
                      *TINY)["trials"] == report["trials"]  # a diverged trial is finished: not tried again


def run_mlp(*args: str | Path, fault: tuple[int, str] | None = None) -> subprocess.CompletedProcess:
    """mlp in its own process; with fault (call, signal) it signals itself at that loss computation."""
    prefix = [str(HELPERS / "sweep_fault.py"), str(fault[0]), fault[1]] if fault else ["-m", "mlp_cli"]
    return subprocess.run([sys.executable, *prefix, *map(str, args)], capture_output=True, text=True, timeout=300)


def trial_files(name: str) -> dict[str, tuple[int, str]]:
    """Each trial folder's last.pt time and metrics text."""
    return {path.name: ((path / "last.pt").stat().st_mtime_ns, (path / "metrics.jsonl").read_text())
            for path in sorted(Path("sweeps", name, "trials").iterdir()) if (path / "last.pt").exists()}


@pytest.mark.parametrize("worker_was_on", ["this machine", "another machine"])
def test_a_worker_killed_outright_leaves_its_trial_to_the_next_run_which_finishes_only_what_is_left(
        data_dir: Path, worker_was_on: str) -> None:
    command = ["sweep", "--name", "k", "--data-dir", data_dir, "--param", "hidden=8,16,24", "--param", "epochs=2",
               "--heartbeat", "1", *TINY]
    # a trial computes the loss 15 times: 5 batches and the validation split per epoch, and the test split
    # (3 batches) after the last; the 24th call is in the second epoch of the second trial, its first saved
    killed = run_mlp(*command, fault=(24, "KILL"))
    assert killed.returncode == -signal.SIGKILL
    before = trial_files("k")
    assert sorted(before) == ["0000", "0001"]
    states = {trial.number: trial.state.name for trial in study_trials("k")}
    assert states == {0: "COMPLETE", 1: "RUNNING", 2: "WAITING"}  # never counted as done
    if worker_was_on == "another machine":  # its process cannot be looked up: its missing heartbeats tell
        url = f"sqlite:///{Path('sweeps/k/study.db').absolute()}"
        storage = optuna.storages.RDBStorage(url)
        running = study_trials("k")[1]
        storage.set_trial_user_attr(running._trial_id, "worker", {**running.user_attrs["worker"], "host": "far"})
        time.sleep(2.5)  # two heartbeats of 1 s missed
    report = sweep_json(*command[1:])
    assert all(row["state"] == "complete" for row in report["trials"]) and len(report["trials"]) == 3
    after = trial_files("k")
    assert after["0000"] == before["0000"]  # the finished trial was not touched
    resumed = after["0001"][1].splitlines()
    assert len(resumed) == 2 and resumed[0] == before["0001"][1].splitlines()[0]  # epoch 1 kept, to its seconds
    assert {row["trial"]: row["attempts"] for row in report["trials"]} == {0: 1, 1: 2, 2: 1}


def test_ctrl_c_saves_the_running_trial_exits_130_and_the_same_command_resumes_it(data_dir: Path) -> None:
    command = ["sweep", "--name", "c", "--data-dir", data_dir, "--param", "hidden=8,16", "--param", "epochs=2",
               *TINY]
    stopped = run_mlp(*command, fault=(18, "INT"))  # in the first epoch of the second trial (15 calls a trial)
    assert stopped.returncode == 130, stopped.stderr
    assert "run the same command to continue" in stopped.stderr
    assert (Path("sweeps/c/trials/0001/last.pt")).exists() and not Path("sweeps/c/trials/0001/best.pt").exists()
    report = sweep_json(*command[1:])
    assert [row["state"] for row in report["trials"]] == ["complete", "complete"]
    second = next(row for row in report["trials"] if row["trial"] == 1)
    assert second["attempts"] == 2 and second["epoch"] == 2


def test_sigterm_stops_every_worker_process_each_saving_its_trial(data_dir: Path) -> None:
    command = [sys.executable, "-m", "mlp_cli", "sweep", "--name", "t", "--workers", "2", "--data-dir", data_dir,
               "--param", "hidden=8,16,24", "--param", "epochs=100000", *TINY]
    sweep_process = subprocess.Popen(list(map(str, command)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
    metrics = [Path("sweeps/t/trials", name, "metrics.jsonl") for name in ("0000", "0001")]
    deadline = time.monotonic() + 120
    while not all(path.exists() for path in metrics) and time.monotonic() < deadline:
        time.sleep(0.2)
    sweep_process.send_signal(signal.SIGTERM)  # to the command only: it passes the signal on to its workers
    _, errors = sweep_process.communicate(timeout=120)
    assert sweep_process.returncode == 143, errors
    assert "0 of 3 trials done" in errors and "run the same command to continue" in errors
    for path in metrics:
        assert (path.parent / "last.pt").exists()
        assert evaluate_checkpoint(path.parent / "last.pt").stopped_after_batch is not None  # saved mid-epoch
    shown = json.loads(runner.invoke(app, ["sweep", "show", "t", "--json"]).stdout)
    assert sorted(row["state"] for row in shown["trials"]) == ["waiting"] * 3 and not shown["is_done"]


def assert_two_workers_train_each_trial_once(data_dir: Path, name: str, storage: str | None = None) -> None:
    grid = {"hidden": ["8", "16", "24"], "lr": ["0.1", "0.3"]}
    extra = ["--storage", storage] if storage else []
    report = sweep_json("--name", name, "--workers", "2", "--data-dir", data_dir, "--param", "hidden=8,16,24",
                        "--param", "lr=0.1,0.3", "--param", "epochs=1", *extra, *TINY)
    points = {(hidden, lr) for hidden in grid["hidden"] for lr in grid["lr"]}
    assert_each_point_trained_once(report, points, ["hidden", "lr"], name, storage)
    assert report["chosen"]["test_accuracy"] is not None


def test_two_workers_on_sqlite_train_each_trial_exactly_once(data_dir: Path) -> None:
    assert_two_workers_train_each_trial_once(data_dir, "w2")


@pytest.fixture(scope="module")
def postgresql_url() -> Iterator[str]:
    """A PostgreSQL server of its own, on a free loopback port, in a temporary folder; stopped at the end."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not binaries:
        message = "PostgreSQL is not installed: apt-get install postgresql (make test does it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    bin_dir = binaries[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="mlp-postgres-"))
    as_postgres = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        shutil.chown(folder, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    subprocess.run([*as_postgres, bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_postgres, bin_dir / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-o",
                    f"-h 127.0.0.1 -p {port} -k {folder}", "start"], check=True, capture_output=True)
    try:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as connection:
            connection.execute("CREATE DATABASE sweeps")
        yield f"postgresql://postgres@127.0.0.1:{port}/sweeps"
    finally:
        subprocess.run([*as_postgres, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_on_a_real_postgresql_server_train_each_trial_exactly_once(data_dir: Path,
                                                                                postgresql_url: str) -> None:
    assert_two_workers_train_each_trial_once(data_dir, "pg", postgresql_url)
    assert not Path("sweeps/pg/study.db").exists()


def test_mlp_help_imports_neither_optuna_nor_torch_nor_matplotlib() -> None:
    code = ("import sys; sys.argv = ['mlp', 'sweep', '--help']\n"
            "from mlp_cli.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('imported:', sorted(m for m in ('optuna', 'torch', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "imported: []" in result.stdout, result.stdout + result.stderr
