"""The marker that makes a causal LM directory an implicit reward model (`rlhf.rewards.implicit`): reading and
writing `implicit_reward.json` without importing torch, so `rlhf validate` and `rlhf plan` can check it."""

from __future__ import annotations

import json
import os
from pathlib import Path

MARKER = "implicit_reward.json"


def is_implicit(path: str | Path) -> bool:
    """Whether `path` is a local directory holding an implicit reward model (its marker file)."""
    return (Path(path).expanduser() / MARKER).is_file()


def write_marker(directory: Path, beta: float, reference: str | None) -> None:
    """Declares `directory` (a causal LM) an implicit reward model against `reference` (None: its adapter off).

    A reference inside the same run directory (the stage's output_dir's parent, e.g. `<run>/sft/final` for
    `<run>/reward/final`) is written relative to `directory`, so the run can move as one; others stay absolute.
    """
    if reference is not None and Path(reference).expanduser().exists():
        target, here = Path(reference).expanduser().resolve(), directory.resolve()
        reference = os.path.relpath(target, here) if target.is_relative_to(here.parent.parent) else str(target)
    (directory / MARKER).write_text(json.dumps({"beta": beta, "reference": reference}, indent=2) + "\n")


def read_marker(path: str | Path) -> tuple[float, str | None]:
    """(beta, reference) from an implicit reward model's marker; a relative reference is resolved against `path`.

    Raises:
        ValueError: The marker is not valid JSON, or beta is missing or not positive.
    """
    marker = Path(path).expanduser() / MARKER
    try:
        values = json.loads(marker.read_text(encoding="utf-8"))
        beta = float(values["beta"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{marker}: expected {{'beta': <number>, 'reference': <path or null>}} ({err})") from None
    if not beta > 0:
        raise ValueError(f"{marker}: beta must be positive, got {beta}")
    reference = values.get("reference")
    if reference is not None:
        local = Path(path).expanduser() / reference
        reference = str(local.resolve()) if local.exists() else str(reference)
    return beta, reference


def same_model(a: str, b: str) -> bool:
    """Whether two model references name the same weights: the same local directory, or the same hub id."""
    first, second = Path(a).expanduser(), Path(b).expanduser()
    if first.is_dir() and second.is_dir():
        return first.resolve() == second.resolve()
    return a == b
