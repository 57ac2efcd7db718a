"""Human evaluation: a blinded pairwise sheet out of a compare run, and the filled sheets back in as a judge.

Export (a compare run with `human_export`) writes into <output_dir>/human/:
- `sheet.csv`: one row per item (item, prompt, reply_1, reply_2, choice, rater), model names hidden; a rater
  writes 1, 2 or tie in `choice` (blank: not rated);
- `form.html`: the same items as a self-contained page (no network): click a choice per item, type a name, and
  download the filled CSV (columns item, choice, rater);
- `key.json`: which model wrote reply_1 and reply_2 of each item, their token lengths and a hash of each reply. Keep
  it from the raters.

Each item pairs an arm with the reference on one prompt and sample (`items` random prompts per arm, seeded). Sides
and item order are random (seeded, recorded in the key). `repeats` items appear a second time with the sides
swapped, to measure each rater's self-consistency. Pairs whose two replies are identical are not shown: they count
as ties for every rater (any rater would say so), which keeps the human win rate on the same random prompts as the
other judges'.

Ingest (a `human` entry in `pairwise_judges`) reads the key and one or more filled sheets. Every rater's verdict on
an original item is one judgement, so the win rate, its bootstrap interval over prompts and the length-controlled
rate are those of the other judges. Agreement between raters: raw agreement and Cohen's kappa for every pair of raters
on the items both rated, and Fleiss' kappa over the items every rater rated (three categories: arm wins, reference
wins, tie). Per rater: self-consistency on repeated items (the same verdict after the swap) and the share of
verdicts that chose the first position.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.config import HumanExportConfig, HumanRatingsConfig
from rlhf.data.formats import DataError

SHEET = "sheet.csv"
FORM = "form.html"
KEY = "key.json"
CHOICES = ("1", "2", "tie")
KEY_FORMAT = 1


def reply_hash(text: str) -> str:
    """A short fingerprint of a reply: ingest checks that the raters saw the replies of the run that reads them."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def export_sheet(
    out_dir: Path,
    records: list[dict[str, Any]],
    prompts: list[str],
    *,
    reference: str,
    arms: list[str],
    samples_per_prompt: int,
    cfg: HumanExportConfig,
    seed: int,
) -> dict[str, int]:
    """Writes sheet.csv, form.html and key.json into `out_dir`; returns counts (items shown, repeats, identical).

    Args:
        records: compare's responses (dicts with model, prompt_index, sample, response, length).
        prompts: The text of each prompt (the last user turn), by prompt index.
        reference: The model every arm is paired with.
        arms: Every arm of the run, in report order.
        samples_per_prompt: K of the run (the sample of each item is drawn among them).
        cfg: What to export.
        seed: Seeds the choice of items, sides and order.
    """
    rng = np.random.default_rng(seed)
    replies = {(r["model"], r["prompt_index"], r["sample"]): r for r in records}
    n_prompts = len(prompts)
    rated = cfg.models or [a for a in arms if a != reference]
    shown: list[dict[str, Any]] = []
    identical: list[dict[str, Any]] = []
    for model in rated:
        chosen = rng.choice(n_prompts, size=min(cfg.items, n_prompts), replace=False)
        for prompt_index in sorted(int(i) for i in chosen):
            sample = int(rng.integers(samples_per_prompt))
            ours, theirs = replies[(model, prompt_index, sample)], replies[(reference, prompt_index, sample)]
            where = {"model": model, "reference": reference, "prompt_index": prompt_index, "sample": sample}
            if ours["response"] == theirs["response"]:
                identical.append({**where, "length": ours["length"]})
                continue
            sides = [ours, theirs] if rng.random() < 0.5 else [theirs, ours]
            shown.append({**where, "sides": sides})
    repeats = [
        {**shown[int(i)], "sides": shown[int(i)]["sides"][::-1], "repeat_of": int(i)}
        for i in rng.choice(len(shown), size=min(cfg.repeats, len(shown)), replace=False)
    ]
    items = shown + repeats
    order = rng.permutation(len(items))
    width = len(str(len(items)))
    ids = {int(position): f"q{rank + 1:0{width}d}" for rank, position in enumerate(order)}
    key_items, rows = [], []
    for position in order.tolist():
        item = items[position]
        first, second = item["sides"]
        key_items.append(
            {
                "item": ids[position],
                "model": item["model"],
                "reference": item["reference"],
                "prompt_index": item["prompt_index"],
                "sample": item["sample"],
                "model_1": first["model"],
                "model_2": second["model"],
                "length_1": first["length"],
                "length_2": second["length"],
                "hash_1": reply_hash(first["response"]),
                "hash_2": reply_hash(second["response"]),
                "repeat_of": ids[item["repeat_of"]] if "repeat_of" in item else None,
            }
        )
        rows.append(
            {
                "item": ids[position],
                "prompt": prompts[item["prompt_index"]],
                "reply_1": first["response"],
                "reply_2": second["response"],
                "choice": "",
                "rater": "",
            }
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / SHEET).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["item", "choice", "rater"])
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / FORM).write_text(_form(rows), encoding="utf-8")
    key = {
        "format": KEY_FORMAT,
        "seed": seed,
        "reference": reference,
        "n_prompts": n_prompts,
        "samples_per_prompt": samples_per_prompt,
        "items": key_items,
        "identical": identical,
    }
    (out_dir / KEY).write_text(json.dumps(key, indent=1) + "\n", encoding="utf-8")
    return {"items": len(shown), "repeats": len(repeats), "identical": len(identical)}


