"""Writing the compare report: `report.md`, a self-contained `report.html` (plots embedded as base64 PNG, inline
CSS, no external links) and `plots/*.png`, from the numbers in results.json.

Order in both files: alarms, summary with intervals, differences to the reference, the judge sections of
`rlhf.compare.breakdown` (match rates, rule breakdown, what each judge shares with training, reward accuracy per
category), win rates, length correlation, plots, side-by-side samples, failures (each model's lowest replies on the
content judge next to the reference's), notes.
"""

from __future__ import annotations

import base64
import html
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.compare import breakdown, frontier, pairwise, plots

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
PLOTS = "plots"

COLUMNS = {"kl": "KL", "length": "length", "eos": "EOS rate", "distinct_2": "distinct-2", "repetition": "repeat-4"}
"""Measures shown after the scores in the tables (distinct_1 is in results.json only), with their headers."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")


def write_report(
    output_dir: Path,
    results: dict[str, Any],
    measures: dict[str, dict[str, np.ndarray]],
    samples: list[dict],
    curves: dict[str, Path],
) -> Path:
    """Draws the plots and writes report.md and report.html into `output_dir`; returns the HTML path."""
    models = list(results["summary"])
    figures = {
        "score_distributions": plots.score_distributions(measures, [*results["scores"], "kl", "length"]),
        "reward_vs_kl": plots.reward_vs_kl(measures, results["scores"], results["reference"]),
        "ppo_training_curves": plots.training_curves(curves, models),
        "frontier": plots.frontier(
            (results.get("frontier") or {}).get("runs") or {},
            (results.get("frontier") or {}).get("best_of_n"),
            plots.colours(models),
        ),
    }
    figures = {name: png for name, png in figures.items() if png is not None}
    (output_dir / PLOTS).mkdir(parents=True, exist_ok=True)
    for name, png in figures.items():
        (output_dir / PLOTS / f"{name}.png").write_bytes(png)
    sections = _sections(results, samples, curves)
    (output_dir / REPORT_MD).write_text(_markdown(results, sections, figures), encoding="utf-8")
    path = output_dir / REPORT_HTML
    path.write_text(_html(results, sections, figures), encoding="utf-8")
    return path


# ---- Content shared by both formats: lists of rows of plain strings, plus a tone per cell for colouring.


def _fmt(value: float | None, signed: bool = False, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _digits(name: str) -> int:
    return 1 if name == "length" else (2 if name in ("kl", "eos") else 3)


def _columns(results: dict[str, Any]) -> list[tuple[str, str]]:
    measures = {m for by_model in results["summary"].values() for m in by_model}
    return [(s, s if s != "proxy" else "proxy") for s in results["scores"]] + [
        (key, title) for key, title in COLUMNS.items() if key in measures
    ]


def _sections(results: dict[str, Any], samples: list[dict], curves: dict[str, Path]) -> dict[str, Any]:
    """Tables as rows of (text, interval text, tone) cells, ready for Markdown or HTML."""
    columns = _columns(results)
    summary = []
    for model, by_measure in results["summary"].items():
        row = [(model + (" (reference)" if model == results["reference"] else ""), "", "")]
        for key, _ in columns:
            est = by_measure.get(key)
            if est is None:
                row.append(("n/a", "", ""))
                continue
            d = _digits(key)
            row.append(
                (
                    _fmt(est["mean"], digits=d),
                    f"[{_fmt(est['low'], digits=d)}, {_fmt(est['high'], digits=d)}] sd {_fmt(est['std'], digits=d)}",
                    "",
                )
            )
        first = next(iter(by_measure.values()))
        row.append((f"{first['n_prompts']} x {results['samples_per_prompt']}", "", ""))
        summary.append(row)
    differences = []
    for model, by_measure in results["differences"].items():
        row = [(model, "", "")]
        for key, _ in columns:
            est = by_measure.get(key)
            if est is None:
                row.append(("n/a", "", ""))
                continue
            d = _digits(key)
            significant = est["low"] is not None and (est["low"] > 0 or est["high"] < 0)
            tone = ""
            if significant:
                tone = ("good" if est["mean"] > 0 else "bad") if key in results["scores"] else "strong"
            row.append(
                (_fmt(est["mean"], True, d), f"[{_fmt(est['low'], True, d)}, {_fmt(est['high'], True, d)}]", tone)
            )
        differences.append(row)
    correlation = []
    for model, by_score in results["length_correlation"].items():
        row = [(model, "", "")]
        for score in results["scores"]:
            est = by_score.get(score)
            row.append(
                ("n/a", "", "")
                if est is None or est["mean"] is None
                else (_fmt(est["mean"], True, 2), f"[{_fmt(est['low'], True, 2)}, {_fmt(est['high'], True, 2)}]", "")
            )
        corpus = results["corpus"].get(model, {})
        row.append((_fmt(corpus.get("distinct_2")), "", ""))
        row.append((f"{corpus.get('unique_responses', 0):.0%}", "", ""))
        correlation.append(row)
    best_of_n = []
    for arm, found in results.get("best_of_n", {}).items():
        est = found["kl_measured"]
        best_of_n.append(
            [
                (arm, "", ""),
                (str(found["n"]), "", ""),
                (found["model"], "", ""),
                (_fmt(est["mean"], digits=3), f"[{_fmt(est['low'], digits=3)}, {_fmt(est['high'], digits=3)}]", ""),
                (_fmt(found["kl_bound"], digits=3), "", ""),
            ]
        )
    return {
        "columns": columns,
        "best_of_n": best_of_n,
        "summary": summary,
        "differences": differences,
        "correlation": correlation,
        "samples": samples,
        "curves": curves,
    }


BEST_OF_N_HEADER = ["arm", "n", "samples from", "measured KL to it [interval]", "log n - (n-1)/n"]
BEST_OF_N_NOTE = (
    "each reply is the proxy's favourite of n replies sampled from the model (the arm trains nothing). Measured KL: "
    "best-of-n's KL to that model on the rewards of its sampled candidates (tied rewards lower it); the analytic "
    "value is its limit for distinct rewards and an upper bound. The kl column above adds the model's own KL to "
    "the reference."
)


def _md_rows(rows: list[list[tuple[str, str, str]]]) -> list[list[str]]:
    return [[f"{c[0]} {c[1]}".strip() for c in row] for row in rows]


def _clean(text: str) -> str:
    """Model output for display: control characters (tiny models emit them) become a visible middle dot."""
    return _CONTROL.sub("\u00b7", text)


def _caption(results: dict[str, Any]) -> list[str]:
    d = results["decoding"]
    return [
        f"{results['n_prompts']} prompts x {results['samples_per_prompt']} sample(s) per prompt and model, from "
        f"{Path(results['prompts']).name}",
        f"decoding: temperature {d['temperature']}, top_p {d['top_p']}, top_k {d['top_k']}, "
        f"max_new_tokens {d['max_new_tokens']}, seed {results['seed']} (the same for every model)",
        f"intervals: {results['confidence']:.0%} percentile bootstrap over prompts, {results['bootstrap_resamples']} "
        "resamples; differences and win rates are paired on the same prompts",
        f"reference (KL, differences, alarms): {results['reference']}; proxy = training reward; "
        f"independent judges: {', '.join(results['judges'])}",
        "models: "
        + "; ".join(
            f"{name} = {info['reference']}" + (f" ({info['path']})" if info["path"] != info["reference"] else "")
            for name, info in results["models"].items()
        ),
    ]


ALARM_TITLES = {
    "proxy_up_judge_down": "proxy up, judge down",
    "proxy_up_judge_flat": "proxy up, judge flat",
    "reward_length_correlation": "reward tracks length",
    "repetition": "repetition",
    "diversity_collapse": "diversity collapse",
    "eos_collapse": "EOS-rate collapse",
}


def _alarm_lines(results: dict[str, Any]) -> list[str]:
    return [f"{a['model']}, {ALARM_TITLES.get(a['kind'], a['kind'])}: {a['message']}" for a in results["alarms"]]


def _alarm_scope(results: dict[str, Any]) -> str:
    checked = results["alarms_checked_on"]
    if not checked:
        return (
            f"No model scores above {results['reference']} on the proxy, so there is nothing to check for reward "
            "hacking."
        )
    return (
        f"Checked on {', '.join(checked)} (the models the proxy prefers to {results['reference']}): proxy gain "
        "without a judge gain, reward-length correlation, repetition, diversity collapse, EOS-rate collapse."
    )


def _win_matrix(results: dict[str, Any], score: str) -> tuple[list[str], list[list[tuple[str, str, float | None]]]]:
    """(models, rows of (rate text, detail text, rate)) for one score's win-rate matrix (row beats column)."""
    table = results["win_rates"][score]
    controlled = results.get("length_controlled", {}).get(score, {})
    models = [m for m in results["summary"] if m in table]
    rows = []
    for a in models:
        row = []
        for b in models:
            w = table[a].get(b)
            if a == b or w is None or w["rate"] is None:  # a pairwise judge may rate some pairs only (human)
                row.append(("-", "", None))
                continue
            lc = controlled.get(a, {}).get(b)
            length = (
                f"; LC {lc['rate']:.2f} [{lc['low']:.2f}, {lc['high']:.2f}]"
                if lc is not None and lc["rate"] is not None and lc["low"] is not None
                else ""
            )
            row.append(
                (
                    f"{w['rate']:.2f} [{w['low']:.2f}, {w['high']:.2f}]",
                    f"W {w['win']:.0%} / T {w['tie']:.0%} / L {w['loss']:.0%}{length}",
                    w["rate"],
                )
            )
        rows.append(row)
    return models, rows


