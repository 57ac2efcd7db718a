"""Resumable checkpoints: atomic writes, a completeness marker, pruning, RNG states and the resume compatibility check.

A checkpoint is a directory `<root>/checkpoint-<step>/`. It is *complete* only when it holds the marker file
`rlhf-checkpoint.json`, written last and atomically; every reader (`latest_complete`, `prepare_resume`) ignores
directories without it and directories named `*.tmp-*`, so a crash while writing never leaves a checkpoint that looks
complete. The marker records the step and the run's *resume fingerprint* (the resolved recipe minus the keys listed in
`RESUME_IRRELEVANT`, the content hashes of the data files and the identity of the parent artifacts); a checkpoint is
only resumed by a run with the same fingerprint.

Nothing here imports torch at module level; the RNG helpers import it when called.

The ppo loop (or any hand-written loop) uses the API like this::

    from rlhf import checkpoint

    root = output_dir / checkpoint.CHECKPOINTS
    fingerprint = checkpoint.resume_fingerprint(cfg, parents)      # parents: check_parent() records
    start = checkpoint.prepare_resume(root, fingerprint, cfg.resume)  # None: fresh start; raises ResumeError
    if start is not None:
        state = torch.load(start / "state.pt", weights_only=False)
        ...                                      # load weights, optimiser, scheduler, KL controller, moments
        checkpoint.load_rng_states(state["rng"], generator)
        first_step = state["step"]
    ...
    if (step + 1) % cfg.training.save_steps == 0 or step + 1 == total_steps:
        target = checkpoint.step_dir(root, step + 1)
        with checkpoint.atomic_directory(target, fingerprint, step + 1, main=accelerator.is_main_process,
                                         token=str(step + 1), barrier=accelerator.wait_for_everyone) as tmp:
            ...                                  # every rank writes its files (ZeRO shards) into tmp
            torch.save({"step": step + 1, "rng": checkpoint.save_rng_states(generator), ...}, tmp / "state.pt")
        if accelerator.is_main_process:
            checkpoint.prune(root, cfg.training.save_total_limit)

RNG states are per process: save them under a per-rank file name when several processes run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rlhf.artifacts import write_atomic
from rlhf.config import is_data_file

logger = logging.getLogger("rlhf")

CHECKPOINTS = "checkpoints"
PREFIX = "checkpoint-"
MARKER = "rlhf-checkpoint.json"
TMP_INFIX = ".tmp-"
MARKER_VERSION = 1

# Keys that may change between a run and its resumption. Everything else in the resolved recipe shapes the training
# trajectory, so a change refuses the resume. Data paths are replaced by their files' content hashes (a moved file
# resumes, an edited one does not). Changing max_steps/epochs extends or shortens a run; with a decaying learning-rate
# schedule the remaining steps then follow the schedule of the new length (logged as a warning).
RESUME_IRRELEVANT = (
    "resume",
    "output_dir",
    "tracking",
    "data.train",
    "data.eval",
    "training.max_steps",
    "training.epochs",
    "training.logging_steps",
    "training.save_steps",
    "training.save_total_limit",
    "log_samples_every",
)
LENGTH_KEYS = ("training.max_steps", "training.epochs")


class ResumeError(ValueError):
    """Checkpoints exist that this run cannot continue from; the message says why and what to do."""


def step_dir(root: Path, step: int) -> Path:
    """The directory of the checkpoint after `step` optimiser steps (the Trainer's naming: checkpoint-N)."""
    return Path(root) / f"{PREFIX}{step}"


def checkpoint_step(path: Path) -> int | None:
    """The step number of a checkpoint directory name, or None for anything else (temporary dirs included)."""
    match = re.fullmatch(re.escape(PREFIX) + r"(\d+)", Path(path).name)
    return int(match.group(1)) if match else None


def read_marker(path: Path) -> dict[str, Any] | None:
    """The completeness marker of a checkpoint directory, or None when it is missing or unreadable."""
    try:
        marker = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) and marker.get("complete") is True else None


def write_marker(path: Path, fingerprint: dict[str, Any], step: int) -> None:
    """Marks a fully written checkpoint directory as complete (atomically; call it after every file is on disk)."""
    marker = {
        "complete": True,
        "version": MARKER_VERSION,
        "step": step,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fingerprint": fingerprint,
    }
    write_atomic(Path(path) / MARKER, json.dumps(marker, indent=2, default=str) + "\n")


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories under `root`, oldest (lowest step) first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in root.iterdir() if p.is_dir()]
    return [p for step, p in sorted((s, p) for s, p in found if s is not None) if read_marker(p) is not None]


