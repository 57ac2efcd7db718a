"""`stage:NAME.base` in a pipeline's compare models: the model stage NAME starts from, visible in recipe.yaml.

The shipped pipeline compares `base: stage:sft.base`, so the base follows `sft.model.name_or_path` (an override, or
another starting model in the recipe) instead of staying on a name written twice.
"""

from __future__ import annotations

import pytest
import yaml

from rlhf.artifacts import write_recipe
from rlhf.cli import main
from rlhf.pipeline import resolve_references
from rlhf.recipe import RecipeError, load_recipe

from ..conftest import PIPELINE


def compare_paths(*overrides: str) -> dict[str, str]:
    recipe = load_recipe(PIPELINE, ["run_dir=run", *overrides])
    return {m.name: m.path for m in recipe.compare.models}


def test_the_shipped_base_is_the_sft_starting_model():
    assert "stage:sft.base" in PIPELINE.read_text()
    recipe = load_recipe(PIPELINE, ["run_dir=run"])
    assert compare_paths()["base"] == recipe.sft.model.name_or_path


def test_the_base_follows_an_override_of_the_sft_model():
    assert compare_paths("sft.model.name_or_path=org/other-model")["base"] == "org/other-model"


def test_an_explicit_base_stays():
    paths = compare_paths("sft.model.name_or_path=org/other-model", "compare.models.0.path=org/base-model")
    assert paths["base"] == "org/base-model"


def test_a_later_stage_base_resolves_through_its_own_reference(tmp_path):
    # ppo starts from stage:sft, so stage:ppo.base is the sft stage's final/ once the pipeline resolves references.
    recipe = load_recipe(PIPELINE, [f"run_dir={tmp_path}", "compare.models.0.path=stage:ppo.base"])
    assert recipe.compare.models[0].path == "stage:sft"
    resolved = resolve_references(recipe.compare, recipe)
    assert resolved.models[0].path == str(tmp_path / "sft" / "final")


def test_the_compare_recipe_yaml_shows_the_model_it_compares(tmp_path):
    recipe = load_recipe(PIPELINE, [f"run_dir={tmp_path}", "sft.model.name_or_path=org/other-model"])
    write_recipe(resolve_references(recipe.compare, recipe), tmp_path / "compare")
    written = yaml.safe_load((tmp_path / "compare" / "recipe.yaml").read_text())
    assert written["models"][0] == {"name": "base", "path": "org/other-model"}


def test_a_reference_to_a_stage_that_is_not_earlier_is_refused(tmp_path, capsys):
    for ref, target in (("stage:compare.base", "compare"), ("stage:dpo.base", "dpo")):
        try:
            load_recipe(PIPELINE, ["run_dir=run", f"compare.models.0.path={ref}"])
        except RecipeError as err:
            assert f"compare.models.0.path refers to '{ref}', but '{target}' is not an earlier stage" in str(err)
        else:
            raise AssertionError(f"{ref} was accepted")
    # Without an sft section the base reference has nothing to follow.
    try:
        load_recipe(PIPELINE, ["run_dir=run", "sft=null", "reward.model.name_or_path=embedded:tiny", "ppo=null"])
    except RecipeError as err:
        assert "compare.models.0.path refers to 'stage:sft.base', but 'sft' is not an earlier stage" in str(err)
    else:
        raise AssertionError("a pipeline without sft accepted stage:sft.base")
    # Outside compare's models a `.base` reference is not a stage.
    with pytest.raises(RecipeError, match="'sft.base' is not an earlier stage"):
        load_recipe(PIPELINE, ["run_dir=run", "ppo.model.name_or_path=stage:sft.base"])
    code = main(["validate", str(PIPELINE), f"run_dir={tmp_path}", "compare.models.0.path=stage:compare.base"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "stage:compare.base" in err and "Traceback" not in err
