"""Content judge for any customer-support reply: does it answer the message it replies to? Reads only that message.

Ridgeline's judge (`reward_models.support_content`) knows the shop's intents and catalogue. A brand that brings its
own logs (the bank recipe) has no such judge, and its report would hold only the proxy and the voice spec's judge,
which labelled the training pairs. This judge needs nothing but the customer's message, so it works for any domain,
and it shares nothing with a voice spec or the pairs built from it. Rules, each in [0, 1] or None where it does not
apply:

- `topic`: the reply speaks to the message's subject. The message's subject words are its words of four or more
  letters other than greetings, sign-offs, politeness, time words, placeholders and the customer's name; the reply
  covers one when a word of the reply contains its stem (-ing, -ed, -es, -s dropped, at most five letters: "locking"
  is covered by "locked" and "unlocked"). 1 if it covers at least half of them (at least one), 0 if none, in
  proportion in between; None when the message has no subject word. Lexical, so it is weak on intent: a reply to
  another request that names the same product covers part of the message too (see `TOPIC_SHARE`).
- `name`: applies when the message is signed ("Thanks, Omar", "Regards, Tomas Schmidt", "- Leo", or a capitalised
  name alone at the end): 1 if the reply's greeting names the customer (first name, full name, or the family name of
  a full signature, with or without a title: "Dear Ms Rossi"), 0.5 if the name appears later only, 0.25 if the
  reply names nobody, 0 if it greets someone else. `no_invented_name` applies to unsigned messages instead: 0 if the
  reply greets a name. They share one weight.
- `references`: every specific the reply cites comes from the message: placeholders of scrubbed personal data
  (`<ORDER_1>`, `<ADDRESS_1>`), amounts with a currency sign, and numbers of three or more digits (card endings,
  order numbers, years), except a number the reply introduces as its own case, ticket or tracking reference. 1 if
  all come from the message, 0 if any does not (a made-up order number, a wrong amount); None when the reply cites
  none.
- `coherence`: the share of well-formed sentences, scaled down for looping text (as in `support_content`).

`score` is the `RULE_WEIGHTS`-weighted mean of the rules that apply. Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from reward_models.support_content import coherence, weighted_scores

SHARES_WITH_TRAINING = (
    "Nothing with the training labels: it reads only the customer's message and the reply (no ground-truth columns, "
    "no voice spec, no reply templates); its word lists are greetings, sign-offs and politeness, not domain terms."
)
"""What this judge has in common with the signal the policy was trained on, shown in the compare report."""

RULE_WEIGHTS = {"topic": 0.4, "name": 0.2, "no_invented_name": 0.2, "references": 0.2, "coherence": 0.2}
"""Weight of each rule in `score` (`name` and `no_invented_name` never both apply); keys are those of `explain`."""

MATCH = 0.5
"""A rule score at or above this counts as a match (e.g. the topic-match rate in the compare report)."""

TOPIC_SHARE = 1 / 2
"""The share of the message's subject words a reply must cover to score 1 on `topic`. Measured on Ridgeline's
held-out pairs whose rejected reply answers another intent: with a half, the right reply covers more of the message
than the wrong one in 41 of 72 pairs, fewer in 3 (a third: 21 and 3, most pairs tied: a product name alone covered a
third); 86% of Ridgeline's and 76% of the bank's held-out demonstrations reach 0.5."""

_GREETINGS = {"hello", "hi", "hey", "dear", "good", "morning", "afternoon", "evening", "there", "team"}
_SIGN_OFFS = {"thanks", "thank", "cheers", "regards", "best", "kind", "many", "sincerely", "advance", "wishes"}
# Politeness, filler and time words: present in messages about anything, so they say nothing about the subject
# (greetings and sign-offs are left out of the subject through their own sets above).
_FILLER = {
    "please", "could", "would", "should", "will", "just", "still", "really", "very", "help", "need", "want", "like",
    "know", "what", "when", "where", "which", "while", "with", "this", "that", "there", "their", "them", "they",
    "have", "been", "being", "from", "your", "yours", "about", "after", "before", "again", "also", "some", "since",
    "today", "yesterday", "tomorrow", "week", "weeks", "month", "months", "days", "last", "next", "ago", "soon",
    "quick", "quickly", "asap", "reply", "reach", "contact", "call", "email", "phone", "number", "message", "appreciate",
    "great", "happy", "sorry", "hope", "anyone", "someone", "something", "anything", "nothing", "keeps", "keep",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "does", "doing", "done", "make",
    "made", "went", "going", "here", "then", "than", "into", "over", "only", "even", "much", "more", "most", "other",
    "because", "thing", "things", "able",
}  # fmt: skip
_TITLES = {"mr", "mrs", "ms", "miss", "mx", "dr"}
_NOT_NAMES = {"there", "team", "all", "customer", "friend", "everyone", "sir", "madam", "valued", "again", "you"}
_PLACEHOLDER = re.compile(r"<[A-Z]+_\d+>")
_AMOUNT = re.compile(r"[£$€]\s?\d[\d,]*(?:\.\d+)?")
_NUMBER = re.compile(r"(?<![\d.,])\d{3,}(?![\d])")
_WORD = re.compile(r"[A-Za-z][a-z']+|[A-Z]+")
_OWN_REFERENCE = re.compile(r"\b(?:case|ticket|reference|ref|tracking|rma|code)\b[\w\s.:#-]{0,12}$", re.IGNORECASE)
_GREETING = re.compile(
    r"^\W*(?i:hi|hello|hey|dear|good (?:morning|afternoon|evening))[ ,]+((?:[A-Za-z][a-z'-]+)(?: [A-Z][a-z'-]+)?)"
)
_TOKEN = re.compile(r"\S+")


def signed_name(message: str) -> str | None:
    """The name a message is signed with ("Thanks, Omar", "Thanks in advance, Mia", "Regards, Tomas Schmidt",
    "- Leo", "cheers, carlos", or a capitalised name after the last sentence: "... a refund. Will"), or None."""
    tokens = _TOKEN.findall(message.strip().rstrip(".!"))
    for size in (2, 1):  # a full name first ("Tomas Schmidt"), then a first name
        if len(tokens) <= size:
            continue
        name, before = tokens[-size:], tokens[-size - 1]
        if not all(re.fullmatch(r"[A-Za-z][a-z'-]+", part) for part in name):
            continue
        if size == 2 and not all(part[0].isupper() for part in name):
            continue
        if name[0].lower() in _SIGN_OFFS | _GREETINGS | _NOT_NAMES:
            continue
        signs = before.rstrip(",").lower() in _SIGN_OFFS or before == "-"
        if signs or before[-1] in ",-" or (before[-1] in ".!?" and name[0][0].isupper()):
            if name[0][0].islower() and not signs:
                continue
            return " ".join(part.capitalize() for part in name)
    return None


def _stem(word: str) -> str:
    """The part of a subject word a reply word must contain: suffix -ing, -ed, -es or -s dropped, at most 5 letters."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            word = word[: -len(suffix)]
            break
    return word[:5]


