#!/usr/bin/env bash
# The GPU tier in one command, for a lent GPU machine: the `gpu`-marked tests (tests/gpu/), then the ppo benchmark.
# Takes about 5 minutes on one H200 (each step has its own time limit; together under 8 minutes). Installs nothing
# from the network: the GPU machine has none.
#
# What the GPU machine has: PyTorch with CUDA, transformers, accelerate, peft. What it lacks and the tests need:
# pydantic (the recipe schema), datasets (the data loader; it pulls pyarrow, pandas, dill, multiprocess, xxhash,
# fsspec), pytest; DeepSpeed only for the ZeRO-2 test (skipped with the reason when absent; its wheel builds ops
# against the local torch, so it is not carried). trl and wandb are not needed by these tests.
#
# Steps:
#   1. On the development machine (network to PyPI), download the wheels for the GPU machine's Python into .whl/
#      (ignored by git; carried to the device with the run tool's `carry: [".whl"]`; stay under its 64 MiB):
#        PYV=3.12   # the GPU machine's `python -c 'import sys; print(sys.version_info[:2])'`
#        pip download --dest .whl --only-binary=:all: --python-version $PYV --platform manylinux2014_x86_64 \
#            --no-deps pydantic pydantic-core annotated-types typing-inspection typing-extensions \
#            datasets pyarrow pandas dill multiprocess xxhash fsspec python-dateutil tzdata \
#            pytest pluggy iniconfig
#      (pin the versions of .venv: `pip freeze | grep -i -E 'pydantic|datasets|pyarrow|...'`).
#   2. On the GPU machine, from the repository root:  bash scripts/gpu_check.sh
#      It installs .whl/*.whl with --no-index --no-deps (nothing already installed is replaced), then runs the tests
#      and the benchmark. The planner test prints "planner X GiB, measured Y GiB"; record it in docs/memory.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

if compgen -G ".whl/*.whl" > /dev/null; then
    # Only what is missing: a wheel for a package already importable (torch, transformers, ...) is left alone.
    "$PYTHON" -m pip install --quiet --no-index --no-deps --find-links .whl .whl/*.whl 2>&1 | tail -5 || true
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export RLHF_CACHE="${RLHF_CACHE:-$PWD/.cache/rlhf-gpu}"

"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0))'

status=0
# -p no:cacheprovider: nothing written into the tree; -rs: every skip with its reason.
timeout 360 "$PYTHON" -m pytest tests/gpu -m gpu -q -rs -s -p no:cacheprovider || status=$?
# The ppo benchmark on the GPU (the stage's accelerator picks CUDA): one record on stdout, not appended to the file.
timeout 120 "$PYTHON" scripts/bench.py ppo --size tiny --episodes 64 --no-record || status=$?
exit $status
