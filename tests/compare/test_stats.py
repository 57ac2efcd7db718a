"""The compare statistics against independent computations on fixed responses (plain loops, hand counts)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from rlhf.compare import stats

# Four prompts, two samples each, for two models. Hand-made so that ties occur (the rules judge gives discrete scores).
A = np.array([[1.0, 0.5], [0.0, 0.0], [2.0, 1.0], [0.5, 0.5]])
B = np.array([[0.5, 0.5], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0]])


def indices(n_prompts: int, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    return stats.bootstrap_indices(n_prompts, resamples, np.random.default_rng(seed))


def test_mean_and_std_match_the_standard_library():
    est = stats.mean_estimate(A, indices(4), 0.95)
    flat = A.ravel().tolist()
    assert est.mean == pytest.approx(statistics.fmean(flat))  # 5.5 / 8 = 0.6875
    assert est.mean == pytest.approx(0.6875)
    assert est.std == pytest.approx(statistics.stdev(flat))
    assert (est.n_prompts, est.n_responses) == (4, 8)


def test_win_rates_count_ties_like_a_plain_loop():
    # Sample k of A against sample k of B on the same prompt (matched: they share the sampling seed), by hand:
    # prompt 0: (1, .5) W, (.5, .5) T -> win .5, tie .5
    # prompt 1: (0, 0) T,  (0, 1) L   -> tie .5, loss .5
    # prompt 2: (2, 1) W,  (1, 1) T   -> win .5, tie .5
    # prompt 3: (.5, .5) T, (.5, 0) W -> win .5, tie .5
    # Averaged over prompts: win 1.5/4 = .375, tie 2/4 = .5, loss .5/4 = .125; rate = .375 + .5/2 = .625.
    counts = {"win": 0, "tie": 0, "loss": 0}
    for p in range(4):
        for a, b in zip(A[p], B[p], strict=True):
            counts["win" if a > b else "loss" if a < b else "tie"] += 1
    rate = stats.win_rate(A, B, indices(4), 0.95)
    assert (rate.win, rate.tie, rate.loss) == pytest.approx((0.375, 0.5, 0.125))
    assert (rate.win, rate.tie, rate.loss) == pytest.approx(tuple(counts[k] / 8 for k in ("win", "tie", "loss")))
    assert rate.rate == pytest.approx(0.625)
    assert rate.low <= rate.rate <= rate.high
    assert (rate.n_prompts, rate.n_pairs) == (4, 8)
    reverse = stats.win_rate(B, A, indices(4), 0.95)
    assert (reverse.win, reverse.tie, reverse.loss) == pytest.approx((0.125, 0.5, 0.375))
    assert reverse.rate == pytest.approx(1 - rate.rate)
    assert stats.win_rate(A, A, indices(4), 0.95).tie == 1.0  # a model ties itself


def test_scores_closer_than_the_tolerance_tie():
    outcomes = stats.pairwise_outcomes(np.array([[1.0 + 1e-9]]), np.array([[1.0]]))
    assert outcomes.tolist() == [[0.0, 1.0, 0.0]]


def test_difference_is_paired_on_prompts():
    est = stats.difference_estimate(A, B, indices(4), 0.95)
    assert est.mean == pytest.approx(A.mean() - B.mean())  # 0.6875 - 0.5625


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_prompts():
    rng = np.random.default_rng(1)
    few = rng.normal(size=(20, 1))
    many = np.tile(few, (16, 1))  # the same distribution of prompt scores, 16 times the prompts
    small = stats.mean_estimate(few, indices(20), 0.95)
    large = stats.mean_estimate(many, indices(320), 0.95)
    for est in (small, large):
        assert est.low <= est.mean <= est.high
    assert large.mean == pytest.approx(small.mean)
    # The percentile interval's width falls like 1/sqrt(n): 16x the prompts gives about a quarter of the width.
    ratio = (large.high - large.low) / (small.high - small.low)
    assert 0.15 < ratio < 0.4


def test_bootstrap_is_seeded_and_wider_at_higher_confidence():
    first = stats.mean_estimate(A, indices(4, seed=7), 0.95)
    again = stats.mean_estimate(A, indices(4, seed=7), 0.95)
    assert (first.low, first.high) == (again.low, again.high)
    wide = stats.mean_estimate(A, indices(4, seed=7), 0.99)
    assert wide.low <= first.low and wide.high >= first.high


def test_win_rate_interval_contains_the_rate():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 2)), rng.normal(size=(50, 2)) - 0.5
    rate = stats.win_rate(a, b, indices(50), 0.95)
    assert rate.low <= rate.rate <= rate.high
    assert rate.rate > 0.5


def test_correlation_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 2))
    y = 2 * x + rng.normal(size=(30, 2))
    est = stats.correlation_estimate(x, y, indices(30), 0.95)
    assert est.mean == pytest.approx(np.corrcoef(x.ravel(), y.ravel())[0, 1])
    assert est.low <= est.mean <= est.high
    assert np.isnan(stats.pearson(np.ones(5), np.arange(5.0)))


def test_analyse_covers_every_model_and_measure():
    scores = {"sft": {"judge": B, "length": B * 10}, "ppo": {"judge": A, "length": A * 10, "kl": A}}
    analysis = stats.analyse(scores, "sft", compared=["judge"], seed=0, resamples=200)
    assert set(analysis.summary) == {"sft", "ppo"}
    assert set(analysis.differences) == {"ppo"}
    assert set(analysis.differences["ppo"]) == {"judge", "length"}  # kl is missing for the reference
    assert analysis.win_rates["judge"]["ppo"]["sft"].rate == pytest.approx(0.625)
    assert analysis.length_correlation["ppo"]["judge"].mean == pytest.approx(1.0)
    assert (analysis.n_prompts, analysis.samples_per_prompt) == (4, 2)


def test_ratio_estimate_leaves_out_values_that_do_not_apply():
    from rlhf.compare.stats import bootstrap_indices, ratio_estimate, rule_estimates

    values = np.array([[1.0, np.nan], [0.0, 0.0], [np.nan, np.nan], [1.0, 1.0]])
    indices = bootstrap_indices(4, 300, np.random.default_rng(0))
    est = ratio_estimate(values, indices, 0.95)
    assert est.mean == pytest.approx(3 / 5) and est.n_responses == 5 and est.n_prompts == 3
    assert 0.0 <= est.low <= est.mean <= est.high <= 1.0
    empty = ratio_estimate(np.full((3, 1), np.nan), indices[:, :3], 0.95)
    assert np.isnan(empty.mean) and empty.n_responses == 0
    rates = rule_estimates({"m": {"name": values * 0.6}}, threshold=0.5, seed=0, resamples=200, confidence=0.95)
    assert rates["m"]["name"]["match"].mean == pytest.approx(3 / 5)
    assert rates["m"]["name"]["mean"].mean == pytest.approx(0.36)
