"""Options as a newcomer meets them: choices listed, completed and checked, plain help, the notebook API."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer.main
from typer.testing import CliRunner

import mlp_cli
from mlp_cli import config as settings
from mlp_cli.cli import app
from mlp_cli.config import Config, config_to_dict, load_config
from mlp_cli.errors import ConfigError, MlpError

runner = CliRunner()
MLP = str(Path(sys.executable).parent / "mlp")

# (command line before the option, option, a typo, the name it should suggest, the names it must list)
TYPOS = [
    (["train"], "--impl", "scrach", "scratch", settings.IMPLS),
    (["train"], "--dataset", "fashion-mnst", "fashion-mnist", settings.DATASETS),
    (["train"], "--activation", "rleu", "relu", settings.ACTIVATIONS),
    (["train"], "--optimizer", "adamm", "adam", settings.OPTIMIZERS),
    (["train"], "--schedule", "cosin", "cosine", settings.SCHEDULES),
    (["train"], "--init", "kaimng", "kaiming", settings.INITS),
    (["train"], "--precision", "bf6", "bf16", settings.PRECISIONS),
    (["train"], "--backend", "glo", "gloo", settings.BACKENDS),
    (["eval", "missing.pt"], "--split", "tset", "test", settings.SPLITS),
    (["data", "info"], "--dataset", "mnsit", "mnist", settings.DATASETS),
    (["data", "preview"], "--split", "trian", "train", settings.SPLITS),
]


def message_of(result) -> str:
    """stderr as one line: rich boxes and wraps a usage error."""
    return " ".join(result.stderr.replace("│", " ").split())


@pytest.mark.parametrize(("before", "option", "typo", "suggestion", "names"), TYPOS)
def test_a_misspelt_choice_is_a_usage_error_naming_the_choices_and_the_nearest(
        before: list[str], option: str, typo: str, suggestion: str, names: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*before, option, typo])
    assert result.exit_code == 2, result.output
    message = message_of(result)
    assert option in message and f"'{typo}'" in message and ", ".join(names) in message
    assert f"did you mean {suggestion}?" in message


@pytest.mark.parametrize(("before", "option", "typo", "suggestion", "names"), TYPOS)
def test_help_lists_every_choice_from_the_config_module(
        before: list[str], option: str, typo: str, suggestion: str, names: tuple[str, ...]) -> None:
    command = [word for word in before if not word.endswith(".pt")]
    shown = " ".join(runner.invoke(app, [*command, "--help"]).stdout.replace("│", " ").split())
    assert f"Choices: {', '.join(names)}." in shown


def test_a_config_file_typo_gets_the_same_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('activation = "rleu"\n')
    with pytest.raises(ConfigError, match=r"run\.toml: activation: 'rleu' is not allowed, expected one of relu, .*"
                                          r"\(did you mean relu\?\)$"):
        load_config(path)
    path.write_text('augment = ["shift", "flp"]\n')
    with pytest.raises(ConfigError, match=r"did you mean flip\?"):
        load_config(path)
    path.write_text("batchsize = 64\n")
    with pytest.raises(ConfigError, match=r"run\.toml: batchsize: unknown setting \(did you mean batch_size\? "):
        load_config(path)


def completions(*words: str) -> list[str]:
    """What bash completion offers after words, asked of the installed `mlp` script as the shell asks it."""
    environment = {**os.environ, "_MLP_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(["mlp", *words]),
                   "COMP_CWORD": str(len(words))}
    result = subprocess.run([MLP], env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_shell_completes_choices_through_the_installed_script() -> None:
    assert completions("train", "--activation", "s") == ["sigmoid", "silu", "softplus"]
    assert completions("train", "--impl", "") == list(settings.IMPLS)
    assert completions("train", "--augment", "shift,") == ["shift,flip"]
    assert completions("train", "--device", "c") == ["cpu", "cuda"]
    assert completions("eval", "run/best.pt", "--split", "") == list(settings.SPLITS)
    assert completions("plot-activation", "relu", "t") == ["tanh"]
    assert completions("data", "info", "--dataset", "") == list(settings.DATASETS)


def command_paths(group: object, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command and group of the app, as the words that name it: a command added later is checked too."""
    found = [list(path)]
    for name, command in getattr(group, "commands", {}).items():
        found += command_paths(command, (*path, name))
    return found


HELP_SCREENS = command_paths(typer.main.get_command(app))


@pytest.mark.parametrize("command", HELP_SCREENS)
def test_help_shows_plain_metavars_and_defaults(command: list[str]) -> None:
    assert len(HELP_SCREENS) >= 10
    shown = runner.invoke(app, [*command, "--help"]).stdout
    for typer_internal in ("<str>", "<bool>", "<int>", "<float>", "<path>", "<list[", "{", "[default: ("):
        assert typer_internal not in shown, (command, typer_internal)


def test_train_help_groups_its_options_in_panels_and_fits_a_screen_at_80_columns() -> None:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("_TYPER_FORCE_DISABLE_TERMINAL", "TERMINAL_WIDTH")}
    result = subprocess.run([MLP, "train", "--help"], env={**environment, "COLUMNS": "80"}, capture_output=True,
                            text=True, timeout=60)
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert len(lines) <= 120  # 166 with every option in one panel
    for panel in ("Model", "Data", "Optimisation", "Evaluation", "Run", "Parallel (DDP)"):
        assert any(line.startswith(f"╭─ {panel} ─") for line in lines), panel
    model_panel = result.stdout.split("╭─ Model ─", 1)[1].split("╰", 1)[0]
    assert "--activation" in model_panel and "--lr " not in model_panel


