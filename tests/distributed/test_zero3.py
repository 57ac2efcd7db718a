"""ZeRO-3 on CPU with 2 processes: parameters really partitioned, sft and reward run, final/ is a whole model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .launching import SHORT_REWARD, SHORT_SFT, child_env, launch_command, results, rlhf_run, run

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

HERE = Path(__file__).resolve().parent


def test_zero3_partitions_the_weights(tmp_path):
    # DS_ACCELERATOR is left unset: rlhf.distributed.prepare_environment must choose DeepSpeed's CPU accelerator.
    out = tmp_path / "ranks"
    run(
        launch_command("zero3", [str(HERE / "zero3_partition.py"), str(out)]),
        tmp_path / "launch.log",
        env=child_env(DS_ACCELERATOR=None),
    )
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for record in ranks:
        assert record["world_size"] == 2 and record["distributed_type"] == "DEEPSPEED" and record["zero_stage"] == 3
        assert record["ds_accelerator_env"] == "cpu" and record["ds_accelerator"] == "cpu"
        # The module's parameter is an empty placeholder; the rank keeps only its shard (half, up to padding).
        assert record["local_numel"] == 0
        assert record["full_numel"] == 2048 * 128
        assert record["shard_numel"] == pytest.approx(record["full_numel"] / 2, abs=2)
        # Gathering the shards gives back exactly the loaded weight.
        assert record["gathered_numel"] == record["full_numel"]
        assert record["sum_gathered"] == pytest.approx(record["sum_before"], rel=1e-9, abs=1e-9)


def test_sft_then_reward_under_zero3(tmp_path):
    # The reward stage starts from the sft stage's final/ (stage:sft) and then evaluates its own final/ on the main
    # process only: the launch must finish (no rank left waiting) and every final/ must be a whole model. The
    # classifier reward model here; the shipped implicit one is trained as dpo is (tests/stages/test_dpo.py under
    # ZeRO-3) and runs under ZeRO-2/3 in the whole-pipeline launch (test_pipeline_launch.py).
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    run_dir = tmp_path / "run"
    run(
        launch_command(
            "zero3", rlhf_run(run_dir, "stages=[sft,reward]", *SHORT_SFT, *SHORT_REWARD, "reward.implicit=null")
        ),
        tmp_path / "launch.log",
    )

    for stage in ("sft", "reward"):
        found = results(run_dir / stage)
        assert (found["world_size"], found["distributed_type"], found["zero_stage"]) == (2, "DEEPSPEED", 3)
        # The main process stored about half of the parameters while training.
        assert found["parameters_local"] < 0.6 * found["parameters"]
        assert found["steps"] == 4

    sft, info = AutoModelForCausalLM.from_pretrained(run_dir / "sft" / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert sum(p.numel() for p in sft.parameters()) == results(run_dir / "sft")["parameters"]
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "sft" / "final")
    batch = tokenizer(["Thanks for reaching out about your order."], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(sft(**batch).logits).all()

    reward, info = AutoModelForSequenceClassification.from_pretrained(
        run_dir / "reward" / "final", output_loading_info=True
    )
    assert not info["missing_keys"] and reward.config.num_labels == 1
    # The reward model's trunk is the sft model's trunk after a few more steps: close, not identical, not empty.
    sft_embed = sft.get_input_embeddings().weight
    reward_embed = reward.get_input_embeddings().weight
    assert reward_embed.abs().sum() > 0 and not torch.equal(sft_embed, reward_embed)
    assert (reward_embed - sft_embed).abs().max() < 0.1
    # The reported held-out accuracy and margin are those of the final/ that was saved: scored again here, apart
    # from the launch, on the same 32 pairs (a final/ gathered wrongly from the shards would score differently).
    from rlhf.recipe import load_recipe
    from rlhf.rewards.scoring import preference_scores, summarize_preferences
    from rlhf.stages.hf_trainer import load_dataset

    reward_results = results(run_dir / "reward")
    pairs = list(load_dataset(load_recipe(run_dir / "reward" / "recipe.yaml").data, "preferences", "eval"))
    assert reward_results["eval_pairs"] == len(pairs) == 32
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "reward" / "final")
    again = summarize_preferences(*preference_scores(reward.eval(), tokenizer, pairs))
    assert reward_results["eval_accuracy"] == pytest.approx(again["accuracy"], abs=1 / 64)  # at most half a pair
    assert reward_results["eval_margin_mean"] == pytest.approx(again["margin_mean"], rel=1e-3, abs=1e-5)
