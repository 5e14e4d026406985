"""The `mlp` command line: one function per command; the work happens in the library.

torch, torchvision and matplotlib are imported inside the commands, so `mlp --help` answers at once.
"""

import dataclasses
import functools
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlp_cli.config import ACTIVATIONS, DATASETS, IMPLS, OPTIMIZERS, Config, load_config
from mlp_cli.errors import MlpError

DEFAULTS = Config()
X_START, X_STOP, X_STEP = -8.0, 8.0, 0.1  # D2L 5.1.2: x = -8.0, -7.9, ..., 7.9

app = typer.Typer(
    name="mlp",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def show_version(is_requested: bool) -> None:
    if is_requested:
        from mlp_cli import __version__

        print(f"mlp {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
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
            stderr.print(f"error: {f'rank {rank}: ' if rank else ''}{err}", markup=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper


def default(name: str) -> str:
    """A Config default as --help shows it, computed so that it never goes stale."""
    value = getattr(DEFAULTS, name)
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


DataDirOption = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="MLP_DATA_DIR",
    help="Folder with the four IDX files (.gz or raw). Default: the cache, then system folders such as "
         "/usr/share/datasets/fashion-mnist, then a torchvision download.")]


@app.command("train")
@reports_errors
def train_command(
    impl: Annotated[str | None, typer.Option(
        help=f"Model: {' or '.join(IMPLS)}.", show_default=default("impl"))] = None,
    dataset: Annotated[str | None, typer.Option(
        help=f"Data set: {' or '.join(DATASETS)}.", show_default=default("dataset"))] = None,
    hidden: Annotated[str | None, typer.Option(
        help="Hidden layer sizes, e.g. 256 or 256,128.", show_default=default("hidden"))] = None,
    activation: Annotated[str | None, typer.Option(
        help=f"Hidden-layer nonlinearity: {', '.join(ACTIVATIONS)}.", show_default=default("activation"))] = None,
    sigma: Annotated[float | None, typer.Option(
        help="Std of the scratch model's initial weights.", show_default=default("sigma"))] = None,
    init: Annotated[str | None, typer.Option(
        help="Weight init: book (each model as in D2L), normal (N(0, sigma^2)), kaiming or xavier.",
        show_default=default("init"))] = None,
    optimizer: Annotated[str | None, typer.Option(
        help=f"{' or '.join(OPTIMIZERS)}.", show_default=default("optimizer"))] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.", show_default=default("lr"))] = None,
    momentum: Annotated[float | None, typer.Option(
        help="Momentum of --optimizer momentum.", show_default=default("momentum"))] = None,
    weight_decay: Annotated[float | None, typer.Option(
        help="L2 penalty (decoupled for adamw).", show_default=default("weight_decay"))] = None,
    schedule: Annotated[str | None, typer.Option(
        help="Learning-rate schedule: none, step or cosine.", show_default=default("schedule"))] = None,
    warmup_epochs: Annotated[int | None, typer.Option(
        help="Epochs of linear learning-rate warm-up.", show_default=default("warmup_epochs"))] = None,
    label_smoothing: Annotated[float | None, typer.Option(
        help="Label smoothing of the training loss.", show_default=default("label_smoothing"))] = None,
    augment: Annotated[str | None, typer.Option(
        help="Training augmentations, comma-separated: shift (up to 2 pixels), flip.")] = None,
    dropout: Annotated[float | None, typer.Option(
        help="Drop each hidden unit with this probability while training.", show_default=default("dropout"))] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Minibatch size; under torchrun, the total over all processes.",
        show_default=default("batch_size"))] = None,
    epochs: Annotated[int | None, typer.Option(
        help="Passes over the training set.", show_default=default("epochs"))] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed for the initial weights and the data order.", show_default=default("seed"))] = None,
    device: Annotated[str | None, typer.Option(
        help="auto, cpu, cuda, cuda:N or mps.", show_default=default("device"))] = None,
    val_size: Annotated[int | None, typer.Option(
        help="Hold out N training images to choose best.pt; the test split is then evaluated at the end only.",
        show_default=default("val_size"))] = None,
    report_every: Annotated[int | None, typer.Option(
        help="Evaluate the test split every N epochs (and after the last).",
        show_default=default("report_every"))] = None,
    train_metrics: Annotated[bool | None, typer.Option(
        "--train-metrics/--no-train-metrics", help="Also evaluate the whole train split when reporting.",
        show_default=default("train_metrics"))] = None,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads for torch; 0 uses every core.", show_default=default("threads"))] = None,
    precision: Annotated[str | None, typer.Option(
        help="fp32, or bf16 (autocast; faster on some hardware, less exact).",
        show_default=default("precision"))] = None,
    nproc_per_node: Annotated[int | None, typer.Option(
        help="Train with N processes on this machine (DDP), started by torch.distributed.run as "
             "`torchrun --standalone --nproc-per-node N -m mlp_cli train ...` would; --batch-size stays the "
             "total of one step.", show_default="1, no DDP")] = None,
    backend: Annotated[str | None, typer.Option(
        help="Under torchrun: gloo (CPU), nccl (CUDA) or auto.", show_default=default("backend"))] = None,
    dist_timeout: Annotated[float | None, typer.Option(
        help="Under torchrun: seconds a process waits for the others before the job fails.",
        show_default=default("dist_timeout"))] = None,
    data_dir: DataDirOption = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="TOML file of settings (see configs/); flags given here override it.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Run folder to create (must be new or empty).", show_default="runs/DATE-TIME-IMPL")] = None,
    overwrite: Annotated[bool, typer.Option(help="Allow --out to name a folder that holds a run: replace it.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display; only the result.")] = False,
    resume: Annotated[Path | None, typer.Option(
        help="Continue the run of this checkpoint (runs/NAME/last.pt) exactly where it stopped; "
             "only --epochs, --device, --threads and --data-dir may change.")] = None,
) -> None:
    """Train an MLP and save metrics and checkpoints (last.pt, best.pt) in a new run folder.

    Ctrl-C or SIGTERM stops at the next batch, saves last.pt and prints how to resume (exit 130 or 143).

    Example: mlp train --impl concise --epochs 5 --out runs/concise5
    """
    flags = {
        "impl": impl, "dataset": dataset, "hidden": hidden, "activation": activation, "sigma": sigma, "init": init,
        "optimizer": optimizer, "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "dropout": dropout,
        "schedule": schedule, "warmup_epochs": warmup_epochs, "label_smoothing": label_smoothing,
        "augment": augment, "batch_size": batch_size, "epochs": epochs, "seed": seed, "val_size": val_size,
        "report_every": report_every, "train_metrics": train_metrics,
        "device": device, "threads": threads, "precision": precision, "backend": backend,
        "dist_timeout": dist_timeout, "data_dir": str(data_dir) if data_dir else None,
    }
    if resume is not None and (config is not None or out is not None):
        raise MlpError("--resume continues a run in its own folder with its own settings: "
                       "leave out --config and --out")
    settings = load_config(config, flags) if resume is None else None
    if nproc_per_node is not None:
        from mlp_cli.data import locate_dataset
        from mlp_cli.launch import check_can_launch, launch_training
        from mlp_cli.training import load_resumable

        check_can_launch(nproc_per_node)
        # checked (and downloaded) here once, rather than by every process: one message, one download
        job = settings if resume is None else load_resumable(resume, flags)[1]
        locate_dataset(job.dataset, Path(job.data_dir) if job.data_dir else None)
        options = {"config": config, "out": out, "resume": resume, "overwrite": overwrite or None,
                   "quiet": quiet or None}
        raise typer.Exit(launch_training(nproc_per_node, as_arguments({**flags, **options})))
    from mlp_cli.events import NULL_REPORTER, ReporterGroup
    from mlp_cli.plots import CurvesReporter
    from mlp_cli.reporting import RichReporter
    from mlp_cli.runs import METRICS_FILE
    from mlp_cli.signals import STOP_SIGNALS, stop_on_signals
    from mlp_cli.training import resume_run, train

    is_main = torchrun_rank() == 0  # under torchrun only rank 0 shows progress and the result
    progress_console = Console(stderr=True, highlight=False, quiet=quiet or not is_main)
    try:
        with stop_on_signals() as stop, RichReporter(progress_console) as terminal:
            reporter = ReporterGroup(terminal, CurvesReporter()) if is_main else NULL_REPORTER
            if resume is None:
                result = train(settings, out, reporter, stop, overwrite)
            else:
                result = resume_run(resume, flags, reporter, stop)
    finally:
        if is_torchrun_worker():
            # torchrun sends SIGTERM to every process once one has exited: let this one say its last words
            for number in STOP_SIGNALS:
                signal.signal(number, signal.SIG_IGN)
    if not is_main:
        return
    best, split = result.history[result.best_epoch - 1], result.selected_by
    summary = f"best {split} accuracy {getattr(best, f'{split}_accuracy'):.4f} at epoch {best.epoch}"
    if split == "val":
        summary += f" (final test accuracy {result.history[-1].test_accuracy:.4f})"
    stdout.print(f"{summary}: {result.best_checkpoint}", markup=False, soft_wrap=True)
    stdout.print(f"metrics: {result.run_dir / METRICS_FILE}; evaluate with: mlp eval {result.best_checkpoint}",
                 markup=False, soft_wrap=True)


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


