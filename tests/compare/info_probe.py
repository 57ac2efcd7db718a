"""A programmatic reward that checks the `info` plumbing: every prompt row carries a `tag` that its text repeats.

Used by `test_info_plumbing` as `function: tests.compare.info_probe:score`. It raises on a mismatch (so a run that
pairs a prompt with another row's metadata fails) and records what it saw: in `SEEN`, and, when the environment
names a file in INFO_PROBE_LOG (for launched processes), one line per scored row: the process's RANK and the tag.
"""

from __future__ import annotations

import os

SEEN: list[tuple[str, str]] = []


def score(prompts: list[str], responses: list[str], info: list[dict] | None = None) -> list[float]:
    """1.0 per response; raises ValueError when a prompt and its row's `tag` do not belong together."""
    if info is None or len(info) != len(prompts):
        raise ValueError(f"info missing or misaligned: {info!r}")
    for prompt, row in zip(prompts, info, strict=True):
        if f"[{row['tag']}]" not in prompt:
            raise ValueError(f"prompt {prompt!r} got the metadata of another row: {row!r}")
        SEEN.append((prompt, row["tag"]))
    if os.environ.get("INFO_PROBE_LOG"):
        with open(os.environ["INFO_PROBE_LOG"], "a", encoding="utf-8") as handle:
            handle.writelines(f"{os.environ.get('RANK', '0')} {row['tag']}\n" for row in info)
    return [1.0 for _ in responses]


def score_without_info(prompts: list[str], responses: list[str]) -> list[float]:
    """A two-argument reward: must keep working unchanged."""
    return [float(len(r) > 0) for r in responses]
