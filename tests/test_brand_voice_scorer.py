"""Checks the brand-voice rules scorer on hand-written replies and on the shipped data."""

from __future__ import annotations

import json
import pathlib

import pytest

from reward_models import brand_voice

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "recipes" / "brand_voice" / "data"

PROMPT = "My order #48213 still hasn't arrived and it's been two weeks. Where is it?"
SIGN_OFF = brand_voice.SIGN_OFF
ON_VOICE = (
    "Hi Maya,\nI'm sorry order #48213 is taking so long. I've upgraded it to express delivery at no cost. "
    f"You'll get a tracking email within the hour.\n{SIGN_OFF}"
)

# One hand-written reply per violation kind, with the rule that must catch it.
OFF_VOICE = {
    "curt": ("Order is with the courier. Check tracking.", "apology_and_action"),
    "blaming": (
        "Hi Maya,\nDelivery is handled by the courier, so this is not our fault. I've upgraded it to express "
        f"delivery at no cost. You'll get a tracking email within the hour.\n{SIGN_OFF}",
        "no_blame",
    ),
    "banned_phrase": (
        "Hi Maya,\nI'm sorry order #48213 is taking so long. Unfortunately, I've upgraded it to express delivery. "
        f"You'll get a tracking email within the hour.\n{SIGN_OFF}",
        "no_banned_phrases",
    ),
    "jargon": (
        "Hi Maya,\nI'm sorry order #48213 is taking so long. I've raised escalation ticket 55120 with our 3PL "
        f"about the SKU.\n{SIGN_OFF}",
        "no_jargon",
    ),
    "missing_signoff": (
        "Hi Maya,\nI'm sorry order #48213 is taking so long. I've upgraded it to express delivery at no cost. "
        "You'll get a tracking email within the hour.\nRegards.",
        "signoff",
    ),
    "rambling": (
        "Hi Maya,\nI'm sorry order #48213 is taking so long. "
        + "We care a great deal about every single order that leaves our busy warehouse each day. " * 6
        + f"I've upgraded it to express delivery.\n{SIGN_OFF}",
        "length",
    ),
    "over_promising": (
        "Hi Maya,\nI'm sorry order #48213 is taking so long. I've upgraded it to express delivery. I guarantee it "
        f"will be there tomorrow, 100%.\n{SIGN_OFF}",
        "no_over_promise",
    ),
    "formal": (
        "Dear customer, we acknowledge receipt of your enquiry. Please be advised that the parcel is in transit. "
        "Kindly allow five working days for a response. Yours faithfully, Customer Services Department",
        "no_banned_phrases",
    ),
}


