"""compare with several samples per prompt on two *different* models: matched samples, win rates and means that can
be recomputed from responses.jsonl.

embedded:tiny against a copy with perturbed weights, 4 prompts x 3 samples. With two models that differ the
comparisons do not all tie, so a wrong matching of samples (sample k of one model against another sample of the
other), a mean taken over the wrong axis or samples that are copies of each other all change a number checked here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from rlhf.cli import main
from rlhf.compare.stats import TIE_TOLERANCE

PROMPTS = Path(__file__).resolve().parents[2] / "recipes" / "brand_voice" / "data" / "eval_prompts.jsonl"
N_PROMPTS, K = 4, 3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.models.loading import resolve_model_path

    base = resolve_model_path("embedded:tiny")
    root = tmp_path_factory.mktemp("multi")
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    proxy = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    proxy.config.pad_token_id = tokenizer.pad_token_id
    proxy.save_pretrained(root / "rm")
    tokenizer.save_pretrained(root / "rm")
    other = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.2 * torch.randn_like(p))
    other.save_pretrained(root / "other")
    tokenizer.save_pretrained(root / "other")
    out = root / "report"
    code = main(
        [
            "compare",
            "--models",
            f"base={base}",
            f"other={root / 'other'}",
            "--prompts",
            str(PROMPTS),
            "--reward",
            str(root / "rm"),
            "--judge",
            "brand_voice",
            "--out",
            str(out),
            f"prompts.max_prompts={N_PROMPTS}",
            "rollout.max_new_tokens=10",
            f"samples_per_prompt={K}",
            "bootstrap_resamples=200",
        ]
    )
    assert code == 0
    return out


def _scores(report_dir: Path) -> dict[str, dict[tuple[int, int], dict]]:
    by_model = defaultdict(dict)
    for line in (report_dir / "responses.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_model[row["model"]][(row["prompt_index"], row["sample"])] = row
    return by_model


def test_every_prompt_has_k_distinct_samples_per_model(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    assert (results["n_prompts"], results["samples_per_prompt"]) == (N_PROMPTS, K)
    rows = _scores(report_dir)
    for model in ("base", "other"):
        assert sorted(rows[model]) == [(p, s) for p in range(N_PROMPTS) for s in range(K)]
        assert results["summary"][model]["proxy"]["n_responses"] == N_PROMPTS * K
    # Samples of one prompt are separate draws, not one reply repeated.
    assert any(len({rows["base"][(p, s)]["response"] for s in range(K)}) > 1 for p in range(N_PROMPTS))


@pytest.mark.parametrize("score", ["proxy", "brand_voice"])
def test_win_rates_and_means_match_the_matched_samples(report_dir, score):
    results = json.loads((report_dir / "results.json").read_text())
    rows = _scores(report_dir)
    keys = sorted(rows["base"])
    gaps = [rows["other"][key][score] - rows["base"][key][score] for key in keys]
    win = sum(g > TIE_TOLERANCE for g in gaps) / len(gaps)
    tie = sum(abs(g) <= TIE_TOLERANCE for g in gaps) / len(gaps)
    found = results["win_rates"][score]["other"]["base"]
    assert (found["win"], found["tie"]) == (pytest.approx(win), pytest.approx(tie))
    assert found["rate"] == pytest.approx(win + tie / 2)
    mirrored = results["win_rates"][score]["base"]["other"]
    assert mirrored["win"] == pytest.approx(found["loss"]) and mirrored["rate"] == pytest.approx(1 - found["rate"])
    assert results["differences"]["other"][score]["mean"] == pytest.approx(sum(gaps) / len(gaps))
    for model in ("base", "other"):
        values = [rows[model][key][score] for key in keys]
        assert results["summary"][model][score]["mean"] == pytest.approx(sum(values) / len(values))


def test_the_models_really_differ(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    rows = _scores(report_dir)
    assert results["win_rates"]["proxy"]["other"]["base"]["tie"] < 1.0  # not a model against itself
    kl = [rows["other"][key]["kl"] for key in sorted(rows["other"])]
    assert all(k != 0.0 for k in kl) and results["summary"]["other"]["kl"]["mean"] == pytest.approx(sum(kl) / len(kl))
    assert results["summary"]["base"]["kl"]["mean"] == 0.0
