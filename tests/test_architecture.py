"""The layers of mlp_cli import only downward (docs/architecture.md): the terminal and the pictures never pull in
the training loop, the data never knows about processes, and the records at the bottom import nothing."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "mlp_cli"
LOOP = ("mlp_cli.trainer", "mlp_cli.training", "mlp_cli.distributed", "mlp_cli.evaluation")
# what shows or draws a run: it reads records (events, runs) and files, never the code that trains
PRESENTATION = ("reporting", "plots", "curves", "tensorboard", "sweep_plots", "sweep_report")


def imported_modules(module: str) -> set[str]:
    """Every mlp_cli module that module's source imports, at the top or inside a function."""
    tree = ast.parse((PACKAGE / f"{module.replace('.', '/')}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlp_cli"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("mlp_cli"))
    return names


@pytest.mark.parametrize("module", PRESENTATION)
def test_terminal_and_picture_code_never_imports_the_training_loop(module: str) -> None:
    assert not imported_modules(module) & set(LOOP)
    # nor through another module, when it is imported
    code = f"import sys, mlp_cli.{module}; print(sorted(set(sys.modules) & {set(LOOP)!r}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_data_module_knows_nothing_of_processes_or_training() -> None:
    assert not imported_modules("data") & {*LOOP, "mlp_cli.checkpoint"}


def test_the_records_at_the_bottom_import_no_other_module_of_mlp() -> None:
    assert imported_modules("events") == set()
    assert imported_modules("errors") == set()
    assert imported_modules("config") <= {"mlp_cli.errors"}


def test_the_loop_is_below_the_set_up_and_the_command_line() -> None:
    assert not imported_modules("trainer") & {"mlp_cli.training", "mlp_cli.cli"}
    assert "mlp_cli.cli" not in imported_modules("training")
    importers_of_cli = [path.stem for path in PACKAGE.glob("*.py") if "mlp_cli.cli" in imported_modules(path.stem)]
    assert importers_of_cli in ([], ["__main__"])
