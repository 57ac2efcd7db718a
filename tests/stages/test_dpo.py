"""The dpo stage on the shipped preference data, from the shared short run's sft model (embedded:base).

The shortened run's held-out pairs are the first 50 of prefs_eval.jsonl (10 of each category). Before training the
policy is its reference, so every implicit reward is 0: accuracy 0.5 (ties count half) and margin 0; the test checks
that the trained model separates the held-out pairs and that its outputs load back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from rlhf.config import DPOStage
from rlhf.recipe import RecipeError, load_recipe

from ..conftest import CATEGORIES, DATA_DIR, PIPELINE, REPO_ROOT

SHORT_DPO = [
    "stages=[dpo]",
    "tracking.report_to=[none]",
    "dpo.model.name_or_path=stage:sft",
    "dpo.data.train=data/prefs_train.jsonl",
    "dpo.data.eval=data/prefs_eval.jsonl",
    "dpo.data.max_train_rows=96",
    "dpo.data.max_eval_rows=50",
    "dpo.training.learning_rate=5.0e-5",
    "dpo.training.max_steps=12",
    "dpo.training.batch_size=8",
    "dpo.training.logging_steps=4",
    "dpo.training.eval_steps=1000",
    "dpo.training.save_steps=null",
]


@pytest.fixture(scope="module")
def dpo_dir(short_run) -> Path:
    from rlhf.pipeline import run_recipe

    run_recipe(load_recipe(PIPELINE, [f"run_dir={short_run}", *SHORT_DPO]))
    return short_run / "dpo"


@pytest.fixture(scope="module")
def manifest(dpo_dir) -> dict:
    return json.loads((dpo_dir / "manifest.json").read_text())


@pytest.mark.slow
def test_held_out_preferences_separate_after_training(manifest):
    results = manifest["results"]
    assert results["steps"] == 12 and math.isfinite(results["train_loss"])
    assert results["eval_pairs"] == 50
    # From 0.5 and 0 (policy = reference) to the chosen reply above the rejected one on held-out pairs.
    assert results["eval_accuracy"] > 0.55
    assert results["eval_margin_mean"] > 0
    assert results["eval_chosen_mean"] > results["eval_rejected_mean"]
    # The DPO loss starts at log 2 (all margins 0) and falls on the held-out pairs.
    assert results["eval_loss_end"] < math.log(2)


@pytest.mark.slow
def test_held_out_accuracy_is_reported_per_category(manifest, dpo_dir):
    results = manifest["results"]
    by_category = results["accuracy_by_category"]
    assert set(by_category) == CATEGORIES and all(found["n"] == 10 for found in by_category.values())
    overall = sum(found["accuracy"] * found["n"] for found in by_category.values()) / results["eval_pairs"]
    assert overall == pytest.approx(results["eval_accuracy"], abs=1e-6)
    final = [json.loads(line) for line in (dpo_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["final/eval_category/voice/accuracy"] == pytest.approx(by_category["voice"]["accuracy"], abs=1e-6)
    # and per rule within each category, as the reward stage reports it
    by_rule = results["accuracy_by_rule"]
    assert sum(found["n"] for label, found in by_rule.items() if label.startswith("content/")) == 10
    assert final["final/eval_rule/content/wrong_order/n"] == by_rule["content/wrong_order"]["n"]


@pytest.mark.slow
def test_outputs_follow_the_contract(dpo_dir, manifest, short_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(dpo_dir / "final")
    tokenizer = AutoTokenizer.from_pretrained(dpo_dir / "final")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where is my order?"}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids.shape[1]

    assert manifest["stage"] == "dpo"
    assert manifest["parents"]["model"]["stage"] == "sft"
    assert Path(manifest["parents"]["model"]["path"]) == short_run / "sft" / "final"
    train, evaluation = DATA_DIR / "prefs_train.jsonl", DATA_DIR / "prefs_eval.jsonl"
    assert set(manifest["data"]) == {str(train), str(evaluation)}
    written = load_recipe(dpo_dir / "recipe.yaml")
    assert isinstance(written, DPOStage) and written.model.name_or_path == str(short_run / "sft" / "final")
    rows = [json.loads(line) for line in (dpo_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [row for row in rows if "loss" in row]
    assert logged and all("rewards/margins" in row and "rewards/accuracies" in row for row in logged)


def test_recipe_checks(tmp_path):
    base = {
        "stage": "dpo",
        "output_dir": str(tmp_path / "out"),
        "data": {"train": str(DATA_DIR / "prefs_train.jsonl")},
    }

    def load(**extra) -> DPOStage:
        path = tmp_path / "dpo.yaml"
        path.write_text(yaml.safe_dump({**base, **extra}))
        return load_recipe(path)

    cfg = load()
    assert (cfg.beta, cfg.loss_type) == (0.1, "sigmoid")
    assert load(loss_type="ipo", beta=0.5).loss_type == "ipo"
    with pytest.raises(RecipeError, match="loss_type"):
        load(loss_type="ppo")
    with pytest.raises(RecipeError, match="margin_from_scores applies to the reward stage"):
        load(data={**base["data"], "margin_from_scores": 1.0})
    # In a pipeline dpo may only build on an earlier stage.
    with pytest.raises(RecipeError, match="'ppo' is not an earlier stage"):
        load_recipe(
            PIPELINE, ["run_dir=runs/x", "dpo.model.name_or_path=stage:ppo", "dpo.data.train=data/prefs_train.jsonl"]
        )


def test_plan_counts_the_reference_unless_lora(tmp_path):
    from rlhf.planner import LaunchSpec, plan_recipe

    launch = LaunchSpec.from_file(REPO_ROOT / "recipes" / "launch" / "single.yaml")
    overrides = [
        "run_dir=runs/x",
        "stages=[sft,dpo]",
        "dpo.model.name_or_path=stage:sft",
        "dpo.data.train=data/prefs_train.jsonl",
    ]
    full = plan_recipe(load_recipe(PIPELINE, overrides), launch, "cpu")
    lora = plan_recipe(load_recipe(PIPELINE, [*overrides, "dpo.model.lora.r=8"]), launch, "cpu")
    assert [p.stage for p in full] == ["sft", "dpo"]
    assert [m.role for m in full[1].models] == ["policy", "ref_policy"]
    assert [m.role for m in lora[1].models] == ["policy"]
    assert lora[1].total < full[1].total


@pytest.mark.slow
def test_lora_run_resumes_exactly_with_the_adapter_off_as_reference(tmp_path):
    import shutil

    from peft import AutoPeftModelForCausalLM
    from safetensors.torch import load_file

    from rlhf.checkpoint import MARKER
    from rlhf.cli import main

    out = tmp_path / "dpo"
    recipe = {
        "stage": "dpo",
        "seed": 5,
        "output_dir": str(out),
        "model": {"name_or_path": "embedded:tiny", "lora": {"r": 4, "alpha": 8}},
        "data": {
            "train": str(DATA_DIR / "prefs_train.jsonl"),
            "eval": str(DATA_DIR / "prefs_eval.jsonl"),
            "max_length": 128,
            "max_prompt_length": 64,
            "max_train_rows": 16,
            "max_eval_rows": 8,
        },
        "training": {"learning_rate": 5.0e-3, "max_steps": 4, "batch_size": 2, "logging_steps": 1, "save_steps": 2},
        "tracking": {"report_to": ["none"]},
    }
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path)]) == 0
    expected = load_file(str(out / "final" / "adapter_model.safetensors"))
    results = json.loads((out / "manifest.json").read_text())["results"]
    # The reference is the adapter turned off: the trained adapter moves the implicit rewards away from 0.
    assert (
        results["eval_pairs"] == 8 and results["eval_chosen_mean"] != 0 and math.isfinite(results["eval_margin_mean"])
    )
    assert AutoPeftModelForCausalLM.from_pretrained(out / "final") is not None

    # The state a kill after checkpoint-2 leaves: a later checkpoint without its marker, no final/, no manifest.
    (out / "checkpoints" / "checkpoint-4" / MARKER).unlink()
    shutil.rmtree(out / "final")
    (out / "manifest.json").unlink()
    assert main(["run", str(path)]) == 0
    assert json.loads((out / "manifest.json").read_text())["results"]["resumed_from_step"] == 2
    resumed = load_file(str(out / "final" / "adapter_model.safetensors"))
    assert expected.keys() == resumed.keys() and all((expected[k] == resumed[k]).all() for k in expected)
