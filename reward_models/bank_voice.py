"""Voice rules judge for Harbourstone Bank, the second shipped brand: `recipes/bank_voice/voice.yaml` compiled.

`score` is a ppo reward term and a compare judge; `violations` labels data. No torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlhf.voice.scorer import load_scorer

SPEC_PATH = Path(__file__).resolve().parents[1] / "recipes" / "bank_voice" / "voice.yaml"
"""The voice spec this module compiles."""

_SCORER = load_scorer(SPEC_PATH)

SHARES_WITH_TRAINING = (
    "Its rules labelled the bank's preference pairs (rlhf voice pairs) the learned reward model was trained on, so "
    "it measures whether the rules were learned, not an independent judgement."
)


def violations(prompt: str, response: str) -> list[str]:
    """The rules a reply does not fully meet, in the spec's order; empty when the reply is on-voice."""
    return _SCORER.violations(prompt, response)


def score(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """One float per response in [0, 1]: the weighted mean of its per-rule scores (see `rlhf.voice.scorer`)."""
    return _SCORER.score(prompts, responses)
