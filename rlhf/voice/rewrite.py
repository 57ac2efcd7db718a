"""Counterfactual rewrites: an on-voice reply changed so that it breaks exactly one rule of the spec.

Each rewrite is checked with the compiled scorer: it is kept only when the rule it targets is the one and only rule
the rewritten reply breaks, so a preference pair (original over rewrite) teaches one thing. Standard library only.
"""

from __future__ import annotations

import re

from rlhf.voice.scorer import VoiceScorer
from rlhf.voice.spec import normalise

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_reply(reply: str, sign_off: str) -> tuple[list[str], str | None]:
    """(body lines, sign-off line or None): the sign-off is the last non-empty line when it matches."""
    lines = reply.rstrip().split("\n")
    if lines and normalise(lines[-1]) == normalise(sign_off):
        return lines[:-1], lines[-1]
    return lines, None


def sentences(text: str) -> list[str]:
    """The text's sentences (split after '.', '!' or '?')."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def _join(body: list[str], sign_off: str | None) -> str:
    lines = [line for line in body if line.strip()]
    return "\n".join(lines + ([sign_off] if sign_off else []))


def _insert_before_sign_off(reply: str, sign_off: str, sentence: str) -> str:
    body, closing = split_reply(reply, sign_off)
    body = [*body[:-1], f"{body[-1]} {sentence}"] if body else [sentence]
    return _join(body, closing)


def break_rule(scorer: VoiceScorer, rule: str, prompt: str, reply: str, donors: dict[str, list[str]]) -> str | None:
    """Rewrites an on-voice reply so that it breaks `rule` and no other rule.

    Args:
        scorer: The compiled spec.
        rule: The rule to break (a name from `scorer.weights`).
        prompt: The customer's message.
        reply: An on-voice reply (no violations).
        donors: Rule name -> sentences that break it, taken from the company's own off-voice replies (used first,
            in order, so the rewrite reads like the logs), and for the length rule on-voice sentences to pad with.

    Returns:
        The rewritten reply, or None when no rewrite breaks exactly `rule`.
    """
    spec = scorer.spec
    sign_off = spec.sign_off.text
    candidates: list[str] = []
    if rule == spec.sign_off.name:
        body, closing = split_reply(reply, sign_off)
        if closing is not None:
            candidates.append(_join(body, None))
    elif rule == spec.structure.name:
        body, closing = split_reply(reply, sign_off)
        for step in scorer.steps:
            # Drop every sentence that shows this step; the other steps usually survive.
            kept = [" ".join(s for s in sentences(line) if not step.found(normalise(s))) for line in body]
            candidates.append(_join(kept, closing))
    elif rule in scorer.avoid_rules:
        rule_spec = spec.avoid_rule(rule)
        sentences_ = donors.get(rule, []) + [f"{p[0].upper()}{p[1:]}." for p in rule_spec.phrases]
        candidates += [_insert_before_sign_off(reply, sign_off, s) for s in sentences_]
    elif rule == spec.length.name:
        padding = [s for s in donors.get(rule, []) if s not in reply]
        body, closing = split_reply(reply, sign_off)
        extra: list[str] = []
        while padding and len(" ".join(body + extra).split()) <= spec.length.max_words * 1.15:
            extra.append(padding.pop(0))
        if extra:
            candidates.append(_join([*body, " ".join(extra)], closing))
    for candidate in candidates:
        if candidate != reply and scorer.violations(prompt, candidate) == [rule]:
            return candidate
    return None
