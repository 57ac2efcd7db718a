"""Running a recipe: one stage, or a pipeline of stages in one run directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rlhf.artifacts import FINAL, begin_stage, check_parent, end_stage, up_to_date
from rlhf.config import STAGE_REF_PREFIX, CompareStage, StageBase, reference_parts
from rlhf.stages.registry import PipelineRecipe, Recipe, replace_references, stage_of, stage_references

logger = logging.getLogger("rlhf")


def resolve_references(stage: StageBase | CompareStage, pipeline: PipelineRecipe) -> StageBase | CompareStage:
    """Replaces `stage:NAME` references with the referenced stage's final/ directory in this pipeline (and
    `stage:NAME/FILE` with that file in it)."""

    def resolve(ref: str) -> str:
        return str(pipeline.reference_path(ref)) if ref.startswith(STAGE_REF_PREFIX) else ref

    return replace_references(stage, resolve)


def run_stage(stage: StageBase | CompareStage) -> Path:
    """Runs one stage recipe through the entry function its registry declaration names.

    With `resume` on, a stage whose output already holds a finished run of exactly this recipe, data and parent
    artifacts is skipped. Otherwise the old manifest is set aside first, so until the stage finishes its directory
    reads as a half-written artifact that later stages refuse (restored if the stage fails before touching final/).
    """
    from rlhf.distributed import is_main_process

    if getattr(stage, "resume", False) and up_to_date(stage):
        logger.info(
            "stage %s: %s already holds a finished run of this recipe and data; skipping it (resume=false "
            "runs it again)",
            stage.stage,
            stage.output_dir,
        )
        return Path(stage.output_dir)
    logger.info("stage %s -> %s", stage.stage, stage.output_dir)
    output_dir, started, main = Path(stage.output_dir), time.time(), is_main_process()
    if main:
        begin_stage(output_dir)
    try:
        result = stage_of(stage).run(stage)
    except BaseException:
        if main:
            end_stage(output_dir, started, failed=True)
        raise
    if main:
        end_stage(output_dir, started, failed=False)
    return result


def check_stage_references(stage: StageBase | CompareStage, pipeline: PipelineRecipe) -> None:
    """Checks that every `stage:NAME` reference now points at a complete artifact of stage NAME (lineage).

    Raises:
        rlhf.artifacts.ArtifactError: The referenced artifact is missing, half-written or of another stage.
    """
    for _, ref in stage_references(stage):
        target, _ = reference_parts(ref)
        check_parent(pipeline.stage_output(target) / FINAL, expected_stage=pipeline.section_stage(target))


def run_recipe(recipe: Recipe) -> list[Path]:
    """Runs a stage recipe or every selected stage of a pipeline recipe, in order; returns the output directories."""
    from rlhf.distributed import prepare_environment

    prepare_environment()
    if isinstance(recipe, PipelineRecipe):
        outputs = []
        for stage in recipe.selected_stages():
            check_stage_references(stage, recipe)
            outputs.append(run_stage(resolve_references(stage, recipe)))
        return outputs
    return [run_stage(recipe)]
