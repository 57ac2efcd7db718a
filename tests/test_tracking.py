"""Tracking: metrics.jsonl always; TensorBoard and wandb (offline) when the recipe asks for them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlhf.config import TrackingConfig
from rlhf.tracking import Tracker

from .conftest import PIPELINE


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_metrics_jsonl_gets_one_object_per_logged_step(tmp_path):
    tracker = Tracker(TrackingConfig(), tmp_path, {"seed": 1})
    tracker.log({"loss": 1.5, "lr": 1e-3, "note": "text is dropped"}, step=1)
    tracker.log({"loss": math.nan, "reward": math.inf, "count": 3}, step=2)
    tracker.close()
    first, second = read_jsonl(tmp_path / "metrics.jsonl")
    assert first["step"] == 1 and first["loss"] == 1.5 and first["lr"] == 1e-3
    assert "note" not in first and isinstance(first["time"], float)
    assert second["loss"] is None and second["reward"] is None  # non-finite values are kept, as null
    assert second["count"] == 3.0


def test_resume_keeps_rows_up_to_the_checkpoint_and_a_new_run_starts_over(tmp_path):
    tracker = Tracker(TrackingConfig(), tmp_path, {})
    for step in (1, 2, 3):
        tracker.log({"loss": 1.0}, step=step)
    tracker.close()
    tracker = Tracker(TrackingConfig(), tmp_path, {}, resume_step=2)  # step 3 is logged again after the checkpoint
    tracker.log({"loss": 0.5}, step=3)
    tracker.close()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [(row["step"], row["loss"]) for row in rows] == [(1, 1.0), (2, 1.0), (3, 0.5)]
    tracker = Tracker(TrackingConfig(), tmp_path, {})
    tracker.log({"loss": 1.0}, step=9)
    tracker.close()
    assert [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl")] == [9]


def test_a_disabled_tracker_writes_nothing(tmp_path):
    out = tmp_path / "rank1"
    tracker = Tracker(TrackingConfig(report_to=["tensorboard"]), out, {}, enabled=False)
    tracker.log({"loss": 1.0}, step=1)
    tracker.log_samples([{"prompt": "p", "response": "r"}], step=1)
    tracker.close()
    assert not out.exists()


def test_tensorboard_events_under_tb(tmp_path):
    tracker = Tracker(TrackingConfig(report_to="tensorboard"), tmp_path, {"seed": 1})
    tracker.log({"loss": 2.0}, step=1)
    tracker.log_samples([{"prompt": "a | b", "response": "line\nbreak", "score": 0.5}], step=1)
    tracker.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_a_tiny_run_reports_to_tensorboard_and_offline_wandb(tmp_path, monkeypatch):
    from rlhf.pipeline import run_recipe
    from rlhf.recipe import load_recipe

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = [
        f"run_dir={tmp_path}",
        "stages=[sft]",
        "tracking.report_to=[tensorboard, wandb]",
        "tracking.project=rlhf-tests",
        "sft.data.max_train_rows=32",
        "sft.data.eval=null",
        "sft.training.max_steps=2",
        "sft.training.batch_size=4",
        "sft.training.logging_steps=1",
        "sft.training.save_steps=null",
    ]
    [out] = run_recipe(load_recipe(PIPELINE, overrides))
    assert list((out / "tb").glob("events.out.tfevents.*")), "no TensorBoard event file under tb/"
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs, f"no offline wandb run under {out / 'wandb'}"
    assert list(runs[0].glob("*.wandb")), "the offline wandb run has no data file"
    assert any("loss" in row for row in read_jsonl(out / "metrics.jsonl"))
