"""The options and arguments of the `mlp` commands, declared once as Annotated aliases, and how --help shows them.

A command's signature then reads one line per option (`lr: LrOption = None`); the value after `=` is the
command's default, None meaning "not given" for a training setting, so that a config file can set it. An alias
is named after its parameter: train's plainly (LrOption), another command's with the command in front
(EvalSplitOption), and those that several commands share plainly too (DataDirOption); train's own variants of
those have Train in front (TrainDataDirOption).
"""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from mlp_cli import sweep as sweep_defaults  # imports no torch or optuna
from mlp_cli.config import (
    ACTIVATIONS,
    AUGMENTATIONS,
    BACKENDS,
    DATASETS,
    DEVICE_KINDS,
    IMPLS,
    INITS,
    OPTIMIZERS,
    PRECISIONS,
    RESUMABLE_CHANGES,
    SCHEDULES,
    SPLITS,
    Activation,
    Backend,
    Config,
    Dataset,
    Impl,
    Init,
    Optimizer,
    Precision,
    Schedule,
    Split,
    expected_name,
)

DEFAULTS = Config()


def with_plain_types(params: list[Any]) -> list[Any]:
    """The params, set to show a plain metavar in --help: none for an on/off flag (--help too) and the metavar
    for an argument, where typer 0.29 shows `<bool>`, `<path>` or `<list[Path]>`."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None  # the name column shows the metavar already
    return params


class PlainFlagsCommand(TyperCommand):
    """A command whose --help shows plain metavars (with_plain_types), and a usage line without braces."""

    def get_params(self, ctx: Any) -> list[Any]:
        return with_plain_types(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """[OPTIONS] and each argument's metavar, in brackets when optional (typer 0.29 writes `{name}`)."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or param.name.upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces


