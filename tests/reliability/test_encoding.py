"""Files that cannot be decoded or parsed: exit 2 and one `error:` line naming the file and line, never a traceback.

Covers text that is not UTF-8 (JSONL, JSON, CSV, the recipe itself) under `rlhf validate` and `rlhf run`, a
byte-order mark (accepted), a truncated Parquet file, JSON that is not a list of objects, a CSV quote left open and a
CSV row with a stray cell.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from rlhf.data.formats import DataError, load_records

from .conftest import GOOD_SFT

# "café" in Windows-1252/Latin-1: the é is byte 0xe9, which is never valid on its own in UTF-8.
LATIN1_REPLY = "the café ships today"
BAD_LINE = {".jsonl": 3, ".json": 4, ".csv": 4}  # JSON: '[' is line 1; CSV: the header is line 1


def write_sft(path: Path, encoding: str = "utf-8", bom: bool = False) -> Path:
    """Three sft rows, the third in `encoding` (on line BAD_LINE[suffix]); the others UTF-8."""
    rows = [*GOOD_SFT[:2], {"messages": [GOOD_SFT[0]["messages"][0], {"role": "assistant", "content": LATIN1_REPLY}]}]
    if path.suffix == ".jsonl":
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        data = b"".join(line.encode("utf-8" if i < 2 else encoding) + b"\n" for i, line in enumerate(lines))
    elif path.suffix == ".json":
        text = "[\n" + ",\n".join(json.dumps(row, ensure_ascii=False) for row in rows[:2]) + ",\n"
        data = text.encode("utf-8") + (json.dumps(rows[2], ensure_ascii=False) + "\n]\n").encode(encoding)
    else:
        cells = [[json.dumps(r["messages"][:1]), json.dumps(r["messages"][1:], ensure_ascii=False)] for r in rows]
        lines = ["prompt,completion"] + [",".join(_quoted(c) for c in row) for row in cells[:2]]
        data = (
            "\n".join(lines).encode("utf-8") + b"\n" + ",".join(_quoted(c) for c in cells[2]).encode(encoding) + b"\n"
        )
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def _quoted(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


def sft_recipe(tmp_path: Path, train: str) -> Path:
    recipe = {
        "stage": "sft",
        "output_dir": str(tmp_path / "out"),
        "data": {"train": train, "max_length": 64, "max_prompt_length": 32},
    }
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def one_error_line(cli, *args) -> str:
    code, out, err = cli(*args)
    assert code == 2, out + err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_latin1_file_is_refused_with_file_line_and_hint(tmp_path, cli, command, suffix):
    train = write_sft(tmp_path / f"train{suffix}", encoding="latin-1")
    line = one_error_line(cli, command, sft_recipe(tmp_path, train.name))
    assert str(train) in line
    assert f"not UTF-8 text: byte 0xe9 at line {BAD_LINE[suffix]}," in line
    assert "re-save it as UTF-8" in line
    if suffix == ".jsonl":
        assert f"{train}, row 3:" in line  # JSONL rows are lines


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_utf8_with_a_byte_order_mark_is_read(tmp_path, suffix):
    train = write_sft(tmp_path / f"train{suffix}", bom=True)
    records = load_records(str(train), "demonstrations")
    assert len(records) == 3
    assert LATIN1_REPLY in json.dumps(records[2], ensure_ascii=False)


def test_utf16_file_is_refused(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(json.dumps(GOOD_SFT[0]).encode("utf-16"))
    with pytest.raises(DataError, match="not UTF-8 text: byte 0xff at line 1, column 1"):
        load_records(str(path), "demonstrations")


def test_recipe_that_is_not_utf8(tmp_path, cli):
    train = write_sft(tmp_path / "train.jsonl")
    recipe = sft_recipe(tmp_path, train.name)
    recipe.write_bytes(recipe.read_bytes() + "# notes by José\n".encode("latin-1"))
    line = one_error_line(cli, "validate", recipe)
    assert f"{recipe} is not UTF-8 text (byte 0xe9 on line" in line


def test_truncated_parquet(tmp_path, cli):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(GOOD_SFT), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy or download cut short
    with pytest.raises(DataError, match="not a readable Parquet file") as info:
        load_records(str(path), "demonstrations")
    assert info.value.source == str(path)
    line = one_error_line(cli, "validate", sft_recipe(tmp_path, path.name))
    assert f"{path}: not a readable Parquet file" in line


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('"just a string"', "got str"),
        ("42", "got int"),
        ('{"train": [], "eval": []}', "got an object with keys eval, train"),
        ("[" * 100_000, "nested too deeply"),
    ],
    ids=["string", "number", "object-of-two-lists", "deep"],
)
def test_json_that_is_not_a_list_of_objects(tmp_path, text, words):
    path = tmp_path / "train.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=words) as info:
        load_records(str(path), "demonstrations")
    assert (info.value.source, info.value.row) == (str(path), None)


def test_jsonl_line_nested_too_deeply(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD_SFT[0]) + "\n" + "[" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="nested too deeply") as info:
        load_records(str(path), "demonstrations")
    assert info.value.row == 2


def test_csv_quote_left_open(tmp_path, cli):
    path = tmp_path / "train.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "completion"])
        writer.writerow(["Where is my order?", "On its way."])
    with path.open("a", encoding="utf-8") as handle:
        handle.write('"Is it warm?,Very.\nDoes it fit?,Yes.\n')  # the opening quote is never closed
    with pytest.raises(DataError, match="not valid CSV from line 3") as info:
        load_records(str(path), "demonstrations")
    assert info.value.row == 3
    line = one_error_line(cli, "validate", sft_recipe(tmp_path, path.name))
    assert f"{path}, row 3: not valid CSV from line 3" in line


def test_csv_row_with_a_stray_cell(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("prompt,completion\nWhere is it?,On its way.\nIs it warm?,Very, very warm.\n", encoding="utf-8")
    with pytest.raises(DataError, match="3 cells but the header has 2 \\(line 3\\)") as info:
        load_records(str(path), "demonstrations")
    assert info.value.row == 3


def test_csv_quoted_cells_over_several_lines_keep_row_numbers(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('prompt,completion\n"Where\nis it?",On its way.\n\n"Is it warm?",\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_records(str(path), "demonstrations")
    assert (info.value.row, info.value.field) == (3, "completion")  # the blank line is not a row
