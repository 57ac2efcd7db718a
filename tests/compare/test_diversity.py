"""Distinct-n and repeated n-grams on hand-counted texts."""

import pytest

from rlhf.compare import diversity


def test_distinct_n_by_hand():
    tokens = diversity.words("The tent, the TENT and the stove")  # the tent the tent and the stove
    assert tokens == ["the", "tent", "the", "tent", "and", "the", "stove"]
    assert diversity.distinct_n(tokens, 1) == pytest.approx(4 / 7)  # the, tent, and, stove
    # bigrams: the-tent, tent-the, the-tent, tent-and, and-the, the-stove -> 5 distinct of 6
    assert diversity.distinct_n(tokens, 2) == pytest.approx(5 / 6)


def test_repetition_counts_repeated_four_grams():
    looping = diversity.words("we will send it we will send it we will send it")
    # 9 four-grams, 4 distinct (we-will-send-it, will-send-it-we, send-it-we-will, it-we-will-send)
    assert diversity.repetition(looping) == pytest.approx(1 - 4 / 9)
    assert diversity.repetition(diversity.words("Happy trails, the Ridgeline team")) == 0.0


def test_too_short_or_empty_replies_repeat_nothing():
    assert diversity.distinct_n([], 2) == 1.0
    assert diversity.text_measures("") == {"distinct_1": 1.0, "distinct_2": 1.0, "repetition": 0.0}


def test_corpus_distinct_falls_when_replies_are_the_same():
    same = [diversity.words("thanks for waiting, your order ships today")] * 4
    varied = [
        diversity.words(t)
        for t in (
            "thanks for waiting",
            "your order ships today",
            "a refund is on its way",
            "happy trails from the team",
        )
    ]
    assert diversity.corpus_distinct_n(same, 2) == pytest.approx(0.25)
    assert diversity.corpus_distinct_n(varied, 2) == 1.0
