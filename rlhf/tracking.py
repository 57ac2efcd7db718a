"""Experiment tracking: metrics.jsonl always, plus TensorBoard and wandb when the recipe asks.

This is the only module that talks to trackers. Trainer-based stages forward their logs here through
`TrackerCallback`; the ppo loop calls `Tracker.log` directly. Only the main process writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlhf.artifacts import METRICS
from rlhf.config import TrackingConfig

logger = logging.getLogger("rlhf")


def interactive() -> bool:
    """Whether progress bars make sense (a terminal), rather than plain log lines (files, CI)."""
    return sys.stderr.isatty()


@contextmanager
def unused_wandb_mode_unset(stages: list) -> Iterator[None]:
    """Inside: WANDB_MODE is not in the environment when none of the stages reports to wandb (restored on exit).

    transformers prints "[INFO] Running in WANDB offline mode" when it is imported with WANDB_MODE=offline, whatever
    the run reports to; without wandb in any stage's `tracking.report_to` the variable matters to nothing else.
    """
    saved = None
    tracked = [stage for stage in stages if hasattr(stage, "tracking")]  # the pairs stage trains nothing
    if not any("wandb" in stage.tracking.report_to for stage in tracked):
        saved = os.environ.pop("WANDB_MODE", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["WANDB_MODE"] = saved


class Tracker:
    """Writes one JSON object per logged step to metrics.jsonl and forwards metrics to the configured trackers.

    Args:
        cfg: The recipe's tracking block.
        output_dir: The stage's output directory (metrics.jsonl, TensorBoard `tb/`, `wandb/` go there).
        recipe: The fully resolved recipe as a plain dict, sent to the trackers as the run's config.
        enabled: False on non-main processes: every call is then a no-op.
        resume_step: When resuming from a checkpoint taken after this step: keep the metrics.jsonl rows up to it
            and drop later ones (they were logged after the checkpoint and are about to be recomputed).
    """

    def __init__(
        self,
        cfg: TrackingConfig,
        output_dir: Path,
        recipe: dict[str, Any],
        *,
        enabled: bool = True,
        resume_step: int | None = None,
    ):
        self.enabled = enabled
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / METRICS
        kept = []
        if resume_step is not None and path.is_file():
            rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            kept = [line for line in rows if _logged_step(line) <= resume_step]
        self._metrics = path.open("w", encoding="utf-8")
        self._metrics.writelines(line + "\n" for line in kept)
        self._metrics.flush()
        name = cfg.run_name or f"{output_dir.parent.name}/{output_dir.name}"
        if "tensorboard" in cfg.report_to:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(output_dir / "tb"))
            self._tb.add_text("recipe", "```\n" + json.dumps(recipe, indent=2) + "\n```", 0)
        if "wandb" in cfg.report_to:
            import wandb

            # WANDB_MODE (offline, disabled) is read by wandb itself from the environment.
            self._wandb = wandb.init(
                project=cfg.project, name=name, dir=str(output_dir), config=recipe, reinit="finish_previous"
            )

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Records one step's scalar metrics everywhere (non-finite values are kept in the JSON as null)."""
        if not self.enabled:
            return
        clean = {
            k: (float(v) if isinstance(v, int | float) and math.isfinite(v) else None)
            for k, v in metrics.items()
            if isinstance(v, int | float)
        }
        record = {"step": step, "time": round(time.time(), 3), **clean}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for key, value in clean.items():
                if value is not None:
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in clean.items() if v is not None}, step=step)

    def log_samples(self, rows: list[dict[str, Any]], step: int) -> None:
        """Records a small table of samples (prompt, response, scores)."""
        if not self.enabled or not rows:
            return
        if self._tb is not None:
            header = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
            body = "".join("| " + " | ".join(_cell(v) for v in row.values()) + " |\n" for row in rows)
            self._tb.add_text("samples", header + body, step)
        if self._wandb is not None:
            import wandb

            columns = list(rows[0])
            self._wandb.log({"samples": wandb.Table(columns=columns, data=[list(r.values()) for r in rows])}, step=step)

    def close(self) -> None:
        """Flushes and closes every tracker."""
        if not self.enabled:
            return
        self._metrics.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _logged_step(line: str) -> float:
    """The step of a metrics.jsonl line; a line cut short by a kill counts as after every step (it is dropped)."""
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:
        return math.inf


def _cell(value: Any) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def trainer_callback(tracker: Tracker, stage: str):
    """A transformers TrainerCallback that forwards the Trainer's logs to `tracker` and prints plain log lines."""
    from transformers import TrainerCallback

    class TrackerCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            tracker.log(dict(logs), step=state.global_step)
            if not interactive():
                shown = ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if isinstance(v, int | float))
                logger.info("%s step %d/%d: %s", stage, state.global_step, state.max_steps, shown)

    return TrackerCallback()
