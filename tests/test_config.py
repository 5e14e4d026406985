"""Settings: D2L's defaults, TOML files, flags on top, and clear errors for anything else."""

from pathlib import Path

import pytest

from mlp_cli.config import Config, config_to_toml, load_config
from mlp_cli.errors import ConfigError

CONFIGS = Path(__file__).parent.parent / "configs"


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return path


def test_defaults_are_d2ls_mlp_setup() -> None:
    config = Config()
    assert (config.dataset, config.hidden, config.sigma) == ("fashion-mnist", (256,), 0.01)
    assert (config.lr, config.batch_size, config.epochs) == (0.1, 256, 10)


@pytest.mark.parametrize("impl", ["scratch", "concise"])
def test_d2l_config_files_reproduce_the_book_setup_for_each_impl(impl: str) -> None:
    config = load_config(CONFIGS / f"d2l-{impl}.toml")
    assert config == Config(impl=impl)


def test_flux_scratch_config_is_the_book_model_on_mnist_with_plain_sgd() -> None:
    config = load_config(CONFIGS / "flux-scratch-mnist.toml")
    assert config == Config(impl="scratch", dataset="mnist", hidden=(256,), activation="relu", optimizer="sgd",
                            lr=0.1, batch_size=256, epochs=10)


def test_every_config_in_configs_folder_loads() -> None:
    paths = sorted(CONFIGS.glob("*.toml"))
    assert len(paths) >= 2
    for path in paths:
        load_config(path)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'impl = "concise"\nlr = 0.5\nepochs = 3\n')
    config = load_config(path, {"lr": 0.05, "epochs": None})
    assert (config.impl, config.lr, config.epochs) == ("concise", 0.05, 3)


def test_unknown_key_in_file_is_rejected_naming_key_and_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "learning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"settings\.toml: learning_rate: unknown setting"):
        load_config(path)


def test_wrong_type_is_rejected_naming_key_and_expected_type(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'lr = "fast"\n')
    with pytest.raises(ConfigError, match=r"lr: 'fast' has the wrong type, expected a float"):
        load_config(path)


def test_a_bool_is_not_taken_for_a_number(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"epochs: True has the wrong type, expected a int"):
        load_config(write_toml(tmp_path, "epochs = true\n"))


def test_an_integer_is_fine_for_a_float_setting(tmp_path: Path) -> None:
    assert load_config(write_toml(tmp_path, "lr = 1\n")).lr == 1.0


@pytest.mark.parametrize(("key", "value"), [("lr", 0.0), ("lr", -0.1), ("lr", float("nan")), ("epochs", 0),
                                            ("batch_size", 0), ("sigma", 0.0), ("seed", -1), ("hidden", [])])
def test_out_of_range_values_are_rejected_naming_key_value_and_range(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"--{key.replace('_', '-')}: .* is not allowed, expected"):
        load_config(None, {key: value})


@pytest.mark.parametrize(("key", "value"), [("impl", "numpy"), ("dataset", "cifar10"), ("device", "tpu")])
def test_unknown_choices_are_rejected_listing_the_choices(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match="expected"):
        load_config(None, {key: value})


def test_hidden_sizes_from_a_flag_stack_layers() -> None:
    assert load_config(None, {"hidden": "256,128"}).hidden == (256, 128)


def test_hidden_sizes_that_are_not_numbers_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"--hidden: '256,big' is not a list of sizes"):
        load_config(None, {"hidden": "256,big"})


def test_malformed_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"settings\.toml: not valid TOML"):
        load_config(write_toml(tmp_path, "lr = = 0.1\n"))


@pytest.mark.parametrize("text", ["", "\n# only a comment\n"], ids=["empty", "comments only"])
def test_a_config_file_without_settings_is_an_error_not_the_defaults(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"settings\.toml: config file holds no settings \(empty\)"):
        load_config(write_toml(tmp_path, text))


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_saved_toml_reads_back_as_the_same_config(tmp_path: Path) -> None:
    config = Config(impl="concise", hidden=(64, 32), lr=0.25, data_dir='/data/with "quotes"', device="cpu",
                    train_metrics=True, report_every=2, augment=("shift", "flip"), schedule="cosine")
    assert load_config(write_toml(tmp_path, config_to_toml(config))) == config
