"""The over-optimisation frontier in compare: peaks on synthetic series, reading a ppo run's points (names matched to
the comparison's), best-of-n as the reference curve, the figure, and a report with and without points."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from rlhf.compare import frontier, plots

PNG = b"\x89PNG"


def _points(sqrt_kl: list[float], gold: list[float], proxy: list[float]) -> list[dict]:
    return [
        {"step": 10 * i, "kl": x * x, "sqrt_kl": x, "scores": {"proxy": p, "brand_voice": g}}
        for i, (x, g, p) in enumerate(zip(sqrt_kl, gold, proxy, strict=True))
    ]


def test_peak_is_the_highest_point_the_earliest_of_equal_ones():
    # Gold rises then falls (over-optimisation) while the proxy keeps rising.
    points = _points([0, 1, 2, 3, 4], [0.2, 0.5, 0.7, 0.6, 0.4], [0.0, 1.0, 2.0, 3.0, 4.0])
    best = frontier.peak(points, "brand_voice")
    assert best == {"step": 20, "sqrt_kl": 2, "kl": 4, "value": 0.7, "last": False}
    assert frontier.peak(points, "proxy")["last"] is True  # still rising at the end: no turn seen
    flat = _points([0, 1, 2], [0.5, 0.5, 0.5], [0, 0, 0])
    assert frontier.peak(flat, "brand_voice")["step"] == 0
    assert frontier.peak(points, "missing") is None
    gap = _points([0, 1], [0.1, 0.9], [0, 0])
    gap[1]["scores"]["brand_voice"] = None  # a non-finite value is logged as null
    assert frontier.peak(gap, "brand_voice")["step"] == 0


def _ppo_dir(root: Path, name: str, coef: float, rows: list[dict]) -> Path:
    stage = root / name
    (stage / "final").mkdir(parents=True)
    (stage / "manifest.json").write_text(json.dumps({"stage": "ppo"}))
    recipe = {
        "stage": "ppo",
        "kl": {"coef": coef, "adaptive": False},
        "advantage": {"estimator": "gae"},
        "rewards": [
            {"name": "learned", "model": str(root / "reward" / "final"), "function": None, "weight": 1.0},
            {"name": "voice_rules", "model": None, "function": "brand_voice", "weight": 0.0},
            {"name": "unmatched", "model": None, "function": "other_judge", "weight": 0.0},
        ],
    }
    (stage / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return stage


def _rows(gold: list[float], proxy: list[float], kl: list[float]) -> list[dict]:
    rows = []
    for i, (g, p, k) in enumerate(zip(gold, proxy, kl, strict=True)):
        step = 2 * i
        if i:  # a training row without frontier keys, as every step writes
            rows.append({"step": step, "reward/total": p, "kl": k})
        rows.append(
            {
                "step": step,
                "frontier/kl": k,
                "frontier/sqrt_kl": k**0.5,
                "frontier/length": 10.0,
                "frontier/proxy/learned": p,
                "frontier/gold/voice_rules": g,
                "frontier/gold/unmatched": 0.5,
            }
        )
    return rows


def test_runs_read_points_once_per_step_under_the_comparisons_names(tmp_path):
    rows = _rows([0.3, 0.6, 0.5], [0.0, 1.0, 2.0], [0.0, 1.0, 4.0])
    rows.append({**rows[-1], "frontier/gold/voice_rules": 0.55})  # the closing row repeated: the last one counts
    stage = _ppo_dir(tmp_path, "ppo", 0.05, rows)
    proxy = [SimpleNamespace(name="learned", model=str(tmp_path / "reward" / "final"), function=None, weight=1.0)]
    judges = [SimpleNamespace(name="brand_voice", model=None, function="brand_voice", spec=None, weight=1.0)]
    found = frontier.runs({"ppo": stage}, proxy, judges)["ppo"]
    assert [p["step"] for p in found["points"]] == [0, 2, 4]
    assert found["roles"] == {"proxy": "proxy", "brand_voice": "gold", "unmatched": "gold"}
    assert found["points"][-1]["scores"] == {"proxy": 2.0, "brand_voice": 0.55, "unmatched": 0.5}
    assert found["peaks"]["brand_voice"]["step"] == 2 and found["kl_coef"] == 0.05
    # A proxy weighted other than 1 is not the same numbers as the ppo term: the term keeps its own name.
    proxy[0].weight = 2.0
    assert "learned" in frontier.runs({"ppo": stage}, proxy, judges)["ppo"]["roles"]
    # A ppo run without points (frontier_every off) and a missing directory give nothing.
    plain = _ppo_dir(tmp_path, "plain", 0.1, [{"step": 1, "reward/total": 0.1, "kl": 0.2}])
    assert frontier.runs({"plain": plain, "gone": tmp_path / "gone"}, proxy, judges) == {}


def test_best_of_n_curve_starts_at_its_sampling_model():
    summary = {
        "sft": {"proxy": {"mean": 0.1}, "kl": {"mean": 0.0}},
        "sft_bo4": {"proxy": {"mean": 0.5}, "kl": {"mean": 0.9}},
        "sft_bo2": {"proxy": {"mean": 0.3}, "kl": {"mean": 0.3}},
    }
    results = {
        "scores": ["proxy"],
        "summary": summary,
        "best_of_n": {"sft_bo4": {"model": "sft", "n": 4}, "sft_bo2": {"model": "sft", "n": 2}},
    }
    found = frontier.best_of_n_points(results)
    assert [(b["n"], b["arm"]) for b in found] == [(1, "sft"), (2, "sft_bo2"), (4, "sft_bo4")]
    assert found[2]["sqrt_kl"] == pytest.approx(0.9**0.5) and found[2]["scores"] == {"proxy": 0.5}
    assert frontier.best_of_n_points({"scores": [], "summary": {}, "best_of_n": {}}) == []
    # An arm with n = 1 (the first candidate) stands for the model: no second point at n = 1.
    summary["sft_bo1"] = {"proxy": {"mean": 0.12}, "kl": {"mean": 0.0}}
    results["best_of_n"]["sft_bo1"] = {"model": "sft", "n": 1}
    assert [b["arm"] for b in frontier.best_of_n_points(results)] == ["sft_bo1", "sft_bo2", "sft_bo4"]


def test_figure_over_several_runs_with_best_of_n():
    runs = {}
    for coef, top in ((0.02, 0.4), (0.1, 0.6)):
        points = _points([0, 1, 2], [0.2, top, top - 0.1], [0, 1, 2])
        runs[f"ppo_{coef}"] = {
            "kl_coef": coef,
            "roles": {"proxy": "proxy", "brand_voice": "gold"},
            "points": points,
            "peaks": {s: frontier.peak(points, s) for s in ("proxy", "brand_voice")},
        }
    bon = [{"n": n, "sqrt_kl": x, "scores": {"proxy": x}} for n, x in ((1, 0.0), (4, 0.9))]
    png = plots.frontier(runs, bon)
    assert png.startswith(PNG)
    assert plots.frontier({}) is None
    assert plots.frontier({"empty": {"roles": {}, "points": []}}) is None


def _results(tmp_path: Path) -> tuple[dict, dict]:
    """results.json's content and the measures of a two-model comparison with constant scores (the real `summarise`)."""
    from rlhf.compare.run import summarise
    from rlhf.recipe import validate_recipe

    cfg = validate_recipe(
        {
            "stage": "compare",
            "output_dir": str(tmp_path),
            "models": [{"name": "sft", "path": "/m/sft"}, {"name": "ppo", "path": "/m/ppo"}],
            "prompts": {"path": "prompts.jsonl"},
            "judges": [{"name": "brand_voice", "function": "brand_voice"}],
            "bootstrap_resamples": 100,
            "report_samples": 1,
        },
        base_dir=tmp_path,
    )
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(4)]
    measures, records = {}, []
    for model, score in (("sft", 0.2), ("ppo", 0.6)):
        values = {"brand_voice": score, "kl": 0.0 if model == "sft" else 1.0, "length": 9.0, "eos": 1.0}
        measures[model] = {key: np.full((4, 1), value) for key, value in values.items()}
        records += [{"model": model, "prompt_index": p, "sample": 0, "response": "Hi.", **values} for p in range(4)]
    generated = {
        "measures": measures,
        "records": records,
        "paths": {"sft": "/m/sft", "ppo": "/m/ppo"},
        "notes": [],
        "rules": {},
        "shares": [],
    }
    results, measures, _ = summarise(cfg, prompts, generated)
    return results, measures