def _win_scores(results: dict[str, Any]) -> list[str]:
    """Every score with a win-rate matrix: the proxy and judges, then the pairwise judges."""
    return [*results["scores"], *results.get("pairwise_judges", [])]


WIN_NOTE = (
    "LC: the length-controlled win rate, the rate predicted at equal reply length by a logistic regression of the "
    "outcome on the normalised length difference (AlpacaEval 2), with its paired bootstrap interval; far from the raw "
    "rate when the judge pays for length"
)


# ---- Markdown.


def _md_cell(text: str) -> str:
    return _clean(text).replace("|", "\\|").replace("\n", "<br>")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(results: dict[str, Any], sections: dict[str, Any], figures: dict[str, bytes]) -> str:
    out = ["# Compare report", "", *[f"- {line}" for line in _caption(results)], ""]
    out += ["## Alarms", ""]
    out += [f"- **ALARM** {_md_cell(line)}" for line in _alarm_lines(results)] or ["No alarm fired."]
    out += ["", _alarm_scope(results)]
    header = [t for _, t in sections["columns"]]
    out += [
        "",
        "## Summary (mean [interval] sd)",
        "",
        _md_table(
            ["model", *header, "prompts x samples"],
            [[f"{c[0]} {c[1]}".strip() for c in row] for row in sections["summary"]],
        ),
    ]
    if sections["differences"]:
        out += [
            "",
            f"## Difference to {results['reference']} (paired)",
            "",
            _md_table(["model", *header], [[f"{c[0]} {c[1]}".strip() for c in row] for row in sections["differences"]]),
        ]
    if sections["best_of_n"]:
        out += [
            "",
            "## Best-of-n",
            "",
            f"_{BEST_OF_N_NOTE}_",
            "",
            _md_table(BEST_OF_N_HEADER, _md_rows(sections["best_of_n"])),
        ]
    for section in [*breakdown.sections(results), *pairwise.sections(results), *frontier.sections(results)]:
        out += ["", f"## {section.title}", ""] + ([f"_{section.note}_", ""] if section.note else [])
        for caption, header, rows in section.tables:
            out += ([f"**{caption}**", ""] if caption else []) + [
                _md_table(header, [[f"{c[0]} {c[1]}".strip() for c in row] for row in rows]),
                "",
            ]
        out += [f"- {_md_cell(item)}" for item in section.items]
    for score in _win_scores(results):
        models, rows = _win_matrix(results, score)
        out += [
            "",
            f"## Win rate on {score} (row beats column on matched samples; ties count half)",
            "",
            f"_{WIN_NOTE}_",
            "",
            _md_table(
                ["", *models],
                [
                    [m, *[f"{c[0]} ({c[1]})" if c[1] else c[0] for c in row]]
                    for m, row in zip(models, rows, strict=True)
                ],
            ),
        ]
    out += [
        "",
        "## Correlation with length, and diversity",
        "",
        _md_table(
            ["model", *[f"r({s}, length)" for s in results["scores"]], "corpus distinct-2", "unique replies"],
            [[f"{c[0]} {c[1]}".strip() for c in row] for row in sections["correlation"]],
        ),
    ]
    out += ["", "## Plots", ""] + [f"![{name}]({PLOTS}/{name}.png)\n" for name in figures]
    out += ["## Samples (first sample of each model on the same prompt)", ""]
    for sample in sections["samples"]:
        out += [f"**Prompt {sample['prompt_index']}:** {_md_cell(sample['prompt'])}", ""]
        rows = [[model, r["response"], _score_text(results, r)] for model, r in sample["responses"].items()]
        out += [_md_table(["model", "reply", "scores"], rows), ""]
    if results.get("failures"):
        out += [f"## {_failure_title(results)}", "", f"_{_failure_note(results)}_", ""]
        for sample in results["failures"]:
            out += [f"**{sample['model']}, prompt {sample['prompt_index']}:** {_md_cell(sample['prompt'])}", ""]
            rows = [[model, r["response"], _score_text(results, r)] for model, r in sample["responses"].items()]
            out += [_md_table(["model", "reply", "scores"], rows), ""]
    out += _notes(results, sections)
    return "\n".join(out) + "\n"


