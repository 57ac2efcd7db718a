"""The voice spec: a company's written voice as a validated YAML file (`recipes/brand_voice/voice.yaml`).

A spec lists the rules a support reply is scored on, in the order they are reported: the sign-off, the required
structure (acknowledge, then act), phrase lists the voice avoids, and the length bounds, each with a weight. The
`guide` block holds the prose of the Markdown voice guide rendered from the spec (`rlhf.voice.guide`). Loading uses
the recipe machinery (`rlhf.recipe.describe_errors`), so an unknown key names the closest valid key. A spec that
contradicts itself (an avoided phrase inside the sign-off, fewer maximum than minimum words) is refused. Standard
library, pydantic and yaml only: no torch.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from rlhf.config import Block
from rlhf.recipe import RecipeError, describe_errors, read_yaml_mapping

# Every rule scores a reply in [0, 1]; an avoid rule loses this much per distinct offending phrase, so one slip is
# penalised but a reply full of them is worse.
AVOID_PENALTY = 0.5


class VoiceSpecError(RecipeError):
    """A voice spec that cannot be used; the message names the key to change."""


def normalise(text: str) -> str:
    """Lower-cases a reply, treats curly apostrophes as straight ones and collapses whitespace: what rules match."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.lower().split())


def _check_patterns(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"pattern {pattern!r} is not a valid regular expression ({err})") from None
    return patterns


class SignOffRule(Block):
    """The closing line every on-voice reply ends with."""

    name: str = Field("signoff", description="Rule name in scores and reports.")
    weight: float = Field(gt=0, description="Weight of the rule in the weighted mean score.")
    text: str = Field(
        min_length=1,
        description="The exact closing line (matched case-insensitively, whitespace collapsed). A reply ending with "
        "it scores 1, one containing it elsewhere 0.5, one without it 0.",
    )

    @field_validator("text")
    @classmethod
    def _stripped(cls, value: str) -> str:
        if value.strip() != value:
            raise ValueError("the sign-off must not start or end with whitespace")
        return value


class StructureStep(Block):
    """One step every on-voice reply contains (e.g. acknowledge the customer, then act)."""

    name: str = Field(description="Step name, shown in explanations of the guide.")
    phrases: list[str] = Field(
        default_factory=list, description="Phrases (whole words, case-insensitive) any of which shows the step."
    )
    patterns: list[str] = Field(
        default_factory=list,
        description="Regular expressions searched in the normalised reply (lower case, straight apostrophes, single "
        "spaces); any match shows the step.",
    )

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        return _check_patterns(value)

    @model_validator(mode="after")
    def _has_a_marker(self) -> StructureStep:
        if not self.phrases and not self.patterns:
            raise ValueError(f"structure step '{self.name}' needs phrases or patterns")
        return self


class StructureRule(Block):
    """The steps an on-voice reply takes; the rule scores the share of steps found."""

    name: str = Field("structure", description="Rule name in scores and reports.")
    weight: float = Field(gt=0, description="Weight of the rule in the weighted mean score.")
    steps: list[StructureStep] = Field(min_length=1, description="The steps, each found by phrases or patterns.")


class AvoidRule(Block):
    """Phrases the voice never uses; each distinct one found costs `AVOID_PENALTY` (floored at 0)."""

    name: str = Field(description="Rule name in scores and reports, e.g. 'no_jargon'.")
    weight: float = Field(gt=0, description="Weight of the rule in the weighted mean score.")
    label: str = Field(description="How the voice guide introduces the list, e.g. 'Internal jargon'.")
    phrases: list[str] = Field(
        default_factory=list,
        description="Phrases matched as whole words, case-insensitively ('rma' does not fire inside 'format').",
    )
    patterns: list[str] = Field(
        default_factory=list,
        description="Regular expressions searched in the normalised reply, for what whole-word phrases cannot say "
        "(e.g. '!' for no exclamation marks).",
    )

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        return _check_patterns(value)

    @model_validator(mode="after")
    def _has_a_marker(self) -> AvoidRule:
        if not self.phrases and not self.patterns:
            raise ValueError(f"avoid rule '{self.name}' needs phrases or patterns")
        return self


class LengthRule(Block):
    """Word-count bounds (sign-off included); outside them the score falls off linearly."""

    name: str = Field("length", description="Rule name in scores and reports.")
    weight: float = Field(gt=0, description="Weight of the rule in the weighted mean score.")
    min_words: int = Field(gt=0, description="Fewest words an on-voice reply has.")
    max_words: int = Field(gt=0, description="Most words an on-voice reply has.")
    why: str = Field("", description="A sentence the guide adds after the bounds, saying why they matter.")


