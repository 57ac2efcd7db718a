"""`rlhf voice pairs`: PII never survives, splits share no customer or prompt, pairs break one rule each, the files
pass `rlhf validate`, and bad logs exit 2 with one located error line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from rlhf.cli import main
from rlhf.config import LogColumns, PairsOptions
from rlhf.voice.pairs import read_logs, split_logs
from rlhf.voice.scorer import load_scorer

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "recipes" / "brand_voice" / "voice.yaml"
SHARED_MESSAGE = "Where is my parcel? It has been ages."
PLANTED = {
    "email": "maya.fern+gear@example.co.uk",
    "phone": "+44 20 7946 0958",
    "card": "4111 1111 1111 1111",
    "address": "42 Juniper Street",
    "order": "#908172",
}


def _logs(tmp_path: Path, n: int = 160) -> Path:
    """Ridgeline's shipped SFT rows as support logs (a third off-voice), with PII planted in every fourth row."""
    rng = random.Random(0)
    rows = []
    lines = (ROOT / "recipes" / "brand_voice" / "data" / "sft_train.jsonl").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines[:n]):
        message, reply = (m["content"] for m in json.loads(line)["messages"])
        if i % 4 == 0:
            message += f" Card {PLANTED['card']}, ship to {PLANTED['address']}; call {PLANTED['phone']} or mail "
            message += f"{PLANTED['email']} about order {PLANTED['order']}."
            reply = reply.replace("\n", f"\nI've noted order {PLANTED['order']} for {PLANTED['email']}. ", 1)
        if i % 40 == 1:
            message = SHARED_MESSAGE  # the same words from several customers: they must land in one split
        rows.append(
            {
                "message": message,
                "reply": reply,
                "customer_id": f"cust-{rng.randrange(n // 3)}",
                "thread_id": f"thread-{i}",
                "agent_id": f"agent-{i % 3}",
                "timestamp": f"2026-10-{1 + i % 28:02d}T{i % 24:02d}:00:00",
            }
        )
    rows.append(dict(rows[2]))  # a row exported twice
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _prompt(row: dict) -> str:
    turns = row["messages"][:1] if "messages" in row else row["prompt"]
    return " ".join(turns[0]["content"].lower().split())


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pairs")
    out = tmp / "data"
    assert main(["voice", "pairs", str(SPEC), str(_logs(tmp)), "--out", str(out)]) == 0
    return out


def test_planted_pii_never_survives_and_is_counted(produced):
    text = "".join(path.read_text(encoding="utf-8") for path in produced.glob("*.jsonl"))
    for kind, value in PLANTED.items():
        assert value not in text, kind
        assert value.lstrip("#").replace(" ", "") not in text.replace(" ", ""), kind
    summary = json.loads((produced / "summary.json").read_text())
    assert all(summary["pii_replaced"][kind] >= 40 for kind in PLANTED), summary["pii_replaced"]
    # consistent placeholders: the reply repeats the customer's order id, so it repeats the same placeholder
    rows = [r for r in _read(produced / "sft_train.jsonl") if "<EMAIL_1>" in r["messages"][0]["content"]]
    assert rows and all("<ORDER_1>" in r["messages"][1]["content"] for r in rows)


def test_no_prompt_shared_across_splits(produced):
    splits = {
        "train": ("sft_train", "prefs_train", "ppo_prompts"),
        "eval": ("sft_eval", "prefs_eval"),
        "held_out": ("eval_prompts",),
    }
    prompts = {
        split: {_prompt(row) for name in names for row in _read(produced / f"{name}.jsonl")}
        for split, names in splits.items()
    }
    assert all(prompts.values())
    assert not prompts["train"] & prompts["eval"] and not prompts["train"] & prompts["held_out"]
    assert not prompts["eval"] & prompts["held_out"]


def test_split_keeps_each_customer_and_prompt_in_one_split(tmp_path):
    logs = read_logs(_logs(tmp_path), LogColumns(), ("customer",))
    splits = split_logs(logs, PairsOptions(eval_share=0.15, held_out_share=0.15))
    assert all(len(rows) >= 0.1 * len(logs) for rows in splits.values())
    for key in ("customer", "message"):
        owner: dict[str, str] = {}
        for name, rows in splits.items():
            for log in rows:
                assert owner.setdefault(getattr(log, key), name) == name, (key, getattr(log, key))
    assert sum(log.message == SHARED_MESSAGE for log in logs) == 4


def test_held_out_is_newest_with_by_time(tmp_path):
    logs = read_logs(_logs(tmp_path), LogColumns(), ("customer", "timestamp"))
    splits = split_logs(logs, PairsOptions(by_time=True))
    newest_train = max(log.timestamp for log in splits["train"])
    # whole customers move together, so compare each held-out customer's newest row with the train rows
    held = {}
    for log in splits["held_out"]:
        held[log.customer] = max(held.get(log.customer, log.timestamp), log.timestamp)
    assert min(held.values()) >= newest_train


