"""Generate the shipped brand-voice data for Ridgeline Outfitters, a fictional outdoor-gear retailer.

Usage:
    python scripts/make_brand_voice_data.py [--seed 0] [--out recipes/brand_voice/data]

Writes the voice guide and six JSONL files (SFT demonstrations, preference pairs and prompts, each with a training
and a held-out split) and prints the row counts and the preference categories. The output is a pure function of the
seed: running the script twice gives byte-identical files. The voice rules (sign-off, banned phrases, jargon, length
bounds) and the guide's prose come from the voice spec `recipes/brand_voice/voice.yaml`, which the rules scorer
`reward_models.brand_voice` compiles and judges with.

The data imitates historical support logs: every customer message is drawn from a pool of unique messages, which
is partitioned so that no message appears in two files.

Every row records the message's ground truth (columns beside the conversation; loaders ignore them):
- `intent`: one of the keys of `INTENTS` (late_order, refund, sizing, ...);
- `customer_name`: the name the customer signed with (as in `NAMES`; the text may be lower-cased), or null;
- `order_id`: the order number's digits as written after "#" in the message, e.g. "66492", or null;
- `product`: the canonical product name the message mentions (as in `PRODUCTS`/`SIZED_PRODUCTS`), or null.

SFT replies (`on_voice`: whether the reply follows the voice rules) always greet the signed name ("Hi Maya,") or a
generic greeting, repeat the order number and product, and answer the intent with a fitting action; a third break a
listed voice rule while doing so. Preference rows add `category` and `rule` (what is wrong with the rejected reply):
- `voice`: the rejected reply breaks a listed rule of `brand_voice` (rule: one of `VIOLATIONS`);
- `paraphrase`: it breaks the voice in words the scorer does not list (rule: one of `PARAPHRASES`), so the scorer
  finds nothing; held-out pairs use paraphrases that no training pair contains;
- `content`: both replies are on-voice and the rejected one greets the wrong (or an invented) name, gets the order
  number or product wrong, commits to an action that does not fit the intent, or commits to nothing (rule:
  `wrong_name`, `wrong_order`, `wrong_product`, `unfit_action`, `vague`);
- `other_intent`: both on-voice, the rejected one is a fluent reply written for another intent;
- `length_matched` (held-out only): any of the rules above, chosen and rejected within `LENGTH_MATCH_WORDS` words.
Each training message gives one pair in a category drawn by `TRAIN_CATEGORY_SHARES`, then one more `content` and one
more `other_intent` pair (`EXTRA_TRAIN_CATEGORIES`): two thirds of the training pairs are both-on-voice content pairs.
The chosen reply is always correct and on-voice to the scorer. This generator must never import a content judge:
the judges that grade policies stay independent of the labeller (the voice scorer is not: it labels `voice` pairs).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts scripts/ on sys.path, not the repository root where reward_models/ lives.
sys.path.insert(0, str(REPO_ROOT))

from reward_models import brand_voice  # noqa: E402
from rlhf.voice.guide import render_guide  # noqa: E402
from rlhf.voice.spec import load_voice  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "recipes" / "brand_voice" / "data"

# Rows per file; every customer message appears in exactly one file.
SPLIT_SIZES = {
    "sft_train": 1600,
    "sft_eval": 160,
    "prefs_train": 1600,
    "prefs_eval": 360,
    "ppo_prompts": 400,
    "eval_prompts": 120,
}

OFF_VOICE_SHARE = 1 / 3
MESSAGE_WORDS = (8, 40)

# ---------------------------------------------------------------------------------------------------------------
# Slot values for customer messages
# ---------------------------------------------------------------------------------------------------------------

# Compact tables read better than one item per line.
# fmt: off
NAMES = [
    "Maya", "Tom", "Priya", "Liam", "Sofia", "Noah", "Aisha", "Ben", "Chloe", "Diego", "Emma", "Finn", "Grace",
    "Hiro", "Isla", "Jack", "Kira", "Leo", "Mia", "Nate", "Olivia", "Pablo", "Quinn", "Rosa", "Sam", "Tara",
    "Umar", "Vera", "Will", "Yara", "Zoe", "Alex", "Beth", "Carlos", "Dana", "Eli", "Fatima", "Gus", "Hannah",
    "Ivan",
]

# (full product name, short noun used in replies)
PRODUCTS = [
    ("Summit 2 tent", "tent"), ("Basecamp 4 tent", "tent"), ("Trailhead 40L backpack", "backpack"),
    ("Daypack 22L", "daypack"), ("Alpine down jacket", "jacket"), ("Cascade rain shell", "rain shell"),
    ("Ridge hiking boots", "boots"), ("Scree trail runners", "trail runners"),
    ("Basecamp sleeping bag", "sleeping bag"), ("Nimbus sleeping pad", "sleeping pad"),
    ("Switchback trekking poles", "trekking poles"), ("Ember camp stove", "stove"),
    ("Glacier water bottle", "water bottle"), ("Timberline fleece", "fleece"), ("Canyon sun hat", "hat"),
    ("Nomad headlamp", "headlamp"), ("Meadow camp chair", "camp chair"), ("Drift kayak paddle", "paddle"),
    ("Talus climbing harness", "harness"), ("Harbor dry bag", "dry bag"),
]

CLOTHING_SIZES = ["small", "medium", "large", "extra large"]
SHOE_SIZES = ["size 7", "size 8", "size 9", "size 10", "size 11"]
# (full product name, short noun, sizes it comes in) for the sizing intent
SIZED_PRODUCTS = [
    ("Alpine down jacket", "jacket", CLOTHING_SIZES), ("Cascade rain shell", "rain shell", CLOTHING_SIZES),
    ("Timberline fleece", "fleece", CLOTHING_SIZES), ("Pinecrest base layer", "base layer", CLOTHING_SIZES),
    ("Coastline hiking shorts", "shorts", CLOTHING_SIZES), ("Talus climbing harness", "harness", CLOTHING_SIZES),
    ("Ridge hiking boots", "boots", SHOE_SIZES), ("Scree trail runners", "trail runners", SHOE_SIZES),
]

DATES = ["last Monday", "last week", "on Friday", "ten days ago", "on the 3rd", "at the start of the month"]
DAYS = ["a week", "ten days", "two weeks", "twelve days", "three weeks", "nine days"]
MONTHS = ["three months", "six months", "eight months", "a year", "eighteen months"]
CODES = ["TRAIL15", "SUMMIT10", "SPRING20", "WELCOME10", "CAMPFIRE25", "PEAK5"]
STREETS = ["Birch Lane", "Harbour Road", "Mill Street", "Oak Avenue", "Station Road", "Cedar Court", "Elm Way"]

OPENERS = ["", "", "", "Hi,", "Hello,", "Hey,", "Hi there,", "Good morning,", "Hello team,"]
CLOSERS = ["", "", "Thanks.", "Thank you!", "Thanks, {name}", "Cheers, {name}", "- {name}", "{name}",
           "Thanks in advance, {name}"]
EXTRAS = [
    "", "", "", "", "This is really frustrating.", "I'm not happy about this.", "Please sort this out quickly.",
    "I'd appreciate a quick reply.", "No rush, just wanted to check.", "I have a hike planned for the weekend.",
    "It was a gift for my brother.", "I've shopped with you for years.", "Any help would be great.",
]

# ---------------------------------------------------------------------------------------------------------------
# Per-intent tables
#
# customer: message templates. on_voice: (acknowledgement, concrete action, next step) triples. curt: terse replies
# with no apology and no first-person action. formal: clauses for a stiff letter. blame: sentences that put the
# problem on the customer. Reply slots: {ref} (what the customer wrote about: the product and order number when
# given, see `_reference`), {size}, {code_ref}, {address}. Every on-voice triple names {ref} once, so a correct reply
# always repeats the order number and product the customer gave.
# ---------------------------------------------------------------------------------------------------------------

INTENTS = {
    "late_order": {
        "customer": [
            "My order {order} still hasn't arrived and it's been {days}. Where is it?",
            "I ordered the {product} {date} and it's still not here. Order {order}.",
            "Tracking for {order} hasn't updated in {days}. Is it lost?",
            "Where is my {product}? It was meant to arrive {date}.",
            "Still waiting on order {order}. It said 3-5 days and it has been {days}.",
            "Can you check on {order}? I need the {product} for a trip this weekend.",
            "hi, order {order} is late. any news?",
            "My {product} was supposed to be delivered {date} but nothing has shown up.",
            "It has been {days} since I ordered and I have no package. Order number is {order}.",
            "Is order {order} actually coming? I'm going camping soon and need the {product}.",
        ],
        "on_voice": [
            ("I'm sorry the wait for {ref} is taking so long.",
             "I've checked with the courier and it's moving again, so it should reach you within two days.",
             "I'll email you the new tracking link today."),
            ("Sorry for the wait, that's frustrating when you have plans.",
             "I've upgraded {ref} to express delivery at no cost.",
             "You'll get a tracking email within the hour."),
            ("I'm sorry you're still waiting for {ref}.",
             "I've asked the courier to trace the parcel and I'll update you by tomorrow.",
             "If it is lost, I'll send a replacement straight away."),
            ("Thanks for your patience, and sorry for the delay.",
             "I've confirmed the parcel with {ref} left our warehouse and is out for delivery.",
             "I'll keep an eye on it and message you once it lands."),
            ("I'm really sorry about the delay with {ref}.",
             "I've sent a replacement by express post today, so you won't have to wait on the first parcel.",
             "Keep whichever one arrives first."),
        ],
        "curt": ["Order is with the courier. Check tracking.", "Shipment delayed. Should arrive this week.",
                 "Parcel in transit. Allow 2 more days."],
        "formal": ["the parcel for {ref} has been dispatched and is currently in transit",
                   "delivery times are determined by the courier"],
        "blame": ["Delivery is handled by the courier, so this is not our fault.",
                  "You should have picked express shipping if you needed it quickly."],
    },
    "refund": {
        "customer": [
            "I returned the {product} {days} ago and still haven't seen my refund for {order}.",
            "Can I get a refund for order {order}? The {product} isn't what I expected.",
            "When will my refund come through? I sent back the {product} {date}.",
            "I want my money back for {order}, the {product} just doesn't work for me.",
            "Refund for {order} please. I changed my mind about the {product}.",
            "my refund still hasnt shown up, returned it {date}. order {order}",
            "How long do refunds take? I posted the {product} back {date}.",
            "I'd like to return the {product} I bought and get a refund.",
            "You received my return {days} ago but I have not been refunded. Order {order}.",
        ],
        "on_voice": [
            ("I'm sorry you've been waiting on your money.",
             "I've issued a full refund for {ref} today.",
             "It should reach your card within three to five days."),
            ("Thanks for letting me know, and sorry it wasn't right.",
             "I've started your refund for {ref} and emailed you a free return label.",
             "Drop it at any post office whenever suits you."),
            ("Sorry for the wait on this.",
             "I've checked {ref} and your return arrived safely, so I've sent the refund now.",
             "You'll see it on your statement in a few days."),
            ("Thanks for your patience, and I'm sorry this has dragged on.",
             "I have pushed your refund through for {ref} and added a note so it isn't held up.",
             "I'll email you the receipt today."),
        ],
        "curt": ["Refund issued to original payment method. Allow 3-5 business days.",
                 "Refund processed. Check your bank.", "Return received. Refund sent."],
        "formal": ["a refund for {ref} has been issued to the original payment method",
                   "refunds are processed within ten working days of receipt"],
        "blame": ["You should have sent the return sooner, which is why it took a while.",
                  "The return form was filled in wrong, so the delay is not our fault."],
    },
    "sizing": {
        "customer": [
            "What size {product} should I get? I'm usually a {size}.",
            "Does the {product} run small? I'm a {size} in most brands.",
            "I bought the {product} in {size} and it's too tight. Can I swap it?",
            "The {product} in {size} is way too big. Can I exchange it? Order {order}.",
            "Is the {product} true to size? I normally wear {size}.",
            "need to swap my {product}, the {size} doesnt fit. order {order}",
            "How do I exchange the {product} for a bigger size? The {size} doesn't fit.",
            "Your size chart for the {product} is confusing. I'm a {size} in most brands.",
        ],
        "on_voice": [
            ("Thanks for asking about sizing.",
             "For {ref}, most people who wear {size} go one size up, and I'll send a free exchange label too.",
             "That way you can swap it if the fit still isn't right."),
            ("Sorry the sizing has been confusing.",
             "I've emailed you our fit notes for {ref}, which compare {size} across brands.",
             "If it doesn't fit, I'll swap it for free."),
            ("Happy to help with the fit.",
             "I've set up a free exchange on {ref}, so just reply with the size you'd like.",
             "I'll ship it as soon as your return is scanned."),
            ("Thanks for checking with us first.",
             "I've looked at the measurements for {ref}, and {size} fits most people snugly.",
             "I'll note your account so any exchange is free."),
        ],
        "curt": ["Check the size chart on the product page.", "Exchanges accepted within 30 days. Use the returns form."],
        "formal": ["sizing information is available on the product page",
                   "exchanges are accepted within thirty days of delivery"],
        "blame": ["You should have checked the size chart before ordering.",
                  "You must have measured wrong, as the chart is accurate."],
    },
    "damaged_item": {
        "customer": [
            "My {product} arrived with a big tear. Order {order}.",
            "The {product} I got {date} is broken. A buckle snapped straight away.",
            "Box was crushed and the {product} inside is damaged. What now?",
            "Received order {order} today and the {product} has a crack in it.",
            "The {product} was damaged in the post. Can you send a new one?",
            "opened my {product} and its already broken?? order {order}",
            "Used the {product} once and a seam split. Really not happy.",
            "Part of the {product} is missing and another part is bent. Order {order}.",
        ],
        "on_voice": [
            ("I'm so sorry {ref} arrived damaged.",
             "I've sent a replacement by express post today.",
             "You'll get tracking by email shortly, and you can recycle the broken one."),
            ("Sorry about this, that's not how it should arrive.",
             "I'll ship a replacement for {ref} today at no cost.",
             "I've also emailed a prepaid label for the damaged one."),
            ("I'm sorry {ref} let you down.",
             "I've refunded the full price to your card today.",
             "If you'd like a replacement instead, just reply and I'll send one."),
            ("Thanks for telling us, and I'm sorry it arrived like that.",
             "I have arranged a free replacement for {ref} and it leaves our warehouse today.",
             "I'll send the tracking link once it's on its way."),
        ],
        "curt": ["Send photos for review.", "Damage claim logged. Replacement to follow."],
        "formal": ["your report of damage to {ref} has been recorded",
                   "a replacement will be dispatched once the claim is approved"],
        "blame": ["You must have damaged it when opening the box.",
                  "Damage in the post is not our fault, so please contact the courier."],
    },
    "product_question": {
        "customer": [
            "Is the {product} waterproof or just water resistant?",
            "How much does the {product} weigh? Trying to keep my pack light.",
            "Can I use the {product} in winter or is it for summer only?",
            "Does the {product} come with a carry bag?",
            "What's the difference between the {product} and the cheaper one?",
            "is the {product} good for beginners? first trip next month",
            "Will the {product} be back in stock soon? I've been waiting {days}.",
            "How do I clean the {product} without ruining it?",
        ],
        "on_voice": [
            ("Great question, thanks for asking.",
             "I've emailed you the full spec sheet for {ref}.",
             "I'll ask one of our gear experts to add a tip for your trip by tomorrow."),
            ("Thanks for getting in touch about {ref}.",
             "I've checked with our gear team and I'll send you their answer later today.",
             "I'll add their tips for your first trip too."),
            ("Happy to help with that.",
             "I've put together the details on {ref} and sent them to your inbox.",
             "If anything is unclear, I'll call you at a time that suits."),
            ("Good question about {ref}.",
             "I'll check it against the maker's notes today and email you a clear answer.",
             "I'll add a link to our free gear advice chat too."),
        ],
        "curt": ["See the product page for specs.", "All details are on the website."],
        "formal": ["product specifications are listed on the product page",
                   "questions about product use should be directed to the manufacturer"],
        "blame": ["You should have read the product page, as it is all there.",
                  "You must have missed the spec sheet on the website."],
    },
    "complaint": {
        "customer": [
            "I've called three times about {order} and nobody has helped me. This is awful service.",
            "Your store staff were rude to me when I asked about the {product}.",
            "I'm really disappointed with how my order {order} has been handled.",
            "Nobody replied to my last two emails. Why is it so hard to get help?",
            "The quality of the {product} is much worse than it used to be. Very disappointed.",
            "worst customer service ever. still no answer about {order}",
            "I waited on hold for an hour and then got cut off. Not impressed.",
        ],
        "on_voice": [
            ("I'm truly sorry, you deserved a quicker and kinder answer from us.",
             "I've looked into what happened with {ref} and I'm handling this myself from now on.",
             "I'll call you tomorrow morning with a full update."),
            ("Thank you for telling us, and I'm sorry we let you down.",
             "I've shared your feedback with our team lead.",
             "I'll personally follow up on {ref} by email today."),
            ("I'm sorry, that isn't the experience we want anyone to have.",
             "I have added a credit to your account as a thank you for your patience with {ref}.",
             "I'll stay on this until it's sorted."),
            ("Sorry for how things have gone with {ref}.",
             "I've taken ownership of your case and I'll reply to you directly.",
             "You won't need to explain it again."),
        ],
        "curt": ["Feedback noted.", "Complaint logged. Someone will be in touch."],
        "formal": ["your complaint has been logged with the relevant department",
                   "all complaints are reviewed in the order they are received"],
        "blame": ["You must have called at our busiest time, which is not our fault.",
                  "You should have used the contact form instead of calling."],
    },
    "wrong_item": {
        "customer": [
            "I ordered the {product} but got something completely different. Order {order}.",
            "You sent me the wrong colour {product}. I asked for green.",
            "Order {order} came with the wrong item inside. Where is my {product}?",
            "Got someone else's order instead of my {product}.",
            "The box says {product} but there's a different item inside.",
            "wrong colour on order {order}, not what i ordered",
            "I received the wrong version of the {product}. Order {order}.",
        ],
        "on_voice": [
            ("I'm sorry we sent the wrong item.",
             "I've shipped {ref} again today by express post, packed correctly this time.",
             "I've also emailed a prepaid label so you can send the other one back whenever suits."),
            ("Sorry about the mix-up with {ref}.",
             "I'll send the right item out today.",
             "You don't need to return the wrong one first."),
            ("Thanks for letting us know, and I'm sorry for the mistake.",
             "I've arranged a correct replacement for {ref}.",
             "A courier will collect the wrong item from you this week."),
            ("I'm sorry, that's our packing error.",
             "I have sent the right item for {ref} by express delivery today.",
             "I'll email the tracking link within the hour."),
        ],
        "curt": ["Return the item and we will send the correct one.", "Wrong item noted. Use the returns form."],
        "formal": ["the incorrect item must be returned before a replacement is sent",
                   "a replacement for {ref} will be processed upon receipt of the return"],
        "blame": ["You must have picked the wrong option at checkout.",
                  "You should have checked the order confirmation email."],
    },
    "cancel_order": {
        "customer": [
            "Please cancel order {order}. I ordered the {product} by mistake.",
            "Can I still cancel my order? I bought the {product} {date}.",
            "I need to cancel {order} before it ships, I found the {product} elsewhere.",
            "cancel my order pls, it's {order}, ordered the wrong thing",
            "I changed my mind about the {product}. How do I cancel?",
            "Is it too late to cancel order {order}? I placed it {date}.",
            "Please stop my order for the {product}, I no longer need it.",
        ],
        "on_voice": [
            ("No problem at all, thanks for telling us quickly.",
             "I've cancelled {ref} and refunded the full amount.",
             "You'll see it back on your card in a few days."),
            ("Thanks for letting me know.",
             "I've stopped {ref} before it left our warehouse.",
             "I'll email you a confirmation of the cancellation in the next few minutes."),
            ("Sorry you won't be needing it this time.",
             "I have cancelled {ref} and your refund is on its way.",
             "You'll get an email confirming it shortly."),
            ("Thanks for the quick message.",
             "I'll cancel {ref} now, and if it has already shipped I'll send you a free return label.",
             "Either way, your money comes back in full."),
        ],
        "curt": ["Order cancelled.", "Cancellation processed. Refund in 5 days."],
        "formal": ["the cancellation of {ref} has been processed in accordance with our terms",
                   "cancellation requests are subject to dispatch status"],
        "blame": ["You should have cancelled within the first hour.",
                  "You must have clicked buy twice, which is user error."],
    },
    "address_change": {
        "customer": [
            "I moved last week. Can you change the delivery address on {order} to {address}?",
            "I put the wrong address on my order. It should be {address}.",
            "Can you send order {order} to my work address instead? It's {address}.",
            "Please update shipping for {order}. New address: {address}.",
            "typo in my address on {order}, should be {address}",
            "Is it possible to redirect my {product} to {address}? I won't be home.",
        ],
        "on_voice": [
            ("Thanks for letting us know before it shipped.",
             "I've updated {ref} to go to {address}.",
             "I'll email you a confirmation of the new address today."),
            ("No problem, thanks for catching that.",
             "I have changed the delivery address for {ref} to {address} and the courier has the new details.",
             "Your tracking link stays the same."),
            ("Thanks for the heads up.",
             "I've asked the courier to redirect {ref} to {address}.",
             "I'll let you know as soon as they confirm the change."),
            ("Sorry for any worry about the address.",
             "I've updated it to {address} for {ref}.",
             "Your tracking email will show the new details shortly."),
        ],
        "curt": ["Address updated.", "Address changes are not possible after dispatch."],
        "formal": ["address amendments are only possible prior to dispatch",
                   "the delivery address for {ref} has been amended"],
        "blame": ["You should have checked your address before paying.",
                  "You entered it wrong, so the delay is your fault."],
    },
    "warranty_repair": {
        "customer": [
            "A zip on my {product} broke after {months}. Is it covered by warranty?",
            "My {product} started leaking after {months}. Can you repair it?",
            "Do you repair the {product}? Something snapped on my last trip.",
            "Bits are peeling off my {product} after {months}. Warranty?",
            "How do I make a warranty claim for my {product}?",
            "{product} stopped working, bought it {months} ago. can it be fixed?",
        ],
        "on_voice": [
            ("Sorry to hear about the trouble with {ref}.",
             "Repairs like this are covered by our two-year warranty, so I've emailed you a free postage label.",
             "I'll have it repaired or replaced within two weeks."),
            ("Thanks for getting in touch, and I'm sorry about {ref}.",
             "I've set up a free repair with our workshop.",
             "They usually fix it and send it back within ten days."),
            ("I'm sorry about {ref}, it should have lasted much longer.",
             "I have registered a warranty claim for you.",
             "If our repair team can't fix it, I'll send a replacement."),
        ],
        "curt": ["Warranty covers manufacturing defects only. Send it in.", "Fill in the warranty form online."],
        "formal": ["warranty claims are assessed by our repair department",
                   "items must be returned for inspection before a decision is made"],
        "blame": ["This looks like wear and tear, so it is not our fault.",
                  "You must have used it in conditions it isn't made for."],
    },
    "promo_code": {
        "customer": [
            "My discount code {code} isn't working at checkout.",
            "I forgot to use code {code} on order {order}. Can you apply it?",
            "The code {code} says expired but your email said it was valid this week.",
            "I have a code {code} for the {product} but the price didn't change.",
            "{code} wont apply to the {product}, why?",
            "{code} didn't work on the {product} in the sale. Can you help?",
        ],
        "on_voice": [
            ("Sorry the code gave you trouble.",
             "I've applied {code_ref} to {ref} by hand and refunded the difference.",
             "It should reach your card within a few days."),
            ("Thanks for flagging that.",
             "I've checked {code_ref} and fixed the problem on our side, so it works on {ref} now.",
             "I'll also email you a fresh code just in case."),
            ("I'm sorry about the mix-up with the discount on {ref}.",
             "I have sent a new ten percent code to your inbox.",
             "It works on everything in store, sale items included."),
        ],
        "curt": ["Code expired.", "Codes cannot be applied after purchase."],
        "formal": ["promotional codes cannot be applied retrospectively",
                   "each code is subject to its published terms and expiry date"],
        "blame": ["You must have typed the code wrong.",
                  "You should have entered the code before paying."],
    },
    "account_login": {
        "customer": [
            "I can't log in to my account. The password reset email never arrives.",
            "My account is locked after too many tries. Can you help?",
            "I keep getting an error when I try to sign in to see order {order}.",
            "cant log in, reset link expired twice",
            "Someone changed my password and I can't get into my account.",
            "The sign in page just spins and never loads my account.",
        ],
        "on_voice": [
            ("Sorry you're locked out, that's frustrating.",
             "I've sent a fresh reset link to your email, so you can see {ref} again within minutes.",
             "If it doesn't arrive, I'll reset it for you by phone."),
            ("Thanks for letting us know.",
             "I have unlocked your account, so you can sign in and see {ref} now.",
             "I'll also email you a quick guide to setting a new password."),
            ("I'm sorry about the trouble signing in.",
             "I've cleared the error on your account and sent a new login link, so you can check {ref} again.",
             "Just reply here if it still won't work."),
            ("Sorry for the hassle.",
             "I've secured your account and reset your password, and nothing on {ref} was changed.",
             "I'll email you a link to choose a new one within the next few minutes."),
        ],
        "curt": ["Use the forgot password link.", "Clear your cookies and try again."],
        "formal": ["account access issues are handled by our technical department",
                   "password resets must be requested through the website"],
        "blame": ["You must have typed your password wrong too many times.",
                  "You forgot to check your spam folder, which is user error."],
    },
}

# ---------------------------------------------------------------------------------------------------------------
# Off-voice building blocks shared by all intents
# ---------------------------------------------------------------------------------------------------------------

VIOLATIONS = ["curt", "blaming", "banned_phrase", "jargon", "missing_signoff", "rambling", "over_promising",
              "formal"]

BANNED_OPENERS = ["Unfortunately, ", "Per our policy, ", "As previously stated, ", "As per policy, "]
BANNED_SENTENCES = [
    "Please calm down, we are looking into it.",
    "We apologise for any inconvenience caused.",
    "Please be advised that this is our standard process.",
    "There is nothing we can do to speed this up.",
    "Kindly note this is how we handle every case.",
]
JARGON_SENTENCES = [
    "I've logged this under RMA {case} against the SKU.",
    "I've raised escalation ticket {case} with our 3PL.",
    "Your case ID is {case}, and it now sits with tier 2.",
    "The WMS shows the SKU in the fulfilment queue.",
    "Quote ticket number {case} and the SKU if you contact us again.",
]
OVER_PROMISE_SENTENCES = [
    "I guarantee nothing like this will ever happen again.",
    "You are 100% covered, whatever happens.",
    "I promise this will be fully sorted within the hour.",
    "This will definitely be sorted today, guaranteed.",
    "We promise you will love the result.",
    "I guarantee you'll be 100% happy with how this turns out.",
]
RAMBLING_FILLERS = [
    "We have been helping people get outside since 2009, and every single order matters a great deal to us.",
    "Our team reads every message that comes in, even on busy weekends when the warehouse is full.",
    "A lot of customers get in touch about things like this, especially as the hiking season starts.",
    "I also wanted to mention that our stores run free gear clinics every Saturday morning for anyone.",
    "As a small team of hikers and climbers, we really do care about getting all the little details right.",
    "I have made a few notes on your account so that anyone who picks this up later has the full picture.",
    "Just so you know, our phone lines are open from nine to five on weekdays and ten to four on Saturdays.",
    "We are always trying to improve how we handle things like this, and messages like yours help a lot.",
]
OTHER_CLOSINGS = ["", "", "\nRegards.", "\nThanks.", "\nCustomer Service", "\nBest, the support team"]
FORMAL_LETTER = ("Dear customer, we acknowledge receipt of your enquiry regarding {ref}. Please be advised "
                 "that {clause}. Kindly allow up to five working days for a response. Yours faithfully, Customer "
                 "Services Department")
CURT_TAILS = ["", "", " Thanks.", " Anything else, reply here."]

# How a reply names what the customer wrote about (see `_reference`): products the customer asks about rather than
# owns take "the", and a message with neither an order number nor a product gets the intent's default phrase.
PRODUCT_ARTICLE = {"product_question": "the", "complaint": "the", "promo_code": "the"}
DEFAULT_REFERENCE = {
    "late_order": "your order", "refund": "your return", "sizing": "your order", "damaged_item": "your order",
    "product_question": "your question", "complaint": "your case", "wrong_item": "your order",
    "cancel_order": "your order", "address_change": "your order", "warranty_repair": "your gear",
    "promo_code": "your order", "account_login": "your orders",
}
UNSIGNED_GREETINGS = ["Hi there,", "Hello,"]

# Intents whose actions can serve each other (a refund answers a damaged item as well as a refund request), so an
# action or reply borrowed across them is not wrong on content: `other_intent` and `unfit_action` skip these.
RELATED_INTENTS = [
    {"refund", "cancel_order"}, {"refund", "damaged_item"}, {"refund", "promo_code"},
    {"damaged_item", "wrong_item"}, {"damaged_item", "warranty_repair"}, {"damaged_item", "late_order"},
    {"late_order", "wrong_item"}, {"sizing", "wrong_item"}, {"sizing", "product_question"},
]

# On-voice sentences that commit to nothing: first person (so the voice scorer's action rule passes), no action.
VAGUE_SENTENCES = [
    "I've passed your message on and someone will take a look.",
    "I'll look into this and see what can be done.",
    "We'll be in touch when we know a bit more.",
    "I've made a note of this for the team.",
    "I'll get back to you as soon as I can.",
    "We'll do our best to help with this one.",
    "I've had a look and I'll keep it in mind.",
    "I'll see what the options are and let you know.",
    "We're checking a few things on our side.",
]

# Voice violations in words the scorer does not list: the rejected reply passes `brand_voice.violations`, so a
# reward model that only learned the listed strings cannot tell these pairs apart. Every third entry is held out:
# it appears only in prefs_eval, so the `paraphrase` category measures generalisation, not memory.
PARAPHRASE_OPENERS = [
    "Regrettably, ", "In line with our policy, ", "Sadly, ", "As I said before, ", "As our terms state, ",
    "As mentioned earlier, ", "Under our rules, ", "I'm afraid that, as a rule, ", "Per the terms, ",
]
PARAPHRASES = {
    "paraphrased_banned": [
        "Please try to stay calm while we look at it.",
        "We are sorry for any trouble this may have caused.",
        "Please note this is simply our standard process.",
        "There is very little we are able to do to speed this up.",
        "Please be aware this is how we handle every case.",
        "We regret to say this is out of our hands.",
        "Your message is important to us.",
        "Please take note that our process cannot be changed.",
        "We are sorry for the trouble, but rules are rules.",
    ],
    "paraphrased_blame": [
        "That one is on the courier, not on us.",
        "If you had picked express shipping, this would not have happened.",
        "The details entered at checkout were wrong, which caused this.",
        "This happened because the form was not filled in properly.",
        "The problem started on your end, not ours.",
        "Had you read the product page, you would have known.",
        "It looks like the mistake was made when you ordered.",
        "Next time, please check the details before you buy.",
        "This is down to how the parcel was handled after it left us.",
    ],
    "paraphrased_over_promise": [
        "I can assure you this will never occur again.",
        "You're completely covered no matter what happens.",
        "It will absolutely be fixed within the hour, you have my word.",
        "I swear this will be sorted today.",
        "You can count on this being perfect from now on.",
        "Rest assured, nothing will ever go wrong with your order again.",
        "This is certain to be sorted by tonight, no question.",
        "You have my word that everything will be flawless from here on.",
        "Nothing like this will ever come up again, I can tell you that.",
    ],
    "paraphrased_jargon": [
        "I've logged a return authorisation against the item code in our system.",
        "I've flagged it to our logistics partner under reference LX-{case}.",
        "The warehouse system shows the line item as pending pick.",
        "I've raised internal incident INC{case} with second-line support.",
        "Your query now sits in the back-office exceptions queue.",
        "I've opened a carrier claim, reference CC-{case}, on the consignment.",
        "The order management system has put a hold code on it.",
        "I've moved it to the returns processing workflow, ref RP{case}.",
        "It is flagged as a mis-pick in the picking report.",
    ],
}

# Optional on-voice closing sentences, added to a third of the replies, so correct replies are not a closed set of
# templates (a reward model could otherwise call any unfamiliar sentence off-voice and pass the paraphrase category
# without reading it). Split like the paraphrases: every third entry appears in prefs_eval only.
EXTRA_SENTENCES = [
    "If anything else comes up, just reply to this email.",
    "Enjoy your next trip outdoors.",
    "I hope the weekend weather is kind to you.",
    "Let me know if there's anything else I can do.",
    "Thanks again for shopping with us.",
    "I hope this gets you back out on the trail soon.",
    "Feel free to reply with any other questions.",
    "We're always glad to hear from you.",
    "Have a great time on your next hike.",
]
EXTRA_SHARE = 1 / 3

CONTENT_RULES = ["wrong_name", "wrong_order", "wrong_product", "unfit_action", "vague"]
SFT_VIOLATIONS = ["blaming", "banned_phrase", "jargon", "missing_signoff", "rambling", "over_promising"]

# Preference categories. Training pairs: exact shares of the file. Held-out pairs: an equal number per category, in
# rotation, so any prefix of prefs_eval (e.g. `max_eval_rows`) holds every category.
TRAIN_CATEGORY_SHARES = {"voice": 0.35, "paraphrase": 0.15, "content": 0.35, "other_intent": 0.15}
# After the first pass (one pair per message, in the shares above), every training message gives one more pair of
# each of these categories. Measured (issue 11, one seed): with the first pass alone (1,600 pairs) the reward model
# separated held-out content pairs 0.64 and other-intent pairs 0.50 (chance); with these extra pairs (4,800 in all)
# 0.86 and 0.89, voice staying at 1.00 although voice pairs fell to a sixth of the file.
EXTRA_TRAIN_CATEGORIES = ("content", "other_intent")
EVAL_CATEGORIES = ["voice", "content", "paraphrase", "other_intent", "length_matched"]
LENGTH_MATCH_WORDS = 3  # most words chosen and rejected differ by in the length_matched category
# fmt: on

# ---------------------------------------------------------------------------------------------------------------
# Customer messages
# ---------------------------------------------------------------------------------------------------------------


def _add_typo(text: str, rng: random.Random, protected: set[str]) -> str:
    # Real logs have typos; swapping two inner letters of one longer word keeps the message readable. The name and
    # product words are protected so the recorded ground truth stays verbatim in the text.
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if word.isalpha() and len(word) >= 5 and word not in protected]
    if not candidates:
        return text
    i = rng.choice(candidates)
    word = words[i]
    j = rng.randrange(1, len(word) - 2)
    words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)


def _draw_message(intent: str, rng: random.Random) -> dict:
    """Draws one customer message for an intent, with its ground truth and the slot values replies refer back to."""
    template = rng.choice(INTENTS[intent]["customer"])
    if intent == "sizing":
        product, _, sizes = rng.choice(SIZED_PRODUCTS)
        size = rng.choice(sizes)
    else:
        product, _ = rng.choice(PRODUCTS)
        size = ""
    order = str(rng.randint(10000, 99999))
    code = rng.choice(CODES)
    address = f"{rng.randint(2, 180)} {rng.choice(STREETS)}"
    name = rng.choice(NAMES)
    core = template.format(
        order=f"#{order}",
        product=product,
        days=rng.choice(DAYS),
        date=rng.choice(DATES),
        size=size,
        months=rng.choice(MONTHS),
        code=code,
        address=address,
    )
    closer = rng.choice(CLOSERS)
    pieces = [rng.choice(OPENERS), core, rng.choice(EXTRAS), closer.format(name=name)]
    text = " ".join(piece for piece in pieces if piece)
    if rng.random() < 0.08:
        text = _add_typo(text, rng, {name, *product.split()})
    if rng.random() < 0.06:
        text = text.lower()
    truth = {
        "intent": intent,
        "customer_name": name if "{name}" in closer else None,
        "order_id": order if "{order}" in template else None,
        "product": product if "{product}" in template else None,
    }
    slots = {
        "size": size or "your usual size",
        "code_ref": f"code {code}" if "{code}" in template else "your code",
        "address": address,
    }
    return {"text": text, "truth": truth, "slots": slots}


def _draw_message_pool(total: int, rng: random.Random) -> list[dict]:
    """Draws `total` unique customer messages, cycling through the intents so they are balanced."""
    seen: dict[str, dict] = {}
    intents = list(INTENTS)
    i = 0
    while len(seen) < total:
        intent = intents[i % len(intents)]
        message = _draw_message(intent, rng)
        n_words = len(message["text"].split())
        if MESSAGE_WORDS[0] <= n_words <= MESSAGE_WORDS[1] and message["text"] not in seen:
            seen[message["text"]] = message
            i += 1
    pool = list(seen.values())
    rng.shuffle(pool)
    return pool


# ---------------------------------------------------------------------------------------------------------------
# Replies
#
# A reply is built from parts (greeting, acknowledgement, action, next step) filled from the message's ground truth.
# Content-wrong replies are the same parts with one fact changed (`facts` overrides) or one part swapped, so each
# pair differs in exactly the recorded rule.
# ---------------------------------------------------------------------------------------------------------------


def _reference(intent: str, order_id: str | None, product: str | None) -> str:
    """The noun phrase a reply uses for what the customer wrote about, e.g. "your Summit 2 tent on order #12345"."""
    product_phrase = f"{PRODUCT_ARTICLE.get(intent, 'your')} {product}" if product else None
    if product_phrase and order_id:
        return f"{product_phrase} on order #{order_id}"
    if order_id:
        return f"order #{order_id}"
    return product_phrase or DEFAULT_REFERENCE[intent]


def _greeting(name: str | None, rng: random.Random) -> str:
    return f"Hi {name}," if name else rng.choice(UNSIGNED_GREETINGS)


def _join(greeting: str, *sentences: str) -> str:
    body = " ".join(sentence for sentence in sentences if sentence)
    return f"{greeting}\n{body}" if greeting else body


def _lower_first(sentence: str) -> str:
    # "I" stays capitalised after a prefix such as "Unfortunately, ".
    first = sentence.split(" ", 1)[0]
    if first == "I" or first.startswith(("I'", "I,")):
        return sentence
    return sentence[0].lower() + sentence[1:]


def _related(a: str, b: str) -> bool:
    return a == b or {a, b} in RELATED_INTENTS


def _unrelated_intents(intent: str) -> list[str]:
    return [other for other in INTENTS if not _related(intent, other)]


def _fill(triple: tuple[str, str, str], message: dict, facts: dict) -> tuple[str, str, str]:
    slots = {**message["slots"], "ref": _reference(facts["intent"], facts["order_id"], facts["product"])}
    return tuple(part.format(**slots) for part in triple)


def _parts(message: dict, rng: random.Random, **overrides) -> tuple[str, str, str, str]:
    """(greeting, acknowledgement, action, next step) answering the message; `overrides` replace ground-truth facts.

    `triple_intent` (an override) draws the acknowledgement, action and next step from another intent's table.
    """
    facts = {**message["truth"], **overrides}
    triple_intent = overrides.get("triple_intent", message["truth"]["intent"])
    triple = rng.choice(INTENTS[triple_intent]["on_voice"])
    greeting = _greeting(facts["customer_name"], rng)
    ack, action, next_step = _fill(triple, message, facts)
    if rng.random() < EXTRA_SHARE:
        extras = [e for i, e in enumerate(EXTRA_SENTENCES) if (i % 3 == 2) == message["held_out"]]
        next_step = f"{next_step} {rng.choice(extras)}"
    return greeting, ack, action, next_step


def _reply(parts: tuple[str, ...]) -> str:
    return _join(*parts) + "\n" + brand_voice.SIGN_OFF


def _with_sentence(
    parts: tuple[str, str, str, str], sentence: str, reference: str, rng: random.Random, *, before_action: bool = False
) -> tuple[str, ...]:
    """The parts with one more sentence: inserted, or half the time in place of the next step.

    Replacing keeps the reply about as long as the on-voice one, so a reward model cannot learn "the longer reply is
    the worse one" from these pairs; the next step is only replaced when it does not name the order or product.
    """
    greeting, ack, action, next_step = parts
    replace = rng.random() < 0.5 and reference not in next_step
    body = (sentence, action) if before_action else (action, sentence)
    return (greeting, ack, *body) if replace else (greeting, ack, *body, next_step)


def _off_voice_reply(message: dict, parts: tuple[str, str, str, str], violation: str, rng: random.Random) -> str:
    """Builds a reply that still answers the customer's intent but breaks a listed voice rule in the given way.

    Most kinds add to or perturb the same parts as the on-voice reply, so a preference pair differs only in voice and
    the reply keeps the greeting, the order number and the product (sft uses these kinds as helpful off-voice replies).
    """
    greeting, ack, action, next_step = parts
    intent = message["truth"]["intent"]
    table = INTENTS[intent]
    slots = {**message["slots"], "ref": _reference(intent, message["truth"]["order_id"], message["truth"]["product"])}
    sign_off = "\n" + brand_voice.SIGN_OFF
    if violation == "curt":
        return rng.choice(table["curt"]).format(**slots) + rng.choice(CURT_TAILS)
    if violation == "formal":
        clause = rng.choice(table["formal"]).format(**slots)
        return FORMAL_LETTER.format(ref=slots["ref"], clause=clause)
    if violation == "blaming":
        return (
            _join(*_with_sentence(parts, rng.choice(table["blame"]), slots["ref"], rng, before_action=True)) + sign_off
        )
    if violation == "banned_phrase":
        if rng.random() < 0.5:
            return _join(greeting, ack, rng.choice(BANNED_OPENERS) + _lower_first(action), next_step) + sign_off
        return _join(*_with_sentence(parts, rng.choice(BANNED_SENTENCES), slots["ref"], rng)) + sign_off
    if violation == "jargon":
        jargon = rng.choice(JARGON_SENTENCES).format(case=rng.randint(100000, 999999))
        return _join(*_with_sentence(parts, jargon, slots["ref"], rng)) + sign_off
    if violation == "missing_signoff":
        return _join(greeting, ack, action, next_step) + rng.choice(OTHER_CLOSINGS)
    if violation == "over_promising":
        return _join(*_with_sentence(parts, rng.choice(OVER_PROMISE_SENTENCES), slots["ref"], rng)) + sign_off
    if violation == "rambling":
        fillers = rng.sample(RAMBLING_FILLERS, len(RAMBLING_FILLERS))
        sentences = [ack, fillers.pop(), action, fillers.pop(), next_step]
        # Pad until clearly over the bound, so the length rule fires rather than sitting on the edge.
        while len(_join(greeting, *sentences).split()) < brand_voice.MAX_WORDS + 20:
            sentences.insert(-1, fillers.pop())
        return _join(greeting, *sentences) + sign_off
    raise ValueError(f"unknown violation kind {violation!r}; expected one of {VIOLATIONS}")


def _paraphrased_reply(
    message: dict, parts: tuple[str, str, str, str], rule: str, held_out: bool, rng: random.Random
) -> str:
    """A reply that breaks the voice in words the scorer does not list (see `PARAPHRASES`)."""
    greeting, ack, action, next_step = parts
    reference = _reference(message["truth"]["intent"], message["truth"]["order_id"], message["truth"]["product"])
    # Entries 2, 5, 8 of each list are held out (prefs_eval only); training draws from the rest.
    pool = [p for i, p in enumerate(PARAPHRASES[rule]) if (i % 3 == 2) == held_out]
    if rule == "paraphrased_banned" and rng.random() < 0.5:
        openers = [p for i, p in enumerate(PARAPHRASE_OPENERS) if (i % 3 == 2) == held_out]
        return _reply((greeting, ack, rng.choice(openers) + _lower_first(action), next_step))
    sentence = rng.choice(pool).format(case=rng.randint(100000, 999999))
    return _reply(_with_sentence(parts, sentence, reference, rng, before_action=rule == "paraphrased_blame"))


def _content_reply(message: dict, rule: str, rng: random.Random) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(chosen parts, rejected parts) where the rejected reply is on-voice but wrong on content in the way `rule` says.

    Returns None when the rule does not apply to the message (no order number to get wrong, say).
    """
    truth = message["truth"]
    intent = truth["intent"]
    if rule == "wrong_order" and not truth["order_id"]:
        return None
    if rule == "wrong_product" and not truth["product"]:
        return None
    if rule == "wrong_name":
        chosen = _parts(message, rng)
        wrong = rng.choice([n for n in NAMES if n != truth["customer_name"]])
        return chosen, (f"Hi {wrong},", *chosen[1:])
    if rule in ("wrong_order", "wrong_product"):
        # The same draws as the chosen reply with one fact changed, so the pair differs in that fact only.
        if rule == "wrong_order":
            wrong = {"order_id": str((int(truth["order_id"]) - 10000 + rng.randint(1, 89999)) % 90000 + 10000)}
        else:
            pool = SIZED_PRODUCTS if intent == "sizing" else PRODUCTS
            wrong = {"product": rng.choice([p[0] for p in pool if p[0] != truth["product"]])}
        state = rng.getstate()
        chosen = _parts(message, rng)
        rng.setstate(state)
        return chosen, _parts(message, rng, **wrong)
    chosen = _parts(message, rng)
    if rule == "other_intent":
        other = rng.choice(_unrelated_intents(intent))
        return chosen, (chosen[0], *_parts(message, rng, triple_intent=other)[1:])
    if rule == "unfit_action":
        other = rng.choice(_unrelated_intents(intent))
        borrowed = _parts(message, rng, triple_intent=other)
        return chosen, (chosen[0], chosen[1], borrowed[2], chosen[3])
    if rule == "vague":
        vague = rng.sample(VAGUE_SENTENCES, 2)
        return chosen, (chosen[0], chosen[1], *vague)
    raise ValueError(f"unknown content rule {rule!r}; expected one of {CONTENT_RULES + ['other_intent']}")


