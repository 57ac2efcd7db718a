#!/usr/bin/env bash
# The GPU tier in one command, for a lent GPU machine: the throughput benchmark (tiny, Qwen2-0.5B and Qwen2-1.5B
# shapes: generation ours vs HF generate, PPO update, MFU, peak GPU memory), the `gpu`-marked tests (tests/gpu/),
# and the tiny ppo benchmark if time is left. Under 8 minutes on one GPU: every step has its own time limit and the
# whole run a deadline (GPU_CHECK_SECONDS, default 450); a step that no longer fits is skipped and says so. Installs
# nothing from the network: the GPU machine has none.
#
#   bash scripts/gpu_check.sh --fetch-wheels   # once, on a machine that reaches PyPI (the development machine)
#   bash scripts/gpu_check.sh                  # on the GPU machine, from the repository root
#
# --fetch-wheels downloads into .whl/ (ignored by git) the pure-Python packages the GPU machine lacks, at the
# versions $PYTHON has (PYTHON=.venv/bin/python for the project's venv), for the GPU machine's Python (3.12,
# x86_64): pydantic (the recipe schema) and datasets (the data loader) with their missing dependencies, a few MB.
# The lent machine has torch, transformers, accelerate, peft, pytest, pandas, pyarrow, fsspec and xxhash already
# (see the device library's KINDS.md); trl and wandb are not needed here, and DeepSpeed (the ZeRO-2 test, skipped
# with its reason when absent) is not carried: its wheel builds ops against the local torch. Carry .whl with the
# run (the device tool's `carry: [".whl"]`); the run installs only the wheels of packages that are missing or older
# there, into a private directory put on PYTHONPATH, with --no-index --no-deps.
#
# Output: a `name value` line per number on stdout (also in summary.txt); the records (one JSON object per
# benchmark run: settings, device, every timing) in gpu_check.jsonl; the test and benchmark logs. They go to $OUT
# when it is set (the device tool brings that folder back), else to .cache/gpu-check/.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=(pydantic pydantic-core annotated-types typing-inspection typing-extensions datasets dill multiprocess)
GPU_PYTHON_VERSION=3.12

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    mkdir -p .whl
    for name in "${WHEELS[@]}"; do
        version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || {
            echo "error: $name is not installed in $PYTHON (set PYTHON to the project's venv python)" >&2
            exit 2
        }
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest .whl \
            --python-version "$GPU_PYTHON_VERSION" --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "$name==$version" || exit 1
    done
    ls -l .whl
    exit 0
fi

START=$SECONDS
DEADLINE=${GPU_CHECK_SECONDS:-450}
RESULTS=${OUT:-$PWD/.cache/gpu-check}
mkdir -p "$RESULTS"
RECORDS="$RESULTS/gpu_check.jsonl"
SUMMARY="$RESULTS/summary.txt"
: > "$SUMMARY"

say() { echo "$*" | tee -a "$SUMMARY"; }

"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"' || exit 1

if compgen -G ".whl/*.whl" > /dev/null; then
    SITE=/tmp/rlhf-gpu-site
    # A wheel is installed when its package is missing or older than the wheel (pydantic needs a recent
    # typing-extensions); a package the machine has at the same or a newer version is left alone.
    mapfile -t missing < <("$PYTHON" - .whl/*.whl << 'EOF'
import importlib.metadata as metadata
import sys
from pathlib import Path

from packaging.version import Version

for wheel in sys.argv[1:]:
    name, version = Path(wheel).name.split("-")[:2]
    try:
        if Version(metadata.version(name)) >= Version(version):
            continue
    except metadata.PackageNotFoundError:
        pass
    print(wheel)
EOF
    )
    if ((${#missing[@]})); then
        if "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --target "$SITE" "${missing[@]}"; then
            export PYTHONPATH="$SITE"
            echo "installed from .whl: ${missing[*]}"
        else
            echo "warning: the wheels in .whl did not install; tests that need them are skipped" >&2
        fi
    fi
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export RLHF_CACHE="${RLHF_CACHE:-$PWD/.cache/rlhf-gpu}"

say "device $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0).replace(" ", "_"))')"
say "versions $("$PYTHON" -c 'import torch, transformers; print(f"torch={torch.__version__},transformers={transformers.__version__}")')"

status=0
# run NAME LIMIT NEEDED STDOUT STDERR CMD...: runs CMD under min(LIMIT, time left) seconds, its output appended to
# the files STDOUT and STDERR, if at least NEEDED seconds are left; says how it ended and how long it took.
run() {
    local name=$1 limit=$2 needed=$3 stdout=$4 stderr=$5
    shift 5
    local left=$((DEADLINE - (SECONDS - START)))
    if ((left < needed)); then
        say "$name.skipped ${left}s_left_needs_${needed}s"
        return 1
    fi
    ((limit > left)) && limit=$left
    local began=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" >> "$stdout" 2>> "$stderr" || rc=$?
    say "$name.exit_status $rc"
    say "$name.seconds $((SECONDS - began))"
    ((rc == 0)) || status=1
    return $rc
}

# The throughput benchmark, one fresh process per shape; each record is appended to gpu_check.jsonl.
for spec in tiny:60:30 qwen2-0.5b:120:60 qwen2-1.5b:150:90; do
    IFS=: read -r shape limit needed <<< "$spec"
    out="$RESULTS/.throughput-$shape.json"
    rm -f "$out"
    if run "throughput.$shape" "$limit" "$needed" "$out" "$RESULTS/bench.log" \
        "$PYTHON" scripts/bench.py throughput --size "$shape" --device cuda --results "$RECORDS"; then
        "$PYTHON" -m rlhf.bench.summary "$out" | tee -a "$SUMMARY"
    elif [[ -f "$out" ]]; then
        tail -5 "$RESULTS/bench.log"
    fi
    rm -f "$out"
done

# The gpu-marked tests (-p no:cacheprovider: nothing written into the tree; -rs: every skip with its reason).
run gpu_tests 240 90 "$RESULTS/pytest.log" "$RESULTS/pytest.log" \
    "$PYTHON" -m pytest tests/gpu -m gpu -q -rs -s -p no:cacheprovider
if [[ -f "$RESULTS/pytest.log" ]]; then
    tail -15 "$RESULTS/pytest.log"
    say "gpu_tests.result $(tail -1 "$RESULTS/pytest.log" | tr ' ' '_')"
fi

# The ppo stage benchmark on the GPU (the stage's accelerator picks CUDA), if time is left.
out="$RESULTS/.ppo-tiny.json"
rm -f "$out"
if run ppo.tiny 90 60 "$out" "$RESULTS/bench.log" \
    "$PYTHON" scripts/bench.py ppo --size tiny --episodes 64 --results "$RECORDS"; then
    "$PYTHON" -m rlhf.bench.summary "$out" | tee -a "$SUMMARY"
fi
rm -f "$out"

say "gpu_check.seconds $((SECONDS - START))"
exit $status