def test_pairs_break_one_rule_each_and_every_rule_is_taught(produced):
    scorer = load_scorer(SPEC)
    rows = _read(produced / "prefs_train.jsonl") + _read(produced / "prefs_eval.jsonl")
    rewrites = [r for r in rows if r["source"] == "rewrite"]
    assert {r["rule"] for r in rewrites} == set(scorer.weights)
    for row in rows:
        prompt = row["prompt"][0]["content"]
        assert scorer.violations(prompt, row["chosen"][0]["content"]) == []
        broken = scorer.violations(prompt, row["rejected"][0]["content"])
        assert "+".join(broken) == row["rule"], row
    assert any(r["source"] == "logs" for r in rows)
    for row in _read(produced / "sft_train.jsonl"):
        assert scorer.violations(*(m["content"] for m in row["messages"])) == []
    summary = json.loads((produced / "summary.json").read_text())
    assert 0.5 < summary["on_spec_share"] < 0.8 and set(summary["on_spec_share_by_agent"]) == {
        "agent-0",
        "agent-1",
        "agent-2",
    }
    assert summary["rows_in"] == 161 and summary["dropped"] == {"duplicate message and reply": 1}


def test_rlhf_validate_accepts_a_pipeline_on_the_produced_files(produced, tmp_path, capsys):
    recipe = yaml.safe_load((ROOT / "recipes" / "brand_voice" / "pipeline.yaml").read_text())
    for stage in ("sft", "reward", "ppo"):
        for split in ("train", "eval"):
            recipe[stage]["data"][split] = str(produced / Path(recipe[stage]["data"][split]).name)
    recipe["compare"]["prompts"]["path"] = str(produced / "eval_prompts.jsonl")
    recipe["run_dir"] = str(tmp_path / "run")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    capsys.readouterr()
    assert main(["validate", str(path), "--allow-output-dir"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(f"ok: {path}") and "also appear in" not in out  # no prompt shared by stages


@pytest.mark.parametrize(
    ("row", "args", "expected"),
    [
        (
            {"msg": "hi", "reply": "hello"},
            [],
            "row 1, field 'message': missing or empty (the row's columns: msg, reply)",
        ),
        ({"message": "hi", "reply": " "}, [], "row 1, field 'reply': missing or empty"),
        ({"message": "hi", "reply": "x", "customer_id": "c"}, ["--by-time"], "row 1, field 'timestamp': missing"),
        (
            {"message": "hi", "reply": "x", "customer_id": "c", "timestamp": "last tuesday"},
            ["--by-time"],
            "row 1, field 'timestamp': not an ISO 8601 time",
        ),
        (b'{"message": "caf\xe9", "reply": "x", "customer_id": "c"}\n', [], "row 1: not UTF-8 text"),
    ],
)
def test_bad_logs_exit_2_with_one_located_error_line(tmp_path, capsys, row, args, expected):
    path = tmp_path / "logs.jsonl"
    if isinstance(row, bytes):
        path.write_bytes(row)
    else:
        path.write_text(json.dumps({"customer_id": "c", **row}) + "\n" if "msg" not in row else json.dumps(row) + "\n")
    assert main(["voice", "pairs", str(SPEC), str(path), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_customer_column_is_named_and_other_columns_are_configurable(tmp_path, capsys):
    path = tmp_path / "logs.jsonl"
    path.write_text(json.dumps({"text": "hi", "answer": "hello"}) + "\n", encoding="utf-8")
    args = ["voice", "pairs", str(SPEC), str(path), "--out", str(tmp_path / "o")]
    assert main([*args, "--message-column", "text", "--reply-column", "answer"]) == 2
    assert "row 1, field 'customer_id': missing" in capsys.readouterr().err
    assert main([*args, "--message-column", "text", "--reply-column", "answer", "--split-by", "row"]) == 2
    assert "only 1 row groups: need at least 3" in capsys.readouterr().err


def _words(message: list[dict]) -> int:
    return len(message[0]["content"].split())


@pytest.mark.parametrize("data", ["ridgeline", "bank"])
def test_length_does_not_tell_chosen_from_rejected(produced, data):
    # Pairs whose rejected reply is mostly the shorter one teach a reward model to pay for length (the bank
    # pipeline's ppo then wrote past the sign-off): the chosen reply must be the longer one in about half the pairs,
    # and within each rule other than the length rule itself both ways round.
    out = produced if data == "ridgeline" else ROOT / "recipes" / "bank_voice" / "data"
    rows = _read(out / "prefs_train.jsonl") + _read(out / "prefs_eval.jsonl")
    balance = json.loads((out / "summary.json").read_text())["length_balance"]
    differences = [_words(r["chosen"]) - _words(r["rejected"]) for r in rows]
    assert balance["chosen_longer"] == sum(d > 0 for d in differences)
    assert balance["chosen_shorter"] == sum(d < 0 for d in differences)
    assert 0.4 <= balance["share_chosen_longer"] <= 0.6, balance
    length_rule = load_scorer(out.parent / "voice.yaml" if data == "bank" else SPEC).spec.length.name
    for rule in {r["rule"] for r in rows if r["source"] == "rewrite"} - {length_rule}:
        signs = {(d > 0) - (d < 0) for r, d in zip(rows, differences, strict=True) if r["rule"] == rule}
        assert signs != {1} and signs != {-1}, (rule, signs)