class PlainFlagsGroup(TyperGroup):
    """A group (mlp, mlp data) whose --help shows no `<bool>` beside its flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        return with_plain_types(super().get_params(ctx))


def default(name: str) -> str:
    """A Config default as --help shows it, computed so that it never goes stale."""
    value = getattr(DEFAULTS, name)
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{name.replace('_', '-')}"
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def with_default(text: str, setting: str) -> str:
    """Help text ending in the setting's Config default, as typer shows a default (the option's own default is
    None, "not given", so that a config file can set it)."""
    return shown_default(text, default(setting))


def shown_default(text: str, shown: str) -> str:
    """Help text ending in `[default: shown]`, dim like typer's own (typer's show_default=TEXT adds parentheses)."""
    return rf"{text} [dim]\[default: {shown}][/dim]"  # \[ is a literal [


def parse_choice(names: Sequence[str]) -> Callable[[str], str]:
    """A parser that accepts one of names; anything else is a usage error (exit 2) naming them all and the
    nearest one, the message a config file gets for the same mistake."""

    def parse(value: str) -> str:
        problem = expected_name(value, names)
        if problem:
            raise typer.BadParameter(f"{value!r} is not allowed, expected {problem}")
        return value

    return parse


def choice_option(names: Sequence[str], text: str, setting: str | None = None, *, panel: str | None = None) -> Any:
    """The typer.Option of a name from a fixed list: its type is the list's Literal (shell completion completes
    it), --help lists the names, and a typo gets a did-you-mean."""
    text = f"{text} Choices: {', '.join(names)}."
    return typer.Option(metavar="NAME", help=with_default(text, setting) if setting else text,
                        parser=parse_choice(names), rich_help_panel=panel)


def setting_option(metavar: str, text: str, setting: str, panel: str, **details: Any) -> Any:
    """The typer.Option of a training setting: its help ends in the Config default, in a panel of train --help."""
    return typer.Option(metavar=metavar, help=with_default(text, setting), rich_help_panel=panel, **details)


def json_option(what: str) -> Any:
    """The --json option of a command that prints what it found as a table by default."""
    return typer.Option("--json", help=f"Print {what} as JSON on stdout.")


def complete_names(names: Sequence[str], separator: str = ",") -> Callable[[str], list[str]]:
    """Shell completion of one name, or of the last of a comma-separated list without repeating one."""

    def complete(incomplete: str) -> list[str]:
        done, _, last = incomplete.rpartition(separator) if separator else ("", "", incomplete)
        given = done.split(separator) if done else []
        return [separator.join([*given, name]) for name in names if name.startswith(last) and name not in given]

    return complete


def complete_devices(incomplete: str) -> list[str]:
    """Shell completion of --device: its kinds (cuda:N is typed by hand)."""
    return [kind for kind in DEVICE_KINDS if kind.startswith(incomplete)]


def data_dir_option(panel: str | None = None) -> Any:
    """The --data-dir option, the same in every command that reads the data set."""
    return typer.Option(
        "--data-dir", envvar="MLP_DATA_DIR", metavar="PATH", rich_help_panel=panel,
        help="Folder with the four IDX files (.gz or raw). Default: the cache, then system folders such as "
             "/usr/share/datasets/fashion-mnist, then a torchvision download.")


def show_version(is_requested: bool) -> None:
    if is_requested:
        from mlp_cli import __version__

        print(f"mlp {__version__}")
        raise typer.Exit()


DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"
RESUMABLE_FLAGS = ", ".join(f"--{name.replace('_', '-')}" for name in RESUMABLE_CHANGES)
# the panels of `mlp train --help`
MODEL, DATA, OPTIMISATION, EVALUATION, RUN, PARALLEL = (
    "Model", "Data", "Optimisation", "Evaluation", "Run", "Parallel (DDP)")

# mlp, and the options that several commands share
VersionOption = Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                             help="Print the version and exit.")]
DataDirOption = Annotated[Path | None, data_dir_option()]
DatasetOption = Annotated[Dataset, choice_option(DATASETS, "Data set.")]
FolderOfRunsArgument = Annotated[Path, typer.Argument(metavar="FOLDER", help="The folder that holds run folders.")]
StorageOption = Annotated[str | None, typer.Option(metavar="URL", help=shown_default(
    "Optuna storage URL: sqlite:///FILE, postgresql://USER@HOST/DB (workers on several machines) or journal:FILE.",
    "sqlite:///sweeps/NAME/study.db"))]
SweepJsonOption = Annotated[bool, json_option("the result")]

# mlp train: one option per Config field, named after it (a test checks that none is missing)
ImplOption = Annotated[Impl | None, choice_option(
    IMPLS, "The model's code (scratch: the book's equations, by hand; concise: nn.Sequential).", "impl",
    panel=MODEL)]
TrainDatasetOption = Annotated[Dataset | None, choice_option(DATASETS, "Data set.", "dataset", panel=DATA)]
HiddenOption = Annotated[str | None, setting_option(
    "SIZES", "Hidden layer sizes, e.g. 256 or 256,128.", "hidden", MODEL)]
ActivationOption = Annotated[Activation | None, choice_option(
    ACTIVATIONS, "Hidden-layer nonlinearity.", "activation", panel=MODEL)]
SigmaOption = Annotated[float | None, setting_option(
    "FLOAT", "Std of the initial weights (scratch, or --init normal).", "sigma", MODEL)]
InitOption = Annotated[Init | None, choice_option(
    INITS, "Weight init (book: each model as in D2L; normal: N(0, sigma^2)).", "init", panel=MODEL)]
OptimizerOption = Annotated[Optimizer | None, choice_option(OPTIMIZERS, "Optimizer.", "optimizer", panel=OPTIMISATION)]
LrOption = Annotated[float | None, setting_option("FLOAT", "Learning rate.", "lr", OPTIMISATION)]
MomentumOption = Annotated[float | None, setting_option(
    "FLOAT", "Momentum of --optimizer momentum.", "momentum", OPTIMISATION)]
WeightDecayOption = Annotated[float | None, setting_option(
    "FLOAT", "L2 penalty (decoupled for adamw).", "weight_decay", OPTIMISATION)]
ScheduleOption = Annotated[Schedule | None, choice_option(
    SCHEDULES, "Learning rate per epoch (step: x0.1 at 50% and 75%; cosine: down to 0).", "schedule",
    panel=OPTIMISATION)]
WarmupEpochsOption = Annotated[int | None, setting_option(
    "INTEGER", "Epochs of linear learning-rate warm-up.", "warmup_epochs", OPTIMISATION)]
LabelSmoothingOption = Annotated[float | None, setting_option(
    "FLOAT", "Label smoothing of the training loss.", "label_smoothing", OPTIMISATION)]
AugmentOption = Annotated[str | None, typer.Option(
    metavar="NAMES", help=f"Training augmentations, comma-separated: {', '.join(AUGMENTATIONS)} "
                          "(shift: by up to 2 pixels; flip: left-right).",
    autocompletion=complete_names(AUGMENTATIONS), rich_help_panel=DATA)]
DropoutOption = Annotated[float | None, setting_option(
    "FLOAT", "Drop each hidden unit with this probability while training.", "dropout", MODEL)]
BatchSizeOption = Annotated[int | None, setting_option(
    "INTEGER", "Minibatch size; under torchrun, the total over all processes.", "batch_size", OPTIMISATION)]
EpochsOption = Annotated[int | None, setting_option("INTEGER", "Passes over the training set.", "epochs", OPTIMISATION)]
SeedOption = Annotated[int | None, setting_option(
    "INTEGER", "Seed for the initial weights and the data order.", "seed", RUN)]
DeviceOption = Annotated[str | None, setting_option(
    "DEVICE", f"{DEVICE_HELP}.", "device", RUN, autocompletion=complete_devices)]
ValSizeOption = Annotated[int | None, setting_option(
    "INTEGER", "Hold out N training images to choose best.pt (the test split: once, at the end).", "val_size",
    EVALUATION)]
ReportEveryOption = Annotated[int | None, setting_option(
    "INTEGER", "Evaluate the test split every N epochs (and after the last).", "report_every", EVALUATION)]
TrainMetricsOption = Annotated[bool | None, typer.Option(
    "--train-metrics/--no-train-metrics", help=with_default(
        "Also evaluate the whole train split when reporting.", "train_metrics"),
    show_default=False, rich_help_panel=EVALUATION)]
ThreadsOption = Annotated[int | None, setting_option(
    "INTEGER", "CPU threads for torch; 0: 1 for a small model, every core for a big one.", "threads", RUN)]
PrecisionOption = Annotated[Precision | None, choice_option(
    PRECISIONS, "Precision of the forward pass (bf16: autocast, faster on some hardware, less exact).",
    "precision", panel=RUN)]
BackendOption = Annotated[Backend | None, choice_option(
    BACKENDS, "Under torchrun, torch.distributed's backend (auto: nccl on CUDA, else gloo).", "backend",
    panel=PARALLEL)]
DistTimeoutOption = Annotated[float | None, setting_option(
    "SECONDS", "Under torchrun: seconds a process waits for the others before the job fails.", "dist_timeout",
    PARALLEL)]
TensorboardOption = Annotated[bool | None, typer.Option(
    "--tensorboard/--no-tensorboard", help=with_default("Write TensorBoard event files into RUN/tb.", "tensorboard"),
    rich_help_panel=EVALUATION)]
TbHistogramsOption = Annotated[int | None, setting_option(
    "INTEGER", "Weight and gradient histograms every N epochs (0: none).", "tb_histograms", EVALUATION)]
TrainDataDirOption = Annotated[Path | None, data_dir_option(panel=DATA)]
# mlp train: how to run, not what to train
NprocPerNodeOption = Annotated[int | None, typer.Option(
    metavar="INTEGER",
    help="Train with N processes on this machine (DDP), started by torch.distributed.run as "
         "`torchrun --standalone --nproc-per-node N -m mlp_cli train ...` would; --batch-size stays the "
         r"total of one step. \[default: 1, no DDP]", rich_help_panel=PARALLEL)]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", metavar="PATH", help="TOML file of settings (see configs/); flags given here override it.",
    rich_help_panel=RUN)]
OutOption = Annotated[Path | None, typer.Option(
    metavar="PATH", help=r"Run folder to create (must be new or empty). \[default: runs/DATE-TIME-IMPL]",
    rich_help_panel=RUN)]
OverwriteOption = Annotated[bool, typer.Option(
    "--overwrite", help="Allow --out to name a folder that holds a run: replace it.", rich_help_panel=RUN)]
QuietOption = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress display; only the result.", rich_help_panel=RUN)]
ResumeOption = Annotated[Path | None, typer.Option(
    metavar="PATH", help="Continue a run (runs/NAME or its last.pt) exactly where it stopped; only "
                         f"{RESUMABLE_FLAGS} may change.", rich_help_panel=RUN)]

# mlp eval
EvalCheckpointArgument = Annotated[Path, typer.Argument(
    metavar="CHECKPOINT", help="A checkpoint from a run folder, e.g. runs/NAME/best.pt; a run folder means its "
                               "best.pt.")]
EvalSplitOption = Annotated[Split, choice_option(SPLITS, "Which split to evaluate.")]
EvalDeviceOption = Annotated[str, typer.Option(
    metavar="DEVICE", help=f"{DEVICE_HELP}.", autocompletion=complete_devices)]
EvalConfusionOption = Annotated[Path | None, typer.Option(
    metavar="PATH", help="Also write the confusion matrix as a PNG heatmap.")]
EvalErrorsOption = Annotated[Path | None, typer.Option(
    metavar="PATH", help="Also write a grid of misclassified images (true -> predicted) as a PNG.")]
EvalJsonOption = Annotated[bool, json_option("the whole report")]

# mlp plot-activation; list[Literal] is refused by typer 0.29: the parser checks the names, the completer completes
PlotActivationNamesArgument = Annotated[list[str] | None, typer.Argument(
    metavar="NAME...", parser=parse_choice(ACTIVATIONS), autocompletion=complete_names(ACTIVATIONS, ""),
    show_default=False, help=f"One or more activations, drawn together. Choices: {', '.join(ACTIVATIONS)}.")]
PlotActivationOutOption = Annotated[Path | None, typer.Option(
    metavar="PATH", help="Write a PNG (or SVG, PDF) here instead of drawing in the terminal.")]
PlotActivationGradOption = Annotated[bool, typer.Option(
    "--grad/--no-grad", help="Also plot the gradient, by autograd.")]
PlotActivationRangeOption = Annotated[tuple[float, float], typer.Option(
    "--range", metavar="START STOP", help="The x range, e.g. --range -4 4.")]
PlotActivationListOption = Annotated[bool, typer.Option("--list", help="List the activations and exit.")]

# mlp predict
PredictCheckpointArgument = Annotated[Path, typer.Argument(metavar="CHECKPOINT", help=(
    "A checkpoint, e.g. runs/NAME/best.pt, or a model.onnx from mlp export (runs without torch)."))]
PredictImagesArgument = Annotated[list[Path], typer.Argument(metavar="IMAGE...", help=(
    "Image files (PNG, JPEG, BMP, GIF, WebP), or folders: every image in them, by name."))]
PredictTopKOption = Annotated[int, typer.Option(
    "--top-k", metavar="INTEGER", help="How many classes to show per image.")]
PredictInvertOption = Annotated[bool, typer.Option(
    help="Invert gray levels: for a dark object on a light background (Fashion-MNIST and MNIST show "
         "a light object on a dark background).")]
PredictSaveInputOption = Annotated[Path | None, typer.Option(
    "--save-input", metavar="DIR", help="Write each image as the model saw it (28x28 gray PNG) into this folder.")]
PredictJsonOption = Annotated[bool, json_option("the predictions")]

# mlp runs, mlp plot-curves
RunsJsonOption = Annotated[bool, json_option("the list")]
PlotCurvesRunDirsArgument = Annotated[list[Path], typer.Argument(
    metavar="RUN_DIR...", help="Run folders (runs/NAME), or folders of runs (runs/) to plot every run in them.")]
PlotCurvesOutOption = Annotated[Path, typer.Option(
    metavar="PATH", help="Image file to write (.png, .svg, .pdf, ...).")]

# mlp data info, mlp data preview
DataInfoJsonOption = Annotated[bool, json_option("the description")]
DataPreviewOutOption = Annotated[Path, typer.Option(metavar="PATH", help="Image file to write.")]
DataPreviewSplitOption = Annotated[Split, choice_option(SPLITS, "Which split.")]
DataPreviewCountOption = Annotated[int, typer.Option(
    metavar="INTEGER", help="How many images, from the start of the split.")]

# mlp sweep, mlp sweep show
SweepParamOption = Annotated[list[str] | None, typer.Option(
    "--param", "-p", metavar="NAME=VALUES",
    help="A swept setting, repeatable: NAME=V1,V2,... (hidden=64,512x256; augment=none,shift) or, with "
         "--search, a range NAME=LOW:HIGH or NAME=log:LOW:HIGH.")]
SweepConfigOption = Annotated[Path | None, typer.Option(
    "--config", metavar="PATH", help="TOML file of the base settings every trial starts from.")]
SweepNameOption = Annotated[str | None, typer.Option(metavar="NAME", help=shown_default(
    "The sweep's name: sweeps/NAME/ and the study.", "the param names, e.g. hidden-lr"))]
SweepSearchOption = Annotated[sweep_defaults.Search, choice_option(
    sweep_defaults.SEARCHES, "grid: every combination; tpe or random: Optuna's samplers.")]
SweepTrialsOption = Annotated[int | None, typer.Option(metavar="INTEGER", help=shown_default(
    "Trials of a search.", str(sweep_defaults.DEFAULT_SEARCH_TRIALS)))]
SweepPruneOption = Annotated[sweep_defaults.Prune, choice_option(
    sweep_defaults.PRUNERS, "Stop weak trials early on their per-epoch validation accuracy.")]
SweepValSizeOption = Annotated[int | None, typer.Option(metavar="INTEGER", help=shown_default(
    "Training images held out to choose on; the test split is evaluated for the chosen trial only.",
    f"the config's, else {sweep_defaults.SWEEP_VAL_SIZE}"))]
SweepSeedOption = Annotated[int, typer.Option(
    metavar="INTEGER", help="Seed of the search's sampler (trial seeds come from the config).")]
SweepWorkersOption = Annotated[int, typer.Option(
    metavar="INTEGER", help="Worker processes on this machine, each with cores/N threads.")]
SweepThreadsOption = Annotated[int | None, typer.Option(
    metavar="INTEGER", help=shown_default("CPU threads per worker.", "cores / workers"))]
SweepHeartbeatOption = Annotated[int, typer.Option(
    metavar="SECONDS", help="Seconds between a worker's signs of life in an RDB storage; after two missed, "
                            "another worker takes its trial over.")]
SweepQuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No live table or trial lines.")]
SweepNameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The sweep's name (sweeps/NAME).")]

# mlp board, mlp export
BoardPortOption = Annotated[int | None, typer.Option(
    metavar="INTEGER", help=r"Port to serve on; 0 takes any free one. \[default: 6006, or the next free port]",
    show_default=False)]
ExportCheckpointArgument = Annotated[Path, typer.Argument(
    metavar="CHECKPOINT", help="A checkpoint, e.g. runs/NAME/best.pt.")]
ExportOutOption = Annotated[Path, typer.Option(metavar="PATH", help="The .onnx file to write.")]
ExportProbabilitiesOption = Annotated[bool, typer.Option(
    "--probabilities", help="End the model with a softmax: output class probabilities, not logits.")]
