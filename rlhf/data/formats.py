"""Recognising each stage's data format in the rows of a data file, and normalising them, without torch.

Formats (see ARCHITECTURE.md and docs/bad_input.md for the conversion rules):
- sft: `messages` (a conversation, optionally opening with a system turn), or `prompt` + `completion` (strings or
  message lists);
- preferences: `prompt` + `chosen` + `rejected`, or implicit prompt (`chosen`/`rejected` whole conversations sharing
  a prefix); optional numeric `margin`, or a margin from `score_chosen`/`score_rejected` (`data.margin_from_scores`).
  Public formats: HH-RLHF transcripts (`chosen`/`rejected` strings of "\n\nHuman: ...\n\nAssistant: ...") become a
  message-list prompt and completions; UltraFeedback rows (a text `prompt`, message-list completions that repeat
  the user turn) become a user-turn prompt and assistant completions;
- prompts (ppo): `prompt` (string or message list), `messages` ending in a user turn, or HH-RLHF transcripts.

Columns a format does not use (metadata such as `intent` or `score_chosen`) are ignored. Every problem is a
`DataError` naming the file, the 1-based row and the field. Files are read by `rlhf.data.readers` (`read_rows` and
`DataError` are importable from here too).
"""

from __future__ import annotations

import re
from typing import Any

from rlhf.config import is_data_file
from rlhf.data.readers import DataError, read_rows

ROLES = ("system", "user", "assistant")


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


# ---- HH-RLHF transcripts: "\n\nHuman: ...\n\nAssistant: ..." strings (Anthropic/hh-rlhf).

HH_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):[ \t]?")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def is_hh_transcript(value: Any) -> bool:
    """Whether a value is an HH-RLHF transcript: text that opens with 'Human:' and has an 'Assistant:' turn."""
    return isinstance(value, str) and re.match(r"\s*Human:", value) is not None and "\n\nAssistant:" in value


def parse_hh_transcript(text: str, source: str, number: int, field: str) -> list[dict[str, str]]:
    """An HH-RLHF transcript as a message list: 'Human:' turns become user messages, 'Assistant:' turns assistant
    messages; each turn's text is stripped of surrounding whitespace.

    Raises:
        DataError: Text before the first turn, an empty turn, or two turns of the same speaker in a row (the turn is
            counted from 1).
    """
    parts = HH_TURN.split(text)
    if parts[0].strip():
        raise DataError(
            source, number, field, f"HH-RLHF transcript: text before the first 'Human:' ({parts[0][:40]!r})"
        )
    messages: list[dict[str, str]] = []
    for index in range(1, len(parts), 2):
        speaker, content, turn = parts[index], parts[index + 1].strip(), (index + 1) // 2
        role = HH_ROLES[speaker]
        if messages and messages[-1]["role"] == role:
            raise DataError(
                source, number, field, f"HH-RLHF transcript: turn {turn} is a second '{speaker}:' turn in a row"
            )
        if not content:
            raise DataError(source, number, field, f"HH-RLHF transcript: turn {turn} ('{speaker}:') is empty")
        messages.append({"role": role, "content": content})
    return messages


def _split_shared_prefix(
    chosen: list[dict], rejected: list[dict], source: str, number: int
) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen, rejected): the prompt is the turns both sides share, up to and including the last shared user
    turn, so that both completions start with an assistant turn."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == len(chosen) == len(rejected):
        raise DataError(source, number, "rejected", "chosen and rejected are identical")
    users = [i for i in range(shared) if chosen[i]["role"] == "user"]
    if not users:
        raise DataError(source, number, "rejected", "chosen and rejected do not share an opening user turn")
    cut = users[-1] + 1
    if cut >= len(chosen) or cut >= len(rejected):
        side = "chosen" if cut >= len(chosen) else "rejected"
        raise DataError(source, number, side, "the conversation has no reply after the shared prompt")
    return chosen[:cut], chosen[cut:], rejected[cut:]


# ---- Normalising rows, and naming the format of each row.


def normalize_sft(row: dict, source: str, number: int) -> dict[str, Any]:
    """An sft row as `{"messages": [...]}` or `{"prompt": ..., "completion": ...}` (the formats TRL takes)."""
    return classify_sft(row, source, number)[0]


def classify_sft(row: dict, source: str, number: int) -> tuple[dict[str, Any], str]:
    """An sft row normalised (see `normalize_sft`), and the name of its format."""
    if "messages" in row:
        messages = check_messages(row["messages"], source, number, "messages")
        if messages[-1]["role"] != "assistant":
            raise DataError(source, number, "messages", "the conversation must end with an assistant message")
        label = "messages with a system turn" if messages[0]["role"] == "system" else "messages"
        return {"messages": messages}, label
    if "prompt" in row or "completion" in row:
        prompt = _text_or_messages(row, "prompt", source, number)
        completion = _text_or_messages(row, "completion", source, number)
        if isinstance(prompt, list) != isinstance(completion, list):
            raise DataError(source, number, "completion", "prompt and completion must both be text or both messages")
        if isinstance(completion, list) and completion[0]["role"] != "assistant":
            raise DataError(source, number, "completion[0].role", "the completion must start with an assistant turn")
        label = "prompt + completion as messages" if isinstance(prompt, list) else "prompt + completion as text"
        return {"prompt": prompt, "completion": completion}, label
    raise DataError(
        source,
        number,
        None,
        f"no sft fields: expected 'messages' or 'prompt' + 'completion' (found {', '.join(sorted(row)) or 'nothing'})",
    )


