"""Checkpoints and resume for the Trainer stages, on the tiny embedded model (one process, CPU).

Acceptance: an sft run killed (SIGKILL, a real subprocess) after its first checkpoint and resumed gives, with the same
seed, exactly the per-step metrics and final weights of an uninterrupted run; a checkpoint half-written when the kill
came is ignored in favour of the previous complete one; a NaN loss stops the run with the last checkpoint intact.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlhf.checkpoint import MARKER, complete_checkpoints, latest_complete

from ..conftest import REPO_ROOT

pytestmark = pytest.mark.slow

DATA = REPO_ROOT / "recipes" / "brand_voice" / "data"
STEPS = 4
COMPARED = ("loss", "grad_norm", "learning_rate", "mean_token_accuracy", "entropy")


def sft_recipe(path: Path, output_dir: Path, **training) -> Path:
    recipe = {
        "stage": "sft",
        "seed": 7,
        "output_dir": str(output_dir),
        "model": {"name_or_path": "embedded:tiny"},
        "data": {
            "train": str(DATA / "sft_train.jsonl"),
            "max_length": 64,
            "max_prompt_length": 32,
            "max_train_rows": 16,
        },
        "training": {
            "learning_rate": 1.0e-3,
            "max_steps": STEPS,
            "batch_size": 2,
            "logging_steps": 1,
            "save_steps": 2,
            "save_total_limit": 3,
            **training,
        },
        "tracking": {"report_to": ["none"]},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def step_metrics(output_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: r[k] for k in COMPARED} for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    from rlhf.cli import main

    root = tmp_path_factory.mktemp("uninterrupted")
    assert main(["run", str(sft_recipe(root / "sft.yaml", root / "out"))]) == 0
    return root / "out"


def test_killed_sft_run_resumes_exactly(uninterrupted, tmp_path, cli, caplog):
    caplog.set_level(logging.INFO, logger="rlhf")
    out = tmp_path / "out"
    recipe = sft_recipe(tmp_path / "sft.yaml", out)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "rlhf", "run", str(recipe)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = out / "checkpoints" / "checkpoint-2" / MARKER
    deadline = time.monotonic() + 240
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), "the run ended or timed out before its first checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()
    # On an idle machine a step takes tens of milliseconds, so the kill can land after checkpoint-4 was finished too.
    # Take the run back to the state of a kill right after checkpoint-2: a later checkpoint without its marker is
    # exactly what a kill during its write leaves.
    for later_checkpoint in complete_checkpoints(out / "checkpoints")[1:]:
        (later_checkpoint / MARKER).unlink()
    killed_at = latest_complete(out / "checkpoints")
    assert killed_at.name == "checkpoint-2"

    # A kill during a checkpoint write leaves a directory without the marker, or a temporary directory.
    later = int(killed_at.name.split("-")[1]) + 2
    half = out / "checkpoints" / f"checkpoint-{later}"
    half.mkdir(exist_ok=True)
    (half / "model.safetensors").write_bytes(b"cut short")
    (out / "checkpoints" / f"checkpoint-{later + 2}.tmp-12345").mkdir()

    # A changed recipe is refused, naming the key, before any model is loaded.
    code, _, err = cli("run", recipe, "training.learning_rate=0.002")
    assert code == 2
    assert "training.learning_rate: 0.001 in the checkpoint, 0.002 now" in err
    assert "resume=false" in err

    code, _, err = cli("run", recipe)
    assert code == 0, err
    assert f"resuming from {killed_at} " in caplog.text
    assert f"ignoring and deleting the incomplete checkpoint {half} " in caplog.text
    assert not (out / "checkpoints" / f"checkpoint-{later + 2}.tmp-12345").exists()
    assert (half / MARKER).exists()  # written again, completely, by the resumed run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["results"]["resumed_from_step"] == int(killed_at.name.split("-")[1])

    expected, resumed = weights(uninterrupted / "final"), weights(out / "final")
    assert expected.keys() == resumed.keys()
    for name in expected:  # exact on one process: same seed, same data order, restored RNG and optimiser state
        assert (expected[name] == resumed[name]).all(), name
    assert step_metrics(out) == step_metrics(uninterrupted)
    assert sorted(step_metrics(out)) == list(range(1, STEPS + 1))  # no step lost or logged twice


def test_finished_stage_is_skipped(uninterrupted, tmp_path, cli, caplog):
    caplog.set_level(logging.INFO, logger="rlhf")
    code, _, err = cli("run", sft_recipe(tmp_path / "sft.yaml", uninterrupted))
    assert code == 0, err
    assert "already holds a finished run of this recipe and data; skipping it" in caplog.text
    assert [p.name for p in complete_checkpoints(uninterrupted / "checkpoints")] == ["checkpoint-2", "checkpoint-4"]


def test_non_finite_loss_stops_with_last_checkpoint_intact(tmp_path, cli, monkeypatch):
    import torch
    from trl import SFTTrainer

    original = SFTTrainer.compute_loss

    def poisoned(self, model, inputs, *args, **kwargs):
        result = original(self, model, inputs, *args, **kwargs)
        if self.state.global_step < 2:
            return result
        if isinstance(result, tuple):
            return (result[0] * float("nan"), *result[1:])
        return result * float("nan")

    monkeypatch.setattr(SFTTrainer, "compute_loss", poisoned)
    out = tmp_path / "out"
    # logging_steps=10: the guard still sees the loss at every save step, before the checkpoint is marked complete.
    code, _, err = cli("run", sft_recipe(tmp_path / "sft.yaml", out, logging_steps=10))
    assert code == 1
    assert "non-finite loss (nan) at step 4" in err
    assert "checkpoint-2) is intact" in err
    assert [p.name for p in complete_checkpoints(out / "checkpoints")] == ["checkpoint-2"]
    assert not (out / "final").exists() and not (out / "manifest.json").exists()
    assert all(torch.isfinite(t).all() for t in weights(out / "checkpoints" / "checkpoint-2").values())
    assert math.isfinite(
        json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())["log_history"][-1]["loss"]
    )


def test_reward_stage_resumes_exactly(tmp_path, cli):
    import shutil

    def run(out: Path) -> Path:
        recipe = {
            "stage": "reward",
            "seed": 3,
            "output_dir": str(out),
            "model": {"name_or_path": "embedded:tiny"},
            "data": {
                "train": str(DATA / "prefs_train.jsonl"),
                "max_length": 128,
                "max_prompt_length": 64,
                "max_train_rows": 16,
            },
            "training": {"learning_rate": 1.0e-3, "max_steps": 4, "batch_size": 2, "logging_steps": 1, "save_steps": 2},
            "tracking": {"report_to": ["none"]},
        }
        path = tmp_path / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        code, _, err = cli("run", path)
        assert code == 0, err
        return path

    out = tmp_path / "reward"
    recipe = run(out)
    expected = weights(out / "final")
    # The state a kill after checkpoint-2 leaves: a later checkpoint without its marker, no final/, no manifest.
    (out / "checkpoints" / "checkpoint-4" / MARKER).unlink()
    shutil.rmtree(out / "final")
    (out / "manifest.json").unlink()
    code, _, err = cli("run", recipe)
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["results"]["resumed_from_step"] == 2
    resumed = weights(out / "final")
    assert all((expected[name] == resumed[name]).all() for name in expected)


def test_killed_after_the_last_checkpoint_finishes_exactly(uninterrupted, tmp_path, cli, caplog):
    import shutil

    caplog.set_level(logging.INFO, logger="rlhf")
    out = tmp_path / "out"  # the state of a kill after checkpoint-4 (the last step) but before final/ and the manifest
    shutil.copytree(uninterrupted / "checkpoints", out / "checkpoints")
    shutil.copy(uninterrupted / "metrics.jsonl", out / "metrics.jsonl")
    code, _, err = cli("run", sft_recipe(tmp_path / "sft.yaml", out))
    assert code == 0, err
    # The Trainer resumed at its last step would take one step too many: the run goes back to checkpoint-2.
    assert f"resuming from {out / 'checkpoints' / 'checkpoint-2'} instead" in caplog.text
    expected, resumed = weights(uninterrupted / "final"), weights(out / "final")
    assert all((expected[name] == resumed[name]).all() for name in expected)
    assert step_metrics(out) == step_metrics(uninterrupted)