@app.command("eval")
@reports_errors
def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint from a run folder, e.g. runs/NAME/best.pt.")],
    split: Annotated[str, typer.Option(help="Which split to evaluate: test or train.")] = "test",
    data_dir: DataDirOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    confusion: Annotated[Path | None, typer.Option(help="Also write the confusion matrix as a PNG heatmap.")] = None,
    errors: Annotated[Path | None, typer.Option(
        help="Also write a grid of misclassified images (true -> predicted) as a PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON on stdout.")] = False,
) -> None:
    """Rebuild a model from its checkpoint alone; report loss, accuracy, per-class accuracy and confusions.

    Example: mlp eval runs/concise5/best.pt --json
    """
    from mlp_cli.evaluation import evaluate_checkpoint

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


@app.command("plot-activation")
@reports_errors
def plot_activation_command(
    name: Annotated[str | None, typer.Argument(
        help="Activation, e.g. relu, sigmoid or tanh; --list shows them all.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        help="Write a PNG (or SVG, PDF) here instead of drawing in the terminal.")] = None,
    grad: Annotated[bool, typer.Option("--grad/--no-grad", help="Also plot the gradient, by autograd.")] = True,
    x_range: Annotated[tuple[float, float], typer.Option(
        "--range", help="The x range, start and stop, e.g. --range -4 4.")] = (X_START, X_STOP),
    list_names: Annotated[bool, typer.Option("--list", help="List the activations and exit.")] = False,
) -> None:
    """Plot an activation function and its gradient on x = -8.0, -7.9, ..., 7.9 (D2L 5.1.2).

    Without --out the plot is drawn in the terminal (with uniplot); with --out it is written as an image.

    Example: mlp plot-activation sigmoid --range -6 6 --out sigmoid.png
    """
    from mlp_cli.activations import ACTIVATIONS, sample_activation

    if list_names:
        stdout.print("\n".join(ACTIVATIONS), markup=False)
        return
    if name is None:
        raise MlpError("name an activation, e.g. mlp plot-activation relu (mlp plot-activation --list shows all)")
    x, y, gradient = sample_activation(name, *x_range, X_STEP)
    if out is None:
        from mlp_cli.plots import activation_text_plot

        is_colored = stdout.is_terminal and not stdout.no_color  # NO_COLOR is honoured
        print(activation_text_plot(name, x, y, gradient if grad else None, color=is_colored))
        return
    from mlp_cli.plots import plot_activation

    plot_activation(name, x, y, gradient if grad else None, out)
    stdout.print(f"wrote {out}", markup=False, soft_wrap=True)


@app.command("predict")
@reports_errors
def predict_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint, e.g. runs/NAME/best.pt.")],
    images: Annotated[list[Path], typer.Argument(help="PNG or JPEG files.")],
    top_k: Annotated[int, typer.Option("--top-k", help="How many classes to show per image.")] = 3,
    invert: Annotated[bool, typer.Option(
        help="Invert gray levels: for a dark object on a light background (Fashion-MNIST and MNIST show "
             "a light object on a dark background).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the predictions as JSON on stdout.")] = False,
) -> None:
    """Classify images with a trained model; each is made 28x28 grayscale, as the data set's images are.

    Images are converted to grayscale and resized to the model's input (28x28). The data sets show a light
    object on a dark background: pass --invert for photos of dark objects on a light background.

    Example: mlp predict runs/NAME/best.pt shoe.png shirt.jpg --top-k 2
    """
    from mlp_cli.predict import predict_images

    predictions = predict_images(checkpoint, images, top_k, invert)
    for failed in (prediction for prediction in predictions if prediction.error):
        stderr.print(f"error: {failed.error}", markup=False, soft_wrap=True)
    if as_json:
        print(json.dumps([dataclasses.asdict(prediction) for prediction in predictions]))
    else:
        table = Table(title=f"predictions of {checkpoint}", title_justify="left")
        table.add_column("image")
        table.add_column(f"top {top_k}")
        for prediction in (prediction for prediction in predictions if not prediction.error):
            ranked = ", ".join(f"{name} {probability:.1%}"
                               for name, probability in zip(prediction.classes, prediction.probabilities, strict=True))
            table.add_row(prediction.image, escape(ranked))
        stdout.print(table)
    if any(prediction.error for prediction in predictions):
        raise typer.Exit(1)


@app.command("runs")
@reports_errors
def runs_command(
    folder: Annotated[Path, typer.Argument(help="The folder that holds run folders.")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON on stdout.")] = False,
) -> None:
    """List run folders, newest first: model, data set, epochs done, best test accuracy.

    Example: mlp runs runs --json
    """
    from mlp_cli.runs import list_runs

    runs = list_runs(folder)
    if as_json:
        print(json.dumps([dataclasses.asdict(run) for run in runs]))
        return
    table = Table(title=f"runs in {folder}", title_justify="left")
    for header in ("run", "impl", "dataset", "hidden", "epochs", "best test acc", "updated"):
        table.add_column(header, justify="right" if header in ("epochs", "best test acc") else "left")
    for run in runs:
        best = "-" if run.best_test_accuracy is None else f"{run.best_test_accuracy:.4f} (epoch {run.best_epoch})"
        table.add_row(run.path, run.impl, run.dataset, ",".join(map(str, run.hidden)),
                      f"{run.epochs_done}/{run.epochs_planned}", best, run.updated.replace("T", " "))
    stdout.print(table)


@app.command("plot-curves")
@reports_errors
def plot_curves_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run folders (runs/NAME).")],
    out: Annotated[Path, typer.Option(help="Image file to write.")] = Path("curves.png"),
) -> None:
    """Overlay the learning curves of several runs (train/test loss and accuracy per epoch) in one figure.

    Example: mlp plot-curves runs/scratch-run runs/concise-run --out compare.png
    """
    from mlp_cli.plots import plot_curves
    from mlp_cli.runs import read_metrics

    runs = []
    for run_dir in run_dirs:
        rows = read_metrics(run_dir)
        if not rows:
            raise MlpError(f"{run_dir}: no metrics.jsonl with finished epochs (is it a run folder?)")
        runs.append((run_dir.name, rows))
    plot_curves(runs, out)
    stdout.print(f"wrote {out}", markup=False, soft_wrap=True)


data_app = typer.Typer(help="Look at the data set: where it was found, its classes, sample images.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
DatasetOption = Annotated[str, typer.Option(help=f"Data set: {' or '.join(DATASETS)}.")]


@data_app.command("info")
@reports_errors
def data_info_command(
    dataset: DatasetOption = DEFAULTS.dataset,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the description as JSON on stdout.")] = False,
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


@data_app.command("preview")
@reports_errors
def data_preview_command(
    out: Annotated[Path, typer.Option(help="Image file to write.")] = Path("preview.png"),
    dataset: DatasetOption = DEFAULTS.dataset,
    split: Annotated[str, typer.Option(help="train or test.")] = "train",
    count: Annotated[int, typer.Option(help="How many images, from the start of the split.")] = 24,
    data_dir: DataDirOption = None,
) -> None:
    """Write a labelled grid of the first images of a split (D2L's show_images).

    Example: mlp data preview --out grid.png --count 16
    """
    from mlp_cli.data import SPLITS, load_data
    from mlp_cli.plots import plot_image_grid

    if split not in SPLITS or count < 1:
        raise MlpError(f"--split {split} --count {count}: expected train or test, and a count >= 1")
    data = load_data(dataset, data_dir)
    images, labels = data.split(split)
    plot_image_grid(images[:count], [data.class_names[label] for label in labels[:count].tolist()], out)
    stdout.print(f"wrote {out}", markup=False, soft_wrap=True)

# here rather than at the top, to keep the sweep commands in one block (mlp_cli.sweep imports no torch or optuna)
from mlp_cli import sweep as sweep_defaults  # noqa: E402

sweep_app = typer.Typer(help="Compare many settings: a grid or an Optuna search, each trial a run folder.",
                        no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")
StorageOption = Annotated[str | None, typer.Option(
    help="Optuna storage URL: sqlite:///FILE, postgresql://USER@HOST/DB (workers on several machines) or "
         "journal:FILE.", show_default="sqlite:///sweeps/NAME/study.db")]


@sweep_app.callback(invoke_without_command=True)
@reports_errors
def sweep_command(
    ctx: typer.Context,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="A swept setting, repeatable: NAME=V1,V2,... (hidden=64,512x256; augment=none,shift) "
                              "or, with --search, a range NAME=LOW:HIGH or NAME=log:LOW:HIGH.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="TOML file of the base settings every trial starts from.")] = None,
    name: Annotated[str | None, typer.Option(
        help="The sweep's name: sweeps/NAME/ and the study.", show_default="the param names, e.g. hidden-lr")] = None,
    search: Annotated[str, typer.Option(help="grid (every combination), tpe or random (Optuna samplers).")] = "grid",
    trials: Annotated[int | None, typer.Option(
        help="Trials of a search.", show_default=str(sweep_defaults.DEFAULT_SEARCH_TRIALS))] = None,
    prune: Annotated[str, typer.Option(
        help="Stop weak trials early on their per-epoch validation accuracy: none, median or hyperband.")] = "none",
    val_size: Annotated[int | None, typer.Option(
        help="Training images held out to choose on; the test split is evaluated for the chosen trial only.",
        show_default=f"the config's, else {sweep_defaults.SWEEP_VAL_SIZE}")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search's sampler (trial seeds come from the config).")] = 0,
    workers: Annotated[int, typer.Option(
        help="Worker processes on this machine, each with cores/N threads.")] = 1,
    storage: StorageOption = None,
    data_dir: DataDirOption = None,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads per worker.", show_default="cores / workers")] = None,
    heartbeat: Annotated[int, typer.Option(
        help="Seconds between a worker's signs of life in an RDB storage; after two missed, another worker "
             "takes its trial over.")] = sweep_defaults.HEARTBEAT_SECONDS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live table or trial lines.")] = False,
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


@sweep_app.command("show")
@reports_errors
def sweep_show_command(
    name: Annotated[str, typer.Argument(help="The sweep's name (sweeps/NAME).")],
    storage: StorageOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="mlp")