class GuideText(Block):
    """Prose of the rendered Markdown voice guide; the rule lists come from the rules themselves."""

    intro: str = Field(description="Markdown paragraph(s) under the title: who the company is, what the guide is.")
    how_we_sound: str = Field(description="Markdown under '## How we sound' (usually a bullet list).")
    never_say: list[str] = Field(
        description="The avoid rules' names in the order '## What we never say' lists them (every avoid rule once)."
    )
    scoring: str = Field(description="The sentence introducing the weights under '## How replies are scored'.")
    example: str = Field(description="Markdown under '## Example': a customer message, an on- and an off-voice reply.")


class VoiceSpec(Block):
    """A company's support voice: the rules a reply is scored on, with weights, and the guide's prose."""

    company: str = Field(min_length=1, description="Company name, used in the guide's title.")
    sign_off: SignOffRule = Field(description="The closing line rule.")
    structure: StructureRule = Field(description="The steps every reply takes (e.g. acknowledge, then act).")
    avoid: list[AvoidRule] = Field(
        default_factory=list, description="Phrase lists the voice never uses, one rule each, in report order."
    )
    length: LengthRule = Field(description="Word-count bounds.")
    guide: GuideText = Field(description="Prose of the rendered voice guide.")

    @model_validator(mode="after")
    def _consistent(self) -> VoiceSpec:
        if self.length.min_words > self.length.max_words:
            raise ValueError(
                f"length.min_words ({self.length.min_words}) is above length.max_words ({self.length.max_words})"
            )
        names = [rule.name for rule in self.rules()]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(duplicates)}")
        if sorted(self.guide.never_say) != sorted(rule.name for rule in self.avoid):
            raise ValueError(
                f"guide.never_say must list every avoid rule once: {', '.join(r.name for r in self.avoid)} "
                f"(got {', '.join(self.guide.never_say) or 'nothing'})"
            )
        sign_off = normalise(self.sign_off.text)
        for i, rule in enumerate(self.avoid):
            for field, found in (("phrases", rule.phrases), ("patterns", rule.patterns)):
                for j, phrase in enumerate(found):
                    pattern = phrase_pattern([phrase]) if field == "phrases" else re.compile(phrase)
                    if pattern.search(sign_off):
                        raise ValueError(
                            f"avoid.{i}.{field}.{j}: '{phrase}' ({rule.name}) matches the sign-off "
                            f"'{self.sign_off.text}', so no reply could follow both rules"
                        )
        return self

    def rules(self) -> list[SignOffRule | StructureRule | AvoidRule | LengthRule]:
        """Every rule in report order: sign-off, structure, the avoid rules, length."""
        return [self.sign_off, self.structure, *self.avoid, self.length]

    def weights(self) -> dict[str, float]:
        """{rule name: weight} in report order."""
        return {rule.name: rule.weight for rule in self.rules()}

    def avoid_rule(self, name: str) -> AvoidRule:
        """The avoid rule called `name`.

        Raises:
            KeyError: No avoid rule has that name.
        """
        for rule in self.avoid:
            if rule.name == name:
                return rule
        raise KeyError(f"no avoid rule '{name}'; the spec has {', '.join(r.name for r in self.avoid)}")


def phrase_pattern(phrases: list[str] | tuple[str, ...]) -> re.Pattern[str]:
    """One regex matching any of `phrases` as whole words in normalised text (longest alternative first)."""
    alternatives = "|".join(re.escape(normalise(p)) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def load_voice(path: str | Path) -> VoiceSpec:
    """Reads and validates a voice spec.

    Args:
        path: The spec's YAML file.

    Returns:
        The validated spec.

    Raises:
        VoiceSpecError: The file is missing, not UTF-8 YAML, or not a valid, self-consistent spec; the message names
            the file and the key (and, for an unknown key, the closest valid one).
    """
    path = Path(path)
    try:
        data = read_yaml_mapping(path, "voice spec")
    except RecipeError as err:
        raise VoiceSpecError(str(err)) from None
    try:
        return VoiceSpec.model_validate(data)
    except ValidationError as err:
        raise VoiceSpecError(
            f"{path} is not a valid voice spec: " + "; ".join(describe_errors(err, VoiceSpec))
        ) from None
