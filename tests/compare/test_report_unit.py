"""The report builder alone, on synthetic scores: the files it writes, the tables in them, how numbers are printed.

No model runs here: `summarise` (the real results builder) turns hand-made per-sample measures into results.json's
content, and `write_report` writes report.md, report.html and the plots from it. With constant scores every mean,
interval, difference and win rate is known exactly, so the printed cells can be checked character for character.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from rlhf.compare.diversity import text_measures
from rlhf.compare.report import write_report
from rlhf.compare.run import summarise
from rlhf.recipe import validate_recipe

N_PROMPTS, K = 4, 2
# Per model: (rules score, KL to sft, length, EOS) for every sample; ppo beats sft on every prompt.
CONSTANT = {"sft": (0.2, 0.0, 10.0, 1.0), "ppo": (0.7, 1.5, 12.0, 0.5)}
REPLIES = {"sft": "Thanks for your message, we will help.", "ppo": "Sorry | that went wrong\x01, we are on it."}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    cfg = validate_recipe(
        {
            "stage": "compare",
            "output_dir": str(out),
            "models": [{"name": "sft", "path": "/m/sft"}, {"name": "ppo", "path": "/m/ppo"}],
            "prompts": {"path": "prompts.jsonl"},
            "judges": [{"name": "rules", "function": "brand_voice"}],
            "samples_per_prompt": K,
            "bootstrap_resamples": 100,
            "report_samples": 2,
        },
        base_dir=out,
    )
    prompts = [[{"role": "user", "content": f"question {i} | with a bar"}] for i in range(N_PROMPTS)]
    measures, records = {}, []
    for model, (rules, kl, length, eos) in CONSTANT.items():
        text = text_measures(REPLIES[model])
        values = {"rules": rules, "kl": kl, "length": length, "eos": eos, **text}
        measures[model] = {key: np.full((N_PROMPTS, K), value, dtype=np.float64) for key, value in values.items()}
        records += [
            {"model": model, "prompt_index": p, "sample": s, "response": REPLIES[model], **values}
            for p in range(N_PROMPTS)
            for s in range(K)
        ]
    generated = {
        "measures": measures,
        "records": records,
        "paths": {"sft": "/m/sft", "ppo": "/m/ppo"},
        "notes": [],
        "rules": {},
        "shares": [],
    }
    results, measures, samples = summarise(cfg, prompts, generated)
    html_path = write_report(out, results, measures, samples, {})
    return out, html_path, results


def test_files_are_written(report):
    out, html_path, _ = report
    assert html_path == out / "report.html"
    for name in ("score_distributions", "reward_vs_kl"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "plots" / "ppo_training_curves.png").exists()  # no ppo metrics were given
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 2  # the plots are embedded, not linked
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)


def test_markdown_tables_hold_the_numbers(report):
    out, _, results = report
    md = (out / "report.md").read_text()
    assert results["summary"]["ppo"]["rules"]["mean"] == pytest.approx(0.7)
    for heading in (
        "## Alarms",
        "## Summary (mean [interval] sd)",
        "## Difference to sft (paired)",
        "## Win rate on rules",
        "## Correlation with length, and diversity",
    ):
        assert heading in md, heading
    # Scores with 3 decimals, KL and EOS rate with 2, length with 1; constant samples give point intervals.
    assert "| sft (reference) | 0.200 [0.200, 0.200] sd 0.000 | 0.00 [0.00, 0.00] sd 0.00 |" in md
    assert "| 12.0 [12.0, 12.0] sd 0.0 |" in md and "| 0.50 [0.50, 0.50] sd 0.00 |" in md
    assert f"| {N_PROMPTS} x {K} |" in md
    # Differences are signed; ppo wins every matched sample against sft and loses every one the other way.
    assert "| ppo | +0.500 [+0.500, +0.500] | +1.50 [+1.50, +1.50] |" in md
    # Every length difference is the same, so the length-controlled rate (LC) is the raw rate.
    assert "| ppo | 1.00 [1.00, 1.00] (W 100% / T 0% / L 0%; LC 1.00 [1.00, 1.00]) | - |" in md
    assert "| sft | - | 0.00 [0.00, 0.00] (W 0% / T 0% / L 100%; LC 0.00 [0.00, 0.00]) |" in md


def test_model_text_is_escaped_in_both_formats(report):
    out, html_path, _ = report
    md = (out / "report.md").read_text()
    # A bar would split a Markdown cell; a control character becomes a visible middle dot.
    assert "Sorry \\| that went wrong\u00b7, we are on it." in md
    assert "\x01" not in md and "\x01" not in html_path.read_text()
    assert sum(f"**Prompt {i}:** question {i} \\| with a bar" in md for i in range(N_PROMPTS)) == 2  # report_samples
