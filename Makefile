# Two entry points for a fresh machine (see README.md):
#   make train   set up .venv, make real Fashion-MNIST available, run `mlp train --impl scratch`
#   make test    set up .venv (and PostgreSQL where apt works as root), then ruff, mypy and the test suite

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST_SYSTEM_DIR := /usr/share/datasets/fashion-mnist
TRAIN_ARGS ?= --impl scratch

.PHONY: install data postgresql train test lint bench bench-run bench-accuracy bench-ddp bench-threads bench-sweep clean

# Installed again only when pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "mlp needs Python >= 3.11 (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing mlp and its dependencies (pyproject.toml: torch, torchvision, typer, rich, matplotlib, tensorboard, onnx, optuna, ...; pytest, ruff, mypy) into $(VENV) ..."
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# Debian's dataset-fashion-mnist where apt works as root; otherwise mlp downloads through torchvision at first use.
data:
	@if [ -f $(FASHION_MNIST_SYSTEM_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: found in $(FASHION_MNIST_SYSTEM_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -q && apt-get install -y -q dataset-fashion-mnist) \
		|| echo "Fashion-MNIST: apt-get failed; mlp will download it through torchvision at first use"; \
	else \
		echo "Fashion-MNIST: not installed system-wide; mlp will download it through torchvision at first use"; \
	fi

# Debian's PostgreSQL server for the sweep tests (they start their own server in a temporary folder).
postgresql:
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		echo "PostgreSQL: found in /usr/lib/postgresql"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -q && apt-get install -y -q postgresql) \
		|| echo "PostgreSQL: apt-get failed; the PostgreSQL sweep test will fail in CI and skip elsewhere"; \
	else \
		echo "PostgreSQL: not installed (apt-get install postgresql); the PostgreSQL sweep test skips outside CI"; \
	fi

train: install data
	$(BIN)/mlp train $(TRAIN_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy mlp_cli

test: lint postgresql
	$(BIN)/pytest

# Seconds per epoch of mlp against the DataLoader pipeline and the bare matmuls (BENCH_ARGS=--synthetic without data).
bench: install data
	$(BIN)/python benchmarks/bench_epoch.py $(BENCH_ARGS)

# A whole `mlp train` against the plain PyTorch script it wraps; per-epoch breakdown; start-up; best-fashion's floor.
bench-run: install data
	$(BIN)/python benchmarks/bench_run.py $(BENCH_ARGS)

bench-accuracy: install data
	$(BIN)/python benchmarks/accuracy_seeds.py

# Seconds per epoch of 2 processes x 1 thread (DDP) against 1 process x 2 threads.
bench-ddp: install data
	$(BIN)/python benchmarks/bench_ddp.py

# Seconds per epoch of --threads 0 (passive and spinning OpenMP threads) against --threads 1, idle and beside a busy process.
bench-threads: install
	$(BIN)/python benchmarks/bench_threads.py

# Seconds per trial of a sweep's in-process worker against one `mlp train` process per trial.
bench-sweep: install data
	$(BIN)/python benchmarks/bench_sweep.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
