"""Checkpoints, resume and the non-finite-loss guard for the Trainer-based stages (sft, reward, dpo).

The Trainer writes `checkpoints/checkpoint-N/` itself; these callbacks make its checkpoints follow `rlhf.checkpoint`:
a marker written last (after every rank has saved) makes a checkpoint complete, pruning keeps the newest
`training.save_total_limit` complete ones, and every save step is also a logging step, so a NaN or infinite loss is
seen (and the run stopped) before the checkpoint holding its weights could be marked complete.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.checkpoint import (
    CHECKPOINTS,
    checkpoint_step,
    complete_checkpoints,
    discard_after,
    fingerprint_differences,
    prepare_resume,
    prune,
    read_marker,
    resume_fingerprint,
    write_marker,
)
from rlhf.config import StageBase
from rlhf.distributed import is_main_process

logger = logging.getLogger("rlhf")

GUARDED_LOGS = ("loss", "grad_norm")


class NonFiniteLossError(RuntimeError):
    """The training loss (or gradient norm) became NaN or infinite; the run stopped before saving it."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a Trainer stage starts: its fingerprint, and the checkpoint (path, step) to resume from, if any."""

    fingerprint: dict[str, Any]
    path: str | None = None
    step: int | None = None


def resume_point(cfg: StageBase, parents: dict[str, dict[str, str]]) -> ResumePoint:
    """The run's resume fingerprint and the checkpoint to resume from (none: start fresh).

    Raises:
        rlhf.checkpoint.ResumeError: The latest complete checkpoint belongs to a different recipe or data.
    """
    fingerprint = resume_fingerprint(cfg, parents)
    root = Path(cfg.output_dir) / CHECKPOINTS
    start = prepare_resume(root, fingerprint, cfg.resume, main=is_main_process())
    last = cfg.training.max_steps
    if start is not None and last is not None and checkpoint_step(start) >= last:
        # The Trainer resumed at (or past) its last step still takes one more step before it stops; an earlier
        # checkpoint of the same run gives the exact result (the steps after it are recomputed).
        earlier = [
            p
            for p in complete_checkpoints(root)
            if checkpoint_step(p) < last
            and not fingerprint_differences(read_marker(p).get("fingerprint", {}), fingerprint)
        ]
        logger.info(
            "%s: %s is at or past training.max_steps=%d; resuming from %s instead",
            cfg.stage,
            start,
            last,
            earlier[-1] if earlier else "the start",
        )
        start = earlier[-1] if earlier else None
        if is_main_process():
            discard_after(root, checkpoint_step(start) if start is not None else 0)
    if start is None:
        return ResumePoint(fingerprint)
    return ResumePoint(fingerprint, str(start), checkpoint_step(start))


def checkpoint_callbacks(cfg: StageBase, fingerprint: dict[str, Any]) -> list:
    """The guard (stops on a non-finite loss) and the marker/pruning callback, in that order."""
    from transformers import TrainerCallback

    stage, keep = cfg.stage, cfg.training.save_total_limit

    class FiniteLossGuard(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            # Log at every save step: the guard then sees every step's loss before a checkpoint is marked complete.
            if control.should_save:
                control.should_log = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in GUARDED_LOGS:
                value = (logs or {}).get(key)
                if isinstance(value, int | float) and not math.isfinite(value):
                    last = _last_complete_step(args.output_dir)
                    kept = (
                        f"the last complete checkpoint ({Path(args.output_dir)}/checkpoint-{last}) is intact"
                        if last is not None
                        else "no complete checkpoint was written before it"
                    )
                    raise NonFiniteLossError(
                        f"{stage}: non-finite {key} ({value}) at step {state.global_step}; the run stopped and {kept}. "
                        "Lower training.learning_rate, enable training.max_grad_norm, or check the data; resuming "
                        "with a changed recipe needs resume=false."
                    )

    class CompleteCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            _barrier()  # every rank has written its files (ZeRO shards, RNG states) before the marker
            if state.is_world_process_zero:
                path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                write_marker(path, fingerprint, state.global_step)
                protect = (state.best_model_checkpoint,) if state.best_model_checkpoint else ()
                for deleted in prune(Path(args.output_dir), keep, protect=protect):
                    logger.info("%s: deleted old checkpoint %s (save_total_limit=%s)", stage, deleted, keep)
            _barrier()

    return [FiniteLossGuard(), CompleteCheckpoints()]


def check_finite_loss(stage: str, value: float, output_dir: Path) -> None:
    """Refuses a non-finite final training loss (a last line of defence before final/ is written)."""
    if not math.isfinite(value):
        last = _last_complete_step(output_dir / CHECKPOINTS)
        raise NonFiniteLossError(
            f"{stage}: the mean training loss is {value}; final/ was not written"
            + (f" (checkpoint-{last} is the last complete checkpoint)" if last else "")
        )


def _last_complete_step(root: str | Path) -> int | None:
    from rlhf.checkpoint import latest_complete

    latest = latest_complete(Path(root))
    return checkpoint_step(latest) if latest is not None else None


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
