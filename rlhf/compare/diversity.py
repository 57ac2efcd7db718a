"""Diversity and repetition of generated text: distinct-n (Li et al. 2016) and repeated n-grams.

Measured on lower-cased words of the decoded text rather than on model tokens, so that models with different
tokenizers are measured alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[\w']+")

REPETITION_N = 4
"""Word n-gram size for `repetition`: a repeated 4-gram is a loop, while shorter n-grams repeat in fluent text."""


def words(text: str) -> list[str]:
    """Lower-cased words of a text (punctuation dropped)."""
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    """Every contiguous n-gram of a token list, in order."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams of one response (1.0: nothing repeats).

    A response too short to hold an n-gram has nothing repeated and scores 1.0; length and EOS rate report
    short or empty replies separately.
    """
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 1.0


def repetition(tokens: list[str], n: int = REPETITION_N) -> float:
    """Share of a response's word n-grams that repeat an earlier one ("we will send it we will send it" is high)."""
    return 1.0 - distinct_n(tokens, n)


def corpus_distinct_n(responses: Iterable[list[str]], n: int) -> float:
    """Distinct n-grams over all n-grams of a model's responses together: low when every reply says the same."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for tokens in responses:
        grams = ngrams(tokens, n)
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 1.0


def text_measures(text: str) -> dict[str, float]:
    """The per-response diversity measures the report shows: distinct_1, distinct_2 and repetition."""
    tokens = words(text)
    return {"distinct_1": distinct_n(tokens, 1), "distinct_2": distinct_n(tokens, 2), "repetition": repetition(tokens)}
