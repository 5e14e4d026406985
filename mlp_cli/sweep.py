"""`mlp sweep`: many training runs of one base config, each an ordinary run folder, kept in an Optuna study.

The study lives in a database (SQLite by default, PostgreSQL for several machines), which is the only thing
workers share: each worker claims a waiting trial, trains it in-process (the data set loaded once per worker),
and tells the result. Every trial of a sweep is enqueued when the study is created (a grid's points, or a
search's empty slots that the sampler fills), so workers never create trials and none is trained twice.

A trial interrupted by a signal saves last.pt, is marked failed and re-enqueued with its run folder: the next
run resumes it exactly (training.resume_run). A worker killed outright is detected by its process id (same
machine) or by its missing heartbeat (RDB storages), and its trial is taken over the same way.
"""

import contextlib
import dataclasses
import json
import os
import socket
import sys
import threading
import time
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

from mlp_cli.config import Config, available_cores, config_to_dict, load_config, validate_settings
from mlp_cli.errors import (
    ConfigError,
    DataError,
    MlpError,
    TrainingDivergedError,
    TrainingStoppedError,
    first_line,
)
from mlp_cli.events import EpochMetrics, TrainingPlan
from mlp_cli.runs import BEST_CHECKPOINT, LAST_CHECKPOINT, read_metrics
from mlp_cli.signals import StopRequest
from mlp_cli.sweep_params import Param, describe_params, grid_points, parse_params, setting_from_choice

SWEEPS_ROOT = Path("sweeps")
STUDY_FILE = "study.db"
TRIALS_FOLDER = "trials"
DEFINITION_ATTR = "mlp_sweep"  # study user attr: the sweep's definition, set once every trial is enqueued
CHOSEN_ATTR = "chosen"  # study user attr: the chosen trial and its test accuracy
Search = Literal["grid", "tpe", "random"]
Prune = Literal["none", "median", "hyperband"]
SEARCHES: tuple[str, ...] = typing.get_args(Search)
PRUNERS: tuple[str, ...] = typing.get_args(Prune)
SWEEP_VAL_SIZE = 5000  # validation images held out when neither --val-size nor the base config sets one
DEFAULT_SEARCH_TRIALS = 20
HEARTBEAT_SECONDS = 30  # RDB storages: a trial whose worker stays silent for 2 heartbeats is taken over
POLL_SECONDS = 1.0  # how often an idle worker and the live table look at the study
DEFINITION_WAIT_SECONDS = 30.0  # how long a joining worker waits for the creator to enqueue the trials
SQLITE_TIMEOUT_SECONDS = 60  # wait for another worker's write instead of failing with "database is locked"
# settings that belong to the machine, not the experiment: they may differ between workers and reruns
MACHINE_SETTINGS = ("device", "threads", "data_dir", "backend", "dist_timeout")


@dataclass(frozen=True)
class SweepPlan:
    """A validated `mlp sweep` command: what to train, where the study lives, and how this machine helps."""

    name: str
    sweep_dir: Path
    storage_url: str
    base: Config
    params: list[Param]
    search: str
    trials: int
    prune: str
    seed: int
    workers: int
    machine: dict[str, Any]  # MACHINE_SETTINGS overrides for this machine's trials (threads per worker, data)
    heartbeat: int = HEARTBEAT_SECONDS

    def definition(self) -> dict[str, Any]:
        """What makes two commands the same sweep (stored in the study; machine settings left out)."""
        base = {key: value for key, value in config_to_dict(self.base).items() if key not in MACHINE_SETTINGS}
        return {"search": self.search, "params": describe_params(self.params), "trials": self.trials,
                "prune": self.prune, "seed": self.seed, "base": base}


@dataclass(frozen=True)
class TrialRow:
    """One trial of the sweep as the tables show it: its latest attempt, with the time of all attempts."""

    trial: int  # the number of its first attempt, which also names its run folder
    params: dict[str, Any]
    state: str  # waiting, running, complete, pruned, diverged (interrupted only for a moment, then waiting)
    epoch: int
    val_accuracy: float | None  # the best so far, which chose best.pt
    seconds: float
    run_dir: str
    attempts: int = 1
    host: str | None = None


