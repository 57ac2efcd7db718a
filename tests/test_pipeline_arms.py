"""Named arms in a pipeline: two sections that run the same stage (ppo with GAE, a grpo arm) side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rlhf.artifacts import ArtifactError, check_output_dir, check_references
from rlhf.recipe import load_recipe
from rlhf.stages.registry import PipelineRecipe

from .conftest import REPO_ROOT

ARMS = REPO_ROOT / "recipes" / "brand_voice" / "arms.yaml"

PPO = {
    "model": {"name_or_path": "stage:sft"},
    "data": {"train": "p.jsonl"},
    "rewards": [{"name": "learned", "model": "stage:reward"}],
}
GRPO = {
    "stage": "ppo",
    **PPO,
    "advantage": {"estimator": "grpo"},
    "rollout": {"samples_per_prompt": 4},
    "training": {"batch_size": 8},
}


def pipeline(**sections) -> PipelineRecipe:
    return PipelineRecipe.model_validate(
        {
            "run_dir": "runs/x",
            "seed": 7,
            "tracking": {"report_to": ["none"]},
            "sft": {"data": {"train": "s.jsonl"}},
            "reward": {"model": {"name_or_path": "stage:sft"}, "data": {"train": "r.jsonl"}},
            **sections,
        }
    )


def test_an_arm_is_a_stage_section_with_its_own_directory_after_the_fixed_ones():
    recipe = pipeline(ppo=PPO, arms={"grpo": GRPO})
    assert list(recipe.sections()) == ["sft", "reward", "ppo", "grpo"]
    grpo = recipe.arms["grpo"]
    assert grpo.stage == "ppo" and grpo.advantage.estimator == "grpo"
    assert Path(grpo.output_dir) == Path("runs/x/grpo") and recipe.stage_output("grpo") == Path("runs/x/grpo")
    assert grpo.seed == 7 and grpo.tracking.report_to == ["none"] and grpo.resume is True
    assert recipe.section_name(grpo) == "grpo" and recipe.section_stage("grpo") == "ppo"
    assert [recipe.section_name(s) for s in recipe.selected_stages()] == ["sft", "reward", "ppo", "grpo"]
    only = pipeline(ppo=PPO, arms={"grpo": GRPO}, stages=["grpo"])
    assert [only.section_name(s) for s in only.selected_stages()] == ["grpo"]


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        ({"grpo": {k: v for k, v in GRPO.items() if k != "stage"}}, "arms.grpo needs `stage:`"),
        ({"ppo": GRPO}, "'ppo' is a section of the pipeline"),
        ({"grpo": {**GRPO, "output_dir": "elsewhere"}}, "arms.grpo.output_dir is set by the pipeline"),
        ({"GRPO": GRPO}, "should match pattern"),
        ({"grpo": {**GRPO, "model": {"name_or_path": "stage:later"}}, "later": GRPO}, "'later' is not an earlier"),
        ({"grpo": {**GRPO, "rewards": [{"name": "r", "model": "stage:sft"}]}}, "must be a reward model"),
    ],
)
def test_bad_arms_are_refused(arms, message):
    with pytest.raises(ValidationError, match=message):
        pipeline(arms=arms)


def test_compare_refers_to_arms_and_stages_selects_them():
    compare = {
        "models": [{"name": "sft", "path": "stage:sft"}, {"name": "grpo", "path": "stage:grpo"}],
        "prompts": {"path": "e.jsonl"},
        "judges": [{"name": "rules", "function": "brand_voice"}],
    }
    recipe = pipeline(arms={"grpo": GRPO}, compare=compare)
    assert list(recipe.sections()) == ["sft", "reward", "grpo", "compare"]
    with pytest.raises(ValidationError, match="no 'rloo' section"):
        pipeline(arms={"grpo": GRPO}, compare=compare, stages=["rloo"])


def test_a_reference_to_an_arm_this_run_skips_must_exist(tmp_path):
    recipe = load_recipe(ARMS, [f"run_dir={tmp_path}", "stages=[compare]"])
    with pytest.raises(ArtifactError, match="run sft first|run ppo first|run grpo first"):
        check_references(recipe)


def test_a_run_directory_with_an_arm_directory_is_rlhf_s_own(tmp_path):
    (tmp_path / "sft").mkdir()
    (tmp_path / "grpo").mkdir()
    (tmp_path / "grpo" / "recipe.yaml").write_text("stage: ppo\n")
    check_output_dir(tmp_path, pipeline=True)
    (tmp_path / "notes").mkdir()
    with pytest.raises(ArtifactError):
        check_output_dir(tmp_path, pipeline=True)


def test_the_shipped_arms_recipe_has_every_arm():
    recipe = load_recipe(ARMS)
    assert list(recipe.sections())[-2:] == ["grpo", "compare"]
    assert recipe.ppo.advantage.estimator == "gae" and recipe.arms["grpo"].advantage.estimator == "grpo"
    assert recipe.arms["grpo"].rollout.samples_per_prompt >= 2
    assert recipe.compare.best_of_n_model() == "sft"
    assert {"base", "sft", "ppo", "grpo", "sft-bo4"} <= set(recipe.compare.arm_names())
