"""`rlhf voice pairs`: a company's support logs (customer message -> agent reply) into the pipeline's data files.

Steps: read the logs (`rlhf.data.readers`, so bad rows fail with file, row and field), scrub PII
(`rlhf.voice.scrub`), drop exact duplicates, label every reply with the compiled spec, split by customer or thread
(optionally the newest groups held out) so that no customer, thread or prompt is in two splits, then write:

- `sft_train.jsonl`, `sft_eval.jsonl`: the on-voice replies as demonstrations (`messages`);
- `prefs_train.jsonl`, `prefs_eval.jsonl`: preference pairs (`prompt`, `chosen`, `rejected`, `rule`, `source`):
  `rewrite` pairs put an on-voice reply over a rewrite of it that breaks exactly `rule` (`rlhf.voice.rewrite`);
  `logs` pairs put an on-voice reply to the most similar message of the same split over an off-voice reply from the
  logs (`rule`: the rules it breaks, joined by '+'). Each pair is picked so that, rule by rule, the chosen reply is
  about as often longer as shorter than the rejected one (`length_balance` in the summary): a reward model trained
  on them cannot score length instead of the rules;
- `ppo_prompts.jsonl` (train prompts) and `eval_prompts.jsonl` (held-out prompts, for ppo eval and compare);
- `summary.json`: rows in, dropped and why, PII replaced per kind, on-voice share (overall and per agent), rows and
  groups per split, pairs per rule, length balance of the pairs.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rlhf.config import LogColumns, PairsOptions
from rlhf.data.readers import DataError, read_rows
from rlhf.voice.check import text_cell
from rlhf.voice.rewrite import rewrites, sentences, split_reply
from rlhf.voice.scorer import VoiceScorer
from rlhf.voice.scrub import PII_PATTERNS, PLACEHOLDER, Scrubber
from rlhf.voice.spec import normalise

SPLITS = ("train", "eval", "held_out")


@dataclass
class LogRow:
    """One customer message and the agent's reply, with the optional columns the log has."""

    row: int
    message: str
    reply: str
    thread: str | None = None
    customer: str | None = None
    timestamp: datetime | None = None
    agent: str | None = None
    violations: list[str] = field(default_factory=list)


def read_logs(path: str | Path, columns: LogColumns, needed: tuple[str, ...] = ()) -> list[LogRow]:
    """Reads a support log.

    Args:
        path: A .jsonl, .json, .csv or .parquet file.
        columns: The column names.
        needed: Optional columns (attribute names of `LogColumns`: 'customer', 'thread', 'timestamp') that every
            row must have, because the split uses them.

    Returns:
        The rows in file order.

    Raises:
        DataError: Unreadable file (e.g. not UTF-8), no rows, a missing column, an empty message or reply, or an
            unparsable timestamp; located by file, row and field.
    """
    source = str(path)
    rows = []
    for number, raw in read_rows(path):
        for name in ("message", "reply", *needed):
            column = getattr(columns, name)
            if raw.get(column) is None or str(raw.get(column)).strip() == "":
                have = ", ".join(sorted(raw)) or "none"
                raise DataError(source, number, column, f"missing or empty (the row's columns: {have})")
        log = LogRow(
            row=number,
            message=text_cell(raw.get(columns.message), source, number, columns.message),
            reply=text_cell(raw.get(columns.reply), source, number, columns.reply),
            thread=_optional(raw.get(columns.thread)),
            customer=_optional(raw.get(columns.customer)),
            agent=_optional(raw.get(columns.agent)),
        )
        if "timestamp" in needed:
            try:
                log.timestamp = datetime.fromisoformat(str(raw[columns.timestamp]))
            except ValueError:
                raise DataError(
                    source, number, columns.timestamp, f"not an ISO 8601 time: {raw[columns.timestamp]!r}"
                ) from None
        rows.append(log)
    if not rows:
        raise DataError(source, None, None, "no rows")
    return rows


def _optional(value: object) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value)


def needed_columns(options: PairsOptions) -> tuple[str, ...]:
    """The optional log columns every row must have for these options: the split's group, and the time with by_time."""
    return tuple(
        name
        for name in (options.split_by, "timestamp" if options.by_time else None)
        if name in ("customer", "thread", "timestamp")
    )


