"""Reading data files and recognising each stage's data format, without torch.

Formats (see ARCHITECTURE.md):
- sft: `messages` (a conversation), or `prompt` + `completion` (strings or message lists);
- preferences: `prompt` + `chosen` + `rejected`, or implicit prompt (`chosen`/`rejected` whole conversations sharing
  a prefix); optional numeric `margin`;
- prompts (ppo): `prompt` (string or message list), or `messages` ending in a user turn.

Every problem is a `DataError` naming the file, the 1-based row and the field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhf.config import is_data_file

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """A data row that cannot be used, located by file, row and field."""

    def __init__(self, source: str, row: int | None, field: str | None, message: str):
        self.source, self.row, self.field = source, row, field
        where = source + (f", row {row}" if row is not None else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (1-based row number, row) from a .jsonl, .json, .csv or .parquet file.

    For JSONL the row number is the line number, so an editor jumps straight to it.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise DataError(source, None, None, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.rstrip("\r\n"))  # so a line cut short reports its own column
                except json.JSONDecodeError as err:
                    raise DataError(source, number, None, f"not valid JSON ({err.msg} at column {err.colno})") from None
                yield number, _as_mapping(row, source, number)
    elif suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(source, None, None, f"not valid JSON ({err.msg} at line {err.lineno})") from None
        if isinstance(rows, dict) and len(rows) == 1 and isinstance(next(iter(rows.values())), list):
            rows = next(iter(rows.values()))  # {"data": [...]} style files
        if not isinstance(rows, list):
            raise DataError(source, None, None, "a .json data file must hold a list of objects")
        for number, row in enumerate(rows, start=1):
            yield number, _as_mapping(row, source, number)
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):  # row 1 is the header
                yield number, {key: _maybe_json(value) for key, value in row.items()}
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield number, row
    else:
        raise DataError(source, None, None, f"unsupported file type '{suffix}' (use .jsonl, .json, .csv, .parquet)")


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


def check_messages(value: Any, source: str, row: int, field: str, *, allow_empty_last: bool = False) -> list[dict]:
    """Checks a message list: dicts with a known `role` and a non-empty string `content`, roles alternating."""
    if not isinstance(value, list) or not value:
        raise DataError(source, row, field, "expected a non-empty list of {role, content} messages")
    previous = None
    for index, message in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise DataError(source, row, where, "each message needs 'role' and 'content'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise DataError(source, row, f"{where}.role", f"unknown role '{role}' (expected one of {', '.join(ROLES)})")
        if role == "system" and index != 0:
            raise DataError(source, row, f"{where}.role", "a system message may only come first")
        if role != "system" and role == previous:
            raise DataError(source, row, f"{where}.role", f"two '{role}' messages in a row: roles must alternate")
        if not isinstance(content, str) or not content.strip():
            raise DataError(source, row, f"{where}.content", "empty content")
        previous = role
    return value


def _text_or_messages(row: dict, field: str, source: str, number: int) -> str | list[dict]:
    if field not in row or row[field] is None:
        raise DataError(source, number, field, "missing field")
    value = row[field]
    if isinstance(value, str):
        if not value.strip():
            raise DataError(source, number, field, "empty text")
        return value
    return check_messages(value, source, number, field)


def normalize_sft(row: dict, source: str, number: int) -> dict[str, Any]:
    """An sft row as `{"messages": [...]}` or `{"prompt": ..., "completion": ...}` (the formats TRL takes)."""
    if "messages" in row:
        messages = check_messages(row["messages"], source, number, "messages")
        if messages[-1]["role"] != "assistant":
            raise DataError(source, number, "messages", "the conversation must end with an assistant message")
        return {"messages": messages}
    if "prompt" in row or "completion" in row:
        prompt = _text_or_messages(row, "prompt", source, number)
        completion = _text_or_messages(row, "completion", source, number)
        if isinstance(prompt, list) != isinstance(completion, list):
            raise DataError(source, number, "completion", "prompt and completion must both be text or both messages")
        if isinstance(completion, list) and completion[0]["role"] != "assistant":
            raise DataError(source, number, "completion[0].role", "the completion must start with an assistant turn")
        return {"prompt": prompt, "completion": completion}
    raise DataError(
        source,
        number,
        None,
        f"no sft fields: expected 'messages' or 'prompt' + 'completion' (found {', '.join(sorted(row)) or 'nothing'})",
    )


def normalize_preference(row: dict, source: str, number: int) -> dict[str, Any]:
    """A preference row as `{"prompt"?, "chosen", "rejected", "margin"?}`."""
    if "chosen" not in row or "rejected" not in row:
        missing = "chosen" if "chosen" not in row else "rejected"
        raise DataError(source, number, missing, "missing field (preference rows need 'chosen' and 'rejected')")
    out: dict[str, Any] = {}
    if "prompt" in row and row["prompt"] is not None:
        out["prompt"] = _text_or_messages(row, "prompt", source, number)
    out["chosen"] = _text_or_messages(row, "chosen", source, number)
    out["rejected"] = _text_or_messages(row, "rejected", source, number)
    if out["chosen"] == out["rejected"]:
        raise DataError(source, number, "rejected", "chosen and rejected are identical")
    if "prompt" not in out and isinstance(out["chosen"], list) and len(out["chosen"]) < 2:
        raise DataError(source, number, "chosen", "without a prompt, chosen/rejected must be whole conversations")
    if "margin" in row and row["margin"] not in (None, ""):
        try:
            out["margin"] = float(row["margin"])
        except (TypeError, ValueError):
            raise DataError(source, number, "margin", f"expected a number, got {row['margin']!r}") from None
    return out


def normalize_prompt(row: dict, source: str, number: int) -> dict[str, Any]:
    """A prompt row as `{"prompt": [messages ending in a user turn]}` (strings become one user message)."""
    field = "prompt" if "prompt" in row else "messages"
    if field == "prompt":
        prompt = _text_or_messages(row, "prompt", source, number)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    elif "messages" in row:
        messages = check_messages(row["messages"], source, number, "messages")
    else:
        raise DataError(source, number, "prompt", "missing field (prompt rows need 'prompt' or 'messages')")
    if messages[-1]["role"] != "user":
        raise DataError(source, number, field, "the prompt must end with a user message")
    return {"prompt": [{"role": m["role"], "content": m["content"]} for m in messages]}


NORMALIZERS = {"sft": normalize_sft, "reward": normalize_preference, "ppo": normalize_prompt}


def load_records(path: str, kind: str, max_rows: int | None = None) -> list[dict[str, Any]]:
    """Reads and checks a stage's data file, returning normalised rows.

    Args:
        path: A data file (see `read_rows`).
        kind: 'sft', 'reward' (preferences) or 'ppo' (prompts).
        max_rows: Keep only the first N rows.

    Raises:
        DataError: The first bad row, naming file, row and field.
    """
    normalize = NORMALIZERS[kind]
    records = []
    for number, row in read_rows(path):
        records.append(normalize(row, str(path), number))
        if max_rows is not None and len(records) >= max_rows:
            break
    if not records:
        raise DataError(str(path), None, None, "no rows")
    return records


def check_stage_data(train: str, eval_: str | None, kind: str) -> dict[str, int]:
    """Checks a stage's local data files (hub datasets are checked when loaded); returns row counts per file."""
    counts = {}
    for path in (train, eval_):
        if path is not None and is_data_file(path):
            counts[path] = len(load_records(path, kind))
    return counts
