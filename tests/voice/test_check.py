"""`rlhf voice check`: the per-rule table, the worst replies, the HTML report and located errors (exit 2)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from reward_models import brand_voice, support_reply
from rlhf.cli import main

SPEC = str(Path(__file__).resolve().parents[2] / "recipes" / "brand_voice" / "voice.yaml")
PROMPT = "My order #12345 has not arrived. Thanks, Maya"
ON_VOICE = (
    "Hi Maya, I'm sorry order #12345 is late. I've upgraded it to express delivery at no cost, and you will get a "
    "tracking email within the hour so you can follow it.\n" + brand_voice.SIGN_OFF
)
JARGON = ON_VOICE.replace("I've upgraded it", "I've raised an escalation ticket and upgraded it <b>")
ROWS = [
    {"prompt": PROMPT, "reply": ON_VOICE},
    {"prompt": [{"role": "user", "content": PROMPT}], "reply": JARGON},
    {"prompt": PROMPT, "reply": "Unfortunately that is not our fault."},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_check_prints_rules_and_worst_replies_and_writes_html(tmp_path, capsys):
    out = tmp_path / "report" / "voice.html"
    args = ["voice", "check", SPEC, str(_jsonl(tmp_path / "r.jsonl", ROWS)), "--worst", "2", "--html", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "3 replies against the Ridgeline Outfitters voice" in text and "on-voice (every rule met) 1/3" in text
    rows = [line.split() for line in text.splitlines()]
    table = {cells[0]: cells for cells in rows if cells and cells[0] in brand_voice.RULE_WEIGHTS}
    assert set(table) == set(brand_voice.RULE_WEIGHTS)
    assert table["no_jargon"][-1] == "1" and table["no_blame"][-1] == "1" and table["signoff"][-1] == "1"
    # Beside the spec: content from the message alone. Two replies greet Maya and repeat #12345; the third does
    # neither (it names nobody and cites nothing).
    content = {cells[0]: cells for cells in rows if cells and cells[0].startswith("content/")}
    assert set(content) == {f"content/{rule}" for rule in support_reply.RULE_WEIGHTS}
    assert content["content/name"][1:] == ["3", "0.750", "67%", "1"]  # (1 + 1 + 0.25) / 3
    assert content["content/references"][1] == "2" and content["content/references"][-1] == "0"
    assert content["content/no_invented_name"][1:] == ["0", "nan", "-", "0"]
    worst = text.split("worst 2 replies:")[1]
    assert worst.index("row 3:") < worst.index("row 2:") and "row 1:" not in worst
    assert "breaks no_jargon" in worst
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "&lt;b&gt;" in page and "<b>" not in page
    assert "<script" not in page and "http" not in page
    assert "Content, from the customer's message alone" in page


def test_check_reads_csv_and_parquet_with_named_columns(tmp_path, capsys):
    rows = [{"message": r["prompt"] if isinstance(r["prompt"], str) else PROMPT, "answer": r["reply"]} for r in ROWS]
    with (tmp_path / "r.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["message", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "r.parquet")
    for name in ("r.csv", "r.parquet"):
        args = ["voice", "check", SPEC, str(tmp_path / name), "--prompt-column", "message", "--reply-column", "answer"]
        assert main(args) == 0
        assert "on-voice (every rule met) 1/3" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ([{"prompt": PROMPT, "reply": ON_VOICE}, {"prompt": PROMPT}], "row 2, field 'reply': missing or null"),
        ([{"prompt": PROMPT, "reply": ON_VOICE}, {"prompt": PROMPT, "reply": "  "}], "row 2, field 'reply': empty"),
        ([{"prompt": 3, "reply": ON_VOICE}], "row 1, field 'prompt': expected text"),
        (b'{"prompt": "caf\xe9", "reply": "x"}\n', "row 1: not UTF-8 text"),
    ],
)
def test_bad_rows_exit_2_with_one_located_error_line(tmp_path, capsys, content, expected):
    path = tmp_path / "r.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        _jsonl(path, content)
    assert main(["voice", "check", SPEC, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and expected in err and len(err.strip().splitlines()) == 1


def test_contradictory_spec_exits_2_with_one_error_line(tmp_path, capsys):
    spec = Path(SPEC).read_text(encoding="utf-8").replace("min_words: 25", "min_words: 90")
    (tmp_path / "voice.yaml").write_text(spec, encoding="utf-8")
    assert main(["voice", "check", str(tmp_path / "voice.yaml"), str(_jsonl(tmp_path / "r.jsonl", ROWS))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: ") and "length.min_words (90) is above length.max_words (70)" in err


def test_check_scores_each_reply_as_the_scorer_does(tmp_path):
    # check_file scores a reply once (its rules, then their weighted mean); the mean must be the scorer's own score.
    from rlhf.voice.check import check_file
    from rlhf.voice.scorer import load_scorer

    scorer = load_scorer(SPEC)
    report = check_file(scorer, _jsonl(tmp_path / "r.jsonl", ROWS), "prompt", "reply")
    for scored in report.replies:
        assert scored.score == pytest.approx(scorer.score([scored.prompt], [scored.reply])[0], abs=1e-12)
    assert [round(s.score, 3) for s in report.replies][0] == 1.0 and report.replies[2].score < 0.8