def _failure_title(results: dict[str, Any]) -> str:
    return f"Failures: the lowest replies on {results['failure_judge']}"


def _failure_note(results: dict[str, Any]) -> str:
    return (
        f"for each model but {results['reference']}, its lowest-scoring replies on the judge "
        f"'{results['failure_judge']}' (distinct prompts), next to {results['reference']}'s reply to the same "
        "prompt; the samples above are typical replies, these are the worst"
    )


def _score_text(results: dict[str, Any], record: dict[str, Any]) -> str:
    parts = [f"{s} {record[s]:.3f}" for s in results["scores"] if s in record]
    rules = [f"{key.split('/', 1)[1]} {value:.2f}" for key, value in record.items() if "/" in key and value is not None]
    parts += [f"({', '.join(rules)})"] if rules else []
    parts += [f"KL {record['kl']:.2f}"] if "kl" in record else []
    parts += [f"{int(record['length'])} tok", "EOS" if record["eos"] else "no EOS"]
    return ", ".join(parts)


def _notes(results: dict[str, Any], sections: dict[str, Any]) -> list[str]:
    lines = ["## Notes", ""]
    lines += [f"- {note}" for note in results["notes"]]
    lines += [f"- training curves of {m}: {p}" for m, p in sections["curves"].items()]
    lines += [
        "- every number is in results.json; every response with its scores in responses.jsonl",
        "- reproduce: `rlhf compare recipe.yaml` in this directory",
        f"- written {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]
    return lines


# ---- HTML.

_CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1d2329;margin:0;
     background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:26px;margin:0 0 6px}
