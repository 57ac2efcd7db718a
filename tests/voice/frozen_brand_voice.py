"""Frozen copy of reward_models/brand_voice.py as it was before the voice spec (commit 3603412), kept so that a test
can check the compiled spec reproduces its scores exactly. Do not edit."""

# ruff: noqa
from __future__ import annotations

import re

COMPANY = "Ridgeline Outfitters"

SHARES_WITH_TRAINING = (
    "Its rule lists labelled the voice preference pairs, so it is the labeller for voice, not an independent judge."
)

SIGN_OFF = "Happy trails, the Ridgeline team"
"""The one exact closing line of every on-voice reply."""

MIN_WORDS = 25
"""Fewest words (sign-off included) an on-voice reply has; shorter replies read as curt."""

MAX_WORDS = 70
"""Most words (sign-off included) an on-voice reply has; longer replies ramble."""

BANNED_PHRASES = (
    "unfortunately",
    "per our policy",
    "as per policy",
    "as previously stated",
    "calm down",
    "please be advised",
    "we regret to inform you",
    "kindly",
    "dear customer",
    "nothing we can do",
    "any inconvenience",
    "your call is important",
)
"""Cold, stiff or dismissive phrases the voice never uses."""

JARGON = (
    "sku",
    "rma",
    "escalation ticket",
    "ticket number",
    "case id",
    "tier 2",
    "wms",
    "3pl",
    "carrier exception",
    "fulfilment queue",
    "fulfillment queue",
)
"""Internal words a customer should never have to decode."""

BLAME_PHRASES = (
    "not our fault",
    "your fault",
    "you should have",
    "you failed to",
    "you forgot to",
    "you must have",
    "you were supposed to",
    "user error",
)
"""Phrases that put a problem on the customer instead of owning it."""

OVER_PROMISES = (
    "guarantee",
    "guaranteed",
    "100%",
    "i promise",
    "we promise",
    "definitely",
    "never happen again",
    "without fail",
)
"""Promises the team cannot be sure of keeping."""

ACKNOWLEDGEMENTS = (
    "sorry",
    "apologise",
    "apologize",
    "apologies",
    "thanks for",
    "thank you for",
    "i understand",
    "great question",
    "good question",
    "happy to help",
)
"""Ways an on-voice reply opens: an apology, thanks or an acknowledgement of the customer's question."""

# A concrete action is a first-person commitment: "I've refunded", "we'll ship", "I'm sending". "I'm sorry" is an
# apology, not an action, so the progressive form must be followed by an -ing verb.
_ACTION_PATTERN = re.compile(
    r"(?<!\w)(?:i've|i have|i'll|i will|we've|we have|we'll|we will)(?!\w)"
    r"|(?<!\w)(?:i'm|i am|we're|we are) \w+ing(?!\w)"
)

RULE_WEIGHTS = {
    "signoff": 0.20,
    "apology_and_action": 0.20,
    "no_banned_phrases": 0.15,
    "no_jargon": 0.15,
    "no_blame": 0.10,
    "no_over_promise": 0.10,
    "length": 0.10,
}
"""Weight of each rule in `score`; the keys are exactly the keys of `score_breakdown`."""


def _phrase_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    # Whole-word matching so that "rma" does not fire inside "format" nor "sku" inside "skull".
    alternatives = "|".join(re.escape(phrase) for phrase in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


_BANNED_PATTERN = _phrase_pattern(BANNED_PHRASES)
_JARGON_PATTERN = _phrase_pattern(JARGON)
_BLAME_PATTERN = _phrase_pattern(BLAME_PHRASES)
_OVER_PROMISE_PATTERN = _phrase_pattern(OVER_PROMISES)
_ACKNOWLEDGEMENT_PATTERN = _phrase_pattern(ACKNOWLEDGEMENTS)


def _normalise(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.lower().split())


def _absence_score(pattern: re.Pattern[str], text: str) -> float:
    # Each distinct offending phrase costs half a point, so one slip is penalised but a reply full of them is worse.
    found = {match.group(0) for match in pattern.finditer(text)}
    return max(0.0, 1.0 - 0.5 * len(found))


def _signoff_score(text: str) -> float:
    sign_off = _normalise(SIGN_OFF)
    if text.endswith(sign_off):
        return 1.0
    # A sign-off buried mid-reply is closer to the voice than none at all.
    return 0.5 if sign_off in text else 0.0


def _length_score(n_words: int) -> float:
    # Linear fall-off outside the bounds gives PPO a gradient towards the right length instead of a cliff.
    if n_words < MIN_WORDS:
        return n_words / MIN_WORDS
    if n_words > MAX_WORDS:
        return max(0.0, 1.0 - (n_words - MAX_WORDS) / MAX_WORDS)
    return 1.0


def score_breakdown(prompt: str, response: str) -> dict[str, float]:
    """Scores one reply against each brand-voice rule.

    Args:
        prompt: The customer's message. The current rules judge the reply alone; the prompt is part of the
            signature so that every programmatic reward takes the same arguments.
        response: The reply text, without special tokens.

    Returns:
        A mapping from rule name (the keys of `RULE_WEIGHTS`) to a score in [0, 1], where 1 means the rule is
        fully met. An empty or whitespace-only response scores 0 on every rule.
    """
    del prompt
    text = _normalise(response)
    if not text:
        return {rule: 0.0 for rule in RULE_WEIGHTS}
    acknowledges = _ACKNOWLEDGEMENT_PATTERN.search(text) is not None
    acts = _ACTION_PATTERN.search(text) is not None
    return {
        "signoff": _signoff_score(text),
        "apology_and_action": 0.5 * acknowledges + 0.5 * acts,
        "no_banned_phrases": _absence_score(_BANNED_PATTERN, text),
        "no_jargon": _absence_score(_JARGON_PATTERN, text),
        "no_blame": _absence_score(_BLAME_PATTERN, text),
        "no_over_promise": _absence_score(_OVER_PROMISE_PATTERN, text),
        "length": _length_score(len(text.split())),
    }


def violations(prompt: str, response: str) -> list[str]:
    """Lists the rules a reply does not fully meet.

    Args:
        prompt: The customer's message.
        response: The reply text, without special tokens.

    Returns:
        The names of the rules scoring below 1, in `RULE_WEIGHTS` order; empty when the reply is on-voice.
    """
    return [rule for rule, value in score_breakdown(prompt, response).items() if value < 1.0]


def score(prompts: list[str], responses: list[str]) -> list[float]:
    """Scores replies for how well they follow the brand voice.

    Args:
        prompts: The customer messages, one per response.
        responses: The reply texts, without special tokens.

    Returns:
        One float per response in [0, 1]: the `RULE_WEIGHTS`-weighted mean of its `score_breakdown`.

    Raises:
        ValueError: If `prompts` and `responses` differ in length.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")
    total_weight = sum(RULE_WEIGHTS.values())
    scores = []
    for prompt, response in zip(prompts, responses, strict=True):
        breakdown = score_breakdown(prompt, response)
        scores.append(sum(RULE_WEIGHTS[rule] * value for rule, value in breakdown.items()) / total_weight)
    return scores
