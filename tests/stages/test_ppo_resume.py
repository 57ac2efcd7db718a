"""PPO resume: a run killed with SIGKILL mid-way and resumed continues exactly like an uninterrupted run.

Both with GAE (a value head) and with GRPO (no critic, 4 responses per prompt, the KL as a k3 loss term).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "recipes" / "brand_voice" / "data"

pytestmark = pytest.mark.slow

RECIPE = """
stage: ppo
seed: 7
output_dir: {out}
model: {{name_or_path: embedded:tiny}}
data: {{train: {data}/ppo_prompts.jsonl, max_train_rows: 64, max_prompt_length: 64, max_length: 96}}
rewards:
  - {{name: voice_rules, function: brand_voice, weight: 1.0}}
value: {{mode: head}}
rollout: {{max_new_tokens: 16, temperature: 1.0}}
kl: {{coef: 0.1, adaptive: true, target: 1.0, horizon: 100}}
update: {{epochs: 2, num_minibatches: 2, reward_normalization: true}}
training: {{learning_rate: 1.0e-3, batch_size: 8, max_steps: 8, save_steps: 2, save_total_limit: 2}}
"""

# GRPO: no value section (the estimator builds no critic), groups of 4 responses per prompt kept whole in each of the
# 2 minibatches, the KL as a k3 loss term under the adaptive controller.
GRPO = (
    RECIPE.replace("value: {{mode: head}}\n", "advantage: {{estimator: grpo}}\n")
    .replace("temperature: 1.0}}", "temperature: 1.0, samples_per_prompt: 4}}")
    .replace("kl: {{coef: 0.1,", "kl: {{mode: loss, estimator: k3, coef: 0.1,")
    .replace("batch_size: 8,", "batch_size: 4,")
)

UNSTABLE = ("time", "time/rollout", "time/score", "time/update", "time/step", "tokens_per_s")


def _write_recipe(tmp_path: Path, name: str, template: str = RECIPE) -> tuple[Path, Path]:
    out = tmp_path / name
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(template.format(out=out, data=DATA))
    return recipe, out


def _command(recipe: Path) -> list[str]:
    return [sys.executable, "-m", "rlhf", "run", str(recipe)]


def _metrics(out: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {row["step"]: {k: v for k, v in row.items() if k not in UNSTABLE} for row in rows if "kl" in row}


def _weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "final" / "model.safetensors")


def test_killed_ppo_run_resumes_exactly(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    recipe_a, out_a = _write_recipe(tmp_path, "uninterrupted")
    subprocess.run(_command(recipe_a), check=True, env=env, capture_output=True, timeout=600)

    recipe_b, out_b = _write_recipe(tmp_path, "killed")
    process = subprocess.Popen(_command(recipe_b), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out_b / "checkpoints" / "checkpoint-2" / "rlhf-checkpoint.json"
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out_b / "manifest.json").exists()

    resumed = subprocess.run(_command(recipe_b), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr

    expected, got = _metrics(out_a), _metrics(out_b)
    assert sorted(got) == list(range(1, 9))
    for step in range(1, 9):
        assert got[step] == expected[step], f"step {step} differs after resume"
    reference, final = _weights(out_a), _weights(out_b)
    assert reference.keys() == final.keys()
    for name, tensor in reference.items():
        assert torch.equal(tensor, final[name]), name


def test_killed_grpo_run_resumes_exactly(tmp_path):
    from rlhf.checkpoint import MARKER, complete_checkpoints

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    recipe_a, out_a = _write_recipe(tmp_path, "uninterrupted", GRPO)
    subprocess.run(_command(recipe_a), check=True, env=env, capture_output=True, timeout=600)
    assert "advantage" in (out_a / "recipe.yaml").read_text()
    # No critic was built: the checkpoint holds the policy alone.
    from safetensors.torch import load_file

    saved = load_file(out_a / "checkpoints" / "checkpoint-8" / "accelerate" / "model.safetensors")
    assert saved and all(name.startswith("policy.") for name in saved)

    recipe_b, out_b = _write_recipe(tmp_path, "killed", GRPO)
    process = subprocess.Popen(_command(recipe_b), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out_b / "checkpoints" / "checkpoint-2" / MARKER
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the run ended or timed out before its first checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait()
    # A step takes a fraction of a second here, so the kill can land after later checkpoints (or the end). Take the
    # run back to a kill right after checkpoint-2: later checkpoints without their marker, no final/, no manifest.
    for later in complete_checkpoints(out_b / "checkpoints")[1:]:
        (later / MARKER).unlink()
    (out_b / "manifest.json").unlink(missing_ok=True)

    resumed = subprocess.run(_command(recipe_b), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "checkpoint-2" in resumed.stderr

    expected, got = _metrics(out_a), _metrics(out_b)
    assert sorted(got) == list(range(1, 9))
    assert "loss/kl" in got[1] and "loss/value" not in got[1]
    for step in range(1, 9):
        assert got[step] == expected[step], f"step {step} differs after resume"
    reference, final = _weights(out_a), _weights(out_b)
    assert reference.keys() == final.keys()
    for name, tensor in reference.items():
        assert torch.equal(tensor, final[name]), name
    # The run moved the policy: a resume that restored nothing would still have to match a run that learned.
    start = _weights_of(out_a)
    assert any(not torch.equal(tensor, start[name]) for name, tensor in reference.items())


def _weights_of(out: Path) -> dict[str, torch.Tensor]:
    """The starting weights of a run (its ref_policy): embedded:tiny as the recipe resolved it."""
    from transformers import AutoModelForCausalLM

    from rlhf.models.loading import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("embedded:tiny"))
    return {name: tensor for name, tensor in model.state_dict().items()}


def test_resume_refuses_a_changed_recipe(tmp_path):
    recipe, out = _write_recipe(tmp_path, "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_command(recipe) + ["training.max_steps=2"], check=True, env=env, capture_output=True, timeout=600)
    changed = subprocess.run(
        _command(recipe) + ["training.max_steps=2", "update.cliprange=0.3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert changed.returncode != 0
    assert "update.cliprange" in changed.stderr and "resume=false" in changed.stderr


def test_kl_alarm_is_reported_loudly(tmp_path):
    recipe, out = _write_recipe(tmp_path, "alarm")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        _command(recipe) + ["training.max_steps=3", "training.learning_rate=0.05", "kl.alarm=0.001"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "exceeds kl.alarm=0.00" in run.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(row.get("kl_alarm") == 1.0 for row in rows)