@dataclass
class SweepReport:
    name: str
    storage: str  # password hidden
    search: str
    param_names: list[str]
    trials: list[TrialRow]  # ranked: best validation accuracy first, unfinished last
    is_done: bool
    chosen: dict[str, Any] | None = None  # trial, run_dir, checkpoint, val_accuracy, test_accuracy (or why not)
    pictures: list[str] = field(default_factory=list)


# --- planning: everything is checked before anything is written -------------------------------------------


# one parameter per option of `mlp sweep` (its library half), like the Typer command that calls it
def plan_sweep(name: str | None, config_path: Path | None, param_texts: list[str], search: str = "grid",  # noqa: PLR0913
               trials: int | None = None, prune: str = "none", val_size: int | None = None, seed: int = 0,
               workers: int = 1, storage: str | None = None, data_dir: Path | None = None,
               threads: int | None = None, heartbeat: int = HEARTBEAT_SECONDS) -> SweepPlan:
    """A checked sweep: base config, params (validated as `mlp train` flags), search and storage settings.

    Raises:
        ConfigError: any setting, param or option is wrong; nothing has been written.
    """
    if search not in SEARCHES:
        raise ConfigError(f"--search {search}: expected one of {', '.join(SEARCHES)}")
    if prune not in PRUNERS:
        raise ConfigError(f"--prune {prune}: expected one of {', '.join(PRUNERS)}")
    if search == "grid" and trials is not None:
        raise ConfigError("--trials: a grid trains every combination of its values; --trials is for --search")
    if (trials is not None and trials < 1) or workers < 1 or heartbeat < 1:
        raise ConfigError("--trials, --workers and --heartbeat: expected integers >= 1")
    overrides = {"data_dir": str(data_dir) if data_dir else None, "threads": threads}
    base = load_config(config_path, {"val_size": val_size, **overrides})
    if not base.val_size:
        base = dataclasses.replace(base, val_size=SWEEP_VAL_SIZE)
    params = parse_params(param_texts, base, is_search=search != "grid")
    count = len(grid_points(params)) if search == "grid" else trials or DEFAULT_SEARCH_TRIALS
    name = name or "-".join(param.name for param in params)
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"--name {name}: use letters, digits, '-', '_' and '.' only (it names a folder)")
    sweep_dir = SWEEPS_ROOT / name
    storage_url = storage or default_storage_url(sweep_dir)
    machine = {"data_dir": base.data_dir, "device": base.device,
               "threads": base.threads or max(1, available_cores() // workers)}
    return SweepPlan(name, sweep_dir, storage_url, base, params, search, count, prune, seed, workers, machine,
                     heartbeat)


def default_storage_url(sweep_dir: Path) -> str:
    """SQLite in the sweep's folder: enough for the workers of one machine."""
    return f"sqlite:///{(sweep_dir / STUDY_FILE).absolute()}"


# --- storage and study ---------------------------------------------------------------------------------------


def hide_password(url: str) -> str:
    """The storage URL as it may be printed."""
    if "://" not in url or "@" not in url.split("://", 1)[1]:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS) -> Any:
    """An Optuna storage for url: an RDB URL (sqlite:///, postgresql://...) or journal:PATH (a journal file).

    postgresql:// without a driver uses psycopg (version 3), the driver mlp installs.

    Raises:
        MlpError: the URL is malformed, its driver is missing, or the database cannot be reached.
    """
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats, their retry callback and fail_stale_trials are "experimental" since Optuna 2.8: not news
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    shown = hide_password(url)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
        except OSError as err:
            raise MlpError(f"--storage {shown}: cannot open the journal file ({err})") from err
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}} if url.startswith("sqlite") else {}
    if url.startswith("sqlite:///"):
        use_write_ahead_log(Path(url.removeprefix("sqlite:///")))
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs, heartbeat_interval=heartbeat,
                                          heartbeat_stale_trial_callback=retry)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, optuna.exceptions.StorageInternalError) as err:
        raise MlpError(f"--storage {shown}: cannot use the database ({first_line(err)})") from err


