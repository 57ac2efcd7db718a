"""PII scrubbing for support logs: emails, card-like numbers, phone numbers, street addresses and order ids become
placeholders such as `<EMAIL_1>`.

Placeholders are consistent within one conversation (the customer's message and the agent's reply share a
`Scrubber`), so a reply that repeats the customer's order id still repeats it; numbering restarts per conversation,
so a placeholder never links two customers. Names are not scrubbed: a name alone is not matched by a pattern, and
the voice's greeting rule needs it. Patterns are English/US-centric; check `rlhf voice pairs`' summary counts.
"""

from __future__ import annotations

import re

# Order matters: a card number would otherwise also match the phone pattern, an order id inside an address or an
# email would be taken out first and break them.
PII_PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "card": re.compile(r"(?<![\w#])(?:\d[ -]?){12,18}\d(?!\w)"),
    "phone": re.compile(r"(?<![\w#])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,3}(?!\w)"),
    "address": re.compile(
        r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}"
        r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl|Terrace|Close)\b",
    ),
    "order": re.compile(r"#\s?\d{4,}|\b(?:[A-Z]{2,4}-\d{4,})\b"),
}
"""Kind -> pattern, applied in this order."""

PLACEHOLDER = re.compile(r"<(?:EMAIL|CARD|PHONE|ADDRESS|ORDER)_\d+>")
"""What a placeholder looks like."""


class Scrubber:
    """Replaces PII in the texts of one conversation with consistent placeholders, counting each kind."""

    def __init__(self) -> None:
        self.placeholders: dict[tuple[str, str], str] = {}
        self.counts: dict[str, int] = dict.fromkeys(PII_PATTERNS, 0)

    def scrub(self, text: str) -> str:
        """The text with every PII match replaced by its kind's placeholder (the same value, the same one)."""
        for kind, pattern in PII_PATTERNS.items():
            text = pattern.sub(lambda match, kind=kind: self._placeholder(kind, match.group(0)), text)
        return text

    def _placeholder(self, kind: str, value: str) -> str:
        if kind == "phone" and sum(c.isdigit() for c in value) < 9:
            return value  # short digit runs (dates, quantities, prices) are not phone numbers
        key = (kind, re.sub(r"[\s().#-]", "", value).lower())
        if key not in self.placeholders:
            number = sum(k == kind for k, _ in self.placeholders) + 1
            self.placeholders[key] = f"<{kind.upper()}_{number}>"
        self.counts[kind] += 1
        return self.placeholders[key]
