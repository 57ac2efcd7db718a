"""Pairwise judges: a judge that reads two replies to one prompt and says which is better.

Three kinds, declared in compare's `pairwise_judges`: a local causal LM with a rubric (`rlhf.compare.model_judge`),
a plug-in function ('package.module:function', e.g. a client for a hosted judge), and human raters
(`rlhf.compare.human`). The model and plug-in judges run under one protocol, `judge_pair`: every pair is judged in
both orders (position swap), and a reply wins only when both orders prefer it; when the orders disagree the pair is a
tie. A judge that always picks the first position therefore ties everything, and a reply offered against itself can
only tie.

A preference function takes (prompts, first replies, second replies) and returns one number per pair: > 0 prefers
the first reply, < 0 the second, 0 no preference (e.g. +1/-1/0, or a log-odds).

The statistics are pure functions of [P, K] outcome arrays (1 win, 0.5 tie, 0 loss for the row model, NaN where a
pair was not judged), with intervals from the same bootstrap prompt indices as `rlhf.compare.stats`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlhf.compare.stats import Estimate, WinRate, as_matrix, percentile_interval, ratio_estimate

logger = logging.getLogger("rlhf")

Preference = Callable[[list[str], list[str], list[str]], Sequence[float]]

PREFERENCE_TOLERANCE = 1e-4
"""A preference closer to 0 than this is no preference: float noise between two batches must not decide a pair."""


@dataclass
class PairVerdicts:
    """Verdicts on pairs (x_i, y_i) from both orders.

    Attributes:
        outcome: [N] x's outcome: 1 when both orders prefer x, 0 when both prefer y, 0.5 otherwise.
        consistent: [N] whether the two orders agreed (both for x, both for y, or both without preference).
        first_chosen: [N] how many of the two orders (0-2) chose the reply in the first position.
    """

    outcome: np.ndarray
    consistent: np.ndarray
    first_chosen: np.ndarray


def judge_pair(prefer: Preference, prompts: list[str], x: list[str], y: list[str]) -> PairVerdicts:
    """Judges every (x_i, y_i) in both orders with one call of `prefer` (2N pairs: x first, then y first)."""
    n = len(x)
    values = np.asarray(list(prefer([*prompts, *prompts], [*x, *y], [*y, *x])), dtype=np.float64)
    if values.shape != (2 * n,):
        raise ValueError(f"a pairwise judge returned {values.size} preferences for {2 * n} pairs")
    x_first, y_first = values[:n], values[n:]
    # Preference for x in each order: as given when x is first, negated when x is second.
    for_x = np.sign(np.where(np.abs(x_first) > PREFERENCE_TOLERANCE, x_first, 0.0))
    for_x_swapped = np.sign(np.where(np.abs(y_first) > PREFERENCE_TOLERANCE, -y_first, 0.0))
    outcome = np.where((for_x > 0) & (for_x_swapped > 0), 1.0, np.where((for_x < 0) & (for_x_swapped < 0), 0.0, 0.5))
    first_chosen = (x_first > PREFERENCE_TOLERANCE).astype(int) + (y_first > PREFERENCE_TOLERANCE).astype(int)
    return PairVerdicts(outcome, for_x == for_x_swapped, first_chosen)


def judge_models(
    prefer: Preference, prompts: list[str], replies: dict[str, list[str]], shape: tuple[int, int]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float | int]]:
    """Judges every pair of models on matched samples (sample k of each on prompt i), both orders.

    Args:
        prefer: The preference function.
        prompts: [P * K] the prompt of each row (prompt-major, as compare samples).
        replies: {model: [P * K] replies}.
        shape: (P, K).

    Returns:
        ({a: {b: [P, K] a's outcome against b}}, diagnostics: "position_consistency" (share of pairs of different
        replies on which the two orders agreed), "first_position" (share of single-order verdicts with a
        preference that chose the first reply), "pairs" (pairs of different replies judged)).
    """
    models = list(replies)
    outcomes: dict[str, dict[str, np.ndarray]] = {m: {} for m in models}
    consistent, first, decided = [], 0, 0
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            verdicts = judge_pair(prefer, prompts, replies[a], replies[b])
            outcomes[a][b] = verdicts.outcome.reshape(shape)
            outcomes[b][a] = 1.0 - outcomes[a][b]
            # Identical replies can only tie: they say nothing about the judge's consistency.
            different = np.array([p != q for p, q in zip(replies[a], replies[b], strict=True)])
            consistent.append(verdicts.consistent[different])
            first += int(verdicts.first_chosen[different].sum())
            decided += 2 * int(different.sum())
    agreed = np.concatenate(consistent) if consistent else np.zeros(0)
    return outcomes, {
        "position_consistency": float(agreed.mean()) if agreed.size else float("nan"),
        "first_position": first / decided if decided else float("nan"),
        "pairs": int(agreed.size),
    }


def outcome_win_rate(outcomes: np.ndarray, indices: np.ndarray, confidence: float) -> WinRate:
    """Win, tie and loss shares and the win rate (mean outcome) over judged pairs, with a bootstrap interval over
    prompts (`indices` as in `rlhf.compare.stats`); NaN outcomes are pairs that were not judged."""
    outcomes = as_matrix(outcomes)
    defined = np.isfinite(outcomes)
    n = int(defined.sum())
    if n == 0:
        nan = float("nan")
        return WinRate(nan, nan, nan, nan, nan, nan, 0, 0)
    values = outcomes[defined]
    sums = np.where(defined, outcomes, 0.0).sum(axis=1)
    counts = defined.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = sums[indices].sum(axis=1) / counts[indices].sum(axis=1)
    low, high = percentile_interval(replicates, confidence)
    return WinRate(
        float((values == 1.0).mean()),
        float((values == 0.5).mean()),
        float((values == 0.0).mean()),
        float(values.mean()),
        low,
        high,
        int((counts > 0).sum()),
        n,
    )


def agreement(
    pairwise: dict[str, dict[str, np.ndarray]],
    other: dict[str, dict[str, np.ndarray]],
    indices: np.ndarray,
    confidence: float,
) -> Estimate:
    """How often two judges pick the same winner, over the pairs both decide (ties on either side left out).

    Args:
        pairwise, other: {a: {b: [P, K] outcomes}} of two judges; each unordered pair counted once.
        indices, confidence: As in `rlhf.compare.stats`.
    """
    columns = []
    for a, row in pairwise.items():
        for b, ours in row.items():
            if a >= b or b not in other.get(a, {}):
                continue
            theirs, ours = as_matrix(other[a][b]), as_matrix(ours)
            # A human judge has one column block per rater: each rater's verdict is compared with the other judge.
            width = max(theirs.shape[1], ours.shape[1])
            if width % theirs.shape[1] or width % ours.shape[1]:
                continue
            theirs = np.tile(theirs, (1, width // theirs.shape[1]))
            ours = np.tile(ours, (1, width // ours.shape[1]))
            decided = np.isfinite(ours) & np.isfinite(theirs) & (ours != 0.5) & (theirs != 0.5)
            columns.append(np.where(decided, (ours == theirs).astype(np.float64), np.nan))
    if not columns:
        nan = float("nan")
        return Estimate(nan, nan, nan, 0, 0)
    return ratio_estimate(np.concatenate(columns, axis=1), indices, confidence)


def load_preference(spec: str) -> Preference:
    """Imports a plug-in pairwise judge 'package.module:function'.

    Raises:
        RewardError: The module cannot be imported or has no such function.
    """
    from rlhf.rewards.sources import RewardError, load_reward_function

    if ":" not in spec:
        raise RewardError(f"pairwise judge function '{spec}': name it as 'package.module:function'")
    return load_reward_function(spec)


def run_judges(cfg, prompts: list[str], records: list[dict[str, Any]], shape: tuple[int, int]) -> dict[str, Any]:
    """Runs every pairwise judge of a compare recipe on the run's replies.

    Args:
        cfg: The CompareStage.
        prompts: [P] the text of each prompt (the last user turn).
        records: compare's responses (model, prompt_index, sample, response, length).
        shape: (P, K).

    Returns:
        {judge: {"kind": "model" | "function" | "human", "outcomes": {a: {b: [P, K'] outcomes}}, "lengths": {a: {b:
        [P, K'] len_a - len_b}}, "diagnostics": {...}}}; K' is K, or K x raters for human judges.
    """
    from rlhf.compare import human
    from rlhf.compare.model_judge import ModelJudge

    n_prompts, k = shape
    replies: dict[str, list[str]] = {}
    lengths: dict[str, np.ndarray] = {}
    for record in sorted(records, key=lambda r: (r["prompt_index"], r["sample"])):
        replies.setdefault(record["model"], []).append(record["response"])
    for model in replies:
        lengths[model] = np.array(
            [
                r["length"]
                for r in sorted(records, key=lambda r: (r["prompt_index"], r["sample"]))
                if r["model"] == model
            ]
        ).reshape(shape)
    expanded = [p for p in prompts for _ in range(k)]
    differences = {a: {b: lengths[a] - lengths[b] for b in lengths if b != a} for a in lengths}
    out: dict[str, Any] = {}
    for judge in cfg.pairwise_judges:
        started = time.time()
        if judge.human is not None:
            ratings = human.read_ratings(judge.human)
            outcomes, diffs = human.human_outcomes(ratings, n_prompts, k)
            diagnostics = {
                **human.rater_agreement(ratings),
                "changed_replies": human.changed_replies(ratings, records),
            }
            out[judge.name] = {"kind": "human", "outcomes": outcomes, "lengths": diffs, "diagnostics": diagnostics}
            continue
        if judge.model is not None:
            prefer: Preference = ModelJudge(
                judge.model, judge.rubric, cfg.dtype, cfg.batch_size, judge.trust_remote_code
            )
        else:
            prefer = load_preference(judge.function)
        outcomes, diagnostics = judge_models(prefer, expanded, replies, shape)
        if judge.model is not None:
            diagnostics["truncated"] = prefer.truncated
            del prefer
        out[judge.name] = {
            "kind": "model" if judge.model is not None else "function",
            "outcomes": outcomes,
            "lengths": differences,
            "diagnostics": diagnostics,
        }
        logger.info("compare: pairwise judge %s in %.0f s", judge.name, time.time() - started)
    return out


CONSISTENT = 0.8
"""A model or plug-in judge whose two orders agree on fewer pairs than this is mostly reading positions, not replies."""

AGREES = 0.7
"""Agreement with the gold judge on decided pairs below this: the judge measures something else (or noise)."""

MIN_AGREEMENT_PAIRS = 20
"""Agreement with the gold judge on fewer decided pairs than this is not evidence either way."""

LENGTH_GAP = 0.1
"""A judge whose raw and length-controlled win rates differ this much on some pair is said to pay for length."""

KAPPA = 0.4
"""Cohen's/Fleiss' kappa below this is at most 'fair' agreement (Landis & Koch 1977): raters disagree too often."""


def summarise(
    judged: dict[str, Any],
    pointwise: dict[str, dict[str, dict[str, np.ndarray]]],
    gold: str | None,
    indices: np.ndarray,
    confidence: float,
) -> dict[str, Any]:
    """The results.json entries of the pairwise judges.

    Args:
        judged: `run_judges`'s output.
        pointwise: {score: {a: {b: [P, K] outcomes}}} of the per-response scores (proxy and judges).
        gold: The judge the others are checked against (the content judge), or None.
        indices, confidence: As in `rlhf.compare.stats`.

    Returns:
        {"win_rates": {judge: {a: {b: WinRate}}}, "length_controlled": {judge: {a: {b: LengthControlled}}},
        "pairwise": {judge: {"kind", diagnostics..., "agreement": {other judge: Estimate}, "trust": a sentence}}}.
    """
    from rlhf.compare.length_control import length_controlled_matrix

    everyone = {**pointwise, **{name: found["outcomes"] for name, found in judged.items()}}
    win_rates, controlled, details = {}, {}, {}
    for name, found in judged.items():
        win_rates[name] = {
            a: {b: outcome_win_rate(v, indices, confidence) for b, v in row.items()}
            for a, row in found["outcomes"].items()
        }
        controlled[name] = length_controlled_matrix(found["outcomes"], found["lengths"], indices, confidence)
        agree = {
            other: agreement(found["outcomes"], outcomes, indices, confidence)
            for other, outcomes in everyone.items()
            if other != name
        }
        gaps = [abs(lc.raw - lc.rate) for row in controlled[name].values() for lc in row.values()]
        gaps = [g for g in gaps if np.isfinite(g)]
        details[name] = {
            "kind": found["kind"],
            **found["diagnostics"],
            "agreement": agree,
            "length_gap": max(gaps) if gaps else float("nan"),
        }
        details[name]["trust"] = trust(details[name], gold)
    return {"win_rates": win_rates, "length_controlled": controlled, "pairwise": details}


def trust(details: dict[str, Any], gold: str | None) -> str:
    """One sentence: can the report's reader rely on this pairwise judge, and why (from its diagnostics)."""
    text = _trust(details, gold)
    gap = details["length_gap"]
    if np.isfinite(gap) and gap >= LENGTH_GAP:
        # Agreement with the gold judge can come from length alone when the gold judge also likes longer replies.
        text += f"; it pays for length (its raw and length-controlled win rates differ by up to {gap:.2f})"
    return text


def _trust(details: dict[str, Any], gold: str | None) -> str:
    reasons = []
    agreed = details["agreement"].get(gold) if gold else None
    if details["kind"] == "human":
        kappas = [p["cohen_kappa"] for p in details["pairs"] if np.isfinite(p["cohen_kappa"])]
        if kappas and min(kappas) < KAPPA:
            reasons.append(f"raters agree little (lowest Cohen's kappa {min(kappas):.2f} < {KAPPA})")
        selves = [r["self_consistency"] for r in details["raters"].values() if np.isfinite(r["self_consistency"])]
        if selves and min(selves) < CONSISTENT:
            reasons.append(f"a rater contradicts themself on repeated items ({min(selves):.0%} consistent)")
        rated = max((p["items"] for p in details["pairs"]), default=0)
        if details["pairs"] and rated < MIN_AGREEMENT_PAIRS:
            reasons.append(f"raters shared only {rated} items (at least {MIN_AGREEMENT_PAIRS} to measure agreement)")
        if details["changed_replies"]:
            reasons.append(f"{details['changed_replies']} rated items show replies this run did not write")
        verdict = "trustworthy as the reference for the other judges" if not reasons else "weak"
        return f"{verdict}: " + ("; ".join(reasons) if reasons else "raters agree with each other and themselves")
    consistency = details["position_consistency"]
    if not np.isfinite(consistency):
        return "unknown: every pair it judged had two identical replies"
    if consistency < CONSISTENT:
        reasons.append(
            f"its verdict follows the order of the replies (the two orders agree on {consistency:.0%} of pairs, "
            f"below {CONSISTENT:.0%}; first position chosen in {details['first_position']:.0%} of verdicts)"
        )
    checked = agreed is not None and agreed.n_responses >= MIN_AGREEMENT_PAIRS
    if checked and agreed.mean < AGREES:
        reasons.append(
            f"it picks the same winner as the gold judge '{gold}' on only {agreed.mean:.0%} of the "
            f"{agreed.n_responses} pairs both decide (below {AGREES:.0%})"
        )
    if reasons:
        return "not trustworthy: " + "; ".join(reasons)
    if not checked:
        found = 0 if agreed is None else agreed.n_responses
        return (
            f"position-consistent on {consistency:.0%} of pairs, but unchecked: {found} pairs decided by both it and "
            f"the gold judge '{gold}' (at least {MIN_AGREEMENT_PAIRS} needed)"
        )
    return (
        f"usable: position-consistent on {consistency:.0%} of pairs and agrees with '{gold}' on {agreed.mean:.0%} "
        f"of {agreed.n_responses} decided pairs"
    )


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def sections(results: dict[str, Any]) -> list:
    """The report's section on the pairwise judges: how far to trust each, and the human raters' agreement."""
    from rlhf.compare.breakdown import Section

    found = results.get("pairwise") or {}
    if not found:
        return []
    others = [*results["scores"], *found]
    section = Section(
        "Pairwise judges: how far to trust them",
        "model and plug-in judges see each pair in both orders; a reply wins only when both orders prefer it, so a "
        "judge that reads positions rather than replies ties everything. Position consistency: the share of pairs of "
        "different replies on which the two orders agree. Agreement: the share of pairs both judges decide (no tie) "
        "on which they pick the same winner, with its bootstrap interval over prompts. Their win rates are with the "
        "other judges' below.",
    )
    rows = []
    for name, details in found.items():
        human = details["kind"] == "human"
        row = [
            (name, "", ""),
            (details["kind"], "", ""),
            ("-" if human else _rate(details["position_consistency"]), "", ""),
            ("-" if human else _rate(details["first_position"]), "", ""),
        ]
        for other in others:
            est = details["agreement"].get(other)
            row.append(
                ("-", "", "")
                if est is None or est["mean"] is None
                else (_rate(est["mean"]), f"[{_rate(est['low'])}, {_rate(est['high'])}] n={est['n_responses']}", "")
            )
        rows.append(row)
        section.items.append(f"{name}: {details['trust']}")
        if details.get("truncated"):
            section.items.append(f"{name}: {details['truncated']} judge inputs were cut at the left to fit the model")
    section.tables.append(
        (
            "",
            ["judge", "kind", "position consistency", "first position chosen", *[f"agrees with {o}" for o in others]],
            rows,
        )
    )
    for name, details in found.items():
        if details["kind"] != "human":
            continue
        section.tables.append(
            (
                f"human judge '{name}': raters",
                ["rater", "items rated", "self-consistency on repeats", "first position chosen"],
                [
                    [
                        (rater, "", ""),
                        (str(r["rated"]), "", ""),
                        (_rate(r["self_consistency"]), f"n={r['repeats']}", ""),
                        (_rate(r["first_position"]), "", ""),
                    ]
                    for rater, r in details["raters"].items()
                ],
            )
        )
        if details["pairs"]:
            section.tables.append(
                (
                    f"human judge '{name}': agreement between raters (original items both rated)",
                    ["raters", "items", "raw agreement", "Cohen's kappa"],
                    [
                        [
                            (" & ".join(p["raters"]), "", ""),
                            (str(p["items"]), "", ""),
                            (_rate(p["agreement"]), "", ""),
                            ("n/a" if p["cohen_kappa"] is None else f"{p['cohen_kappa']:.2f}", "", ""),
                        ]
                        for p in details["pairs"]
                    ],
                )
            )
            kappa = details["fleiss_kappa"]
            section.items.append(
                f"{name}: Fleiss' kappa over all raters "
                + ("n/a" if kappa is None else f"{kappa:.2f}")
                + f" on the {details['fleiss_items']} items every rater rated; {details['unrated']} items left blank"
            )
    return [section]
