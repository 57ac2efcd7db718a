"""Content judge for Ridgeline Outfitters support replies: does the reply answer *this* customer?

A gold judge that reads the prompt. It scores what a reply says, not how it sounds (that is
`reward_models.brand_voice`), with five rules, each in [0, 1] or None where it does not apply:

- `intent`: the reply serves the customer's intent. The intent comes from the prompt row's ground truth
  (`info[i]["intent"]`) where the prompt file records it, else it is inferred from the message with a keyword
  lexicon. Only the reply's readable sentences (no garbled tokens) count as evidence. The reply earns 1 when it
  carries evidence of that intent (a core topic word such as "refund" for a refund request) at least as strong as
  the evidence of any other intent; a reply that only talks about another intent ("I've unlocked your account" to
  a late parcel) scores 0, one that talks about nothing concrete (or only in word salad) 0.25.
- `name`: applies when the customer signed a name: 1 if the reply greets that name, 0.75 if it uses it elsewhere,
  0.25 if it names nobody, 0 if it greets someone else. `no_invented_name` applies to unsigned messages instead:
  0 if the reply greets a name the customer never gave. Exactly one of the two applies to each prompt, and they
  share one weight; keeping them apart lets a report count name matches over signed prompts only.
- `order`: order numbers and products from the message are repeated correctly: any wrong or invented order number
  or product scores 0; a correct one 1; not mentioning them 0.5. None when the message has neither.
- `action`: the reply commits to a concrete action (a first-person "I've ..." / "I'll ..." sentence) that fits the
  intent (1); a fitting commitment next to one that belongs to another intent ("I've set up a free repair" for a
  complaint about staff), or only commitments that name no intent, 0.5; only commitments that belong to another
  intent, or a fitting word without any commitment, 0.25; sympathy alone 0.
- `coherence`: the share of well-formed sentences (capitalised, 3-40 words, ending in . ! or ?, no doubled words,
  no glued or garbled tokens such as "to65" or "isn'tHi"; short greeting and sign-off lines pass), scaled down for looping text (repeated word 4-grams). A reply cut off
  mid-sentence has a malformed last sentence.

`score` is the `RULE_WEIGHTS`-weighted mean of the rules that apply. Standard library only (no torch), so recipes,
tests and the compare report import it cheaply. The vocabularies below were written for this judge from the meaning
of each intent; they are not the reply templates or the rule lists that labelled the training pairs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

SHARES_WITH_TRAINING = (
    "It shares with the training data the intent names, the shop's product catalogue and the ground-truth columns "
    "(intent, customer_name, order_id, product) written by the same data generator that labelled the preference "
    "pairs; it does not share the reply templates or the rule lists used to label pairs, and its vocabularies were "
    "written separately from them."
)
"""What this judge has in common with the signal the policy was trained on, shown in the compare report."""

RULE_WEIGHTS = {
    "intent": 0.35,
    "action": 0.20,
    "name": 0.15,
    "no_invented_name": 0.15,
    "order": 0.15,
    "coherence": 0.15,
}
"""Weight of each rule in `score` (`name` and `no_invented_name` never both apply); keys are those of `explain`."""

MATCH = 0.5
"""A rule score at or above this counts as a match (e.g. the intent-match rate in the compare report)."""

# Per intent: `request` cues find the intent in a customer message; `core` cues are the intent's own topic in a
# reply; `shared` cues are actions and logistics that fit this intent but also others (a refund fits a cancelled
# order, tracking fits any parcel). A reply's evidence for its intent counts core and shared cues; its evidence for
# another intent counts only that intent's core cues that are not also cues of the expected one.
LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "late_order": {
        "request": (
            r"(hasn't|has not|haven't|not) (arrived|been delivered|shown up|come)",
            r"still (not here|waiting)",
            r"where is (my|it)",
            r"\blate\b",
            r"tracking",
            r"no package",
            r"nothing has shown up",
            r"(supposed|meant) to (arrive|be delivered)",
            r"actually coming",
            r"is it lost",
            r"hasn't updated",
            r"check on",
        ),
        "core": (
            r"delay",
            r"\blate\b",
            r"taking so long",
            r"the wait\b",
            r"waiting",
            r"(hasn't|not) (reached|arrived)",
            r"out for delivery",
            r"trace",
        ),
        "shared": (
            r"courier",
            r"tracking",
            r"express",
            r"deliver",
            r"replacement",
            r"arrive",
            r"on (its|the) way",
            r"in transit",
            r"parcel",
        ),
    },
    "refund": {
        "request": (r"refund", r"money back", r"returned", r"sent (it )?back", r"posted .{0,30}back"),
        "core": (r"refund", r"your money", r"(your|to the) card", r"statement", r"return (arrived|label)"),
        "shared": (r"receipt", r"return"),
    },
    "sizing": {
        "request": (
            r"\bsize\b",
            r"sizing",
            r"size chart",
            r"run(s)? small",
            r"true to size",
            r"too (tight|big|small)",
            r"doesn'?t fit",
            r"bigger|smaller",
            r"\bwear\b",
        ),
        "core": (r"\bsize", r"sizing", r"\bfit", r"measurement", r"snug", r"one size", r"size chart"),
        "shared": (r"exchange", r"swap", r"return label"),
    },
    "damaged_item": {
        "request": (
            r"damaged",
            r"broken",
            r"\btear\b",
            r"torn",
            r"crack",
            r"snapped",
            r"crushed",
            r"split",
            r"missing",
            r"\bbent\b",
        ),
        "core": (
            r"damage",
            r"broken",
            r"\btorn\b",
            r"crack",
            r"arrived like that",
            r"not how it should arrive",
            r"let you down",
            r"recycle",
        ),
        "shared": (r"replacement", r"replace", r"new (one|\w+) ", r"refund", r"prepaid label", r"express"),
    },
    "product_question": {
        "request": (
            r"waterproof",
            r"water resistant",
            r"weigh",
            r"winter|summer",
            r"carry bag",
            r"difference between",
            r"beginner",
            r"in stock",
            r"clean",
            r"\bhow (much|do)\b",
            r"\bis the\b.*\?",
        ),
        "core": (
            r"spec",
            r"details",
            r"gear (team|expert|advice)",
            r"care guide",
            r"question",
            r"answer",
            r"maker",
            r"waterproof",
            r"weigh",
            r"in stock",
            r"clean",
        ),
        "shared": (r"email(ed)? you", r"inbox", r"guide", r"tip"),
    },
    "complaint": {
        "request": (
            r"rude",
            r"disappoint",
            r"nobody",
            r"no one",
            r"awful",
            r"worst",
            r"customer service",
            r"on hold",
            r"cut off",
            r"not impressed",
            r"called .{0,20}times",
            r"hard to get help",
            r"quality",
        ),
        "core": (
            r"feedback",
            r"experience",
            r"let you down",
            r"deserved",
            r"kinder",
            r"history",
            r"handling this",
            r"ownership",
            r"team lead",
            r"credit",
            r"explain it again",
            r"personally",
            r"your case",
        ),
        "shared": (r"follow up", r"call you", r"sorted", r"update"),
    },
    "wrong_item": {
        "request": (
            r"wrong (colou?r|item|version|thing)",
            r"different item",
            r"someone else's",
            r"completely different",
            r"not what i ordered",
            r"instead of my",
            r"box says",
        ),
        "core": (r"wrong", r"correct", r"right (item|one|colou?r|\w+)", r"packing error", r"mix-up", r"mistake"),
        "shared": (r"collect", r"the other one", r"send .{0,20}back", r"express", r"prepaid label", r"tracking"),
    },
    "cancel_order": {
        "request": (r"cancel", r"stop my order", r"no longer need", r"changed my mind", r"by mistake"),
        "core": (r"cancel", r"stopped"),
        "shared": (r"refund", r"return label", r"your card", r"money"),
    },
    "address_change": {
        "request": (r"address", r"redirect", r"moved", r"won't be home", r"shipping for"),
        "core": (r"address", r"redirect", r"new details", r"\d+ \w+ (street|road|lane|avenue|court|way)"),
        "shared": (r"courier", r"tracking"),
    },
    "warranty_repair": {
        "request": (
            r"warranty",
            r"repair",
            r"fixed",
            r"leak",
            r"peeling",
            r"stopped working",
            r"broke after",
            r"(after|ago)\W.{0,25}(months?|year)|(months?|year) ago",
            r"\bbroke\b",
        ),
        "core": (r"warranty", r"repair", r"workshop", r"\bfix", r"claim", r"covered"),
        "shared": (r"replacement", r"replace", r"postage label"),
    },
    "promo_code": {
        "request": (
            r"\bcode\b",
            r"discount",
            r"promo",
            r"coupon",
            r"checkout",
            r"price didn't change",
            r"\b[a-z]{4,}\d{1,2}\b",
            r"(won'?t|doesn'?t|didn'?t) (apply|work)",
        ),
        "core": (r"\bcode", r"discount", r"checkout", r"percent", r"price"),
        "shared": (r"refund", r"difference"),
    },
    "account_login": {
        "request": (
            r"log ?in",
            r"sign in",
            r"password",
            r"account",
            r"locked",
            r"reset (link|email)",
            r"error",
        ),
        "core": (r"log ?in", r"sign in", r"password", r"reset", r"unlock", r"locked", r"login link"),
        "shared": (r"account", r"inbox", r"email(ed)? you", r"link"),
    },
}
"""Intent keys (the data generator's, written here independently) and their keyword evidence."""

INTENTS = tuple(LEXICON)

CATALOGUE = {
    "summit 2 tent": ("tent",),
    "basecamp 4 tent": ("tent",),
    "trailhead 40l backpack": ("backpack", "pack"),
    "daypack 22l": ("daypack", "pack"),
    "alpine down jacket": ("jacket",),
    "cascade rain shell": ("rain shell", "shell", "jacket"),
    "ridge hiking boots": ("boots",),
    "scree trail runners": ("trail runners", "runners", "shoes"),
    "basecamp sleeping bag": ("sleeping bag",),
    "nimbus sleeping pad": ("sleeping pad", "pad"),
    "switchback trekking poles": ("trekking poles", "poles"),
    "ember camp stove": ("stove",),
    "glacier water bottle": ("water bottle", "bottle"),
    "timberline fleece": ("fleece",),
    "canyon sun hat": ("hat",),
    "nomad headlamp": ("headlamp",),
    "meadow camp chair": ("camp chair", "chair"),
    "drift kayak paddle": ("paddle",),
    "talus climbing harness": ("harness",),
    "harbor dry bag": ("dry bag",),
    "pinecrest base layer": ("base layer",),
    "coastline hiking shorts": ("shorts",),
}
"""The shop's products (canonical name, lower case) and the short nouns a reply may call them by."""

_NOT_NAMES = {
    "there", "team", "all", "again", "customer", "friend", "folks", "everyone", "and", "thanks", "thank", "sorry",
    "you", "so", "i", "we", "it", "the",
}  # fmt: skip
_SIGN_WORDS = {"thanks", "thank", "cheers", "regards", "best", "advance", "-"}
_NON_NAME_ENDINGS = {
    "thanks", "please", "quickly", "reply", "check", "great", "help", "elsewhere", "home", "here", "it", "one",
    "now", "soon", "today", "again", "trip", "weekend", "years", "brother", "this", "that", "month",
}  # fmt: skip

_ORDER_PATTERN = re.compile(r"(?<![\w#])#?(\d{4,7})(?![\w])")
# A number the reply gives as its own case, ticket or return reference ("Your case ID is 733415") is not a claim about
# the customer's order, so it is neither a wrong order number nor a repeated one.
_REFERENCE_BEFORE = re.compile(r"\b(?:case|ticket|rma|reference|ref)\b[\w\s.:#-]{0,12}$", re.IGNORECASE)
_GREETING_PATTERN = re.compile(r"^\W*(?:hi|hello|hey|dear|good (?:morning|afternoon|evening))[ ,]+([a-z][a-z'-]*)")
# A first-person commitment: "I've sent", "we'll ship", "I have arranged", "I'm sending". "I'm sorry" is not one.
_COMMITMENT_PATTERN = re.compile(
    r"\b(?:i|we)(?:'ve| have| will|'ll| am going to|'m going to|'re going to)\b(?! (?:a|an|any|no|been) )"
    r"|\b(?:i|we)(?:'m| am|'re| are) (?!sorry|so |really |truly |afraid)\w+ing\b"
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _normalise(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'").lower()


def _compile(cues: tuple[str, ...]) -> list[tuple[str, re.Pattern[str]]]:
    return [(cue, re.compile(cue)) for cue in cues]


_REQUEST = {intent: _compile(cues["request"]) for intent, cues in LEXICON.items()}
_REPLY = {intent: _compile(cues["core"] + cues["shared"]) for intent, cues in LEXICON.items()}
_CORE = {intent: set(cues["core"]) for intent, cues in LEXICON.items()}


def _hits(compiled: list[tuple[str, re.Pattern[str]]], text: str) -> set[str]:
    return {cue for cue, pattern in compiled if pattern.search(text)}


DEFINING = {
    "refund": (r"refund",),
    "cancel_order": (r"cancel",),
    "warranty_repair": (r"warranty", r"repair"),
    "address_change": (r"address",),
    "account_login": (r"password", r"log ?in", r"sign in"),
    "promo_code": (r"\bcode\b", r"discount"),
    "wrong_item": (r"wrong (colou?r|item|version)",),
    "sizing": (r"\bsize\b",),
    "damaged_item": (r"damaged",),
}
"""Request cues that name an intent outright; they count twice when reading a message ("too late to cancel")."""

_DEFINING = {intent: _compile(cues) for intent, cues in DEFINING.items()}


def infer_intent(prompt: str) -> str | None:
    """The customer's intent read from the message alone: the intent with the most request cues, cues that name
    the intent counting twice (None: no cue at all)."""
    text = _normalise(prompt)
    counts = {
        intent: len(_hits(_REQUEST[intent], text)) + len(_hits(_DEFINING.get(intent, []), text)) for intent in INTENTS
    }
    best = max(counts.values())
    if best == 0:
        return None
    return next(intent for intent in INTENTS if counts[intent] == best)  # ties go to the earlier intent


def signed_name(prompt: str) -> str | None:
    """The name a customer signed the message with ("Thanks, Maya", "- Maya", a bare "Maya" at the end), or None."""
    words = prompt.strip().split()
    if len(words) < 2:
        return None
    last, before = words[-1], words[-2]
    if not re.fullmatch(r"[A-Za-z][a-z'-]+", last) or last.lower() in _NON_NAME_ENDINGS | _SIGN_WORDS:
        return None
    signs = before.rstrip(",").lower() in _SIGN_WORDS or before == "-"
    after_order = _ORDER_PATTERN.fullmatch(before) is not None  # "... order #84274 Zoe"
    if not (before[-1] in ",.!?-" or signs or (after_order and last[0].isupper())):
        return None
    if last[0].islower() and not (signs or before[-1] in ".!?"):  # lower-cased messages: a sentence or sign-off
        return None
    return last.capitalize()


def _greeted(text: str) -> str | None:
    match = _GREETING_PATTERN.match(text)
    if match is None or match.group(1) in _NOT_NAMES:
        return None
    return match.group(1)


def _name_rules(prompt: str, text: str, info: dict[str, Any]) -> tuple[float | None, float | None]:
    name = info["customer_name"] if "customer_name" in info else signed_name(prompt)
    greeted = _greeted(text)
    if name:
        name = name.lower()
        if greeted == name:
            return 1.0, None
        if greeted is not None:
            return 0.0, None
        return (0.75 if re.search(rf"\b{re.escape(name)}\b", text) else 0.25), None
    return None, (0.0 if greeted is not None else 1.0)


def _products(text: str) -> set[str]:
    return {product for product in CATALOGUE if re.search(rf"\b{re.escape(product)}\b", text)}


def _nouns(text: str) -> set[str]:
    return {noun for nouns in CATALOGUE.values() for noun in nouns if re.search(rf"\b{re.escape(noun)}\b", text)}


def _order_numbers(text: str) -> set[str]:
    """The order numbers a reply states: numbers of 4-7 digits, less those it gives as a case or ticket reference."""
    return {
        match.group(1)
        for match in _ORDER_PATTERN.finditer(text)
        if not _REFERENCE_BEFORE.search(text, max(0, match.start() - 40), match.start())
    }


def _order_rule(prompt: str, text: str, info: dict[str, Any]) -> float | None:
    prompt_text = _normalise(prompt)
    if "order_id" in info:
        expected_orders = {str(info["order_id"]).lstrip("#")} if info["order_id"] else set()
    else:
        expected_orders = set(_ORDER_PATTERN.findall(prompt_text))
    if "product" in info:
        expected_products = {info["product"].lower()} if info["product"] else set()
    else:
        expected_products = _products(prompt_text)
    said_orders = _order_numbers(text)
    said_products = _products(text)
    if said_orders - expected_orders or said_products - expected_products:
        return 0.0  # a wrong or invented order number or product
    parts = []
    if expected_orders:
        parts.append(1.0 if said_orders else 0.5)
    if expected_products:
        own_nouns = {noun for product in expected_products for noun in CATALOGUE.get(product, ())}
        named = said_products or _nouns(text) & own_nouns
        if not named and _nouns(text) - own_nouns:
            return 0.0  # calls the customer's product by another product's name
        parts.append(1.0 if named else 0.5)
    return sum(parts) / len(parts) if parts else None


def _others(intent: str, text: str) -> int:
    """The strongest evidence for another intent: its core cues in `text` that are not cues of `intent` (shared,
    logistic words such as "tracking" or "return" fit many intents and prove nothing)."""
    own_cues = {cue for cue, _ in _REPLY[intent]}
    return max(len((_hits(_REPLY[o], text) & _CORE[o]) - own_cues) for o in INTENTS if o != intent)


def _intent_rule(intent: str, text: str) -> float:
    found = _hits(_REPLY[intent], text)
    own, other = len(found), _others(intent, text)
    if own == 0:
        return 0.0 if other > 0 else 0.25
    if own >= other:
        # Only shared cues (a refund, for a cancelled order) is weaker evidence than the intent's own topic.
        return 1.0 if found & _CORE[intent] else 0.6
    return own / (own + other)


def _sentences(response: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(response.strip()) if s.strip()]


def _misfits(intent: str, sentence: str) -> bool:
    """A sentence about another intent only: none of this intent's cues, a core cue of another intent."""
    return not _hits(_REPLY[intent], sentence) and _others(intent, sentence) > 0


def _action_rule(intent: str | None, response: str) -> float:
    fitting, neutral, misfit, mentions = False, False, False, False
    for sentence in _sentences(_normalise(response)):
        fits = intent is None or bool(_hits(_REPLY[intent], sentence))
        mentions |= fits
        if _COMMITMENT_PATTERN.search(sentence) is None:
            continue
        if fits:
            fitting = True
        elif _misfits(intent, sentence):
            misfit = True  # e.g. "I've set up a free repair" in answer to a complaint about rude staff
        else:
            neutral = True
    if fitting:
        return 0.5 if misfit else 1.0
    if neutral:
        return 0.5
    if misfit:
        return 0.25
    return 0.25 if mentions and intent is not None else 0.0


# Tokens no writer produces: glued words ("isn'tHi", "to65", "759ea"), replacement and control characters. A tiny
# language model's broken text is full of them; ordinals ("3rd") and codes ("SPRING20", "40L") are fine.
_GARBLED = re.compile(r"[a-z][A-Z]|[a-z]\d|\d(?!(?:st|nd|rd|th)\b)[a-z]|[\ufffd\x00-\x08\x0b-\x1f\x7f]")


def _well_formed(sentence: str) -> bool:
    words = sentence.split()
    if not (3 <= len(words) <= 40) or sentence[-1] not in ".!?" or not (sentence[0].isupper() or sentence[0].isdigit()):
        return False
    if _GARBLED.search(sentence):
        return False
    lowered = [w.lower().strip(",;:") for w in words]
    return all(a != b for a, b in zip(lowered, lowered[1:], strict=False))


def _readable(response: str) -> str:
    """The reply's sentences that contain no garbled token, lower-cased: the only text that counts as evidence of an
    intent (cue words scattered through word salad address nobody)."""
    sentences = [s for s in _SENTENCE_SPLIT.split(response.strip()) if s.strip() and not _GARBLED.search(s)]
    return _normalise(" ".join(sentences))


def coherence(response: str) -> float:
    """The share of well-formed sentences in a reply (greeting and sign-off lines pass), scaled down for looping text
    (repeated word 4-grams): the `coherence` rule, shared with `reward_models.support_reply`."""
    lines = [line.strip() for line in response.strip().splitlines() if line.strip()]
    verdicts = []
    for number, line in enumerate(lines):
        short = len(line.split()) <= 6 and line[:1].isupper()
        if number == 0 and len(lines) > 1 and short and line.endswith(","):
            verdicts.append(True)  # a greeting line: "Hi Maya,"
            continue
        if number == len(lines) - 1 and number > 0 and short and lines[number - 1][-1] in ".!?":
            verdicts.append(True)  # a sign-off line after a finished sentence (a cut-off reply has none)
            continue
        verdicts += [_well_formed(s.strip()) for s in re.split(r"(?<=[.!?])\s+", line) if s.strip()]
    if not verdicts:
        return 0.0
    formed = sum(verdicts) / len(verdicts)
    words = _WORD.findall(_normalise(response))
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    repeated = 1 - len(set(grams)) / len(grams) if grams else 0.0
    return formed * max(0.0, 1.0 - 2.0 * repeated)


def explain_one(prompt: str, response: str, info: dict[str, Any] | None = None) -> dict[str, float | None]:
    """Scores one reply against each content rule.

    Args:
        prompt: The customer's message (the last user turn).
        response: The reply text, without special tokens.
        info: The prompt row's ground-truth columns (`intent`, `customer_name`, `order_id`, `product`); a column
            that is present is trusted, even when null; a missing one is inferred from the prompt.

    Returns:
        {rule: score in [0, 1], or None where the rule does not apply}, keys as in `RULE_WEIGHTS`.
    """
    info = info or {}
    intent = info.get("intent") or infer_intent(prompt)
    text = _normalise(response).strip()
    name, no_invented = _name_rules(prompt, text, info)
    rules: dict[str, float | None] = {
        "intent": _intent_rule(intent, _readable(response)) if intent in LEXICON else None,
        "action": _action_rule(intent if intent in LEXICON else None, response),
        "name": name,
        "no_invented_name": no_invented,
        "order": _order_rule(prompt, text, info),
        "coherence": coherence(response),
    }
    if not text:  # an empty reply earns nothing, not even for inventing no name
        return {rule: None if value is None else 0.0 for rule, value in rules.items()}
    return rules


def _check(prompts: Sequence[str], responses: Sequence[str], info: Sequence[dict] | None) -> list[dict]:
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")
    if info is None:
        return [{} for _ in responses]
    if len(info) != len(responses):
        raise ValueError(f"got {len(info)} info rows for {len(responses)} responses")
    return [row or {} for row in info]


def explain(
    prompts: Sequence[str], responses: Sequence[str], info: Sequence[dict] | None = None
) -> list[dict[str, float | None]]:
    """Per-rule content scores for each reply (see `explain_one`); None marks a rule that does not apply."""
    rows = _check(prompts, responses, info)
    return [explain_one(p, r, i) for p, r, i in zip(prompts, responses, rows, strict=True)]


def score(prompts: Sequence[str], responses: Sequence[str], info: Sequence[dict] | None = None) -> list[float]:
    """Scores replies for whether they answer the customer's message.

    Args:
        prompts: The customer messages, one per response.
        responses: The reply texts, without special tokens.
        info: Optional ground-truth columns of each prompt row (see `explain_one`).

    Returns:
        One float per response in [0, 1]: the `RULE_WEIGHTS`-weighted mean of the rules that apply.

    Raises:
        ValueError: If the lengths of the arguments differ.
    """
    return weighted_scores(explain(prompts, responses, info), RULE_WEIGHTS)


def weighted_scores(explained: Sequence[dict[str, float | None]], weights: dict[str, float]) -> list[float]:
    """Each reply's weighted mean over the rules that apply to it (None: does not apply), from `explain`'s rows."""
    scores = []
    for rules in explained:
        applicable = {rule: value for rule, value in rules.items() if value is not None}
        total = sum(weights[rule] for rule in applicable)
        scores.append(sum(weights[rule] * value for rule, value in applicable.items()) / total)
    return scores