def _is_on_voice(message: dict, reply: str) -> bool:
    return not brand_voice.violations(message["text"], reply)


# A draw can miss its target (an inserted sentence pushing a reply past MAX_WORDS, a length-matched pair that is not);
# the generator redraws, and a rule that never fits within this many draws is a bug in the tables.
MAX_DRAWS = 40


def _pair(message: dict, category: str, rule: str, held_out: bool, rng: random.Random) -> tuple[str, str] | None:
    """One (chosen, rejected) pair for the message, or None when the rule cannot apply to it.

    The chosen reply is always correct and on-voice. The rejected one breaks a listed voice rule (category `voice`),
    an unlisted paraphrase of one (`paraphrase`, on-voice to the scorer), or is on-voice but wrong on content.
    """
    for _ in range(MAX_DRAWS):
        if category == "voice":
            parts = _parts(message, rng)
            chosen, rejected = _reply(parts), _off_voice_reply(message, parts, rule, rng)
            wanted_on_voice = False
        elif category == "paraphrase":
            parts = _parts(message, rng)
            chosen, rejected = _reply(parts), _paraphrased_reply(message, parts, rule, held_out, rng)
            wanted_on_voice = True
        else:
            drawn = _content_reply(message, rule, rng)
            if drawn is None:
                return None
            chosen, rejected = _reply(drawn[0]), _reply(drawn[1])
            wanted_on_voice = True
        # The scorer decides what on-voice means: a chosen reply off-voice, or a rejected one on the wrong side of
        # it, is redrawn (parts differ in length, so another draw usually fits).
        if _is_on_voice(message, chosen) and _is_on_voice(message, rejected) == wanted_on_voice:
            return chosen, rejected
    raise AssertionError(f"no {category}/{rule} pair fits after {MAX_DRAWS} draws for {message['text']!r}")