def use_write_ahead_log(path: Path) -> None:
    """Switch a SQLite file to WAL (it stays so): readers such as the live table no longer block workers."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_TIMEOUT_SECONDS)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def open_study(plan: SweepPlan, storage: Any) -> Any:
    """The sweep's study: created with every trial enqueued, or loaded and checked against this plan.

    Raises:
        ConfigError: the study was created by a different sweep definition (named in the message).
    """
    import optuna

    try:
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], plan.name)
        is_creator = True
    except optuna.exceptions.DuplicatedStudyError:
        is_creator = False
    study = optuna.load_study(study_name=plan.name, storage=storage, pruner=make_pruner(plan))
    if is_creator:
        enqueue_trials(study, plan)
        study.set_user_attr(DEFINITION_ATTR, plan.definition())
    else:
        check_definition(plan, wait_for_definition(study, plan))
    return study


def enqueue_trials(study: Any, plan: SweepPlan) -> None:
    """Every trial, waiting: a grid's points with their values, or a search's slots for the sampler to fill."""
    points = grid_points(plan.params) if plan.search == "grid" else [{} for _ in range(plan.trials)]
    for point in points:
        study.enqueue_trial(point)


def wait_for_definition(study: Any, plan: SweepPlan) -> dict[str, Any]:
    """The stored definition; a study that another worker is still creating gets a few seconds to appear."""
    deadline = time.monotonic() + DEFINITION_WAIT_SECONDS
    while DEFINITION_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:
            raise MlpError(f"sweep {plan.name} in {hide_password(plan.storage_url)} was never set up (its creator "
                           "stopped while enqueuing trials); delete the study or use another --name")
        time.sleep(POLL_SECONDS)
    return study.user_attrs[DEFINITION_ATTR]


def check_definition(plan: SweepPlan, stored: dict[str, Any]) -> None:
    """Raise ConfigError naming the first difference between the stored sweep and this command's."""
    ours = plan.definition()
    where = f"sweep {plan.name} in {hide_password(plan.storage_url)}"
    advice = "use another --name, or the settings it was created with"
    for key in ("search", "params", "trials", "prune", "seed"):
        if stored.get(key) != ours[key]:
            there = " ".join(stored[key]) if key == "params" else stored.get(key)
            here = " ".join(ours[key]) if key == "params" else ours[key]
            raise ConfigError(f"{where} was created with other {key}: {there} there, {here} here; {advice}")
    for key in sorted(set(stored["base"]) | set(ours["base"])):
        if stored["base"].get(key) != ours["base"].get(key):
            raise ConfigError(f"{where} was created with another base config: {key} = "
                              f"{stored['base'].get(key)!r} there, {ours['base'].get(key)!r} here; {advice}")


def make_pruner(plan: SweepPlan) -> Any:
    """Optuna's pruner for --prune, stepping by epoch on the validation accuracy."""
    import optuna

    if plan.prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if plan.prune == "hyperband":
        swept = any(param.name == "epochs" for param in plan.params)
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto" if swept else plan.base.epochs)
    return optuna.pruners.NopPruner()


def make_sampler(definition: dict[str, Any], trial_number: int) -> Any:
    """The sampler for one trial, seeded by (sweep seed, trial number): one worker's sweep repeats exactly,
    and parallel workers never draw the same random numbers."""
    import optuna

    seed = definition["seed"] * 1_000_003 + trial_number
    if definition["search"] == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)  # a grid's trials have every value fixed already


# --- workers ---------------------------------------------------------------------------------------------------


def this_worker() -> dict[str, Any]:
    """Who trains a trial: enough to tell, on the same machine, that the process is gone."""
    boot = Path("/proc/sys/kernel/random/boot_id")
    return {"host": socket.gethostname(), "boot": boot.read_text().strip() if boot.exists() else "",
            "pid": os.getpid()}


