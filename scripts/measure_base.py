"""Measures what a base or sft model writes on the held-out eval prompts: name copying, order numbers, sentences.

    python scripts/measure_base.py runs/brand_voice/sft/final [embedded:base ...] [--prompts FILE] [--json OUT]

For each model it generates one reply per eval prompt with the chat template, greedily and by sampling at temperature
1 (seeded), and reports:
- greets name: of the prompts signed with a name (the row's `customer_name` where the file records it, otherwise a
  closing such as "Thanks, Mia", "- Leo", "cheers, rosa" or a bare name at the end that matches a name the training
  replies greet), the share whose reply greets exactly that name on its first line;
- order copied: of the prompts that give an order number, the share whose reply writes that number, and the share of
  replies that write a wrong one;
- well formed: the share of sentences that are well formed (capitalised, end with . ! ? or are the greeting or
  sign-off line, 3 to 40 words, every word known from the training corpus, no word doubled), and the share of replies
  made only of such sentences and ended by EOS.
- copy probe (teacher-forced, on the held-out sft demonstrations as plain text, the format the base is pretrained
  on): the share of the order number's digits, and of the greeted name, that the model predicts exactly where a reply
  repeats them from the message. It measures the base model's copying without sampling noise.
The numbers are for choosing the embedded base model's size and training by measurement (issue 11); rerun after the
data changes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PROMPTS = REPO / "recipes" / "brand_voice" / "data" / "eval_prompts.jsonl"
DEFAULT_PROBE = REPO / "recipes" / "brand_voice" / "data" / "sft_eval.jsonl"
ORDER = re.compile(r"#\d{4,}")
WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
SIGN_OFF = "Happy trails, the Ridgeline team"


def known_names(texts: list[str]) -> set[str]:
    """Names the training replies greet ("Hi Mia,"), lower-cased."""
    return {m.lower() for text in texts for m in re.findall(r"(?m)^Hi ([A-Z][a-z]+),", text)} - {"there"}


def signed_name(row: dict, message: str, names: set[str]) -> str | None:
    """The name the customer signed with, from the row's ground truth if recorded, else from the message's end."""
    if "customer_name" in row:
        return row["customer_name"] or None
    match = re.search(r"(?:^|[\s.,!?-])([A-Za-z]+)[\s.!]*$", message)
    if match and match.group(1).lower() in names:
        return match.group(1)
    return None


def greets(reply: str, name: str) -> bool:
    """The reply's first line names the customer (case-insensitive, whole word)."""
    first = reply.strip().split("\n", 1)[0]
    return re.search(rf"\b{re.escape(name)}\b", first, flags=re.IGNORECASE) is not None


def sentences(reply: str) -> list[str]:
    """The reply split into lines, and lines into sentences."""
    out = []
    for line in reply.strip().split("\n"):
        out += [s for s in re.split(r"(?<=[.!?])\s+", line.strip()) if s]
    return out


def well_formed(sentence: str, vocabulary: set[str]) -> bool:
    """A greeting line, the sign-off, or a capitalised sentence of 3-40 known words ending in . ! ? with no doubles."""
    if sentence == SIGN_OFF or re.fullmatch(r"(Hi|Hello|Hey) [A-Za-z]+,", sentence):
        return True
    words = WORD.findall(sentence.lower())
    return (
        sentence[:1].isupper()
        and sentence[-1] in ".!?"
        and 3 <= len(words) <= 40
        and all(w in vocabulary for w in words)
        and all(a != b for a, b in zip(words, words[1:], strict=False))
    )


def generate(model_ref: str, prompts: list[list[dict]], sample: bool, max_new_tokens: int, seed: int):
    """One reply per prompt (text, ended-with-EOS) from `model_ref` (embedded:NAME, a directory or a hub id)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models.loading import resolve_model_path

    path = resolve_model_path(model_ref)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    replies = []
    torch.manual_seed(seed)
    for start in range(0, len(prompts), 32):
        batch = tokenizer.apply_chat_template(
            prompts[start : start + 32],
            add_generation_prompt=True,
            return_dict=True,
            return_tensors="pt",
            padding=True,
        )
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                temperature=1.0 if sample else None,
                top_k=0 if sample else None,
                top_p=1.0 if sample else None,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row in out[:, batch["input_ids"].shape[1] :]:
            ids = row.tolist()
            ended = tokenizer.eos_token_id in ids
            if ended:
                ids = ids[: ids.index(tokenizer.eos_token_id)]
            replies.append((tokenizer.decode(ids, skip_special_tokens=True), ended))
    return replies


def copy_probe(model_ref: str, documents: list[str]) -> dict:
    """Teacher-forced accuracy on the order-number digits and the greeted name that replies copy from the message."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models.loading import resolve_model_path

    path = resolve_model_path(model_ref)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    hits = {"order_digits": [], "name": []}
    each_digit: list[bool] = []
    for document in documents:
        message, _, reply = document.partition("\n\n")
        targets = []  # (kind, character span in the document) of what the reply copies
        for order in ORDER.findall(message):
            at = reply.find(order)
            if at >= 0:
                targets.append(("order_digits", len(message) + 2 + at + 1, len(message) + 2 + at + len(order)))
        greeting = re.match(r"Hi ([A-Z][a-z]+),", reply)
        if greeting and greeting.group(1).lower() in message.lower():
            targets.append(("name", len(message) + 2 + 3, len(message) + 2 + 3 + len(greeting.group(1))))
        if not targets:
            continue
        encoded = tokenizer(tokenizer.bos_token + document, add_special_tokens=False, return_offsets_mapping=True)
        ids = torch.tensor([encoded["input_ids"]])
        with torch.no_grad():
            predicted = model(input_ids=ids).logits[0].argmax(-1)
        shift = len(tokenizer.bos_token)
        for kind, begin, end in targets:
            positions = [
                i
                for i, (a, b) in enumerate(encoded["offset_mapping"])
                if i > 0 and b - shift > begin and a - shift < end
            ]
            right = [predicted[i - 1].item() == ids[0, i].item() for i in positions]
            hits[kind].append(bool(right) and all(right))
            if kind == "order_digits":
                each_digit += right
    return {kind: sum(v) / max(1, len(v)) for kind, v in hits.items()} | {
        "each_order_digit": sum(each_digit) / max(1, len(each_digit)),
        **{f"{kind}_cases": len(v) for kind, v in hits.items()},
    }


