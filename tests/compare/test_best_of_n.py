"""best-of-n arms in compare: the choice and the KL maths by hand, the recipe keys, and a real run on embedded:tiny.

The run: embedded:tiny answers 6 prompts x 2 samples; its best-of-1 and best-of-4 arms are re-ranked by a seeded
one-output reward model (the proxy). Checked: both arms are report rows like any model; best-of-4's reply scores at
least best-of-1's on every matched sample (its candidates include best-of-1's only candidate); the measured KL of
best-of-1 is 0 and best-of-4's is positive and at most log 4 - 3/4; the report shows the analytic value beside it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from rlhf.compare.best_of_n import choose, kl_bound, measured_kl
from rlhf.config import CompareStage

PROMPTS = Path(__file__).resolve().parents[2] / "recipes" / "brand_voice" / "data" / "eval_prompts.jsonl"


# ---- The maths, by hand.


def test_kl_bound_hand_values():
    assert kl_bound(1) == 0.0
    assert kl_bound(4) == pytest.approx(math.log(4) - 0.75)  # 0.63629
    assert kl_bound(16) == pytest.approx(2.772589 - 0.9375, abs=1e-6)


def test_choose_takes_the_best_of_the_first_n_and_the_first_of_equal_ones():
    rewards = np.array([[1.0, 3.0, 2.0, 5.0], [2.0, 2.0, 1.0, 0.0]])
    assert choose(rewards, 2).tolist() == [1, 0]
    assert choose(rewards, 4).tolist() == [3, 0]
    assert choose(rewards, 1).tolist() == [0, 0]
    with pytest.raises(ValueError, match="1 <= n <= 4"):
        choose(rewards, 5)


def test_measured_kl_hand_values():
    # Four distinct rewards, n = 2: F = 1/4, 2/4, 3/4, 1; P_2 = F^2 - F(-)^2 = 1/16, 3/16, 5/16, 7/16; P = 1/4 each.
    # KL = sum P_2 log(4 P_2) = (-0.086643) + (-0.053941) + 0.069732 + 0.244832 = 0.173980.
    expected = sum(p * math.log(4 * p) for p in (1 / 16, 3 / 16, 5 / 16, 7 / 16))
    assert measured_kl(np.array([[4.0, 1.0, 3.0, 2.0]]), 2)[0] == pytest.approx(expected)
    assert expected == pytest.approx(0.173980, abs=1e-6) and expected < kl_bound(2)  # bound: log 2 - 1/2 = 0.19315
    # Ties merge into one outcome: {0: 2 of 4, 1: 2 of 4}; P_2(0) = 1/4, P_2(1) = 1 - 1/4 = 3/4.
    # KL = 1/4 log(1/2) + 3/4 log(3/2) = -0.173287 + 0.304099 = 0.130812.
    assert measured_kl(np.array([[0.0, 1.0, 1.0, 0.0]]), 2)[0] == pytest.approx(0.130812, abs=1e-6)


def test_measured_kl_is_zero_for_equal_rewards_and_for_n_one():
    rewards = np.array([[0.5, 0.5, 0.5], [1.0, 2.0, 3.0]])
    assert measured_kl(rewards, 3).tolist()[0] == 0.0
    assert measured_kl(rewards, 1).tolist() == [0.0, 0.0]


def test_measured_kl_approaches_the_analytic_value_from_below():
    rewards = np.random.default_rng(0).normal(size=(3, 4000))
    for n in (4, 16):
        kl = measured_kl(rewards, n)
        assert (kl <= kl_bound(n) + 1e-12).all()
        assert kl == pytest.approx(kl_bound(n), abs=0.01)


# ---- Recipe keys.


def compare(**fields) -> CompareStage:
    return CompareStage.model_validate(
        {
            "stage": "compare",
            "output_dir": "/tmp/unused",
            "models": [{"name": "base", "path": "embedded:tiny"}, {"name": "sft", "path": "embedded:tiny"}],
            "reference": "sft",
            "prompts": {"path": str(PROMPTS)},
            "proxy": [{"name": "rules", "function": "brand_voice"}],
            "judges": [{"name": "content", "function": "support_content"}],
            **fields,
        }
    )


def test_best_of_n_arms_follow_their_model_and_default_to_the_reference():
    cfg = compare(best_of_n={"n": [1, 4, 16]})
    assert cfg.best_of_n_model() == "sft"
    assert cfg.best_of_n_arms() == {"sft-bo1": 1, "sft-bo4": 4, "sft-bo16": 16}
    assert cfg.arm_names() == ["base", "sft", "sft-bo1", "sft-bo4", "sft-bo16"]
    assert compare(best_of_n={"model": "base"}).arm_names() == ["base", "base-bo4", "base-bo16", "sft"]
    assert compare().arm_names() == ["base", "sft"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"best_of_n": {"n": [4]}, "proxy": []}, "add a `proxy`"),
        ({"best_of_n": {"model": "ppo"}}, "best_of_n.model 'ppo' is not one of the models"),
        ({"best_of_n": {"n": [4, 4]}}, "lists a value twice"),
        ({"best_of_n": {"n": [0]}}, "greater than 0"),
        (
            {
                "best_of_n": {"n": [4]},
                "models": [{"name": "sft", "path": "embedded:tiny"}, {"name": "sft-bo4", "path": "embedded:tiny"}],
            },
            "has the name of a compared model",
        ),
    ],
)
def test_bad_best_of_n_settings_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        compare(**fields)


# ---- A real run.


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    import torch
    import yaml
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.cli import main
    from rlhf.models.loading import resolve_model_path

    base = resolve_model_path("embedded:tiny")
    root = tmp_path_factory.mktemp("best_of_n")
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    proxy = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    proxy.config.pad_token_id = tokenizer.pad_token_id
    proxy.save_pretrained(root / "rm")
    tokenizer.save_pretrained(root / "rm")
    recipe = root / "compare.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "stage": "compare",
                "output_dir": str(root / "report"),
                "models": [{"name": "tiny", "path": base}],
                "prompts": {"path": str(PROMPTS), "max_prompts": 6},
                "proxy": [{"name": "learned", "model": str(root / "rm")}],
                "judges": [{"name": "brand_voice", "function": "brand_voice"}],
                "rollout": {"max_new_tokens": 10},
                "samples_per_prompt": 2,
                "bootstrap_resamples": 200,
                "best_of_n": {"n": [1, 4]},
                "tracking": {"report_to": ["none"]},
            }
        )
    )
    assert main(["run", str(recipe)]) == 0
    return root / "report"


@pytest.mark.slow
def test_best_of_n_arms_are_report_rows_with_their_kl(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    assert list(results["models"]) == ["tiny", "tiny-bo1", "tiny-bo4"]
    assert list(results["summary"]) == ["tiny", "tiny-bo1", "tiny-bo4"]
    assert set(results["differences"]) == {"tiny-bo1", "tiny-bo4"}
    bo1, bo4 = results["best_of_n"]["tiny-bo1"], results["best_of_n"]["tiny-bo4"]
    assert (bo1["n"], bo1["candidates"], bo1["model"]) == (1, 4, "tiny")
    assert bo1["kl_bound"] == 0.0 and bo4["kl_bound"] == pytest.approx(math.log(4) - 0.75)
    assert bo1["kl_measured"]["mean"] == 0.0
    assert 0 < bo4["kl_measured"]["mean"] <= bo4["kl_bound"]
    # The sampling model is the reference: the arm's KL to the reference is its KL to the model.
    assert results["summary"]["tiny-bo4"]["kl"]["mean"] == pytest.approx(bo4["kl_measured"]["mean"])
    report = (report_dir / "report.md").read_text()
    assert "## Best-of-n" in report and "| tiny-bo4 | 4 | tiny |" in report
    assert f"{bo4['kl_bound']:.3f}" in report
    assert "tiny-bo4" in (report_dir / "report.html").read_text()


@pytest.mark.slow
def test_best_of_four_never_scores_below_best_of_one(report_dir):
    rows = [json.loads(line) for line in (report_dir / "responses.jsonl").read_text().splitlines()]
    by_arm = {}
    for row in rows:
        by_arm.setdefault(row["model"], {})[(row["prompt_index"], row["sample"])] = row
    assert len(by_arm["tiny-bo4"]) == len(by_arm["tiny-bo1"]) == 12
    # Best-of-1 is candidate 0; best-of-4 the best of candidates 0-3: never lower (up to batching noise).
    for key, one in by_arm["tiny-bo1"].items():
        assert by_arm["tiny-bo4"][key]["proxy"] >= one["proxy"] - 1e-4, key
    mean = {arm: np.mean([r["proxy"] for r in by_arm[arm].values()]) for arm in by_arm}
    assert mean["tiny-bo4"] > mean["tiny-bo1"]
