"""Brand-voice rules scorer for Ridgeline Outfitters, the fictional outdoor-gear retailer of the shipped data.

A thin shim over the voice spec `recipes/brand_voice/voice.yaml` compiled by `rlhf.voice` (the rules and their
weights live there, not here). It keeps the names recipes, the data generator and tests use: the constants below
are read from the spec, `score` is a ppo reward term and compare judge, `score_breakdown` its per-rule scores,
`violations` the data labeller. There is deliberately no module-level `explain`: the compare report would then break
this judge down by rule and pick it, listed first, as its failures judge instead of the content judge. `scripts/make_brand_voice_data.py` renders the voice guide from the same spec, so
the data, the guide and this judge cannot drift apart. No torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlhf.voice.scorer import load_scorer

SPEC_PATH = Path(__file__).resolve().parents[1] / "recipes" / "brand_voice" / "voice.yaml"
"""The voice spec this module compiles."""

_SCORER = load_scorer(SPEC_PATH)
_SPEC = _SCORER.spec

SHARES_WITH_TRAINING = (
    "Its rule lists labelled the voice preference pairs, so it is the labeller for voice, not an independent judge."
)

COMPANY = _SPEC.company
SIGN_OFF = _SPEC.sign_off.text
"""The one exact closing line of every on-voice reply."""
MIN_WORDS = _SPEC.length.min_words
"""Fewest words (sign-off included) an on-voice reply has; shorter replies read as curt."""
MAX_WORDS = _SPEC.length.max_words
"""Most words (sign-off included) an on-voice reply has; longer replies ramble."""
BANNED_PHRASES = tuple(_SPEC.avoid_rule("no_banned_phrases").phrases)
"""Cold, stiff or dismissive phrases the voice never uses."""
JARGON = tuple(_SPEC.avoid_rule("no_jargon").phrases)
"""Internal words a customer should never have to decode."""
BLAME_PHRASES = tuple(_SPEC.avoid_rule("no_blame").phrases)
"""Phrases that put a problem on the customer instead of owning it."""
OVER_PROMISES = tuple(_SPEC.avoid_rule("no_over_promise").phrases)
"""Promises the team cannot be sure of keeping."""
ACKNOWLEDGEMENTS = tuple(_SPEC.structure.steps[0].phrases)
"""Ways an on-voice reply opens: an apology, thanks or an acknowledgement of the customer's question."""
RULE_WEIGHTS = dict(_SCORER.weights)
"""Weight of each rule in `score`; the keys are exactly the keys of `score_breakdown`."""


def score_breakdown(prompt: str, response: str) -> dict[str, float]:
    """Scores one reply against each brand-voice rule (`rlhf.voice.scorer.VoiceScorer.explain_one`).

    Args:
        prompt: The customer's message (the rules judge the reply alone).
        response: The reply text, without special tokens.

    Returns:
        {rule (the keys of `RULE_WEIGHTS`): score in [0, 1]}; an empty reply scores 0 on every rule.
    """
    return _SCORER.explain_one(prompt, response)


def violations(prompt: str, response: str) -> list[str]:
    """Lists the rules a reply does not fully meet, in `RULE_WEIGHTS` order; empty when the reply is on-voice."""
    return _SCORER.violations(prompt, response)


def score(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Scores replies for how well they follow the brand voice.

    Args:
        prompts: The customer messages, one per response.
        responses: The reply texts, without special tokens.

    Returns:
        One float per response in [0, 1]: the `RULE_WEIGHTS`-weighted mean of its `score_breakdown`.

    Raises:
        ValueError: If `prompts` and `responses` differ in length.
    """
    return _SCORER.score(prompts, responses)
