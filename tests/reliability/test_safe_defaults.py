"""Safe defaults: no remote code unless asked, rewards only from reward_models/ or a named module, output paths that
stay where they were meant to, and no secrets in recipe.yaml, manifests or metrics."""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from rlhf.artifacts import ArtifactError, check_output_dir, scrub_secrets, write_manifest, write_recipe
from rlhf.config import ModelConfig, SFTStage

from ..conftest import REPO_ROOT

SECRET = "hf_abcdefghijklmnopqrstuvwxyz012345"


def test_trust_remote_code_is_off_by_default_and_passed_to_every_loader():
    """No loader ever turns remote code on by itself; the recipe-driven ones pass the recipe's choice through."""
    assert ModelConfig().trust_remote_code is False
    recipe_driven = ("stages", "models", "ppo", "generation", "rewards", "evaluation.py", "compare", "data")
    missing, forced = [], []
    for path in sorted((REPO_ROOT / "rlhf").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"
            ):
                continue
            where = f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
            flag = next((k.value for k in node.keywords if k.arg == "trust_remote_code"), None)
            if isinstance(flag, ast.Constant) and flag.value is True:
                forced.append(where)
            if flag is None and path.relative_to(REPO_ROOT / "rlhf").parts[0] in recipe_driven:
                missing.append(where)
    assert forced == [], "trust_remote_code=True hard-coded: " + ", ".join(forced)
    assert missing == [], "from_pretrained without the recipe's trust_remote_code: " + ", ".join(missing)


def test_programmatic_rewards_come_from_reward_models_or_a_named_module():
    from reward_models.brand_voice import score
    from rlhf.rewards.sources import RewardError, load_reward_function

    assert load_reward_function("brand_voice") is score
    assert load_reward_function("reward_models.brand_voice:score") is score
    with pytest.raises(RewardError, match=r"reward function 'nope': cannot import reward_models.nope"):
        load_reward_function("nope")
    with pytest.raises(RewardError, match=r"cannot import reward_models.os"):
        load_reward_function("os")  # a bare name never leaves reward_models/
    with pytest.raises(RewardError, match="name the function explicitly, as 'package.module:function'"):
        load_reward_function("os.path")
    with pytest.raises(RewardError, match="reward_models.brand_voice has no function 'nope'"):
        load_reward_function("reward_models.brand_voice:nope")


def test_unknown_reward_function_is_refused_before_the_run(tmp_path, cli):
    (tmp_path / "p.jsonl").write_text('{"prompt": "q"}\n')
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "stage": "ppo",
                "output_dir": str(tmp_path / "out"),
                "data": {"train": "p.jsonl"},
                "rewards": [{"name": "r", "function": "nope"}],
            }
        )
    )
    code, _, err = cli("validate", recipe)
    assert code == 2
    assert (
        "rewards.0.function: reward function 'nope': cannot import reward_models.nope (No module named "
        "'reward_models.nope')"
    ) in err


def test_output_dir_escaping_the_working_directory(tmp_path, monkeypatch, recipe_file, cli):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    recipe = recipe_file("sft")
    code, _, err = cli("validate", recipe, "output_dir=../../elsewhere")
    assert code == 2
    assert (
        "output path '../../elsewhere' leaves the working directory (it resolves to "
        f"{tmp_path.parent / 'elsewhere'}); write it as an absolute path"
    ) in err
    assert cli("validate", recipe, "output_dir=../../elsewhere", "--allow-output-dir")[0] == 0
    assert cli("validate", recipe, "output_dir=runs/../runs/sft")[0] == 0  # '..' that stays inside is fine
    assert cli("validate", recipe, f"output_dir={tmp_path / 'abs'}")[0] == 0  # an absolute path is taken as meant


def test_output_dir_holding_someone_elses_files(tmp_path, recipe_file, cli):
    recipe = recipe_file("sft")
    theirs = tmp_path / "thesis"
    theirs.mkdir()
    (theirs / "chapter1.tex").write_text("...")
    code, _, err = cli("validate", recipe, f"output_dir={theirs}")
    assert code == 2
    assert f"output directory {theirs} already holds files rlhf did not write (chapter1.tex)" in err
    assert cli("validate", recipe, f"output_dir={theirs}", "--allow-output-dir")[0] == 0

    ours = tmp_path / "previous_run"  # an earlier run's directory: resumed or skipped, never refused
    (ours / "checkpoints").mkdir(parents=True)
    (ours / "recipe.yaml").write_text("stage: sft\n")
    assert cli("validate", recipe, f"output_dir={ours}")[0] == 0


def test_pipeline_run_dir_holding_other_files(tmp_path):
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "recipe.yaml").write_text("stage: sft\n")
    check_output_dir(tmp_path, pipeline=True)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match=r"already holds files rlhf did not write \(notes.txt\)"):
        check_output_dir(tmp_path, pipeline=True)


def test_scrub_secrets():
    argv = [
        "rlhf",
        "run",
        "r.yaml",
        "wandb_api_key=abc123",
        "--hub_token",
        "xyz",
        f"tracking.run_name={SECRET}",
        "--password=hunter2",
        "training.learning_rate=0.1",
        "model.name_or_path=org/model",
    ]
    assert scrub_secrets(argv) == [
        "rlhf",
        "run",
        "r.yaml",
        "wandb_api_key=***",
        "--hub_token",
        "***",
        "tracking.run_name=***",
        "--password=***",
        "training.learning_rate=0.1",
        "model.name_or_path=org/model",
    ]


def test_no_secret_reaches_recipe_manifest_or_metrics(tmp_path, monkeypatch):
    from rlhf.tracking import Tracker

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setattr(sys, "argv", ["rlhf", "run", "r.yaml", f"hf_token={SECRET}", f"tracking.run_name={SECRET}"])
    (tmp_path / "t.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    cfg = SFTStage.model_validate(
        {"stage": "sft", "output_dir": str(tmp_path / "out"), "data": {"train": str(tmp_path / "t.jsonl")}}
    )
    out = Path(cfg.output_dir)
    write_recipe(cfg, out)
    tracker = Tracker(cfg.tracking, out, cfg.model_dump(mode="json"))
    tracker.log({"loss": 1.0}, step=1)
    tracker.close()
    manifest = write_manifest(out, cfg, data={}, parents={}, results={}, started=0.0)
    assert "hf_token=***" in manifest["command"] and "tracking.run_name=***" in manifest["command"]
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="ignore")
            assert SECRET not in text and os.environ["WANDB_API_KEY"] not in text, path
    assert json.loads((out / "manifest.json").read_text())["command"].count("***") == 2


def test_yaml_is_only_read_with_safe_load():
    unsafe = [
        f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
        for root in ("rlhf", "reward_models", "scripts")
        for path in sorted((REPO_ROOT / root).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "yaml"
        and node.attr in ("load", "load_all", "unsafe_load", "full_load", "Loader", "UnsafeLoader")
    ]
    assert unsafe == []
