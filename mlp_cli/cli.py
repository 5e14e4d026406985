"""The `mlp` command line: one function per command; the work happens in the library.

The options are declared in cli_options.py. torch, torchvision and matplotlib are imported inside the
commands, so `mlp --help` answers at once.
"""

import dataclasses
import functools
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mlp_cli.cli_options import (
    ActivationOption,
    AugmentOption,
    BackendOption,
    BatchSizeOption,
    BoardPortOption,
    ConfigOption,
    DataDirOption,
    DataInfoJsonOption,
    DataPreviewCountOption,
    DataPreviewOutOption,
    DataPreviewSplitOption,
    DatasetOption,
    DeviceOption,
    DistTimeoutOption,
    DropoutOption,
    EpochsOption,
    EvalCheckpointArgument,
    EvalConfusionOption,
    EvalDeviceOption,
    EvalErrorsOption,
    EvalJsonOption,
    EvalSplitOption,
    ExportCheckpointArgument,
    ExportOutOption,
    ExportProbabilitiesOption,
    FolderOfRunsArgument,
    HiddenOption,
    ImplOption,
    InitOption,
    LabelSmoothingOption,
    LrOption,
    MomentumOption,
    NprocPerNodeOption,
    OptimizerOption,
    OutOption,
    OverwriteOption,
    PlainFlagsCommand,
    PlainFlagsGroup,
    PlotActivationGradOption,
    PlotActivationListOption,
    PlotActivationNamesArgument,
    PlotActivationOutOption,
    PlotActivationRangeOption,
    PlotCurvesOutOption,
    PlotCurvesRunDirsArgument,
    PrecisionOption,
    PredictCheckpointArgument,
    PredictImagesArgument,
    PredictInvertOption,
    PredictJsonOption,
    PredictSaveInputOption,
    PredictTopKOption,
    QuietOption,
    ReportEveryOption,
    ResumeOption,
    RunsJsonOption,
    ScheduleOption,
    SeedOption,
    SigmaOption,
    StorageOption,
    SweepConfigOption,
    SweepHeartbeatOption,
    SweepJsonOption,
    SweepNameArgument,
    SweepNameOption,
    SweepParamOption,
    SweepPruneOption,
    SweepQuietOption,
    SweepSearchOption,
    SweepSeedOption,
    SweepThreadsOption,
    SweepTrialsOption,
    SweepValSizeOption,
    SweepWorkersOption,
    TbHistogramsOption,
    TensorboardOption,
    ThreadsOption,
    TrainDataDirOption,
    TrainDatasetOption,
    TrainMetricsOption,
    ValSizeOption,
    VersionOption,
    WarmupEpochsOption,
    WeightDecayOption,
)
from mlp_cli.config import ACTIVATIONS, DEFAULT_DATASET, Config, load_config
from mlp_cli.errors import MlpError
from mlp_cli.sweep import HEARTBEAT_SECONDS

if TYPE_CHECKING:
    from mlp_cli.events import FitResult

X_START, X_STOP, X_STEP = -8.0, 8.0, 0.1  # D2L 5.1.2: x = -8.0, -7.9, ..., 7.9
SETTINGS = tuple(field.name for field in dataclasses.fields(Config))  # what `mlp train` passes to load_config

