"""The pairs stage: `rlhf voice pairs` inside a pipeline, so a run can start from a company's raw support logs.

It reads the logs and the voice spec its recipe names, and writes the data files of the later stages into
`final/` (sft_train.jsonl, sft_eval.jsonl, prefs_train.jsonl, prefs_eval.jsonl, ppo_prompts.jsonl,
eval_prompts.jsonl, with summary.json), next to recipe.yaml, metrics.jsonl (one line: the summary) and
manifest.json (the logs' and the spec's hashes, so a changed file runs the stage again). Later stages name a file as
`stage:pairs/sft_train.jsonl`. Standard library and the voice toolkit only: no model is loaded.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from rlhf.artifacts import FINAL, METRICS, data_hashes, read_manifest, write_atomic, write_manifest, write_recipe
from rlhf.config import PairsStage

logger = logging.getLogger("rlhf")
WAIT_S = 600  # how long the other ranks of a launch wait for the main process's files


def check(cfg: PairsStage) -> str:
    """What `rlhf validate` checks without writing anything: the spec compiles and every log row is readable.

    Returns:
        One summary line.

    Raises:
        rlhf.recipe.RecipeError: The spec is malformed or contradicts itself.
        rlhf.data.readers.DataError: A log row lacks a column, has an empty message or reply, or is not UTF-8.
    """
    from rlhf.voice.pairs import needed_columns, read_logs
    from rlhf.voice.scorer import load_scorer

    load_scorer(cfg.spec)
    rows = read_logs(cfg.logs, cfg.columns, needed_columns(cfg))
    return f"pairs: logs {cfg.logs} ({len(rows)} rows); spec {cfg.spec}; output {cfg.output_dir}"


def run(cfg: PairsStage) -> Path:
    """Writes the data files from the logs; returns the output directory."""
    from rlhf.distributed import is_main_process
    from rlhf.voice.pairs import make_pairs, needed_columns, read_logs, summary_lines
    from rlhf.voice.scorer import load_scorer

    output_dir, started = Path(cfg.output_dir), time.time()
    if not is_main_process():
        _wait_for_main(output_dir, started)
        return output_dir
    write_recipe(cfg, output_dir)
    final = output_dir / FINAL
    shutil.rmtree(final, ignore_errors=True)  # no file of an earlier run with other options survives
    scorer = load_scorer(cfg.spec)
    summary = make_pairs(scorer, read_logs(cfg.logs, cfg.columns, needed_columns(cfg)), final, cfg)
    for line in summary_lines(summary, cfg.logs, final, cfg):
        logger.info("pairs: %s", line)
    write_atomic(output_dir / METRICS, json.dumps({"step": 0, **summary}) + "\n")
    write_manifest(
        output_dir,
        cfg,
        data=data_hashes(cfg.logs, cfg.spec),
        parents={},
        results={"on_spec_share": summary["on_spec_share"], **summary["files"]},
        started=started,
    )
    return output_dir


def _wait_for_main(output_dir: Path, started: float) -> None:
    # No process group exists before the first training stage creates one, so the other ranks of a launch poll for
    # the manifest the main process writes last (a manifest finished before this rank started is an older run's).
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 1))
    while time.time() - started < WAIT_S:
        try:
            manifest = read_manifest(output_dir)
            if manifest.get("status") == "complete" and manifest.get("finished_at", "") >= since:
                return
        except (OSError, ValueError):  # not written yet, or being replaced
            pass
        time.sleep(0.5)
    raise TimeoutError(f"pairs: the main process wrote no finished {output_dir / 'manifest.json'} in {WAIT_S} s")
