"""Checks the shipped brand-voice data: shapes, sizes, held-out hygiene and that the generator reproduces it."""

from __future__ import annotations

import collections
import json
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "recipes" / "brand_voice" / "data"
GENERATOR = REPO_ROOT / "scripts" / "make_brand_voice_data.py"

MIN_ROWS = {
    "sft_train": 1500,
    "sft_eval": 150,
    "prefs_train": 1500,
    "prefs_eval": 200,
    "ppo_prompts": 300,
    "eval_prompts": 100,
}
TRAINING_SPLITS = ("sft_train", "prefs_train", "ppo_prompts")
HELD_OUT_SPLITS = ("sft_eval", "prefs_eval", "eval_prompts")
GENERATED_FILES = [f"{name}.jsonl" for name in MIN_ROWS] + ["voice_guide.md"]


def load_rows(name: str) -> list[dict]:
    lines = (DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def customer_message(row: dict) -> str:
    turns = row["messages"] if "messages" in row else row["prompt"]
    return turns[0]["content"]


def assert_turns(turns: list, roles: list[str]) -> None:
    assert [turn["role"] for turn in turns] == roles
    for turn in turns:
        assert set(turn) == {"role", "content"}
        assert isinstance(turn["content"], str) and turn["content"].strip()


@pytest.mark.parametrize("name", list(MIN_ROWS))
def test_row_counts_meet_minimums(name):
    assert len(load_rows(name)) >= MIN_ROWS[name]


@pytest.mark.parametrize("name", ["sft_train", "sft_eval"])
def test_sft_rows_have_documented_fields(name):
    for row in load_rows(name):
        assert set(row) == {"messages", "intent", "on_voice"}
        assert_turns(row["messages"], ["user", "assistant"])
        assert isinstance(row["on_voice"], bool)
        assert isinstance(row["intent"], str) and row["intent"]


@pytest.mark.parametrize("name", ["prefs_train", "prefs_eval"])
def test_preference_rows_have_documented_fields(name):
    for row in load_rows(name):
        assert set(row) == {"prompt", "chosen", "rejected", "intent", "violation"}
        assert_turns(row["prompt"], ["user"])
        assert_turns(row["chosen"], ["assistant"])
        assert_turns(row["rejected"], ["assistant"])
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]


@pytest.mark.parametrize("name", ["ppo_prompts", "eval_prompts"])
def test_prompt_rows_have_documented_fields(name):
    for row in load_rows(name):
        assert set(row) == {"prompt", "intent"}
        assert_turns(row["prompt"], ["user"])


def test_at_least_ten_intents_appear_in_every_file():
    for name in MIN_ROWS:
        assert len({row["intent"] for row in load_rows(name)}) >= 10, name


def test_every_customer_message_is_in_exactly_one_file():
    owners = collections.defaultdict(set)
    for name in MIN_ROWS:
        for row in load_rows(name):
            owners[customer_message(row)].add(name)
    shared = {message: files for message, files in owners.items() if len(files) > 1}
    assert not shared, f"{len(shared)} messages appear in several files, e.g. {next(iter(shared.items()))}"


def test_held_out_splits_share_no_message_with_training_splits():
    training = {customer_message(row) for name in TRAINING_SPLITS for row in load_rows(name)}
    for name in HELD_OUT_SPLITS:
        assert not training & {customer_message(row) for row in load_rows(name)}, name


def test_customer_messages_are_unique_within_each_file():
    for name in MIN_ROWS:
        messages = [customer_message(row) for row in load_rows(name)]
        assert len(messages) == len(set(messages)), name


@pytest.mark.parametrize("name", ["sft_train", "sft_eval"])
def test_about_a_third_of_sft_replies_are_off_voice(name):
    rows = load_rows(name)
    off_voice_share = sum(not row["on_voice"] for row in rows) / len(rows)
    assert 0.25 <= off_voice_share <= 0.45


@pytest.mark.parametrize("name", ["prefs_train", "prefs_eval"])
def test_rejected_replies_break_the_voice_in_balanced_ways(name):
    counts = collections.Counter(row["violation"] for row in load_rows(name))
    assert len(counts) >= 6
    assert max(counts.values()) <= 2 * min(counts.values())


def test_texts_are_short_enough_for_a_tiny_model():
    for row in load_rows("sft_train"):
        user, assistant = row["messages"]
        assert 8 <= len(user["content"].split()) <= 40
        assert len(assistant["content"].split()) <= 120


def test_generator_is_deterministic_and_matches_committed_files(tmp_path):
    outputs = []
    for run in ("first", "second"):
        out = tmp_path / run
        subprocess.run(
            [sys.executable, str(GENERATOR), "--seed", "0", "--out", str(out)], check=True, capture_output=True
        )
        outputs.append(out)
    for file_name in GENERATED_FILES:
        first = (outputs[0] / file_name).read_bytes()
        assert first == (outputs[1] / file_name).read_bytes(), f"{file_name} differs between two runs"
        assert first == (DATA_DIR / file_name).read_bytes(), (
            f"committed {file_name} is stale: rerun python scripts/make_brand_voice_data.py"
        )


def test_generator_output_depends_on_seed(tmp_path):
    subprocess.run(
        [sys.executable, str(GENERATOR), "--seed", "1", "--out", str(tmp_path)], check=True, capture_output=True
    )
    assert (tmp_path / "sft_train.jsonl").read_bytes() != (DATA_DIR / "sft_train.jsonl").read_bytes()