def subject_words(message: str) -> set[str]:
    """The message's subject words (lower case): 4+ letters, not greetings, sign-offs, filler or the signed name."""
    name = {part.lower() for part in (signed_name(message) or "").split()}
    text = _PLACEHOLDER.sub(" ", message)
    words = {w.lower().strip("'") for w in _WORD.findall(text)}
    return {w for w in words if len(w) >= 4 and w not in _GREETINGS | _SIGN_OFFS | _FILLER | name and "'" not in w}


def _topic_rule(message: str, reply: str) -> float | None:
    subject = subject_words(message)
    if not subject:
        return None
    said = [w.lower() for w in _WORD.findall(_PLACEHOLDER.sub(" ", reply))]
    covered = sum(any(_stem(s) in word for word in said) for s in subject)
    need = max(1.0, TOPIC_SHARE * len(subject))
    return min(1.0, covered / need)


def _greeted(reply: str) -> str | None:
    match = _GREETING.match(reply.strip())
    if match is None or match.group(1).split()[0].lower() in _NOT_NAMES:
        return None
    return match.group(1)


def _name_rules(message: str, reply: str) -> tuple[float | None, float | None]:
    name = signed_name(message)
    greeted = _greeted(reply)
    if name is None:
        return None, (0.0 if greeted is not None else 1.0)
    first = name.split()[0].lower()
    if greeted is not None:
        parts = [part for part in greeted.lower().split() if part not in _TITLES]
        family = name.split()[-1].lower() if " " in name else None
        # The first name ("Dear Clara", "Dear Clara Rossi"), or the family name of a full signature ("Dear Ms Rossi",
        # "Dear Rossi"): either way the reply names this customer.
        return (1.0 if parts and parts[0] in (first, family) else 0.0), None
    return (0.5 if re.search(rf"\b{re.escape(first)}\b", reply, re.IGNORECASE) else 0.25), None


def _specifics(text: str, reply: bool = False) -> set[str]:
    amounts = {re.sub(r"[\s,]", "", a) for a in _AMOUNT.findall(text)}
    rest = _AMOUNT.sub(" ", text)
    # A number the reply gives as its own new reference ("your case number is 733415") claims nothing about the
    # customer's, so it is not a specific to check (in the message, "tracking for #68144" is the customer's order).
    numbers = {m.group() for m in _NUMBER.finditer(rest) if not (reply and _OWN_REFERENCE.search(rest[: m.start()]))}
    return set(_PLACEHOLDER.findall(text)) | amounts | numbers


def _references_rule(message: str, reply: str) -> float | None:
    cited = _specifics(reply, reply=True)
    if not cited:
        return None
    given = _specifics(message)
    return 1.0 if cited <= given else 0.0


def explain_one(prompt: str, response: str, info: dict[str, Any] | None = None) -> dict[str, float | None]:
    """Scores one reply against each rule (`info`, a prompt row's other columns, is not read: see the module doc).

    Returns:
        {rule: score in [0, 1], or None where the rule does not apply}, keys as in `RULE_WEIGHTS`.
    """
    del info  # this judge reads the message only, whatever the prompt file records
    name, no_invented = _name_rules(prompt, response)
    rules: dict[str, float | None] = {
        "topic": _topic_rule(prompt, response),
        "name": name,
        "no_invented_name": no_invented,
        "references": _references_rule(prompt, response),
        "coherence": coherence(response),
    }
    if not response.strip():  # an empty reply earns nothing, not even for inventing no name
        return {rule: None if value is None else 0.0 for rule, value in rules.items()}
    return rules


def explain(
    prompts: Sequence[str], responses: Sequence[str], info: Sequence[dict] | None = None
) -> list[dict[str, float | None]]:
    """Per-rule scores for each reply (see `explain_one`); None marks a rule that does not apply."""
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")
    return [explain_one(p, r) for p, r in zip(prompts, responses, strict=True)]


def score(prompts: Sequence[str], responses: Sequence[str], info: Sequence[dict] | None = None) -> list[float]:
    """Scores replies for whether they answer the customer's message: the weighted mean of the rules that apply.

    Args:
        prompts: The customer messages, one per response.
        responses: The reply texts, without special tokens.
        info: Ignored (accepted so that recipes can pass prompt rows to every judge alike).

    Raises:
        ValueError: If the lengths of the arguments differ.
    """
    return weighted_scores(explain(prompts, responses, info), RULE_WEIGHTS)
