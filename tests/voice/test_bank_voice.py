"""The second brand, Harbourstone Bank: its shipped logs come from the seeded generator, its shipped data files are
exactly what `rlhf voice pairs` makes of those logs, no PII survives in them, and its judge follows its spec."""

from __future__ import annotations

import filecmp
import json
import re
import subprocess
import sys
from pathlib import Path

from reward_models import brand_voice
from rlhf.cli import main
from rlhf.voice.scorer import load_scorer

ROOT = Path(__file__).resolve().parents[2]
BANK = ROOT / "recipes" / "bank_voice"
DATA_FILES = ["sft_train", "sft_eval", "prefs_train", "prefs_eval", "ppo_prompts", "eval_prompts"]


def test_shipped_logs_and_guide_are_the_seeded_generator_output(tmp_path):
    script = ROOT / "scripts" / "make_bank_voice_logs.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("logs.jsonl", "voice_guide.md"):
        assert filecmp.cmp(tmp_path / name, BANK / "data" / name, shallow=False), name


def test_shipped_data_is_what_voice_pairs_makes_of_the_logs(tmp_path, capsys):
    spec, logs = BANK / "voice.yaml", BANK / "data" / "logs.jsonl"
    # the command the bank recipe documents (its pairs stage makes the same files: test_pairs_stage.py)
    assert main(["voice", "pairs", str(spec), str(logs), "--out", str(tmp_path), "--held-out-share", "0.2"]) == 0
    for name in [*DATA_FILES, "summary"]:
        suffix = ".json" if name == "summary" else ".jsonl"
        assert filecmp.cmp(tmp_path / (name + suffix), BANK / "data" / (name + suffix), shallow=False), name
    out = capsys.readouterr().out
    assert "600 rows in" in out
    text = "".join((BANK / "data" / f"{name}.jsonl").read_text(encoding="utf-8") for name in DATA_FILES)
    raw = (BANK / "data" / "logs.jsonl").read_text(encoding="utf-8")
    for pattern in (r"[\w.]+@example\.com", r"HB-\d{6}", r"07\d{3} \d{6}", r"\d{1,3} (?:Elm Street|Harbour Road)"):
        assert re.search(pattern, raw) and not re.search(pattern, text), pattern
    summary = json.loads((BANK / "data" / "summary.json").read_text())
    assert 0.4 < summary["on_spec_share"] < 0.8
    # agents differ: the generator gives agent-01 the fewest off-voice replies and agent-04 the most
    by_agent = summary["on_spec_share_by_agent"]
    assert by_agent["agent-01"] > by_agent["agent-04"]


def test_bank_judge_follows_its_own_spec_not_ridgelines():
    bank_voice = load_scorer(BANK / "voice.yaml")
    signed = "I lost my debit card this morning, please block it. Regards, Anna Patel"
    formal = (
        "Dear Anna Patel,\nThank you for letting us know. We have blocked the card and a replacement will arrive "
        "within five working days. Please call us if anything looks unfamiliar.\nKind regards, Harbourstone Bank"
    )
    casual = formal.replace("Thank you for letting us know.", "No worries!").replace("We have", "We've")
    assert bank_voice.score([signed, signed], [formal, casual])[0] == 1.0
    # no acknowledgement left, "we've" is a contraction, not the act step's "we have", and "No worries!" a fragment
    assert bank_voice.violations(signed, casual) == [
        "acknowledge_and_act",
        "formal_register",
        "no_exclamation",
        "full_sentences",
    ]
    assert "signoff" in brand_voice.violations(signed, formal)  # Ridgeline's judge wants its own sign-off


def test_bank_judge_greets_by_the_signed_name_and_wants_the_request_answered():
    bank_voice = load_scorer(BANK / "voice.yaml")
    formal = (
        "Dear Anna Patel,\nThank you for letting us know. We have blocked the card and a replacement will arrive "
        "within five working days. Please call us if anything looks unfamiliar.\nKind regards, Harbourstone Bank"
    )
    unsigned = "I lost my debit card this morning, please block it."
    assert bank_voice.explain_one(unsigned, formal)["greeting"] == 0.0  # a name the customer never gave
    general = formal.replace("Dear Anna Patel,", "Dear customer,")
    assert bank_voice.violations(unsigned, general) == []
    assert bank_voice.explain_one(unsigned + " Thanks, Anna", general)["greeting"] == 0.5
    assert bank_voice.violations(unsigned + " Thanks, Anna", general.replace("customer", "Anna")) == []
    vague = general.replace("We have blocked the card and", "We have logged your request and")
    assert bank_voice.violations(unsigned, vague) == ["intents"]
    # the logs follow the spec: most on-voice replies to a signed message greet by that name
    rows = [json.loads(line) for line in (BANK / "data" / "logs.jsonl").read_text(encoding="utf-8").splitlines()]
    named = [
        row
        for row in rows
        if bank_voice.customer_name(row["message"]) and not bank_voice.violations(row["message"], row["reply"])
    ]
    assert len(named) > 200
    assert all(row["reply"].startswith(f"Dear {bank_voice.customer_name(row['message'])},") for row in named)
