"""The stage registry: each declaration agrees with its schema, and the pipeline, references and data follow it."""

from __future__ import annotations

import typing

import pytest

from rlhf.config import PipelineBase
from rlhf.data.formats import CLASSIFIERS
from rlhf.recipe import load_recipe
from rlhf.stages.registry import STAGES, PipelineRecipe, replace_references, stage_of, stage_references

from .conftest import PIPELINE


def field_exists(schema, path: str) -> bool:
    """Whether a dotted reference pattern (`*` over list items) names a string field of the schema."""
    from rlhf.recipe import _inner_model

    model = schema
    for part in path.split("."):
        if part == "*":
            continue
        if model is None or part not in model.model_fields:
            return False
        model = _inner_model(model.model_fields[part].annotation)
    return model is None  # the last part is a plain value, not a block


@pytest.mark.parametrize("name", list(STAGES))
def test_each_declaration_matches_its_schema(name):
    stage = STAGES[name]
    assert typing.get_args(stage.schema.model_fields["stage"].annotation) == (name,)
    # the data doctor and the loaders know the shape it reads; a stage without data rows has its own check
    assert stage.reads in CLASSIFIERS or (stage.reads is None and stage.check is not None)
    assert stage.references or stage.writes  # a stage builds on earlier ones or writes what they read
    assert all(field_exists(stage.schema, ref.field) for ref in stage.references)
    assert all(ref.stage is None or ref.stage in STAGES for ref in stage.references)
    assert stage.trains == ("resume" in stage.schema.model_fields)


def test_pipeline_sections_follow_the_registry_in_order():
    sections = [name for name in PipelineRecipe.model_fields if name not in PipelineBase.model_fields]
    assert sections == [*STAGES, "arms"]  # one section per stage, then the named arms
    recipe = load_recipe(PIPELINE, ["run_dir=/tmp/registry-test"])
    assert [s.stage for s in recipe.selected_stages()] == [n for n in STAGES if getattr(recipe, n) is not None]
    assert all(stage_of(s) is STAGES[s.stage] for s in recipe.selected_stages())


def test_references_are_found_and_replaced_from_the_declarations():
    recipe = load_recipe(PIPELINE, ["run_dir=/tmp/registry-test", "ppo.value.init=stage:reward"])
    assert stage_references(recipe.ppo) == [
        ("model.name_or_path", "stage:sft"),
        ("rewards.0.model", "stage:reward"),
        ("value.init", "stage:reward"),
    ]
    # compare's `stage:sft.base` was replaced when the pipeline was validated (by the declaration's base=True).
    assert [m.path for m in recipe.compare.models] == ["embedded:base", "stage:sft", "stage:ppo"]
    replaced = replace_references(recipe.ppo, lambda ref: ref.upper())
    assert replaced.model.name_or_path == "STAGE:SFT" and replaced.value.init == "STAGE:REWARD"
    assert [s.model for s in replaced.rewards] == ["STAGE:REWARD", None, None]  # functions have no model
    assert recipe.ppo.model.name_or_path == "stage:sft"  # the original is left as it was
