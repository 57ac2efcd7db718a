"""The launch helpers' failure message: it must show why a rank died, not only the launcher's own traceback."""

from __future__ import annotations

from .launching import excerpt

RANK_ERROR = [
    "Fatal Python error: Aborted",
    "",
    "Thread 0x00007f (most recent call first):",
    '  File "/repo/tests/distributed/ppo_generation.py", line 121 in main',
]
# The tail torch's launcher writes when a rank dies (as CI printed it for a SIGABRT of rank 0).
LAUNCHER = [
    "Traceback (most recent call last):",
    '  File "<frozen runpy>", line 198, in _run_module_as_main',
    '  File "/venv/lib/python3.11/site-packages/accelerate/commands/launch.py", line 1398, in launch_command',
    '  File "/venv/lib/python3.11/site-packages/torch/distributed/run.py", line 1019, in run',
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
    "===========================================================",
    "/repo/tests/distributed/ppo_generation.py FAILED",
    "Failures:",
    "[1]:",
    "  exitcode  : -15 (pid: 26130)  (SIGTERM)",
    "-----------------------------------------------------------",
    "Root Cause (first observed failure):",
    "[0]:",
    "  exitcode  : -6 (pid: 26129)  (SIGABRT)",
    "===========================================================",
]


def test_excerpt_keeps_the_rank_error_and_the_root_cause_not_the_launcher_traceback():
    noise = [f"warning line {i}" for i in range(100)]
    text = "\n".join(noise + RANK_ERROR + LAUNCHER)
    shown = excerpt(text, lines=20).splitlines()
    # The 20 lines above the launcher's traceback (the rank's error last), then the launcher's root cause.
    assert shown == noise[-16:] + RANK_ERROR + ["[launcher traceback cut]"] + LAUNCHER[-4:]


def test_excerpt_of_a_log_without_a_launcher_traceback_is_its_tail():
    text = "\n".join(f"line {i}" for i in range(100))
    assert excerpt(text, lines=10).splitlines() == [f"line {i}" for i in range(90, 100)]
