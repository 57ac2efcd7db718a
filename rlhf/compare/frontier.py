"""The over-optimisation frontier (Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization"): gold and proxy
scores against sqrt(KL to the reference), along each ppo run's training and across runs (e.g. swept KL coefficients),
with best-of-n as the reference curve.

The points come from the ppo stage's in-loop evaluation (`frontier_every`, `rlhf.ppo.frontier`: rows of
metrics.jsonl with `frontier/kl`); the best-of-n points from this comparison's own rows. `series` reads a run, `runs`
and `best_of_n_points` build the plain dicts that results.json holds under "frontier" and that
`rlhf.compare.plots.frontier` draws (the same dicts from several comparisons draw one figure: a sweep's runs), `peak`
finds where a score is highest.

Names: a ppo term is shown under this comparison's name for the same source (the judge with the same function, spec
or model; "proxy" for a trained-on term when the comparison's proxy is that source alone, at weight 1), so the ppo points and the
best-of-n points of one score share a panel; a term with no counterpart keeps its ppo name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf.artifacts import METRICS, RECIPE

PREFIX = "frontier/"
ROLES = ("proxy", "reward", "gold")
"""Roles of the ppo terms, in panel order: the learned reward trained on, other trained-on terms, weight-0 judges."""


def peak(points: list[dict[str, Any]], score: str) -> dict[str, Any] | None:
    """The point where `score` is highest (the earliest of equal ones); None when no point has it.

    Args:
        points: A run's points, in step order: {"step", "kl", "sqrt_kl", "scores": {score: value}}.
        score: The score's name.

    Returns:
        {"step", "sqrt_kl", "kl", "value", "last": whether it is the run's last point (the score had not turned
        down yet)} or None.
    """
    found = [(p["scores"][score], i) for i, p in enumerate(points) if p["scores"].get(score) is not None]
    if not found:
        return None
    value, index = max(found, key=lambda item: (item[0], -item[1]))
    best = points[index]
    return {
        "step": best["step"],
        "sqrt_kl": best["sqrt_kl"],
        "kl": best["kl"],
        "value": value,
        "last": index == len(points) - 1,
    }


def series(stage_dir: Path) -> dict[str, Any] | None:
    """A ppo stage's frontier points from its metrics.jsonl, with the KL settings of its recipe.yaml.

    One point per step: a step logged twice (a closing evaluation repeated after a kill just before the manifest
    was written) keeps its last row. Returns None when the run has no points.

    Returns:
        {"stage_dir", "kl_coef", "kl_adaptive", "estimator", "roles": {term: role}, "points": [{"step", "kl",
        "sqrt_kl", "length", "scores": {term: value}}] in step order} with the ppo term names.
    """
    from rlhf.compare.plots import read_metrics

    metrics = stage_dir / METRICS
    if not metrics.is_file():
        return None
    by_step: dict[int, dict[str, Any]] = {}
    roles: dict[str, str] = {}
    for record in read_metrics(metrics):
        if record.get(f"{PREFIX}kl") is None:
            continue
        scores = {}
        for key, value in record.items():
            role, _, name = key.removeprefix(PREFIX).partition("/")
            if key.startswith(PREFIX) and role in ROLES and name:
                roles[name] = role
                scores[name] = value
        by_step[int(record["step"])] = {
            "step": int(record["step"]),
            "kl": record[f"{PREFIX}kl"],
            "sqrt_kl": record.get(f"{PREFIX}sqrt_kl"),
            "length": record.get(f"{PREFIX}length"),
            "scores": scores,
        }
    if not by_step:
        return None
    recipe = _recipe(stage_dir)
    kl, advantage = recipe.get("kl") or {}, recipe.get("advantage") or {}
    return {
        "stage_dir": str(stage_dir),
        "kl_coef": kl.get("coef"),
        "kl_adaptive": kl.get("adaptive"),
        "estimator": advantage.get("estimator"),
        "roles": roles,
        "points": [by_step[step] for step in sorted(by_step)],
    }


def runs(stage_dirs: dict[str, Path], proxy: list, judges: list) -> dict[str, dict[str, Any]]:
    """Every compared ppo-family model's frontier, under this comparison's score names, with each score's peak.

    Args:
        stage_dirs: {model: its ppo stage directory}.
        proxy: The comparison's proxy sources (`RewardSourceConfig`).
        judges: The comparison's judges (`RewardSourceConfig`).
    """
    out = {}
    for model, stage_dir in stage_dirs.items():
        found = series(stage_dir)
        if found is None:
            continue
        names = _names(_recipe(stage_dir).get("rewards") or [], found["roles"], proxy, judges)
        # What ppo trained on and compare calls its proxy is the proxy, learned or not.
        found["roles"] = {
            names.get(term, term): "proxy" if names.get(term) == "proxy" else role
            for term, role in found["roles"].items()
        }
        for point in found["points"]:
            point["scores"] = {names.get(term, term): value for term, value in point["scores"].items()}
        found["peaks"] = {score: peak(found["points"], score) for score in found["roles"]}
        out[model] = found
    return out


def best_of_n_points(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The reference curve: each best-of-n arm of the comparison at its measured KL to the reference, in order of n,
    from the model it samples from (n = 1, unless an arm has n = 1); empty without best-of-n arms or without a KL."""
    arms = results.get("best_of_n") or {}
    summary = results["summary"]
    out = []
    for model in dict.fromkeys(found["model"] for found in arms.values()):
        chosen = sorted((found["n"], arm) for arm, found in arms.items() if found["model"] == model)
        if chosen[0][0] != 1:  # n = 1 is the model's own reply (unless an arm of its own samples it)
            chosen.insert(0, (1, model))
        for n, arm in chosen:
            kl = (summary[arm].get("kl") or {}).get("mean")
            if kl is None:
                continue
            out.append(
                {
                    "arm": arm,
                    "model": model,
                    "n": n,
                    "kl": kl,
                    "sqrt_kl": max(kl, 0.0) ** 0.5,
                    "scores": {s: summary[arm][s]["mean"] for s in results["scores"] if s in summary[arm]},
                }
            )
    return out


