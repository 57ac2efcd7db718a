"""The compare schema: a standalone compare recipe, a compare section in a pipeline, and its checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlhf.config import CompareStage
from rlhf.pipeline import resolve_references
from rlhf.recipe import RecipeError, load_recipe, validate_recipe

PIPELINE = Path(__file__).resolve().parents[2] / "recipes" / "brand_voice" / "pipeline.yaml"


def compare(**extra) -> dict:
    return {
        "stage": "compare",
        "output_dir": "out",
        "models": [{"name": "sft", "path": "/m/sft"}, {"name": "ppo", "path": "/m/ppo"}],
        "prompts": {"path": "prompts.jsonl"},
        "judges": [{"name": "rules", "function": "brand_voice"}],
        **extra,
    }


def test_the_shipped_pipeline_ends_with_compare_and_resolves_its_references(tmp_path):
    recipe = load_recipe(PIPELINE, [f"run_dir={tmp_path}"])
    assert [s.stage for s in recipe.selected_stages()][-1] == "compare"
    section = recipe.compare
    assert section.output_dir == str(tmp_path / "compare")
    assert section.reference_name() == "sft"
    assert section.prompts.path == str(PIPELINE.parent / "data" / "eval_prompts.jsonl")  # relative to the recipe
    resolved = resolve_references(section, recipe)
    paths = {m.name: m.path for m in resolved.models}
    assert paths == {
        "base": "embedded:base",
        "sft": str(tmp_path / "sft" / "final"),
        "ppo": str(tmp_path / "ppo" / "final"),
    }
    assert resolved.proxy[0].model == str(tmp_path / "reward" / "final")
    assert resolved.judges[0].function == "brand_voice"


def test_compare_alone_in_a_pipeline_may_refer_only_to_sections_present(tmp_path):
    data = yaml.safe_load(PIPELINE.read_text())
    data["run_dir"] = str(tmp_path)
    del data["ppo"]
    with pytest.raises(RecipeError, match="compare.models.2.path refers to 'stage:ppo'"):
        validate_recipe(data, base_dir=PIPELINE.parent)
    data = yaml.safe_load(PIPELINE.read_text())
    recipe = validate_recipe({**data, "run_dir": str(tmp_path), "stages": ["compare"]}, base_dir=PIPELINE.parent)
    assert [s.stage for s in recipe.selected_stages()] == ["compare"]


def test_defaults_and_relative_prompts(tmp_path):
    stage = validate_recipe(compare(), base_dir=tmp_path)
    assert isinstance(stage, CompareStage)
    assert stage.reference_name() == "sft"  # the first model
    assert stage.prompts.path == str(tmp_path / "prompts.jsonl")
    assert (stage.samples_per_prompt, stage.confidence, stage.proxy) == (1, 0.95, [])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"reference": "base"}, "reference 'base' is not one of the models"),
        ({"models": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]}, "model names must be unique"),
        ({"proxy": [{"name": "rm", "function": "brand_voice"}]}, "must be independent"),
        ({"judges": [{"name": "rules", "function": "brand_voice", "weight": 2.0}]}, "a weight has no meaning"),
        ({"judges": [{"name": "kl", "function": "brand_voice"}]}, "reserved"),
        ({"rollout": {"missing_eos_penalty": 1.0}}, "missing_eos_penalty"),
        ({"judges": []}, "judges"),
        ({"sample_per_prompt": 2}, "did you mean 'samples_per_prompt'"),
    ],
)
def test_bad_compare_recipes_are_refused(extra, message):
    with pytest.raises(RecipeError, match=message):
        validate_recipe(compare(**extra))


def test_a_weight_zero_training_term_may_serve_as_judge():
    proxy = [{"name": "learned", "model": "/m/rm"}, {"name": "voice_rules", "function": "brand_voice", "weight": 0}]
    stage = validate_recipe(compare(proxy=proxy))
    assert [p.name for p in stage.proxy] == ["learned", "voice_rules"]
