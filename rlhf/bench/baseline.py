"""Runs measurements in fresh processes: ours (`rlhf.bench.worker`) and the TRL 1.10 reference, alternating.

The reference is `trl_ppo_baseline.py` (in the shared bench folder beside the repository) run by its own venv
(`.bench-venv`, TRL 1.10 with the same torch), pointed with `--models` at the directories our run uses. The VM's
speed drifts within minutes, so runs alternate (ours, TRL, ours, TRL, ...) and are compared by ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from rlhf.bench.probe import git_commit, load_average

REPO = Path(__file__).resolve().parents[2]
TRL_SCRIPT = REPO.parent / "shared" / "bench" / "trl_ppo_baseline.py"
TRL_PYTHON = REPO / ".bench-venv" / "bin" / "python"
RATIO_KEYS = ("episodes_per_s", "gen_tokens_per_s", "peak_rss_mb", "achieved_gflops", "pct_of_ceiling")


class BenchError(RuntimeError):
    """A measurement process failed or printed no result."""


def _result(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise BenchError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len("RESULT ") :])


def run_ours(workload: str, options: dict) -> dict:
    """One measurement of our stage in a fresh process (see `rlhf.bench.worker`)."""
    return _result([sys.executable, "-m", "rlhf.bench.worker", workload, json.dumps(options)], cwd=REPO)


def trl_mode(precision: str) -> str:
    """The reference script's `--mode` for a precision: fp32, or its TRL defaults (bf16 autocast on CPU)."""
    return {"fp32": "fp32", "bf16": "trl-defaults"}[precision]


def run_trl(
    size: str,
    models_root: Path,
    python: Path = TRL_PYTHON,
    script: Path = TRL_SCRIPT,
    mode: str = "fp32",
    no_gc_collect: bool = False,
) -> dict:
    """One run of the TRL reference on `models_root/<size>`, as a record comparable with ours.

    Args:
        mode: The reference's `--mode`: "fp32", or "trl-defaults" (bf16 autocast and gradient checkpointing).
        no_gc_collect: Patch the trainer's two `gc.collect()` calls per update into no-ops (the reference's
            `--no-gc-collect`; on CPU they are about half of its tiny run, so both numbers are reported).
    """
    if not Path(python).exists() or not Path(script).exists():
        raise BenchError(f"the TRL reference needs {python} and {script} (see the script's header for its venv)")
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-trl-") as tmp:
        env = {**os.environ, "BENCH_RESULTS": tmp, "BENCH_MODELS": str(models_root)}
        res = _result(
            [str(python), str(script), "run", "--size", size, "--models", str(models_root), "--mode", mode]
            + (["--no-gc-collect"] if no_gc_collect else []),
            cwd=Path(tmp),
            env=env,
        )
    res.update(
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        workload="ppo",
        implementation="trl-1.10",
        git=git_commit(),
        machine={"load_average_before": load_before, "load_average_after": load_average()},
    )
    return res


def ratios(ours: dict, trl: dict) -> dict[str, float]:
    """ours / TRL for the compared measures (above 1 is better for every one but peak RSS)."""
    out = {key: ours[key] / trl[key] for key in RATIO_KEYS if key in ours and key in trl and trl[key]}
    if "pct_of_ceiling_trl_accounting" in ours and trl.get("pct_of_ceiling"):
        out["pct_of_ceiling_trl_accounting"] = ours["pct_of_ceiling_trl_accounting"] / trl["pct_of_ceiling"]
    return out


def alternate(
    size: str,
    options: dict,
    repeats: int,
    models_root: Path,
    log=print,
    keep=lambda rec: None,
    no_gc_collect: bool = False,
) -> tuple[list, list, list]:
    """`repeats` rounds of ours and TRL in alternation; returns (ours, trl, per-round ratios).

    TRL runs in the precision of ours (`options["precision"]`, fp32 by default). With `no_gc_collect` each round
    also runs the reference with its `gc.collect()` calls patched out, right after the plain one; that round's ratios
    against it carry the suffix "/no_gc" and its records `no_gc_collect: true`. `keep` receives each record as soon
    as its run ends (so an interrupted series keeps what it measured).
    """
    mode = trl_mode(options.get("precision", "fp32"))
    ours, trl, pairs = [], [], []
    for rep in range(repeats):
        a = run_ours("ppo", options)
        keep(a)
        log(f"[{rep + 1}/{repeats}] ours {summary_line(a)}")
        ours.append(a)
        round_ratios = {}
        for no_gc in (False, True) if no_gc_collect else (False,):
            b = run_trl(size, models_root, mode=mode, no_gc_collect=no_gc)
            keep(b)
            label = "trl (no gc.collect)" if no_gc else "trl"
            log(f"[{rep + 1}/{repeats}] {label:<4} {summary_line(b)}")
            trl.append(b)
            suffix = "/no_gc" if no_gc else ""
            round_ratios.update({k + suffix: v for k, v in ratios(a, b).items()})
        pairs.append(round_ratios)
        log(f"[{rep + 1}/{repeats}] ours/trl " + ", ".join(f"{k} {v:.2f}" for k, v in pairs[-1].items()))
    return ours, trl, pairs


def median_ratios(pairs: list[dict[str, float]]) -> dict[str, float]:
    """Median over pairs of each ratio."""
    keys = sorted({k for p in pairs for k in p})
    return {k: statistics.median(p[k] for p in pairs if k in p) for k in keys}


def summary_line(rec: dict) -> str:
    """One line: episodes/s, tokens/s, FLOP/s and its share of the in-run ceiling, peak RSS, load."""
    ceiling = max(rec["matmul_ceiling_gflops"].values())
    load = rec.get("machine", {}).get("load_average_before", ["?"])[0]
    return (
        f"{rec['episodes_per_s']:.2f} ep/s, {rec['gen_tokens_per_s']:.0f} gen tok/s, "
        f"{rec['achieved_gflops']:.1f} GFLOP/s ({rec['pct_of_ceiling']:.0f}% of {ceiling:.0f}), "
        f"peak RSS {rec['peak_rss_mb']:.0f} MB, train {rec['train_s']:.1f} s, load {load}"
    )
