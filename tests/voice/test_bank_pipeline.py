"""The second brand end to end, shortened: Harbourstone Bank's logs -> `rlhf voice pairs` -> sft -> reward -> ppo ->
compare on the embedded default model; ppo must beat sft on the bank spec's judge. The spec labelled the pairs and
is a ppo reward term beside the learned reward model (see the recipe for the measurement without it), so this shows
ppo learned the bank's rules; the report says what the judge shares with training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlhf.cli import main
from rlhf.pipeline import run_recipe
from rlhf.recipe import load_recipe

BANK = Path(__file__).resolve().parents[2] / "recipes" / "bank_voice"

pytestmark = pytest.mark.slow

SHORT = [
    "tracking.report_to=[none]",
    "sft.training.epochs=4",
    "reward.training.max_steps=40",
    "ppo.training.max_steps=24",
    "ppo.data.max_eval_rows=16",
    "compare.bootstrap_resamples=500",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bank")
    data = tmp / "data"
    spec, logs = BANK / "voice.yaml", BANK / "data" / "logs.jsonl"
    assert main(["voice", "pairs", str(spec), str(logs), "--out", str(data)]) == 0
    recipe = yaml.safe_load((BANK / "pipeline.yaml").read_text(encoding="utf-8"))
    for stage in ("sft", "reward", "ppo"):
        for split in ("train", "eval"):
            recipe[stage]["data"][split] = str(data / Path(recipe[stage]["data"][split]).name)
    recipe["compare"]["prompts"]["path"] = str(data / "eval_prompts.jsonl")
    for source in [*recipe["ppo"]["rewards"], *recipe["compare"]["judges"]]:
        if "spec" in source:  # relative to the shipped recipe, which this copy is not beside
            source["spec"] = str(spec)
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    out = tmp / "run"
    run_recipe(load_recipe(path, [f"run_dir={out}", *SHORT]))
    return out


def test_ppo_beats_sft_on_the_bank_judge(run_dir):
    results = json.loads((run_dir / "compare" / "results.json").read_text())
    difference = results["differences"]["ppo"]["bank_voice"]
    assert difference["mean"] > 0 and difference["low"] > 0, difference
    shares = {s["name"]: s["statement"] for s in results["shares"]}
    assert "are a ppo reward term" in shares["bank_voice"]
