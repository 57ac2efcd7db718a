"""The voice spec compiled into a scorer: per-rule explanations, a weighted score, and the labeller's violations.

`compile_voice(spec)` returns a `VoiceScorer` whose `score(prompts, responses)` is a ppo reward term and a compare
judge, whose `explain` gives the per-rule scores the compare report breaks down, and whose `violations` labels data
(a reply with none is on-voice). Every rule scores a reply in [0, 1] on its normalised text (lower case, straight
apostrophes, single spaces); the score is the weighted mean in rule order. Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rlhf.voice.spec import AVOID_PENALTY, VoiceSpec, load_voice, normalise, phrase_pattern, sentences


@dataclass(frozen=True)
class StepMatcher:
    """A structure step compiled: found when any of its patterns matches the normalised reply."""

    name: str
    patterns: tuple[re.Pattern[str], ...]

    def found(self, text: str) -> bool:
        """Whether normalised `text` shows this step."""
        return any(pattern.search(text) for pattern in self.patterns)


def _markers(phrases: list[str], patterns: list[str]) -> tuple[re.Pattern[str], ...]:
    compiled = [phrase_pattern(phrases)] if phrases else []
    return tuple(compiled + [re.compile(pattern) for pattern in patterns])


class VoiceScorer:
    """A voice spec ready to score replies; build it with `compile_voice`."""

    SHARES_WITH_TRAINING = (
        "A voice spec's rules: where they labelled the preference pairs (rlhf voice pairs) or are a ppo reward "
        "term, it measures whether the rules were learned, not an independent judgement."
    )
    """What compare's report says this scorer shares with training when a recipe names the spec (`spec:`)."""

    def __init__(self, spec: VoiceSpec) -> None:
        self.spec = spec
        self.weights = spec.weights()
        self._sign_off = normalise(spec.sign_off.text)
        self.steps = [StepMatcher(step.name, _markers(step.phrases, step.patterns)) for step in spec.structure.steps]
        self.avoid_rules = {rule.name: _markers([*rule.canonical()], rule.patterns) for rule in spec.avoid}
        # A paraphrase found counts as its listed phrase, so one offence said two ways is penalised once.
        self._canonical = {rule.name: rule.canonical() for rule in spec.avoid}
        if spec.greeting is not None:
            self._name_pattern = re.compile(spec.greeting.name_pattern)
        if spec.intents is not None:
            self.intents = [
                (intent.name, phrase_pattern(intent.when), phrase_pattern(intent.require))
                for intent in spec.intents.intents
            ]

    def explain_one(self, prompt: str, response: str) -> dict[str, float]:
        """Scores one reply against each rule.

        Args:
            prompt: The customer's message: the greeting rule finds the customer's name in it and the intents rule
                what they asked for; the other rules judge the reply alone.
            response: The reply text, without special tokens.

        Returns:
            {rule name: score in [0, 1]} in the spec's rule order, 1 meaning the rule is fully met. An empty or
            whitespace-only reply scores 0 on every rule.
        """
        text = normalise(response)
        if not text:
            return {rule: 0.0 for rule in self.weights}
        spec = self.spec
        out = {spec.sign_off.name: self._sign_off_score(text)}
        if spec.greeting is not None:
            out[spec.greeting.name] = self._greeting_score(prompt, response)
        out[spec.structure.name] = sum(step.found(text) for step in self.steps) / len(self.steps)
        for name, patterns in self.avoid_rules.items():
            canonical = self._canonical[name]
            found = {
                canonical.get(match.group(0), match.group(0))
                for pattern in patterns
                for match in pattern.finditer(text)
            }
            out[name] = max(0.0, 1.0 - AVOID_PENALTY * len(found))
        if spec.sentences is not None:
            out[spec.sentences.name] = self._sentences_score(response)
        if spec.intents is not None:
            asked = [(when, require) for _, when, require in self.intents if when.search(normalise(prompt))]
            out[spec.intents.name] = sum(bool(r.search(text)) for _, r in asked) / len(asked) if asked else 1.0
        out[spec.length.name] = self._length_score(len(text.split()))
        return out

    def customer_name(self, prompt: str) -> str | None:
        """The customer's name as the greeting rule's `name_pattern` finds it in their message, or None."""
        if self.spec.greeting is None:
            return None
        match = self._name_pattern.search(prompt.strip())
        return match.group("name").strip() if match and match.group("name") else None

    def greeting_for(self, prompt: str) -> str:
        """The opening the greeting rule asks for: with the customer's name when the message gives it."""
        greeting = self.spec.greeting
        if greeting is None:
            raise ValueError("the spec has no greeting rule")
        name = self.customer_name(prompt)
        return greeting.with_name.replace("{name}", name) if name else greeting.without_name

    def explain(self, prompts: Sequence[str], responses: Sequence[str]) -> list[dict[str, float]]:
        """Per-rule scores for each reply (see `explain_one`)."""
        _check_lengths(prompts, responses)
        return [self.explain_one(p, r) for p, r in zip(prompts, responses, strict=True)]

    def violations(self, prompt: str, response: str) -> list[str]:
        """The rules a reply does not fully meet, in rule order; empty when the reply is on-voice."""
        return [rule for rule, value in self.explain_one(prompt, response).items() if value < 1.0]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Scores replies for how well they follow the voice.

        Args:
            prompts: The customer messages, one per response.
            responses: The reply texts, without special tokens.

        Returns:
            One float per response in [0, 1]: the weighted mean of its per-rule scores.

        Raises:
            ValueError: If `prompts` and `responses` differ in length.
        """
        return [self.weighted_score(rules) for rules in self.explain(prompts, responses)]

    def weighted_score(self, rules: dict[str, float]) -> float:
        """The score of one reply from its per-rule scores (`explain_one`'s output): their weighted mean."""
        return sum(self.weights[rule] * value for rule, value in rules.items()) / sum(self.weights.values())

    def _sign_off_score(self, text: str) -> float:
        if text.endswith(self._sign_off):
            return 1.0
        # A sign-off buried mid-reply is closer to the voice than none at all.
        return 0.5 if self._sign_off in text else 0.0

    def _greeting_score(self, prompt: str, response: str) -> float:
        greeting = self.spec.greeting
        first_line = normalise(response.strip().split("\n")[0])
        if first_line.startswith(normalise(self.greeting_for(prompt))):
            return 1.0
        # The general greeting where the name was known is still a greeting, just not the personal one.
        return 0.5 if first_line.startswith(normalise(greeting.without_name)) else 0.0

    def _sentences_score(self, response: str) -> float:
        # Salutation lines ('Dear Anna,') and the sign-off are not sentences; every other line is made of them.
        sign_off = normalise(self.spec.sign_off.text)
        lines = [line.strip() for line in response.strip().split("\n")]
        body = [line for line in lines if line and not line.endswith(",") and normalise(line) != sign_off]
        found = [s for line in body for s in sentences(line)]
        if not found:
            return 0.0
        full = [s for s in found if s.rstrip()[-1] in ".?!" and len(s.split()) >= self.spec.sentences.min_words]
        return len(full) / len(found)

    def _length_score(self, n_words: int) -> float:
        # Linear fall-off outside the bounds gives PPO a gradient towards the right length instead of a cliff.
        low, high = self.spec.length.min_words, self.spec.length.max_words
        if n_words < low:
            return n_words / low
        if n_words > high:
            return max(0.0, 1.0 - (n_words - high) / high)
        return 1.0


def _check_lengths(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")


def compile_voice(spec: VoiceSpec) -> VoiceScorer:
    """Compiles a validated spec into a scorer (regexes built once)."""
    return VoiceScorer(spec)


def load_scorer(path: str | Path) -> VoiceScorer:
    """Loads, validates and compiles the spec at `path` (raises `VoiceSpecError` like `load_voice`)."""
    return compile_voice(load_voice(path))