def is_dead_here(worker: dict[str, Any] | None) -> bool:
    """Whether worker was a process of this machine (since its last boot) that no longer exists."""
    if not worker or {key: worker.get(key) for key in ("host", "boot")} != {
            key: value for key, value in this_worker().items() if key != "pid"}:
        return False
    try:
        os.kill(worker["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def has_heartbeat(storage: Any) -> bool:
    """Whether storage records heartbeats (RDB storages opened by open_storage; a study wraps them in a cache,
    so this asks rather than checking the class)."""
    interval = getattr(storage, "get_heartbeat_interval", None)
    return interval is not None and interval() is not None


def take_over_dead_trials(study: Any) -> None:
    """Fail and re-enqueue the running trials whose worker died (kill -9, a crash, a lost machine)."""
    import optuna
    from optuna.trial import TrialState

    if has_heartbeat(study._storage):
        optuna.storages.fail_stale_trials(study)  # by heartbeat, for workers on other machines
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_dead_here(trial.user_attrs.get("worker")):
            fail_and_retry(study, trial._trial_id, "its worker died")


def fail_and_retry(study: Any, trial_id: int, why: str) -> None:
    """Mark a running trial failed and enqueue a copy with the same run folder, which resumes from last.pt.

    If another worker got there first, the storage refuses the second change and nothing is enqueued twice.
    """
    import optuna
    from optuna.trial import TrialState

    try:
        study._storage.set_trial_user_attr(trial_id, "outcome", why)
        if not study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)
    retry(study, study._storage.get_trial(trial_id))


@contextlib.contextmanager
def claim_lock(sweep_dir: Path) -> Iterator[None]:
    """One claim at a time among this machine's workers (SQLite reads and updates a trial's state in two
    statements; PostgreSQL locks the row itself, so workers on other machines are safe too)."""
    import fcntl

    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".claim.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def claim_waiting_trial(study: Any, sweep_dir: Path, definition: dict[str, Any]) -> Any:
    """The next waiting trial, now running and ours, as an optuna.Trial; None if none waits.

    Unlike Study.ask, this never creates a trial: a sweep has exactly the trials enqueued when it was created.
    """
    import optuna
    from optuna.trial import TrialState

    with claim_lock(sweep_dir):
        for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if study._storage.set_trial_state_values(waiting._trial_id, state=TrialState.RUNNING):
                    if has_heartbeat(study._storage):
                        # at once: a running trial without any heartbeat is never found stale
                        study._storage.record_heartbeat(waiting._trial_id)
                    study.sampler = make_sampler(definition, waiting.number)
                    trial = optuna.Trial(study, waiting._trial_id)
                    trial.set_user_attr("worker", this_worker())
                    return trial
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
    return None


def suggest(trial: Any, params: list[Param]) -> dict[str, Any]:
    """The trial's value of every param: fixed for grid points and resumed trials, drawn by the sampler else."""
    values = {}
    for param in params:
        low, high = param.low, param.high
        if low is None or high is None:  # a list of choices, not a range
            values[param.name] = trial.suggest_categorical(param.name, list(param.choices))
        elif param.is_int:
            values[param.name] = trial.suggest_int(param.name, int(low), int(high), log=param.is_log)
        else:
            values[param.name] = trial.suggest_float(param.name, low, high, log=param.is_log)
    return values


def trial_config(plan: SweepPlan, values: dict[str, Any]) -> Config:
    """The base config with the trial's values and this machine's settings."""
    settings = {**config_to_dict(plan.base), **plan.machine}
    settings.update({name: setting_from_choice(name, value) for name, value in values.items()})
    return validate_settings(settings, {name: f"--param {name}" for name in values})


class TrialReporter:
    """Tells the study each epoch's validation accuracy (the live table reads it; the pruner judges it), and
    stops a pruned trial once its epoch's checkpoints are written, so its run folder stays consistent."""

    def __init__(self, trial: Any, epochs: int, seconds_before: float) -> None:
        self.trial, self.epochs = trial, epochs
        self.seconds_before, self.started = seconds_before, time.monotonic()
        self.best: float | None = trial.user_attrs.get("val_accuracy")
        self.is_pruned = False

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

    def on_start(self, plan: TrainingPlan) -> None: ...
    def on_batch(self, progress: Any) -> None: ...

    def on_epoch(self, metrics: EpochMetrics) -> None:
        accuracy = metrics.val_accuracy
        if accuracy is not None:
            self.best = accuracy if self.best is None else max(self.best, accuracy)
            self.trial.report(accuracy, metrics.epoch)
        self.trial.set_user_attr("epoch", metrics.epoch)
        self.trial.set_user_attr("val_accuracy", self.best)
        self.trial.set_user_attr("seconds", self.seconds())
        self.is_pruned = accuracy is not None and metrics.epoch < self.epochs and self.trial.should_prune()

    def on_checkpoint(self, path: Path) -> None:
        if self.is_pruned:
            import optuna

            raise optuna.TrialPruned()


@contextlib.contextmanager
def heartbeat(storage: Any, trial_id: int, seconds: int) -> Iterator[None]:
    """Record the trial's heartbeat at once and then every few seconds while it trains (RDB storages only)."""
    if not has_heartbeat(storage):
        yield
        return
    storage.record_heartbeat(trial_id)
    with repeating(lambda: storage.record_heartbeat(trial_id), seconds):
        yield


@contextlib.contextmanager
def repeating(action: Callable[[], None], seconds: float) -> Iterator[None]:
    """Call action every `seconds` in a background thread while the block runs (the block is the training)."""
    stopped = threading.Event()

    def loop() -> None:
        while not stopped.wait(seconds):
            action()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()


class DataCache:
    """The data set loaded once per worker and device; every trial holds out its own validation split."""

    def __init__(self) -> None:
        self.loaded: dict[tuple, Any] = {}

    def get(self, config: Config) -> Any:
        from mlp_cli.data import load_data
        from mlp_cli.devices import resolve_device

        device = resolve_device(config.device)
        key = (config.dataset, config.data_dir, str(device))
        if key not in self.loaded:
            self.loaded[key] = load_data(config.dataset, Path(config.data_dir) if config.data_dir else None, device)
        return self.loaded[key]


def run_trial(study: Any, trial: Any, plan: SweepPlan, stop: StopRequest, data: DataCache) -> None:
    """Run one claimed trial; if the study says it already ended, another worker took it over after this one
    missed its heartbeats (a long pause): give it up, that worker's result counts."""
    import optuna

    try:
        train_trial(study, trial, plan, stop, data)
    except optuna.exceptions.UpdateFinishedTrialError:
        return


def train_trial(study: Any, trial: Any, plan: SweepPlan, stop: StopRequest, data: DataCache) -> None:
    """Train (or resume, or just finish recording) one claimed trial in its run folder and tell the study.

    Raises:
        TrainingStoppedError: a signal stopped it; it saved last.pt and was re-enqueued to resume.
    """
    import optuna

    slot = trial.user_attrs.get("slot", trial.number)
    run_dir = plan.sweep_dir / TRIALS_FOLDER / f"{slot:04d}"
    trial.set_user_attr("slot", slot)
    trial.set_user_attr("run_dir", str(Path(TRIALS_FOLDER) / run_dir.name))
    config = trial_config(plan, suggest(trial, plan.params))
    reporter = TrialReporter(trial, config.epochs, trial.user_attrs.get("seconds", 0.0))
    try:
        with heartbeat(study._storage, trial._trial_id, plan.heartbeat):
            history = train_or_resume(config, run_dir, reporter, stop, data)
    except optuna.TrialPruned:
        finish(study, trial, reporter, run_dir, optuna.trial.TrialState.PRUNED)
        return
    except TrainingDivergedError as err:
        trial.set_user_attr("outcome", f"diverged: {err}")
        finish(study, trial, reporter, run_dir, optuna.trial.TrialState.FAIL)
        return
    except TrainingStoppedError:
        trial.set_user_attr("seconds", reporter.seconds())
        fail_and_retry(study, trial._trial_id, "stopped by a signal")
        raise
    except MlpError as err:  # e.g. a checkpoint or the data became unreadable: back in the queue, then say it
        fail_and_retry(study, trial._trial_id, f"error: {err}")
        raise
    trial.set_user_attr("val_accuracy", max((row.val_accuracy for row in history if row.val_accuracy is not None),
                                            default=None))
    finish(study, trial, reporter, run_dir, optuna.trial.TrialState.COMPLETE)


def train_or_resume(config: Config, run_dir: Path, reporter: TrialReporter, stop: StopRequest,
                    data: DataCache) -> list[EpochMetrics]:
    """The trial's epochs: trained afresh, continued from its last.pt, or read back if it had finished."""
    from mlp_cli.checkpoint import load_checkpoint
    from mlp_cli.training import resume_run, train

    last = run_dir / LAST_CHECKPOINT
    if last.exists():
        if load_checkpoint(last).epoch >= config.epochs:  # finished, but its worker died before telling
            return [EpochMetrics(**row) for row in read_metrics(run_dir)]
        machine = {key: getattr(config, key) for key in ("threads", "data_dir", "device")}
        return resume_run(last, machine, reporter, stop, data.get(config)).history
    return train(config, run_dir, reporter, stop, overwrite=True, data=data.get(config)).history


def finish(study: Any, trial: Any, reporter: TrialReporter, run_dir: Path, state: Any) -> None:
    """Draw the trial's curves into its run folder and tell the study how it ended."""
    from mlp_cli.curves import draw_curves

    trial.set_user_attr("seconds", reporter.seconds())
    rows = read_metrics(run_dir)
    if rows:
        try:
            draw_curves(run_dir, rows)
        except Exception as err:  # a picture must never cost the trial
            print(f"warning: cannot draw {run_dir}/curves.png ({err}); the sweep goes on", file=sys.stderr)
    value = trial.user_attrs.get("val_accuracy") if state.name == "COMPLETE" else None
    study.tell(trial, value if state.name == "COMPLETE" else None, state=state)


def run_worker(plan: SweepPlan, stop: StopRequest, data: DataCache | None = None) -> None:
    """Train waiting trials back to back until none is left and none runs elsewhere, or a stop is requested.

    Raises:
        TrainingStoppedError: a signal stopped the trial in progress (saved, re-enqueued).
    """
    storage = open_storage(plan.storage_url, plan.heartbeat)
    study = open_study(plan, storage)
    definition, data = study.user_attrs[DEFINITION_ATTR], data or DataCache()
    while not stop.is_requested:
        take_over_dead_trials(study)
        trial = claim_waiting_trial(study, plan.sweep_dir, definition)
        if trial is not None:
            run_trial(study, trial, plan, stop, data)
        elif not unfinished(study):
            return
        else:
            time.sleep(POLL_SECONDS)  # trials run elsewhere: one may die and need taking over
    raise TrainingStoppedError("stopped before the next trial", stop.exit_code)


def unfinished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))