def _category_of(rule: str) -> str:
    if rule in VIOLATIONS:
        return "voice"
    if rule in PARAPHRASES:
        return "paraphrase"
    return "other_intent" if rule == "other_intent" else "content"


def _rules_of(category: str) -> list[str]:
    return {
        "voice": VIOLATIONS,
        "paraphrase": list(PARAPHRASES),
        "content": CONTENT_RULES,
        "other_intent": ["other_intent"],
        "length_matched": VIOLATIONS + list(PARAPHRASES) + CONTENT_RULES + ["other_intent"],
    }[category]


def _length_gap(chosen: str, rejected: str) -> int:
    return abs(len(chosen.split()) - len(rejected.split()))


# ---------------------------------------------------------------------------------------------------------------
# Rows and files
# ---------------------------------------------------------------------------------------------------------------


def _user_turn(message: dict) -> list[dict]:
    return [{"role": "user", "content": message["text"]}]


def _sft_rows(messages: list[dict], rng: random.Random) -> list[dict]:
    """Demonstrations: every reply greets, names the order and product given and answers the intent; a third of
    them break a listed voice rule while doing so (helpful but off-voice, as real support logs are)."""
    # An exact share rather than a coin flip per row, so small splits are not skewed by chance.
    off_voice = set(rng.sample(range(len(messages)), round(len(messages) * OFF_VOICE_SHARE)))
    rows = []
    for i, message in enumerate(messages):
        on_voice = i not in off_voice
        for _ in range(MAX_DRAWS):
            parts = _parts(message, rng)
            reply = _reply(parts) if on_voice else _off_voice_reply(message, parts, rng.choice(SFT_VIOLATIONS), rng)
            if _is_on_voice(message, reply) == on_voice:
                break
        else:
            raise AssertionError(f"no {'on' if on_voice else 'off'}-voice reply fits {message['text']!r}")
        rows.append(
            {
                "messages": _user_turn(message) + [{"role": "assistant", "content": reply}],
                **message["truth"],
                "on_voice": on_voice,
            }
        )
    return rows


