"""The ppo stage's in-loop frontier points: step 0 and every `frontier_every` steps, the last from the closing
evaluation; KL exactly 0 before training; a run killed and resumed writes the same series, each step once."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "recipes" / "brand_voice" / "data"

# voice_rules is trained on (role 'reward'), content has weight 0 (role 'gold': a judge the policy never sees, which
# reads each eval prompt's ground truth, so the rows' info reaches the in-loop evaluation).
RECIPE = """
stage: ppo
seed: 7
output_dir: {out}
model: {{name_or_path: embedded:tiny}}
data:
  train: {data}/ppo_prompts.jsonl
  eval: {data}/eval_prompts.jsonl
  max_train_rows: 32
  max_eval_rows: 12
  max_prompt_length: 64
  max_length: 96
rewards:
  - {{name: voice_rules, function: brand_voice, weight: 1.0}}
  - {{name: content, function: support_content, weight: 0.0}}
value: {{mode: head}}
rollout: {{max_new_tokens: 12, temperature: 1.0}}
kl: {{coef: 0.05}}
update: {{epochs: 2, num_minibatches: 2}}
training: {{learning_rate: 3.0e-3, batch_size: 8, max_steps: 6, save_steps: 2, save_total_limit: 2}}
tracking: {{report_to: [none]}}
frontier_every: 2
"""

KEYS = ("frontier/kl", "frontier/sqrt_kl", "frontier/length", "frontier/reward/voice_rules", "frontier/gold/content")


def _write(tmp_path: Path, name: str) -> tuple[Path, Path]:
    out = tmp_path / name
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(RECIPE.format(out=out, data=DATA))
    return recipe, out


def _command(recipe: Path) -> list[str]:
    return [sys.executable, "-m", "rlhf", "run", str(recipe)]


def _points(out: Path) -> list[tuple[int, dict]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(row["step"], {k: row[k] for k in KEYS}) for row in rows if "frontier/kl" in row]


@pytest.mark.slow
def test_frontier_points_and_resume(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    recipe_a, out_a = _write(tmp_path, "uninterrupted")
    done = subprocess.run(_command(recipe_a), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    points = _points(out_a)
    # 0 (before training), 2 and 4 in the loop, 6 from the closing evaluation; each once.
    assert [step for step, _ in points] == [0, 2, 4, 6]
    by_step = dict(points)
    assert by_step[0]["frontier/kl"] == 0.0  # the policy is its reference: every log-ratio is exactly 0
    assert by_step[6]["frontier/kl"] > 0
    for _, found in points:
        assert found["frontier/sqrt_kl"] == pytest.approx(math.sqrt(max(found["frontier/kl"], 0.0)))
        assert 0 <= found["frontier/gold/content"] <= 1 and found["frontier/length"] > 0
    # The last point is the closing evaluation's policy side.
    results = json.loads((out_a / "manifest.json").read_text())["results"]
    assert by_step[6]["frontier/kl"] == pytest.approx(results["eval_kl_to_reference_mean"])
    assert by_step[6]["frontier/gold/content"] == pytest.approx(results["eval_policy_content_mean"])
    rows = [json.loads(line) for line in (out_a / "metrics.jsonl").read_text().splitlines()]
    assert all(row["time/frontier"] > 0 for row in rows if "frontier/kl" in row and row["step"] < 6)

    _compare(tmp_path, out_a, points)

    # The evaluations leave training alone: without them the same steps and the same final weights.
    recipe_c, out_c = _write(tmp_path, "off")
    recipe_c.write_text(recipe_c.read_text().replace("frontier_every: 2", "frontier_every: null"))
    subprocess.run(_command(recipe_c), check=True, env=env, capture_output=True, timeout=600)
    assert _points(out_c) == []
    assert _training(out_c) == _training(out_a)
    assert (out_c / "final" / "model.safetensors").read_bytes() == (out_a / "final" / "model.safetensors").read_bytes()

    # Killed once its first checkpoint (step 2, after the step-2 point) is complete, then resumed.
    recipe_b, out_b = _write(tmp_path, "killed")
    process = subprocess.Popen(_command(recipe_b), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out_b / "checkpoints" / "checkpoint-2" / "rlhf-checkpoint.json"
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = subprocess.run(_command(recipe_b), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    assert _points(out_b) == points  # same steps, each once, same values (resuming is exact)


def _training(out: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        row["step"]: {k: v for k, v in row.items() if not k.startswith(("time", "tokens_per_s", "frontier/"))}
        for row in rows
        if "kl" in row
    }


def _compare(tmp_path: Path, ppo_dir: Path, points: list[tuple[int, dict]]) -> None:
    """compare over the run: its points in results.json under compare's names, best-of-n beside them, the figure."""
    from rlhf.compare.run import run
    from rlhf.recipe import validate_recipe

    out = tmp_path / "compare"
    cfg = validate_recipe(
        {
            "stage": "compare",
            "output_dir": str(out),
            "models": [{"name": "start", "path": "embedded:tiny"}, {"name": "ppo", "path": str(ppo_dir / "final")}],
            "prompts": {"path": str(DATA / "eval_prompts.jsonl"), "max_prompts": 6, "max_prompt_length": 64},
            "proxy": [{"name": "voice", "function": "brand_voice"}],
            "judges": [{"name": "support_content", "function": "support_content"}],
            "rollout": {"max_new_tokens": 12},
            "best_of_n": {"n": [2]},
            "bootstrap_resamples": 100,
            "report_samples": 1,
            "tracking": {"report_to": ["none"]},
        },
        base_dir=tmp_path,
    )
    run(cfg)
    found = json.loads((out / "results.json").read_text())["frontier"]
    series = found["runs"]["ppo"]
    assert list(found["runs"]) == ["ppo"] and series["kl_coef"] == 0.05
    # voice_rules is what ppo trained on and compare's proxy (same function); content is compare's judge.
    assert series["roles"] == {"proxy": "proxy", "support_content": "gold"}
    assert [(p["step"], p["kl"], p["scores"]["support_content"]) for p in series["points"]] == [
        (step, found_["frontier/kl"], found_["frontier/gold/content"]) for step, found_ in points
    ]
    assert series["peaks"]["support_content"]["value"] == max(f["frontier/gold/content"] for _, f in points)
    assert [(b["arm"], b["n"]) for b in found["best_of_n"]] == [("start", 1), ("start-bo2", 2)]
    assert (out / "plots" / "frontier.png").is_file()
    assert "## Over-optimisation frontier" in (out / "report.md").read_text()


