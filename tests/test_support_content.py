"""The content judge on hand-written replies, and against the shipped data it must stay independent of."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from reward_models import support_content as sc

DATA_DIR = Path(__file__).resolve().parents[1] / "recipes" / "brand_voice" / "data"

PROMPT = "My order #48213 still hasn't arrived and it's been two weeks. Where is my Summit 2 tent? Thanks, Maya"
INFO = {"intent": "late_order", "customer_name": "Maya", "order_id": "48213", "product": "Summit 2 tent"}
GOOD = (
    "Hi Maya,\nI'm sorry order #48213 is taking so long. I've asked the courier to trace your Summit 2 tent and "
    "I'll email you the tracking link today.\nHappy trails, the Ridgeline team"
)


def rules(response: str, info: dict | None = INFO, prompt: str = PROMPT) -> dict:
    return sc.explain([prompt], [response], None if info is None else [info])[0]


def test_a_right_reply_meets_every_rule():
    assert rules(GOOD) == {
        "intent": 1.0,
        "action": 1.0,
        "name": 1.0,
        "no_invented_name": None,
        "order": 1.0,
        "coherence": 1.0,
    }
    assert sc.score([PROMPT], [GOOD], [INFO]) == [pytest.approx(1.0)]


def test_a_reply_to_another_intent_fails_the_intent_rule():
    other = (
        "Hi Maya,\nSorry you're locked out. I've unlocked your account and sent a password reset link to your "
        "inbox.\nHappy trails, the Ridgeline team"
    )
    assert rules(other)["intent"] == 0.0
    assert rules(other)["action"] == 0.25  # a commitment, but one that belongs to another intent
    assert sc.score([PROMPT], [other], [INFO])[0] < sc.score([PROMPT], [GOOD], [INFO])[0] - 0.3


def test_the_intent_is_inferred_from_the_prompt_without_ground_truth():
    assert sc.infer_intent(PROMPT) == "late_order"
    assert sc.infer_intent("Please cancel order #12345, I bought it by mistake.") == "cancel_order"
    assert sc.infer_intent("I can't log in, the password reset email never arrives.") == "account_login"
    assert sc.infer_intent("Lovely weather today.") is None
    assert rules(GOOD, info=None) == rules(GOOD)


def test_names_right_wrong_missing_and_invented():
    assert rules(GOOD.replace("Hi Maya", "Hi Tom"))["name"] == 0.0
    assert rules(GOOD.replace("Hi Maya", "Hi there"))["name"] == 0.25
    unsigned = PROMPT.removesuffix(" Thanks, Maya")
    unsigned_info = {**INFO, "customer_name": None}
    assert rules(GOOD, unsigned_info, unsigned) == {**rules(GOOD), "name": None, "no_invented_name": 0.0}
    anonymous = GOOD.replace("Hi Maya", "Hi there")
    assert rules(anonymous, unsigned_info, unsigned)["no_invented_name"] == 1.0
    assert sc.signed_name(PROMPT) == "Maya"
    assert sc.signed_name("Where is my tent? - Liam") == "Liam"
    assert sc.signed_name("where is my tent? cheers, liam") == "Liam"
    assert sc.signed_name("Where is my tent? Thank you!") is None
    assert sc.signed_name("I need the tent for a trip this weekend") is None


def test_wrong_order_number_or_product_scores_zero():
    assert rules(GOOD.replace("#48213", "#48231"))["order"] == 0.0
    assert rules(GOOD.replace("Summit 2 tent", "Ridge hiking boots"))["order"] == 0.0
    assert rules(GOOD.replace("your Summit 2 tent", "your boots"))["order"] == 0.0
    assert rules(GOOD.replace("your Summit 2 tent", "your tent"))["order"] == 1.0
    silent = GOOD.replace("order #48213", "your order").replace("your Summit 2 tent", "it")
    assert rules(silent)["order"] == 0.5
    assert rules(GOOD, {**INFO, "order_id": None, "product": None})["order"] == 0.0  # invented number and product
    assert rules("Hi Maya,\nI'm sorry.", {**INFO, "order_id": None, "product": None})["order"] is None


def test_an_action_for_another_intent_next_to_a_fitting_one_halves_the_action_rule():
    mixed = GOOD.replace(" and I'll email you the tracking link today.", ". I've also reset your account password.")
    assert rules(mixed)["action"] == 0.5
    neutral = "Hi Maya,\nI'm sorry about this. I'll look into it and write back.\nHappy trails, the Ridgeline team"
    assert rules(neutral)["action"] == 0.5


def test_sympathy_without_a_concrete_action_fails_the_action_rule():
    vague = "Hi Maya,\nI'm so sorry to hear that. We really understand how you feel.\nHappy trails, the Ridgeline team"
    assert rules(vague)["action"] == 0.0
    assert rules(vague)["intent"] == 0.25  # says nothing about any intent
    assert sc.score([PROMPT], [vague], [INFO])[0] < 0.6


def test_broken_looping_and_truncated_replies_lose_coherence():
    broken = "Hi Maya,\nsorry the the courier. tent it it arrive you'll and I've trace"
    assert rules(broken)["coherence"] < 0.5
    looping = "I've sent it to you today. " * 6
    assert rules(looping)["coherence"] < 0.3
    truncated = GOOD.split("\n")[1].rsplit(".", 1)[0] + " and I'll email you the"
    assert rules(truncated)["coherence"] < 1.0
    assert rules(GOOD)["coherence"] == 1.0


def test_empty_reply_scores_zero():
    assert sc.score([PROMPT], [""], [INFO]) == [0.0]
    assert sc.score([PROMPT], ["   "], None) == [0.0]


def test_rule_weights_cover_explain_and_arguments_are_checked():
    assert set(rules(GOOD)) == set(sc.RULE_WEIGHTS)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        sc.score([PROMPT, PROMPT], [GOOD])
    with pytest.raises(ValueError, match="info rows"):
        sc.score([PROMPT], [GOOD], [])


def test_the_judge_is_not_the_generator():
    """It imports the standard library only (not the data generator, its templates or the voice labeller), and it
    knows the same intent names and products as the generator."""
    import ast
    import importlib.util
    import sys

    tree = ast.parse(Path(sc.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {name.split(".")[0] for name in imported} <= set(sys.stdlib_module_names) | {"__future__"}
    assert isinstance(sc.SHARES_WITH_TRAINING, str) and len(sc.SHARES_WITH_TRAINING) > 40
    path = DATA_DIR.parents[2] / "scripts" / "make_brand_voice_data.py"
    spec = importlib.util.spec_from_file_location("brand_voice_generator", path)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert set(sc.INTENTS) == set(generator.INTENTS)
    products = {p.lower() for p, *_ in [*generator.PRODUCTS, *generator.SIZED_PRODUCTS]}
    assert products <= set(sc.CATALOGUE)


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA_DIR / name).read_text().splitlines()]


def test_intent_inference_on_the_shipped_eval_prompts():
    rows = _rows("eval_prompts.jsonl")
    right = sum(sc.infer_intent(r["prompt"][-1]["content"]) == r["intent"] for r in rows)
    assert right / len(rows) >= 0.9


def test_prefers_the_right_reply_to_an_on_voice_reply_to_another_message():
    """Content pairs built from the shipped pairs: the chosen reply of this prompt against the chosen (on-voice)
    reply of a prompt with another intent. The judge reads the prompt, so it must tell them apart."""
    rows = _rows("prefs_eval.jsonl")
    rng = random.Random(0)
    wins = []
    for row in rows:
        other = rng.choice([r for r in rows if r["intent"] != row["intent"]])
        prompt = row["prompt"][-1]["content"]
        right, wrong = sc.score([prompt, prompt], [row["chosen"][-1]["content"], other["chosen"][-1]["content"]])
        wins.append(1.0 if right > wrong else 0.5 if right == wrong else 0.0)
    assert sum(wins) / len(wins) >= 0.9


CONTENT_RULES = {"other_intent", "wrong_name", "wrong_order", "wrong_product", "unfit_action", "vague"}
"""The `rule` values of preference rows whose rejected reply is wrong on content (both replies on-voice)."""


def test_prefers_chosen_on_the_shipped_content_pairs():
    """On the regenerated data, pairs whose category is about content (both replies on-voice, the rejected one
    wrong on content) must go to the chosen reply far above chance, with the rows' ground truth as info."""
    rows = _rows("prefs_eval.jsonl")
    content = [r for r in rows if r.get("rule") in CONTENT_RULES]
    if not content:
        pytest.skip("prefs_eval.jsonl has no content rules yet (the data regeneration of issue 11 adds them)")
    columns = ("intent", "customer_name", "order_id", "product")
    wins = []
    for row in content:
        prompt = row["prompt"][-1]["content"] if isinstance(row["prompt"], list) else row["prompt"]
        info = {key: row[key] for key in columns if key in row}
        chosen = row["chosen"][-1]["content"] if isinstance(row["chosen"], list) else row["chosen"]
        rejected = row["rejected"][-1]["content"] if isinstance(row["rejected"], list) else row["rejected"]
        right, wrong = sc.score([prompt, prompt], [chosen, rejected], [info, info])
        wins.append(1.0 if right > wrong else 0.5 if right == wrong else 0.0)
    assert sum(wins) / len(wins) >= 0.9, f"{sum(wins) / len(wins):.3f} over {len(wins)} content pairs"


