"""Starting real `accelerate launch` runs from tests: the command, a child environment, a free port, a time limit.

Every launch runs from the repository root (the launch configs name their DeepSpeed JSON relative to it), with the
offline environment of the test session, and is killed as a whole process group if it outlives its time limit, so
a hang fails the test instead of the CI job.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ..conftest import PIPELINE, REPO_ROOT

LAUNCH_DIR = REPO_ROOT / "recipes" / "launch"
# The first DeepSpeed launch on a fresh machine JIT-compiles DeepSpeed's shared-memory comm op (about two minutes
# on 2 cores, then cached under ~/.cache/torch_extensions); later launches take 20-40 s.
TIMEOUT_S = 480

# Short stage settings: a few optimiser steps on a few rows, no trackers, no intermediate checkpoints.
SHORT_SFT = [
    "tracking.report_to=[none]",
    "sft.data.max_train_rows=64",
    "sft.data.max_eval_rows=16",
    "sft.training.max_steps=4",
    "sft.training.batch_size=8",
    "sft.training.logging_steps=1",
    "sft.training.eval_steps=1000",
    "sft.training.save_steps=null",
]
SHORT_REWARD = [
    "reward.data.max_train_rows=64",
    "reward.data.max_eval_rows=32",
    "reward.training.max_steps=4",
    "reward.training.batch_size=8",
    "reward.training.logging_steps=1",
    "reward.training.eval_steps=1000",
    "reward.training.save_steps=null",
]


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**overrides: str | None) -> dict[str, str]:
    """The test session's environment for a launched run: offline, CPU only, the session's model cache.

    An override of None removes the variable.
    """
    env = dict(os.environ)
    env.update(
        {
            "DS_ACCELERATOR": "cpu",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "WANDB_MODE": "offline",
            "TOKENIZERS_PARALLELISM": "false",
            # A rank that dies on a signal (SIGABRT, SIGSEGV) prints its Python stack into the log.
            "PYTHONFAULTHANDLER": "1",
            # These tests are about the CPU/gloo path CI runs; on a GPU machine two ranks would share one device.
            "CUDA_VISIBLE_DEVICES": "",
        }
    )
    # conftest.py sets RLHF_CACHE for the session; children share it, so embedded:tiny is built once.
    env.setdefault("RLHF_CACHE", str(REPO_ROOT / ".cache" / "rlhf-test"))
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def launch_command(
    config: str,
    target: list[str],
    *,
    num_processes: int = 2,
    port: int | None = None,
    machines: tuple[int, int] | None = None,
) -> list[str]:
    """`accelerate launch --config_file recipes/launch/CONFIG.yaml ...` followed by the target (`-m rlhf ...`).

    Args:
        config: Name of a shipped launch config without `.yaml` ("zero3").
        target: What accelerate runs: a script path and its arguments, or ["-m", "rlhf", ...].
        num_processes: Total processes (over every machine).
        port: Rendezvous port; default a free one.
        machines: (machine_rank, num_machines) to act as one node of a multi-node launch on 127.0.0.1.
    """
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(LAUNCH_DIR / f"{config}.yaml"),
        "--num_processes",
        str(num_processes),
        "--main_process_port",
        str(port or free_port()),
    ]
    if machines is not None:
        rank, count = machines
        command += ["--num_machines", str(count), "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1"]
    return command + target


def rlhf_run(run_dir: Path, *overrides: str) -> list[str]:
    """The `-m rlhf run` target for the shipped pipeline recipe."""
    return ["-m", "rlhf", "run", str(PIPELINE), f"run_dir={run_dir}", *overrides]


def start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts a command in its own process group, stdout and stderr to `log`."""
    handle = log.open("w")
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=env or child_env(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def finish(processes: list[subprocess.Popen], logs: list[Path], timeout: float = TIMEOUT_S) -> None:
    """Waits for every process; on a timeout or a failure kills them all and fails with the log tails."""
    try:
        codes = [p.wait(timeout=timeout) for p in processes]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    if codes is None or any(codes):
        tails = "\n".join(f"--- {log} ---\n" + excerpt(log.read_text()) for log in logs)
        what = f"timed out after {timeout:.0f} s" if codes is None else f"exit codes {codes}"
        raise AssertionError(f"launch failed ({what}):\n{tails}")


def excerpt(text: str, lines: int = 60) -> str:
    """The part of a launch log that says why it failed: the ranks' last lines and the launcher's root cause.

    When a rank dies, torch's launcher prints its own traceback and a failure table after the ranks' output; the
    last lines of the log are then only that, and the rank's error (a Python traceback, or the stack
    PYTHONFAULTHANDLER prints on SIGABRT or SIGSEGV) is above them. The launcher's traceback is cut out.
    """
    rows = text.splitlines()
    starts = [i for i, row in enumerate(rows) if row.startswith("Traceback (most recent call last):")]
    launcher = next((i for i in reversed(starts) if any("distributed/run.py" in row for row in rows[i : i + 30])), None)
    if launcher is None:
        return "\n".join(rows[-lines:])
    root = next((i for i in range(launcher, len(rows)) if "Root Cause" in rows[i]), len(rows))
    return "\n".join(rows[max(0, launcher - lines) : launcher] + ["[launcher traceback cut]"] + rows[root:])


def run(command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Runs one command to completion (see `finish`)."""
    finish([start(command, log, env)], [log])


def results(stage_dir: Path) -> dict:
    """The `results` block of a stage's manifest.json."""
    return json.loads((stage_dir / "manifest.json").read_text())["results"]
