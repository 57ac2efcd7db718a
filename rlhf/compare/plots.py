"""The report's figures as PNG bytes (matplotlib, Agg backend: no display needed).

Every model keeps one colour across all figures, in report order.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

CURVES = (
    ("reward/total", "reward (total)"),
    ("kl", "KL to reference"),
    ("kl_coef", "KL coefficient"),
    ("response/length", "response length (tokens)"),
    ("policy/clipfrac", "policy clip fraction"),
)
"""The ppo metrics drawn as training curves: (metrics.jsonl key, axis title)."""

LABELS = {"proxy": "proxy reward", "kl": "KL to reference (nats)", "length": "length (tokens)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: the report is written on servers and in CI
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 10, "figure.dpi": 110}
    )
    return plt


def colours(models: list[str]) -> dict[str, str]:
    """One colour per model (matplotlib's tab10, in report order)."""
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ]
    return {m: palette[i % len(palette)] for i, m in enumerate(models)}


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def score_distributions(measures: dict[str, dict[str, np.ndarray]], names: list[str]) -> bytes:
    """Violin plots of each score (and KL, length) per model, the mean marked with a white dot."""
    plt = _pyplot()
    models = list(measures)
    colour = colours(models)
    names = [n for n in names if any(n in measures[m] for m in models)]
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names) + 0.6, 3.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        present = [m for m in models if name in measures[m]]
        data = [measures[m][name].ravel() for m in present]
        positions = np.arange(len(present))
        if any(np.ptp(d) > 0 for d in data):
            parts = ax.violinplot(data, positions=positions, showextrema=False, widths=0.8)
            for body, model in zip(parts["bodies"], present, strict=True):
                body.set_facecolor(colour[model])
                body.set_edgecolor(colour[model])
                body.set_alpha(0.45)
        for x, values, model in zip(positions, data, present, strict=True):
            jitter = (np.random.default_rng(0).random(values.size) - 0.5) * 0.25
            ax.scatter(x + jitter, values, s=4, color=colour[model], alpha=0.35, linewidths=0)
            ax.scatter([x], [values.mean()], s=28, color="white", edgecolors="black", zorder=3)
        ax.set_xticks(positions, present)
        ax.set_title(LABELS.get(name, name))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def reward_vs_kl(measures: dict[str, dict[str, np.ndarray]], scores: list[str], reference: str) -> bytes | None:
    """Each score against KL to the reference: responses as dots, each model's mean as a large marker.

    Returns None when no model has a KL (nothing to draw).
    """
    models = [m for m in measures if "kl" in measures[m]]
    if not models or not scores:
        return None
    plt = _pyplot()
    colour = colours(list(measures))
    fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores) + 0.6, 3.3), squeeze=False)
    for ax, name in zip(axes[0], scores, strict=True):
        for model in models:
            kl, value = measures[model]["kl"].ravel(), measures[model][name].ravel()
            ax.scatter(kl, value, s=6, color=colour[model], alpha=0.3, linewidths=0)
            ax.scatter(
                [kl.mean()], [value.mean()], s=80, color=colour[model], edgecolors="black", zorder=3, label=model
            )
        ax.set_xlabel(f"KL to {reference} (nats per response)")
        ax.set_ylabel(LABELS.get(name, name))
        ax.set_title(f"{LABELS.get(name, name)} vs KL")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(frameon=False, loc="best")
    fig.tight_layout()
    return _png(fig)


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl file (lines that are not JSON objects are skipped)."""
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def training_curves(curves: dict[str, Path], all_models: list[str]) -> bytes | None:
    """The ppo training curves of every compared ppo model (reward, KL, KL coefficient, length, clip fraction)."""
    runs = {model: read_metrics(path) for model, path in curves.items()}
    runs = {model: records for model, records in runs.items() if records}
    if not runs:
        return None
    plt = _pyplot()
    colour = colours(all_models)
    fig, axes = plt.subplots(1, len(CURVES), figsize=(3.0 * len(CURVES), 2.7), squeeze=False)
    for ax, (key, title) in zip(axes[0], CURVES, strict=True):
        for model, records in runs.items():
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, color=colour[model], marker="o" if len(points) < 30 else None, ms=3, label=model)
        ax.set_title(title)
        ax.set_xlabel("ppo step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(frameon=False)
    fig.tight_layout()
    return _png(fig)


def frontier(runs: dict[str, dict], best_of_n: list[dict] | None = None, colour_of: dict[str, str] | None = None):
    """The over-optimisation frontier (Gao et al. 2022, fig. 1): each score against sqrt(KL to the reference).

    One panel per score (proxy and other trained-on terms first, then the gold judges). Each run is a line over its
    training points (hollow circle: the first, filled: the last), a star where a gold score peaks; with several runs
    a dotted line joins their last points in order of KL (the curve across e.g. swept KL coefficients, each labelled
    with its coefficient); best-of-n, where given, is the black reference curve (labelled with n).

    A pure function over the plain dicts of `rlhf.compare.frontier` (results.json "frontier"), so a report over
    several comparisons (a sweep) draws one figure from all their runs.

    Args:
        runs: {label: {"roles": {score: "proxy"|"reward"|"gold"}, "points": [{"step", "sqrt_kl", "scores": {score:
            value}}] in step order, "peaks": {score: {"sqrt_kl", "value"} or None}, optional "kl_coef"}}.
        best_of_n: [{"n", "sqrt_kl", "scores": {score: value}}] in order of n, or None.
        colour_of: {label: colour}; default: `colours` in the order of `runs`.

    Returns:
        PNG bytes, or None when no run has a point.
    """
    runs = {label: run for label, run in runs.items() if run.get("points")}
    if not runs:
        return None
    order = {"proxy": 0, "reward": 1, "gold": 2}
    roles = {score: role for run in runs.values() for score, role in run["roles"].items()}
    scores = sorted(roles, key=lambda s: order.get(roles[s], 3))
    colour = colour_of or colours(list(runs))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores) + 0.6, 3.4), squeeze=False)
    for ax, score in zip(axes[0], scores, strict=True):
        finals = []
        for label, run in runs.items():
            points = [(p["sqrt_kl"], p["scores"][score]) for p in run["points"] if p["scores"].get(score) is not None]
            if not points:
                continue
            x, y = zip(*points, strict=True)
            ax.plot(x, y, color=colour[label], marker="o", ms=3, lw=1.2, label=label)
            ax.scatter([x[0]], [y[0]], s=30, facecolors="white", edgecolors=colour[label], zorder=3)
            ax.scatter([x[-1]], [y[-1]], s=36, color=colour[label], edgecolors="black", zorder=3)
            finals.append((x[-1], y[-1], run.get("kl_coef")))
            best = (run.get("peaks") or {}).get(score)
            if roles[score] == "gold" and best is not None:
                ax.scatter(
                    [best["sqrt_kl"]],
                    [best["value"]],
                    marker="*",
                    s=150,
                    color=colour[label],
                    edgecolors="black",
                    zorder=4,
                )
        if len(finals) > 1:
            finals.sort()
            ax.plot([f[0] for f in finals], [f[1] for f in finals], ls=":", color="0.35", lw=1.2, zorder=2)
            for x, y, coef in finals:
                if coef is not None:
                    ax.annotate(f"β={coef:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
        bon = [b for b in best_of_n or [] if b["scores"].get(score) is not None]
        if bon:
            ax.plot(
                [b["sqrt_kl"] for b in bon],
                [b["scores"][score] for b in bon],
                color="black",
                ls="--",
                marker="x",
                ms=5,
                lw=1,
                label="best-of-n",
            )
            for b in bon:
                ax.annotate(
                    f"n={b['n']}",
                    (b["sqrt_kl"], b["scores"][score]),
                    textcoords="offset points",
                    xytext=(3, 4),
                    fontsize=7,
                )
        ax.set_xlabel("sqrt(KL to reference)")
        kind = {"proxy": "", "reward": " (trained on)", "gold": " (gold)"}.get(roles[score], "")
        ax.set_title(f"{LABELS.get(score, score)}{kind}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(frameon=False, loc="best", fontsize=7)
    fig.tight_layout()
    return _png(fig)
