"""Statistics for the compare report: pure functions of score arrays, no I/O, no configuration.

Every per-response measure of a model is an array of shape [P, K]: P prompts (the same prompts, in the same order,
for every model) by K samples per prompt. The prompt is the unit of resampling: confidence intervals come from a
percentile bootstrap over prompts (Efron & Tibshirani 1993, ch. 13), and every statistic in one analysis uses the
same resampled prompt sets, so differences and win rates between models are paired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TIE_TOLERANCE = 1e-6
"""Two scores closer than this are a tie: float noise from batching must not decide a win."""


@dataclass
class Estimate:
    """A point estimate with its bootstrap confidence interval and the data behind it.

    Attributes:
        mean: The point estimate on all prompts (for a mean: the mean over every response).
        low, high: The bootstrap percentile interval.
        n_prompts: Prompts behind the figure.
        n_responses: Responses behind the figure (prompts x samples per prompt).
        std: Standard deviation over responses (means only; None for differences and correlations).
    """

    mean: float
    low: float
    high: float
    n_prompts: int
    n_responses: int
    std: float | None = None


@dataclass
class WinRate:
    """How often model A beats model B on the same prompt under one score, ties counted separately.

    `rate` is wins plus half the ties (0.5 means no preference); its interval comes from the bootstrap. `n_pairs` is
    the number of matched (A, B) response pairs behind it.
    """

    win: float
    tie: float
    loss: float
    rate: float
    low: float
    high: float
    n_prompts: int
    n_pairs: int


@dataclass
class Analysis:
    """Everything the report states about a set of models (see `analyse`)."""

    reference: str
    n_prompts: int
    samples_per_prompt: int
    resamples: int
    confidence: float
    summary: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    differences: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    win_rates: dict[str, dict[str, dict[str, WinRate]]] = field(default_factory=dict)
    length_correlation: dict[str, dict[str, Estimate]] = field(default_factory=dict)


def as_matrix(values: np.ndarray | list) -> np.ndarray:
    """A per-response measure as float [P, K]; a flat list is read as one sample per prompt."""
    array = np.asarray(values, dtype=np.float64)
    return array[:, None] if array.ndim == 1 else array


def bootstrap_indices(n_prompts: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, n_prompts] prompt indices drawn with replacement: one row per bootstrap replicate."""
    return rng.integers(0, n_prompts, size=(resamples, n_prompts))


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` interval of bootstrap replicates (NaN replicates ignored)."""
    alpha = (1.0 - confidence) / 2
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def mean_estimate(values: np.ndarray, indices: np.ndarray, confidence: float) -> Estimate:
    """Mean and standard deviation over responses, with a bootstrap interval over prompts.

    Args:
        values: [P, K] per-response values.
        indices: [B, P] bootstrap prompt indices (`bootstrap_indices`).
        confidence: Interval coverage, e.g. 0.95.
    """
    values = as_matrix(values)
    per_prompt = values.mean(axis=1)  # K is the same for every prompt, so this mean of means is the overall mean
    low, high = percentile_interval(per_prompt[indices].mean(axis=1), confidence)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return Estimate(float(values.mean()), low, high, values.shape[0], values.size, std)


def difference_estimate(a: np.ndarray, b: np.ndarray, indices: np.ndarray, confidence: float) -> Estimate:
    """mean(a) - mean(b) on the same prompts, with a paired bootstrap interval."""
    a, b = as_matrix(a), as_matrix(b)
    per_prompt = a.mean(axis=1) - b.mean(axis=1)
    low, high = percentile_interval(per_prompt[indices].mean(axis=1), confidence)
    return Estimate(float(per_prompt.mean()), low, high, a.shape[0], a.size + b.size)


def pairwise_outcomes(a: np.ndarray, b: np.ndarray, tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """Per prompt, the share of matched samples (sample k of A against sample k of B) that A wins, ties and loses.

    Samples are matched because every model samples with the same seed: sample k of each model on a prompt is drawn
    with the same random numbers, so similar models write similar replies and a model ties itself everywhere.
    Matching keeps the meaning of a win rate the same for any number of samples per prompt.

    Args:
        a, b: [P, K] scores of two models on the same prompts.
        tolerance: Scores closer than this tie.

    Returns:
        [P, 3] rows of (win, tie, loss) fractions, each row summing to 1.
    """
    a, b = as_matrix(a), as_matrix(b)
    if a.shape != b.shape:
        raise ValueError(f"win rates need the same prompts and samples per prompt, got {a.shape} and {b.shape}")
    gap = a - b
    tie = np.abs(gap) <= tolerance
    win = (gap > 0) & ~tie
    loss = (gap < 0) & ~tie
    return np.stack([win.mean(axis=1), tie.mean(axis=1), loss.mean(axis=1)], axis=1)


def win_rate(
    a: np.ndarray, b: np.ndarray, indices: np.ndarray, confidence: float, tolerance: float = TIE_TOLERANCE
) -> WinRate:
    """Win, tie and loss rates of A against B, and wins + ties/2 with a bootstrap interval over prompts."""
    outcomes = pairwise_outcomes(a, b, tolerance)
    win, tie, loss = (float(x) for x in outcomes.mean(axis=0))
    per_prompt = outcomes[:, 0] + 0.5 * outcomes[:, 1]
    low, high = percentile_interval(per_prompt[indices].mean(axis=1), confidence)
    return WinRate(win, tie, loss, win + 0.5 * tie, low, high, len(outcomes), as_matrix(a).size)


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis (NaN where either input is constant)."""
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (x * y).sum(axis=-1) / np.where(denominator > 0, denominator, 1), np.nan)


def correlation_estimate(x: np.ndarray, y: np.ndarray, indices: np.ndarray, confidence: float) -> Estimate:
    """Pearson correlation over all responses, with an interval from resampling prompts (all their samples)."""
    x, y = as_matrix(x), as_matrix(y)
    point = float(pearson(x.ravel(), y.ravel()))
    replicates = pearson(x[indices].reshape(len(indices), -1), y[indices].reshape(len(indices), -1))
    low, high = percentile_interval(replicates, confidence)
    return Estimate(point, low, high, x.shape[0], x.size)


def analyse(
    scores: dict[str, dict[str, np.ndarray]],
    reference: str,
    *,
    compared: list[str],
    seed: int,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> Analysis:
    """Summary, differences to the reference, win rates and length correlations for a set of models.

    Args:
        scores: {model: {measure: [P, K] values}}; every model has the same P prompts in the same order. A measure
            a model lacks (e.g. KL with a different tokenizer) is left out for that model.
        reference: The model differences are taken against.
        compared: Scores that get a win-rate matrix and a correlation with `length` (the proxy and the judges).
        seed: Seeds the bootstrap generator: the same seed gives the same intervals.
        resamples: Bootstrap replicates.
        confidence: Interval coverage.
    """
    models = list(scores)
    n_prompts, samples = as_matrix(scores[reference][next(iter(scores[reference]))]).shape
    indices = bootstrap_indices(n_prompts, resamples, np.random.default_rng(seed))
    analysis = Analysis(reference, n_prompts, samples, resamples, confidence)
    for model in models:
        analysis.summary[model] = {m: mean_estimate(v, indices, confidence) for m, v in scores[model].items()}
        if model != reference:
            shared = [m for m in scores[model] if m in scores[reference]]
            analysis.differences[model] = {
                m: difference_estimate(scores[model][m], scores[reference][m], indices, confidence) for m in shared
            }
        if "length" in scores[model]:
            analysis.length_correlation[model] = {
                name: correlation_estimate(scores[model][name], scores[model]["length"], indices, confidence)
                for name in compared
                if name in scores[model]
            }
    for name in compared:
        analysis.win_rates[name] = {
            a: {b: win_rate(scores[a][name], scores[b][name], indices, confidence) for b in models if b != a}
            for a in models
        }
    return analysis


def ratio_estimate(values: np.ndarray, indices: np.ndarray, confidence: float) -> Estimate:
    """Mean of the values that are defined (NaN: not applicable), with a bootstrap interval over prompts.

    Prompts are resampled whole, and each replicate is the mean over the defined values of its prompts (a ratio
    of sums), so a prompt where the measure applies to no response counts for nothing rather than as zero.

    Args:
        values: [P, K] per-response values, NaN where the measure does not apply.
        indices: [B, P] bootstrap prompt indices (`bootstrap_indices`).
        confidence: Interval coverage.
    """
    values = as_matrix(values)
    defined = np.isfinite(values)
    sums = np.where(defined, values, 0.0).sum(axis=1)
    counts = defined.sum(axis=1)
    n = int(counts.sum())
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = sums[indices].sum(axis=1) / counts[indices].sum(axis=1)
    low, high = percentile_interval(replicates, confidence)
    std = float(values[defined].std(ddof=1)) if n > 1 else 0.0
    return Estimate(float(sums.sum() / n), low, high, int((counts > 0).sum()), n, std)


def rule_estimates(
    rules: dict[str, dict[str, np.ndarray]],
    *,
    threshold: float,
    seed: int,
    resamples: int,
    confidence: float,
) -> dict[str, dict[str, dict[str, Estimate]]]:
    """Per-rule means and match rates (share of applicable responses scoring at least `threshold`) of one judge.

    Args:
        rules: {model: {rule: [P, K] scores, NaN where the rule does not apply}}.
        threshold: A rule score at or above it is a match.
        seed, resamples, confidence: As in `analyse`; the same seed resamples the same prompt sets.

    Returns:
        {model: {rule: {"mean": Estimate, "match": Estimate}}}.
    """
    first = next(iter(rules.values()))
    n_prompts = as_matrix(next(iter(first.values()))).shape[0]
    indices = bootstrap_indices(n_prompts, resamples, np.random.default_rng(seed))
    out: dict[str, dict[str, dict[str, Estimate]]] = {}
    for model, by_rule in rules.items():
        out[model] = {}
        for rule, values in by_rule.items():
            values = as_matrix(values)
            matched = np.where(np.isfinite(values), (values >= threshold).astype(np.float64), np.nan)
            out[model][rule] = {
                "mean": ratio_estimate(values, indices, confidence),
                "match": ratio_estimate(matched, indices, confidence),
            }
    return out
