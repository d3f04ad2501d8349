# Project tasks. `make install` builds .venv; `make test` is what CI runs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: install test test-fast lint format demo compose-demo bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# torch first and pinned: the CPU build on disk. An unpinned torch pulls GBs of CUDA wheels.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q --durations=20

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The main job: KECO with CKKS on a Ray simulation, then the report (prints its path).
demo: install
	FLWR_TELEMETRY_ENABLED=0 $(BIN)/python -m experiments.run --config-name demo

# docker-compose.yml for real: installs Podman if there is no engine (as root), builds the images
# (Flower's from Debian + pip when no registry answers), runs every container, tears them down,
# and prints one JSON line (rounds, containers, final QoE, bytes, seconds).
compose-demo: install
	FLWR_TELEMETRY_ENABLED=0 $(BIN)/python -m experiments.compose $(ARGS)

bench: install
	$(BIN)/python -m experiments.bench suite=all

clean:
	rm -rf outputs multirun .pytest_cache
