"""The report's judge sections, from results.json: what each judge looks at, rule by rule, and how far to trust it.

- per-judge, per-rule breakdown: the mean of each rule of a judge's `explain` per model (rules that do not apply
  to a reply are left out of its mean), with the bootstrap interval over prompts;
- match rates: the share of replies that serve the customer's intent and that greet the signed name (the content
  judge's `intent` and `name` rules at or above the match threshold), per model, with intervals;
- what each judge shares with the training signal: every proxy term and judge, in its own words;
- the learned proxy's held-out accuracy per preference category, from its reward stage's manifest.

Pure functions of the results dict: sections as titled tables of (text, detail, tone) cells that `report` renders
as Markdown and HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Cell = tuple[str, str, str]


@dataclass
class Section:
    """One titled block of the report: a note, tables (caption, header, rows) and bullet items."""

    title: str
    note: str = ""
    tables: list[tuple[str, list[str], list[list[Cell]]]] = field(default_factory=list)
    items: list[str] = field(default_factory=list)


def _estimate(est: dict[str, Any] | None, percent: bool = False) -> Cell:
    if est is None or est["mean"] is None:
        return ("n/a", "", "")
    if percent:
        text = f"{est['mean']:.0%}"
        detail = f"[{est['low']:.0%}, {est['high']:.0%}] n={est['n_responses']}"
    else:
        text = f"{est['mean']:.3f}"
        detail = f"[{est['low']:.3f}, {est['high']:.3f}] n={est['n_responses']}"
    return (text, detail, "")


def rule_breakdown(results: dict[str, Any]) -> Section | None:
    """Per judge with per-rule scores: a table of models by rules (mean, interval, responses the rule applied to)."""
    if not results.get("rules"):
        return None
    section = Section(
        "Judges rule by rule",
        "mean of each rule over the replies it applies to (a rule that does not apply, e.g. the name rule on an "
        "unsigned message, is left out), with the bootstrap interval over prompts; judges without a per-rule "
        "`explain` are not broken down",
    )
    for judge, by_model in results["rules"].items():
        rules = list(next(iter(by_model.values())))
        rows = [
            [(model, "", ""), *[_estimate(by_rule[r]["mean"]) for r in rules]] for model, by_rule in by_model.items()
        ]
        section.tables.append((f"judge '{judge}'", ["model", *rules], rows))
    return section


def match_rates(results: dict[str, Any]) -> Section | None:
    """Intent-match and name-match rates (the `match_rules` of every judge that has them), per model."""
    columns = [
        (judge, rule)
        for judge, by_model in (results.get("rules") or {}).items()
        for rule in results.get("match_rules", [])
        if rule in next(iter(by_model.values()))
    ]
    if not columns:
        return None
    threshold = results["match_threshold"]
    models = list(results["summary"])
    rows = [
        [(model, "", ""), *[_estimate(results["rules"][j][model][r]["match"], percent=True) for j, r in columns]]
        for model in models
    ]
    return Section(
        "Intent match and name match",
        f"share of replies whose rule score is at least {threshold:g}: 'intent' = the reply serves the customer's "
        "intent (the prompt's recorded intent where the prompt file has it); 'name' = among messages the customer "
        f"signed, the reply greets that name; {results['confidence']:.0%} bootstrap interval over prompts, n = replies "
        "the rule applies to",
        tables=[("", ["model", *[f"{r} match ({j})" for j, r in columns]], rows)],
    )


def shared_with_training(results: dict[str, Any]) -> Section | None:
    """Every proxy term and judge with its statement of what it shares with the training signal."""
    shares = results.get("shares") or []
    if not shares:
        return None
    items = [f"{s['name']} ({s['role']}, {s['source']}): {s['statement']}" for s in shares]
    return Section(
        "What each judge shares with the training signal",
        "a judge that shares its rules with the labels the reward model learned from cannot tell reward hacking "
        "from progress; programmatic scorers state this themselves (SHARES_WITH_TRAINING), 'not declared' "
        "otherwise",
        items=items,
    )


def reward_accuracy(results: dict[str, Any]) -> Section | None:
    """The learned proxy's held-out preference accuracy, overall and per category (from the reward manifest)."""
    found = results.get("reward_accuracy") or {}
    if not found:
        return None
    section = Section(
        "Reward model held-out accuracy",
        "from the reward stage's manifest: the share of held-out pairs where the reward model scores the chosen "
        "reply above the rejected one, per category of pair and, under each category, per rule the rejected reply "
        "breaks (category/rule); a category or rule near 0.5 is one the proxy cannot see",
    )
    for name, entry in found.items():
        overall = entry["accuracy"]
        rows = [[("all", "", ""), (_number(overall), "", ""), ("", "", ""), (str(entry.get("pairs") or ""), "", "")]]
        by_rule = entry.get("accuracy_by_rule") or {}
        for category, est in sorted(entry["accuracy_by_category"].items()):
            rows.append(_accuracy_row(category, est))
            # The category's rules right under it: a mean over well-separated and unseen rules hides the unseen ones.
            rows += [
                _accuracy_row(label, by_rule[label]) for label in sorted(by_rule) if label.startswith(f"{category}/")
            ]
        if not entry["accuracy_by_category"]:
            section.items.append(f"{name}: the reward stage recorded no accuracy per category")
        section.tables.append((f"proxy '{name}' ({entry['model']})", ["category", "accuracy", "margin", "n"], rows))
    return section


def _accuracy_row(label: str, est: dict[str, Any]) -> list[tuple[str, str, str]]:
    """One row of the reward-accuracy table; accuracy below 0.75 is marked."""
    return [
        (label, "", ""),
        (_number(est.get("accuracy")), "", "bad" if (est.get("accuracy") or 1) < 0.75 else ""),
        (_number(est.get("margin")), "", ""),
        (str(est.get("n", "")), "", ""),
    ]


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def sections(results: dict[str, Any]) -> list[Section]:
    """Every judge section that has something to show, in report order."""
    built = [
        match_rates(results),
        rule_breakdown(results),
        shared_with_training(results),
        reward_accuracy(results),
    ]
    return [s for s in built if s is not None]