def latest_complete(root: Path) -> Path | None:
    """The complete checkpoint with the highest step under `root`, or None."""
    complete = complete_checkpoints(root)
    return complete[-1] if complete else None


@contextlib.contextmanager
def atomic_directory(
    target: Path,
    fingerprint: dict[str, Any],
    step: int,
    *,
    main: bool = True,
    token: str | None = None,
    barrier: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """Yields a temporary directory to write a checkpoint into; on success it is marked complete and renamed.

    The files go into `<target>.tmp-<token>`; after the block the main process writes the marker and renames the
    directory to `target` (replacing an older one of the same name). If the block raises, the temporary directory is
    removed and `target` is untouched.

    Args:
        target: The final checkpoint directory, usually `step_dir(root, step)`.
        fingerprint: The run's `resume_fingerprint`, recorded in the marker.
        step: The step the checkpoint holds.
        main: Whether this process finalises (only one process may: the main one).
        token: Suffix of the temporary directory; default the process id. Several processes writing one checkpoint
            (ZeRO shards) must pass the same token, e.g. the step.
        barrier: Called (on every process) after the temporary directory exists and after every process has
            written, e.g. `accelerator.wait_for_everyone`; needed when several processes write.
    """
    target = Path(target)
    tmp = target.with_name(f"{target.name}{TMP_INFIX}{token or os.getpid()}")
    if main:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a crashed attempt with the same token
        tmp.mkdir(parents=True)
    if barrier is not None:
        barrier()
    try:
        yield tmp
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if barrier is not None:
        barrier()
    if main:
        _fsync_tree(tmp)
        write_marker(tmp, fingerprint, step)
        if target.exists():
            old = target.with_name(f"{target.name}{TMP_INFIX}old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
        _fsync_dir(target.parent)
    if barrier is not None:
        barrier()


def _fsync_tree(directory: Path) -> None:
    """Flushes every file under a directory to disk, so the marker is never on disk before the data."""
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def prune(root: Path, keep: int | None, protect: tuple[str | Path, ...] = ()) -> list[Path]:
    """Deletes what is not needed to resume: temporary and incomplete directories, and all but the `keep` newest
    complete checkpoints (`keep=None` keeps them all). Call it on the main process only, after a save.

    Args:
        root: The checkpoints directory.
        keep: How many complete checkpoints to keep (the newest ones).
        protect: Checkpoint directories never deleted (e.g. the Trainer's best checkpoint).

    Returns:
        The deleted directories.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    complete = complete_checkpoints(root)
    keep_set = set(complete if keep is None else complete[max(0, len(complete) - keep) :])
    keep_set |= {Path(p).resolve() for p in protect}
    deleted = []
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        is_checkpoint = checkpoint_step(path) is not None
        is_tmp = TMP_INFIX in path.name and path.name.startswith(PREFIX)
        if not (is_checkpoint or is_tmp):
            continue  # not ours: leave it alone
        if path in keep_set or path.resolve() in keep_set:
            continue
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path)
    return deleted


def discard_after(root: Path, step: int) -> list[Path]:
    """Deletes the checkpoints after `step` (the steps after a resume point are recomputed and saved again; an old
    directory of the same name would otherwise be written into while its marker still says complete)."""
    root = Path(root)
    doomed = [p for p in (root.iterdir() if root.is_dir() else []) if (checkpoint_step(p) or 0) > step]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def resume_fingerprint(recipe: BaseModel, parents: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it.

    Args:
        recipe: The stage recipe (after pipeline references are resolved).
        parents: Lineage records of the artifacts the stage builds on (`artifacts.check_parent`).

    Returns:
        `{"recipe": {dotted key: value}, "data": {"train": sha256, "eval": sha256}, "parents": {...},
        "length": {...}}`; `length` (max_steps, epochs) is recorded but not compared.
    """
    from rlhf.artifacts import file_sha256

    values = flatten(recipe.model_dump(mode="json"))
    kept = {k: v for k, v in values.items() if not any(k == r or k.startswith(r + ".") for r in RESUME_IRRELEVANT)}
    data_block = getattr(recipe, "data", None)
    data = {}
    for role in ("train", "eval"):
        source = getattr(data_block, role, None)
        if source is not None:
            data[role] = file_sha256(source) if is_data_file(source) else f"hub:{source}"
    lineage = {
        name: {k: v for k, v in record.items() if k in ("stage", "recipe_sha256", "finished_at")}
        for name, record in (parents or {}).items()
    }
    length = {k: values.get(k) for k in LENGTH_KEYS}
    return {"recipe": kept, "data": data, "parents": {k: v for k, v in lineage.items() if v}, "length": length}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping (and lists of mappings) as {dotted.key: leaf value}."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{index}."))
        return out
    return {prefix.rstrip("."): value}