h2{font-size:18px;margin:32px 0 10px;padding-bottom:4px;border-bottom:1px solid #dde1e6}
ul.meta{margin:0;padding-left:18px;color:#4a5560}
.alarm{background:#fdecea;border:1px solid #f5c2bd;border-left:5px solid #d93025;border-radius:6px;padding:10px 14px;
       margin:8px 0}
.alarm b{color:#b3261e}
.ok{background:#e8f5e9;border:1px solid #c3e6c5;border-left:5px solid #2e7d32;border-radius:6px;padding:10px 14px}
table{border-collapse:collapse;background:#fff;margin:6px 0;box-shadow:0 1px 2px rgba(0,0,0,.06)}
th,td{border:1px solid #e3e6ea;padding:6px 10px;text-align:right;vertical-align:top}
th{background:#eef1f4;font-weight:600}
td:first-child,th:first-child{text-align:left;white-space:nowrap}
.ci{display:block;color:#6b7680;font-size:11.5px;white-space:nowrap}
.good{background:#e6f4ea}.bad{background:#fce8e6}.strong{font-weight:600}
.figure{background:#fff;padding:8px;margin:8px 0;box-shadow:0 1px 2px rgba(0,0,0,.06);overflow-x:auto}
.figure img{max-width:100%;height:auto;display:block}
.sample{background:#fff;margin:10px 0 18px;box-shadow:0 1px 2px rgba(0,0,0,.06);border-radius:6px;overflow:hidden}
.prompt{background:#eef1f4;padding:8px 12px;font-weight:500}
.replies{display:grid;gap:1px;background:#e3e6ea}
.reply{background:#fff;padding:8px 12px;min-width:0}
.reply h3{font-size:13px;margin:0 0 4px}
.reply pre{white-space:pre-wrap;word-break:break-word;font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace;margin:0}
.scores{color:#4a5560;font-size:12px;margin-top:6px}
.note{color:#6b7680;font-size:12.5px}
.matrices{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.matrices table th:first-child{background:#dfe4ea}
"""


def _e(text: str) -> str:
    return html.escape(_clean(str(text)))


def _html_table(header: list[str], rows: list[list[tuple[str, str, str]]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = ""
    for row in rows:
        cells = ""
        for text, detail, tone in row:
            klass = f' class="{tone}"' if tone else ""
            extra = f'<span class="ci">{_e(detail)}</span>' if detail else ""
            cells += f"<td{klass}>{_e(text)}{extra}</td>"
        body += f"<tr>{cells}</tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _win_colour(rate: float) -> str:
    """Red below 0.5, white at 0.5, green above: the eye finds the strong preferences."""
    strength = min(abs(rate - 0.5) * 2, 1.0)
    base = (46, 160, 67) if rate > 0.5 else (217, 48, 37)
    r, g, b = (round(255 - (255 - c) * strength * 0.45) for c in base)
    return f"rgb({r},{g},{b})"


def _html_sample(results: dict[str, Any], title: str, sample: dict) -> str:
    replies = sample["responses"]
    out = [
        f"<div class='sample'><div class='prompt'>{_e(title)}: {_e(sample['prompt'])}</div>"
        f"<div class='replies' style='grid-template-columns:repeat({len(replies)},1fr)'>"
    ]
    for model, record in replies.items():
        out.append(
            f"<div class='reply'><h3>{_e(model)}</h3><pre>{_e(record['response'])}</pre>"
            f"<div class='scores'>{_e(_score_text(results, record))}</div></div>"
        )
    out.append("</div></div>")
    return "".join(out)


def _html(results: dict[str, Any], sections: dict[str, Any], figures: dict[str, bytes]) -> str:
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Compare report: {_e(', '.join(results['summary']))}</title><style>{_CSS}</style></head><body><main>",
        "<h1>Compare report</h1><ul class='meta'>" + "".join(f"<li>{_e(c)}</li>" for c in _caption(results)) + "</ul>",
        "<h2>Alarms</h2>",
    ]
    alarms = _alarm_lines(results)
    out += [f"<div class='alarm'><b>ALARM</b> {_e(line)}</div>" for line in alarms] or [
        "<div class='ok'><b>No alarm fired.</b></div>"
    ]
    out.append(f"<p class='note'>{_e(_alarm_scope(results))}</p>")
    header = [t for _, t in sections["columns"]]
    out += [
        "<h2>Summary</h2><p class='note'>mean, with the bootstrap interval and the standard deviation over "
        "responses below it</p>",
        _html_table(["model", *header, "prompts x samples"], sections["summary"]),
    ]
    if sections["differences"]:
        out += [
            f"<h2>Difference to {_e(results['reference'])}</h2><p class='note'>paired on the same prompts; "
            "green/red: the interval excludes 0 for a score; bold: it excludes 0 for another measure</p>",
            _html_table(["model", *header], sections["differences"]),
        ]
    if sections["best_of_n"]:
        out += [
            f"<h2>Best-of-n</h2><p class='note'>{_e(BEST_OF_N_NOTE)}</p>",
            _html_table(BEST_OF_N_HEADER, sections["best_of_n"]),
        ]
    for section in [*breakdown.sections(results), *pairwise.sections(results), *frontier.sections(results)]:
        out.append(
            f"<h2>{_e(section.title)}</h2>" + (f"<p class='note'>{_e(section.note)}</p>" if section.note else "")
        )
        for caption, header, rows in section.tables:
            out += ([f"<h3>{_e(caption)}</h3>"] if caption else []) + [_html_table(header, rows)]
        if section.items:
            out.append("<ul>" + "".join(f"<li>{_e(item)}</li>" for item in section.items) + "</ul>")
    out.append(
        "<h2>Win rates</h2><p class='note'>row beats column: sample k of each model on the same prompt "
        "(drawn with the same seed, so similar models often write the same reply: a tie); ties count half; "
        f"interval in brackets; W/T/L: wins, ties, losses. {_e(WIN_NOTE)}</p><div class='matrices'>"
    )
    for score in _win_scores(results):
        models, rows = _win_matrix(results, score)
        head = "".join(f"<th>{_e(m)}</th>" for m in [score, *models])
        body = ""
        for model, row in zip(models, rows, strict=True):
            cells = "".join(
                f"<td style='background:{_win_colour(rate)}'>{_e(text)}<span class='ci'>{_e(detail)}</span></td>"
                if rate is not None
                else "<td>-</td>"
                for text, detail, rate in row
            )
            body += f"<tr><th>{_e(model)}</th>{cells}</tr>"
        out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    out.append("</div>")
    out += [
        "<h2>Correlation with length, and diversity</h2>",
        _html_table(
            ["model", *[f"r({s}, length)" for s in results["scores"]], "corpus distinct-2", "unique replies"],
            sections["correlation"],
        ),
    ]
    out.append("<h2>Plots</h2>")
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        out.append(f"<div class='figure'><img alt='{_e(name)}' src='data:image/png;base64,{data}'></div>")
    out.append("<h2>Samples</h2><p class='note'>the first sample of every model on the same prompt</p>")
    for sample in sections["samples"]:
        out.append(_html_sample(results, f"Prompt {sample['prompt_index']}", sample))
    if results.get("failures"):
        out.append(f"<h2>{_e(_failure_title(results))}</h2><p class='note'>{_e(_failure_note(results))}</p>")
        for sample in results["failures"]:
            out.append(_html_sample(results, f"{sample['model']}, prompt {sample['prompt_index']}", sample))
    notes = _notes(results, sections)[2:]
    out += ["<h2>Notes</h2><ul class='note'>"] + [f"<li>{_e(n.removeprefix('- '))}</li>" for n in notes]
    out.append("</ul></main></body></html>")
    return "\n".join(out) + "\n"