def make_pairs(scorer: VoiceScorer, logs: list[LogRow], out_dir: str | Path, options: PairsOptions) -> dict:
    """Turns labelled-free support logs into the pipeline's data files (see the module docstring).

    Args:
        scorer: The compiled voice spec that labels replies.
        logs: The rows of `read_logs`.
        out_dir: Directory to write into (created).
        options: Split, scrub and pairing settings (`rlhf.config.PairsOptions`, or the pairs stage's recipe).

    Returns:
        The summary also written to `summary.json`.

    Raises:
        DataError: Too few groups to make three splits, or no on-voice reply in the training split.
    """
    summary: dict = {"rows_in": len(logs), "dropped": {}, "pii_replaced": dict.fromkeys(PII_PATTERNS, 0)}
    if options.scrub:
        _scrub(logs, summary["pii_replaced"])
    logs = _drop_duplicates(logs, summary["dropped"])
    for log in logs:
        log.violations = scorer.violations(log.message, log.reply)
    on_voice = [log for log in logs if not log.violations]
    summary["on_spec_share"] = round(len(on_voice) / len(logs), 4)
    agents = sorted({log.agent for log in logs if log.agent is not None})
    if agents:
        summary["on_spec_share_by_agent"] = {
            agent: round(sum(not g.violations for g in group) / len(group), 4)
            for agent in agents
            for group in [[log for log in logs if log.agent == agent]]
        }
    splits = split_logs(logs, options)
    summary["splits"] = {
        name: {"rows": len(rows), "groups": len({_group_key(r, options.split_by) for r in rows})}
        for name, rows in splits.items()
    }
    donors = _donors(scorer, logs)
    files = {
        "sft_train": [_sft_row(r) for r in splits["train"] if not r.violations],
        "sft_eval": [_sft_row(r) for r in splits["eval"] if not r.violations],
        "prefs_train": _pairs(scorer, splits["train"], donors, options),
        "prefs_eval": _pairs(scorer, splits["eval"], donors, options),
        "ppo_prompts": _prompt_rows(splits["train"]),
        "eval_prompts": _prompt_rows(splits["held_out"]),
    }
    if not files["sft_train"] or not files["prefs_train"]:
        raise DataError(
            str(out_dir),
            None,
            None,
            "no on-voice reply in the training split: check the spec against the logs first (`rlhf voice check`)",
        )
    pairs = Counter((row["rule"], row["source"]) for name in ("prefs_train", "prefs_eval") for row in files[name])
    summary["pairs_per_rule"] = {
        rule: {source: n for (r, source), n in sorted(pairs.items()) if r == rule}
        for rule in sorted({rule for rule, _ in pairs})
    }
    summary["length_balance"] = length_balance(files["prefs_train"] + files["prefs_eval"])
    summary["files"] = {name: len(rows) for name, rows in files.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        with (out_dir / f"{name}.jsonl").open("w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def summary_lines(summary: dict, logs: str | Path, out_dir: str | Path, options: PairsOptions) -> list[str]:
    """The summary of `make_pairs` as the lines `rlhf voice pairs` prints and the pairs stage logs."""
    dropped = ", ".join(f"{why} {n}" for why, n in summary["dropped"].items()) or "none"
    lines = [
        f"{logs}: {summary['rows_in']} rows in; dropped: {dropped}",
        "PII replaced: " + ", ".join(f"{kind} {n}" for kind, n in summary["pii_replaced"].items()),
        f"on-voice share of the logs: {summary['on_spec_share']:.0%}",
    ]
    lines += [
        f"  {name}: {split['rows']} rows, {split['groups']} {options.split_by} groups"
        for name, split in summary["splits"].items()
    ]
    lines.append(
        "pairs per rule: "
        + "; ".join(
            f"{rule} " + ", ".join(f"{source} {n}" for source, n in by.items())
            for rule, by in summary["pairs_per_rule"].items()
        )
    )
    return lines + [f"{Path(out_dir) / (name + '.jsonl')}: {n} rows" for name, n in summary["files"].items()]


def _scrub(logs: list[LogRow], counts: dict[str, int]) -> None:
    # One scrubber per thread: a placeholder means the same value across the thread's turns, and nothing beyond it.
    scrubbers: dict[str, Scrubber] = {}
    for log in logs:
        scrubber = scrubbers.setdefault(log.thread or f"row {log.row}", Scrubber())
        log.message, log.reply = scrubber.scrub(log.message), scrubber.scrub(log.reply)
        if log.customer is not None:
            log.customer = scrubber.scrub(log.customer)
    for scrubber in scrubbers.values():
        for kind, n in scrubber.counts.items():
            counts[kind] += n


def _drop_duplicates(logs: list[LogRow], dropped: dict[str, int]) -> list[LogRow]:
    seen, kept = set(), []
    for log in logs:
        key = (normalise(log.message), normalise(log.reply))
        if key not in seen:
            seen.add(key)
            kept.append(log)
    if len(kept) < len(logs):
        dropped["duplicate message and reply"] = len(logs) - len(kept)
    return kept


def _group_key(log: LogRow, split_by: str) -> str:
    return {"customer": log.customer, "thread": log.thread}.get(split_by) or f"row {log.row}"


def split_logs(logs: list[LogRow], options: PairsOptions) -> dict[str, list[LogRow]]:
    """Whole groups (customers or threads) per split; groups sharing a prompt are merged so no prompt crosses."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    by_prompt: dict[str, str] = {}
    for log in logs:
        group = find(_group_key(log, options.split_by))
        other = by_prompt.setdefault(normalise(log.message), group)
        if find(other) != group:
            parent[group] = find(other)
    groups: dict[str, list[LogRow]] = {}
    for log in logs:
        groups.setdefault(find(_group_key(log, options.split_by)), []).append(log)
    if len(groups) < 3:
        raise DataError("logs", None, None, f"only {len(groups)} {options.split_by} groups: need at least 3 to split")
    order = sorted(groups)
    random.Random(options.seed).shuffle(order)
    if options.by_time:  # the newest groups are held out, as a deployment would meet them
        order.sort(key=lambda g: max(log.timestamp for log in groups[g]), reverse=True)
    splits: dict[str, list[LogRow]] = {name: [] for name in SPLITS}
    targets = {"held_out": options.held_out_share * len(logs), "eval": options.eval_share * len(logs)}
    for key in order:
        name = next((s for s in ("held_out", "eval") if len(splits[s]) < max(targets[s], 1)), "train")
        splits[name].extend(groups[key])
    for rows in splits.values():
        rows.sort(key=lambda log: log.row)
    return splits


def _donors(scorer: VoiceScorer, logs: list[LogRow]) -> dict[str, list[str]]:
    """Sentences from the logs that break one avoid rule (to break it the company's way), and on-voice sentences to
    pad with for the length rule."""
    donors: dict[str, list[str]] = {}
    sign_off = scorer.spec.sign_off.text
    for log in logs:
        body, _ = split_reply(log.reply, sign_off)
        for sentence in (s for line in body for s in sentences(line)):
            # Greetings are too short to pad with; a placeholder means something else in another conversation.
            if len(sentence.split()) < 4 or PLACEHOLDER.search(sentence):
                continue
            text = normalise(sentence)
            avoid = [name for name, found in scorer.avoid_rules.items() if any(p.search(text) for p in found)]
            if len(avoid) == 1:
                donors.setdefault(avoid[0], []).append(sentence)
            elif not log.violations and not avoid:
                donors.setdefault(scorer.spec.length.name, []).append(sentence)
    return {rule: list(dict.fromkeys(found)) for rule, found in donors.items()}


def _direction(chosen: str, rejected: str) -> int:
    """+1 when the chosen reply has more words than the rejected one, -1 when fewer, 0 when as many."""
    difference = len(chosen.split()) - len(rejected.split())
    return (difference > 0) - (difference < 0)


def _pick(options: Iterator[tuple[str, str]], balances: tuple[int, int]) -> tuple[str, str] | None:
    """The (chosen, rejected) option that best keeps two length balances near 0; None when there is no option.

    A balance counts pairs so far whose chosen reply is longer minus those whose chosen reply is shorter: the
    rule's own, then all pairs'. Options are ranked by: does not push the rule's balance away from 0, then does not
    push the overall one away, then brings the overall one back; the first option ranked best wins, and options are
    generated lazily, so the search stops there.
    """

    def rank(direction: int) -> tuple[bool, bool, bool]:
        rule, overall = balances
        return (rule * direction > 0, overall * direction > 0, overall != 0 and overall * direction >= 0)

    best, best_rank = None, None
    for chosen, rejected in options:
        option_rank = rank(_direction(chosen, rejected))
        if best_rank is None or option_rank < best_rank:
            best, best_rank = (chosen, rejected), option_rank
            if not any(best_rank):
                break
    return best


def _pairs(scorer: VoiceScorer, rows: list[LogRow], donors: dict[str, list[str]], options: PairsOptions) -> list[dict]:
    on_voice = [r for r in rows if not r.violations]
    # Pairs whose chosen reply is longer minus pairs whose chosen reply is shorter, per rule and over all pairs
    # (key None). Picking each pair to keep both near 0 makes length useless for telling chosen from rejected; the
    # log pairs come first because they offer the least choice.
    balance: Counter[str | None] = Counter()

    def add(prompt: str, picked: tuple[str, str], rule: str, source: str, out: list[dict]) -> None:
        for key in (rule, None):
            balance[key] += _direction(*picked)
        out.append(_pair(prompt, *picked, rule, source))

    from_logs: list[dict] = []
    words = {id(r): set(normalise(r.message).split()) for r in rows}
    for log in (r for r in rows if r.violations):
        similar = []
        for candidate in on_voice:
            a, b = words[id(log)], words[id(candidate)]
            similarity = len(a & b) / len(a | b)
            if similarity >= options.min_similarity:
                similar.append((similarity, candidate.row, candidate))
        # The most similar message's reply, unless a less similar one (still above the threshold) balances length.
        similar.sort(key=lambda found: (-found[0], found[1]))
        rule = "+".join(log.violations)
        # A reply on-voice for its own message may not be for this one (the greeting names that customer).
        fits = (c.reply for _, _, c in similar if not scorer.violations(log.message, c.reply))
        picked = _pick(((reply, log.reply) for reply in fits), (balance[rule], balance[None]))
        if picked is not None:
            add(log.message, picked, rule, "logs", from_logs)
    rules = list(scorer.weights)
    rewritten: list[dict] = []
    for i, log in enumerate(on_voice):
        # Rotate the first rule tried so every rule gets pairs; fall through to the next when no rewrite works.
        for rule in rules[i % len(rules) :] + rules[: i % len(rules)]:
            found = rewrites(scorer, rule, log.message, log.reply, donors)
            picked = _pick(((log.reply, rewrite) for rewrite in found), (balance[rule], balance[None]))
            if picked is not None:
                add(log.message, picked, rule, "rewrite", rewritten)
                break
    return rewritten + from_logs


def length_balance(pairs: list[dict]) -> dict:
    """How often the chosen reply is longer than the rejected one (in words), overall and per source.

    Args:
        pairs: Rows of the preference files (`chosen`, `rejected` as one assistant message each, and `source`).

    Returns:
        {"chosen_longer", "chosen_shorter", "same_length": counts, "share_chosen_longer": share of the pairs that
        differ in length, "mean_word_difference": mean chosen minus rejected words, "by_source": the same per
        source}. A share near 0.5 and a difference near 0 mean length does not tell chosen from rejected.
    """

    def describe(rows: list[dict]) -> dict:
        differences = [len(r["chosen"][0]["content"].split()) - len(r["rejected"][0]["content"].split()) for r in rows]
        longer, shorter = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
        return {
            "chosen_longer": longer,
            "chosen_shorter": shorter,
            "same_length": len(rows) - longer - shorter,
            "share_chosen_longer": round(longer / max(longer + shorter, 1), 4),
            "mean_word_difference": round(sum(differences) / max(len(rows), 1), 2),
        }

    sources = sorted({r["source"] for r in pairs})
    return {**describe(pairs), "by_source": {s: describe([r for r in pairs if r["source"] == s]) for s in sources}}


def _pair(prompt: str, chosen: str, rejected: str, rule: str, source: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "rule": rule,
        "source": source,
    }


def _sft_row(log: LogRow) -> dict:
    return {"messages": [{"role": "user", "content": log.message}, {"role": "assistant", "content": log.reply}]}


def _prompt_rows(rows: list[LogRow]) -> list[dict]:
    prompts = dict.fromkeys(log.message for log in rows)
    return [{"prompt": [{"role": "user", "content": message}]} for message in prompts]
