"""Length-controlled win rates: the win rate a judge would give at equal reply length. Pure functions, no I/O.

A judge that prefers longer replies makes a model that writes longer replies look better, whatever it says. Following
AlpacaEval 2's length-controlled win rate (Dubois et al. 2024, "Length-Controlled AlpacaEval", eq. 1-2), each
pairwise judgement (A beats B: 1, tie: 0.5, A loses: 0) is regressed on the normalised length difference,

    P(A beats B) = sigmoid(b0 + b1 * tanh((len_A - len_B) / sd(len_A - len_B))),

and the length-controlled win rate is the prediction at equal length, sigmoid(b0). AlpacaEval's model also has
per-instruction and per-model terms; with two models on one prompt set only the intercept and the length slope
remain. Ties enter as half a win (a fractional target, the same weight as in the raw rate). A weak ridge penalty
(`RIDGE`) keeps the fit finite when the judgements are perfectly separated by length.

The interval is the percentile bootstrap of `rlhf.compare.stats`: the same [B, P] prompt indices (so raw and
length-controlled rates are paired), every judgement of a drawn prompt weighted by how often its prompt was drawn,
and the regression refitted per replicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf.compare.stats import TIE_TOLERANCE, as_matrix, percentile_interval

RIDGE = 1e-3
"""L2 penalty on (b0, b1): negligible next to any real data, finite coefficients when length separates the verdicts."""

NEWTON_STEPS = 60
"""Newton iterations at most; a separable fit needs ~20 to reach the ridge's optimum, a typical one ~6."""


@dataclass
class LengthControlled:
    """A length-controlled win rate of A over B.

    Attributes:
        rate: Predicted win rate at equal length, sigmoid(b0).
        low, high: Its bootstrap percentile interval.
        raw: The raw win rate on the same judgements (wins + ties/2).
        slope: b1, the judge's preference per unit of normalised length difference (> 0: longer wins).
        length_sd: The standard deviation of len_A - len_B that normalises the difference (tokens).
        n_prompts: Prompts with at least one judgement.
        n_pairs: Judgements behind the figure.
    """

    rate: float
    low: float
    high: float
    raw: float
    slope: float
    length_sd: float
    n_prompts: int
    n_pairs: int


