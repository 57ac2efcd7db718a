"""Quiet logs: known third-party noise is kept out of a run's log by default, and `-v` shows all of it.

The noise comes from a real run (`rlhf run` of the shipped pipeline's sft and reward stages, shortened, with
WANDB_MODE=offline as in CI): transformers' FutureWarning about `gradient_checkpointing`, the LOAD REPORT listing the
reward model's new score head, transformers' "Running in WANDB offline mode" banner (the recipe does not use wandb),
and progress bars written into a file. The torch.distributed warnings only appear under a launch: the filter is
checked here on a warning attributed to that module, and tests/distributed/test_pipeline_launch.py reads a real log.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from rlhf import cli
from rlhf.config import TrackingConfig
from rlhf.tracking import unused_wandb_mode_unset

from .conftest import PIPELINE, REPO_ROOT

TINY_RUN = [
    "stages=[sft, reward]",
    "tracking.report_to=[tensorboard]",
    "sft.data.max_train_rows=16",
    "sft.data.max_eval_rows=8",
    "sft.training.max_steps=2",
    "sft.training.batch_size=4",
    "sft.training.eval_steps=1000",
    "sft.training.save_steps=null",
    "reward.data.max_train_rows=16",
    "reward.data.max_eval_rows=8",
    "reward.training.max_steps=2",
    "reward.training.batch_size=4",
    "reward.training.eval_steps=1000",
    "reward.training.save_steps=null",
]

NOISE = {
    "transformers FutureWarning": "`gradient_checkpointing` is deprecated",
    "load report": "LOAD REPORT",
    "wandb banner": "Running in WANDB offline mode",
    "progress bar": "Loading weights",
}


def run_log(run_dir: Path, *flags: str) -> str:
    """Runs `rlhf run` in a child process (stderr is a file, not a terminal) and returns what it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "rlhf", "run", str(PIPELINE), f"run_dir={run_dir}", *TINY_RUN, *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    return log


@pytest.mark.slow
def test_a_run_log_is_quiet_by_default_and_complete_with_v(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    # An earlier in-process `rlhf` call (cli.main) leaves the progress-bar switches set in this process's
    # environment; the children must start from what a user's shell has.
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.delenv("HF_DATASETS_DISABLE_PROGRESS_BARS", raising=False)
    quiet = run_log(tmp_path)
    # The classifier reward stage alone makes every kind of noise (its new score head is a LOAD REPORT; the shipped
    # implicit reward model loads whole); it runs again on the sft stage the first run left.
    loud = run_log(tmp_path, "stages=[reward]", "resume=false", "reward.implicit=null", "-v")
    for what, text in NOISE.items():
        assert text not in quiet, f"{what} is still in the default log"
        assert text in loud, f"{what} is missing from the -v log"
    assert "sft finished" in quiet
    for log in (quiet, loud):  # rlhf's own lines are there either way
        assert "reward: held-out preference accuracy" in log


def test_known_warnings_are_filtered_by_module_and_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # set here so the test does not leave it set
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "0")
    text = "`torch.distributed.all_gather_into_tensor` is deprecated. Please use `all_gather_single` instead."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cli.quiet_third_party()
            warnings.warn_explicit(text, FutureWarning, "c10d_logger.py", 83, module="torch.distributed.c10d_logger")
            # The same words from another module, or another category from the same module, stay.
            warnings.warn_explicit(text, FutureWarning, "elsewhere.py", 1, module="mypackage.elsewhere")
            warnings.warn_explicit(text, UserWarning, "c10d_logger.py", 83, module="torch.distributed.c10d_logger")
        finally:
            logging.getLogger("transformers.modeling_utils").removeFilter(cli._unexpected_load_report)
    assert [(w.category, w.filename) for w in caught] == [
        (FutureWarning, "elsewhere.py"),
        (UserWarning, "c10d_logger.py"),
    ]


def load_report(rows: list[tuple[str, str]]) -> logging.LogRecord:
    """A LogRecord shaped like transformers 5.24's LOAD REPORT (with its terminal colour codes)."""
    table = "Key          | Status  | \n-------------+---------+-\n" + "\n".join(f"{k} | {s} | " for k, s in rows)
    message = (
        "\x1b[1mLlamaForSequenceClassification LOAD REPORT\x1b[0m from: /run/sft/final\n"
        + table
        + "\n\nNotes:\n- MISSING:\tthose params were newly initialized because missing from the checkpoint."
    )
    return logging.LogRecord("transformers.modeling_utils", logging.WARNING, __file__, 1, message, None, None)


def test_only_the_expected_load_report_is_dropped():
    assert not cli._unexpected_load_report(load_report([("score.weight", "MISSING")]))
    assert not cli._unexpected_load_report(load_report([("score.weight", "MISSING"), ("lm_head.weight", "UNEXPECTED")]))
    # A trunk weight missing, or the score head with the wrong shape, is a wrong checkpoint: the report stays.
    assert cli._unexpected_load_report(load_report([("score.weight", "MISSING"), ("model.norm.weight", "MISSING")]))
    assert cli._unexpected_load_report(load_report([("score.weight", "MISMATCH")]))
    other = logging.LogRecord("transformers.modeling_utils", logging.WARNING, __file__, 1, "something else", None, None)
    assert cli._unexpected_load_report(other)


def test_wandb_mode_is_unset_only_while_running_without_wandb(monkeypatch):
    class Stage:
        def __init__(self, *report_to):
            self.tracking = TrackingConfig(report_to=list(report_to))

    monkeypatch.setenv("WANDB_MODE", "offline")
    with unused_wandb_mode_unset([Stage("tensorboard"), Stage("wandb")]):
        assert os.environ["WANDB_MODE"] == "offline"
    with unused_wandb_mode_unset([Stage("tensorboard"), Stage("none")]):
        assert "WANDB_MODE" not in os.environ
    assert os.environ["WANDB_MODE"] == "offline"  # a caller in the same process keeps its setting
