# Two commands on a fresh machine: `make pipeline` (the whole pipeline on the embedded default) and `make test`.
# Each creates the virtual environment first: torch pinned to the CPU wheel, then the project with its test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline

.PHONY: setup test test-fast pipeline lint format data

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

test: setup
	$(OFFLINE) $(BIN)/python -m pytest

test-fast: setup
	$(OFFLINE) $(BIN)/python -m pytest -m "not slow and not distributed"

pipeline: setup
	$(BIN)/rlhf run recipes/brand_voice/pipeline.yaml

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

data:
	$(PYTHON) scripts/make_brand_voice_data.py