# --- the whole sweep: workers, the live view, the result ------------------------------------------------------


def run_sweep(plan: SweepPlan, stop: StopRequest, on_update: Callable[[SweepReport], None] | None = None,
              on_event: Callable[[str], None] | None = None) -> SweepReport:
    """Run the sweep with plan.workers workers on this machine, then choose the best trial on the validation
    split and evaluate only that one on the test split.

    Raises:
        MlpError: the data or the storage cannot be used, or the study belongs to another sweep.
        TrainingStoppedError: a signal stopped the workers; their trials saved last.pt and run the same command
            again to resume.
    """
    data = DataCache()
    check_validation_split(plan, data.get(trial_config(plan, {})))
    if plan.storage_url == default_storage_url(plan.sweep_dir):
        plan.sweep_dir.mkdir(parents=True, exist_ok=True)  # the database file goes in there
        storage = open_storage(plan.storage_url, plan.heartbeat)
    else:
        storage = open_storage(plan.storage_url, plan.heartbeat)  # unreachable: nothing has been written
        plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(plan, storage)
    monitor = Monitor(study, plan, on_update, on_event)
    if plan.workers == 1:
        with monitor.running(), contextlib.suppress(TrainingStoppedError):  # said below, with the sweep's count
            run_worker(plan, stop, data)
    else:
        run_worker_processes(plan, stop, monitor)
    monitor.tick()
    if stop.is_requested:
        report = build_report(study, plan.name, plan.storage_url)
        left = sum(1 for row in report.trials if row.state in ("waiting", "running"))
        raise TrainingStoppedError(f"sweep {plan.name} stopped: {len(report.trials) - left} of "
                                   f"{len(report.trials)} trials done, each interrupted one saved its last.pt; "
                                   "run the same command to continue", stop.exit_code)
    return finish_sweep(study, plan, on_event)