@dataclass
class HumanRatings:
    """Filled sheets, read and checked against their key.

    Attributes:
        key: key.json's content.
        source: key.json's path.
        choices: {rater: {item: '1' | '2' | 'tie'}}.
        unrated: Items left blank, over all raters.
    """

    key: dict[str, Any]
    source: str
    choices: dict[str, dict[str, str]] = field(default_factory=dict)
    unrated: int = 0


def read_ratings(cfg: HumanRatingsConfig) -> HumanRatings:
    """Reads the key and every filled sheet.

    Raises:
        DataError: A missing or unreadable file, a missing column, an unknown item, a choice other than 1, 2 or tie,
            or one rater rating an item twice (the message names the file, row and field).
    """
    from rlhf.data.readers import read_rows

    path = Path(cfg.key)
    source = str(path)
    try:
        key = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            source, None, None, "human-evaluation key not found (compare with human_export writes it)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(source, None, None, f"not a human-evaluation key ({err})") from None
    if not isinstance(key, dict) or key.get("format") != KEY_FORMAT or not isinstance(key.get("items"), list):
        raise DataError(source, None, None, f"not a human-evaluation key (format {KEY_FORMAT} expected)")
    known = {item["item"] for item in key["items"]}
    ratings = HumanRatings(key, source)
    for sheet in cfg.sheets:
        for line, row in read_rows(sheet):
            missing = [column for column in ("item", "choice") if column not in row]
            if missing:
                raise DataError(sheet, line, missing[0], "missing column (a sheet has the columns item, choice, rater)")
            item, choice = _cell(row["item"]), _cell(row["choice"]).lower()
            if item not in known:
                raise DataError(sheet, line, "item", f"'{item}' is not an item of {path}")
            if not choice:
                ratings.unrated += 1
                continue
            if choice not in CHOICES:
                raise DataError(sheet, line, "choice", f"'{choice}' (write 1, 2 or tie; blank: not rated)")
            rater = _cell(row.get("rater")) or Path(sheet).stem
            given = ratings.choices.setdefault(rater, {})
            if item in given:
                raise DataError(sheet, line, "item", f"rater '{rater}' rated {item} twice")
            given[item] = choice
    return ratings


def _cell(value: Any) -> str:
    """A sheet cell as text (the reader turns '1' into a number and a blank cell into None or '')."""
    return "" if value is None else str(value).strip()


def _verdict(item: dict[str, Any], choice: str) -> float:
    """The arm's outcome against the reference on one item: 1 win, 0.5 tie, 0 loss."""
    if choice == "tie":
        return 0.5
    winner = item["model_1"] if choice == "1" else item["model_2"]
    return 1.0 if winner == item["model"] else 0.0