def normalize_preference(
    row: dict, source: str, number: int, *, margin_from_scores: float | None = None
) -> dict[str, Any]:
    """A preference row as `{"prompt"?, "chosen", "rejected", "margin"?}`.

    HH-RLHF transcripts become a message-list prompt (the turns both sides share) and message-list completions; a
    text prompt with message-list completions (UltraFeedback) becomes a user turn, and completions that repeat the
    prompt's turns lose them. With `margin_from_scores`, the margin is that factor times
    (score_chosen - score_rejected).
    """
    return classify_preference(row, source, number, margin_from_scores=margin_from_scores)[0]


def classify_preference(
    row: dict, source: str, number: int, *, margin_from_scores: float | None = None
) -> tuple[dict[str, Any], str]:
    """A preference row normalised (see `normalize_preference`), and the name of its format."""
    if "chosen" not in row or "rejected" not in row:
        missing = "chosen" if "chosen" not in row else "rejected"
        raise DataError(source, number, missing, "missing field (preference rows need 'chosen' and 'rejected')")
    out: dict[str, Any] = {}
    has_prompt = "prompt" in row and row["prompt"] is not None
    if not has_prompt and is_hh_transcript(row["chosen"]) and isinstance(row["rejected"], str):
        chosen = parse_hh_transcript(row["chosen"], source, number, "chosen")
        rejected = parse_hh_transcript(row["rejected"], source, number, "rejected")
        out["prompt"], out["chosen"], out["rejected"] = _split_shared_prefix(chosen, rejected, source, number)
        for side in ("chosen", "rejected"):
            if out[side][-1]["role"] != "assistant":
                raise DataError(source, number, side, "HH-RLHF transcript: ends with a 'Human:' turn, not a reply")
        label = "HH-RLHF transcripts (parsed into prompt + chosen/rejected messages)"
    else:
        if has_prompt:
            out["prompt"] = _text_or_messages(row, "prompt", source, number)
        out["chosen"] = _text_or_messages(row, "chosen", source, number)
        out["rejected"] = _text_or_messages(row, "rejected", source, number)
        if out["chosen"] == out["rejected"]:
            raise DataError(source, number, "rejected", "chosen and rejected are identical")
        label = _explicit_pair(out, source, number)
    if "margin" in row and row["margin"] not in (None, ""):
        if margin_from_scores is not None:
            raise DataError(
                source,
                number,
                "margin",
                "the row has a margin and data.margin_from_scores is set: use one or the other",
            )
        out["margin"] = _number(row, "margin", source, number)
        label += " with margin"
    elif margin_from_scores is not None:
        chosen_score = _number(row, "score_chosen", source, number)
        rejected_score = _number(row, "score_rejected", source, number)
        if chosen_score < rejected_score:
            raise DataError(
                source,
                number,
                "score_chosen",
                f"score_chosen ({chosen_score:g}) is below score_rejected ({rejected_score:g}): chosen must be the "
                "preferred response",
            )
        out["margin"] = margin_from_scores * (chosen_score - rejected_score)
        label += " with margin from scores"
    return out, label


def _explicit_pair(out: dict[str, Any], source: str, number: int) -> str:
    """Checks (and, for a text prompt with message-list completions, converts) a non-HH pair; returns its label."""
    prompt, chosen, rejected = out.get("prompt"), out["chosen"], out["rejected"]
    if isinstance(chosen, list) != isinstance(rejected, list):
        raise DataError(source, number, "rejected", "chosen and rejected must both be text or both messages")
    if prompt is None:
        if isinstance(chosen, list) and len(chosen) < 2:
            raise DataError(source, number, "chosen", "without a prompt, chosen/rejected must be whole conversations")
        return (
            "implicit prompt (chosen/rejected are whole conversations)"
            if isinstance(chosen, list)
            else "chosen/rejected as text without a prompt"
        )
    if not isinstance(chosen, list):
        return (
            "prompt + chosen/rejected as messages" if isinstance(prompt, list) else "prompt + chosen/rejected as text"
        )
    # Message-list completions: a text prompt is one user turn, and a completion that repeats the prompt's turns
    # (UltraFeedback repeats the user turn) loses them, so that prompt + completion is the conversation once.
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    repeated = False
    for side in ("chosen", "rejected"):
        turns = out[side]
        if _same_turns(turns[: len(messages)], messages):
            turns, repeated = turns[len(messages) :], True
            if not turns:
                raise DataError(source, number, side, "the conversation only repeats the prompt: no reply")
        if turns[0]["role"] != "assistant":
            raise DataError(
                source,
                number,
                f"{side}[0].role",
                "after the prompt the reply must start with an assistant turn (a repeated user turn must match "
                "the prompt exactly)",
            )
        out[side] = turns
    out["prompt"] = messages
    if out["chosen"] == out["rejected"]:
        raise DataError(source, number, "rejected", "chosen and rejected are identical")
    if isinstance(prompt, str):
        return "text prompt + message-list chosen/rejected" + (
            " repeating the user turn (UltraFeedback style)" if repeated else ""
        )
    return "prompt + chosen/rejected as messages" + (" (repeated prompt turns removed)" if repeated else "")


