"""Helpers for the reliability tests: tiny data files, stage recipes in a temporary directory, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlhf.cli import main


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Writes rows (objects, or raw strings written as they are) one per line."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(user: str, assistant: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def pair(prompt: str, chosen: str, rejected: str) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


GOOD_SFT = [chat(f"question {i} about boots", f"answer {i}: the boots are waterproof") for i in range(6)]
GOOD_PREFS = [pair(f"question {i}", f"a kind answer {i}", f"a curt answer {i}") for i in range(6)]
GOOD_PROMPTS = [{"prompt": f"prompt {i} about tents"} for i in range(6)]


@pytest.fixture
def recipe_file(tmp_path: Path) -> Callable[..., Path]:
    """Writes a stage recipe into tmp_path (data paths relative to it) and returns its path."""

    def make(
        stage: str = "sft", train: list[Any] | None = None, eval_rows: list[Any] | None = None, **sections: Any
    ) -> Path:
        default = {"sft": GOOD_SFT, "reward": GOOD_PREFS, "ppo": GOOD_PROMPTS}[stage]
        write_jsonl(tmp_path / "train.jsonl", default if train is None else train)
        data = {"train": "train.jsonl", "max_length": 64, "max_prompt_length": 32}
        if eval_rows is not None:
            write_jsonl(tmp_path / "eval.jsonl", eval_rows)
            data["eval"] = "eval.jsonl"
        recipe: dict[str, Any] = {"stage": stage, "output_dir": str(tmp_path / "out"), "data": data}
        if stage == "ppo":
            recipe["rewards"] = [{"name": "rules", "function": "brand_voice"}]
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(recipe.get(key), dict):
                recipe[key] = {**recipe[key], **value}
            else:
                recipe[key] = value
        path = tmp_path / f"{stage}.yaml"
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        return path

    return make


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Callable[..., tuple[int, str, str]]:
    """Runs `rlhf ARGS...` in-process; returns (exit code, stdout, stderr)."""

    def call(*args: Any) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return call
