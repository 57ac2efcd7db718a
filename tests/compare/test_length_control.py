"""Length-controlled win rates on synthetic judgements with a known length bias and a known quality effect."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf.compare.length_control import (
    length_controlled,
    length_controlled_matrix,
    score_matrices,
    score_outcomes,
)
from rlhf.compare.stats import bootstrap_indices

P, K = 300, 2


def judgements(quality: float, length_bias: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A writes longer replies than B; the judge's preference is sigmoid(quality + bias * tanh(d / sd(d)))."""
    rng = np.random.default_rng(seed)
    difference = rng.normal(80, 20, (P, K)) - rng.normal(50, 20, (P, K))
    logit = quality + length_bias * np.tanh(difference / difference.std())
    wins = (rng.random((P, K)) < 1 / (1 + np.exp(-logit))).astype(float)
    return wins, difference


def indices(seed: int = 1) -> np.ndarray:
    return bootstrap_indices(P, 1000, np.random.default_rng(seed))


def test_a_judge_that_prefers_longer_replies_only_gives_half_at_equal_length():
    wins, difference = judgements(quality=0.0, length_bias=3.0)
    found = length_controlled(wins, difference, indices(), 0.95)
    assert found.raw > 0.7  # the raw rate says A is much better...
    assert found.low < 0.5 < found.high  # ...at equal length there is no preference
    assert abs(found.rate - 0.5) < 0.08
    assert found.slope > 1.0 and found.n_pairs == P * K and found.n_prompts == P


def test_a_real_quality_effect_survives_length_control():
    wins, difference = judgements(quality=1.5, length_bias=3.0)
    found = length_controlled(wins, difference, indices(), 0.95)
    assert found.low > 0.5  # better at equal length: the interval excludes 0.5
    assert found.rate < found.raw  # part of the raw margin was length
    assert abs(found.rate - 1 / (1 + np.exp(-1.5))) < 0.1


def test_without_length_bias_the_controlled_rate_stays_near_the_raw_rate():
    wins, difference = judgements(quality=1.0, length_bias=0.0)
    found = length_controlled(wins, difference, indices(), 0.95)
    assert abs(found.slope) < 0.6
    assert found.low < found.raw < found.high


def test_ties_count_half_and_equal_lengths_leave_the_raw_rate():
    outcomes = np.array([[1.0, 0.5], [0.5, 0.0], [1.0, 1.0]])
    found = length_controlled(
        outcomes, np.zeros_like(outcomes), bootstrap_indices(3, 200, np.random.default_rng(0)), 0.9
    )
    assert found.raw == pytest.approx(4 / 6)
    assert found.rate == pytest.approx(4 / 6, abs=1e-3)  # only the intercept is left: the mean outcome
    assert found.slope == 0.0 and found.length_sd == 0.0


def test_perfectly_separated_judgements_give_a_finite_fit():
    difference = np.linspace(-50, 50, 40)[:, None]
    outcomes = (difference > 0).astype(float)  # the longer reply always wins
    found = length_controlled(outcomes, difference, bootstrap_indices(40, 200, np.random.default_rng(0)), 0.95)
    assert np.isfinite([found.rate, found.low, found.high, found.slope]).all()
    assert found.low < 0.5 < found.high and found.slope > 5


def test_unjudged_pairs_are_left_out():
    wins, difference = judgements(quality=0.0, length_bias=3.0)
    holes = wins.copy()
    holes[::2, 1] = np.nan
    found = length_controlled(holes, difference, indices(), 0.95)
    assert found.n_pairs == P * K - P // 2
    empty = length_controlled(np.full((4, 1), np.nan), np.zeros((4, 1)), indices()[:, :4] % 4, 0.95)
    assert empty.n_pairs == 0 and np.isnan(empty.rate)


def test_score_outcomes_match_the_win_rate_tie_rule():
    a = np.array([[1.0, 0.3], [0.2, np.nan]])
    b = np.array([[0.5, 0.3 + 1e-9], [0.4, 0.1]])
    assert np.array_equal(score_outcomes(a, b), np.array([[1.0, 0.5], [0.0, np.nan]]), equal_nan=True)


def test_the_mirrored_pair_is_the_refit_of_the_flipped_data():
    rng = np.random.default_rng(3)
    measures = {
        m: {"judge": rng.normal(size=(60, 2)), "length": rng.integers(5, 60, (60, 2)).astype(float)} for m in "ab"
    }
    measures["a"]["judge"] += 0.02 * measures["a"]["length"]  # the judge pays for length
    outcomes, lengths = score_matrices(measures, "judge")
    draws = bootstrap_indices(60, 300, np.random.default_rng(0))
    matrix = length_controlled_matrix(outcomes, lengths, draws, 0.95)
    direct = length_controlled(outcomes["b"]["a"], lengths["b"]["a"], draws, 0.95)
    mirrored = matrix["b"]["a"]
    assert mirrored.rate == pytest.approx(direct.rate, abs=1e-6)
    assert mirrored.low == pytest.approx(direct.low, abs=1e-6)
    assert mirrored.high == pytest.approx(direct.high, abs=1e-6)
    assert mirrored.slope == pytest.approx(direct.slope, abs=1e-6)
