"""Every shipped recipe validates; every shipped launch config is an accelerate config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlhf.config import STAGE_REF_PREFIX, is_data_file
from rlhf.recipe import load_recipe
from rlhf.stages.registry import stage_of

from .conftest import REPO_ROOT

RECIPES = REPO_ROOT / "recipes"
LAUNCH = RECIPES / "launch"


def shipped_yaml() -> list[Path]:
    return sorted(p for p in RECIPES.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def is_recipe(path: Path) -> bool:
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and ("stage" in data or "run_dir" in data)


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(RECIPES)) for p in paths]


RECIPE_FILES = [p for p in shipped_yaml() if LAUNCH not in p.parents and is_recipe(p)]
LAUNCH_FILES = [p for p in shipped_yaml() if LAUNCH in p.parents]


def test_the_quickstart_pipeline_is_shipped():
    assert RECIPES / "brand_voice" / "pipeline.yaml" in RECIPE_FILES


@pytest.mark.parametrize("path", RECIPE_FILES, ids=ids(RECIPE_FILES))
def test_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    stages = recipe.selected_stages() if hasattr(recipe, "selected_stages") else [recipe]
    assert stages
    for stage in stages:
        for source in stage_of(stage).inputs(stage):  # `stage:NAME/FILE`: written by an earlier stage of the run
            if source is not None and is_data_file(source) and not source.startswith(STAGE_REF_PREFIX):
                assert Path(source).is_file(), f"{path.name}: {stage.stage} data file missing: {source}"


@pytest.mark.parametrize("path", LAUNCH_FILES or [None], ids=ids(LAUNCH_FILES) or ["none"])
def test_launch_config_is_an_accelerate_config(path):
    if path is None:
        pytest.skip("no launch configs under recipes/launch/")
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict), f"{path} is not a mapping"
    assert "compute_environment" in config or "distributed_type" in config, path
    deepspeed = (config.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if deepspeed:
        assert (REPO_ROOT / deepspeed).is_file(), f"{path.name} names a missing DeepSpeed config: {deepspeed}"