def _preference_row(message: dict, category: str, rule: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt": _user_turn(message),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **message["truth"],
        "category": category,
        "rule": rule,
    }


def _next_pair(message: dict, category: str, used: collections.Counter, held_out: bool, rng: random.Random):
    """The least-used rule of the category that applies to the message, with its pair; counts it in `used`.

    Some rules apply to some messages only (no order number, nothing to get wrong), so a plain rotation would
    hand their turns to the next rule; least-used-first keeps the rules as balanced as the messages allow.
    """
    rules = _rules_of(category)
    for rule in sorted(rules, key=lambda r: (used[r], rules.index(r))):
        pair = _pair(message, _category_of(rule), rule, held_out, rng)
        if pair is not None:
            used[rule] += 1
            return rule, pair
    raise AssertionError(f"no {category} rule applies to {message['text']!r}")


def _train_preference_rows(messages: list[dict], rng: random.Random) -> list[dict]:
    # Exact category shares, shuffled; within a category the rules rotate so they stay balanced.
    categories = [c for c, share in TRAIN_CATEGORY_SHARES.items() for _ in range(round(share * len(messages)))]
    categories = (categories + list(TRAIN_CATEGORY_SHARES))[: len(messages)]
    rng.shuffle(categories)
    used = {category: collections.Counter() for category in TRAIN_CATEGORY_SHARES}
    rows = []
    for message, category in zip(messages, categories, strict=True):
        rule, (chosen, rejected) = _next_pair(message, category, used[category], False, rng)
        rows.append(_preference_row(message, category, rule, chosen, rejected))
    return rows