def test_resume_help_names_exactly_the_settings_a_resume_may_change() -> None:
    shown = " ".join(runner.invoke(app, ["train", "--help"]).stdout.replace("│", " ").split())
    allowed = ", ".join(f"--{name.replace('_', '-')}" for name in settings.RESUMABLE_CHANGES)
    assert f"only {allowed} may change" in shown
    from mlp_cli import training

    assert training.RESUMABLE_CHANGES is settings.RESUMABLE_CHANGES  # the tuple the resume check reads


# every setting away from its default, so that a flag that is dropped on the way shows
EVERY_SETTING_CHANGED = Config(
    impl="concise", dataset="mnist", data_dir="data", hidden=(32, 16), activation="tanh", sigma=0.02, init="xavier",
    optimizer="momentum", lr=0.05, momentum=0.8, weight_decay=0.001, dropout=0.1, schedule="cosine", warmup_epochs=1,
    label_smoothing=0.1, augment=("shift", "flip"), batch_size=16, epochs=3, seed=7, val_size=20, report_every=2,
    train_metrics=True, device="cpu", threads=1, precision="bf16", backend="gloo", dist_timeout=60.0,
    tensorboard=True, tb_histograms=2)


def as_flags(config: Config) -> list[str]:
    """The `mlp train` flags that set every field of config."""
    flags = []
    for key, value in config_to_dict(config).items():
        name = key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        else:
            flags += [f"--{name}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return flags


def test_every_config_setting_is_a_train_flag_that_reaches_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    unchanged = [field.name for field in dataclasses.fields(Config)
                 if getattr(EVERY_SETTING_CHANGED, field.name) == getattr(Config(), field.name)]
    assert unchanged == [], "give each new Config field a value other than its default above"
    received = []

    def record(config: Config, *args: object) -> None:
        received.append(config)
        raise MlpError("recorded")

    monkeypatch.setattr("mlp_cli.training.train", record)
    result = runner.invoke(app, ["train", *as_flags(EVERY_SETTING_CHANGED)])
    assert result.stderr == "error: recorded\n", result.output  # not "No such option"
    assert received == [EVERY_SETTING_CHANGED]


def test_config_accepts_an_int_or_a_sequence_for_hidden() -> None:
    assert Config(hidden=256).hidden == (256,)
    assert Config(hidden=[256, 128]).hidden == (256, 128)
    assert Config(hidden=[256, 128]) == Config(hidden=(256, 128))
    hash(Config(hidden=[64]))  # still a frozen, hashable value


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("impl", "scrach", r"impl: 'scrach' is not allowed, expected one of scratch, concise \(did you mean scratch\?\)"),
    ("lr", 0, r"lr: 0 is not allowed, expected a finite number > 0"),
    ("epochs", True, r"epochs: True has the wrong type, expected a int"),
    ("hidden", [256, 0], r"hidden: \[256, 0\] is not allowed, expected one or more sizes >= 1"),
])
def test_config_checks_its_fields_at_construction_with_the_cli_message(field: str, value: object,
                                                                       expected: str) -> None:
    with pytest.raises(MlpError, match=expected):
        Config(**{field: value})
    with pytest.raises(ConfigError, match=expected):
        dataclasses.replace(Config(), **{field: value})
    flag = f"--{field.replace('_', '-')}"
    with pytest.raises(ConfigError, match=f"{flag}: " + expected.split(": ", 1)[1]):
        load_config(None, {field: value})


def test_dir_of_the_package_lists_its_lazy_exports() -> None:
    listed = dir(mlp_cli)
    for name in ("Config", "train", "Trainer", "evaluate_checkpoint", "load_checkpoint", "MlpError", "__version__"):
        assert name in listed


def test_one_list_of_names_in_the_config_module_every_builder_covers() -> None:
    from mlp_cli import activations, data
    from mlp_cli.models import build_model
    from mlp_cli.models.concise import ACTIVATION_MODULES
    from mlp_cli.optimization import learning_rate, make_optimizer

    assert tuple(activations.ACTIVATIONS) == settings.ACTIVATIONS
    assert tuple(ACTIVATION_MODULES) == settings.ACTIVATIONS
    assert tuple(data.DATASETS) == settings.DATASETS
    assert tuple(data.SPLITS) == settings.SPLITS
    model = build_model("scratch", 4, (3,), 2, 0.01)
    optimizers = {(type(optimizer).__name__, optimizer.param_groups[0].get("momentum"))
                  for optimizer in (make_optimizer(model, Config(optimizer=name)) for name in settings.OPTIMIZERS)}
    assert len(optimizers) == len(settings.OPTIMIZERS)  # no name falls back to another's optimizer
    rates = {tuple(learning_rate(Config(schedule=name, epochs=8), epoch) for epoch in range(1, 9))
             for name in settings.SCHEDULES}
    assert len(rates) == len(settings.SCHEDULES)
    for impl in settings.IMPLS:
        for activation in settings.ACTIVATIONS:
            build_model(impl, 4, (3,), 2, 0.01, activation)
    spreads = set()
    for init in settings.INITS:  # on concise, whose book init (torch's) differs from normal(sigma)
        torch.manual_seed(0)
        spreads.add(round(build_model("concise", 784, (256,), 10, 0.01, "relu", 0.0, init).state_dict()[
            "1.weight"].std().item(), 3))
    assert len(spreads) == len(settings.INITS)  # no init name falls back to another's


def test_train_from_the_package_shows_progress_unless_asked_not_to(data_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    config = Config(data_dir=str(data_dir), hidden=16, batch_size=8, epochs=2, device="cpu", threads=1)
    result = mlp_cli.train(config, tmp_path / "shown")
    shown = capsys.readouterr().err
    assert "training scratch MLP" in shown and "epoch 1/2: train loss" in shown and "epoch 2/2" in shown
    assert result.history[-1].epoch == 2
    mlp_cli.train(config, tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""
