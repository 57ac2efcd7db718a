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


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """The text's sentences (split after '.', '!' or '?' followed by white space)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


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
    paraphrases: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Other wordings of a listed phrase (key: the phrase, as in `phrases`), matched like phrases and "
        "counted as that phrase: a reply using 'no worries' and 'not to worry' has one offending phrase, not two.",
    )

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        return _check_patterns(value)

    @model_validator(mode="after")
    def _has_a_marker(self) -> AvoidRule:
        if not self.phrases and not self.patterns:
            raise ValueError(f"avoid rule '{self.name}' needs phrases or patterns")
        listed = {normalise(phrase) for phrase in self.phrases}
        for phrase, variants in self.paraphrases.items():
            if normalise(phrase) not in listed:
                raise ValueError(f"paraphrases.{phrase}: '{phrase}' is not one of the rule's phrases")
            for variant in variants:
                if normalise(variant) in listed:
                    raise ValueError(f"paraphrases.{phrase}: '{variant}' is already a phrase of the rule")
        return self

    def canonical(self) -> dict[str, str]:
        """{normalised phrase or paraphrase: the normalised listed phrase it counts as}."""
        out = {normalise(phrase): normalise(phrase) for phrase in self.phrases}
        for phrase, variants in self.paraphrases.items():
            out.update((normalise(variant), normalise(phrase)) for variant in variants)
        return out


class GreetingRule(Block):
    """How a reply opens: with the customer's name when their message gives it, with a general greeting when not."""

    name: str = Field("greeting", description="Rule name in scores and reports.")
    weight: float = Field(gt=0, description="Weight of the rule in the weighted mean score.")
    with_name: str = Field(
        description="The opening when the name is known, with '{name}' where the name goes, e.g. 'Dear {name},'. "
        "A reply whose first line starts with it scores 1; a general greeting instead scores 0.5; none scores 0."
    )
    without_name: str = Field(
        min_length=1, description="The opening when the message gives no name, e.g. 'Dear customer,'."
    )
    name_pattern: str = Field(
        description="Regular expression with a group named 'name', searched in the customer's message as written "
        "(case kept): e.g. '(?:Regards|Thanks),? (?P<name>[A-Z][a-z]+(?: [A-Z][a-z]+)?)$' for a signed message."
    )

    @field_validator("with_name")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        rest = value.replace("{name}", "", 1)
        if value.count("{name}") != 1 or "{" in rest or "}" in rest:
            raise ValueError(f"'{value}' must contain '{{name}}' exactly once and no other braces")
        return value

    @field_validator("name_pattern")
    @classmethod
    def _named_group(cls, value: str) -> str:
        _check_patterns([value])
        if "name" not in re.compile(value).groupindex:
            raise ValueError(f"pattern {value!r} has no group named 'name' (write (?P<name>...))")
        return value


class SentencesRule(Block):
    """Full sentences: every sentence of the body ends with '.', '?' or '!' and has at least `min_words` words."""

    name: str = Field("full_sentences", description="Rule name in scores and reports.")
    weight: float = Field(gt=0, description="Weight of the rule in the weighted mean score.")
    min_words: int = Field(
        gt=0, description="Fewest words of a full sentence; shorter ones ('Done.', 'All sorted.') are fragments."
    )


class IntentRequirement(Block):
    """What a reply to one kind of request must say, e.g. a lost-card reply says the card is blocked."""

    name: str = Field(description="Intent name, shown in explanations and the guide (e.g. 'lost_card').")
    when: list[str] = Field(
        min_length=1, description="Phrases (whole words, case-insensitive) in the customer's message that show it."
    )
    require: list[str] = Field(
        min_length=1, description="Phrases (whole words, case-insensitive) any of which the reply must contain."
    )


class IntentsRule(Block):
    """Per-intent requirements; the rule scores the share of the message's intents whose requirement the reply
    meets (1 when the message shows none)."""

    name: str = Field("intents", description="Rule name in scores and reports.")
    weight: float = Field(gt=0, description="Weight of the rule in the weighted mean score.")
    intents: list[IntentRequirement] = Field(min_length=1, description="The intents, each found by its phrases.")

    @model_validator(mode="after")
    def _unique(self) -> IntentsRule:
        names = [intent.name for intent in self.intents]
        if len(set(names)) < len(names):
            raise ValueError(f"intent names must be unique: {', '.join(names)}")
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


Rule = SignOffRule | GreetingRule | StructureRule | AvoidRule | SentencesRule | IntentsRule | LengthRule


class VoiceSpec(Block):
    """A company's support voice: the rules a reply is scored on, with weights, and the guide's prose."""

    company: str = Field(min_length=1, description="Company name, used in the guide's title.")
    sign_off: SignOffRule = Field(description="The closing line rule.")
    greeting: GreetingRule | None = Field(None, description="The opening line rule; none: openings not scored.")
    structure: StructureRule = Field(description="The steps every reply takes (e.g. acknowledge, then act).")
    avoid: list[AvoidRule] = Field(
        default_factory=list, description="Phrase lists the voice never uses, one rule each, in report order."
    )
    sentences: SentencesRule | None = Field(None, description="The full-sentences rule; none: not scored.")
    intents: IntentsRule | None = Field(None, description="Per-intent requirements; none: not scored.")
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
        # Lines every on-voice reply contains: a rule that forbids a word in them could never be met.
        fixed = {"the sign-off": self.sign_off.text}
        if self.greeting is not None:
            fixed["the greeting"] = self.greeting.without_name
            fixed["the named greeting"] = self.greeting.with_name.replace("{name}", "")
        for i, rule in enumerate(self.avoid):
            paraphrases = [v for variants in rule.paraphrases.values() for v in variants]
            for field, found in (("phrases", rule.phrases), ("patterns", rule.patterns), ("paraphrases", paraphrases)):
                for j, phrase in enumerate(found):
                    pattern = re.compile(phrase) if field == "patterns" else phrase_pattern([phrase])
                    for line, text in fixed.items():
                        if pattern.search(normalise(text)):
                            raise ValueError(
                                f"avoid.{i}.{field}.{j}: '{phrase}' ({rule.name}) matches {line} "
                                f"'{text}', so no reply could follow both rules"
                            )
        return self

    def rules(self) -> list[Rule]:
        """Every rule in report order: sign-off, greeting, structure, the avoid rules, full sentences, intents,
        length (the optional ones only when the spec has them)."""
        optional = (self.greeting, self.sentences, self.intents)
        greeting, sentences, intents = ([rule] if rule is not None else [] for rule in optional)
        return [self.sign_off, *greeting, self.structure, *self.avoid, *sentences, *intents, self.length]

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