def _extra_content_rows(rows: list[dict], messages: list[dict], rng: random.Random) -> list[dict]:
    """The first-pass training pairs plus one pair per message of each `EXTRA_TRAIN_CATEGORIES`, shuffled together.

    Drawn after every other file so that adding them left the held-out files and prompts byte-identical. Rules keep
    rotating from where the first pass left them, so each content rule stays balanced over the whole file.
    """
    used = {category: collections.Counter() for category in TRAIN_CATEGORY_SHARES}
    for row in rows:
        used[row["category"]][row["rule"]] += 1
    extra = []
    for message in messages:
        for category in EXTRA_TRAIN_CATEGORIES:
            rule, (chosen, rejected) = _next_pair(message, category, used[category], False, rng)
            extra.append(_preference_row(message, category, rule, chosen, rejected))
    combined = rows + extra
    rng.shuffle(combined)
    return combined


def _eval_preference_rows(messages: list[dict], rng: random.Random) -> list[dict]:
    """The held-out hard set: categories in rotation; length_matched keeps only pairs within LENGTH_MATCH_WORDS."""
    used = {category: collections.Counter() for category in EVAL_CATEGORIES}
    rows = []
    for i, message in enumerate(messages):
        category = EVAL_CATEGORIES[i % len(EVAL_CATEGORIES)]
        for _ in range(MAX_DRAWS):
            # A length miss still counts as a use, so rules that rarely match (rambling) do not hog the draws.
            rule, (chosen, rejected) = _next_pair(message, category, used[category], True, rng)
            if category != "length_matched" or _length_gap(chosen, rejected) <= LENGTH_MATCH_WORDS:
                break
        else:
            raise AssertionError(f"no length-matched pair fits {message['text']!r}")
        rows.append(_preference_row(message, category, rule, chosen, rejected))
    return rows


