"""Pairwise judges: the position-swap protocol, planted plug-in preferences, and the model judge on embedded:tiny."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlhf.compare.pairwise import (
    agreement,
    judge_models,
    judge_pair,
    load_preference,
    outcome_win_rate,
    summarise,
)
from rlhf.compare.stats import bootstrap_indices
from rlhf.config import DEFAULT_RUBRIC
from rlhf.rewards.sources import RewardError

PROBE = "tests.compare.pairwise_probe"


def test_a_reply_wins_only_when_both_orders_prefer_it():
    table = {("x", "y"): 1.0, ("y", "x"): -1.0, ("p", "q"): 1.0, ("q", "p"): 1.0, ("s", "t"): 0.0, ("t", "s"): -2.0}

    def prefer(prompts, first, second):
        return [table[(a, b)] for a, b in zip(first, second, strict=True)]

    verdicts = judge_pair(prefer, ["?"] * 3, ["x", "p", "s"], ["y", "q", "t"])
    assert verdicts.outcome.tolist() == [1.0, 0.5, 0.5]  # consistent win; position bias; one order undecided
    assert verdicts.consistent.tolist() == [True, False, False]
    assert verdicts.first_chosen.tolist() == [1, 2, 0]


def test_a_position_reader_ties_everything_and_is_flagged():
    prefer = load_preference(f"{PROBE}:prefer_first")
    replies = {"a": ["short", "a longer reply"], "b": ["a longer one", "tiny"]}
    outcomes, diagnostics = judge_models(prefer, ["p1", "p2"], replies, (2, 1))
    assert np.all(outcomes["a"]["b"] == 0.5) and np.all(outcomes["b"]["a"] == 0.5)
    assert diagnostics["position_consistency"] == 0.0 and diagnostics["first_position"] == 1.0


def test_planted_plug_in_preferences_come_through():
    prefer = load_preference(f"{PROBE}:prefer_longer")
    rng = np.random.default_rng(0)
    p, k = 30, 2
    long_model = ["word " * int(n) for n in rng.integers(10, 20, p * k)]
    short_model = ["word " * int(n) for n in rng.integers(1, 9, p * k)]
    outcomes, diagnostics = judge_models(prefer, ["q"] * (p * k), {"long": long_model, "short": short_model}, (p, k))
    assert np.all(outcomes["long"]["short"] == 1.0) and np.all(outcomes["short"]["long"] == 0.0)
    assert diagnostics["position_consistency"] == 1.0 and diagnostics["first_position"] == 0.5
    rate = outcome_win_rate(outcomes["long"]["short"], bootstrap_indices(p, 200, rng), 0.95)
    assert (rate.rate, rate.low, rate.high, rate.n_pairs) == (1.0, 1.0, 1.0, p * k)


def test_win_rates_and_agreement_skip_unjudged_pairs():
    outcomes = np.array([[1.0, np.nan], [0.5, 0.0], [np.nan, np.nan]])
    rate = outcome_win_rate(outcomes, bootstrap_indices(3, 200, np.random.default_rng(0)), 0.95)
    assert (rate.win, rate.tie, rate.loss, rate.rate) == pytest.approx((1 / 3, 1 / 3, 1 / 3, 0.5))
    assert rate.n_prompts == 2 and rate.n_pairs == 3
    ours = {"a": {"b": outcomes}, "b": {"a": 1 - outcomes}}
    theirs = {"a": {"b": np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])}}
    found = agreement(ours, theirs, bootstrap_indices(3, 200, np.random.default_rng(0)), 0.95)
    assert found.mean == 0.5 and found.n_responses == 2  # ties and unjudged pairs left out: one agrees, one not


def test_summarise_calls_a_position_reader_untrustworthy():
    p = 40
    prefer = load_preference(f"{PROBE}:prefer_first")
    replies = {"a": [f"a{i}" for i in range(p)], "b": [f"b{i}" for i in range(p)]}
    outcomes, diagnostics = judge_models(prefer, ["q"] * p, replies, (p, 1))
    judged = {"first": {"kind": "function", "outcomes": outcomes, "lengths": {}, "diagnostics": diagnostics}}
    found = summarise(judged, {}, None, bootstrap_indices(p, 200, np.random.default_rng(0)), 0.95)
    assert found["pairwise"]["first"]["trust"].startswith("not trustworthy")
    assert found["win_rates"]["first"]["a"]["b"].rate == 0.5


def test_a_plug_in_must_name_its_function():
    with pytest.raises(RewardError, match="package.module:function"):
        load_preference("pairwise_probe")
    with pytest.raises(RewardError, match="no function"):
        load_preference(f"{PROBE}:missing")


@pytest.fixture(scope="module")
def model_judge():
    from rlhf.compare.model_judge import ModelJudge

    return ModelJudge("embedded:tiny", DEFAULT_RUBRIC, "float32", batch_size=8)


def test_the_model_judge_ties_a_reply_offered_against_itself(model_judge):
    prompts = ["Where is my order #123? - Sam", "Can I return the kayak paddle?", "My zip broke.", "Hello"]
    replies = ["Hi Sam, it ships today.", "Yes, within 30 days.", "Sorry to hear that, we will replace it.", "Hi!"]
    verdicts = judge_pair(model_judge, prompts, replies, replies)
    assert verdicts.outcome.tolist() == [0.5] * len(replies)  # never a win for either position
    preferences = model_judge(prompts, replies, replies)
    assert all(np.isfinite(preferences)) and any(abs(v) > 0 for v in preferences)  # the judge does read something


def test_the_model_judge_judges_different_replies_in_both_orders(model_judge):
    prompts = ["Where is my order #123? - Sam"] * 3
    first = ["Hi Sam, your order ships today.", "no", "Thanks for waiting, Sam."]
    second = ["We cannot help.", "Hi Sam, it is on its way and arrives Friday.", "ok"]
    outcomes, diagnostics = judge_models(model_judge, prompts, {"x": first, "y": second}, (3, 1))
    assert set(outcomes["x"]["y"].ravel()) <= {0.0, 0.5, 1.0}
    assert np.array_equal(outcomes["y"]["x"], 1 - outcomes["x"]["y"])
    assert 0.0 <= diagnostics["position_consistency"] <= 1.0 and diagnostics["pairs"] == 3


def compare_recipe(**extra) -> dict:
    return {
        "stage": "compare",
        "output_dir": "/tmp/never",
        "models": [{"name": "sft", "path": "/m/sft"}, {"name": "ppo", "path": "/m/ppo"}],
        "prompts": {"path": "prompts.jsonl"},
        "judges": [{"name": "rules", "function": "brand_voice"}],
        **extra,
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"pairwise_judges": [{"name": "j"}]}, "exactly one of `model`, `function` or `human`"),
        (
            {"pairwise_judges": [{"name": "j", "function": f"{PROBE}:prefer_first", "rubric": "{prompt}"}]},
            "model judges",
        ),
        (
            {"pairwise_judges": [{"name": "j", "model": "embedded:tiny", "rubric": "{prompt} {first}"}]},
            "exactly the fields",
        ),
        ({"pairwise_judges": [{"name": "rules", "function": f"{PROBE}:prefer_first"}]}, "used twice"),
        ({"human_export": {"models": ["sft"]}}, "human_export.models: 'sft'"),
        ({"human_export": {"models": ["dpo"]}}, "human_export.models: 'dpo'"),
    ],
)
def test_pairwise_and_human_export_settings_are_checked(extra, message):
    from pydantic import ValidationError

    from rlhf.config import CompareStage

    with pytest.raises(ValidationError, match=message):
        CompareStage.model_validate(compare_recipe(**extra))
    rubric = "Q: {prompt}\nA: {first}\nB: {second}\nAnswer:"
    custom = CompareStage.model_validate(
        compare_recipe(pairwise_judges=[{"name": "j", "model": "embedded:tiny", "rubric": rubric}])
    )
    assert custom.pairwise_judges[0].rubric == rubric


def test_a_pipeline_model_judge_may_be_an_earlier_stage():
    from rlhf.pipeline import resolve_references
    from rlhf.recipe import load_recipe

    pipeline = load_recipe(
        Path(__file__).resolve().parents[2] / "recipes" / "brand_voice" / "pipeline.yaml",
        [
            "run_dir=/tmp/run",
            "compare.pairwise_judges=[{name: a, model: 'stage:sft'}, {name: b, model: 'stage:sft.base'}]",
        ],
    )
    stage = resolve_references(pipeline.compare, pipeline)
    assert [j.model for j in stage.pairwise_judges] == ["/tmp/run/sft/final", pipeline.sft.model.name_or_path]


def test_a_judge_that_agrees_with_gold_through_length_is_said_to_pay_for_length():
    rng = np.random.default_rng(0)
    p = 60
    words = {"long": rng.integers(5, 30, p), "short": rng.integers(1, 26, p)}
    replies = {m: ["w " * int(n) for n in counts] for m, counts in words.items()}
    outcomes, diagnostics = judge_models(load_preference(f"{PROBE}:prefer_longer"), ["q"] * p, replies, (p, 1))
    difference = (words["long"] - words["short"]).astype(float)[:, None]
    lengths = {"long": {"short": difference}, "short": {"long": -difference}}
    judged = {"longer": {"kind": "function", "outcomes": outcomes, "lengths": lengths, "diagnostics": diagnostics}}
    gold = {"gold": outcomes}  # a gold judge that also prefers the longer reply
    found = summarise(judged, gold, "gold", bootstrap_indices(p, 300, np.random.default_rng(1)), 0.95)
    details = found["pairwise"]["longer"]
    assert details["agreement"]["gold"].mean == 1.0
    assert details["trust"].startswith("usable") and "pays for length" in details["trust"]
    assert details["length_gap"] >= 0.1
    controlled = found["length_controlled"]["longer"]["long"]["short"]
    assert controlled.raw > 0.6 and controlled.low < 0.5 < controlled.high
