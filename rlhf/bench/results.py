"""The result record every benchmark run prints, and `bench/results.jsonl` where reported runs are appended."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from rlhf.bench.probe import git_commit, machine, versions

RESULTS_FILE = Path(__file__).resolve().parents[2] / "bench" / "results.jsonl"
# Every record has these; a workload adds its own measures (ppo: episodes_per_s, gen_tokens_per_s, phase_s, ...).
REQUIRED_FIELDS = (
    "date",
    "workload",
    "implementation",
    "git",
    "machine",
    "versions",
    "settings",
    "train_s",
    "flops",
    "achieved_gflops",
    "pct_of_ceiling",
    "matmul_ceiling_gflops",
    "peak_rss_mb",
)
PPO_FIELDS = ("episodes_per_s", "gen_tokens_per_s", "phase_s", "forward_s", "flops_trl_accounting")


def record(workload: str, measures: dict, load_before: list[float], implementation: str = "rlhf") -> dict:
    """A result record: the measures plus date, commit, machine (load before and after), library versions."""
    info = machine()
    info["load_average_before"] = load_before
    info["load_average_after"] = info.pop("load_average")
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "workload": workload,
        "implementation": implementation,
        "git": git_commit(),
        "machine": info,
        "versions": versions(),
        **measures,
    }


def missing_fields(rec: dict) -> list[str]:
    """Required fields absent from a record (ppo records need the ppo fields too)."""
    needed = REQUIRED_FIELDS + (PPO_FIELDS if rec.get("workload") == "ppo" else ())
    return [name for name in needed if name not in rec]


def append(records: list[dict], path: Path = RESULTS_FILE) -> Path:
    """Appends records, one JSON object a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for rec in records:
            handle.write(json.dumps(rec, sort_keys=True) + "\n")
    return path
