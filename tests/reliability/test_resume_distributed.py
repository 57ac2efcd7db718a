"""Resume under ZeRO-3 with 2 processes (CPU, gloo): each rank's shards and RNG states come back exactly.

The run is stopped the way a kill after checkpoint-2 leaves it (checkpoint-4 without its marker, no final/, no
manifest); the resumed run must ignore the incomplete checkpoint and end with the weights and per-step metrics of the
uninterrupted run, bit for bit.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from ..distributed.launching import launch_command, run
from .test_resume import DATA, step_metrics, weights

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_zero3_two_processes_resume_exactly(tmp_path):
    out = tmp_path / "out"
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "stage": "sft",
                "seed": 7,
                "output_dir": str(out),
                "model": {"name_or_path": "embedded:tiny"},
                "data": {
                    "train": str(DATA / "sft_train.jsonl"),
                    "max_length": 64,
                    "max_prompt_length": 32,
                    "max_train_rows": 32,
                },
                "training": {
                    "learning_rate": 1.0e-3,
                    "max_steps": 4,
                    "batch_size": 2,
                    "logging_steps": 1,
                    "save_steps": 2,
                },
                "tracking": {"report_to": ["none"]},
            }
        )
    )
    command = launch_command("zero3", ["-m", "rlhf", "run", str(recipe)])
    run(command, tmp_path / "first.log")
    shards = [p.name for p in (out / "checkpoints" / "checkpoint-2" / "global_step2").iterdir()]
    assert any("zero_pp_rank_1" in name for name in shards), shards  # both ranks wrote their ZeRO partitions
    expected, expected_metrics = weights(out / "final"), step_metrics(out)

    (out / "checkpoints" / "checkpoint-4" / "rlhf-checkpoint.json").unlink()
    shutil.rmtree(out / "final")
    (out / "manifest.json").unlink()
    run(launch_command("zero3", ["-m", "rlhf", "run", str(recipe)]), tmp_path / "resumed.log")

    log = (tmp_path / "resumed.log").read_text()
    assert "resuming from" in log and "checkpoint-2 (step 2)" in log
    assert json.loads((out / "manifest.json").read_text())["results"]["resumed_from_step"] == 2
    resumed = weights(out / "final")
    assert all((expected[name] == resumed[name]).all() for name in expected)
    assert step_metrics(out) == expected_metrics
