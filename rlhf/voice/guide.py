"""The Markdown voice guide rendered from a voice spec, so the guide a support team reads and the scorer agree."""

from __future__ import annotations

from rlhf.voice.spec import AvoidRule, VoiceSpec


def render_guide(spec: VoiceSpec) -> str:
    """Renders the voice guide: the spec's prose around the sign-off, length bounds, phrase lists and weights.

    Args:
        spec: A validated voice spec.

    Returns:
        The guide as Markdown, ending with one newline.
    """
    guide, length = spec.guide, spec.length
    by_name = {rule.name: rule for rule in spec.avoid}
    never_say = "\n\n".join(f"{by_name[name].label}: {_listed(by_name[name])}." for name in guide.never_say)
    weights = "\n".join(f"- `{rule}`: {weight:.2f}" for rule, weight in spec.weights().items())
    bounds = f"Between {length.min_words} and {length.max_words} words, sign-off included."
    sections = [
        f"# {spec.company} voice guide",
        guide.intro.strip(),
        "## How we sound\n" + guide.how_we_sound.strip(),
        *_greeting(spec),
        f"## Sign-off\nEvery reply ends with exactly this line:\n\n    {spec.sign_off.text}",
        "## Length\n" + (f"{bounds} {length.why}" if length.why else bounds),
        *_sentences(spec),
        *_intents(spec),
        "## What we never say\n" + never_say,
        f"## How replies are scored\n{guide.scoring.strip()}\n\n{weights}",
        "## Example\n" + guide.example.strip(),
    ]
    return "\n\n".join(sections) + "\n"


def _greeting(spec: VoiceSpec) -> list[str]:
    if spec.greeting is None:
        return []
    named, general = spec.greeting.with_name, spec.greeting.without_name
    return [f'## Greeting\nOpen with "{named}" when the customer gives their name, otherwise "{general}".']


def _sentences(spec: VoiceSpec) -> list[str]:
    if spec.sentences is None:
        return []
    return [
        "## Full sentences\nEvery sentence ends with a full stop or a question mark and has at least "
        f"{spec.sentences.min_words} words: no fragments, no unfinished lines."
    ]


def _intents(spec: VoiceSpec) -> list[str]:
    if spec.intents is None:
        return []
    lines = [
        f"- {i.name} ({_quoted(i.when, 'or')} in the message): the reply says {_quoted(i.require, 'or')}."
        for i in spec.intents.intents
    ]
    return ["## What each request needs\n" + "\n".join(lines)]


def _quoted(phrases: list[str], joiner: str) -> str:
    quoted = [f'"{phrase}"' for phrase in phrases]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {joiner} {quoted[-1]}"


def _listed(rule: AvoidRule) -> str:
    # Phrases in quotes as a reader would write them; patterns in code spans, since they are regular expressions.
    phrases = []
    for phrase in rule.phrases:
        variants = rule.paraphrases.get(phrase, [])
        phrases.append(f'"{phrase}"' + (f" (or {_quoted(variants, 'or')})" if variants else ""))
    return ", ".join(phrases + [f"`{pattern}`" for pattern in rule.patterns])
