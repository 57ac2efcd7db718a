"""`rlhf sweep`: planning (which stages are shared), the printed commands, refusals, and a tiny sweep killed in the
middle and run again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlhf.checkpoint import MARKER
from rlhf.cli import main
from rlhf.recipe import RecipeError
from rlhf.sweep import SHARED, parse_axes, plan_sweep, value_label

from ..conftest import PIPELINE, REPO_ROOT

STUDY = REPO_ROOT / "recipes" / "brand_voice" / "study.yaml"


def plan(*arguments: str, recipe: Path = PIPELINE):
    fixed, axes = parse_axes(recipe, list(arguments))
    return plan_sweep(recipe, fixed, axes)


def test_stages_no_swept_key_reaches_are_shared():
    result = plan("seed=[1, 2]", "ppo.kl.coef=[0.05, 0.1]", "run_dir=runs/s")
    where = result.layout[result.combinations.index({"seed": 2, "ppo.kl.coef": 0.1})]
    assert where == {
        "sft": "seed=2",
        "reward": "seed=2",
        "ppo": "seed=2,ppo.kl.coef=0.1",
        "compare": "seed=2,ppo.kl.coef=0.1",
    }
    assert [(job.group, job.sections) for job in result.jobs] == [
        ("seed=1", ["sft", "reward"]),
        ("seed=2", ["sft", "reward"]),
        ("seed=1,ppo.kl.coef=0.05", ["ppo", "compare"]),
        ("seed=1,ppo.kl.coef=0.1", ["ppo", "compare"]),
        ("seed=2,ppo.kl.coef=0.05", ["ppo", "compare"]),
        ("seed=2,ppo.kl.coef=0.1", ["ppo", "compare"]),
    ]
    assert result.jobs[3].links == {"sft": "seed=1", "reward": "seed=1"}


def test_dependence_follows_the_resolved_recipe_and_the_stage_graph():
    # A learning rate of sft reaches sft and everything built on it; a key only ppo reads reaches ppo and compare.
    result = plan("sft.training.learning_rate=[1e-3, 2e-3]", "ppo.kl.coef=[0.05, 0.1]")
    first = result.layout[0]
    assert first["sft"] == first["reward"] == "sft.training.learning_rate=1e-3"  # as written (YAML reads 1e-3 as text)
    assert first["ppo"] == first["compare"] == "sft.training.learning_rate=1e-3,ppo.kl.coef=0.05"
    # A section with a seed of its own does not follow the pipeline's seed: sft is trained once for both seeds.
    result = plan("seed=[1, 2]", "sft.seed=5")
    assert {layout["sft"] for layout in result.layout} == {SHARED}
    assert {layout["reward"] for layout in result.layout} == {"seed=1", "seed=2"}
    assert [job.group for job in result.jobs] == [SHARED, "seed=1", "seed=2"]
    assert result.jobs[1].links == {"sft": SHARED}
    # A named arm's key reaches that arm and compare; ppo and dpo beside it are trained once per seed.
    result = plan("arms.grpo.kl.coef=[0.05, 0.1]", "seed=[1, 2]", recipe=REPO_ROOT / "recipes/brand_voice/arms.yaml")
    assert result.layout[0] == {
        **dict.fromkeys(("sft", "reward", "dpo", "ppo"), "seed=1"),
        "grpo": "arms.grpo.kl.coef=0.05,seed=1",
        "compare": "arms.grpo.kl.coef=0.05,seed=1",
    }
    assert [job.sections for job in result.jobs[:2]] == [["sft", "reward", "dpo", "ppo"]] * 2


def test_print_writes_one_command_per_job_wave_by_wave(tmp_path, capsys):
    run_dir = tmp_path / "runs"
    code = main(["sweep", str(PIPELINE), "seed=[1,2]", "ppo.kl.coef=[0.05,0.1]", f"run_dir={run_dir}", "--print"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    waves = [i for i, line in enumerate(lines) if line.startswith("# wave")]
    assert len(waves) == 3 and waves[0] == 0
    first, second = lines[1 : waves[1]], lines[waves[1] + 1 : waves[2]]
    assert len(first) == 2 and all("'stages=[sft, reward]'" in line for line in first)
    assert len(second) == 4 and all("'stages=[ppo, compare]'" in line for line in second)
    assert f"ln -sfn ../seed=1/sft {run_dir}/seed=1,ppo.kl.coef=0.05/sft" in second[0]
    assert f"run_dir={run_dir}/seed=1,ppo.kl.coef=0.05" in second[0] and "ppo.kl.coef=0.05" in second[0]
    assert lines[-1] == f"rlhf compare --sweep {run_dir}"
    record = json.loads((run_dir / "sweep.json").read_text())
    assert [c["name"] for c in record["combinations"]][0] == "seed=1,ppo.kl.coef=0.05" and record[
        "compare"
    ] == "compare"
    assert not list(run_dir.glob("seed=*"))  # printing trains nothing
    launcher = "accelerate launch --config_file recipes/launch/zero2.yaml -m rlhf"
    assert main(["sweep", str(PIPELINE), "seed=[1,2]", f"run_dir={run_dir}", "--print", "--launcher", launcher]) == 0
    assert f"{launcher} run {PIPELINE}" in capsys.readouterr().out


def test_a_bad_key_is_refused_up_front_in_one_line(tmp_path, capsys):
    code = main(["sweep", str(PIPELINE), "seed=[1,2]", "ppo.kl.cof=[0.05,0.1]", f"run_dir={tmp_path}", "--print"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert "'ppo.kl.cof'" in err[0] and "did you mean 'ppo.kl.coef'" in err[0]
    assert main(["sweep", str(PIPELINE), "run_dir=[a, b]", "--print"]) == 2
    assert "cannot be swept" in capsys.readouterr().err


def test_axes_values_and_names():
    fixed, axes = parse_axes(PIPELINE, ["seed=[1, 2]", "tracking.report_to=[[none]]", "sft.training.epochs=2"])
    assert [(a.key, a.values) for a in axes] == [("seed", (1, 2))]
    assert fixed == ["sft.training.epochs=2", "tracking.report_to=[none]"]  # a one-value list fixes a list key
    assert value_label("Qwen/Qwen2.5 0.5B") == "Qwen_Qwen2.5_0.5B" and value_label(1e-4) == "0.0001"
    with pytest.raises(RecipeError, match="share the directory name"):
        parse_axes(PIPELINE, ["sft.model.name_or_path=[a/b, a_b]"])


def test_the_study_recipe_sweeps_three_seeds_by_three_kl_coefficients(capsys):
    result = plan(recipe=STUDY)
    assert [(a.key, len(a.values)) for a in result.axes] == [("seed", 3), ("ppo.kl.coef", 3)]
    assert [len(job.keys) for job in result.jobs] == [1] * 3 + [2] * 9
    assert all(job.sections == ["sft", "reward"] for job in result.jobs[:3])
    # rlhf run would run one combination silently: it refuses a recipe with a sweep.
    assert main(["run", str(STUDY)]) == 2
    assert "rlhf sweep" in capsys.readouterr().err


SHORT = [
    "seed=[1,2]",
    "ppo.kl.coef=[0.05,0.1]",
    "tracking.report_to=[[none]]",
    "sft.model.name_or_path=embedded:tiny",
    "sft.data.max_train_rows=64",
    "sft.data.max_eval_rows=16",
    "sft.training.max_steps=4",
    "sft.training.eval_steps=1000",
    "sft.training.save_steps=null",
    "reward.data.max_train_rows=64",
    "reward.data.max_eval_rows=16",
    "reward.training.max_steps=4",
    "reward.training.eval_steps=1000",
    "reward.training.save_steps=null",
    "ppo.training.max_steps=3",
    "ppo.training.batch_size=8",
    "ppo.training.save_steps=1",
    "ppo.rollout.max_new_tokens=16",
    "ppo.update.epochs=1",
    "ppo.data.max_eval_rows=8",
    "compare.models=[[{name: sft, path: 'stage:sft'}, {name: ppo, path: 'stage:ppo'}]]",
    "compare.prompts.max_prompts=12",
    "compare.rollout.max_new_tokens=16",
    "compare.bootstrap_resamples=200",
]
COMBOS = ("seed=1,ppo.kl.coef=0.05", "seed=1,ppo.kl.coef=0.1", "seed=2,ppo.kl.coef=0.05", "seed=2,ppo.kl.coef=0.1")


def started(log: str, stage: str, directory: Path) -> int:
    """How many times a log says a stage started in a directory (`rlhf.pipeline.run_stage`)."""
    return len(re.findall(rf"stage {stage} -> {re.escape(str(directory))}\n", log))


@pytest.mark.slow
def test_a_killed_sweep_finishes_every_run_exactly_once_when_run_again(tmp_path):
    run_dir = tmp_path / "runs"
    command = [sys.executable, "-m", "rlhf", "sweep", str(PIPELINE), *SHORT, f"run_dir={run_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        # Kill during the second ppo run, once it has a checkpoint (or, on a fast machine, whenever it is seen).
        first_ppo = run_dir / COMBOS[0] / "ppo" / "manifest.json"
        second_ppo = run_dir / COMBOS[1] / "ppo"
        deadline = time.monotonic() + 600
        while process.poll() is None and time.monotonic() < deadline:
            if first_ppo.exists() and (second_ppo / "checkpoints" / "checkpoint-1" / MARKER).exists():
                break
            time.sleep(0.05)
        assert process.poll() is None, "the sweep ended or failed before it could be killed:\n" + first_log.read_text()
        process.send_signal(signal.SIGKILL)
        process.wait()
    interrupted = not (second_ppo / "manifest.json").exists()
    sft_finished = {seed: _manifest(run_dir / f"seed={seed}" / "sft")["finished_at"] for seed in (1, 2)}
    assert not (run_dir / COMBOS[3] / "compare" / "manifest.json").exists()

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    logs = first_log.read_text() + second.stdout + second.stderr

    # Each sft and reward ran once per seed, in its seed's directory, and was not run again for the second KL value
    # nor by the second invocation.
    for seed in (1, 2):
        for stage in ("sft", "reward"):
            assert started(logs, stage, run_dir / f"seed={seed}" / stage) == 1, (seed, stage)
        assert _manifest(run_dir / f"seed={seed}" / "sft")["finished_at"] == sft_finished[seed]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(["seed=1", "seed=2", *COMBOS, "study", "sweep.json"])
    for combo in COMBOS:
        seed = combo.split(",")[0]
        for stage in ("sft", "reward"):
            link = run_dir / combo / stage
            assert link.is_symlink() and link.resolve() == (run_dir / seed / stage).resolve()
        ppo = _manifest(run_dir / combo / "ppo")
        assert ppo["status"] == "complete" and ppo["results"]["episodes"] == 3 * 8
        assert Path(ppo["parents"]["policy"]["path"]).resolve() == (run_dir / seed / "sft" / "final").resolve()
        assert _manifest(run_dir / combo / "compare")["status"] == "complete"
    # The ppo run finished before the kill was skipped by the second invocation; the interrupted one resumed.
    assert started(logs, "ppo", run_dir / COMBOS[0] / "ppo") == 1
    assert started(logs, "ppo", run_dir / COMBOS[3] / "ppo") == 1
    if interrupted:
        assert f"resuming from {second_ppo / 'checkpoints'}" in second.stdout + second.stderr
    assert yaml.safe_load((run_dir / COMBOS[1] / "ppo" / "recipe.yaml").read_text())["kl"]["coef"] == 0.1

    # The report over seeds: one setting per KL value, both seeds in each.
    study = json.loads((run_dir / "study" / "results.json").read_text())
    assert set(study["settings"]) == {"ppo.kl.coef=0.05", "ppo.kl.coef=0.1"}
    setting = study["settings"]["ppo.kl.coef=0.1"]
    assert setting["seeds"] == ["1", "2"] and setting["reference"] == "sft"
    kl = setting["summary"]["ppo"]["kl"]
    assert set(kl["per_seed"]) == {"1", "2"} and kl["pooled"]["low"] <= kl["pooled"]["mean"] <= kl["pooled"]["high"]
    report = (run_dir / "study" / "report.md").read_text()
    assert "## ppo.kl.coef=0.05" in report and "### Win rates against sft" in report
    # The pipeline's ppo records in-loop points (frontier_every): one frontier figure over every combination.
    assert (run_dir / "study" / "frontier.png").stat().st_size > 0 and "![frontier](frontier.png)" in report
    lc = report.split("## Length-controlled win rates against sft", 1)[1].split("\n## ", 1)[0]
    assert "| ppo.kl.coef=0.1 | ppo | support_content |" in lc and "1: " in lc and "2: " in lc

    # A third run finds everything finished and trains nothing.
    third = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and third.stdout.count("finished earlier, skipped") == 6, third.stdout
    assert not re.search(r"stage \w+ -> ", third.stdout + third.stderr)


def _manifest(stage_dir: Path) -> dict:
    return json.loads((stage_dir / "manifest.json").read_text())
