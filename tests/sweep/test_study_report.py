"""`rlhf compare --sweep`: the report over seeds read from the files each run's compare stage wrote (written here by
hand, so no model is trained): planted per-seed gains come back, a flipping seed is named, an unfinished run is
refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rlhf.cli import main
from rlhf.compare.run import RESPONSES, RESULTS

PROMPTS = 20
GAINS = {("0.05", 1): 0.3, ("0.05", 2): 0.2, ("0.1", 1): 0.4, ("0.1", 2): -0.5}
"""Planted judge gain of ppo over sft per (KL coefficient, seed): at 0.1 seed 2 goes the other way."""


def write_compare(directory: Path, seed: int, gain: float) -> None:
    """A compare stage's outputs for models sft and ppo, one sample per prompt, judge scores with a planted gain."""
    rng = np.random.default_rng(seed)
    sft = rng.normal(0.0, 0.05, PROMPTS)
    scores = {"sft": sft, "ppo": sft + gain + rng.normal(0.0, 0.01, PROMPTS)}
    directory.mkdir(parents=True)
    records = [
        {"model": model, "prompt_index": i, "sample": 0, "response": "hi", "judge": float(values[i]), "length": 3.0}
        for model, values in scores.items()
        for i in range(PROMPTS)
    ]
    (directory / RESPONSES).write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {model: {"judge": {}, "length": {}} for model in scores}
    results = {
        "reference": "sft",
        "scores": ["judge"],
        "n_prompts": PROMPTS,
        "samples_per_prompt": 1,
        "bootstrap_resamples": 300,
        "confidence": 0.95,
        "seed": 42,
        "summary": summary,
    }
    (directory / RESULTS).write_text(json.dumps(results))
    (directory / "manifest.json").write_text(json.dumps({"stage": "compare", "status": "complete"}))


def write_sweep(run_dir: Path) -> None:
    combinations = []
    for (kl, seed), gain in GAINS.items():
        group = f"seed={seed},ppo.kl.coef={kl}"
        write_compare(run_dir / group / "compare", seed, gain)
        combinations.append(
            {
                "values": {"seed": seed, "ppo.kl.coef": float(kl)},
                "name": group,
                "stages": {"sft": f"seed={seed}", "compare": group},
            }
        )
    record = {
        "recipe": "pipeline.yaml",
        "axes": [{"key": "seed", "values": [1, 2]}, {"key": "ppo.kl.coef", "values": [0.05, 0.1]}],
        "combinations": combinations,
        "compare": "compare",
    }
    (run_dir / "sweep.json").write_text(json.dumps(record))


def test_the_report_over_seeds_recovers_planted_gains_and_names_the_flipping_seed(tmp_path, capsys):
    write_sweep(tmp_path)
    assert main(["compare", "--sweep", str(tmp_path)]) == 0
    assert "report over seeds" in capsys.readouterr().out
    study = json.loads((tmp_path / "study" / "results.json").read_text())
    assert set(study["settings"]) == {"ppo.kl.coef=0.05", "ppo.kl.coef=0.1"}
    calm = study["settings"]["ppo.kl.coef=0.05"]["differences"]["ppo"]["judge"]
    assert abs(calm["pooled"]["mean"] - 0.25) < 0.01 and calm["pooled"]["low"] > 0 and calm["flips"] == []
    assert abs(calm["per_seed"]["1"]["mean"] - 0.3) < 0.01 and abs(calm["per_seed"]["2"]["mean"] - 0.2) < 0.01
    assert abs(calm["seed_sd"] - np.std([0.3, 0.2], ddof=1)) < 0.01
    split = study["settings"]["ppo.kl.coef=0.1"]["differences"]["ppo"]["judge"]
    # Pooled -0.05: seed 1 (+0.4, its interval well above 0) says the opposite of the pooled estimate.
    assert split["pooled"]["mean"] < 0 and split["flips"] == [
        {"seed": "1", "mean": split["per_seed"]["1"]["mean"], "significant": True}
    ]
    assert split["pooled"]["low"] < 0 < split["pooled"]["high"]
    report = (tmp_path / "study" / "report.md").read_text()
    assert "## ppo.kl.coef=0.1" in report and "- ppo on judge: pooled" in report and "seed 1 +0.4" in report
    assert "](seeds.png)" in report
    assert (tmp_path / "study" / "seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unfinished_run_is_refused_in_one_line(tmp_path, capsys):
    write_sweep(tmp_path)
    (tmp_path / "seed=2,ppo.kl.coef=0.1" / "compare" / "manifest.json").unlink()
    assert main(["compare", "--sweep", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "seed=2,ppo.kl.coef=0.1" in err[0]
    assert main(["compare", "--sweep", str(tmp_path / "nothing")]) == 2
    assert "not a sweep's run directory" in capsys.readouterr().err
