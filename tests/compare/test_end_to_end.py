"""compare end to end on tiny models: a quick-form run writes the report, and its numbers check out.

The two models are the same embedded:tiny checkpoint loaded twice, so with one seed they must write the same replies:
every comparison ties and the KL between them is 0. The judge's mean is recomputed from responses.jsonl.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rlhf.cli import main
from rlhf.compare.command import PROXY_NAME as PROXY

PROMPTS = Path(__file__).resolve().parents[2] / "recipes" / "brand_voice" / "data" / "eval_prompts.jsonl"


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory) -> Path:
    """A randomly initialised one-logit classifier on the embedded tokenizer: a stand-in learned proxy."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.models.loading import resolve_model_path

    base = resolve_model_path("embedded:tiny")
    out = tmp_path_factory.mktemp("rm") / "final"
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def report_dir(reward_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "report"
    code = main(
        [
            "compare",
            "--models",
            "base=embedded:tiny",
            "other=embedded:tiny",
            "--prompts",
            str(PROMPTS),
            "--reward",
            str(reward_model),
            "--judge",
            "brand_voice",
            "support_content",
            "--out",
            str(out),
            "prompts.max_prompts=6",
            "rollout.max_new_tokens=10",
            "samples_per_prompt=2",
            "bootstrap_resamples=200",
            "batch_size=16",
        ]
    )
    assert code == 0
    return out


def test_outputs_exist_and_html_is_self_contained(report_dir):
    for name in (
        "report.md",
        "report.html",
        "results.json",
        "responses.jsonl",
        "recipe.yaml",
        "manifest.json",
        "plots/score_distributions.png",
        "plots/reward_vs_kl.png",
    ):
        assert (report_dir / name).is_file(), name
    assert (report_dir / "plots" / "score_distributions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert page.count("data:image/png;base64,") == 2  # no ppo model here, so no training curves
    markdown = (report_dir / "report.md").read_text()
    assert "## Win rate on brand_voice" in markdown and "plots/score_distributions.png" in markdown
    for title in (
        "## Intent match and name match",
        "## Judges rule by rule",
        "## What each judge shares with the training signal",
        "## Failures: the lowest replies on support_content",
    ):
        assert title in markdown and title.removeprefix("## ") in page, title


def test_content_judge_rules_match_rates_and_shares_are_reported(report_dir):
    from reward_models import brand_voice, support_content

    results = json.loads((report_dir / "results.json").read_text())
    rules = results["rules"]["support_content"]
    assert set(rules) == {"base", "other"} and "brand_voice" not in results["rules"]  # brand_voice has no explain
    assert set(rules["base"]) == set(support_content.RULE_WEIGHTS)
    intent = rules["base"]["intent"]
    # eval_prompts.jsonl records each prompt's intent, so the intent rule applies to every reply.
    assert intent["mean"]["n_responses"] == 12 and 0 <= intent["match"]["low"] <= intent["match"]["high"] <= 1
    shares = {s["name"]: s for s in results["shares"]}
    assert shares["support_content"]["statement"] == support_content.SHARES_WITH_TRAINING
    assert shares["brand_voice"]["statement"] == brand_voice.SHARES_WITH_TRAINING
    assert shares[PROXY]["role"] == "proxy" and shares["learned"]["statement"].startswith("trained on")
    failures = results["failures"]
    assert failures and {f["model"] for f in failures} == {"other"} and len(failures) <= 3
    lowest = min(r["support_content"] for r in _rows(report_dir) if r["model"] == "other")
    assert failures[0]["responses"]["other"]["support_content"] == lowest
    assert set(failures[0]["responses"]) == {"other", "base"}


def _rows(report_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (report_dir / "responses.jsonl").read_text().splitlines()]


def test_identical_models_tie_everywhere_with_zero_kl(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    assert (results["n_prompts"], results["samples_per_prompt"]) == (6, 2)
    assert results["reference"] == "base" and results["alarms"] == []
    for score in ("proxy", "brand_voice"):
        tie = results["win_rates"][score]["other"]["base"]
        assert (tie["win"], tie["tie"], tie["loss"], tie["rate"]) == (0.0, 1.0, 0.0, 0.5)
        assert results["differences"]["other"][score]["mean"] == 0.0
    assert abs(results["summary"]["other"]["kl"]["mean"]) < 1e-4
    assert results["summary"]["base"]["kl"]["mean"] == 0.0
    assert results["summary"]["other"]["proxy"]["n_responses"] == 12


def test_judge_mean_matches_an_independent_rescoring(report_dir):
    from reward_models.brand_voice import score

    results = json.loads((report_dir / "results.json").read_text())
    rows = [json.loads(line) for line in (report_dir / "responses.jsonl").read_text().splitlines()]
    prompts = [json.loads(line)["prompt"][-1]["content"] for line in PROMPTS.read_text().splitlines()[:6]]
    base = [r for r in rows if r["model"] == "base"]
    assert len(base) == 12
    rescored = score([prompts[r["prompt_index"]] for r in base], [r["response"] for r in base])
    assert results["summary"]["base"]["brand_voice"]["mean"] == pytest.approx(sum(rescored) / len(rescored))
    lengths = [r["length"] for r in base]
    assert results["summary"]["base"]["length"]["mean"] == pytest.approx(sum(lengths) / len(lengths))