def test_frontier_needs_eval_prompts(tmp_path):
    from rlhf.recipe import RecipeError, load_recipe

    recipe, _ = _write(tmp_path, "no_eval")
    recipe.write_text(recipe.read_text().replace(f"  eval: {DATA}/eval_prompts.jsonl\n", ""))
    with pytest.raises(RecipeError, match="frontier_every"):
        load_recipe(recipe)


def test_due_and_roles():
    from types import SimpleNamespace

    from rlhf.ppo.frontier import due, point, role

    assert [s for s in range(11) if due(s, 4, 10)] == [0, 4, 8]  # 10 is the closing evaluation's
    assert not any(due(s, None, 10) for s in range(11))
    learned = SimpleNamespace(name="learned", weight=1.0, model=object())
    judge = SimpleNamespace(name="judge", weight=0.0, model=None)
    rule = SimpleNamespace(name="rules", weight=0.5, model=None)
    assert [role(t) for t in (learned, judge, rule)] == ["proxy", "gold", "reward"]
    results = {
        "eval_kl_to_reference_mean": -0.01,
        "eval_policy_length_mean": 7.0,
        "eval_policy_learned_mean": 1.5,
        "eval_policy_judge_mean": 0.25,
        "eval_policy_rules_mean": 0.5,
    }
    found = point(results, [learned, judge, rule])
    assert found == {
        "frontier/kl": -0.01,
        "frontier/sqrt_kl": 0.0,  # a slightly negative sampled estimate counts as 0 under the root
        "frontier/length": 7.0,
        "frontier/proxy/learned": 1.5,
        "frontier/gold/judge": 0.25,
        "frontier/reward/rules": 0.5,
    }


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("config", ["ddp", "zero3"])
def test_frontier_under_two_processes(tmp_path, config):
    """2 CPU processes, DDP or ZeRO-3 (weights gathered for the evaluation, as for the closing one): every rank
    evaluates, rank 0 writes each point once; before training the point is the single-process one (same policy,
    prompts and seed)."""
    from ..distributed.launching import launch_command, run

    recipe, out = _write(tmp_path, config)
    # 4 prompts per rank and step keep the global batch of the single-process recipe (8).
    recipe.write_text(recipe.read_text().replace("batch_size: 8, max_steps: 6", "batch_size: 4, max_steps: 4"))
    run(launch_command(config, ["-m", "rlhf", "run", str(recipe)]), tmp_path / "launch.log")
    points = _points(out)
    assert [step for step, _ in points] == [0, 2, 4]
    assert points[0][1]["frontier/kl"] == 0.0 and points[-1][1]["frontier/kl"] > 0
    single, single_out = _write(tmp_path, "single")
    # The same evaluation batches (training.batch_size x 2 prompts): the sampler's random stream follows them.
    single.write_text(single.read_text().replace("batch_size: 8, max_steps: 6", "batch_size: 4, max_steps: 1"))
    subprocess.run(_command(single), check=True, capture_output=True, timeout=600)
    assert _points(single_out)[0] == points[0]