def score_outcomes(a: np.ndarray, b: np.ndarray, tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """Per matched sample, A's outcome against B under a per-response score: 1 win, 0.5 tie, 0 loss ([P, K]).

    The same matching and tie rule as `rlhf.compare.stats.pairwise_outcomes`, before averaging per prompt; NaN where
    either score is missing.
    """
    a, b = as_matrix(a), as_matrix(b)
    gap = a - b
    out = np.where(gap > tolerance, 1.0, np.where(gap < -tolerance, 0.0, 0.5))
    return np.where(np.isfinite(gap), out, np.nan)


def length_feature(difference: np.ndarray) -> tuple[np.ndarray, float]:
    """tanh(d / sd(d)) over the finite differences, and the sd (0 when every difference is equal: feature 0)."""
    finite = difference[np.isfinite(difference)]
    sd = float(finite.std()) if finite.size else 0.0
    if sd == 0.0:
        return np.zeros_like(difference), sd
    return np.tanh(difference / sd), sd


def fit_logistic(feature: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted ridge logistic regression of `target` (in [0, 1]) on [1, feature], many weightings at once.

    Args:
        feature: [N] the regressor.
        target: [N] fractional outcomes (1 win, 0.5 tie, 0 loss).
        weights: [R, N] one weighting per fit (bootstrap multiplicities; ones for the point estimate).

    Returns:
        [R, 2] coefficients (b0, b1) per weighting, by Newton's method on the penalised log-likelihood.
    """
    feature = np.asarray(feature, dtype=np.float64)
    powers = np.stack([np.ones_like(feature), feature, feature * feature], axis=1)  # [N, 3]: 1, x, x^2
    beta = np.zeros((weights.shape[0], 2))
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(beta[:, :1] + beta[:, 1:] * feature)))  # [R, N]
        g = (weights * (target - p)) @ powers[:, :2] - RIDGE * beta  # [R, 2]
        h = (weights * p * (1 - p)) @ powers + np.array([RIDGE, 0.0, RIDGE])  # [R, 3]: h00, h01, h11
        det = h[:, 0] * h[:, 2] - h[:, 1] ** 2
        # The 2x2 Newton step H^-1 g, written out: one product per weighting instead of a batched solve.
        step = np.stack([h[:, 2] * g[:, 0] - h[:, 1] * g[:, 1], h[:, 0] * g[:, 1] - h[:, 1] * g[:, 0]], axis=1)
        step /= det[:, None]
        beta += step
        if np.abs(step).max() < 1e-9:
            break
    return beta


def length_controlled(
    outcomes: np.ndarray, length_difference: np.ndarray, indices: np.ndarray, confidence: float
) -> LengthControlled:
    """The length-controlled win rate of A over B with a paired bootstrap interval over prompts.

    Args:
        outcomes: [P, K] A's outcome per matched pair (1, 0.5, 0), NaN where there is no judgement.
        length_difference: [P, K] len_A - len_B of the same pairs (tokens).
        indices: [B, P] bootstrap prompt indices (`rlhf.compare.stats.bootstrap_indices`), shared with the raw rates.
        confidence: Interval coverage.
    """
    outcomes, length_difference = as_matrix(outcomes), as_matrix(length_difference)
    n_prompts = outcomes.shape[0]
    defined = np.isfinite(outcomes) & np.isfinite(length_difference)
    prompt_of = np.nonzero(defined)[0]
    target = outcomes[defined]
    if target.size == 0:
        nan = float("nan")
        return LengthControlled(nan, nan, nan, nan, nan, nan, 0, 0)
    feature, sd = length_feature(length_difference[defined])
    counts = np.zeros((len(indices), n_prompts))
    np.add.at(counts, (np.arange(len(indices))[:, None], indices), 1.0)
    weights = np.concatenate([np.ones((1, target.size)), counts[:, prompt_of]])
    beta = fit_logistic(feature, target, weights)
    rates = 1.0 / (1.0 + np.exp(-beta[:, 0]))
    # A replicate that drew none of the judged prompts has no data: its fit is the prior (0.5), so leave it out.
    drawn = weights[1:].sum(axis=1) > 0
    low, high = percentile_interval(np.where(drawn, rates[1:], np.nan), confidence)
    return LengthControlled(
        float(rates[0]),
        low,
        high,
        float(target.mean()),
        float(beta[0, 1]),
        sd,
        int(np.unique(prompt_of).size),
        int(target.size),
    )


def length_controlled_matrix(
    outcomes: dict[str, dict[str, np.ndarray]],
    lengths: dict[str, dict[str, np.ndarray]],
    indices: np.ndarray,
    confidence: float,
) -> dict[str, dict[str, LengthControlled]]:
    """`length_controlled` for every ordered pair that has outcomes and length differences.

    Args:
        outcomes: {a: {b: [P, K] a's outcomes against b}}.
        lengths: {a: {b: [P, K] len_a - len_b}} for the same pairs.
        indices, confidence: As in `length_controlled`.

    Returns:
        {a: {b: LengthControlled}}. (b, a) is the mirror of (a, b), not refitted: flipping every outcome and
        every length difference negates the intercept and keeps the slope (the judge's taste for the longer reply),
        so the rate and its interval become 1 - rate, and the slope stays.
    """
    out: dict[str, dict[str, LengthControlled]] = {a: {} for a in outcomes}
    for a, row in outcomes.items():
        for b, values in row.items():
            if b in out.get(a, {}) or b not in lengths.get(a, {}):
                continue
            found = length_controlled(values, lengths[a][b], indices, confidence)
            out[a][b] = found
            out.setdefault(b, {})[a] = LengthControlled(
                1.0 - found.rate,
                1.0 - found.high,
                1.0 - found.low,
                1.0 - found.raw,
                found.slope,
                found.length_sd,
                found.n_prompts,
                found.n_pairs,
            )
    return out


def score_matrices(
    measures: dict[str, dict[str, np.ndarray]], score: str
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """Outcomes and length differences of every ordered pair of models under one per-response score."""
    models = [m for m in measures if score in measures[m] and "length" in measures[m]]
    outcomes = {
        a: {b: score_outcomes(measures[a][score], measures[b][score]) for b in models if b != a} for a in models
    }
    lengths = {
        a: {b: as_matrix(measures[a]["length"]) - as_matrix(measures[b]["length"]) for b in models if b != a}
        for a in models
    }
    return outcomes, lengths
