"""`rlhf voice check`: audit a file of replies against a voice spec (per-rule table, worst replies, HTML report).

Beside the spec's rules, the audit shows what the spec cannot see, from the customer's message alone
(`reward_models.support_reply`, domain-free): the signed name greeted, no reference or amount the message did not give,
the message's subject covered, coherence.

Rows are read with `rlhf.data.readers` (JSONL, JSON, CSV, Parquet), so a bad file fails with the file, row and field.
A prompt or reply cell may be a string or a message list (its last message's content is used). No torch.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reward_models import support_reply
from rlhf.data.readers import DataError, read_rows
from rlhf.voice.scorer import VoiceScorer


@dataclass
class ScoredReply:
    """One reply of the audited file with its score and per-rule explanation."""

    row: int
    prompt: str
    reply: str
    score: float
    rules: dict[str, float]
    content: dict[str, float | None]  # support_reply's rules (None: does not apply to this message)

    @property
    def violations(self) -> list[str]:
        """The rules this reply does not fully meet."""
        return [rule for rule, value in self.rules.items() if value < 1.0]


@dataclass
class RuleSummary:
    """How the audited replies do on one rule (`total`: the replies it applies to)."""

    name: str
    weight: float
    mean: float
    met: int
    total: int


@dataclass
class CheckReport:
    """The audit of one file: every scored reply and a summary per rule."""

    source: str
    company: str
    replies: list[ScoredReply]
    rules: list[RuleSummary]
    content: list[RuleSummary]  # support_reply's rules, over the replies each applies to

    @property
    def mean_score(self) -> float:
        """Mean weighted score over all replies."""
        return sum(r.score for r in self.replies) / len(self.replies)

    @property
    def on_voice(self) -> int:
        """Replies that meet every rule."""
        return sum(not r.violations for r in self.replies)

    def worst(self, n: int) -> list[ScoredReply]:
        """The `n` lowest-scoring replies, lowest first (file order among equal scores)."""
        return sorted(self.replies, key=lambda r: (r.score, r.row))[:n]


def text_cell(value: Any, source: str, row: int, field: str) -> str:
    """A prompt or reply cell as text: a string, or a message list's last content.

    Raises:
        DataError: The cell is missing, empty, or neither a string nor a list of messages with string content.
    """
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content")  # a message's content key, not configuration
    if value is None:
        raise DataError(source, row, field, "missing or null: every row needs it (name the column with its flag)")
    if not isinstance(value, str):
        raise DataError(source, row, field, f"expected text or a list of messages, got {type(value).__name__}")
    if not value.strip():
        raise DataError(source, row, field, "empty text: drop the row or fill it in")
    return value


def check_file(scorer: VoiceScorer, path: str | Path, prompt_column: str, reply_column: str) -> CheckReport:
    """Scores every reply of a file against a compiled voice spec.

    Args:
        scorer: The compiled spec.
        path: A .jsonl, .json, .csv or .parquet file with a prompt and a reply column.
        prompt_column: Name of the customer-message column.
        reply_column: Name of the reply column.

    Returns:
        The report: each reply's score and rules, and each rule's mean and number of replies meeting it.

    Raises:
        DataError: The file cannot be read, has no rows, or a row lacks a column or has an empty cell.
    """
    source = str(path)
    replies = []
    for number, row in read_rows(path):
        prompt = text_cell(row.get(prompt_column), source, number, prompt_column)
        reply = text_cell(row.get(reply_column), source, number, reply_column)
        rules = scorer.explain_one(prompt, reply)
        content = support_reply.explain_one(prompt, reply)
        replies.append(ScoredReply(number, prompt, reply, scorer.weighted_score(rules), rules, content))
    if not replies:
        raise DataError(source, None, None, "no rows to check")
    summaries = [
        RuleSummary(
            name=rule,
            weight=weight,
            mean=sum(r.rules[rule] for r in replies) / len(replies),
            met=sum(r.rules[rule] >= 1.0 for r in replies),
            total=len(replies),
        )
        for rule, weight in scorer.weights.items()
    ]
    content = []
    for rule, weight in support_reply.RULE_WEIGHTS.items():
        values = [r.content[rule] for r in replies if r.content[rule] is not None]
        mean = sum(values) / len(values) if values else float("nan")
        # A partial score can be a match (half the message's subject words covered, the name used but not greeted):
        # `met` counts scores at the judge's own match threshold, as compare's match rates do.
        content.append(RuleSummary(rule, weight, mean, sum(v >= support_reply.MATCH for v in values), len(values)))
    return CheckReport(source, scorer.spec.company, replies, summaries, content)


def format_report(report: CheckReport, worst: int) -> str:
    """The plain-text report: overall numbers, the per-rule table and the `worst` lowest replies."""
    n = len(report.replies)
    lines = [
        f"{report.source}: {n} replies against the {report.company} voice",
        f"mean score {report.mean_score:.3f}; on-voice (every rule met) {report.on_voice}/{n} "
        f"({report.on_voice / n:.0%})",
        "",
        f"{'rule':<24} {'weight':>6} {'mean':>6} {'met':>7} {'broken':>7}",
    ]
    for rule in report.rules:
        lines.append(
            f"{rule.name:<24} {rule.weight:>6.2f} {rule.mean:>6.3f} {rule.met / n:>7.0%} {rule.total - rule.met:>7}"
        )
    lines += [
        "",
        "content, from the customer's message alone (reward_models/support_reply; the spec's rules do not see it):",
        f"{'rule':<24} {'applies':>7} {'mean':>6} {'match':>7} {'below':>7}",
    ]
    for rule in report.content:
        met = f"{rule.met / rule.total:>7.0%}" if rule.total else f"{'-':>7}"
        lines.append(f"{'content/' + rule.name:<24} {rule.total:>7} {rule.mean:>6.3f} {met} {rule.total - rule.met:>7}")
    lines += ["", f"worst {min(worst, n)} replies:"]
    for reply in report.worst(worst):
        lines.append(f"  row {reply.row}: score {reply.score:.3f}; breaks {', '.join(reply.violations) or 'nothing'}")
        lines.append(f"    {_snippet(reply.reply)}")
    return "\n".join(lines)


def write_html(report: CheckReport, out: str | Path, worst: int) -> Path:
    """Writes a small self-contained HTML report (no scripts, no external files).

    Args:
        report: The audit.
        out: The HTML file to write; its directory is created.
        worst: How many of the lowest replies to show in full.

    Returns:
        The path written.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    e = html.escape
    n = len(report.replies)
    rule_rows = "".join(
        f"<tr><td>{e(r.name)}</td><td>{r.weight:.2f}</td><td>{r.mean:.3f}</td><td>{r.met / n:.0%}</td>"
        f"<td>{r.total - r.met}</td></tr>"
        for r in report.rules
    )
    content_rows = "".join(
        f"<tr><td>{e(r.name)}</td><td>{r.total}</td><td>{r.mean:.3f}</td>"
        f"<td>{f'{r.met / r.total:.0%}' if r.total else '-'}</td><td>{r.total - r.met}</td></tr>"
        for r in report.content
    )
    worst_rows = "".join(
        f"<tr><td>{r.row}</td><td>{r.score:.3f}</td><td>{e(', '.join(r.violations) or '-')}</td>"
        f"<td>{e(r.prompt)}</td><td><pre>{e(r.reply)}</pre></td></tr>"
        for r in report.worst(worst)
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(report.company)} voice check</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;vertical-align:top;text-align:left}}pre{{white-space:pre-wrap;margin:0}}</style></head><body>
<h1>{e(report.company)} voice check</h1>
<p>{e(report.source)}: {n} replies; mean score {report.mean_score:.3f}; on-voice (every rule met)
{report.on_voice}/{n} ({report.on_voice / n:.0%}).</p>
<h2>Rules</h2>
<table><tr><th>rule</th><th>weight</th><th>mean</th><th>met</th><th>broken</th></tr>{rule_rows}</table>
<h2>Content, from the customer's message alone</h2>
<p>reward_models/support_reply: what the spec's rules do not see (the signed name greeted, no reference or amount the
message did not give, the message's subject, coherence). Match: a rule score of at least {support_reply.MATCH}.</p>
<table><tr><th>rule</th><th>applies</th><th>mean</th><th>match</th><th>below</th></tr>{content_rows}</table>
<h2>Worst replies</h2>
<table><tr><th>row</th><th>score</th><th>breaks</th><th>message</th><th>reply</th></tr>{worst_rows}</table>
</body></html>
"""
    out.write_text(page, encoding="utf-8")
    return out


def _snippet(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."
