"""The compare report's judge sections, from a synthetic comparison: summarise -> results.json -> report files.

No model runs here: two made-up models answer 20 prompts; sft serves every intent, ppo only half of them while the
proxy likes it more (a hacked policy). The numbers in the report must be the ones put in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlhf.compare.report import write_report
from rlhf.compare.run import summarise
from rlhf.config import CompareStage

P = 20


@pytest.fixture()
def comparison(tmp_path: Path):
    reward_dir = tmp_path / "reward"
    (reward_dir / "final").mkdir(parents=True)
    (reward_dir / "manifest.json").write_text(
        json.dumps(
            {
                "stage": "reward",
                "data": {"prefs_train.jsonl": "ab" * 32},
                "results": {
                    "eval_accuracy": 0.9,
                    "eval_pairs": 300,
                    "accuracy_by_category": {
                        "voice": {"accuracy": 0.99, "margin": 2.5, "n": 150},
                        "content_intent": {"accuracy": 0.55, "margin": 0.1, "n": 150},
                    },
                    "accuracy_by_rule": {
                        "voice/curt": {"accuracy": 0.99, "margin": 2.5, "n": 150},
                        "content_intent/wrong_order": {"accuracy": 0.52, "margin": 0.05, "n": 100},
                        "content_intent/vague": {"accuracy": 0.61, "margin": 0.2, "n": 50},
                    },
                },
            }
        )
    )
    cfg = CompareStage(
        stage="compare",
        output_dir=str(tmp_path / "compare"),
        models=[{"name": "sft", "path": "sft-dir"}, {"name": "ppo", "path": "ppo-dir"}],
        reference="sft",
        prompts={"path": str(tmp_path / "prompts.jsonl")},
        proxy=[{"name": "learned", "model": str(reward_dir / "final")}],
        judges=[
            {"name": "support_content", "function": "support_content"},
            {"name": "brand_voice", "function": "brand_voice"},
        ],
        bootstrap_resamples=200,
        report_samples=2,
    )
    rng = np.random.default_rng(0)
    signed = np.arange(P) % 2 == 0  # even prompts are signed
    serves = {"sft": np.ones(P), "ppo": (np.arange(P) % 4 < 2).astype(float)}  # ppo serves half the intents
    measures, rules, records = {}, {"support_content": {}}, []
    for model, proxy_shift in (("sft", 0.0), ("ppo", 2.0)):
        content = 0.5 + 0.5 * serves[model] - 0.01 * np.arange(P) / P
        measures[model] = {
            "proxy": rng.normal(proxy_shift, 0.2, P)[:, None],
            "support_content": content[:, None],
            "brand_voice": np.full((P, 1), 0.8),
            "length": np.full((P, 1), 40.0),
            "eos": np.ones((P, 1)),
            "kl": np.zeros((P, 1)) if model == "sft" else np.full((P, 1), 3.0),
        }
        name = np.where(signed, 1.0 if model == "sft" else 0.0, np.nan)
        rules["support_content"][model] = {
            "intent": serves[model][:, None],
            "name": name[:, None],
            "coherence": np.full((P, 1), 0.9),
        }
        for i in range(P):
            records.append(
                {
                    "model": model,
                    "prompt_index": i,
                    "sample": 0,
                    "response": f"{model} reply {i}",
                    **{key: float(v[i, 0]) for key, v in measures[model].items()},
                    "support_content/intent": float(serves[model][i]),
                    "support_content/name": None if np.isnan(name[i]) else float(name[i]),
                }
            )
    generated = {
        "measures": measures,
        "rules": rules,
        "records": records,
        "paths": {"sft": "sft-dir", "ppo": "ppo-dir"},
        "notes": [],
        "shares": [
            {"name": "learned", "role": "proxy", "source": "reward/final", "statement": "trained on the pairs"},
            {"name": "support_content", "role": "judge", "source": "support_content", "statement": "SHARED-A"},
            {"name": "brand_voice", "role": "judge", "source": "brand_voice", "statement": "not declared"},
        ],
    }
    prompts = [[{"role": "user", "content": f"message {i}"}] for i in range(P)]
    results, scores, samples = summarise(cfg, prompts, generated)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    write_report(out, results, scores, samples, {})
    return results, out


def test_results_carry_rule_means_match_rates_and_reward_accuracy(comparison):
    results, _ = comparison
    content = results["rules"]["support_content"]
    assert content["sft"]["intent"]["match"]["mean"] == 1.0
    assert content["ppo"]["intent"]["match"]["mean"] == 0.5
    low, high = content["ppo"]["intent"]["match"]["low"], content["ppo"]["intent"]["match"]["high"]
    assert low < 0.5 < high
    # The name rule applies to the signed half of the prompts only.
    assert content["ppo"]["name"]["match"]["n_responses"] == P // 2
    assert content["sft"]["name"]["mean"]["mean"] == 1.0 and content["ppo"]["name"]["mean"]["mean"] == 0.0
    assert content["ppo"]["coherence"]["mean"]["mean"] == pytest.approx(0.9)
    accuracy = results["reward_accuracy"]["learned"]
    assert accuracy["accuracy"] == 0.9 and accuracy["accuracy_by_category"]["content_intent"]["accuracy"] == 0.55
    assert accuracy["accuracy_by_rule"]["content_intent/wrong_order"]["n"] == 100
    json.dumps(results, allow_nan=False)  # strict JSON


def test_alarm_names_the_falling_judge(comparison):
    results, _ = comparison
    down = [a for a in results["alarms"] if a["kind"] == "proxy_up_judge_down"]
    assert [(a["model"], a["judge"]) for a in down] == [("ppo", "support_content")]


def test_failures_are_the_lowest_replies_next_to_the_reference(comparison):
    results, _ = comparison
    failures = results["failures"]
    assert results["failure_judge"] == "support_content"
    assert [f["model"] for f in failures] == ["ppo"] * 3
    worst = sorted(range(P), key=lambda i: (0.5 + 0.5 * (i % 4 < 2) - 0.01 * i / P, i))[:3]
    assert [f["prompt_index"] for f in failures] == worst
    assert set(failures[0]["responses"]) == {"ppo", "sft"}
    assert failures[0]["responses"]["sft"]["response"] == f"sft reply {worst[0]}"


def test_report_has_every_judge_section_with_the_numbers(comparison):
    results, out = comparison
    worst = results["failures"][0]["prompt_index"]
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for text in (
        "Intent match and name match",
        "Judges rule by rule",
        "What each judge shares with the training signal",
        "SHARED-A",
        "not declared",
        "Reward model held-out accuracy",
        "content_intent",
        "0.550",
        "Failures: the lowest replies on support_content",
        f"ppo reply {worst}",
        "proxy up, judge down",
    ):
        assert text in markdown, text
        assert text in page or text.replace("'", "&#x27;") in page, text
    # Each category's rules sit right under it in the reward-accuracy table.
    accuracy_table = markdown.split("## Reward model held-out accuracy")[1].split("\n## ")[0]
    lines = [line for line in accuracy_table.splitlines() if line.startswith("| ")]
    labels = [line.split("|")[1].strip() for line in lines]
    assert labels[labels.index("content_intent") + 1 : labels.index("content_intent") + 3] == [
        "content_intent/vague",
        "content_intent/wrong_order",
    ]
    assert labels[labels.index("voice") + 1] == "voice/curt"
    assert "| content_intent/wrong_order | 0.520 |" in accuracy_table
    match_table = markdown.split("## Intent match and name match")[1].split("## ")[0]
    assert "| ppo | 50%" in match_table and "| sft | 100%" in match_table