def _same_turns(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["role"] == y["role"] and x["content"].strip() == y["content"].strip() for x, y in zip(a, b, strict=True)
    )


def _number(row: dict, field: str, source: str, number: int) -> float:
    if field not in row or row[field] in (None, ""):
        raise DataError(source, number, field, "missing field (data.margin_from_scores needs it on every row)")
    try:
        value = float(row[field])
    except (TypeError, ValueError):
        raise DataError(source, number, field, f"expected a number, got {row[field]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise DataError(source, number, field, f"expected a finite number, got {row[field]!r}")
    return value


def normalize_prompt(row: dict, source: str, number: int) -> dict[str, Any]:
    """A prompt row as `{"prompt": [messages ending in a user turn]}` (strings become one user message)."""
    return classify_prompt(row, source, number)[0]


def classify_prompt(row: dict, source: str, number: int) -> tuple[dict[str, Any], str]:
    """A prompt row normalised (see `normalize_prompt`), and the name of its format.

    HH-RLHF rows (`chosen`/`rejected` transcripts, no prompt) give the turns both share, up to the last user turn.
    """
    if "prompt" not in row and "messages" not in row and is_hh_transcript(row.get("chosen")):
        chosen = parse_hh_transcript(row["chosen"], source, number, "chosen")
        if isinstance(row.get("rejected"), str):
            rejected = parse_hh_transcript(row["rejected"], source, number, "rejected")
            messages = _split_shared_prefix(chosen, rejected, source, number)[0]
        else:
            messages = chosen[: max(i for i, m in enumerate(chosen) if m["role"] == "user") + 1]
        return {"prompt": messages}, "HH-RLHF transcripts (prompt: the shared turns up to the last Human turn)"
    field = "prompt" if "prompt" in row else "messages"
    if field == "prompt":
        prompt = _text_or_messages(row, "prompt", source, number)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        label = "prompt as text" if isinstance(prompt, str) else "prompt as messages"
    elif "messages" in row:
        messages = check_messages(row["messages"], source, number, "messages")
        label = "messages ending in a user turn"
    else:
        raise DataError(source, number, "prompt", "missing field (prompt rows need 'prompt' or 'messages')")
    if messages[-1]["role"] != "user":
        raise DataError(source, number, field, "the prompt must end with a user message")
    return {"prompt": [{"role": m["role"], "content": m["content"]} for m in messages]}, label


# Keyed by data shape (what `rlhf.stages.registry.Stage.reads` declares), not by stage.
NORMALIZERS = {"demonstrations": normalize_sft, "preferences": normalize_preference, "prompts": normalize_prompt}
CLASSIFIERS = {"demonstrations": classify_sft, "preferences": classify_preference, "prompts": classify_prompt}


def classify(
    shape: str, row: dict, source: str, number: int, *, margin_from_scores: float | None = None
) -> tuple[dict[str, Any], str]:
    """A row of a stage's data normalised, and the name of its format (what `rlhf validate` reports per file).

    Args:
        shape: 'demonstrations', 'preferences' or 'prompts'.
        row: The row as read from the file or the hub dataset.
        source: The file (or hub dataset and split) for error messages.
        number: The row's 1-based number for error messages.
        margin_from_scores: The reward stage's `data.margin_from_scores` (ignored by the other shapes).

    Raises:
        DataError: The row cannot be used (naming file, row and field).
    """
    if shape == "preferences":
        return classify_preference(row, source, number, margin_from_scores=margin_from_scores)
    return CLASSIFIERS[shape](row, source, number)


def load_records(
    path: str, shape: str, max_rows: int | None = None, *, margin_from_scores: float | None = None
) -> list[dict[str, Any]]:
    """Reads and checks a stage's data file, returning normalised rows.

    Args:
        path: A data file (see `read_rows`).
        shape: 'demonstrations', 'preferences' or 'prompts'.
        max_rows: Keep only the first N rows.
        margin_from_scores: The reward stage's `data.margin_from_scores`.

    Raises:
        DataError: The first bad row, naming file, row and field.
    """
    records = []
    for number, row in read_rows(path):
        records.append(classify(shape, row, str(path), number, margin_from_scores=margin_from_scores)[0])
        if max_rows is not None and len(records) >= max_rows:
            break
    if not records:
        raise DataError(str(path), None, None, "no rows")
    return records


def check_stage_data(train: str, eval_: str | None, shape: str) -> dict[str, int]:
    """Checks a stage's local data files (hub datasets are checked when loaded); returns row counts per file."""
    counts = {}
    for path in (train, eval_):
        if path is not None and is_data_file(path):
            counts[path] = len(load_records(path, shape))
    return counts