def human_outcomes(
    ratings: HumanRatings, n_prompts: int, samples: int
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """Every rater's verdicts on original items as outcome arrays, one column block per rater.

    Returns:
        ({a: {b: [P, K * R] a's outcomes against b, NaN where not judged}}, {a: {b: [P, K * R] len_a - len_b}}) for
        every arm a rated against the reference b (and b against a); identical pairs tie for every rater.
    """
    key = ratings.key
    if (key["n_prompts"], key["samples_per_prompt"]) != (n_prompts, samples):
        raise DataError(
            ratings.source,
            None,
            None,
            f"{key['n_prompts']} prompts x {key['samples_per_prompt']} samples, but this run has {n_prompts} x "
            f"{samples} (use the prompts and samples_per_prompt of the run that exported the sheet)",
        )
    raters = sorted(ratings.choices)
    outcomes: dict[str, dict[str, np.ndarray]] = {}
    lengths: dict[str, dict[str, np.ndarray]] = {}

    def cell(model: str, reference: str) -> tuple[np.ndarray, np.ndarray]:
        if reference not in outcomes.setdefault(model, {}):
            outcomes[model][reference] = np.full((n_prompts, samples * len(raters)), np.nan)
            lengths.setdefault(model, {})[reference] = np.full((n_prompts, samples * len(raters)), np.nan)
        return outcomes[model][reference], lengths[model][reference]

    for r, rater in enumerate(raters):
        for item in key["items"]:
            choice = ratings.choices[rater].get(item["item"])
            if item["repeat_of"] is not None or choice is None:
                continue
            out, diff = cell(item["model"], item["reference"])
            column = r * samples + item["sample"]
            out[item["prompt_index"], column] = _verdict(item, choice)
            first_is_model = item["model_1"] == item["model"]
            ours, theirs = (
                (item["length_1"], item["length_2"]) if first_is_model else (item["length_2"], item["length_1"])
            )
            diff[item["prompt_index"], column] = ours - theirs
        for pair in key["identical"]:
            out, diff = cell(pair["model"], pair["reference"])
            out[pair["prompt_index"], r * samples + pair["sample"]] = 0.5
            diff[pair["prompt_index"], r * samples + pair["sample"]] = 0.0
    for model in list(outcomes):
        for reference in list(outcomes[model]):
            outcomes.setdefault(reference, {})[model] = 1.0 - outcomes[model][reference]
            lengths.setdefault(reference, {})[model] = -lengths[model][reference]
    return outcomes, lengths


def cohen_kappa(x: list[str], y: list[str]) -> float:
    """Cohen's kappa of two raters' labels on the same items (NaN when chance agreement is 1)."""
    labels = sorted(set(x) | set(y))
    observed = float(np.mean([a == b for a, b in zip(x, y, strict=True)]))
    chance = sum((x.count(c) / len(x)) * (y.count(c) / len(y)) for c in labels)
    return float("nan") if chance >= 1.0 else (observed - chance) / (1.0 - chance)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an [items, categories] table of how many raters chose each category (same raters per item)."""
    counts = np.asarray(counts, dtype=np.float64)
    raters = counts.sum(axis=1)[0]
    per_item = ((counts**2).sum(axis=1) - raters) / (raters * (raters - 1))
    shares = counts.sum(axis=0) / counts.sum()
    chance = float((shares**2).sum())
    return float("nan") if chance >= 1.0 else (float(per_item.mean()) - chance) / (1.0 - chance)


def rater_agreement(ratings: HumanRatings) -> dict[str, Any]:
    """Inter-rater agreement and per-rater consistency (see the module docstring).

    Returns:
        {"raters": {rater: {"rated", "self_consistency", "repeats", "first_position"}}, "pairs": [{"raters",
        "items", "agreement", "cohen_kappa"}], "fleiss_kappa", "fleiss_items", "unrated"}; NaN (None in JSON) where
        there is nothing to measure.
    """
    items = {item["item"]: item for item in ratings.key["items"]}
    originals = [i for i, item in items.items() if item["repeat_of"] is None]

    def verdict(rater: str, item: str) -> float | None:
        choice = ratings.choices[rater].get(item)
        return None if choice is None else _verdict(items[item], choice)

    raters: dict[str, dict[str, Any]] = {}
    for rater, given in ratings.choices.items():
        pairs = [
            (verdict(rater, item["repeat_of"]), verdict(rater, i))
            for i, item in items.items()
            if item["repeat_of"] is not None
        ]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        raters[rater] = {
            "rated": len(given),
            "self_consistency": float(np.mean([a == b for a, b in pairs])) if pairs else float("nan"),
            "repeats": len(pairs),
            "first_position": float(np.mean([c == "1" for c in given.values()])) if given else float("nan"),
        }
    pair_rows = []
    for a, b in combinations(sorted(ratings.choices), 2):
        both = [i for i in originals if verdict(a, i) is not None and verdict(b, i) is not None]
        x, y = [str(verdict(a, i)) for i in both], [str(verdict(b, i)) for i in both]
        pair_rows.append(
            {
                "raters": [a, b],
                "items": len(both),
                "agreement": float(np.mean([p == q for p, q in zip(x, y, strict=True)])) if both else float("nan"),
                "cohen_kappa": cohen_kappa(x, y) if both else float("nan"),
            }
        )
    everyone = [i for i in originals if all(verdict(r, i) is not None for r in ratings.choices)]
    fleiss = float("nan")
    if len(ratings.choices) >= 2 and everyone:
        table = np.array(
            [[sum(verdict(r, i) == v for r in ratings.choices) for v in (1.0, 0.0, 0.5)] for i in everyone]
        )
        fleiss = fleiss_kappa(table)
    return {
        "raters": raters,
        "pairs": pair_rows,
        "fleiss_kappa": fleiss,
        "fleiss_items": len(everyone) if len(ratings.choices) >= 2 else 0,
        "unrated": ratings.unrated,
    }


def changed_replies(ratings: HumanRatings, records: list[dict[str, Any]]) -> int:
    """How many rated items show a reply other than this run's reply to the same prompt and sample (the human
    verdicts are about the exported replies; a run that samples differently judges other replies)."""
    hashes = {(r["model"], r["prompt_index"], r["sample"]): reply_hash(r["response"]) for r in records}
    changed = 0
    for item in ratings.key["items"]:
        where = (item["prompt_index"], item["sample"])
        if (hashes.get((item["model_1"], *where)), hashes.get((item["model_2"], *where))) != (
            item["hash_1"],
            item["hash_2"],
        ):
            changed += 1
    return changed


def _form(rows: list[dict[str, str]]) -> str:
    """A self-contained page: every item with its two replies and three choices; downloads the filled CSV."""
    items = json.dumps([{k: row[k] for k in ("item", "prompt", "reply_1", "reply_2")} for row in rows])
    items = items.replace("</", "<\\/")  # no "</script>" inside the script
    return _FORM.replace("__ITEMS__", items).replace("__COUNT__", html.escape(str(len(rows))))


_FORM = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Which reply is better?</title>
<style>
body{font:15px/1.45 -apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1d2329;background:#f6f7f9;margin:0}
main{max-width:1100px;margin:0 auto;padding:20px 28px 60px}
.item{background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.08);margin:16px 0;padding:12px 16px}
.item.done{border-left:5px solid #2e7d32}.prompt{background:#eef1f4;padding:8px 10px;border-radius:4px}
.replies{display:grid;grid-template-columns:1fr 1fr;gap:12px;margin:10px 0}
.replies pre{white-space:pre-wrap;word-break:break-word;font:13.5px/1.4 ui-monospace,Menlo,Consolas,monospace;
 background:#fafbfc;border:1px solid #e3e6ea;border-radius:4px;padding:8px;margin:4px 0 0}
label{margin-right:18px;cursor:pointer}.bar{position:sticky;top:0;background:#f6f7f9;padding:8px 0;z-index:1}
button{font-size:15px;padding:6px 14px}
</style></head><body><main>
<h1>Which reply is better?</h1>
<p>Each item shows a customer message and two replies. Choose the better reply (the one that answers what the
customer asked, correctly and politely), or <i>tie</i> when neither is better. Some items appear twice; judge each
on its own. Your choices stay in this page until you download them.</p>
<div class="bar">Your name: <input id="rater" placeholder="rater name"> <span id="progress"></span>
<button id="download">Download filled CSV</button></div>
<div id="items"></div>
</main><script>
const ITEMS = __ITEMS__;
const choices = {};
function esc(s){const d=document.createElement('div');d.textContent=s;return d.innerHTML;}
function progress(){document.getElementById('progress').textContent=
  Object.keys(choices).length+' of __COUNT__ rated';}
const box=document.getElementById('items');
ITEMS.forEach(function(it){
  const div=document.createElement('div');div.className='item';
  div.innerHTML='<b>'+esc(it.item)+'</b><div class="prompt">'+esc(it.prompt)+'</div><div class="replies">'+
    '<div><b>Reply 1</b><pre>'+esc(it.reply_1)+'</pre></div><div><b>Reply 2</b><pre>'+esc(it.reply_2)+
    '</pre></div></div>'+['1','2','tie'].map(function(c){return '<label><input type="radio" name="'+
    esc(it.item)+'" value="'+c+'"> '+(c==='tie'?'tie':'reply '+c+' is better')+'</label>';}).join('');
  div.querySelectorAll('input').forEach(function(input){input.addEventListener('change',function(){
    choices[it.item]=input.value;div.classList.add('done');progress();});});
  box.appendChild(div);
});
function cell(s){s=String(s);return /[",\\n\\r]/.test(s)?'"'+s.replace(/"/g,'""')+'"':s;}
document.getElementById('download').addEventListener('click',function(){
  const rater=document.getElementById('rater').value.trim();
  if(!rater){alert('Please type your name first.');return;}
  const lines=['item,choice,rater'].concat(ITEMS.map(function(it){
    return [it.item,choices[it.item]||'',rater].map(cell).join(',');}));
  const blob=new Blob([lines.join('\\r\\n')+'\\r\\n'],{type:'text/csv'});
  const a=document.createElement('a');a.href=URL.createObjectURL(blob);
  a.download='ratings-'+rater.replace(/[^A-Za-z0-9_-]+/g,'_')+'.csv';a.click();
});
progress();
</script></body></html>
"""
