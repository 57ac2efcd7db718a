# Two commands on a fresh machine: `make pipeline` (the whole pipeline on the embedded default) and `make test`.
# Each creates the virtual environment first, from the lock of tested versions (requirements/lock.txt, a pip
# constraints file): torch pinned to the CPU wheel first, then the project with its test extras. pyproject.toml keeps
# open ranges for library users; the lock is what the README's commands and CI install.
#
# Not in CI (they install the newest releases from the registry):
#   make test-latest   fast tier against the newest releases of everything but torch (TESTS= for the whole suite)
#   make test-oldest   fast tier against the pyproject lower bound of transformers, the rest newest
#   make test-drift    both of the above (make -k test-drift runs the second even when the first fails)
#   make lock          the whole suite against the newest releases, then rewrites requirements/lock.txt from them
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
LOCK ?= requirements/lock.txt
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
FAST := -m "not slow and not distributed"
TESTS ?= $(FAST)
# The lowest transformers pyproject.toml admits, e.g. 5.0.0 from "transformers>=5.0.0".
TRANSFORMERS_FLOOR := $(shell sed -n 's/.*"transformers>=\([0-9.]*\).*/\1/p' pyproject.toml)

.PHONY: setup test test-fast pipeline lint format data test-latest test-oldest test-drift lock

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH) --constraint $(LOCK)
	$(BIN)/pip install --quiet -e ".[test]" --constraint $(LOCK)
	touch $@

test: setup
	$(OFFLINE) $(BIN)/python -m pytest

test-fast: setup
	$(OFFLINE) $(BIN)/python -m pytest $(FAST)

pipeline: setup
	$(BIN)/rlhf run recipes/brand_voice/pipeline.yaml

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

data:
	$(PYTHON) scripts/make_brand_voice_data.py

# A fresh venv in $(1): torch pinned first (an unpinned torch can pull a multi-GB CUDA build), then the project with
# the newest releases pip finds, plus the extra requirements $(2). Each venv builds its embedded model in its own cache.
define fresh_venv
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	$(1)/bin/pip install --quiet $(TORCH)
	$(1)/bin/pip install --quiet --upgrade -e ".[test]" $(2)
	$(1)/bin/pip freeze --exclude-editable > $(1)/versions.txt
	@echo "$(1): $$(grep -iE '^(torch|transformers|trl|peft|datasets|accelerate|deepspeed)==' $(1)/versions.txt | tr '\n' ' ')"
endef

test-latest:
	$(call fresh_venv,.venv-latest,)
	$(OFFLINE) RLHF_CACHE=$(CURDIR)/.cache/rlhf-latest .venv-latest/bin/python -m pytest $(TESTS)

test-oldest:
	$(call fresh_venv,.venv-oldest,"transformers==$(TRANSFORMERS_FLOOR)")
	$(OFFLINE) RLHF_CACHE=$(CURDIR)/.cache/rlhf-oldest .venv-oldest/bin/python -m pytest $(FAST)

test-drift: test-oldest test-latest

# The lock is rewritten only after the whole suite passed on the newest releases; torch keeps its pinned version.
lock: TESTS :=
lock: test-latest
	{ echo "# Tested versions: the constraints 'make setup' (and so 'make test', 'make pipeline', .ci/run) installs."; \
	  echo "# Written by 'make lock' on $$(date -u +%Y-%m-%d) after the whole suite passed with them (Python $$(.venv-latest/bin/python -c 'import platform; print(platform.python_version())')); do not edit by hand."; \
	  sed -e 's/+cpu$$//' .venv-latest/versions.txt | grep -v '^rlhf[= @]'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	@echo "wrote $(LOCK); review 'git diff $(LOCK)' and commit it"