def measure(model_ref: str, rows: list[dict], names: set[str], vocabulary: set[str], args) -> dict:
    """The measurements of one model, greedy and sampled."""
    prompts = [row["prompt"] if "prompt" in row else row["messages"] for row in rows]
    messages = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
    prompts = [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts]
    signed = [signed_name(row, message, names) for row, message in zip(rows, messages, strict=True)]
    orders = [ORDER.findall(message) for message in messages]
    result = {"model": model_ref, "prompts": len(rows), "signed": sum(n is not None for n in signed)}
    result["copy_probe"] = copy_probe(model_ref, args.probe_documents)
    for mode, sample in (("greedy", False), ("sampled", True)):
        replies = generate(model_ref, prompts, sample, args.max_new_tokens, args.seed)
        greeted = [greets(reply, name) for (reply, _), name in zip(replies, signed, strict=True) if name]
        with_order = [(reply, found) for (reply, _), found in zip(replies, orders, strict=True) if found]
        wrong_order = [
            any(o not in found for o in ORDER.findall(reply)) for (reply, _), found in zip(replies, orders, strict=True)
        ]
        parts = [[well_formed(s, vocabulary) for s in sentences(reply)] for reply, _ in replies]
        all_parts = [ok for p in parts for ok in p]
        result[mode] = {
            "greets_name": sum(greeted) / max(1, len(greeted)),
            "order_copied": sum(found[0] in reply for reply, found in with_order) / max(1, len(with_order)),
            "wrong_order": sum(wrong_order) / len(replies),
            "well_formed_sentences": sum(all_parts) / max(1, len(all_parts)),
            "well_formed_replies": sum(
                bool(p) and all(p) and ended for p, (_, ended) in zip(parts, replies, strict=True)
            )
            / len(replies),
            "ended": sum(ended for _, ended in replies) / len(replies),
            "examples": [reply for reply, _ in replies[: args.examples]],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="embedded:NAME, a model directory (e.g. RUN_DIR/sft/final)")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="eval prompts (JSONL, `prompt`)")
    parser.add_argument("--probe", type=Path, default=DEFAULT_PROBE, help="held-out demonstrations for the copy probe")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed for the sampled replies")
    parser.add_argument("--examples", type=int, default=3, help="replies to print per model and mode")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from rlhf.models.embedded import corpus_texts, row_documents

    hf_logging.disable_progress_bar()

    texts = corpus_texts()
    names = known_names(texts)
    vocabulary = {w for text in texts for w in WORD.findall(text.lower())}
    rows = [json.loads(line) for line in args.prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
    held_out = args.probe.read_text(encoding="utf-8").splitlines()
    args.probe_documents = [d for line in held_out if line.strip() for d in row_documents(json.loads(line))]
    results = [measure(ref, rows, names, vocabulary, args) for ref in args.models]
    for r in results:
        probe = r["copy_probe"]
        print(f"{r['model']}: {r['prompts']} prompts, {r['signed']} signed with a name")
        print(
            f"  copy probe (teacher-forced, held-out demonstrations): order numbers {probe['order_digits']:.0%}"
            f" of {probe['order_digits_cases']} (each digit {probe['each_order_digit']:.0%}), greeted name {probe['name']:.0%} of {probe['name_cases']}"
        )
        for mode in ("greedy", "sampled"):
            m = r[mode]
            print(
                f"  {mode:8s} greets name {m['greets_name']:.0%}  order copied {m['order_copied']:.0%}"
                f"  wrong order {m['wrong_order']:.0%}  well-formed sentences {m['well_formed_sentences']:.0%}"
                f"  well-formed replies {m['well_formed_replies']:.0%}  ended {m['ended']:.0%}"
            )
            for example in m["examples"]:
                print("    | " + example.replace("\n", "\n    | "))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