def check_validation_split(plan: SweepPlan, data: Any) -> None:
    """Raise DataError before anything is written if --val-size leaves no training images.

    Raises:
        DataError: the validation split does not fit the data set.
    """
    count, held = len(data.train_labels), plan.base.val_size
    if not 1 <= held < count:
        raise DataError(f"--val-size {held}: the training split of {data.name} has {count} images; expected 1 to "
                        f"{count - 1} (sweeps hold out {SWEEP_VAL_SIZE} unless --val-size or the config says)")


def plan_to_json(plan: SweepPlan) -> str:
    """The plan for a worker process (sent on its stdin, so a database password never shows in `ps`)."""
    fields = {item.name: getattr(plan, item.name) for item in dataclasses.fields(plan)}
    fields.update(sweep_dir=str(plan.sweep_dir), base=config_to_dict(plan.base),
                  params=[dataclasses.asdict(param) for param in plan.params])
    return json.dumps(fields)


def plan_from_json(text: str) -> SweepPlan:
    fields = json.loads(text)
    fields.update(sweep_dir=Path(fields["sweep_dir"]), base=validate_settings(fields["base"]),
                  params=[Param(**{**param, "choices": tuple(param["choices"])}) for param in fields["params"]])
    return SweepPlan(**fields)


def run_worker_processes(plan: SweepPlan, stop: StopRequest, monitor: "Monitor") -> None:
    """Start plan.workers worker processes and wait for them, passing on Ctrl-C or SIGTERM exactly once each.

    Each worker gets its own process group, so a Ctrl-C at the terminal reaches only this process, which
    forwards it once: each worker finishes its batch, saves last.pt and exits.
    """
    import subprocess
    import sys

    command = [sys.executable, "-m", "mlp_cli.sweep_worker"]
    processes = [subprocess.Popen(command, stdin=subprocess.PIPE, text=True, process_group=0)
                 for _ in range(plan.workers)]
    for process in processes:
        pipe = cast(IO[str], process.stdin)  # typeshed: optional; with stdin=PIPE never None
        pipe.write(plan_to_json(plan))
        pipe.close()
    is_forwarded = False
    while any(process.poll() is None for process in processes):
        if stop.signal_number is not None and not is_forwarded:
            for process in (process for process in processes if process.poll() is None):
                process.send_signal(stop.signal_number)
            is_forwarded = True
        monitor.tick()
        time.sleep(POLL_SECONDS / 4)
    failed = [process.returncode for process in processes if process.returncode not in (0, stop.exit_code)]
    if failed and not stop.is_requested and unfinished(monitor.study):
        raise MlpError(f"{len(failed)} of {plan.workers} workers failed (exit codes "
                       f"{', '.join(map(str, failed))}); their trials are taken over when the same command runs again")


