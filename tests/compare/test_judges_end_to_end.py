"""`rlhf compare` with pairwise judges and a human-evaluation round trip, end to end on embedded:tiny.

The second model is embedded:tiny with its weights perturbed, so the two write different replies. The first run
exports the blinded sheet and runs a model judge (embedded:tiny itself) and a plug-in judge; two raters fill the sheet
programmatically; the second run, with the same seed and settings, ingests it as the judge 'people'.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rlhf.cli import main

PROMPTS = Path(__file__).resolve().parents[2] / "recipes" / "brand_voice" / "data" / "eval_prompts.jsonl"
PLUG = "tests.compare.pairwise_probe:prefer_longer"
SETTINGS = [
    "prompts.max_prompts=8",
    "rollout.max_new_tokens=12",
    "samples_per_prompt=2",
    "bootstrap_resamples=200",
    "batch_size=16",
]


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models.loading import resolve_model_path

    base = resolve_model_path("embedded:tiny")
    out = tmp_path_factory.mktemp("perturbed") / "final"
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def compare(out: Path, other: Path, *extra: str, flags: tuple[str, ...] = ()) -> int:
    return main(
        [
            "compare",
            *flags,
            "--models",
            "base=embedded:tiny",
            f"other={other}",
            "--prompts",
            str(PROMPTS),
            "--judge",
            "support_content",
            "--out",
            str(out),
            *SETTINGS,
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def first_run(perturbed, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("first") / "report"
    judges = f'pairwise_judges=[{{name: lm, model: "embedded:tiny"}}, {{name: plug, function: "{PLUG}"}}]'
    assert (
        compare(out, perturbed, judges, "human_export.items=6", "human_export.repeats=2", flags=("--export-human",))
        == 0
    )
    return out


def test_pairwise_and_length_controlled_rates_are_reported(first_run):
    results = json.loads((first_run / "results.json").read_text())
    assert results["pairwise_judges"] == ["lm", "plug"]
    for score in ("support_content", "lm", "plug"):
        lc = results["length_controlled"][score]["other"]["base"]
        assert lc["n_pairs"] == 16 and 0 <= lc["rate"] <= 1
        assert results["win_rates"][score]["other"]["base"]["n_pairs"] == 16
    lm = results["pairwise"]["lm"]
    assert lm["kind"] == "model" and 0 <= lm["position_consistency"] <= 1 and lm["trust"]
    assert set(lm["agreement"]) == {"support_content", "plug"}
    assert results["pairwise"]["plug"]["position_consistency"] == 1.0  # a length rule does not read positions
    report = (first_run / "report.md").read_text()
    assert "## Pairwise judges: how far to trust them" in report and "## Win rate on lm" in report
    assert "LC " in report and "lm: " in report


def test_human_round_trip_through_compare(first_run, perturbed, tmp_path):
    key = json.loads((first_run / "human" / "key.json").read_text())
    items = {item["item"]: item for item in key["items"]}
    with (first_run / "human" / "sheet.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(items) > 0
    sheets = []
    for rater, favourite in (("ann", "other"), ("ben", "base")):
        path = tmp_path / f"{rater}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["item", "choice", "rater"])
            writer.writeheader()
            for row in rows:
                side = "1" if items[row["item"]]["model_1"] == favourite else "2"
                writer.writerow({"item": row["item"], "choice": side, "rater": rater})
        sheets.append(str(path))
    out = tmp_path / "second"
    people = f"pairwise_judges=[{{name: people, human: {{key: {first_run / 'human' / 'key.json'}, sheets: {sheets}}}}}]"
    assert compare(out, perturbed, people) == 0
    results = json.loads((out / "results.json").read_text())
    shown = sum(item["repeat_of"] is None for item in items.values())
    tied = len(key["identical"])
    rate = results["win_rates"]["people"]["other"]["base"]
    assert rate["n_pairs"] == 2 * (shown + tied)  # every rater's verdict on every original item
    assert rate["rate"] == pytest.approx(0.5)  # ann always for other, ben always for base
    assert rate["win"] == pytest.approx(shown / (2 * (shown + tied)))
    assert "people" in results["length_controlled"]
    people = results["pairwise"]["people"]
    assert people["changed_replies"] == 0  # same seed and settings: the raters saw this run's replies
    (pair,) = people["pairs"]
    assert pair["agreement"] == 0.0 and pair["items"] == shown
    assert people["raters"]["ann"]["self_consistency"] == 1.0
    assert people["trust"].startswith("weak")
    report = (out / "report.md").read_text()
    assert "human judge 'people': raters" in report and "Fleiss' kappa" in report


def test_a_bad_sheet_stops_compare_before_any_model_loads(first_run, perturbed, tmp_path, capsys):
    sheet = tmp_path / "bad.csv"
    sheet.write_text("item,choice\nq1,maybe\n", encoding="utf-8")
    people = (
        f"pairwise_judges=[{{name: people, human: {{key: {first_run / 'human' / 'key.json'}, sheets: [{sheet}]}}}}]"
    )
    assert compare(tmp_path / "never", perturbed, people) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "row 2, field 'choice'" in err[0]
    assert not (tmp_path / "never").exists()