def fingerprint_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Readable lines for every difference between a checkpoint's fingerprint and this run's."""
    lines = []
    for section, label in (("recipe", ""), ("data", "data file "), ("parents", "parent artifact ")):
        old, new = flatten(recorded.get(section, {})), flatten(current.get(section, {}))
        for key in sorted(set(old) | set(new)):
            if old.get(key, "<absent>") == new.get(key, "<absent>"):
                continue
            if section == "recipe":
                lines.append(f"{key}: {old.get(key, '<absent>')!r} in the checkpoint, {new.get(key, '<absent>')!r} now")
            elif section == "data":
                lines.append(
                    f"{label}'{key}' has different content (sha256 {str(old.get(key))[:12]}... in the "
                    f"checkpoint, {str(new.get(key))[:12]}... now)"
                )
            else:
                lines.append(
                    f"{label}{key}: {old.get(key, '<absent>')!r} in the checkpoint, {new.get(key, '<absent>')!r} now"
                )
    return lines


def prepare_resume(root: Path, fingerprint: dict[str, Any], resume: bool, *, main: bool = True) -> Path | None:
    """Decides where a run starts: the latest complete compatible checkpoint, or nothing (a fresh start).

    `resume=False` deletes every checkpoint under `root` (on the main process) and starts over. Otherwise temporary
    and incomplete checkpoint directories are deleted (a crash while writing leaves them) and the latest complete
    checkpoint is returned after checking that it was written with the same fingerprint.

    Raises:
        ResumeError: The latest complete checkpoint was written by a different recipe, data or parent artifact.
    """
    root = Path(root)
    if not resume:
        if main and root.exists():
            logger.info("resume=false: deleting the old checkpoints in %s and starting over", root)
            shutil.rmtree(root)
        return None
    latest = latest_complete(root)
    if main and root.is_dir():
        stale = [
            p
            for p in root.iterdir()
            if p.is_dir() and p.name.startswith(PREFIX) and (TMP_INFIX in p.name or read_marker(p) is None)
        ]
        for path in stale:
            logger.warning("ignoring and deleting the incomplete checkpoint %s (a run stopped while writing it)", path)
            shutil.rmtree(path, ignore_errors=True)
    if latest is None:
        return None
    marker = read_marker(latest) or {}
    differences = fingerprint_differences(marker.get("fingerprint", {}), fingerprint)
    if differences:
        raise ResumeError(
            f"cannot resume from {latest}: it was written by a different run:\n    "
            + "\n    ".join(differences)
            + "\n  Restore the recipe and data it was written with, or pass resume=false to delete the checkpoints "
            "and start over."
        )
    old_length, new_length = marker.get("fingerprint", {}).get("length", {}), fingerprint.get("length", {})
    if old_length != new_length:
        logger.warning(
            "resuming %s with a different run length (%s -> %s): the remaining steps follow the new "
            "length's learning-rate schedule",
            latest,
            old_length,
            new_length,
        )
    logger.info("resuming from %s (step %s)", latest, marker.get("step"))
    return latest


def save_rng_states(generator=None) -> dict[str, Any]:
    """Every RNG state that shapes a run: python, numpy, torch CPU, CUDA (when present) and an optional generator."""
    import numpy as np
    import torch

    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        states["generator"] = generator.get_state()
    return states


def load_rng_states(states: dict[str, Any], generator=None) -> None:
    """Restores what `save_rng_states` returned (the generator's state only when both sides have one)."""
    import numpy as np
    import torch

    random.setstate(_as_python_state(states["python"]))
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if generator is not None:
        if "generator" not in states:
            raise ResumeError("the checkpoint holds no sampling-generator state to restore")
        generator.set_state(states["generator"])


def _as_python_state(state: Any) -> tuple:
    # random.setstate needs tuples; a state that went through JSON or torch.load may come back as lists.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
