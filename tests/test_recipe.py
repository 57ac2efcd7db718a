"""Loading recipes: overrides, error messages that name the key (and the closest valid one), path resolution."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhf.config import SFTStage
from rlhf.recipe import RecipeError, apply_override, load_recipe, recipe_to_yaml
from rlhf.stages.registry import PipelineRecipe

from .conftest import DATA_DIR, PIPELINE, REPO_ROOT


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sft_recipe(tmp_path: Path, **extra) -> Path:
    data = {"stage": "sft", "output_dir": str(tmp_path / "out"), "data": {"train": "train.jsonl"}, **extra}
    return write_recipe(tmp_path / "sft.yaml", data)


def error_of(path, overrides=()) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, list(overrides))
    return str(info.value)


# Unknown keys -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "unknown", "suggestion"),
    [
        ("sft.training.learning_rat=1e-4", "sft.training.learning_rat", "sft.training.learning_rate"),
        ("learning_rate=1e-4", "learning_rate", "sft.training.learning_rate"),  # misplaced at the top level
        ("sft.learning_rate=1e-4", "sft.learning_rate", "sft.training.learning_rate"),  # misplaced in a stage
        ("sft.model.lora.rr=4", "sft.model.lora.rr", "sft.model.lora.r"),
        ("reward.data.max_lenght=64", "reward.data.max_lenght", "reward.data.max_length"),
        ("trackng.report_to=wandb", "trackng", "tracking"),
        ("ppo.rewards.0.wieght=2", "ppo.rewards.0.wieght", "ppo.rewards.0.weight"),  # inside a list item
        ("ppo.update.clip_range=0.1", "ppo.update.clip_range", "ppo.update.cliprange"),
    ],
)
def test_unknown_key_names_the_key_and_the_closest_valid_key(override, unknown, suggestion):
    message = error_of(PIPELINE, [override])
    assert f"unknown key '{unknown}'" in message
    assert f"did you mean '{suggestion}'" in message


def test_unknown_key_in_a_stage_recipe_file(tmp_path):
    message = error_of(sft_recipe(tmp_path, learning_rate=0.1))
    assert "unknown key 'learning_rate'" in message
    assert "did you mean 'training.learning_rate'" in message


def test_unknown_key_far_from_anything_gets_no_guess():
    message = error_of(PIPELINE, ["sft.training.zzzzqqq=1"])
    assert "unknown key 'sft.training.zzzzqqq'" in message
    assert "did you mean" not in message


def test_unknown_stage_name_suggests_the_closest_stage(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", {"stage": "sfft", "output_dir": "o", "data": {"train": "t.jsonl"}})
    message = error_of(path)
    assert "'sfft' is not a stage" in message and "did you mean 'sft'" in message


def test_a_recipe_needs_stage_or_run_dir(tmp_path):
    message = error_of(write_recipe(tmp_path / "r.yaml", {"data": {"train": "t.jsonl"}}))
    assert "stage:" in message and "run_dir:" in message


# Wrong types and missing keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("sft.training.learning_rate=fast", "sft.training.learning_rate", "'fast'"),
        ("sft.training.batch_size=-1", "sft.training.batch_size", "-1"),
        ("reward.training.epochs=[1, 2]", "reward.training.epochs", "[1, 2]"),
        ("sft.training.lr_scheduler=cos", "sft.training.lr_scheduler", "'cos'"),
        ("sft.model.dtype=float8", "sft.model.dtype", "'float8'"),
        ("tracking.report_to=mlflow", "tracking.report_to.0", "'mlflow'"),
        ("sft.data.train=null", "sft.data.train", "None"),
    ],
)
def test_wrong_value_names_the_key_and_the_bad_value(override, key, value):
    message = error_of(PIPELINE, [override])
    assert f"{key}: " in message
    assert f"(got {value})" in message


def test_every_problem_is_reported_on_its_own_line():
    message = error_of(PIPELINE, ["sft.training.learning_rat=1", "reward.training.batch_size=0"])
    lines = message.splitlines()
    assert any("sft.training.learning_rat" in line for line in lines)
    assert any("reward.training.batch_size" in line for line in lines)
    assert len(lines) == 3  # the header naming the file, then one line per problem
    assert lines[0].startswith(str(PIPELINE))


def test_missing_required_keys_are_named(tmp_path):
    message = error_of(write_recipe(tmp_path / "r.yaml", {"stage": "sft"}))
    assert "missing required key 'output_dir'" in message
    assert "missing required key 'data'" in message
    pipeline = write_recipe(tmp_path / "p.yaml", {"run_dir": "r", "sft": {"data": {"eval": "e.jsonl"}}})
    assert "missing required key 'sft.data.train'" in error_of(pipeline)


# Stage references ---------------------------------------------------------------------------------------------------


def test_reference_to_a_later_stage_fails():
    message = error_of(PIPELINE, ["sft.model.name_or_path=stage:reward"])
    assert "sft.model.name_or_path refers to 'stage:reward'" in message
    assert "not an earlier stage" in message


def test_reference_to_a_missing_stage_fails():
    message = error_of(PIPELINE, ["sft=null", "ppo=null"])
    assert "reward.model.name_or_path refers to 'stage:sft'" in message


def test_reference_to_an_unknown_stage_fails():
    message = error_of(PIPELINE, ["reward.model.name_or_path=stage:pretrain"])
    assert "'pretrain' is not an earlier stage" in message


# Overrides ----------------------------------------------------------------------------------------------------------


def test_overrides_are_parsed_as_yaml():
    recipe = load_recipe(
        PIPELINE,
        [
            "sft.training.learning_rate=1e-4",
            "reward.training.learning_rate=3.0e-4",
            "stages=[sft]",
            "sft.training.max_grad_norm=null",
            "ppo.rewards.0.weight=2",
            "tracking.run_name=first try",
            "seed=7",
        ],
    )
    assert isinstance(recipe, PipelineRecipe)
    assert recipe.sft.training.learning_rate == pytest.approx(1e-4)
    assert recipe.reward.training.learning_rate == pytest.approx(3e-4)
    assert recipe.stages == ["sft"]
    assert [s.stage for s in recipe.selected_stages()] == ["sft"]
    assert recipe.sft.training.max_grad_norm is None
    assert recipe.ppo.rewards[0].weight == 2.0
    assert recipe.sft.tracking.run_name == "first try"
    assert recipe.sft.seed == 7 and recipe.reward.seed == 7


def test_override_creates_a_missing_section():
    recipe = load_recipe(PIPELINE, ["sft.model.lora.r=4"])
    assert recipe.sft.model.lora is not None
    assert recipe.sft.model.lora.r == 4 and recipe.sft.model.lora.alpha == 16  # the rest from the schema


def test_apply_override_on_a_raw_mapping():
    data = {"a": {"b": 1}, "items": [{"w": 1}, {"w": 2}]}
    apply_override(data, "a.b=0.5")
    apply_override(data, "a.c.d=[x, y]")
    apply_override(data, "items.1.w=null")
    apply_override(data, "e=")
    assert data == {"a": {"b": 0.5, "c": {"d": ["x", "y"]}}, "items": [{"w": 1}, {"w": None}], "e": ""}


@pytest.mark.parametrize("override", ["foo", "=3", "a..b=1", ".a=1", "a.=1"])
def test_malformed_overrides_fail(override):
    with pytest.raises(RecipeError, match="must look like key.sub=value"):
        apply_override({}, override)


@pytest.mark.parametrize("override", ["ppo.rewards.5.weight=2", "ppo.rewards.first.weight=2"])
def test_list_overrides_need_a_valid_index(override):
    message = error_of(PIPELINE, [override])
    assert "ppo.rewards." in message and "index below 3" in message


def test_override_into_a_plain_value_fails():
    assert "'seed' is a value" in error_of(PIPELINE, ["seed.x=1"])


def test_override_with_invalid_yaml_fails():
    assert "not valid YAML" in error_of(PIPELINE, ["stages=[sft"])


# Files --------------------------------------------------------------------------------------------------------------


def test_missing_recipe_file(tmp_path):
    assert "recipe file not found" in error_of(tmp_path / "nope.yaml")


def test_recipe_that_is_not_yaml_or_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: sft\n  output_dir: [unclosed\n")
    assert "not valid YAML" in error_of(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- stage: sft\n")
    assert "must hold a mapping" in error_of(listed)


def test_data_paths_resolve_relative_to_the_recipe_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the recipe's directory
    recipe = load_recipe(PIPELINE)
    assert Path(recipe.sft.data.train) == DATA_DIR / "sft_train.jsonl"
    assert Path(recipe.reward.data.eval) == DATA_DIR / "prefs_eval.jsonl"
    assert recipe.run_dir == "runs/brand_voice"  # run_dir stays relative to the working directory

    nested = tmp_path / "recipes" / "mine"
    nested.mkdir(parents=True)
    stage = load_recipe(sft_recipe(nested, data={"train": "data/t.jsonl", "eval": "../e.csv"}))
    assert Path(stage.data.train) == (nested / "data" / "t.jsonl").resolve()
    assert Path(stage.data.eval) == (tmp_path / "recipes" / "e.csv").resolve()


def test_data_override_resolves_relative_to_the_recipe_file():
    recipe = load_recipe(PIPELINE, ["sft.data.train=data/sft_eval.jsonl", "reward.data.train=org/prefs"])
    assert Path(recipe.sft.data.train) == DATA_DIR / "sft_eval.jsonl"
    assert recipe.reward.data.train == "org/prefs"


# The resolved recipe ------------------------------------------------------------------------------------------------


def test_each_pipeline_stage_round_trips_through_recipe_yaml(tmp_path):
    pipeline = load_recipe(PIPELINE, ["sft.model.lora.r=4", "tracking.report_to=[tensorboard, wandb]"])
    for stage in pipeline.selected_stages():
        written = tmp_path / f"{stage.stage}.yaml"
        written.write_text(recipe_to_yaml(stage))
        again = load_recipe(written)
        assert again == stage
        assert type(again) is type(stage)


def test_stage_recipe_round_trips_and_writes_every_default(tmp_path):
    recipe = load_recipe(sft_recipe(tmp_path))
    assert isinstance(recipe, SFTStage)
    text = recipe_to_yaml(recipe)
    written = yaml.safe_load(text)
    assert written["training"]["learning_rate"] == SFTStage.model_fields["training"].default_factory().learning_rate
    assert written["data"]["train"] == str((tmp_path / "train.jsonl").resolve())
    copy = tmp_path / "copy" / "recipe.yaml"
    copy.parent.mkdir()
    copy.write_text(text)
    assert load_recipe(copy) == recipe  # absolute paths do not move when the recipe does


# Import weight ------------------------------------------------------------------------------------------------------


def test_loading_a_recipe_does_not_import_torch():
    code = (
        "import sys\n"
        "from rlhf.recipe import load_recipe\n"
        f"load_recipe({str(PIPELINE)!r}, ['sft.training.learning_rate=1e-4'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=60)
