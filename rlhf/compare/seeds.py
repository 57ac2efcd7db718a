"""Statistics over several training seeds: pure functions of score arrays, no I/O, no configuration.

A model trained with S seeds and evaluated on the same P held-out prompts gives, per measure, an array [S, P, K]
(K samples per prompt). Two sources of variance lie in it: the seed (which trajectory training took) and the prompt.
The interval of a mean comes from a two-stage (hierarchical) bootstrap: draw S seeds with replacement, then for each
drawn seed draw P prompts with replacement, and average (Davison & Hinkley 1997, sec. 3.8, "case resampling at both
stages"; Field & Welsh 2007). Resampling both stages slightly over-states the prompt part of the variance, which
offsets the downward bias of resampling only a handful of seeds; with very few seeds (3) and a seed spread much larger
than the prompt noise, the interval still comes out narrower than nominal: read the per-seed rows next to it.

Every statistic of one analysis uses the same resampled seeds and prompts, so differences and win rates are paired
the same way as in `rlhf.compare.stats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rlhf.compare.stats import (
    TIE_TOLERANCE,
    Estimate,
    WinRate,
    as_matrix,
    bootstrap_indices,
    difference_estimate,
    mean_estimate,
    pairwise_outcomes,
    percentile_interval,
    win_rate,
)


@dataclass
class Flip:
    """A seed whose own conclusion disagrees with the pooled one.

    Attributes:
        seed: The seed's label.
        mean: Its own estimate (a difference, or a win rate).
        significant: Its own interval excludes the null value on the side opposite the pooled estimate; otherwise
            only its sign differs.
    """

    seed: str
    mean: float
    significant: bool


@dataclass
class SeedEstimate:
    """A mean (or a difference) over seeds and prompts.

    Attributes:
        pooled: The mean over every seed's responses, with the hierarchical interval (`n_prompts` per seed).
        prompt_low, prompt_high: The interval from resampling prompts only (seeds held fixed), for comparison: how
            much narrower the interval would look if the seeds were taken as given.
        seed_sd: Standard deviation of the per-seed means (NaN with one seed).
        per_seed: Each seed's own estimate, with its interval over prompts.
        flips: Seeds whose sign (against 0, for differences) disagrees with the pooled mean.
    """

    pooled: Estimate
    prompt_low: float
    prompt_high: float
    seed_sd: float
    per_seed: dict[str, Estimate] = field(default_factory=dict)
    flips: list[Flip] = field(default_factory=list)


@dataclass
class SeedWinRate:
    """A win rate over seeds and prompts (the fields of `SeedEstimate`, for `WinRate`; flips are against 0.5)."""

    pooled: WinRate
    prompt_low: float
    prompt_high: float
    seed_sd: float
    per_seed: dict[str, WinRate] = field(default_factory=dict)
    flips: list[Flip] = field(default_factory=list)


@dataclass
class SeedAnalysis:
    """Everything the study report states about one arm setting (see `analyse_seeds`)."""

    reference: str
    seeds: list[str]
    n_prompts: int
    samples_per_prompt: int
    resamples: int
    confidence: float
    summary: dict[str, dict[str, SeedEstimate]] = field(default_factory=dict)
    differences: dict[str, dict[str, SeedEstimate]] = field(default_factory=dict)
    win_rates: dict[str, dict[str, SeedWinRate]] = field(default_factory=dict)


@dataclass(frozen=True)
class HierarchicalIndices:
    """Bootstrap draws for S seeds x P prompts: `seeds` [B, S] seed indices, `prompts` [B, S, P] prompt indices (the
    prompts drawn for the s-th drawn seed)."""

    seeds: np.ndarray
    prompts: np.ndarray


def hierarchical_indices(n_seeds: int, n_prompts: int, resamples: int, rng: np.random.Generator) -> HierarchicalIndices:
    """Draws seeds with replacement, then prompts with replacement within each drawn seed."""
    seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    prompts = rng.integers(0, n_prompts, size=(resamples, n_seeds, n_prompts))
    return HierarchicalIndices(seeds, prompts)


def hierarchical_replicates(per_prompt: np.ndarray, indices: HierarchicalIndices) -> np.ndarray:
    """[B] bootstrap replicates of the grand mean of a [S, P] per-prompt measure (seeds, then prompts)."""
    return per_prompt[indices.seeds[:, :, None], indices.prompts].mean(axis=(1, 2))


def prompt_replicates(per_prompt: np.ndarray, indices: HierarchicalIndices) -> np.ndarray:
    """[B] replicates of the grand mean resampling prompts only: every seed once, its prompts drawn with replacement."""
    seeds = np.arange(per_prompt.shape[0])
    return per_prompt[seeds[None, :, None], indices.prompts].mean(axis=(1, 2))


def hierarchical_interval(
    per_prompt: np.ndarray, indices: HierarchicalIndices, confidence: float
) -> tuple[float, float, float, float]:
    """(low, high) of the two-stage bootstrap and (low, high) of the prompt-only bootstrap of a [S, P] measure."""
    low, high = percentile_interval(hierarchical_replicates(per_prompt, indices), confidence)
    prompt_low, prompt_high = percentile_interval(prompt_replicates(per_prompt, indices), confidence)
    return low, high, prompt_low, prompt_high


def _seed_sd(per_seed_means: np.ndarray) -> float:
    return float(per_seed_means.std(ddof=1)) if per_seed_means.size > 1 else float("nan")


def find_flips(pooled: float, per_seed: dict[str, tuple[float, float, float]], null: float) -> list[Flip]:
    """Seeds whose estimate lies on the other side of `null` from the pooled estimate.

    Args:
        pooled: The pooled estimate.
        per_seed: {seed: (mean, low, high)} of each seed's own estimate.
        null: The value of no effect (0 for a difference, 0.5 for a win rate).
    """
    side = np.sign(pooled - null)
    if side == 0:
        return []
    flips = []
    for seed, (mean, low, high) in per_seed.items():
        if np.sign(mean - null) == -side:
            significant = bool(high < null) if side > 0 else bool(low > null)
            flips.append(Flip(seed, float(mean), significant))
    return flips


def seed_mean(
    values: list[np.ndarray],
    seeds: list[str],
    indices: HierarchicalIndices,
    prompt_indices: np.ndarray,
    confidence: float,
) -> SeedEstimate:
    """Mean of a measure over seeds: hierarchical interval, seed sd, and each seed's own mean.

    Args:
        values: One [P, K] array per seed (the same P prompts, in the same order).
        seeds: The seeds' labels, in the same order.
        indices: Two-stage draws (`hierarchical_indices`) for S seeds and P prompts.
        prompt_indices: [B, P] draws for each seed's own interval (`rlhf.compare.stats.bootstrap_indices`).
        confidence: Interval coverage.
    """
    matrices = [as_matrix(v) for v in values]
    per_prompt = np.stack([m.mean(axis=1) for m in matrices])
    low, high, prompt_low, prompt_high = hierarchical_interval(per_prompt, indices, confidence)
    pooled_std = float(np.concatenate([m.ravel() for m in matrices]).std(ddof=1))
    pooled = Estimate(
        float(per_prompt.mean()), low, high, per_prompt.shape[1], sum(m.size for m in matrices), pooled_std
    )
    own = {seed: mean_estimate(m, prompt_indices, confidence) for seed, m in zip(seeds, matrices, strict=True)}
    return SeedEstimate(pooled, prompt_low, prompt_high, _seed_sd(per_prompt.mean(axis=1)), own)


def seed_difference(
    a: list[np.ndarray],
    b: list[np.ndarray],
    seeds: list[str],
    indices: HierarchicalIndices,
    prompt_indices: np.ndarray,
    confidence: float,
) -> SeedEstimate:
    """mean(a) - mean(b) over seeds, paired within seed and prompt; seeds whose own difference flips are listed."""
    gaps = [as_matrix(x).mean(axis=1) - as_matrix(y).mean(axis=1) for x, y in zip(a, b, strict=True)]
    per_prompt = np.stack(gaps)
    low, high, prompt_low, prompt_high = hierarchical_interval(per_prompt, indices, confidence)
    n_responses = sum(as_matrix(x).size + as_matrix(y).size for x, y in zip(a, b, strict=True))
    pooled = Estimate(float(per_prompt.mean()), low, high, per_prompt.shape[1], n_responses)
    own = {seed: difference_estimate(x, y, prompt_indices, confidence) for seed, x, y in zip(seeds, a, b, strict=True)}
    flips = find_flips(pooled.mean, {s: (e.mean, e.low, e.high) for s, e in own.items()}, 0.0)
    return SeedEstimate(pooled, prompt_low, prompt_high, _seed_sd(per_prompt.mean(axis=1)), own, flips)


def seed_win_rate(
    a: list[np.ndarray],
    b: list[np.ndarray],
    seeds: list[str],
    indices: HierarchicalIndices,
    prompt_indices: np.ndarray,
    confidence: float,
    tolerance: float = TIE_TOLERANCE,
) -> SeedWinRate:
    """Win rate of A against B (wins + ties/2, matched samples within a seed) over seeds, with the same intervals."""
    outcomes = np.stack([pairwise_outcomes(x, y, tolerance) for x, y in zip(a, b, strict=True)])  # [S, P, 3]
    per_prompt = outcomes[..., 0] + 0.5 * outcomes[..., 1]
    low, high, prompt_low, prompt_high = hierarchical_interval(per_prompt, indices, confidence)
    win, tie, loss = (float(x) for x in outcomes.mean(axis=(0, 1)))
    pairs = sum(as_matrix(x).size for x in a)
    pooled = WinRate(win, tie, loss, win + 0.5 * tie, low, high, per_prompt.shape[1], pairs)
    own = {seed: win_rate(x, y, prompt_indices, confidence, tolerance) for seed, x, y in zip(seeds, a, b, strict=True)}
    flips = find_flips(pooled.rate, {s: (w.rate, w.low, w.high) for s, w in own.items()}, 0.5)
    return SeedWinRate(pooled, prompt_low, prompt_high, _seed_sd(per_prompt.mean(axis=1)), own, flips)


def analyse_seeds(
    scores: dict[str, dict[str, dict[str, np.ndarray]]],
    reference: str,
    *,
    compared: list[str],
    seed: int,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> SeedAnalysis:
    """Means, differences to the reference and win rates against it, over seeds, for one arm setting.

    Args:
        scores: {seed label: {model: {measure: [P, K] values}}}; every seed has the same models, prompts and K.
        reference: The model differences and win rates are taken against.
        compared: Scores that get win rates (the proxy and the judges).
        seed: Seeds the bootstrap generator.
        resamples: Bootstrap replicates.
        confidence: Interval coverage.

    Raises:
        ValueError: The seeds do not share the same models, measures or prompts.
    """
    seeds = list(scores)
    first = scores[seeds[0]]
    models = list(first)
    for label in seeds[1:]:
        if list(scores[label]) != models:
            raise ValueError(f"seed {label} compares {list(scores[label])}, seed {seeds[0]} compares {models}")
    n_prompts, samples = as_matrix(first[reference][next(iter(first[reference]))]).shape
    for label in seeds:
        for model, measures in scores[label].items():
            for measure, values in measures.items():
                if as_matrix(values).shape != (n_prompts, samples):
                    raise ValueError(
                        f"seed {label}, {model}/{measure}: {as_matrix(values).shape} responses, expected "
                        f"{(n_prompts, samples)} (the same prompts and samples for every seed)"
                    )
    rng = np.random.default_rng(seed)
    indices = hierarchical_indices(len(seeds), n_prompts, resamples, rng)
    prompt_indices = bootstrap_indices(n_prompts, resamples, rng)
    out = SeedAnalysis(reference, seeds, n_prompts, samples, resamples, confidence)

    def column(model: str, measure: str) -> list[np.ndarray]:
        return [scores[label][model][measure] for label in seeds]

    for model in models:
        measures = [m for m in first[model] if all(m in scores[label][model] for label in seeds)]
        out.summary[model] = {
            m: seed_mean(column(model, m), seeds, indices, prompt_indices, confidence) for m in measures
        }
        if model == reference:
            continue
        shared = [m for m in measures if m in first[reference]]
        out.differences[model] = {
            m: seed_difference(column(model, m), column(reference, m), seeds, indices, prompt_indices, confidence)
            for m in shared
        }
    for name in compared:
        out.win_rates[name] = {
            model: seed_win_rate(
                column(model, name), column(reference, name), seeds, indices, prompt_indices, confidence
            )
            for model in models
            if model != reference and name in first[model]
        }
    return out
