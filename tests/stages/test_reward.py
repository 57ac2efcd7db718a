"""The reward stage: a one-logit classifier that prefers on-voice, on-content replies, built on the sft stage's output.

The held-out set's first 100 pairs (the short run's `max_eval_rows`) hold 20 pairs of each category."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlhf.artifacts import file_sha256, recipe_hash
from rlhf.config import DataConfig
from rlhf.pipeline import resolve_references
from rlhf.recipe import load_recipe
from rlhf.stages.reward import eval_labels

from ..conftest import CATEGORIES, DATA_DIR, PIPELINE, SHORT_RUN

PROMPT = [
    {
        "role": "user",
        "content": "Hi, the zip on my Summit daypack broke on the first hike. Can you help? Thanks, Sam",
    }
]
ON_VOICE = (
    "Hi Sam,\nI'm sorry the zip broke on your first hike. I've sent a replacement daypack today by express post, "
    "and I'll email you a free return label for the old one.\nHappy trails, the Ridgeline team"
)
OFF_VOICE = "Unfortunately, per our policy, damage is not our fault. Please be advised to open an RMA ticket."


@pytest.fixture(scope="module")
def reward_dir(short_run) -> Path:
    return short_run / "reward"


@pytest.fixture(scope="module")
def manifest(reward_dir) -> dict:
    return json.loads((reward_dir / "manifest.json").read_text())


@pytest.mark.slow
def test_held_out_preference_accuracy(manifest):
    results = manifest["results"]
    assert results["eval_pairs"] == 100
    # Above chance overall; the voice pairs (listed rules, learned first) are separated well even by a short run.
    assert results["eval_accuracy"] > 0.5
    assert results["eval_margin_mean"] > 0
    assert results["eval_chosen_mean"] > results["eval_rejected_mean"]
    assert results["accuracy_by_category"]["voice"]["accuracy"] >= 0.8
    assert math.isfinite(results["train_loss"]) and results["steps"] == 20


@pytest.mark.slow
def test_held_out_accuracy_is_reported_per_category(manifest, reward_dir):
    results = manifest["results"]
    by_category = results["accuracy_by_category"]
    assert set(by_category) == CATEGORIES
    assert all(found["n"] == 20 for found in by_category.values())
    assert all(0.0 <= found["accuracy"] <= 1.0 and math.isfinite(found["margin"]) for found in by_category.values())
    # The categories partition the held-out pairs, so their pair-weighted means are the overall numbers.
    overall = sum(found["accuracy"] * found["n"] for found in by_category.values()) / results["eval_pairs"]
    assert overall == pytest.approx(results["eval_accuracy"], abs=1e-6)
    margin = sum(found["margin"] * found["n"] for found in by_category.values()) / results["eval_pairs"]
    assert margin == pytest.approx(results["eval_margin_mean"], abs=1e-4)

    final = [json.loads(line) for line in (reward_dir / "metrics.jsonl").read_text().splitlines()][-1]
    for category, found in by_category.items():
        for key in ("accuracy", "margin", "n"):
            assert final[f"final/eval_category/{category}/{key}"] == pytest.approx(found[key], abs=1e-6)


@pytest.mark.slow
def test_held_out_accuracy_is_reported_per_rule_within_each_category(manifest, reward_dir):
    # Every held-out row names its rule; `category/rule` labels partition each category, so a category's mean is the
    # pair-weighted mean of its rules' (and a rule the proxy cannot see shows under the category that averages it).
    results = manifest["results"]
    by_category, by_rule = results["accuracy_by_category"], results["accuracy_by_rule"]
    assert {label.partition("/")[0] for label in by_rule} == CATEGORIES
    assert {"content/wrong_order", "content/wrong_name", "voice/curt"} <= set(by_rule)
    for category, found in by_category.items():
        rules = [rule for label, rule in by_rule.items() if label.startswith(f"{category}/")]
        assert sum(rule["n"] for rule in rules) == found["n"]
        weighted = sum(rule["accuracy"] * rule["n"] for rule in rules) / found["n"]
        assert weighted == pytest.approx(found["accuracy"], abs=1e-6)
    final = [json.loads(line) for line in (reward_dir / "metrics.jsonl").read_text().splitlines()][-1]
    for label, found in by_rule.items():
        assert final[f"final/eval_rule/{label}/accuracy"] == pytest.approx(found["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_final_scores_an_on_voice_reply_above_an_off_voice_one(reward_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.rewards.scoring import render, reward_scores

    model = AutoModelForSequenceClassification.from_pretrained(reward_dir / "final").eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_dir / "final")
    assert model.config.num_labels == 1
    assert model.config.pad_token_id == tokenizer.pad_token_id
    texts = [render(tokenizer, PROMPT, reply) for reply in (ON_VOICE, OFF_VOICE)]
    on_voice, off_voice = reward_scores(model, tokenizer, texts).tolist()
    assert on_voice > off_voice


@pytest.mark.slow
def test_run_records_its_sft_parent_and_data(reward_dir, manifest, short_run):
    sft_manifest = json.loads((short_run / "sft" / "manifest.json").read_text())
    parent = manifest["parents"]["model"]
    assert parent["stage"] == "sft"
    assert Path(parent["path"]) == short_run / "sft" / "final"
    assert parent["recipe_sha256"] == sft_manifest["recipe_sha256"]
    train, evaluation = DATA_DIR / "prefs_train.jsonl", DATA_DIR / "prefs_eval.jsonl"
    assert manifest["data"] == {str(train): file_sha256(train), str(evaluation): file_sha256(evaluation)}
    rows = [json.loads(line) for line in (reward_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in row for row in rows)

    # recipe.yaml holds the recipe as it ran, with `stage:sft` resolved to the sft stage's final/ directory.
    pipeline = load_recipe(PIPELINE, [f"run_dir={short_run}", *SHORT_RUN])
    written = load_recipe(reward_dir / "recipe.yaml")
    assert written == resolve_references(pipeline.reward, pipeline)
    assert written.model.name_or_path == str(short_run / "sft" / "final")
    assert manifest["recipe_sha256"] == recipe_hash(written)


def test_accuracy_by_category_by_hand():
    import torch

    from rlhf.rewards.scoring import accuracy_by_category

    chosen = torch.tensor([1.0, 2.0, 3.0, 0.0])
    rejected = torch.tensor([0.0, 3.0, 3.0, -1.0])
    found = accuracy_by_category(chosen, rejected, ["a", "a", "b", None])
    # a: one win, one loss, margins +1 and -1; b: a tie counts half; the uncategorised pair is left out.
    assert found == {"a": {"accuracy": 0.5, "margin": 0.0, "n": 2}, "b": {"accuracy": 0.5, "margin": 0.0, "n": 1}}
    assert accuracy_by_category(chosen, rejected, [None] * 4) == {}
    with pytest.raises(ValueError, match="categories"):
        accuracy_by_category(chosen, rejected, ["a"])


def test_eval_labels_follow_the_rows_the_stage_reads(tmp_path):
    rows = [
        {"prompt": "Q1", "chosen": "a", "rejected": "b", "category": "voice", "rule": "curt"},
        {"prompt": "Q2", "chosen": "a", "rejected": "b"},
        {"prompt": "Q3", "chosen": "a", "rejected": "b", "category": "content"},
    ]
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    data = DataConfig(train=str(path), eval=str(path))
    # A rule counts within its category; a row without both has no rule label.
    assert eval_labels(data, 3) == (["voice", None, "content"], ["voice/curt", None, None])
    assert eval_labels(data, 2) == (["voice", None], ["voice/curt", None])  # max_eval_rows keeps the first rows
