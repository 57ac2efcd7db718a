"""A programmatic reward that checks the `info` plumbing: every prompt row carries a `tag` that its text repeats.

Used by `test_info_plumbing` as `function: tests.compare.info_probe:score`. It raises on a mismatch (so a run that
pairs a prompt with another row's metadata fails) and counts what it saw.
"""

from __future__ import annotations

SEEN: list[tuple[str, str]] = []


def score(prompts: list[str], responses: list[str], info: list[dict] | None = None) -> list[float]:
    """1.0 per response; raises ValueError when a prompt and its row's `tag` do not belong together."""
    if info is None or len(info) != len(prompts):
        raise ValueError(f"info missing or misaligned: {info!r}")
    for prompt, row in zip(prompts, info, strict=True):
        if f"[{row['tag']}]" not in prompt:
            raise ValueError(f"prompt {prompt!r} got the metadata of another row: {row!r}")
        SEEN.append((prompt, row["tag"]))
    return [1.0 for _ in responses]


def score_without_info(prompts: list[str], responses: list[str]) -> list[float]:
    """A two-argument reward: must keep working unchanged."""
    return [float(len(r) > 0) for r in responses]
