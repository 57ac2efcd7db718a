"""Plug-in pairwise judges for the tests (`pairwise_judges: [{function: tests.compare.pairwise_probe:NAME}]`)."""

from __future__ import annotations


def prefer_longer(prompts: list[str], first: list[str], second: list[str]) -> list[float]:
    """A planted preference: the reply with more characters is better (positions do not matter)."""
    return [float(len(a) - len(b)) for a, b in zip(first, second, strict=True)]


def prefer_first(prompts: list[str], first: list[str], second: list[str]) -> list[float]:
    """A judge that only reads positions: always the first reply."""
    return [1.0 for _ in first]