def test_a_reply_cut_off_after_the_greeting_is_not_a_sign_off():
    assert rules("Hi Maya,\nI'm sorry order")["coherence"] == 0.5  # the greeting passes, the cut-off line does not
    assert rules("Hi Maya,\nI've sent a new tent today.\nHappy trails, the team")["coherence"] == 1.0


def test_garbled_tokens_make_a_sentence_malformed():
    assert rules("Hi Maya,\nI've sent it to65 now.\nHappy trails, the team")["coherence"] < 1.0
    assert rules("Hi Maya,\nI've checked it and isn'tHi done.\nHappy trails, the team")["coherence"] < 1.0
    assert rules("Hi Maya,\nI've sent code SPRING20 for the Daypack 22L on the 3rd.\nHappy trails")["coherence"] == 1.0


def test_cue_words_in_word_salad_are_no_evidence_of_the_intent():
    salad = "ootntil courierTracking delayed parcelxx4 trace waitingQ late to65 express"
    assert rules(salad)["intent"] == 0.25
    assert rules(GOOD + "\nootntil courierTracking to65")["intent"] == 1.0  # the readable sentences still count


def test_a_case_or_ticket_reference_is_not_read_as_a_wrong_order_number():
    with_case = GOOD.replace("today.", "today. Your case ID is 733415 if you need to quote it.")
    assert rules(with_case)["order"] == 1.0
    wrong = GOOD.replace("#48213", "#48219")
    assert rules(wrong)["order"] == 0.0
