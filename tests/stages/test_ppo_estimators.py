"""Every advantage estimator runs the ppo stage end to end on embedded:tiny (2 short steps each), with the KL where
its recipe puts it: the metrics say which losses ran, the checkpoint holds a value model only for gae, and the policy
moves away from its start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.cli import main

from ..conftest import DATA_DIR

pytestmark = pytest.mark.slow

RECIPE = """
stage: ppo
seed: 3
output_dir: {out}
model: {{name_or_path: embedded:tiny}}
data: {{train: {data}/ppo_prompts.jsonl, max_train_rows: 32, max_prompt_length: 64, max_length: 80}}
rewards:
  - {{name: voice_rules, function: brand_voice, weight: 1.0}}
advantage: {{estimator: {estimator}}}
{value}rollout: {{max_new_tokens: 8, samples_per_prompt: {k}}}
kl: {{mode: {mode}, estimator: {kl}, coef: 0.1}}
update: {{epochs: 1, num_minibatches: 2}}
training: {{learning_rate: 1.0e-3, batch_size: 4, max_steps: 2, save_steps: null}}
tracking: {{report_to: [none]}}
"""


@pytest.mark.parametrize(
    ("estimator", "k", "mode", "kl"),
    [
        ("grpo", 2, "reward", "k1"),
        ("rloo", 3, "loss", "k3"),
        ("reinforce_pp", 1, "reward", "k3"),
        ("gae", 1, "loss", "k1"),
    ],
)
def test_each_estimator_trains_with_its_kl(tmp_path, estimator, k, mode, kl):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from rlhf.models.loading import resolve_model_path

    out = tmp_path / "out"
    recipe = tmp_path / "ppo.yaml"
    value = "value: {mode: head}\n" if estimator == "gae" else ""  # a critic-free estimator refuses a value section
    recipe.write_text(RECIPE.format(out=out, data=DATA_DIR, estimator=estimator, k=k, mode=mode, kl=kl, value=value))
    assert main(["run", str(recipe)]) == 0

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "loss/policy" in row]
    assert len(steps) == 2
    for row in steps:
        assert ("loss/kl" in row) == (mode == "loss")
        assert ("loss/value" in row) == (estimator == "gae")
    results = json.loads((out / "manifest.json").read_text())["results"]
    assert results["episodes"] == 2 * 4 * k
    saved = load_file(Path(out) / "checkpoints" / "checkpoint-2" / "accelerate" / "model.safetensors")
    assert any(not name.startswith("policy.") for name in saved) == (estimator == "gae")
    start = AutoModelForCausalLM.from_pretrained(resolve_model_path("embedded:tiny")).state_dict()
    final = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    assert any(not tensor.equal(start[name]) for name, tensor in final.items())
