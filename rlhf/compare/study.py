"""The report over seeds of a sweep (`rlhf compare --sweep RUN_DIR`): reads what each run's compare stage wrote.

Nothing is generated again: every combination's `results.json` and `responses.jsonl` (`rlhf.compare.run`) are read
from where `<run_dir>/sweep.json` (`rlhf.sweep`) says its compare stage ran. Combinations that differ only in `seed`
form one *setting* (e.g. `ppo.kl.coef=0.05`); each setting's models are summarised over its seeds with
`rlhf.compare.seeds.analyse_seeds`. Writes `<run_dir>/study/report.md`, `results.json` and `seeds.png`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.artifacts import ArtifactError, write_atomic
from rlhf.compare.run import RESPONSES, RESULTS
from rlhf.compare.seeds import SeedAnalysis, SeedEstimate, SeedWinRate, analyse_seeds
from rlhf.recipe import RecipeError

STUDY = "study"
"""The report's directory inside the sweep's run directory."""

SEED_KEY = "seed"
"""The swept key whose values are the seeds (the pipeline-wide seed every stage inherits)."""

EXTRA_MEASURES = ("kl", "length")
"""Measures reported over seeds beside the scores (when every seed has them)."""


def load_sweep(run_dir: Path) -> dict[str, Any]:
    """Reads <run_dir>/sweep.json.

    Raises:
        RecipeError: There is none (not a sweep's run directory), or the sweep has no compare stage.
    """
    from rlhf.sweep import SWEEP_FILE

    path = run_dir / SWEEP_FILE
    if not path.is_file():
        raise RecipeError(f"{run_dir} is not a sweep's run directory (no {SWEEP_FILE}): run rlhf sweep first")
    record = json.loads(path.read_text(encoding="utf-8"))
    if record["compare"] is None:
        raise RecipeError(f"the sweep in {run_dir} runs no compare stage: there is nothing to aggregate")
    return record


def read_compare(compare_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """A compare stage's results.json and its per-response measures as {model: {measure: [P, K]}}.

    Measures missing or undefined for some response of a model (e.g. KL under another tokenizer) are left out.

    Raises:
        ArtifactError: The compare stage has not finished (no manifest, results or responses).
    """
    if not all((compare_dir / name).is_file() for name in ("manifest.json", RESULTS, RESPONSES)):
        raise ArtifactError(
            f"{compare_dir} holds no finished compare run: run the sweep again (finished stages are skipped)"
        )
    results = json.loads((compare_dir / RESULTS).read_text(encoding="utf-8"))
    n_prompts, samples = results["n_prompts"], results["samples_per_prompt"]
    records = [json.loads(line) for line in (compare_dir / RESPONSES).read_text(encoding="utf-8").splitlines()]
    scores: dict[str, dict[str, np.ndarray]] = {}
    for model, summary in results["summary"].items():
        arrays = {name: np.full((n_prompts, samples), np.nan) for name in summary}
        for record in (r for r in records if r["model"] == model):
            for name, array in arrays.items():
                value = record.get(name)
                if value is not None:
                    array[record["prompt_index"], record["sample"]] = value
        scores[model] = {name: array for name, array in arrays.items() if np.isfinite(array).all()}
    return results, scores


def collect(run_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, dict]], dict[str, Any]]:
    """Every combination's compare outputs, grouped into settings.

    Returns:
        (sweep.json, {setting: {seed label: {model: {measure: [P, K]}}}}, the first combination's results.json).
    """
    from rlhf.sweep import group_name

    record = load_sweep(run_dir)
    keys = [axis["key"] for axis in record["axes"]]
    others = [key for key in keys if key != SEED_KEY]
    settings: dict[str, dict[str, dict]] = {}
    first: dict[str, Any] | None = None
    for combination in record["combinations"]:
        where = combination["stages"][record["compare"]]
        results, scores = read_compare(run_dir / where / record["compare"])
        first = first or results
        values = combination["values"]
        setting = group_name(values, others) if others else "all"
        seed = str(values[SEED_KEY]) if SEED_KEY in values else str(results["seed"])
        settings.setdefault(setting, {})[seed] = scores
    assert first is not None  # a sweep has at least two combinations
    return record, settings, first


def write_sweep_report(run_dir: str | Path) -> Path:
    """Aggregates a finished sweep over seeds; writes study/report.md and study/results.json, returns the report.

    Raises:
        RecipeError: Not a sweep's run directory, or its runs compared different models or prompts.
        ArtifactError: A combination's compare stage has not finished.
    """
    run_dir = Path(run_dir)
    record, settings, first = collect(run_dir)
    analyses: dict[str, SeedAnalysis] = {}
    for setting, by_seed in settings.items():
        try:
            analyses[setting] = analyse_seeds(
                by_seed,
                first["reference"],
                compared=first["scores"],
                seed=first["seed"],
                resamples=first["bootstrap_resamples"],
                confidence=first["confidence"],
            )
        except ValueError as err:
            raise RecipeError(f"{run_dir}, setting {setting}: {err}") from None
    out = run_dir / STUDY
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "axes": record["axes"],
        "scores": first["scores"],
        "settings": {name: _plain(dataclasses.asdict(a)) for name, a in analyses.items()},
    }
    write_atomic(out / "results.json", json.dumps(payload, indent=2) + "\n")
    (out / FIGURE).write_bytes(seed_plot(analyses, first["scores"]))
    frontier = frontier_plot(run_dir, record)
    if frontier is not None:
        (out / FRONTIER_FIGURE).write_bytes(frontier)
    path = out / "report.md"
    text = markdown(record, analyses, first["scores"])
    text += "".join(line + "\n" for line in length_controlled_lines(run_dir, record, first["reference"]))
    if frontier is not None:
        text += (
            "\n## The over-optimisation frontier\n\nEvery run's held-out proxy and gold scores against sqrt(KL to the "
            "reference) along training (points every `ppo.frontier_every` steps; a star where a gold score peaks), "
            "one line per combination, best-of-n as the black reference curve where compare has it.\n\n"
            f"![frontier]({FRONTIER_FIGURE})\n"
        )
    write_atomic(path, text)
    return path


def report_over_seeds(run_dir: str | Path) -> int:
    """`write_sweep_report` for a command line: prints where the report is; a refused sweep is one `error:` line.

    Returns:
        The exit code: 0, or 2 when the sweep is not finished or not a sweep.
    """
    import sys

    try:
        report = write_sweep_report(run_dir)
    except (RecipeError, ArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report over seeds: {report}")
    return 0


FIGURE = "seeds.png"
"""The figure of every setting's differences to the reference: per-seed points, pooled mean and both intervals."""

FRONTIER_FIGURE = "frontier.png"
"""Every combination's in-loop points (ppo's `frontier_every`) on one frontier figure (`rlhf.compare.plots.frontier`)."""


def frontier_plot(run_dir: Path, record: dict[str, Any]) -> bytes | None:
    """One frontier figure over every combination of a sweep: each ppo-family run's gold and proxy scores against
    sqrt(KL) along training, labelled by its combination, so the curve across swept KL coefficients shows.

    Returns:
        PNG bytes, or None when no combination's compare recorded in-loop points.
    """
    from rlhf.compare import plots
    from rlhf.sweep import group_name

    keys = [axis["key"] for axis in record["axes"]]
    runs: dict[str, dict] = {}
    best_of_n = None
    for combination in record["combinations"]:
        compare_dir = run_dir / combination["stages"][record["compare"]] / record["compare"]
        found = json.loads((compare_dir / RESULTS).read_text(encoding="utf-8")).get("frontier") or {}
        label = group_name(combination["values"], keys)
        for model, run in (found.get("runs") or {}).items():
            runs[f"{model} {label}"] = run
        best_of_n = best_of_n or found.get("best_of_n")
    return plots.frontier(runs, best_of_n) if runs else None


def length_controlled_lines(run_dir: Path, record: dict[str, Any], reference: str) -> list[str]:
    """The report's length-controlled win rates against the reference: per setting, model and score, each seed's
    rate (at equal reply length, `rlhf.compare.length_control`) with its own interval over prompts, and their mean.

    Empty when no combination's results.json has length-controlled rates (compare runs before they existed).
    """
    from rlhf.sweep import group_name

    others = [axis["key"] for axis in record["axes"] if axis["key"] != SEED_KEY]
    cells: dict[tuple[str, str, str], dict[str, dict]] = {}
    for combination in record["combinations"]:
        compare_dir = run_dir / combination["stages"][record["compare"]] / record["compare"]
        results = json.loads((compare_dir / RESULTS).read_text(encoding="utf-8"))
        values = combination["values"]
        setting = group_name(values, others) if others else "all"
        seed = str(values.get(SEED_KEY, results["seed"]))
        for score, by_model in (results.get("length_controlled") or {}).items():
            for model, against in by_model.items():
                if model != reference and reference in against:
                    cells.setdefault((setting, model, score), {})[seed] = against[reference]
    if not cells:
        return []
    rows = []
    for (setting, model, score), by_seed in cells.items():
        seeds = sorted(by_seed)
        per_seed = "; ".join(
            f"{seed}: {_num(by_seed[seed]['rate'])} {_interval(by_seed[seed]['low'], by_seed[seed]['high'])}"
            for seed in seeds
        )
        lc = float(np.mean([by_seed[seed]["rate"] for seed in seeds]))
        raw = float(np.mean([by_seed[seed]["raw"] for seed in seeds]))
        rows.append([setting, model, score, _num(raw), _num(lc), per_seed])
    return [
        f"## Length-controlled win rates against {reference}",
        "",
        "The win rate each judge would give at equal reply length (AlpacaEval 2's length control: the verdicts "
        "regressed on the normalised length difference), beside the raw rate; the mean over seeds, and each seed's "
        "rate with its own interval over prompts. A raw rate well above its length-controlled one is a judge paying "
        "for length.",
        "",
        *_table(["setting", "model", "score", "raw (mean)", "length-controlled (mean)", "per seed"], rows),
    ]


def seed_plot(analyses: dict[str, SeedAnalysis], scores: list[str]) -> bytes:
    """One panel per score: for each setting and model, its difference to the reference with the hierarchical
    interval (thick), the prompt-only interval (thin), the pooled mean (black) and each seed's own mean (dots)."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # headless: written on servers and in CI
    import matplotlib.pyplot as plt

    rows = [(setting, model) for setting, a in analyses.items() for model in a.differences]
    seeds = sorted({seed for a in analyses.values() for seed in a.seeds})
    palette = plt.get_cmap("tab10")
    fig, axes = plt.subplots(
        1, len(scores), figsize=(3.6 * len(scores) + 1.5, 0.45 * len(rows) + 1.4), squeeze=False, sharey=True
    )
    for ax, name in zip(axes[0], scores, strict=True):
        for y, (setting, model) in enumerate(rows):
            e = analyses[setting].differences[model].get(name)
            if e is None:
                continue
            ax.plot([e.prompt_low, e.prompt_high], [y, y], color="0.6", linewidth=1.0)
            ax.plot([e.pooled.low, e.pooled.high], [y, y], color="0.2", linewidth=3.0, alpha=0.5)
            ax.scatter([e.pooled.mean], [y], color="black", s=22, zorder=3)
            for seed, own in e.per_seed.items():
                ax.scatter([own.mean], [y + 0.18], color=palette(seeds.index(seed) % 10), s=14, zorder=3)
        ax.axvline(0.0, color="0.4", linewidth=0.8, linestyle="--")
        ax.set_title(f"{name}: difference to {next(iter(analyses.values())).reference}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(rows)), [f"{model} | {setting}" for setting, model in rows], fontsize=8)
    axes[0][0].invert_yaxis()
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=palette(i % 10), label=f"seed {seed}")
        for i, seed in enumerate(seeds)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(seeds), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- Markdown


def _num(value: float, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _interval(low: float, high: float, signed: bool = False) -> str:
    return f"[{_num(low, signed)}, {_num(high, signed)}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows] + [""]


def _flip_text(flips: list, signed: bool) -> str:
    if not flips:
        return "none"
    return "; ".join(f"seed {f.seed} {_num(f.mean, signed)}{' (significant)' if f.significant else ''}" for f in flips)


def _estimate_row(label: list[str], e: SeedEstimate, signed: bool, flips: bool) -> list[str]:
    per_seed = ", ".join(f"{s}: {_num(x.mean, signed)}" for s, x in e.per_seed.items())
    row = [
        *label,
        _num(e.pooled.mean, signed),
        _interval(e.pooled.low, e.pooled.high, signed),
        _interval(e.prompt_low, e.prompt_high, signed),
        _num(e.seed_sd),
        per_seed,
    ]
    return [*row, _flip_text(e.flips, signed)] if flips else row


def _win_row(label: list[str], w: SeedWinRate) -> list[str]:
    per_seed = ", ".join(f"{s}: {_num(x.rate)}" for s, x in w.per_seed.items())
    return [
        *label,
        _num(w.pooled.rate),
        _interval(w.pooled.low, w.pooled.high),
        _interval(w.prompt_low, w.prompt_high),
        _num(w.seed_sd),
        per_seed,
        _flip_text(w.flips, False),
    ]


def markdown(record: dict[str, Any], analyses: dict[str, SeedAnalysis], scores: list[str]) -> str:
    """The study report: how to read it, every setting at a glance, then each setting's tables."""
    any_analysis = next(iter(analyses.values()))
    level = f"{any_analysis.confidence:.0%}"
    axes = "; ".join(f"{a['key']} = {', '.join(map(str, a['values']))}" for a in record["axes"])
    lines = [
        "# Study report over seeds",
        "",
        f"Sweep: {axes} ({len(record['combinations'])} runs of {record['recipe']}).",
        "",
        f"Every interval is a {level} interval from a hierarchical bootstrap ({any_analysis.resamples} replicates): "
        "the seeds are resampled, then the prompts within each drawn seed, so it carries the seed-to-seed spread as "
        "well as the prompt noise. *prompts only* is the interval that resamples prompts with the seeds held fixed "
        "(what one run's report would suggest); where it is much narrower, the seed dominates. *seed sd* is the "
        "standard deviation of the per-seed means. A seed *flips* when its own estimate lies on the other side of "
        "no effect (difference 0, win rate 0.5) from the pooled one; *significant* when its own interval over "
        "prompts excludes no effect on that other side: one run with that seed would have reported the opposite.",
        "",
        "With few seeds the interval is approximate: in simulations with 3 seeds whose spread is several times the "
        "prompt noise of a mean, a nominal 95% interval covered the truth about 83% of the time (95-97% with 5-8 "
        "seeds or a smaller seed spread). Read the per-seed values next to it.",
        "",
    ]
    reference = any_analysis.reference
    lines += [f"## Every setting: difference to {reference}", ""]
    rows = []
    for setting, analysis in analyses.items():
        for model, by_measure in analysis.differences.items():
            cells = []
            for name in scores:
                e = by_measure.get(name)
                cells.append(
                    "n/a"
                    if e is None
                    else f"{_num(e.pooled.mean, True)} {_interval(e.pooled.low, e.pooled.high, True)}"
                    + (" flips" if e.flips else "")
                )
            rows.append([setting, model, ", ".join(analysis.seeds), *cells])
    lines += _table(["setting", "model", "seeds", *scores], rows)
    lines += [
        f"![differences to {reference} over seeds]({FIGURE})",
        "",
        "Per setting and model: the pooled difference (black), its interval over seeds and prompts (thick), over "
        "prompts only (thin), and each seed's own difference (coloured dots).",
        "",
    ]
    for setting, analysis in analyses.items():
        lines += [
            f"## {setting}",
            "",
            f"Seeds {', '.join(analysis.seeds)}; {analysis.n_prompts} prompts x {analysis.samples_per_prompt} "
            f"sample(s) per seed; reference {analysis.reference}.",
            "",
            "### Means",
            "",
        ]
        head = ["mean", f"{level} interval", "prompts only", "seed sd", "per seed"]
        rows = [
            _estimate_row([model, name], e, False, flips=False)
            for model, by_measure in analysis.summary.items()
            for name, e in by_measure.items()
            if name in scores or name in EXTRA_MEASURES
        ]
        lines += _table(["model", "measure", *head], rows)
        lines += [f"### Differences to {analysis.reference}", ""]
        rows = [
            _estimate_row([model, name], e, True, flips=True)
            for model, by_measure in analysis.differences.items()
            for name, e in by_measure.items()
            if name in scores or name in EXTRA_MEASURES
        ]
        lines += _table(["model", "measure", *head, "seeds that flip"], rows)
        lines += [f"### Win rates against {analysis.reference}", ""]
        rows = [
            _win_row([model, name], w) for name, by_model in analysis.win_rates.items() for model, w in by_model.items()
        ]
        lines += _table(
            [
                "model",
                "score",
                "win rate",
                f"{level} interval",
                "prompts only",
                "seed sd",
                "per seed",
                "seeds that flip",
            ],
            rows,
        )
        flips = [
            f"- {model} on {name}: pooled {_num(e.pooled.mean, True)}; " + _flip_text(e.flips, True)
            for model, by_measure in analysis.differences.items()
            for name, e in by_measure.items()
            if e.flips and name in scores
        ]
        lines += ["### Conclusions that flip with the seed", "", *(flips or ["None: every seed agrees in sign."]), ""]
    return "\n".join(lines)