def _prompt_rows(messages: list[dict]) -> list[dict]:
    return [{"prompt": _user_turn(message), **message["truth"]} for message in messages]


def _voice_guide() -> str:
    return render_guide(load_voice(brand_voice.SPEC_PATH))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


VOICE_ONLY_CATEGORIES = ("voice", "paraphrase")
"""Preference categories whose two replies differ only in voice (both answer the customer's question)."""


def generate(out_dir: Path, seed: int = 0) -> dict[str, list[dict]]:
    """Writes the voice guide and the seven brand-voice JSONL files.

    Args:
        out_dir: Directory to write into; created if missing. Existing files of the same names are overwritten.
        seed: Seed of the single random generator that draws everything, so the output is a function of it.

    Returns:
        The rows written per file stem, e.g. `{"sft_train": [...], ...}`.
    """
    rng = random.Random(seed)
    pool = _draw_message_pool(sum(SPLIT_SIZES.values()), rng)
    splits = {}
    start = 0
    for name, size in SPLIT_SIZES.items():
        splits[name] = [{**message, "held_out": name == "prefs_eval"} for message in pool[start : start + size]]
        start += size
    files = {
        "sft_train": _sft_rows(splits["sft_train"], rng),
        "sft_eval": _sft_rows(splits["sft_eval"], rng),
        "prefs_train": _train_preference_rows(splits["prefs_train"], rng),
        "prefs_eval": _eval_preference_rows(splits["prefs_eval"], rng),
        "ppo_prompts": _prompt_rows(splits["ppo_prompts"]),
        "eval_prompts": _prompt_rows(splits["eval_prompts"]),
    }
    files["prefs_train"] = _extra_content_rows(files["prefs_train"], splits["prefs_train"], rng)
    # The Goodhart demonstration (recipes/brand_voice/voice_only.yaml) trains its reward model on the pairs that
    # differ only in voice: that model cannot see content, so ppo against it is free to stop answering the question.
    files["prefs_train_voice"] = [row for row in files["prefs_train"] if row["category"] in VOICE_ONLY_CATEGORIES]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "voice_guide.md").write_text(_voice_guide(), encoding="utf-8", newline="\n")
    for name, rows in files.items():
        _write_jsonl(out_dir / f"{name}.jsonl", rows)
    return files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the random generator (default: 0)")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="output directory (default: recipes/brand_voice/data in this repository)",
    )
    args = parser.parse_args(argv)
    files = generate(args.out, args.seed)
    for name, rows in files.items():
        print(f"{args.out / (name + '.jsonl')}: {len(rows)} rows")
        if name.startswith("prefs"):
            categories = collections.Counter(row["category"] for row in rows)
            content = sum(
                not brand_voice.violations(r["prompt"][0]["content"], r["rejected"][0]["content"])
                and r["category"] in ("content", "other_intent")
                for r in rows
            )
            print(f"  pairs both on-voice, rejected wrong on content: {content} ({content / len(rows):.0%})")
            for category, count in sorted(categories.items()):
                rules = collections.Counter(row["rule"] for row in rows if row["category"] == category)
                print(f"  {category}: {count} ({', '.join(f'{r} {n}' for r, n in sorted(rules.items()))})")


if __name__ == "__main__":
    main()