@pytest.mark.parametrize("with_points", [True, False])
def test_report_has_the_frontier_only_with_points(tmp_path, with_points):
    from rlhf.compare.report import write_report

    points = _points([0, 1, 2], [0.2, 0.6, 0.3], [0, 1, 2])
    run = {
        "kl_coef": 0.1,
        "kl_adaptive": True,
        "roles": {"proxy": "proxy", "brand_voice": "gold"},
        "points": points,
        "peaks": {s: frontier.peak(points, s) for s in ("proxy", "brand_voice")},
    }
    results, measures = _results(tmp_path)
    results["frontier"] = {"runs": {"ppo": run} if with_points else {}, "best_of_n": []}
    write_report(tmp_path, results, measures, [], {})
    markdown = (tmp_path / "report.md").read_text()
    assert (tmp_path / "plots" / "frontier.png").is_file() == with_points
    assert ("## Over-optimisation frontier" in markdown) == with_points
    if with_points:
        assert "frontier" in (tmp_path / "report.html").read_text()
        # The gold peak (0.6 at step 10) and the last point (0.3 at step 20), which is below it.
        section = markdown.split("## Over-optimisation frontier")[1].split("\n## ")[0]
        line = next(row for row in section.splitlines() if row.startswith("| ppo |"))
        assert "brand_voice" in line and "proxy" not in line  # peaks of gold scores only
        assert "0.600" in line and "step 10" in line and "0.300" in line
    # An older results.json without the key still reports.
    del results["frontier"]
    write_report(tmp_path, results, measures, [], {})
    assert "Compare report" in (tmp_path / "report.md").read_text()
