"""The reward stage: a one-logit classifier that prefers on-voice replies, built on the sft stage's output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlhf.artifacts import file_sha256, recipe_hash
from rlhf.pipeline import resolve_references
from rlhf.recipe import load_recipe

from ..conftest import DATA_DIR, PIPELINE, SHORT_RUN

pytestmark = pytest.mark.slow

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


def test_held_out_preference_accuracy(manifest):
    results = manifest["results"]
    assert results["eval_pairs"] == 100
    assert results["eval_accuracy"] >= 0.90
    assert results["eval_margin_mean"] > 0
    assert results["eval_chosen_mean"] > results["eval_rejected_mean"]
    assert math.isfinite(results["train_loss"]) and results["steps"] == 20


def test_final_scores_an_on_voice_reply_above_an_off_voice_one(reward_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.scoring import render, reward_scores

    model = AutoModelForSequenceClassification.from_pretrained(reward_dir / "final").eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_dir / "final")
    assert model.config.num_labels == 1
    assert model.config.pad_token_id == tokenizer.pad_token_id
    texts = [render(tokenizer, PROMPT, reply) for reply in (ON_VOICE, OFF_VOICE)]
    on_voice, off_voice = reward_scores(model, tokenizer, texts).tolist()
    assert on_voice > off_voice


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
