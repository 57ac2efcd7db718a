"""Reading data files (.jsonl, .json, .csv, .parquet) into rows, without torch.

Every problem is a `DataError` naming the file, the 1-based row (the line, for JSONL) and the field. Text files must
be UTF-8 (a byte-order mark is accepted): another encoding, JSON that does not parse or is not a list of objects, a
CSV quote left open or a row with a stray cell, and a truncated Parquet file are all refused that way, never with a
decode or parse traceback. Normalising rows into each stage's format is `rlhf.data.formats`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data row that cannot be used, located by file, row and field."""

    def __init__(self, source: str, row: int | None, field: str | None, message: str):
        self.source, self.row, self.field = source, row, field
        where = source + (f", row {row}" if row is not None else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (1-based row number, row) from a .jsonl, .json, .csv or .parquet file.

    For JSONL the row number is the line number, so an editor jumps straight to it. Text files must be UTF-8 (a
    byte-order mark is accepted); anything else is a `DataError` naming the line, never a decode traceback.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise DataError(source, None, None, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(path, source)
    elif suffix == ".json":
        yield from _read_json(path, source)
    elif suffix == ".csv":
        yield from _read_csv(path, source)
    elif suffix == ".parquet":
        yield from _read_parquet(path, source)
    else:
        raise DataError(source, None, None, f"unsupported file type '{suffix}' (use .jsonl, .json, .csv, .parquet)")


def _not_utf8(data: bytes, err: UnicodeDecodeError, line: int | None = None) -> str:
    """What is wrong with bytes that are not UTF-8: the line and column of the first bad byte, and what to do."""
    offset = err.start
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = line if line is not None else data.count(b"\n", 0, offset) + 1
    return (
        f"not UTF-8 text: byte 0x{data[offset]:02x} at line {line}, column {offset - line_start + 1}; the file is in "
        "another encoding (Latin-1 and Windows-1252 are common): re-save it as UTF-8, e.g. "
        "`iconv -f WINDOWS-1252 -t UTF-8 in.jsonl > out.jsonl`"
    )


def _decode(path: Path, source: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # -sig: a leading byte-order mark (Excel, Notepad) is not data
    except UnicodeDecodeError as err:
        raise DataError(source, None, None, _not_utf8(data, err)) from None


def _read_jsonl(path: Path, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataError(source, number, None, _not_utf8(raw, err, line=number)) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))  # so a line cut short reports its own column
            except json.JSONDecodeError as err:
                raise DataError(source, number, None, f"not valid JSON ({err.msg} at column {err.colno})") from None
            except RecursionError:
                raise DataError(source, number, None, "not valid JSON (nested too deeply)") from None
            yield number, _as_mapping(row, source, number)


def _read_json(path: Path, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        rows = json.loads(_decode(path, source))
    except json.JSONDecodeError as err:
        raise DataError(source, None, None, f"not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise DataError(source, None, None, "not valid JSON (nested too deeply)") from None
    if isinstance(rows, dict) and len(rows) == 1 and isinstance(next(iter(rows.values())), list):
        rows = next(iter(rows.values()))  # {"data": [...]} style files
    if not isinstance(rows, list):
        raise DataError(
            source,
            None,
            None,
            f"a .json data file must hold a list of objects (or one key holding such a list), got {_json_kind(rows)}",
        )
    for number, row in enumerate(rows, start=1):
        yield number, _as_mapping(row, source, number)


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {', '.join(sorted(value)[:5]) or 'none'}"
    return type(value).__name__


def _read_csv(path: Path, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # strict: a quote left open is an error, not a cell that silently swallows the rest of the file.
    reader = csv.reader(io.StringIO(_decode(path, source), newline=""), strict=True)
    number, line = 0, 0
    try:
        header = next(reader, None)
        if header is None:
            return
        number, line = 1, reader.line_num  # row 1 is the header, as in a spreadsheet
        for cells in reader:
            if not cells:  # a blank line
                line = reader.line_num
                continue
            number += 1
            if len(cells) != len(header):
                raise DataError(
                    source,
                    number,
                    None,
                    f"{len(cells)} cells but the header has {len(header)} (line {line + 1}): a stray delimiter or "
                    "an unquoted comma",
                )
            line = reader.line_num
            yield number, {key: _maybe_json(value) for key, value in zip(header, cells, strict=True)}
    except csv.Error as err:
        raise DataError(
            source, number + 1, None, f"not valid CSV from line {line + 1} ({err}): a quote opened and never closed?"
        ) from None


def _read_parquet(path: Path, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as err:  # truncated or not Parquet at all; bad UTF-8 in a column
        raise DataError(source, None, None, f"not a readable Parquet file ({err})") from None
    yield from enumerate(rows, start=1)


def _as_mapping(row: Any, source: str, number: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(source, number, None, f"expected a JSON object, got {type(row).__name__}")
    return row


def _maybe_json(value: str | None) -> Any:
    """CSV cells holding message lists are JSON text; plain strings stay strings."""
    if value and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
