"""The pairs stage: `rlhf voice pairs` inside a pipeline. It writes the files the later stages name as
`stage:pairs/FILE` (the same bytes as the command), records its inputs in a manifest, is skipped when finished and
run again when its logs change, and bad references or logs are refused before anything runs."""

from __future__ import annotations

import filecmp
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from rlhf.artifacts import ArtifactError, check_references, read_manifest
from rlhf.cli import main
from rlhf.pipeline import resolve_references, run_recipe
from rlhf.recipe import RecipeError, load_recipe

BANK = Path(__file__).resolve().parents[2] / "recipes" / "bank_voice"
FILES = ["sft_train", "sft_eval", "prefs_train", "prefs_eval", "ppo_prompts", "eval_prompts"]


def _recipe(tmp_path: Path, **pairs) -> Path:
    """The shipped bank recipe beside a copy of its logs and spec, with `pairs` settings changed."""
    shutil.copy(BANK / "voice.yaml", tmp_path / "voice.yaml")
    (tmp_path / "data").mkdir(exist_ok=True)
    shutil.copy(BANK / "data" / "logs.jsonl", tmp_path / "data" / "logs.jsonl")
    recipe = yaml.safe_load((BANK / "pipeline.yaml").read_text(encoding="utf-8"))
    recipe["pairs"].update(pairs)
    recipe["run_dir"] = str(tmp_path / "run")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def test_the_bank_pipeline_starts_from_its_logs_and_writes_the_shipped_files(tmp_path):
    recipe = load_recipe(BANK / "pipeline.yaml", [f"run_dir={tmp_path / 'run'}", "stages=[pairs]"])
    (out,) = run_recipe(recipe)
    for name in [*FILES, "summary"]:
        suffix = ".json" if name == "summary" else ".jsonl"
        assert filecmp.cmp(out / "final" / (name + suffix), BANK / "data" / (name + suffix), shallow=False), name
    manifest = read_manifest(out)
    assert manifest["stage"] == "pairs" and manifest["status"] == "complete"
    assert set(manifest["data"]) == {str(BANK / "data" / "logs.jsonl"), str(BANK / "voice.yaml")}
    assert (
        manifest["results"]["eval_prompts"]
        == json.loads((out / "final" / "summary.json").read_text())["files"]["eval_prompts"]
    )
    # every later stage reads what the pairs stage wrote: the references resolve into its final/
    full = load_recipe(BANK / "pipeline.yaml", [f"run_dir={tmp_path / 'run'}"])
    assert resolve_references(full.sft, full).data.train == str(out / "final" / "sft_train.jsonl")
    assert resolve_references(full.reward, full).data.eval == str(out / "final" / "prefs_eval.jsonl")
    assert resolve_references(full.compare, full).prompts.path == str(out / "final" / "eval_prompts.jsonl")


def test_finished_pairs_are_skipped_and_run_again_when_the_logs_change(tmp_path):
    path = _recipe(tmp_path)
    run_recipe(load_recipe(path, ["stages=[pairs]"]))
    manifest = tmp_path / "run" / "pairs" / "manifest.json"
    first = manifest.stat().st_mtime_ns
    run_recipe(load_recipe(path, ["stages=[pairs]"]))
    assert manifest.stat().st_mtime_ns == first  # skipped: same recipe, logs and spec
    logs = tmp_path / "data" / "logs.jsonl"
    rows = logs.read_text(encoding="utf-8").splitlines()
    logs.write_text("\n".join(rows[:-50]) + "\n", encoding="utf-8")
    run_recipe(load_recipe(path, ["stages=[pairs]"]))
    assert manifest.stat().st_mtime_ns != first
    assert json.loads(manifest.read_text())["results"]["eval_prompts"] < 117  # from the shorter logs
    second = manifest.stat().st_mtime_ns
    run_recipe(load_recipe(path, ["stages=[pairs]", "pairs.resume=false"]))
    assert manifest.stat().st_mtime_ns != second


def test_a_later_stage_refuses_pairs_that_were_not_written(tmp_path):
    recipe = load_recipe(_recipe(tmp_path), ["stages=[sft]"])
    with pytest.raises(ArtifactError, match="refers to 'stage:pairs/sft_train.jsonl'.*run pairs first"):
        check_references(recipe)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("sft.data.train=stage:pairs/sft.jsonl", "a data reference names a file that stage writes: 'stage:pairs/sft_"),
        ("reward.data.eval=stage:sft/prefs_eval.jsonl", "'sft' writes no data files"),
        ("compare.prompts.path=stage:later/eval_prompts.jsonl", "'later' is not an earlier stage"),
        ("pairs.columns.mesage=text", "unknown key 'pairs.columns.mesage' (did you mean 'pairs.columns.message'?)"),
        ("pairs.logs=data/logs.txt", "is not a logs file"),
    ],
)
def test_bad_pairs_references_and_settings_are_refused(tmp_path, override, expected):
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe(tmp_path), [override])
    assert expected in str(err.value)


def test_validate_checks_the_logs_and_then_the_written_files(tmp_path, capsys):
    path = _recipe(tmp_path)
    logs = tmp_path / "data" / "logs.jsonl"
    good = logs.read_text(encoding="utf-8")
    rows = good.splitlines()
    broken = json.loads(rows[3])
    broken["reply"] = "  "
    logs.write_text("\n".join([*rows[:3], json.dumps(broken), *rows[4:]]) + "\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "logs.jsonl" in err[0] and "row 4" in err[0]
    assert "reply" in err[0]
    logs.write_text(good, encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    assert "stage:pairs/sft_train.jsonl" in capsys.readouterr().out  # not written yet: named, not read
    run_recipe(load_recipe(path, ["stages=[pairs]"]))
    assert main(["validate", str(path)]) == 0
    assert re.search(r"sft_train\.jsonl: \d+ rows", capsys.readouterr().out)  # read now