class Monitor:
    """Looks at the study now and then: a fresh report for the live table, and a line for each trial that
    starts or ends (a log without a terminal shows those as they happen)."""

    def __init__(self, study: Any, plan: SweepPlan, on_update: Callable[[SweepReport], None] | None,
                 on_event: Callable[[str], None] | None) -> None:
        self.study, self.plan = study, plan
        self.on_update, self.on_event = on_update, on_event
        self.states: dict[int, str] = {}

    def tick(self) -> None:
        if self.on_update is None and self.on_event is None:
            return
        report = build_report(self.study, self.plan.name, self.plan.storage_url)
        for row in sorted(report.trials, key=lambda row: row.trial):
            if self.states.get(row.trial, "waiting") != row.state and self.on_event:
                self.on_event(describe_row(row))
            self.states[row.trial] = row.state
        if self.on_update:
            self.on_update(report)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Tick in a background thread while the block (an in-process worker) runs."""
        with repeating(self.tick, POLL_SECONDS):
            yield


def describe_row(row: TrialRow) -> str:
    """A plain line about a trial, e.g. `trial 3 (hidden=64, lr=0.1): complete, val 0.8123, 12.3 s`."""
    params = ", ".join(f"{name}={value}" for name, value in row.params.items())
    accuracy = "" if row.val_accuracy is None else f", val {row.val_accuracy:.4f}"
    return f"trial {row.trial} ({params}): {row.state}{accuracy}, epoch {row.epoch}, {row.seconds:.1f} s"


STATE_ORDER = {"complete": 0, "pruned": 1, "diverged": 2, "interrupted": 3, "running": 3, "waiting": 4}


def build_report(study: Any, name: str, storage_url: str) -> SweepReport:
    """The sweep's trials as table rows (one per trial, retries folded in), best validation accuracy first."""
    from optuna.trial import TrialState

    definition = study.user_attrs.get(DEFINITION_ATTR, {})
    attempts: dict[int, list[Any]] = {}
    for trial in study.get_trials(deepcopy=False):
        attempts.setdefault(trial.user_attrs.get("slot", trial.number), []).append(trial)
    rows = [trial_row(slot, sorted(tries, key=lambda trial: trial.number)) for slot, tries in attempts.items()]
    rows.sort(key=lambda row: (STATE_ORDER[row.state], -(row.val_accuracy or 0.0), row.trial))
    is_done = not any(trial.state in (TrialState.WAITING, TrialState.RUNNING) for trial in study.get_trials(
        deepcopy=False))
    param_names = [text.split("=", 1)[0] for text in definition.get("params", [])]
    return SweepReport(name, hide_password(storage_url), definition.get("search", "?"), param_names, rows, is_done,
                       study.user_attrs.get(CHOSEN_ATTR))


