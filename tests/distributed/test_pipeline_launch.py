"""The README's multi-process command: the whole shipped pipeline (sft -> reward -> ppo -> compare) in ONE launch.

2 CPU processes (gloo) under ZeRO-2 and ZeRO-3, shortened, with a different per-device micro-batch in every training
stage (sft 4, reward 8, ppo 8 rollouts in 2 minibatches = 4). What failed before: ppo after reward refused its own
micro-batch (the reward stage had filled the launch's shared DeepSpeed config in place), and under ZeRO-3 compare
crashed (rank 0 loaded models inside ZeRO-3's partitioning while the other ranks had left). Every stage's final/ must
load with `from_pretrained`, and compare must write its report naming the base model the sft stage started from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import PIPELINE
from .launching import SHORT_REWARD, SHORT_SFT, launch_command, results, rlhf_run, run

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

HERE = Path(__file__).resolve().parent

SHORT_PIPELINE = [
    *SHORT_SFT,
    *SHORT_REWARD,
    "sft.training.batch_size=4",
    "reward.training.batch_size=8",
    "ppo.data.max_train_rows=32",
    "ppo.data.max_eval_rows=4",
    "ppo.training.batch_size=8",
    "ppo.update.num_minibatches=2",
    "ppo.update.epochs=1",
    "ppo.training.max_steps=2",
    "ppo.training.save_steps=null",
    "ppo.rollout.max_new_tokens=12",
    "compare.prompts.max_prompts=6",
    "compare.rollout.max_new_tokens=12",
    "compare.bootstrap_resamples=100",
]


def test_each_stage_reads_the_launch_deepspeed_config_afresh(tmp_path):
    # Two accelerators in one process, as the reward and ppo stages make them: the second must see "auto" again.
    out = tmp_path / "ranks"
    run(launch_command("zero2", [str(HERE / "deepspeed_stages.py"), str(out)]), tmp_path / "launch.log")
    for rank in range(2):
        record = json.loads((out / f"rank{rank}.json").read_text())
        assert record["first_micro"] == 8
        assert record["second_before"] == "auto" and record["second_clipping_before"] == "auto"
        assert record["error"] is None
        assert record["engine_micro"] == 4 and record["engine_clipping"] == 0.0


@pytest.mark.parametrize("config,stage", [("zero2", 2), ("zero3", 3)])
def test_whole_pipeline_in_one_launch(tmp_path, config, stage):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models.loading import load_reward_model
    from rlhf.recipe import load_recipe
    from rlhf.rewards.implicit import ImplicitReward

    run_dir = tmp_path / "run"
    log = tmp_path / "launch.log"
    run(launch_command(config, rlhf_run(run_dir, *SHORT_PIPELINE)), log)
    # Quiet logs under a launch: DeepSpeed's deprecated torch.distributed calls (two lines per collective, rank and
    # step) and the reward model's expected LOAD REPORT are filtered.
    text = log.read_text()
    assert "`torch.distributed.reduce_scatter_tensor` is deprecated" not in text and "LOAD REPORT" not in text
    assert "compare finished" in text

    for name in ("sft", "reward", "ppo"):
        found = results(run_dir / name)
        assert (found["world_size"], found["distributed_type"], found["zero_stage"]) == (2, "DEEPSPEED", stage)
        assert found["steps"] == (2 if name == "ppo" else 4)
        # Every final/ is a whole causal LM: the shipped reward model is implicit (it also loads as one).
        model, info = AutoModelForCausalLM.from_pretrained(run_dir / name / "final", output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
        assert sum(p.numel() for p in model.parameters()) == found["parameters"]
        tokenizer = AutoTokenizer.from_pretrained(run_dir / name / "final")
        batch = tokenizer(["Thanks for reaching out about your order."], return_tensors="pt")
        with torch.no_grad():
            assert torch.isfinite(model(**batch).logits).all()

    reward = load_reward_model(str(run_dir / "reward" / "final"))
    assert (
        isinstance(reward, ImplicitReward)
        and Path(reward.reference.name_or_path) == (run_dir / "sft" / "final").resolve()
    )

    compare = run_dir / "compare"
    for name in ("report.md", "report.html", "results.json", "responses.jsonl", "manifest.json"):
        assert (compare / name).is_file(), name
    models = json.loads((compare / "results.json").read_text())["models"]
    assert list(models) == ["base", "sft", "ppo"]
    # The base is whatever the sft stage started from (stage:sft.base), and the report names it.
    base = load_recipe(PIPELINE).sft.model.name_or_path
    assert models["base"]["reference"] == base
    assert models["sft"]["path"] == str(run_dir / "sft" / "final")
    assert f"base = {base}" in (compare / "report.md").read_text()
    responses = [json.loads(line) for line in (compare / "responses.jsonl").read_text().splitlines()]
    # 3 models x 6 prompts x the recipe's replies per prompt.
    assert len(responses) == 3 * 6 * load_recipe(PIPELINE).compare.samples_per_prompt