app = typer.Typer(
    name="mlp",
    cls=PlainFlagsGroup,
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


@app.callback()
def main_options(version: VersionOption = False) -> None:
    """Train, evaluate and explain multilayer perceptrons (Dive into Deep Learning, chapter 5).

    Exit codes: 0 ok, 1 failure (one line on stderr), 2 usage error, 130/143 interrupted (run saved).
    """


def is_torchrun_worker() -> bool:
    """Whether torchrun started this process (what torch.distributed.is_torchelastic_launched reads, without torch)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def torchrun_rank() -> int:
    """This process's rank when torchrun started it, else 0."""
    return int(os.environ.get("RANK", "0")) if is_torchrun_worker() else 0


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an MlpError into `error: <message>` on one line of stderr and exit code 1; bugs keep tracebacks.

    Under torchrun the other ranks prefix their rank, and stay silent on errors that rank 0 reports for all.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MlpError as err:
            rank = torchrun_rank()
            if rank and err.same_on_every_rank:
                raise typer.Exit(err.exit_code) from None
            # markup=False: rich would read text such as "[train]" as a style tag and drop it
            stderr.print(f"{err.prefix}{f'rank {rank}: ' if rank else ''}{err}", markup=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper


@app.command("train", cls=PlainFlagsCommand)
@reports_errors
def train_command(
    impl: ImplOption = None,
    dataset: TrainDatasetOption = None,
    hidden: HiddenOption = None,
    activation: ActivationOption = None,
    sigma: SigmaOption = None,
    init: InitOption = None,
    optimizer: OptimizerOption = None,
    lr: LrOption = None,
    momentum: MomentumOption = None,
    weight_decay: WeightDecayOption = None,
    schedule: ScheduleOption = None,
    warmup_epochs: WarmupEpochsOption = None,
    label_smoothing: LabelSmoothingOption = None,
    augment: AugmentOption = None,
    dropout: DropoutOption = None,
    batch_size: BatchSizeOption = None,
    epochs: EpochsOption = None,
    seed: SeedOption = None,
    device: DeviceOption = None,
    val_size: ValSizeOption = None,
    report_every: ReportEveryOption = None,
    train_metrics: TrainMetricsOption = None,
    threads: ThreadsOption = None,
    precision: PrecisionOption = None,
    nproc_per_node: NprocPerNodeOption = None,
    backend: BackendOption = None,
    dist_timeout: DistTimeoutOption = None,
    tensorboard: TensorboardOption = None,
    tb_histograms: TbHistogramsOption = None,
    data_dir: TrainDataDirOption = None,
    config: ConfigOption = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
    resume: ResumeOption = None,
) -> None:
    """Train an MLP and save metrics and checkpoints (last.pt, best.pt) in a new run folder.

    Ctrl-C or SIGTERM stops at the next batch, saves last.pt and prints how to resume (exit 130 or 143).

    Example: mlp train --impl concise --epochs 5 --out runs/concise5
    """
    flags = settings_given(locals())  # first, while locals() holds the arguments only
    if is_torchrun_worker():
        from mlp_cli.launch import exit_with_launcher

        exit_with_launcher()
    if resume is not None and (config is not None or out is not None):
        raise MlpError("--resume continues a run in its own folder with its own settings: "
                       "leave out --config and --out")
    if resume is None:
        job: Config | Path = load_config(config, flags)
    else:
        from mlp_cli.runs import LAST_CHECKPOINT

        job = resume = checkpoint_in(resume, LAST_CHECKPOINT, "resuming")
    if nproc_per_node is not None:
        options = {"config": config, "out": out, "resume": resume, "overwrite": overwrite or None,
                   "quiet": quiet or None}
        raise typer.Exit(launch_job(nproc_per_node, job, flags, options))
    result = run_training(job, flags, out, overwrite, quiet)
    if torchrun_rank() == 0:  # under torchrun only rank 0 shows progress and the result
        print_training_result(result)


def settings_given(arguments: dict[str, Any]) -> dict[str, Any]:
    """The training settings among a command's arguments (None = not given), for load_config: one per Config
    field, so that a setting cannot be left out here (a KeyError, and a test, catch a field without a flag)."""
    values = {name: arguments[name] for name in SETTINGS}
    return {name: str(value) if isinstance(value, Path) else value for name, value in values.items()}


def checkpoint_in(path: Path, name: str, doing: str) -> Path:
    """The checkpoint that path names: path itself, or in a run folder its checkpoint `name` (said on stderr)."""
    if not path.is_dir():
        return path
    checkpoint = path / name
    if checkpoint.exists():  # else the one line is the error that names the missing file
        stderr.print(f"{doing} {checkpoint}", markup=False, soft_wrap=True)
    return checkpoint


def launch_job(processes: int, job: Config | Path, flags: dict[str, Any], options: dict[str, Any]) -> int:
    """Start `mlp train` with the same flags and options in `processes` processes (DDP); the job's exit code.

    job: the settings of a new run, or the checkpoint of the run to resume.
    """
    from mlp_cli.data import locate_dataset
    from mlp_cli.launch import check_can_launch, launch_training
    from mlp_cli.training import load_resumable

    check_can_launch(processes)
    # checked (and downloaded) here once, rather than by every process: one message, one download
    settings = job if isinstance(job, Config) else load_resumable(job, flags)[1]
    locate_dataset(settings.dataset, Path(settings.data_dir) if settings.data_dir else None)
    return launch_training(processes, as_arguments({**flags, **options}))


def as_arguments(options: dict[str, Any]) -> list[str]:
    """Given options (None = not given) as command-line arguments again, for the processes to start."""
    arguments = []
    for key, value in options.items():
        name = key.replace("_", "-")
        if isinstance(value, bool):
            arguments.append(f"--{name}" if value else f"--no-{name}")
        elif value is not None:
            arguments += [f"--{name}", str(value)]
    return arguments


def run_training(job: Config | Path, flags: dict[str, Any], out: Path | None, overwrite: bool,
                 quiet: bool) -> "FitResult":
    """Train a new run (job: its settings) or resume one (job: its checkpoint); rank 0 draws progress, curves and
    TensorBoard files."""
    from mlp_cli.curves import CurvesReporter
    from mlp_cli.events import NULL_REPORTER, ReporterGroup
    from mlp_cli.reporting import RichReporter
    from mlp_cli.signals import STOP_SIGNALS, stop_on_signals
    from mlp_cli.tensorboard import TensorBoardReporter
    from mlp_cli.training import resume_run, train

    is_main = torchrun_rank() == 0
    progress_console = Console(stderr=True, highlight=False, quiet=quiet or not is_main)
    try:
        with (stop_on_signals() as stop, RichReporter(progress_console) as terminal, CurvesReporter() as curves,
              TensorBoardReporter() as board):
            reporter = ReporterGroup(terminal, curves, board) if is_main else NULL_REPORTER
            if isinstance(job, Config):
                result = train(job, out, reporter, stop, overwrite)
            else:
                result = resume_run(job, flags, reporter, stop)
    finally:
        if is_torchrun_worker():
            # torchrun sends SIGTERM to every process once one has exited: let this one say its last words
            for number in STOP_SIGNALS:
                signal.signal(number, signal.SIG_IGN)
    return result


def print_training_result(result: "FitResult") -> None:
    """The best epoch's accuracy and checkpoint, and where the metrics are, on stdout."""
    from mlp_cli.runs import METRICS_FILE

    best, split = result.history[result.best_epoch - 1], result.selected_by
    summary = f"best {split} accuracy {getattr(best, f'{split}_accuracy'):.4f} at epoch {best.epoch}"
    if split == "val":
        summary += f" (final test accuracy {result.history[-1].test_accuracy:.4f})"
    stdout.print(f"{summary}: {result.best_checkpoint}", markup=False, soft_wrap=True)
    stdout.print(f"metrics: {result.run_dir / METRICS_FILE}; evaluate with: mlp eval {result.best_checkpoint}",
                 markup=False, soft_wrap=True)


@app.command("eval", cls=PlainFlagsCommand)
@reports_errors
def eval_command(
    checkpoint: EvalCheckpointArgument,
    split: EvalSplitOption = "test",
    data_dir: DataDirOption = None,
    device: EvalDeviceOption = "auto",
    confusion: EvalConfusionOption = None,
    errors: EvalErrorsOption = None,
    as_json: EvalJsonOption = False,
) -> None:
    """Rebuild a model from its checkpoint alone; report loss, accuracy, per-class accuracy and confusions.

    Example: mlp eval runs/concise5/best.pt --json
    """
    from mlp_cli.evaluation import evaluate_checkpoint
    from mlp_cli.plots import check_image_path
    from mlp_cli.runs import BEST_CHECKPOINT

    checkpoint = checkpoint_in(checkpoint, BEST_CHECKPOINT, "evaluating")
    for option, path in (("--confusion", confusion), ("--errors", errors)):
        if path is not None:
            check_image_path(path, option)  # before the evaluation, not after it
    result = evaluate_checkpoint(checkpoint, split, data_dir, device, errors)
    if confusion is not None:
        from mlp_cli.plots import plot_confusion

        plot_confusion(result.confusion, result.class_names, f"{checkpoint} on the {split} split", confusion)
    if as_json:
        print(json.dumps(dataclasses.asdict(result)))
        return
    from mlp_cli.reporting import evaluation_tables

    for table in evaluation_tables(result):
        stdout.print(table)
    for written in (path for path in (confusion, errors) if path is not None):
        stderr.print(f"wrote {written}", markup=False, soft_wrap=True)


@app.command("plot-activation", cls=PlainFlagsCommand)
@reports_errors
def plot_activation_command(
    names: PlotActivationNamesArgument = None,
    out: PlotActivationOutOption = None,
    grad: PlotActivationGradOption = True,
    x_range: PlotActivationRangeOption = (X_START, X_STOP),
    list_names: PlotActivationListOption = False,
) -> None:
    """Plot activation functions and their gradients on x = -8.0, -7.9, ..., 7.9 (D2L 5.1.2).

    Without --out the plot is drawn in the terminal (with uniplot); with --out it is written as an image.
    Several names are overlaid, with a legend.

    Example: mlp plot-activation relu sigmoid tanh --range -6 6 --out activations.png
    """
    if list_names:
        stdout.print("\n".join(ACTIVATIONS), markup=False)
        return
    if not names:
        raise MlpError("name an activation, e.g. mlp plot-activation relu (mlp plot-activation --list shows all)")
    if out is not None:
        from mlp_cli.plots import check_image_path

        check_image_path(out, "--out")
    from mlp_cli.activations import sample_activation

    samples = [sample_activation(name, *x_range, X_STEP) for name in names]
    x, ys, grads = samples[0][0], [sample[1] for sample in samples], [sample[2] for sample in samples]
    if out is None:
        from mlp_cli.plots import activation_text_plot

        is_colored = stdout.is_terminal and not stdout.no_color  # NO_COLOR is honoured
        print(activation_text_plot(list(names), x, ys, grads if grad else None, color=is_colored))
        return
    from mlp_cli.plots import plot_activation

    plot_activation(list(names), x, ys, grads if grad else None, out)
    stdout.print(f"wrote {out}", markup=False, soft_wrap=True)


@app.command("predict", cls=PlainFlagsCommand)
@reports_errors
def predict_command(
    checkpoint: PredictCheckpointArgument,
    images: PredictImagesArgument,
    top_k: PredictTopKOption = 3,
    invert: PredictInvertOption = False,
    save_input: PredictSaveInputOption = None,
    as_json: PredictJsonOption = False,
) -> None:
    """Classify images with a trained model; each is made 28x28 grayscale, as the data set's images are.

    Images are converted to grayscale and resized to the model's input (28x28). The data sets show a light
    object on a dark background: pass --invert for photos of dark objects on a light background.

    Example: mlp predict runs/NAME/best.pt shoe.png shirt.jpg --top-k 2
    """
    from mlp_cli.images import light_border_hint

    if checkpoint.suffix == ".onnx":
        from mlp_cli.onnx_predict import predict_onnx_images

        predictions = predict_onnx_images(checkpoint, images, top_k, invert, save_input)
    else:
        from mlp_cli.predict import predict_images

        predictions = predict_images(checkpoint, images, top_k, invert, save_input)
    for failed in (prediction for prediction in predictions if prediction.error):
        stderr.print(f"error: {failed.error}", markup=False, soft_wrap=True)
    hint = light_border_hint(predictions, invert)
    if hint is not None:
        stderr.print(f"note: {hint}", markup=False, soft_wrap=True)
    if any(prediction.saved_input for prediction in predictions):
        stderr.print(f"wrote the model's inputs to {save_input}", markup=False, soft_wrap=True)
    if as_json:
        print(json.dumps([dataclasses.asdict(prediction) for prediction in predictions]))
    else:
        stdout.print(predictions_table(predictions, f"predictions of {checkpoint}", top_k))
    if any(prediction.error for prediction in predictions):
        raise typer.Exit(1)


def predictions_table(predictions: list[Any], title: str, top_k: int) -> Table:
    """The top classes of each image that could be classified, with their probabilities."""
    table = Table(title=Text(title), title_justify="left")
    table.add_column("image")
    table.add_column(f"top {top_k}")
    for prediction in (prediction for prediction in predictions if not prediction.error):
        ranked = ", ".join(f"{name} {probability:.1%}"
                           for name, probability in zip(prediction.classes, prediction.probabilities, strict=True))
        table.add_row(Text(prediction.image), Text(ranked))
    return table


@app.command("runs", cls=PlainFlagsCommand)
@reports_errors
def runs_command(folder: FolderOfRunsArgument = Path("runs"), as_json: RunsJsonOption = False) -> None:
    """List run folders, newest first: epochs done, best test accuracy, and the settings that differ between them.

    Into a pipe or file the list is plain tab-separated lines, one per run. A damaged run folder is listed with
    its problem.

    Example: mlp runs runs --json
    """
    from mlp_cli.reporting import runs_plain_lines, runs_table
    from mlp_cli.runs import list_runs

    runs = list_runs(folder)
    if as_json:
        print(json.dumps([dataclasses.asdict(run) for run in runs]))
    elif stdout.is_terminal:
        stdout.print(runs_table(runs, folder, stdout.width))
    else:
        print("\n".join(runs_plain_lines(runs)))


@app.command("plot-curves", cls=PlainFlagsCommand)
@reports_errors
def plot_curves_command(run_dirs: PlotCurvesRunDirsArgument, out: PlotCurvesOutOption = Path("curves.png")) -> None:
    """Overlay the learning curves of several runs (train/test loss and accuracy per epoch) in one figure.

    A run folder whose metrics cannot be read is skipped with a warning on stderr.

    Example: mlp plot-curves runs/scratch-run runs/concise-run --out compare.png
    """
    from mlp_cli.plots import check_image_path, plot_curves
    from mlp_cli.runs import find_run_dirs, read_metrics

    check_image_path(out, "--out")
    runs, skipped = [], []
    for run_dir in (found for folder in run_dirs for found in find_run_dirs(folder)):
        try:
            rows = read_metrics(run_dir)
        except MlpError as err:
            skipped.append(str(err))
            continue
        if rows:
            runs.append((run_dir, rows))
        else:
            skipped.append(f"{run_dir}: no metrics.jsonl with finished epochs (is it a run folder?)")
    if not runs:
        raise MlpError(f"no run with finished epochs to plot ({'; '.join(skipped)})")
    for reason in skipped:
        stderr.print(f"warning: skipped {reason}", markup=False, soft_wrap=True)
    names = [run_dir.name for run_dir, _ in runs]
    is_ambiguous = len(set(names)) < len(names)  # runs/a/x and runs/b/x: the legend needs the whole path
    plot_curves([(str(run_dir) if is_ambiguous else run_dir.name, rows) for run_dir, rows in runs], out)
    stdout.print(f"wrote {out}", markup=False, soft_wrap=True)


data_app = typer.Typer(help="Look at the data set: where it was found, its classes, sample images.",
                       cls=PlainFlagsGroup, no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("info", cls=PlainFlagsCommand)
@reports_errors
def data_info_command(
    dataset: DatasetOption = DEFAULT_DATASET,
    data_dir: DataDirOption = None,
    as_json: DataInfoJsonOption = False,
) -> None:
    """Say where the data set was found, and each split's size, image shape and images per class.

    Example: mlp data info --dataset fashion-mnist
    """
    from mlp_cli.data import describe_data, load_data

    data = load_data(dataset, data_dir)
    splits = describe_data(data)
    if as_json:
        print(json.dumps({"dataset": dataset, "source": str(data.source),
                          "splits": [dataclasses.asdict(split) for split in splits]}))
        return
    stdout.print(f"{dataset} from {data.source}", markup=False, soft_wrap=True)
    table = Table(title="images per class", title_justify="left")
    table.add_column("class")
    for split in splits:
        table.add_column(f"{split.split} ({split.count:,} of {'x'.join(map(str, split.image_shape))})",
                         justify="right")
    for name in data.class_names:
        table.add_row(escape(name), *(f"{split.class_counts[name]:,}" for split in splits))
    stdout.print(table)


@data_app.command("preview", cls=PlainFlagsCommand)
@reports_errors
def data_preview_command(
    out: DataPreviewOutOption = Path("preview.png"),
    dataset: DatasetOption = DEFAULT_DATASET,
    split: DataPreviewSplitOption = "train",
    count: DataPreviewCountOption = 24,
    data_dir: DataDirOption = None,
) -> None:
    """Write a labelled grid of the first images of a split (D2L's show_images).

    Example: mlp data preview --out grid.png --count 16
    """
    from mlp_cli.data import MAX_PREVIEW_IMAGES, SPLITS, load_data
    from mlp_cli.plots import plot_image_grid

    if split not in SPLITS or not 1 <= count <= MAX_PREVIEW_IMAGES:
        raise MlpError(f"--split {split} --count {count}: expected train or test, "
                       f"and a count from 1 to {MAX_PREVIEW_IMAGES}")
    data = load_data(dataset, data_dir)
    images, labels = data.split(split)
    plot_image_grid(images[:count], [data.class_names[label] for label in labels[:count].tolist()], out)
    stdout.print(f"wrote {out}", markup=False, soft_wrap=True)


sweep_app = typer.Typer(help="Compare many settings: a grid or an Optuna search, each trial a run folder.",
                        cls=PlainFlagsGroup, no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


@sweep_app.callback(invoke_without_command=True)
@reports_errors
def sweep_command(
    ctx: typer.Context,
    param: SweepParamOption = None,
    config: SweepConfigOption = None,
    name: SweepNameOption = None,
    search: SweepSearchOption = "grid",
    trials: SweepTrialsOption = None,
    prune: SweepPruneOption = "none",
    val_size: SweepValSizeOption = None,
    seed: SweepSeedOption = 0,
    workers: SweepWorkersOption = 1,
    storage: StorageOption = None,
    data_dir: DataDirOption = None,
    threads: SweepThreadsOption = None,
    heartbeat: SweepHeartbeatOption = HEARTBEAT_SECONDS,
    as_json: SweepJsonOption = False,
    quiet: SweepQuietOption = False,
) -> None:
    """Train every trial of a sweep (run folders in sweeps/NAME/trials/), choose on validation accuracy,
    test the chosen one. The same command again resumes; other machines join with the same --storage.

    Ctrl-C or SIGTERM stops every worker; each running trial saves last.pt (exit 130 or 143).

    Example: mlp sweep --config configs/d2l-scratch.toml --param hidden=64,256,1024 --param lr=0.03,0.1,0.3
    """
    if ctx.invoked_subcommand is not None:
        return
    from mlp_cli.signals import stop_on_signals
    from mlp_cli.sweep import plan_sweep, run_sweep
    from mlp_cli.sweep_report import LiveTrials

    plan = plan_sweep(name, config, param or [], search, trials, prune, val_size, seed, workers, storage, data_dir,
                      threads, heartbeat)
    with stop_on_signals() as stop, LiveTrials(Console(stderr=True, highlight=False, quiet=quiet)) as live:
        report = run_sweep(plan, stop, live.update, live.event)
    print_sweep(report, as_json)


@sweep_app.command("show", cls=PlainFlagsCommand)
@reports_errors
def sweep_show_command(
    name: SweepNameArgument,
    storage: StorageOption = None,
    as_json: SweepJsonOption = False,
) -> None:
    """Print a sweep's ranked trials and chosen trial again, from its database.

    Example: mlp sweep show hidden-lr --json
    """
    from mlp_cli.sweep import read_report

    print_sweep(read_report(name, storage), as_json)


def print_sweep(report: Any, as_json: bool) -> None:
    """The ranked trials and the chosen one on stdout, as a table or JSON."""
    if as_json:
        print(json.dumps(dataclasses.asdict(report)))
        return
    from mlp_cli.sweep_report import chosen_line, trials_table

    stdout.print(trials_table(report, f"sweep {report.name} ({report.search}), ranked by validation accuracy"))
    stdout.print(chosen_line(report), markup=False, soft_wrap=True)
    for picture in report.pictures:
        stderr.print(f"wrote {picture}", markup=False, soft_wrap=True)


@app.command("board", cls=PlainFlagsCommand)
@reports_errors
def board_command(folder: FolderOfRunsArgument = Path("runs"), port: BoardPortOption = None) -> None:
    """Start TensorBoard on the runs trained with --tensorboard, on this machine only (127.0.0.1); Ctrl-C stops it.

    Example: mlp board runs --port 6007
    """
    from mlp_cli.signals import wait_for_a_stop_signal
    from mlp_cli.tensorboard import start_board

    url = start_board(folder, port)
    stdout.print(f"TensorBoard for {folder} at {url} (Ctrl-C stops it)", markup=False, soft_wrap=True)
    stdout.file.flush()  # the URL is what a script or a person waits for
    wait_for_a_stop_signal()  # then exit 0: the server's threads end with the process


@app.command("export", cls=PlainFlagsCommand)
@reports_errors
def export_command(
    checkpoint: ExportCheckpointArgument,
    out: ExportOutOption = Path("model.onnx"),
    probabilities: ExportProbabilitiesOption = False,
) -> None:
    """Export a trained model to ONNX, for onnxruntime and other runtimes: any batch size, metadata included.

    Input "images": float32 (batch, 1, 28, 28), gray level / 255, light object on a dark background. The
    metadata holds the class names, input size and pixel scaling; `mlp predict model.onnx IMAGE` uses them.

    Example: mlp export runs/NAME/best.pt --out model.onnx
    """
    from mlp_cli.export import export_onnx

    metadata = export_onnx(checkpoint, out, probabilities)
    stdout.print(f"wrote {out} (output: {metadata['output']}; input: images, float32 batch x "
                 f"{'x'.join(map(str, json.loads(metadata['input_size'])))}, gray / 255)", markup=False, soft_wrap=True)


def use_passive_openmp_threads() -> None:
    """Make torch's OpenMP threads sleep while they wait, unless the environment already says how they wait.

    GNU OpenMP's threads spin while they wait for work; when another process holds a core, the spinning
    threads and the one that has work take turns, and an epoch with every core was measured 7 to 26 times
    slower than with one thread (README, "Threads"). Waiting passively costs little on an idle machine. OpenMP
    reads the setting once, when torch loads it, so this runs before any command imports torch.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    """Console-script entry point."""
    use_passive_openmp_threads()
    app(prog_name="mlp")
