"""Shared test set-up: offline environment, a session-wide model cache, hardware markers, one short sft+reward run.

The environment is set at import time, before any test module imports transformers, datasets or wandb.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINE = REPO_ROOT / "recipes" / "brand_voice" / "pipeline.yaml"
DATA_DIR = REPO_ROOT / "recipes" / "brand_voice" / "data"
# The categories of the shipped held-out preference pairs (prefs_eval.jsonl).
CATEGORIES = {"voice", "content", "paraphrase", "other_intent", "length_matched"}

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# One cache for the whole session (and across CI runs that keep it), so embedded:tiny is built once.
os.environ.setdefault("RLHF_CACHE", str(REPO_ROOT / ".cache" / "rlhf-test"))

# The shared run: long enough that sft eval loss falls and the reward model separates held-out pairs, short enough
# for a 2-core CI machine (about half a minute). Checkpoints other than the final one are not needed here.
SHORT_RUN = [
    "stages=[sft, reward]",
    "tracking.report_to=[none]",
    # The reward stage's classifier (tests/stages/test_reward.py), at its own learning rate (the implicit one's 2e-4
    # left it at 0.65 on the voice pairs after these 20 steps); the shipped implicit reward model has its own
    # shortened run in tests/stages/test_reward_implicit.py, from this run's sft model.
    "reward.implicit=null",
    "reward.training.learning_rate=5.0e-4",
    "reward.training.batch_size=16",  # as measured: 320 pairs in these 20 steps (the shipped implicit one takes 8)
    "sft.data.max_train_rows=320",
    "sft.data.max_eval_rows=32",
    "sft.training.max_steps=20",
    "sft.training.logging_steps=5",
    "sft.training.eval_steps=1000",
    "sft.training.save_steps=null",
    "reward.data.max_train_rows=320",
    "reward.data.max_eval_rows=100",
    "reward.training.max_steps=20",
    "reward.training.logging_steps=5",
    "reward.training.eval_steps=1000",
    "reward.training.save_steps=null",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips `gpu` tests without CUDA and `multi_gpu` tests with fewer than two CUDA devices."""
    wanted = [item for item in items if item.get_closest_marker("gpu") or item.get_closest_marker("multi_gpu")]
    if not wanted:
        return  # keep collection of the CPU tiers free of a torch import
    import torch

    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for item in wanted:
        if item.get_closest_marker("multi_gpu") and devices < 2:
            item.add_marker(pytest.mark.skip(reason=f"needs two or more CUDA GPUs (found {devices})"))
        elif item.get_closest_marker("gpu") and devices < 1:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs the shipped pipeline's sft and reward stages once, shortened; returns the run directory."""
    from rlhf.pipeline import run_recipe
    from rlhf.recipe import load_recipe

    run_dir = tmp_path_factory.mktemp("short_run")
    run_recipe(load_recipe(PIPELINE, [f"run_dir={run_dir}", *SHORT_RUN]))
    return run_dir
