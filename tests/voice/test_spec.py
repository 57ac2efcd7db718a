"""The voice spec and its compiler: Ridgeline's spec reproduces the old hand-written scorer exactly, renders the
shipped guide, and malformed or self-contradicting specs are refused with the key to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reward_models import brand_voice
from rlhf.voice.guide import render_guide
from rlhf.voice.scorer import compile_voice, load_scorer
from rlhf.voice.spec import VoiceSpecError, load_voice
from tests.voice import frozen_brand_voice as frozen

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "recipes" / "brand_voice" / "voice.yaml"
DATA = ROOT / "recipes" / "brand_voice" / "data"


def _shipped_replies() -> list[tuple[str, str]]:
    """(prompt, reply) for every reply in the shipped SFT and preference files, chosen and rejected."""
    pairs = []
    for name in ("sft_train", "sft_eval"):
        for line in (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            messages = json.loads(line)["messages"]
            pairs.append((messages[0]["content"], messages[1]["content"]))
    for name in ("prefs_train", "prefs_eval"):
        for line in (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            prompt = row["prompt"][0]["content"]
            pairs += [(prompt, row["chosen"][0]["content"]), (prompt, row["rejected"][0]["content"])]
    return pairs


def test_compiled_spec_reproduces_the_old_scorer_exactly_on_every_shipped_reply():
    pairs = _shipped_replies()
    assert len(pairs) > 5000
    prompts, replies = [p for p, _ in pairs], [r for _, r in pairs]
    scorer = load_scorer(SPEC)
    assert scorer.score(prompts, replies) == frozen.score(prompts, replies)  # exact floats, not approx
    assert [scorer.violations(p, r) for p, r in pairs] == [frozen.violations(p, r) for p, r in pairs]
    assert scorer.explain(prompts[:50], replies[:50]) == [frozen.score_breakdown(p, r) for p, r in pairs[:50]]
    # the scores are not all alike: the comparison above covers on- and off-voice replies of every rule
    assert {rule for p, r in pairs for rule in frozen.violations(p, r)} == set(frozen.RULE_WEIGHTS)


def test_shim_keeps_every_public_name_with_the_old_values():
    for name in (
        "COMPANY",
        "SIGN_OFF",
        "MIN_WORDS",
        "MAX_WORDS",
        "BANNED_PHRASES",
        "JARGON",
        "BLAME_PHRASES",
        "OVER_PROMISES",
        "ACKNOWLEDGEMENTS",
        "RULE_WEIGHTS",
        "SHARES_WITH_TRAINING",
    ):
        assert getattr(brand_voice, name) == getattr(frozen, name), name
    edge = ["", "   ", "I’m sorry, I've sent it. " + frozen.SIGN_OFF, "RMA format skull " * 30]
    assert brand_voice.score(edge, edge) == frozen.score(edge, edge)
    assert [brand_voice.score_breakdown(e, e) for e in edge] == [frozen.score_breakdown(e, e) for e in edge]
    assert not hasattr(brand_voice, "explain")  # see the module docstring: compare's failures judge stays content
    with pytest.raises(ValueError, match="2 responses"):
        brand_voice.score(["p"], ["a", "b"])


def test_guide_rendered_from_the_spec_equals_the_shipped_guide():
    assert render_guide(load_voice(SPEC)) == (DATA / "voice_guide.md").read_text(encoding="utf-8")


def _spec_with(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "voice.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(sign_of=d.pop("sign_off")), "unknown key 'sign_of' (did you mean 'sign_off'?)"),
        (
            lambda d: d["length"].update(max_word=d["length"].pop("max_words")),
            "unknown key 'length.max_word' (did you mean 'length.max_words'?)",
        ),
        (
            lambda d: d["avoid"][1].update(phrase=["x"]),
            "unknown key 'avoid.1.phrase' (did you mean 'avoid.1.phrases'?)",
        ),
        (lambda d: d["structure"]["steps"][1].update(patterns=["(unclosed"]), "not a valid regular expression"),
        (lambda d: d["sign_off"].update(weight=0), "sign_off.weight: Input should be greater than 0"),
        (lambda d: d["guide"].update(never_say=["no_jargon"]), "guide.never_say must list every avoid rule once"),
    ],
)
def test_malformed_spec_is_refused_naming_the_key(tmp_path, edit, expected):
    path = _spec_with(tmp_path, edit)
    with pytest.raises(VoiceSpecError) as err:
        load_voice(path)
    assert expected in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["avoid"][0]["phrases"].append("happy trails"),
            "avoid.0.phrases.12: 'happy trails' (no_banned_phrases) matches the sign-off",
        ),
        (lambda d: d["avoid"][2].update(patterns=["ridgeline"]), "avoid.2.patterns.0: 'ridgeline' (no_blame)"),
        (lambda d: d["length"].update(min_words=80), "length.min_words (80) is above length.max_words (70)"),
    ],
)
def test_self_contradicting_spec_is_refused(tmp_path, edit, expected):
    with pytest.raises(VoiceSpecError, match="not a valid voice spec") as err:
        load_voice(_spec_with(tmp_path, edit))
    assert expected in str(err.value)


def test_spec_patterns_and_steps_are_scored(tmp_path):
    def bank(d):
        d["avoid"].append({"name": "no_exclamation", "weight": 0.5, "label": "Exclamation marks", "patterns": ["!"]})
        d["guide"]["never_say"].append("no_exclamation")
        d["structure"]["steps"].append({"name": "next_step", "phrases": ["you will"]})

    scorer = compile_voice(load_voice(_spec_with(tmp_path, bank)))
    reply = "Thanks for writing! I've sent it. You will hear back today. Thanks! " + "fine " * 20 + brand_voice.SIGN_OFF
    rules = scorer.explain_one("p", reply)
    assert rules["no_exclamation"] == 0.5  # two '!' are one distinct offending match
    assert rules["apology_and_action"] == 1.0 and list(rules)[-1] == "length"
    calmer = scorer.explain_one("p", reply.replace("!", ".").replace("You will", "Then"))
    assert calmer["no_exclamation"] == 1.0 and calmer["apology_and_action"] == pytest.approx(2 / 3)
    assert "Exclamation marks: `!`." in render_guide(scorer.spec)


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*/voice.yaml")), ids=lambda p: p.parent.name)
def test_every_shipped_voice_spec_loads_and_compiles(path):
    scorer = load_scorer(path)
    assert scorer.score(["hi"], [scorer.spec.sign_off.text])[0] > 0


def test_unreadable_spec_files_are_refused_like_recipes(tmp_path):
    # The spec is read by the recipe loader's own reader: the same messages, byte and line for non-UTF-8 text.
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(SPEC.read_bytes().replace(b"company: Ridgeline", b"company: Ridgel\xefne", 1))
    with pytest.raises(VoiceSpecError, match=r"latin1.yaml is not UTF-8 text \(byte 0xef on line \d+\)"):
        load_voice(latin1)
    with pytest.raises(VoiceSpecError, match="voice spec not found"):
        load_voice(tmp_path / "missing.yaml")
    listed = tmp_path / "listed.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(VoiceSpecError, match="must hold a mapping"):
        load_voice(listed)
