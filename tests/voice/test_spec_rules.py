"""The optional spec rules: the greeting (the customer's name when their message gives it), paraphrase lists of
banned phrases, full sentences and per-intent requirements; each validated, scored, rendered and rewritten by
`rlhf voice pairs` into pairs that break it alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlhf.cli import main
from rlhf.voice.guide import render_guide
from rlhf.voice.scorer import compile_voice
from rlhf.voice.spec import VoiceSpecError, load_voice

ROOT = Path(__file__).resolve().parents[2]
BANK = ROOT / "recipes" / "bank_voice"
GREETING = {
    "weight": 0.1,
    "with_name": "Dear {name},",
    "without_name": "Dear customer,",
    "name_pattern": r"(?:Regards, |Thanks, |\. )(?P<name>[A-Z][a-z]+(?: [A-Z][a-z]+)?)$",
}
INTENTS = {
    "weight": 0.1,
    "intents": [
        {"name": "lost_card", "when": ["lost", "stolen", "missing"], "require": ["blocked", "cancelled"]},
        {"name": "address_change", "when": ["moved", "new address"], "require": ["updated", "recorded"]},
    ],
}
NAMED = "I lost my card yesterday. Regards, Anna Patel"
REPLY = (
    "Dear Anna Patel,\nThank you for letting us know. We have blocked the card and a replacement will arrive within "
    "five working days. Please call us if anything looks unfamiliar.\nKind regards, Harbourstone Bank"
)


def _bank(tmp_path: Path, **rules) -> Path:
    data = yaml.safe_load((BANK / "voice.yaml").read_text(encoding="utf-8"))
    for key in ("greeting", "sentences", "intents"):  # the shipped spec uses them; each test adds only its own
        data.pop(key, None)
    for key, value in rules.items():
        if key == "paraphrases":
            data["avoid"][0]["paraphrases"] = value
        else:
            data[key] = value
    path = tmp_path / "voice.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _scorer(tmp_path: Path, **rules):
    return compile_voice(load_voice(_bank(tmp_path, **rules)))


def test_greeting_uses_the_customers_name_when_the_message_gives_it(tmp_path):
    scorer = _scorer(tmp_path, greeting=GREETING)
    assert list(scorer.weights)[:3] == ["signoff", "greeting", "acknowledge_and_act"]
    assert scorer.customer_name(NAMED) == "Anna Patel"
    assert scorer.explain_one(NAMED, REPLY)["greeting"] == 1.0
    assert scorer.explain_one(NAMED, REPLY.replace("Anna Patel", "customer"))["greeting"] == 0.5
    assert scorer.explain_one(NAMED, REPLY.split("\n", 1)[1])["greeting"] == 0.0
    unsigned = "I lost my card yesterday."
    assert scorer.explain_one(unsigned, REPLY.replace("Anna Patel", "customer"))["greeting"] == 1.0
    assert scorer.explain_one(unsigned, REPLY)["greeting"] == 0.0
    assert 'Open with "Dear {name}," when the customer gives their name' in render_guide(scorer.spec)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({"greeting": {**GREETING, "with_name": "Dear valued customer,"}}, "must contain '{name}' exactly once"),
        ({"greeting": {**GREETING, "name_pattern": "Regards, ([A-Z][a-z]+)"}}, "has no group named 'name'"),
        (
            {"greeting": {**GREETING, "without_name": "Hey there,"}},
            "avoid.0.phrases.2: 'hey' (formal_register) matches the greeting 'Hey there,'",
        ),
        ({"greeting": {**GREETING, "salutation": "Dear"}}, "unknown key 'greeting.salutation'"),
    ],
)
def test_bad_greeting_rule_is_refused(tmp_path, rules, expected):
    with pytest.raises(VoiceSpecError) as err:
        load_voice(_bank(tmp_path, **rules))
    assert expected in str(err.value)


def test_a_paraphrase_counts_as_its_phrase(tmp_path):
    scorer = _scorer(tmp_path, paraphrases={"no worries": ["not to worry", "no bother"]})
    once = REPLY.replace("Please call", "No worries, not to worry. Please call")
    twice = REPLY.replace("Please call", "No worries, no problem. Please call")
    assert scorer.explain_one(NAMED, once)["formal_register"] == 0.5  # one phrase said two ways
    assert scorer.explain_one(NAMED, twice)["formal_register"] == 0.0  # two phrases
    assert scorer.violations(NAMED, REPLY.replace("Please call", "No bother. Please call")) == ["formal_register"]
    assert '"no worries" (or "not to worry" or "no bother")' in render_guide(scorer.spec)


@pytest.mark.parametrize(
    ("paraphrases", "expected"),
    [
        ({"no wories": ["not to worry"]}, "paraphrases.no wories: 'no wories' is not one of the rule's phrases"),
        ({"no worries": ["no problem"]}, "'no problem' is already a phrase of the rule"),
        (
            {"no worries": ["kind regards"]},
            "avoid.0.paraphrases.0: 'kind regards' (formal_register) matches the sign-off",
        ),
    ],
)
def test_bad_paraphrases_are_refused(tmp_path, paraphrases, expected):
    with pytest.raises(VoiceSpecError) as err:
        load_voice(_bank(tmp_path, paraphrases=paraphrases))
    assert expected in str(err.value)


def test_full_sentences_rule_scores_fragments_and_unfinished_lines(tmp_path):
    scorer = _scorer(tmp_path, sentences={"weight": 0.1, "min_words": 3})
    assert scorer.explain_one(NAMED, REPLY)["full_sentences"] == 1.0  # the greeting and sign-off are not sentences
    fragment = REPLY.replace("Thank you for letting us know.", "Noted.")
    assert scorer.explain_one(NAMED, fragment)["full_sentences"] == pytest.approx(2 / 3)
    unfinished = REPLY.replace("anything looks unfamiliar.", "anything looks unfamiliar")
    assert scorer.explain_one(NAMED, unfinished)["full_sentences"] == pytest.approx(2 / 3)
    assert "at least 3 words" in render_guide(scorer.spec)
    with pytest.raises(VoiceSpecError, match="sentences.min_words: Input should be greater than 0"):
        load_voice(_bank(tmp_path, sentences={"weight": 0.1, "min_words": 0}))


def test_intent_requirements_apply_to_the_intents_the_message_shows(tmp_path):
    scorer = _scorer(tmp_path, intents=INTENTS)
    assert scorer.explain_one(NAMED, REPLY)["intents"] == 1.0
    assert scorer.explain_one(NAMED, REPLY.replace("blocked", "noted"))["intents"] == 0.0
    both = "I moved house and lost my card. Anna Patel"
    assert scorer.explain_one(both, REPLY)["intents"] == 0.5  # the address change is not answered
    assert scorer.explain_one("What is my balance?", REPLY.replace("blocked", "noted"))["intents"] == 1.0
    assert '- lost_card ("lost", "stolen" or "missing" in the message): the reply says "blocked" or "cancelled".' in (
        render_guide(scorer.spec)
    )
    twice = {"weight": 0.1, "intents": [INTENTS["intents"][0], INTENTS["intents"][0]]}
    with pytest.raises(VoiceSpecError, match="intent names must be unique"):
        load_voice(_bank(tmp_path, intents=twice))
    with pytest.raises(VoiceSpecError, match="intents.intents.0.require"):
        load_voice(_bank(tmp_path, intents={"weight": 0.1, "intents": [{"name": "x", "when": ["y"], "require": []}]}))


def test_voice_pairs_teaches_every_optional_rule_one_at_a_time(tmp_path):
    spec = _bank(tmp_path, greeting=GREETING, sentences={"weight": 0.1, "min_words": 3}, intents=INTENTS)
    out = tmp_path / "data"
    assert main(["voice", "pairs", str(spec), str(BANK / "data" / "logs.jsonl"), "--out", str(out)]) == 0
    scorer = compile_voice(load_voice(spec))
    rows = [json.loads(line) for name in ("prefs_train", "prefs_eval") for line in (out / f"{name}.jsonl").open()]
    taught = {row["rule"] for row in rows if row["source"] == "rewrite"}
    assert {"greeting", "full_sentences", "intents"} <= taught, taught
    for row in rows:
        prompt = row["prompt"][0]["content"]
        assert scorer.violations(prompt, row["chosen"][0]["content"]) == []
        assert "+".join(scorer.violations(prompt, row["rejected"][0]["content"])) == row["rule"]
