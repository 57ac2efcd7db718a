"""`rlhf compare`: the quick form builds the same recipe a file would, and mistakes are refused early."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rlhf.cli import main
from rlhf.compare import command
from rlhf.config import CompareStage
from rlhf.recipe import RecipeError
from rlhf.stages.registry import PipelineRecipe

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "recipes" / "brand_voice" / "pipeline.yaml"
PROMPTS = ROOT / "recipes" / "brand_voice" / "data" / "eval_prompts.jsonl"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_quick_form_builds_a_compare_recipe(tmp_path):
    for name in ("rm", "judge_rm"):
        (tmp_path / name / "final").mkdir(parents=True)
    args = parse(
        "--models",
        "sft=embedded:tiny",
        f"ppo={tmp_path}",
        "--prompts",
        str(PROMPTS),
        "--reward",
        str(tmp_path / "rm" / "final"),
        "--judge",
        "brand_voice",
        f"{tmp_path / 'judge_rm' / 'final'}",
        "--out",
        str(tmp_path / "out"),
        "samples_per_prompt=3",
        "rollout.max_new_tokens=16",
    )
    recipe = command.load(args)
    assert isinstance(recipe, CompareStage)
    assert [(m.name, m.path) for m in recipe.models] == [("sft", "embedded:tiny"), ("ppo", str(tmp_path))]
    assert recipe.reference_name() == "sft"
    assert [(p.name, p.model) for p in recipe.proxy] == [("learned", str(tmp_path / "rm" / "final"))]
    # A function judge is named after its module, a directory judge after its stage directory (final/'s parent).
    assert [(j.name, j.function or j.model) for j in recipe.judges] == [
        ("brand_voice", "brand_voice"),
        ("judge_rm", str(tmp_path / "judge_rm" / "final")),
    ]
    assert recipe.samples_per_prompt == 3 and recipe.rollout.max_new_tokens == 16
    assert recipe.output_dir == str(tmp_path / "out")


def test_quick_form_refuses_its_mistakes(tmp_path):
    with pytest.raises(RecipeError, match="--judge, --out"):
        command.load(parse("--models", "a=embedded:tiny", "--prompts", str(PROMPTS)))
    with pytest.raises(RecipeError, match="write NAME=PATH"):
        command.load(
            parse(
                "--models", "embedded:tiny", "--prompts", str(PROMPTS), "--judge", "brand_voice", "--out", str(tmp_path)
            )
        )
    with pytest.raises(RecipeError, match="give no recipe"):
        command.load(
            parse(
                "recipe.yaml",
                "--models",
                "a=embedded:tiny",
                "--prompts",
                str(PROMPTS),
                "--judge",
                "brand_voice",
                "--out",
                str(tmp_path),
            )
        )
    with pytest.raises(RecipeError, match="needs a recipe"):
        command.load(parse())


def test_a_pipeline_recipe_runs_only_its_compare_section(tmp_path):
    recipe = command.load(parse(str(PIPELINE), f"run_dir={tmp_path}"))
    assert isinstance(recipe, PipelineRecipe)
    assert [s.stage for s in recipe.selected_stages()] == ["compare"]


def test_other_stage_recipes_are_refused(tmp_path):
    sft = tmp_path / "sft.yaml"
    sft.write_text(f"stage: sft\noutput_dir: {tmp_path}/out\ndata:\n  train: {PROMPTS}\n")
    with pytest.raises(RecipeError, match="rlhf compare takes a compare recipe"):
        command.load(parse(str(sft)))


def test_validate_a_compare_recipe_without_loading_models(tmp_path, capsys):
    code = main(
        [
            "compare",
            "--models",
            "a=embedded:tiny",
            f"b={tmp_path}/missing",
            "--prompts",
            str(PROMPTS),
            "--judge",
            "brand_voice",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "model directory not found" in capsys.readouterr().err
