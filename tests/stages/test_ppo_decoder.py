"""`rollout.decoder`: the lean Llama decoder and the model's own forward train the same ppo run."""

import json
from pathlib import Path

import pytest
import yaml

from rlhf.config import PPOStage
from rlhf.stages import ppo

DATA = Path(__file__).resolve().parents[2] / "recipes" / "brand_voice" / "data"

pytestmark = pytest.mark.slow


def _run(out: Path, decoder: str) -> list[dict]:
    recipe = {
        "stage": "ppo",
        "seed": 3,
        "output_dir": str(out),
        "model": {"name_or_path": "embedded:tiny"},
        "data": {
            "train": str(DATA / "ppo_prompts.jsonl"),
            "max_train_rows": 32,
            "max_prompt_length": 64,
            "max_length": 96,
        },
        "rewards": [{"name": "voice_rules", "function": "brand_voice"}],
        "value": {"mode": "head"},
        "rollout": {"max_new_tokens": 16, "temperature": 1.0, "decoder": decoder},
        "training": {"learning_rate": 1.0e-3, "batch_size": 8, "max_steps": 2, "save_steps": None},
        "tracking": {"report_to": ["none"]},
    }
    ppo.run(PPOStage.model_validate(yaml.safe_load(yaml.safe_dump(recipe))))
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_both_decoders_sample_and_train_alike(tmp_path, monkeypatch):
    from rlhf.generation.decoding import LlamaDecoder

    steps = []
    original = LlamaDecoder._forward
    monkeypatch.setattr(LlamaDecoder, "_forward", lambda self, *a: steps.append(1) or original(self, *a))
    lean = _run(tmp_path / "auto", "auto")
    lean_steps, steps[:] = len(steps), []
    own = _run(tmp_path / "hf", "hf")
    assert lean_steps > 0 and not steps  # each recipe really took its own path
    assert len(lean) == len(own) >= 2
    for a, b in zip(lean, own, strict=True):
        # Same seed, same weights: the same responses, so the same rewards and lengths; statistics to rounding.
        assert a["reward/total"] == pytest.approx(b["reward/total"], abs=1e-5)
        assert a["response/length"] == b["response/length"]
        for key in ("entropy", "kl", "loss/policy", "loss/value"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), key
