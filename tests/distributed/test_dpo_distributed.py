"""The dpo stage under DeepSpeed ZeRO-2 and ZeRO-3 with 2 CPU processes (gloo): it trains, the main process measures
the saved model alone, and final/ is a whole model that transformers loads."""

from __future__ import annotations

import pytest

from .launching import launch_command, results, rlhf_run, run

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# dpo alone, from embedded:tiny (no sft stage to run first): a few steps on a few pairs.
SHORT_DPO = [
    "stages=[dpo]",
    "tracking.report_to=[none]",
    "dpo.model.name_or_path=embedded:tiny",
    "dpo.data.train=data/prefs_train.jsonl",
    "dpo.data.eval=data/prefs_eval.jsonl",
    "dpo.data.max_length=128",
    "dpo.data.max_prompt_length=64",
    "dpo.data.max_train_rows=32",
    "dpo.data.max_eval_rows=8",
    "dpo.training.learning_rate=1.0e-3",
    "dpo.training.max_steps=3",
    "dpo.training.batch_size=4",
    "dpo.training.logging_steps=1",
    "dpo.training.eval_steps=1000",
    "dpo.training.save_steps=null",
]


@pytest.mark.parametrize("zero", [2, 3])
def test_dpo_under_zero(tmp_path, zero):
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "run"
    run(launch_command(f"zero{zero}", rlhf_run(run_dir, *SHORT_DPO)), tmp_path / "launch.log")

    found = results(run_dir / "dpo")
    assert (found["world_size"], found["distributed_type"], found["zero_stage"]) == (2, "DEEPSPEED", zero)
    assert found["steps"] == 3 and found["eval_pairs"] == 8
    if zero == 3:  # the main process stored about half of the parameters while training
        assert found["parameters_local"] < 0.6 * found["parameters"]
    model, info = AutoModelForCausalLM.from_pretrained(run_dir / "dpo" / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert sum(p.numel() for p in model.parameters()) == found["parameters"]
