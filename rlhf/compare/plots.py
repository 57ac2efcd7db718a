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
