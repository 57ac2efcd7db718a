"""Checks the shipped brand-voice data: shapes, sizes, ground truth, preference categories, held-out hygiene and that
the generator reproduces it."""

from __future__ import annotations

import collections
import importlib.util
import json
import pathlib
import re
import subprocess
import sys

import pytest

from reward_models import brand_voice

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "recipes" / "brand_voice" / "data"
GENERATOR = REPO_ROOT / "scripts" / "make_brand_voice_data.py"

MIN_ROWS = {
    "sft_train": 1500,
    "sft_eval": 150,
    "prefs_train": 1500,
    "prefs_eval": 300,
    "ppo_prompts": 300,
    "eval_prompts": 100,
}
TRAINING_SPLITS = ("sft_train", "prefs_train", "ppo_prompts")
HELD_OUT_SPLITS = ("sft_eval", "prefs_eval", "eval_prompts")
GENERATED_FILES = [f"{name}.jsonl" for name in MIN_ROWS] + ["voice_guide.md"]
TRUTH = {"intent", "customer_name", "order_id", "product"}
CONTENT_CATEGORIES = ("content", "other_intent")
MIN_EVAL_PER_CATEGORY = 60


def load_generator():
    spec = importlib.util.spec_from_file_location("make_brand_voice_data", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = load_generator()


def load_rows(name: str) -> list[dict]:
    lines = (DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def customer_message(row: dict) -> str:
    turns = row["messages"] if "messages" in row else row["prompt"]
    return turns[0]["content"]


def correct_replies(name: str) -> list[tuple[dict, str]]:
    """(row, reply) for every reply the data presents as right: sft demonstrations and chosen replies."""
    if name.startswith("sft"):
        return [(row, row["messages"][1]["content"]) for row in load_rows(name)]
    return [(row, row["chosen"][0]["content"]) for row in load_rows(name)]


def assert_turns(turns: list, roles: list[str]) -> None:
    assert [turn["role"] for turn in turns] == roles
    for turn in turns:
        assert set(turn) == {"role", "content"}
        assert isinstance(turn["content"], str) and turn["content"].strip()


def contains_word(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", text.lower()) is not None


# Shapes and sizes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MIN_ROWS))
def test_row_counts_meet_minimums(name):
    assert len(load_rows(name)) >= MIN_ROWS[name]


@pytest.mark.parametrize("name", ["sft_train", "sft_eval"])
def test_sft_rows_have_documented_fields(name):
    for row in load_rows(name):
        assert set(row) == {"messages", "on_voice"} | TRUTH
        assert_turns(row["messages"], ["user", "assistant"])
        assert isinstance(row["on_voice"], bool)


@pytest.mark.parametrize("name", ["prefs_train", "prefs_eval"])
def test_preference_rows_have_documented_fields(name):
    for row in load_rows(name):
        assert set(row) == {"prompt", "chosen", "rejected", "category", "rule"} | TRUTH
        assert_turns(row["prompt"], ["user"])
        assert_turns(row["chosen"], ["assistant"])
        assert_turns(row["rejected"], ["assistant"])
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]


@pytest.mark.parametrize("name", ["ppo_prompts", "eval_prompts"])
def test_prompt_rows_have_documented_fields(name):
    for row in load_rows(name):
        assert set(row) == {"prompt"} | TRUTH
        assert_turns(row["prompt"], ["user"])


def test_at_least_ten_intents_appear_in_every_file():
    for name in MIN_ROWS:
        assert len({row["intent"] for row in load_rows(name)}) >= 10, name


def test_texts_are_short_enough_for_a_tiny_model():
    for row in load_rows("sft_train"):
        user, assistant = row["messages"]
        assert 8 <= len(user["content"].split()) <= 40
        assert len(assistant["content"].split()) <= 120


# Ground truth -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MIN_ROWS))
def test_ground_truth_is_recorded_and_matches_the_prompt(name):
    signed = with_order = with_product = 0
    for row in load_rows(name):
        text = customer_message(row)
        assert row["intent"] in GEN.INTENTS
        name_, order_id, product = row["customer_name"], row["order_id"], row["product"]
        if name_ is not None:
            signed += 1
            assert name_ in GEN.NAMES and contains_word(text, name_), (name_, text)
        if order_id is not None:
            with_order += 1
            assert re.fullmatch(r"\d{5}", order_id) and order_id in text, (order_id, text)
        else:
            assert not re.search(r"#\d{5}", text), text  # an order number in the text is always recorded
        if product is not None:
            with_product += 1
            assert product.lower() in text.lower(), (product, text)
    n = len(load_rows(name))
    # Every kind of fact is present in a real share of rows and absent in another, so judges see both cases.
    for count in (signed, with_order, with_product):
        assert 0.2 * n <= count <= 0.9 * n, name


def test_every_intent_key_is_used_and_no_other():
    intents = {row["intent"] for name in MIN_ROWS for row in load_rows(name)}
    assert intents == set(GEN.INTENTS)


@pytest.mark.parametrize("name", ["sft_train", "sft_eval", "prefs_train", "prefs_eval"])
def test_correct_replies_greet_the_signed_name_and_never_invent_one(name):
    for row, reply in correct_replies(name):
        greeting = reply.split("\n", 1)[0]
        if row["customer_name"]:
            assert greeting == f"Hi {row['customer_name']},", (row["customer_name"], reply)
        else:
            assert greeting in GEN.UNSIGNED_GREETINGS, reply
        assert not [n for n in GEN.NAMES if n != row["customer_name"] and contains_word(greeting, n)], reply


@pytest.mark.parametrize("name", ["sft_train", "sft_eval", "prefs_train", "prefs_eval"])
def test_correct_replies_repeat_the_order_number_and_product(name):
    for row, reply in correct_replies(name):
        if row["order_id"]:
            assert f"#{row['order_id']}" in reply, reply
        if row["product"]:
            assert row["product"] in reply, reply
        # No other order number or product is mentioned.
        assert set(re.findall(r"#(\d{5})", reply)) <= {row["order_id"]}, reply
        others = {p for p, *_ in GEN.PRODUCTS + GEN.SIZED_PRODUCTS} - {row["product"]}
        assert not [p for p in others if p in reply], reply


# Preference categories ----------------------------------------------------------------------------------------------


def both_on_voice(row: dict) -> bool:
    prompt = customer_message(row)
    return not brand_voice.violations(prompt, row["chosen"][0]["content"]) and not brand_voice.violations(
        prompt, row["rejected"][0]["content"]
    )


def test_at_least_thirty_percent_of_training_pairs_are_content_pairs_with_both_replies_on_voice():
    rows = load_rows("prefs_train")
    content = [row for row in rows if row["category"] in CONTENT_CATEGORIES]
    assert all(both_on_voice(row) for row in content)
    assert len(content) / len(rows) >= 0.30


def test_held_out_set_has_every_category_with_minimum_counts():
    rows = load_rows("prefs_eval")
    counts = collections.Counter(row["category"] for row in rows)
    assert set(counts) == set(GEN.EVAL_CATEGORIES)
    assert min(counts.values()) >= MIN_EVAL_PER_CATEGORY
    # Categories rotate, so the first 100 rows (the test suite's short run) already hold every category.
    assert set(row["category"] for row in rows[:100]) == set(GEN.EVAL_CATEGORIES)


def test_training_pairs_cover_voice_paraphrase_and_content_categories():
    counts = collections.Counter(row["category"] for row in load_rows("prefs_train"))
    assert set(counts) == {"voice", "paraphrase", "content", "other_intent"}
    # A sixth of the file is enough for voice (held-out voice accuracy 1.00 measured at this share, issue 11).
    assert counts["voice"] + counts["paraphrase"] >= 0.15 * sum(counts.values())


@pytest.mark.parametrize("name", ["prefs_train", "prefs_eval"])
def test_rules_belong_to_their_category_and_are_balanced(name):
    by_category = collections.defaultdict(collections.Counter)
    for row in load_rows(name):
        by_category[row["category"]][row["rule"]] += 1
        if row["category"] != "length_matched":
            assert row["rule"] in GEN._rules_of(row["category"]), row
    for category, rules in by_category.items():
        if category != "length_matched":
            assert set(rules) == set(GEN._rules_of(category)), category
            assert max(rules.values()) <= 2 * min(rules.values()), (category, rules)
    assert len(by_category["length_matched"]) >= 8 if name == "prefs_eval" else True


@pytest.mark.parametrize("name", ["prefs_train", "prefs_eval"])
def test_chosen_replies_are_on_voice_and_rejected_ones_sit_where_their_category_says(name):
    for row in load_rows(name):
        prompt = customer_message(row)
        assert not brand_voice.violations(prompt, row["chosen"][0]["content"]), row
        rejected_broken = brand_voice.violations(prompt, row["rejected"][0]["content"])
        # Listed voice rules are caught by the scorer; paraphrases and content errors are on-voice to it.
        assert bool(rejected_broken) == (row["rule"] in GEN.VIOLATIONS), (row["rule"], rejected_broken)


@pytest.mark.parametrize("name", ["prefs_train", "prefs_eval"])
def test_content_rules_change_what_they_say(name):
    for row in load_rows(name):
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        rule = row["rule"]
        if rule == "wrong_name":
            greeting = rejected.split("\n", 1)[0]
            assert greeting.startswith("Hi ") and greeting != f"Hi {row['customer_name']},"
            assert chosen.split("\n", 1)[1] == rejected.split("\n", 1)[1]
        elif rule == "wrong_order":
            assert f"#{row['order_id']}" not in rejected and re.search(r"#\d{5}", rejected)
        elif rule == "wrong_product":
            assert row["product"] not in rejected
        elif rule in ("other_intent", "unfit_action", "vague"):
            assert chosen.split("\n")[0] == rejected.split("\n")[0]  # same greeting: only the answer differs


def test_length_matched_pairs_are_within_a_few_words():
    for row in load_rows("prefs_eval"):
        if row["category"] == "length_matched":
            gap = abs(len(row["chosen"][0]["content"].split()) - len(row["rejected"][0]["content"].split()))
            assert gap <= GEN.LENGTH_MATCH_WORDS


def test_held_out_paraphrases_are_not_in_the_training_pairs():
    def sentences(rows: list[dict], key: str) -> set[str]:
        return {s for row in rows for s in re.split(r"(?<=[.!?])\s+|\n", row[key][0]["content"]) if s}

    train = load_rows("prefs_train")
    training = sentences(train, "rejected") | sentences(train, "chosen")
    held = [row for row in load_rows("prefs_eval") if row["category"] == "paraphrase"]
    unseen = sentences(held, "rejected") - sentences(held, "chosen")
    assert unseen
    assert not unseen & training
    # Correct held-out replies also carry on-voice sentences no training reply has, so "unfamiliar" is no cue.
    assert sentences(held, "chosen") - training


# Held-out hygiene and reproducibility -------------------------------------------------------------------------------


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
        messages = collections.Counter(customer_message(row) for row in load_rows(name))
        if name == "prefs_train":
            # Several comparisons per prompt, as in real preference data: the first pass, then one pair per extra
            # category, each pair of a message in a different category.
            assert set(messages.values()) == {1 + len(GEN.EXTRA_TRAIN_CATEGORIES)}
            by_message = collections.defaultdict(list)
            for row in load_rows(name):
                by_message[customer_message(row)].append(row["category"])
            assert all(set(GEN.EXTRA_TRAIN_CATEGORIES) <= set(c) for c in by_message.values())
        else:
            assert max(messages.values()) == 1, name


@pytest.mark.parametrize("name", ["sft_train", "sft_eval"])
def test_about_a_third_of_sft_replies_are_off_voice(name):
    rows = load_rows(name)
    off_voice_share = sum(not row["on_voice"] for row in rows) / len(rows)
    assert 0.25 <= off_voice_share <= 0.45


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


# The loaders and the data doctor ------------------------------------------------------------------------------------


def test_doctor_accepts_the_shipped_pipeline_data_with_its_metadata_columns():
    from rlhf.data.doctor import examine
    from rlhf.recipe import load_recipe

    report = examine(load_recipe(REPO_ROOT / "recipes" / "brand_voice" / "pipeline.yaml"), tokenizers=False)
    assert report.errors == []
    assert report.warnings == []  # no held-out prompt in any training file, no duplicates


@pytest.mark.parametrize(
    ("name", "kind", "fields"),
    [
        ("sft_train", "demonstrations", {"messages"}),
        ("prefs_eval", "preferences", {"prompt", "chosen", "rejected"}),
        ("eval_prompts", "prompts", {"prompt"}),
    ],
)
def test_loaders_read_every_row_and_leave_the_metadata_columns_out(name, kind, fields):
    from rlhf.data.formats import load_records

    records = load_records(str(DATA_DIR / f"{name}.jsonl"), kind)
    assert len(records) == len(load_rows(name))
    assert all(set(record) == fields for record in records)
