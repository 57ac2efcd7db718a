"""Data rows: every recognised format normalises, every bad row is a DataError naming the file, row and field."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rlhf.data.formats import DataError, check_stage_data, load_records, read_rows


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict:
    return {"role": "system", "content": text}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def expect_error(path: Path, kind: str, row: int | None, field: str | None, words: str) -> DataError:
    """Loads `path` and checks the DataError locates the problem (and says what it is) in its message."""
    with pytest.raises(DataError) as info:
        load_records(str(path), kind)
    error = info.value
    message = str(error)
    assert (error.source, error.row, error.field) == (str(path), row, field), message
    assert message.startswith(str(path)), message
    if row is not None:
        assert f"row {row}" in message
    if field is not None:
        assert f"field '{field}'" in message
    assert words in message
    return error


# Formats that normalise ---------------------------------------------------------------------------------------------


SFT_ROWS = [
    (
        {"messages": [system("Be kind."), user("hi"), assistant("hello")], "intent": "greeting"},
        {"messages": [system("Be kind."), user("hi"), assistant("hello")]},
    ),
    (
        {"prompt": "Q: where is my order?", "completion": " It ships today."},
        {"prompt": "Q: where is my order?", "completion": " It ships today."},
    ),
    (
        {"prompt": [user("where is my order?")], "completion": [assistant("It ships today.")]},
        {"prompt": [user("where is my order?")], "completion": [assistant("It ships today.")]},
    ),
]


@pytest.mark.parametrize(
    ("row", "expected"), SFT_ROWS, ids=["messages", "prompt-completion-text", "prompt-completion-messages"]
)
def test_sft_formats_normalise(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "sft.jsonl", [row, row])
    assert load_records(str(path), "demonstrations") == [expected, expected]


PREFERENCE_ROWS = [
    (
        {"prompt": "Is it waterproof?", "chosen": " Yes, fully.", "rejected": " No idea."},
        {"prompt": "Is it waterproof?", "chosen": " Yes, fully.", "rejected": " No idea."},
    ),
    (
        {
            "prompt": [user("Is it waterproof?")],
            "chosen": [assistant("Yes.")],
            "rejected": [assistant("No idea.")],
            "violation": "curt",
        },
        {"prompt": [user("Is it waterproof?")], "chosen": [assistant("Yes.")], "rejected": [assistant("No idea.")]},
    ),
    (
        {
            "chosen": [user("Is it waterproof?"), assistant("Yes.")],
            "rejected": [user("Is it waterproof?"), assistant("No idea.")],
        },
        {
            "chosen": [user("Is it waterproof?"), assistant("Yes.")],
            "rejected": [user("Is it waterproof?"), assistant("No idea.")],
        },
    ),
    (
        {"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": 2},
        {"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": 2.0},
    ),
    (
        {"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": "0.5"},
        {"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": 0.5},
    ),
    (
        {"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": None},
        {"prompt": "Q", "chosen": "good", "rejected": "bad"},
    ),
]


@pytest.mark.parametrize(
    ("row", "expected"),
    PREFERENCE_ROWS,
    ids=["explicit-text", "explicit-messages", "implicit-prompt", "margin", "margin-text", "margin-null"],
)
def test_preference_formats_normalise(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "prefs.jsonl", [row])
    assert load_records(str(path), "preferences") == [expected]


PROMPT_ROWS = [
    ({"prompt": "Where is my order?", "intent": "delivery"}, {"prompt": [user("Where is my order?")]}),
    (
        {"prompt": [system("Be kind."), user("Where is my order?")]},
        {"prompt": [system("Be kind."), user("Where is my order?")]},
    ),
    (
        {"messages": [user("hi"), assistant("hello"), user("Where is my order?")]},
        {"prompt": [user("hi"), assistant("hello"), user("Where is my order?")]},
    ),
    ({"prompt": [{"role": "user", "content": "Where?", "name": "sam"}]}, {"prompt": [user("Where?")]}),
]


@pytest.mark.parametrize(
    ("row", "expected"),
    PROMPT_ROWS,
    ids=["prompt-text", "prompt-messages", "messages-ending-in-user", "extra-message-keys"],
)
def test_prompt_formats_normalise(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "prompts.jsonl", [row])
    assert load_records(str(path), "prompts") == [expected]


def test_shipped_data_normalises():
    data = Path(__file__).resolve().parents[2] / "recipes" / "brand_voice" / "data"
    for name, kind in (
        ("sft_eval.jsonl", "demonstrations"),
        ("prefs_eval.jsonl", "preferences"),
        ("eval_prompts.jsonl", "prompts"),
    ):
        records = load_records(str(data / name), kind, max_rows=5)
        assert len(records) == 5
        assert not {"intent", "violation", "on_voice"} & {key for r in records for key in r}


# Bad rows -----------------------------------------------------------------------------------------------------------


GOOD_SFT = {"messages": [user("hi"), assistant("hello")]}
GOOD_PREF = {"prompt": "Q", "chosen": "good", "rejected": "bad"}
GOOD_PROMPT = {"prompt": "Where is my order?"}

BAD_ROWS = [
    # (kind, bad row, field, words)
    ("demonstrations", {"prompt": "Q"}, "completion", "missing field"),
    ("demonstrations", {"completion": "A"}, "prompt", "missing field"),
    ("demonstrations", {"text": "Q A"}, None, "no sft fields"),
    ("demonstrations", {"messages": [user("hi"), assistant("")]}, "messages[1].content", "empty content"),
    ("demonstrations", {"messages": [user("hi"), assistant(" \n ")]}, "messages[1].content", "empty content"),
    (
        "demonstrations",
        {"messages": [user("hi"), {"role": "assistant", "content": None}]},
        "messages[1].content",
        "empty content",
    ),
    ("demonstrations", {"prompt": "   ", "completion": "A"}, "prompt", "empty text"),
    (
        "demonstrations",
        {"messages": [user("hi"), user("again"), assistant("hello")]},
        "messages[1].role",
        "roles must alternate",
    ),
    (
        "demonstrations",
        {"messages": [user("hi"), system("Be kind."), assistant("hello")]},
        "messages[1].role",
        "system message may only come first",
    ),
    (
        "demonstrations",
        {"messages": [{"role": "bot", "content": "hi"}, assistant("hello")]},
        "messages[0].role",
        "unknown role 'bot'",
    ),
    ("demonstrations", {"messages": [user("hi"), {"content": "hello"}]}, "messages[1]", "'role' and 'content'"),
    ("demonstrations", {"messages": []}, "messages", "non-empty list"),
    ("demonstrations", {"messages": "hi"}, "messages", "non-empty list"),
    (
        "demonstrations",
        {"messages": [user("hi"), assistant("hello"), user("thanks")]},
        "messages",
        "end with an assistant",
    ),
    ("demonstrations", {"prompt": "Q", "completion": [assistant("A")]}, "completion", "both be text or both messages"),
    (
        "demonstrations",
        {"prompt": [user("Q")], "completion": [user("A")]},
        "completion[0].role",
        "start with an assistant",
    ),
    ("preferences", {"prompt": "Q", "chosen": "good"}, "rejected", "missing field"),
    ("preferences", {"prompt": "Q", "rejected": "bad"}, "chosen", "missing field"),
    ("preferences", {"prompt": "Q", "chosen": "same", "rejected": "same"}, "rejected", "identical"),
    (
        "preferences",
        {"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": "large"},
        "margin",
        "expected a number",
    ),
    ("preferences", {"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": [1]}, "margin", "expected a number"),
    ("preferences", {"chosen": [assistant("good")], "rejected": [assistant("bad")]}, "chosen", "whole conversations"),
    (
        "preferences",
        {"prompt": "Q", "chosen": [user("x"), user("y")], "rejected": "bad"},
        "chosen[1].role",
        "alternate",
    ),
    ("prompts", {"question": "Where?"}, "prompt", "missing field"),
    ("prompts", {"prompt": ""}, "prompt", "empty text"),
    ("prompts", {"prompt": [user("hi"), assistant("hello")]}, "prompt", "end with a user message"),
    ("prompts", {"messages": [user("hi"), assistant("hello")]}, "messages", "end with a user message"),
    ("prompts", {"prompt": [{"role": "tool", "content": "x"}]}, "prompt[0].role", "unknown role"),
]


@pytest.mark.parametrize(
    ("kind", "row", "field", "words"),
    BAD_ROWS,
    ids=[f"{kind}-{words.split()[0]}-{field}" for kind, _, field, words in BAD_ROWS],
)
def test_bad_rows_name_file_row_and_field(tmp_path, kind, row, field, words):
    good = {"demonstrations": GOOD_SFT, "preferences": GOOD_PREF, "prompts": GOOD_PROMPT}[kind]
    # The bad row is the third line, after a blank line: row numbers are line numbers.
    path = tmp_path / f"{kind}.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(row) + "\n" + json.dumps(good) + "\n")
    expect_error(path, kind, 3, field, words)


def test_malformed_jsonl_line_names_the_line(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(GOOD_SFT) + "\n" + '{"messages": [\n' + json.dumps(GOOD_SFT) + "\n")
    expect_error(path, "demonstrations", 2, None, "not valid JSON")


def test_jsonl_row_that_is_not_an_object(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(GOOD_SFT) + "\n[1, 2]\n")
    expect_error(path, "demonstrations", 2, None, "expected a JSON object")


def test_missing_file_unsupported_type_and_empty_file(tmp_path):
    expect_error(tmp_path / "nope.jsonl", "demonstrations", None, None, "file not found")
    text = tmp_path / "data.txt"
    text.write_text("hello\n")
    expect_error(text, "demonstrations", None, None, "unsupported file type '.txt'")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    expect_error(empty, "demonstrations", None, None, "no rows")


def test_max_rows_stops_reading_early(tmp_path):
    # Rows after the limit are not read, so a bad row there does not matter.
    path = write_jsonl(tmp_path / "sft.jsonl", [GOOD_SFT, GOOD_SFT, {"bad": 1}])
    assert len(load_records(str(path), "demonstrations", max_rows=2)) == 2
    with pytest.raises(DataError):
        load_records(str(path), "demonstrations")


# Readers ------------------------------------------------------------------------------------------------------------


def test_json_file_as_a_list_or_wrapped_in_one_key(tmp_path):
    plain = tmp_path / "prefs.json"
    plain.write_text(json.dumps([GOOD_PREF, {**GOOD_PREF, "margin": 1}]))
    assert [r.get("margin") for r in load_records(str(plain), "preferences")] == [None, 1.0]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [GOOD_PREF]}))
    assert load_records(str(wrapped), "preferences") == [GOOD_PREF]


def test_json_file_errors(tmp_path):
    bad_row = tmp_path / "rows.json"
    bad_row.write_text(json.dumps([GOOD_PREF, {**GOOD_PREF, "rejected": "good"}]))
    expect_error(bad_row, "preferences", 2, "rejected", "identical")
    not_json = tmp_path / "broken.json"
    not_json.write_text("[{")
    expect_error(not_json, "preferences", None, None, "not valid JSON")
    not_list = tmp_path / "object.json"
    not_list.write_text(json.dumps({"a": 1, "b": 2}))
    expect_error(not_list, "preferences", None, None, "list of objects")
    scalar_row = tmp_path / "scalars.json"
    scalar_row.write_text(json.dumps([GOOD_PREF, "oops"]))
    expect_error(scalar_row, "preferences", 2, None, "expected a JSON object")


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_csv_text_columns_message_lists_and_margin(tmp_path):
    path = write_csv(
        tmp_path / "prefs.csv",
        ["prompt", "chosen", "rejected", "margin"],
        [
            ["Is it waterproof?", "Yes, fully, and here is why.", "No.", "1.5"],
            [json.dumps([user("Is it warm?")]), json.dumps([assistant("Very.")]), json.dumps([assistant("No.")]), "0"],
        ],
    )
    first, second = load_records(str(path), "preferences")
    assert first == {
        "prompt": "Is it waterproof?",
        "chosen": "Yes, fully, and here is why.",
        "rejected": "No.",
        "margin": 1.5,
    }
    assert second == {
        "prompt": [user("Is it warm?")],
        "chosen": [assistant("Very.")],
        "rejected": [assistant("No.")],
        "margin": 0.0,
    }


def test_csv_rows_are_numbered_as_in_a_spreadsheet(tmp_path):
    # Row 1 is the header, so the second data row is row 3.
    path = write_csv(tmp_path / "prompts.csv", ["prompt"], [["Where is my order?"], [""]])
    expect_error(path, "prompts", 3, "prompt", "empty text")


def test_csv_text_that_only_looks_like_json_stays_text(tmp_path):
    path = write_csv(tmp_path / "sft.csv", ["prompt", "completion"], [["[draft] where is it?", "On its way."]])
    assert load_records(str(path), "demonstrations") == [
        {"prompt": "[draft] where is it?", "completion": "On its way."}
    ]


def test_parquet_rows_with_message_lists(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [GOOD_SFT, {"messages": [system("Be kind."), user("hi"), assistant("hello")]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "sft.parquet")
    assert load_records(str(tmp_path / "sft.parquet"), "demonstrations") == rows
    assert [number for number, _ in read_rows(tmp_path / "sft.parquet")] == [1, 2]


def test_parquet_bad_row_is_located(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "Where?"}, {"prompt": "Where?"}, {"prompt": None}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "prompts.parquet")
    expect_error(tmp_path / "prompts.parquet", "prompts", 3, "prompt", "missing field")


def test_check_stage_data_counts_local_files_and_skips_hub_names(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [GOOD_SFT] * 3)
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [GOOD_SFT])
    assert check_stage_data(str(train), str(evaluation), "demonstrations") == {str(train): 3, str(evaluation): 1}
    assert check_stage_data("org/dataset", None, "demonstrations") == {}
