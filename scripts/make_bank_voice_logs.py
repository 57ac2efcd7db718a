"""Generate synthetic support logs for Harbourstone Bank, the second shipped brand voice.

Usage:
    python scripts/make_bank_voice_logs.py [--seed 0] [--rows 600] [--out recipes/bank_voice/data]

Writes `logs.jsonl` (one customer message and the agent's reply per row, with `customer_id`, `thread_id`,
`timestamp` and `agent_id`, as a support tool exports them) and `voice_guide.md` (rendered from
`recipes/bank_voice/voice.yaml`). The output is a pure function of the seed. Messages carry the PII real logs carry
(emails, phone numbers, card numbers, street addresses, reference numbers) so that `rlhf voice pairs` has something
to scrub. On-voice replies greet the customer by the name they signed with (the spec's greeting rule decides). About
60% of the replies follow the voice; the rest break it the way agents do (casual words and contractions, exclamation
marks, a missing sign-off, jargon, blame, over-promises, a curt or rambling reply, "Dear customer," to a customer who
signed, a fragment such as "Noted.", a vague commitment instead of what the request needs), and some agents break it
more often than others. The bank pipeline's pairs stage turns these logs into its data files; the shipped copies of
those files are made with:

    rlhf voice pairs recipes/bank_voice/voice.yaml recipes/bank_voice/data/logs.jsonl --out recipes/bank_voice/data \
        --held-out-share 0.2
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script, Python puts scripts/ on sys.path, not the repository root

from rlhf.voice.guide import render_guide  # noqa: E402
from rlhf.voice.scorer import load_scorer  # noqa: E402
from rlhf.voice.spec import load_voice  # noqa: E402

SPEC = REPO_ROOT / "recipes" / "bank_voice" / "voice.yaml"
DEFAULT_OUT = REPO_ROOT / "recipes" / "bank_voice" / "data"
SIGN_OFF = load_voice(SPEC).sign_off.text
SCORER = load_scorer(SPEC)  # the spec's greeting rule picks the opening, so the logs and the judge agree

# fmt: off
FIRST = ["Anna", "Omar", "Grace", "Henrik", "Leila", "Tomas", "Ruth", "Kwame", "Ines", "Daniel", "Mei", "Farid",
         "Clara", "Joseph", "Nadia", "Peter", "Sara", "Victor", "Amara", "Lukas"]
LAST = ["Patel", "Okafor", "Lindqvist", "Moreau", "Novak", "Haddad", "Brennan", "Tanaka", "Ferreira", "Walsh",
        "Kowalski", "Adeyemi", "Schmidt", "Rossi", "Yilmaz", "Murphy"]
STREETS = ["Elm Street", "Harbour Road", "Mill Lane", "Station Road", "Oak Avenue", "Cedar Court", "Quay Street"]
AGENTS = {"agent-01": 0.15, "agent-02": 0.3, "agent-03": 0.45, "agent-04": 0.6}  # agent -> off-voice rate

INTENTS = {
    "lost_card": {
        "asks": ["I lost my debit card {when} and I am worried someone will use it.",
                 "My card ending {last4} is missing since {when}, please block it.",
                 "I think my wallet was stolen {when}, the card number is {card}."],
        "topic": "your missing card",
        "acts": ["We have blocked the card ending {last4} and a replacement will arrive within five working days.",
                 "We have cancelled the card and ordered a new one to the address we hold for you."],
        "casual": "No worries, we've blocked it and a new card's on the way",
    },
    "transfer_delay": {
        "asks": ["A transfer of {amount} I sent {when} has still not arrived, reference {ref}.",
                 "Where is my payment of {amount}? The reference is {ref} and it left {when}.",
                 "My landlord has not received the {amount} I sent {when}."],
        "topic": "the delayed transfer",
        "acts": ["We have traced the payment of {amount} and it will reach the receiving bank by tomorrow.",
                 "We have contacted the receiving bank about reference {ref} and will confirm the outcome by Friday."],
        "casual": "Hey, we're chasing that payment now and it's gonna land soon",
    },
    "fee_dispute": {
        "asks": ["I was charged a fee of {amount} {when} that I do not understand.",
                 "Why is there an overdraft charge of {amount} on my statement?",
                 "Please refund the {amount} fee taken {when}, I never went overdrawn."],
        "topic": "the fee on your account",
        "acts": ["We have reviewed the charge of {amount} and will refund it to your account within two days.",
                 "We have refunded the fee of {amount}; it will show on your next statement."],
        "casual": "Cheers for flagging it, we've popped the {amount} back, no problem",
    },
    "address_change": {
        "asks": ["I moved to {address} {when}, please update my address.",
                 "Please change my address to {address}. My phone is {phone}.",
                 "New address from {when}: {address}. Can you update it?"],
        "topic": "your change of address",
        "acts": ["We have updated your address to {address} and will send a confirmation letter there.",
                 "We have recorded your new address and will post your next statement to {address}."],
        "casual": "Awesome, that's sorted, you're all set at the new place",
    },
    "statement_request": {
        "asks": ["Could you send me my statements for the last six months to {email}?",
                 "I need a statement for my mortgage application, please email it to {email}.",
                 "Please post me a paper statement for {month}."],
        "topic": "your statement request",
        "acts": ["We have sent your statements to the email address we hold and they will arrive within the hour.",
                 "We will post the statement for {month} today, and it should arrive within three working days."],
        "casual": "Super, we'll ping your statements over to you",
    },
    "login_problem": {
        "asks": ["I cannot log in to the app since {when}, it says my details are wrong.",
                 "The app keeps locking me out. My number is {phone}.",
                 "I forgot my password and the reset email never came to {email}."],
        "topic": "the problem signing in",
        "acts": ["We have reset your online banking access and will send a new activation code by text message.",
                 "We have unlocked your profile, and you will receive a reset link within ten minutes."],
        "casual": "Hey folks, we've unlocked it, you can't miss the reset email",
    },
}
ACKS = ["Thank you for contacting us about {topic}.", "We apologise for the trouble with {topic}.",
        "We understand your concern about {topic}."]
NEXT = ["Please reply if you need anything else.", "Please call us if anything looks unfamiliar.",
        "We will write again once it is complete."]
PADDING = ["We value your custom and the trust you place in us.",
           "Our customer care team is available from eight in the morning until eight in the evening.",
           "You can also see the status of your request in the app under Messages.",
           "We review every request carefully to keep your account safe.",
           "Please keep this message for your records."]
BREAKS = {
    "casual": None,
    "exclamation": None,
    "missing_signoff": None,
    "jargon": ["Your request is with our back office.", "We raised it with the ops team under case id {ref}.",
               "A KYC check is pending on the account."],
    "blame": ["You should have told us sooner.", "This was user error on the login screen.",
              "You must have entered the wrong details."],
    "over_promise": ["We guarantee this will not happen again.", "It will definitely be fixed today.",
                     "The refund will arrive instantly."],
    "curt": None,
    "rambling": None,
    "general_greeting": None,
    "fragment": ["Noted.", "Understood.", "All done."],
    "vague": ["We have passed your message to the team concerned and will reply shortly.",
              "We have logged your request and will be in touch with an update."],
}
# fmt: on


def _slots(rng: random.Random, name: tuple[str, str]) -> dict[str, str]:
    card = " ".join(f"{rng.randrange(10000):04d}" for _ in range(4))
    return {
        "when": rng.choice(["yesterday", "this morning", "on Monday", "last week", "two days ago"]),
        "card": card,
        "last4": card[-4:],
        "amount": f"£{rng.randrange(5, 900)}.{rng.randrange(100):02d}",
        "ref": f"HB-{rng.randrange(100000, 999999)}",
        "address": f"{rng.randrange(1, 200)} {rng.choice(STREETS)}",
        "phone": f"07{rng.randrange(100, 999)} {rng.randrange(100000, 999999)}",
        "email": f"{name[0].lower()}.{name[1].lower()}{rng.randrange(99)}@example.com",
        "month": rng.choice(["March", "April", "May", "June", "July"]),
    }


def _message(intent: str, name: tuple[str, str], slots: dict[str, str], rng: random.Random) -> str:
    ask = rng.choice(INTENTS[intent]["asks"]).format(**slots)
    opener = rng.choice(["Hello,", "Hi,", "Good morning,", ""])
    closer = rng.choice([f"Thanks, {name[0]}", f"Regards, {name[0]} {name[1]}", f"{name[0]} {name[1]}", ""])
    if rng.random() < 0.3:
        ask += f" You can reach me on {slots['phone']} or {slots['email']}."
    return " ".join(part for part in (opener, ask, closer) if part)


def _on_voice(intent: str, message: str, slots: dict[str, str], rng: random.Random) -> list[str]:
    spec = INTENTS[intent]
    # The name the customer signed with, never one from the account; "Dear customer," when they did not sign.
    greeting = SCORER.greeting_for(message)
    body = [
        rng.choice(ACKS).format(topic=spec["topic"]),
        rng.choice(spec["acts"]).format(**slots),
        rng.choice(NEXT),
    ]
    return [greeting, " ".join(body), SIGN_OFF]


def _off_voice(lines: list[str], intent: str, slots: dict[str, str], rng: random.Random) -> tuple[str, list[str]]:
    kind = rng.choice(list(BREAKS))
    greeting, body, sign_off = lines
    if kind == "casual":
        body = INTENTS[intent]["casual"].format(**slots) + ". " + body.split(". ", 2)[-1]
    elif kind == "exclamation":
        body = body.replace(".", "!", 1)
    elif kind == "missing_signoff":
        sign_off = ""
    elif kind == "curt":
        body, greeting = " ".join(INTENTS[intent]["acts"][0].format(**slots).split()[:7]).rstrip(",;") + ".", ""
    elif kind == "rambling":
        body = " ".join([body, *rng.sample(PADDING, 4), *rng.sample(PADDING, 3)])
    elif kind == "general_greeting":
        greeting = "Dear customer,"  # where the customer signed: still a greeting, not the personal one
    elif kind == "fragment":
        body = f"{rng.choice(BREAKS[kind])} {body}"
    elif kind == "vague":  # acknowledges and commits to something, but not what this request needs
        ack, _, rest = body.split(". ", 2)
        body = f"{ack}. {rng.choice(BREAKS[kind])} {rest}"
    else:
        body = f"{body} {rng.choice(BREAKS[kind]).format(**slots)}"
    return kind, [line for line in (greeting, body, sign_off) if line]


def generate(out_dir: Path, seed: int = 0, rows: int = 600) -> list[dict]:
    """Writes `logs.jsonl` and `voice_guide.md`; returns the log rows."""
    rng = random.Random(seed)
    customers = [(f"HSB{100000 + i}", (rng.choice(FIRST), rng.choice(LAST))) for i in range(max(3, rows * 2 // 5))]
    start = datetime(2026, 9, 1, 8, 0)
    out = []
    for i in range(rows):
        customer, name = rng.choice(customers)
        intent = rng.choice(list(INTENTS))
        agent = rng.choice(list(AGENTS))
        slots = _slots(rng, name)
        message = _message(intent, name, slots, rng)
        lines = _on_voice(intent, message, slots, rng)
        if rng.random() < AGENTS[agent]:
            _, lines = _off_voice(lines, intent, slots, rng)
        out.append(
            {
                "message": message,
                "reply": "\n".join(lines),
                "customer_id": customer,
                "thread_id": f"T{i:05d}",
                "timestamp": (start + timedelta(minutes=137 * i + rng.randrange(60))).isoformat(),
                "agent_id": agent,
            }
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "logs.jsonl").open("w", encoding="utf-8", newline="\n") as handle:
        for row in out:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out_dir / "voice_guide.md").write_text(render_guide(load_voice(SPEC)), encoding="utf-8", newline="\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the random generator (default: 0)")
    parser.add_argument("--rows", type=int, default=600, help="log rows to write (default: 600)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: the shipped one)")
    args = parser.parse_args(argv)
    rows = generate(args.out, args.seed, args.rows)
    print(f"{args.out / 'logs.jsonl'}: {len(rows)} rows; {args.out / 'voice_guide.md'}")


if __name__ == "__main__":
    main()