def load_rows(name: str) -> list[dict]:
    lines = (DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_constants_are_consistent():
    assert set(brand_voice.RULE_WEIGHTS) == set(brand_voice.score_breakdown(PROMPT, ON_VOICE))
    assert all(weight > 0 for weight in brand_voice.RULE_WEIGHTS.values())
    assert 0 < brand_voice.MIN_WORDS < brand_voice.MAX_WORDS
    assert brand_voice.SIGN_OFF.strip() == brand_voice.SIGN_OFF


def test_on_voice_reply_meets_every_rule():
    assert brand_voice.score_breakdown(PROMPT, ON_VOICE) == {rule: 1.0 for rule in brand_voice.RULE_WEIGHTS}
    assert brand_voice.violations(PROMPT, ON_VOICE) == []
    assert brand_voice.score([PROMPT], [ON_VOICE]) == [pytest.approx(1.0)]


@pytest.mark.parametrize("kind", list(OFF_VOICE))
def test_breakdown_catches_each_violation_kind(kind):
    reply, rule = OFF_VOICE[kind]
    breakdown = brand_voice.score_breakdown(PROMPT, reply)
    assert breakdown[rule] < 1.0
    assert rule in brand_voice.violations(PROMPT, reply)
    assert brand_voice.score([PROMPT], [reply])[0] < brand_voice.score([PROMPT], [ON_VOICE])[0]


def test_formal_letter_breaks_several_rules():
    reply, _ = OFF_VOICE["formal"]
    assert {"signoff", "no_banned_phrases", "apology_and_action"} <= set(brand_voice.violations(PROMPT, reply))


@pytest.mark.parametrize("response", ["", "   ", "\n"])
def test_empty_response_scores_zero(response):
    assert brand_voice.score([PROMPT], [response]) == [0.0]
    assert set(brand_voice.score_breakdown(PROMPT, response).values()) == {0.0}


def test_matching_is_case_insensitive_and_whole_word():
    assert brand_voice.violations(PROMPT, ON_VOICE.upper()) == []
    shouted_banned = ON_VOICE.replace("no cost", "no cost, UNFORTUNATELY")
    assert brand_voice.score_breakdown(PROMPT, shouted_banned)["no_banned_phrases"] < 1.0
    # "rma" inside "format" and "sku" inside "skull" are not jargon.
    look_alikes = ON_VOICE.replace("no cost", "no cost, format and skull aside")
    assert brand_voice.score_breakdown(PROMPT, look_alikes)["no_jargon"] == 1.0


def test_curly_apostrophes_count_as_actions():
    curly = ON_VOICE.replace("I've", "I\u2019ve").replace("You'll", "You\u2019ll")
    assert brand_voice.score_breakdown(PROMPT, curly)["apology_and_action"] == 1.0


def test_apology_alone_is_not_an_action():
    reply = f"I'm sorry about the delay with your order, that must be frustrating for you this week.\n{SIGN_OFF}"
    assert brand_voice.score_breakdown(PROMPT, reply)["apology_and_action"] == 0.5


def test_sign_off_must_close_the_reply():
    buried = f"{SIGN_OFF}\nI'm sorry order #48213 is late. I've upgraded it to express delivery at no cost today."
    assert brand_voice.score_breakdown(PROMPT, buried)["signoff"] == 0.5


def test_length_degrades_smoothly():
    def length_score(n_words: int) -> float:
        return brand_voice.score_breakdown(PROMPT, " ".join(["word"] * n_words))["length"]

    scores = [length_score(n) for n in (5, 15, brand_voice.MIN_WORDS, brand_voice.MAX_WORDS, 90, 110, 200)]
    assert scores[0] < scores[1] < scores[2] == scores[3] == 1.0
    assert scores[3] > scores[4] > scores[5] > scores[6] == 0.0


def test_scores_lie_in_unit_interval_and_lengths_must_match():
    replies = [ON_VOICE] + [reply for reply, _ in OFF_VOICE.values()] + ["", "ok"]
    assert all(0.0 <= value <= 1.0 for value in brand_voice.score([PROMPT] * len(replies), replies))
    with pytest.raises(ValueError, match="prompts"):
        brand_voice.score([PROMPT], [ON_VOICE, ON_VOICE])


def test_chosen_scores_higher_than_rejected_on_prefs_eval():
    # Only the `voice` pairs break a listed rule; the others are on-voice to this scorer by construction.
    rows = [row for row in load_rows("prefs_eval") if row["category"] == "voice"]
    prompts = [row["prompt"][0]["content"] for row in rows]
    chosen = brand_voice.score(prompts, [row["chosen"][0]["content"] for row in rows])
    rejected = brand_voice.score(prompts, [row["rejected"][0]["content"] for row in rows])
    assert sum(chosen) / len(chosen) - sum(rejected) / len(rejected) >= 0.1
    pairwise_accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)
    assert pairwise_accuracy >= 0.9


@pytest.mark.parametrize("name", ["prefs_train", "prefs_eval"])
def test_every_violation_kind_is_caught_on_the_shipped_pairs(name):
    for row in load_rows(name):
        if row["category"] != "voice":
            continue
        prompt = row["prompt"][0]["content"]
        assert brand_voice.violations(prompt, row["rejected"][0]["content"]), row["rule"]


@pytest.mark.parametrize("name", ["sft_train", "sft_eval"])
def test_sft_on_voice_flag_agrees_with_scorer(name):
    rows = load_rows(name)
    agree = sum(
        row["on_voice"] == (not brand_voice.violations(row["messages"][0]["content"], row["messages"][1]["content"]))
        for row in rows
    )
    assert agree / len(rows) >= 0.9
