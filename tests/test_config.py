"""The recipe schema on its own: defaults, checks, pipeline sections and data path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rlhf import config
from rlhf.config import (
    DataConfig,
    PPOStage,
    RewardSourceConfig,
    SFTStage,
    TrackingConfig,
    TrainingConfig,
    is_data_file,
)
from rlhf.stages.registry import PipelineRecipe


def sft_section(**extra) -> dict:
    return {"data": {"train": "data/train.jsonl"}, **extra}


def blocks() -> list[type[config.Block]]:
    return [
        obj
        for obj in vars(config).values()
        if isinstance(obj, type) and issubclass(obj, config.Block) and obj is not config.Block
    ]


@pytest.mark.parametrize("block", blocks(), ids=lambda b: b.__name__)
def test_every_field_is_documented(block):
    undocumented = [name for name, field in block.model_fields.items() if not field.description]
    assert not undocumented, f"{block.__name__}: fields without a description: {undocumented}"


@pytest.mark.parametrize("block", blocks(), ids=lambda b: b.__name__)
def test_every_block_forbids_unknown_keys(block):
    assert block.model_config.get("extra") == "forbid"


def test_stage_defaults_come_from_the_schema():
    stage = SFTStage.model_validate({"stage": "sft", "output_dir": "out", "data": {"train": "org/dataset"}})
    assert stage.model.name_or_path == "embedded:tiny"
    assert stage.model.lora is None
    assert stage.training == TrainingConfig()
    assert stage.tracking.report_to == ["none"]
    assert stage.data.train == "org/dataset"  # a hub name is not a file and passes through untouched


def test_assignment_is_validated():
    training = TrainingConfig()
    with pytest.raises(ValidationError):
        training.learning_rate = -1.0


def test_prompt_must_fit_in_max_length():
    with pytest.raises(ValidationError, match="max_prompt_length"):
        DataConfig(train="x.jsonl", max_length=64, max_prompt_length=64)
    assert DataConfig(train="x.jsonl", max_length=64, max_prompt_length=63).max_prompt_length == 63


def test_tracking_accepts_a_single_tracker_name():
    assert TrackingConfig(report_to="wandb").report_to == ["wandb"]
    assert TrackingConfig(report_to=["tensorboard", "wandb"]).report_to == ["tensorboard", "wandb"]
    with pytest.raises(ValidationError, match="none"):
        TrackingConfig(report_to=["none", "wandb"])
    with pytest.raises(ValidationError):
        TrackingConfig(report_to=["mlflow"])


def test_reward_source_needs_exactly_one_of_model_or_function():
    RewardSourceConfig(name="a", model="dir")
    RewardSourceConfig(name="b", function="brand_voice")
    for bad in ({"name": "c"}, {"name": "d", "model": "dir", "function": "brand_voice"}):
        with pytest.raises(ValidationError, match="exactly one"):
            RewardSourceConfig(**bad)


def test_ppo_batch_must_split_into_minibatches():
    base = {"stage": "ppo", "output_dir": "out", "data": {"train": "p.jsonl"}, "rewards": [{"name": "r", "model": "m"}]}
    PPOStage.model_validate({**base, "training": {"batch_size": 8}, "update": {"num_minibatches": 2}})
    with pytest.raises(ValidationError, match="split evenly"):
        PPOStage.model_validate({**base, "training": {"batch_size": 6}, "update": {"num_minibatches": 4}})
    with pytest.raises(ValidationError, match="split evenly"):
        PPOStage.model_validate({**base, "training": {"batch_size": 8, "gradient_accumulation_steps": 3}})


def test_pipeline_sets_output_dirs_and_shares_seed_and_tracking():
    recipe = PipelineRecipe.model_validate(
        {
            "run_dir": "runs/x",
            "seed": 7,
            "tracking": {"report_to": "tensorboard"},
            "sft": sft_section(),
            "reward": sft_section(seed=3, model={"name_or_path": "stage:sft"}, tracking={"report_to": ["none"]}),
        }
    )
    assert recipe.sft.stage == "sft" and recipe.reward.stage == "reward"
    assert Path(recipe.sft.output_dir) == Path("runs/x/sft")
    assert Path(recipe.reward.output_dir) == Path("runs/x/reward")
    assert recipe.stage_output("reward") == Path("runs/x/reward")
    assert recipe.sft.seed == 7 and recipe.reward.seed == 3  # a stage's own setting wins
    assert recipe.sft.tracking.report_to == ["tensorboard"]
    assert recipe.reward.tracking.report_to == ["none"]


@pytest.mark.parametrize("key", ["output_dir", "stage"])
def test_pipeline_sections_cannot_set_what_the_pipeline_sets(key):
    with pytest.raises(ValidationError, match=f"sft.{key} is set by the pipeline"):
        PipelineRecipe.model_validate({"run_dir": "r", "sft": sft_section(**{key: "sft"})})


def test_pipeline_selects_stages_in_pipeline_order():
    data = {"run_dir": "r", "sft": sft_section(), "reward": sft_section(model={"name_or_path": "stage:sft"})}
    assert [s.stage for s in PipelineRecipe.model_validate(data).selected_stages()] == ["sft", "reward"]
    only = PipelineRecipe.model_validate({**data, "stages": ["reward"]})
    assert [s.stage for s in only.selected_stages()] == ["reward"]
    with pytest.raises(ValidationError, match="no 'ppo' section"):
        PipelineRecipe.model_validate({**data, "stages": ["ppo"]})
    with pytest.raises(ValidationError, match="at least one"):
        PipelineRecipe.model_validate({"run_dir": "r"})


def test_stage_references_must_point_backwards():
    with pytest.raises(ValidationError, match="'reward' is not an earlier stage"):
        PipelineRecipe.model_validate(
            {
                "run_dir": "r",
                "sft": sft_section(model={"name_or_path": "stage:reward"}),
                "reward": sft_section(),
            }
        )


def test_is_data_file_goes_by_suffix():
    for name in ("a.jsonl", "b.JSON", "dir/c.csv", "d.parquet"):
        assert is_data_file(name)
    for name in ("org/dataset", "trl-lib/ultrafeedback_binarized", "data.txt"):
        assert not is_data_file(name)


def test_relative_data_paths_resolve_against_the_base_dir(tmp_path):
    data = DataConfig.model_validate({"train": "d/train.jsonl", "eval": "org/hub-set"}, context={"base_dir": tmp_path})
    assert data.train == str((tmp_path / "d" / "train.jsonl").resolve())
    assert data.eval == "org/hub-set"
    absolute = str(tmp_path / "abs.jsonl")
    assert DataConfig.model_validate({"train": absolute}, context={"base_dir": "/elsewhere"}).train == absolute
