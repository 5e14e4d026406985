"""`python -m mlp_cli` runs the same CLI as the `mlp` console script."""

from mlp_cli.cli import main

main()
