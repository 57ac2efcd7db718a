"""The model directories a benchmark runs: the same files for our ppo and for the TRL reference.

`<root>/<size>/` is a copy of `embedded:<size>` (weights, tokenizer, chat template): the reference script's
`--models <root>` reads policy, reference, value and reward from it (the last two as sequence classifiers whose score
head it initialises at random). Our recipe needs its reward model as a directory of its own, so
`<root>/<size>-reward/` holds the same trunk as a one-label sequence classifier with a seeded random score head; our
critic starts from it as well.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

SOURCE_STAMP = "bench_source.txt"  # names the embedded build a copy was made from, so a rebuilt model is re-copied
SCORE_SEED = 0


def default_root() -> Path:
    """`$RLHF_CACHE/bench/models` (next to the embedded models' cache)."""
    from rlhf.models.embedded import cache_root

    return cache_root().parent / "bench" / "models"


def prepare(size: str, root: Path | None = None) -> dict[str, Path]:
    """Builds (once) and returns {"policy": <root>/<size>, "reward": <root>/<size>-reward, "root": <root>}."""
    from rlhf.models.embedded import resolve_embedded

    root = Path(root or default_root())
    source = resolve_embedded(f"embedded:{size}")
    policy, reward = root / size, root / f"{size}-reward"
    if not _fresh(policy, source):
        _publish(policy, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True), source)
    if not _fresh(reward, source):
        _publish(reward, lambda tmp: _build_reward(source, tmp), source)
    return {"policy": policy, "reward": reward, "root": root}


def _fresh(directory: Path, source: Path) -> bool:
    stamp = directory / SOURCE_STAMP
    return stamp.is_file() and stamp.read_text().strip() == source.name


def _publish(target: Path, build, source: Path) -> None:
    """Builds into a private directory and swaps it into place, so a half-built directory is never read."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        (staging / SOURCE_STAMP).write_text(source.name + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build_reward(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SCORE_SEED)
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
