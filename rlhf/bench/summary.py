"""One `name value` line per number of benchmark records: `python -m rlhf.bench.summary RESULTS.jsonl [...]`.

scripts/gpu_check.sh prints these after each benchmark, so a run's numbers read (and grep) without parsing JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def lines(rec: dict) -> list[str]:
    """The summary lines of one record (throughput: every measured number; ppo: rates, padding and memory)."""
    if rec["workload"] == "throughput":
        from rlhf.bench.throughput import summary_lines

        return summary_lines(rec)
    s = rec["settings"]
    prefix = f"{rec['workload']}.{s['size']}"
    keys = ("episodes_per_s", "gen_tokens_per_s", "gen_only_tokens_per_s", "tokens_per_s", "pairs_per_s")
    out = [f"{prefix}.{key} {rec[key]:.6g}" for key in keys if key in rec]
    out += [f"{prefix}.train_s {rec['train_s']:.6g}", f"{prefix}.peak_rss_mb {rec['peak_rss_mb']:.6g}"]
    # Older records lack these: they are printed where the record has them.
    for phase, cell in rec.get("padding", {}).items():
        for key in ("useful_flops", "padded_flops", "padded_token_share"):
            out.append(f"{prefix}.{phase}.{key} {cell[key]:.6g}")
    for label, reading in rec.get("memory_by_phase_mb", {}).items():
        out += [f"{prefix}.memory.{label}.{key} {reading[key]:.6g}" for key in ("hwm_mb", "rss_mb")]
    return out


def main(argv: list[str]) -> int:
    for name in argv:
        for row in Path(name).read_text().splitlines():
            if row.strip():
                print("\n".join(lines(json.loads(row))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