def _recipe(stage_dir: Path) -> dict[str, Any]:
    import yaml

    path = stage_dir / RECIPE
    if not path.is_file():
        return {}
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return {}


def _names(rewards: list[dict], roles: dict[str, str], proxy: list, judges: list) -> dict[str, str]:
    """{ppo term: the comparison's name for the same source}, for the terms that have one."""
    out = {}
    for source in rewards:
        name = source.get("name")
        if name not in roles:
            continue
        match = next((j.name for j in judges if _same_source(source, j)), None)
        # compare's proxy is the weighted sum of its sources: the same numbers as the ppo term for one, at weight 1.
        only = proxy[0] if len(proxy) == 1 and proxy[0].weight == 1 else None
        if match is None and roles[name] != "gold" and only is not None and _same_source(source, only):
            match = "proxy"
        if match is not None:
            out[name] = match
    return out


def _same_source(source: dict, other) -> bool:
    """Whether a ppo reward source (a recipe.yaml dict) and a comparison's source read the same function, spec or
    model (paths compared resolved; both recipes have their `stage:` references resolved already)."""
    if source.get("function") is not None:
        return source["function"] == other.function
    for key in ("spec", "model"):
        if source.get(key) is not None and getattr(other, key) is not None:
            return Path(source[key]).resolve() == Path(getattr(other, key)).resolve()
    return False


def note(results: dict[str, Any]) -> str:
    """How to read the figure (for the report)."""
    return (
        "gold and proxy scores against sqrt(KL to the reference) along each ppo run's training (the in-loop "
        "evaluation, frontier_every: each run's own held-out prompts and seed, one reply per prompt; the last point is "
        "its closing evaluation). A star marks where a gold score peaks: past it the policy buys proxy reward the "
        "gold judges do not confirm (over-optimisation, Gao et al. 2022). Several runs (e.g. swept KL coefficients): "
        "the dotted line joins their last points. Best-of-n (black, where compared): the proxy's favourite of n "
        "replies at its measured KL, the reference curve a good policy should reach at the same KL."
    )


def sections(results: dict[str, Any]) -> list:
    """The report's frontier section: each run's gold peaks against its last point; empty without points."""
    from rlhf.compare.breakdown import Section

    found = (results.get("frontier") or {}).get("runs") or {}
    if not found:
        return []
    rows = []
    for model, run in found.items():
        last = run["points"][-1]
        for score, role in run["roles"].items():
            best = run["peaks"].get(score)
            if role != "gold" or best is None:
                continue
            rows.append(
                [
                    (model, "", ""),
                    (_beta(run), "", ""),
                    (score, "", ""),
                    (f"{best['value']:.3f}", f"step {best['step']}, sqrt(KL) {best['sqrt_kl']:.2f}", ""),
                    (
                        f"{last['scores'][score]:.3f}",
                        f"step {last['step']}, sqrt(KL) {last['sqrt_kl']:.2f}",
                        "bad" if last["scores"][score] < best["value"] else "",
                    ),
                ]
            )
    section = Section("Over-optimisation frontier", note(results))
    if rows:
        section.tables.append(("", ["model", "KL coefficient", "gold score", "peak", "last point"], rows))
    section.items = [
        f"{model}: {len(run['points'])} points, steps {run['points'][0]['step']}-{run['points'][-1]['step']}"
        for model, run in found.items()
    ]
    return [section]


def _beta(run: dict[str, Any]) -> str:
    if run.get("kl_coef") is None:
        return "?"
    return f"{run['kl_coef']:g}" + (" (adaptive start)" if run.get("kl_adaptive") else "")
