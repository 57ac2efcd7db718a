"""Counterfactual rewrites: an on-voice reply changed so that it breaks exactly one rule of the spec.

Each rewrite is checked with the compiled scorer: it is kept only when the rule it targets is the one and only rule
the rewritten reply breaks, so a preference pair (original over rewrite) teaches one thing. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterator

from rlhf.voice.scorer import VoiceScorer
from rlhf.voice.spec import normalise, sentences


def split_reply(reply: str, sign_off: str) -> tuple[list[str], str | None]:
    """(body lines, sign-off line or None): the sign-off is the last non-empty line when it matches."""
    lines = reply.rstrip().split("\n")
    if lines and normalise(lines[-1]) == normalise(sign_off):
        return lines[:-1], lines[-1]
    return lines, None


def _join(body: list[str], sign_off: str | None) -> str:
    lines = [line for line in body if line.strip()]
    return "\n".join(lines + ([sign_off] if sign_off else []))


def _insert_before_sign_off(reply: str, sign_off: str, sentence: str) -> str:
    body, closing = split_reply(reply, sign_off)
    body = [*body[:-1], f"{body[-1]} {sentence}"] if body else [sentence]
    return _join(body, closing)


def _replacing_each_sentence(reply: str, sign_off: str, sentence: str) -> Iterator[str]:
    # The last sentence first: before the sign-off it is usually the next step, which no structure step needs.
    body, closing = split_reply(reply, sign_off)
    split = [sentences(line) for line in body]
    for i in reversed(range(len(split))):
        for j in reversed(range(len(split[i]))):
            line = " ".join([*split[i][:j], sentence, *split[i][j + 1 :]])
            yield _join([*body[:i], line, *body[i + 1 :]], closing)


def _words(text: str) -> int:
    return len(text.split())


def rewrites(scorer: VoiceScorer, rule: str, prompt: str, reply: str, donors: dict[str, list[str]]) -> Iterator[str]:
    """Rewrites of an on-voice reply that each break `rule` and no other rule, the plainest first.

    Besides the plain edit (drop the sign-off, drop a step's sentences, add an offending sentence, pad past the
    bound) it yields length-keeping ones (the dropped words replaced by on-voice filler, an offending sentence in
    place of one of the reply's), so that `rlhf voice pairs` can pick rejected replies that are as often longer as
    shorter than the chosen one and a reward model trained on the pairs cannot learn length instead of the rule.

    Args:
        scorer: The compiled spec.
        rule: The rule to break (a name from `scorer.weights`).
        prompt: The customer's message.
        reply: An on-voice reply (no violations).
        donors: Rule name -> sentences that break it, taken from the company's own off-voice replies (used first,
            in order, so the rewrite reads like the logs), and for the length rule on-voice sentences to pad with.

    Yields:
        Rewritten replies, each checked with the scorer: its only violation is `rule`.
    """
    for candidate in _candidates(scorer, rule, prompt, reply, donors):
        if candidate != reply and scorer.violations(prompt, candidate) == [rule]:
            yield candidate


def _candidates(scorer: VoiceScorer, rule: str, prompt: str, reply: str, donors: dict[str, list[str]]) -> Iterator[str]:
    spec = scorer.spec
    sign_off = spec.sign_off.text
    body, closing = split_reply(reply, sign_off)
    filler = [s for s in donors.get(spec.length.name, []) if s not in reply]
    if rule == spec.sign_off.name and closing is not None:
        yield _join(body, None)
        # The sign-off's words replaced by an on-voice sentence of about the same length.
        for sentence in sorted(filler, key=lambda s: abs(_words(s) - _words(closing)))[:3]:
            yield _insert_before_sign_off(_join(body, None), sign_off, sentence)
    elif rule == spec.structure.name:
        for step in scorer.steps:
            # Drop every sentence that shows this step; the other steps usually survive.
            kept = [" ".join(s for s in sentences(line) if not step.found(normalise(s))) for line in body]
            yield _join(kept, closing)
            missing = _words(reply) - _words(_join(kept, closing))
            extra = [s for s in filler if not step.found(normalise(s))]
            # The shortest filler at least as long as what was dropped, so that the rewrite is not the shorter reply.
            extra.sort(key=lambda s: (_words(s) < missing, abs(_words(s) - missing)))
            if extra:
                yield _join([*kept, extra[0]], closing)
    elif rule in scorer.avoid_rules:
        rule_spec = spec.avoid_rule(rule)
        offending = donors.get(rule, []) + [f"{p[0].upper()}{p[1:]}." for p in rule_spec.phrases]
        for sentence in offending:
            yield _insert_before_sign_off(reply, sign_off, sentence)
            yield from _replacing_each_sentence(reply, sign_off, sentence)
    elif spec.greeting is not None and rule == spec.greeting.name and body:
        # The general greeting where the customer gave a name, or no greeting at all.
        general = spec.greeting.without_name
        if scorer.customer_name(prompt) is not None:
            yield _join([general, *body[1:]], closing)
        yield _join(body[1:], closing)
    elif spec.sentences is not None and rule == spec.sentences.name:
        # An unfinished last sentence (its full stop dropped), then one cut short to a fragment.
        for i in reversed(range(len(body))):
            if body[i].rstrip().endswith((".", "?")):
                yield _join([*body[:i], body[i].rstrip()[:-1], *body[i + 1 :]], closing)
                last = sentences(body[i])[-1]
                fragment = " ".join(last.split()[: spec.sentences.min_words - 1]).rstrip(",;") + "."
                yield _join([*body[:i], body[i].replace(last, fragment), *body[i + 1 :]], closing)
                break
    elif spec.intents is not None and rule == spec.intents.name:
        # Drop the sentences that meet the message's intent requirements.
        required = [require for _, when, require in scorer.intents if when.search(normalise(prompt))]
        kept = [
            " ".join(s for s in sentences(line) if not any(r.search(normalise(s)) for r in required)) for line in body
        ]
        yield _join(kept, closing)
    elif rule == spec.length.name:
        extra: list[str] = []
        while filler and _words(" ".join(body + extra)) <= spec.length.max_words * 1.15:
            extra.append(filler.pop(0))
        if extra:
            yield _join([*body, " ".join(extra)], closing)