def trial_row(slot: int, tries: list[Any]) -> TrialRow:
    """The row of one trial from its attempts (oldest first)."""
    from datetime import datetime

    latest = tries[-1]
    state = latest.state.name.lower()
    if state == "fail":  # diverged (final), or stopped / its worker died (a retry follows at once)
        state = "diverged" if str(latest.user_attrs.get("outcome", "")).startswith("diverged") else "interrupted"
    params = latest.params or latest.system_attrs.get("fixed_params", {})
    seconds = latest.user_attrs.get("seconds", 0.0)
    if state == "running" and latest.datetime_start is not None:
        before = tries[-2].user_attrs.get("seconds", 0.0) if len(tries) > 1 else 0.0
        seconds = before + (datetime.now() - latest.datetime_start).total_seconds()
    worker = latest.user_attrs.get("worker") or {}
    return TrialRow(slot, {name: format_value(value) for name, value in params.items()}, state,
                    latest.user_attrs.get("epoch", 0), latest.user_attrs.get("val_accuracy"), seconds,
                    latest.user_attrs.get("run_dir", str(Path(TRIALS_FOLDER) / f"{slot:04d}")), len(tries),
                    worker.get("host"))


def format_value(value: Any) -> Any:
    """A param value for tables and JSON: floats of a search rounded to 4 significant digits."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def finish_sweep(study: Any, plan: SweepPlan, on_event: Callable[[str], None] | None = None) -> SweepReport:
    """The final report: the best complete trial on validation accuracy, its test accuracy, and the pictures."""
    report = build_report(study, plan.name, plan.storage_url)
    if not report.is_done:
        return report  # trials still run on another machine: the last worker to finish reports
    best = next((row for row in report.trials if row.state == "complete"), None)
    if best is None:
        return report
    chosen = report.chosen
    if chosen is None or chosen.get("trial") != best.trial or chosen.get("test_accuracy") is None:
        chosen = choose(best, plan.sweep_dir)
        if chosen.get("test_accuracy") is not None:
            study.set_user_attr(CHOSEN_ATTR, chosen)
    report.chosen = chosen
    from mlp_cli.sweep_plots import draw_sweep_pictures

    report.pictures = draw_sweep_pictures(study, report, plan.sweep_dir, on_event)
    return report


def choose(best: TrialRow, sweep_dir: Path) -> dict[str, Any]:
    """The chosen trial, with the accuracy of its best.pt on the test split (the only trial tested)."""
    from mlp_cli.evaluation import evaluate_checkpoint

    checkpoint = sweep_dir / best.run_dir / BEST_CHECKPOINT
    chosen = {"trial": best.trial, "params": best.params, "run_dir": str(sweep_dir / best.run_dir),
              "checkpoint": str(checkpoint), "val_accuracy": best.val_accuracy, "test_accuracy": None}
    if not checkpoint.exists():
        chosen["note"] = f"its checkpoint is on {best.host}: run `mlp sweep show` there, or after it finished"
        return chosen
    chosen["test_accuracy"] = evaluate_checkpoint(checkpoint, "test").accuracy
    return chosen


def read_report(name: str, storage: str | None = None) -> SweepReport:
    """The sweep's report from its database alone (for `mlp sweep show`).

    Raises:
        MlpError: no such sweep in the storage.
    """
    import optuna

    study_file = SWEEPS_ROOT / name / STUDY_FILE
    if storage is None and not study_file.exists():
        raise MlpError(f"{study_file}: no such sweep (run `mlp sweep --name {name} ...` first, or pass --storage)")
    url = storage or default_storage_url(SWEEPS_ROOT / name)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError as err:
        raise MlpError(f"--storage {hide_password(url)}: holds no sweep named {name}") from err
    return build_report(study, name, url)
