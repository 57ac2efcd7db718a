"""One benchmark measurement in a fresh process: `python -m rlhf.bench.worker WORKLOAD '{json options}'`.

`device` in the options: "auto", "cpu" or "cuda" (the throughput workload places its model itself; a stage
workload asked for "cpu" runs with the CUDA devices hidden).

Prints `RESULT {json}` (the record of `rlhf.bench.results.record`) as its last line, like the TRL reference script.
"""

from __future__ import annotations

import json
import os
import sys

STAGES = ("ppo", "sft", "reward")


def main(argv: list[str]) -> int:
    from rlhf.bench.probe import load_average

    load_before = load_average()
    workload, options = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    if workload in STAGES and options.pop("device", "auto") == "cpu":
        # The stages' accelerator takes CUDA whenever it sees one: hiding the devices (before torch is imported)
        # is how a stage runs on the CPU of a GPU machine.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from rlhf.bench.results import record
    from rlhf.bench.workloads import measure

    rec = record(workload, measure(workload, **options), load_before)
    print("RESULT " + json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
