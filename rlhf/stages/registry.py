"""The stage registry: every stage declared once, and everything that has to know the stages reads it from here.

A `Stage` names the stage, its schema class, the data shape its `data.train`/`data.eval` hold, the fields that may
hold a `stage:NAME` reference (and to which stage they must point), the data files it writes (which later stages
name as `stage:NAME/FILE`), its entry function and its memory estimate.
Recipe loading, pipeline validation and resolution, the data doctor, the CLI's checks, artifact lineage and
`rlhf plan` read these declarations; adding a stage is a schema class in `rlhf.config`, a module in `rlhf.stages`
and one entry in `STAGES`.

This module imports neither torch nor transformers: entry functions and estimates import their stage module only when
called, so loading a recipe stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, create_model

from rlhf.config import (
    ARM_NAME,
    STAGE_REF_PREFIX,
    CompareStage,
    DPOStage,
    PairsStage,
    PipelineBase,
    PPOStage,
    RewardStage,
    SFTStage,
    StageBase,
)

DataShape = Literal["demonstrations", "preferences", "prompts"]


@dataclass(frozen=True)
class Reference:
    """A recipe field that may hold `stage:NAME` (the final/ directory of an earlier stage of the pipeline).

    Attributes:
        field: Dotted path into the stage recipe; `*` steps over the items of a list.
        stage: The stage the reference must name (a reward source must be a reward model); None: any earlier stage.
        base: Also accepts `stage:NAME.base`, the model stage NAME starts from.
        file: A data field: holds `stage:NAME/FILE`, a file that stage writes (one of its `writes`).
    """

    field: str
    stage: str | None = None
    base: bool = False
    file: bool = False


@dataclass(frozen=True)
class Stage:
    """One stage's declaration.

    Attributes:
        name: The stage's name: recipe `stage:` value, pipeline section, output folder, module name.
        schema: Its recipe schema class (`rlhf.config`).
        summary: One line for the pipeline schema's section description.
        reads: The shape of the rows in its `data` block, or the prompts of compare's `prompts` block.
        references: The fields that may hold a `stage:NAME` reference, in the order they are checked.
        run: The entry function (`run(cfg) -> output directory`).
        plan: The memory estimate (`plan(cfg, shape, launch, device) -> StagePlan`, `shape(ref)` reading a model's
            config); None for a stage that trains nothing.
        writes: The data files it writes into final/ instead of a model (later stages read `stage:NAME/FILE`).
        inputs: The local files a finished run depends on beyond its recipe (`inputs(cfg)`): a change runs it again.
        check: What `rlhf validate` checks on a stage without a `data` block (`check(cfg) -> summary line`), without
            loading a model; None: the data doctor checks its `data` block.
    """

    name: str
    schema: type[BaseModel]
    summary: str
    reads: DataShape | None
    references: tuple[Reference, ...]
    run: Callable[[Any], Path]
    plan: Callable[..., Any] | None = None
    writes: tuple[str, ...] = ()
    inputs: Callable[[Any], tuple[str | None, ...]] = lambda cfg: (cfg.data.train, cfg.data.eval)
    check: Callable[[Any], str] | None = None

    @property
    def trains(self) -> bool:
        """Whether the stage trains (and so checkpoints and resumes)."""
        return "resume" in self.schema.model_fields


# Entry functions and estimates import their module when called: see the module docstring.
def _run_pairs(cfg: PairsStage) -> Path:
    from rlhf.stages.pairs import run

    return run(cfg)


def _check_pairs(cfg: PairsStage) -> str:
    from rlhf.stages.pairs import check

    return check(cfg)


def _check_compare(cfg: CompareStage) -> str:
    from rlhf.config import STAGE_REF_PREFIX

    if cfg.prompts.path.startswith(STAGE_REF_PREFIX):  # an earlier stage of the run writes them: checked when read
        return f"compare: prompts {cfg.prompts.path} (written earlier in this run); output {cfg.output_dir}"
    from rlhf.compare import command

    return command.check(cfg)


def _run_sft(cfg: SFTStage) -> Path:
    from rlhf.stages.sft import run

    return run(cfg)


def _run_reward(cfg: RewardStage) -> Path:
    from rlhf.stages.reward import run

    return run(cfg)


def _run_dpo(cfg: DPOStage) -> Path:
    from rlhf.stages.dpo import run

    return run(cfg)


def _plan_dpo(cfg: DPOStage, shape, launch, device: str):
    from rlhf.stages.dpo import plan

    return plan(cfg, shape, launch, device)


def _run_ppo(cfg: PPOStage) -> Path:
    from rlhf.stages.ppo import run

    return run(cfg)


def _run_compare(cfg: CompareStage) -> Path:
    from rlhf.compare.run import run

    return run(cfg)


def _plan_sft(cfg: SFTStage, shape, launch, device: str):
    from rlhf.planner import plan_sft

    return plan_sft(cfg, shape(cfg.model.name_or_path), launch, device)


def _plan_reward(cfg: RewardStage, shape, launch, device: str):
    from rlhf.planner import plan_reward

    if cfg.implicit is not None:  # trained as dpo trains: a causal LM and its frozen reference
        from rlhf.stages.dpo import plan

        return plan(cfg, shape, launch, device)

    return plan_reward(cfg, shape(cfg.model.name_or_path), launch, device)


def _plan_ppo(cfg: PPOStage, shape, launch, device: str):
    from rlhf.planner import plan_ppo_stage

    return plan_ppo_stage(cfg, shape, launch, device)


MODEL = Reference("model.name_or_path")
DATA = (Reference("data.train", file=True), Reference("data.eval", file=True))
PAIRS_FILES = tuple(
    f"{name}.jsonl" for name in ("sft_train", "sft_eval", "prefs_train", "prefs_eval", "ppo_prompts", "eval_prompts")
)

# In pipeline order: a pipeline runs its sections in this order, and a reference may only point backwards.
STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage(
            "pairs",
            PairsStage,
            "Support logs and a voice spec -> the data files of the later stages (`rlhf voice pairs`).",
            reads=None,
            references=(),
            run=_run_pairs,
            writes=PAIRS_FILES,
            inputs=lambda cfg: (cfg.logs, cfg.spec),
            check=_check_pairs,
        ),
        Stage(
            "sft",
            SFTStage,
            "The sft stage.",
            reads="demonstrations",
            references=(MODEL, *DATA),
            run=_run_sft,
            plan=_plan_sft,
        ),
        Stage(
            "reward",
            RewardStage,
            "The reward stage.",
            reads="preferences",
            references=(MODEL, *DATA),
            run=_run_reward,
            plan=_plan_reward,
        ),
        Stage(
            "dpo",
            DPOStage,
            "The dpo stage (an arm beside ppo).",
            reads="preferences",
            references=(MODEL, *DATA),
            run=_run_dpo,
            plan=_plan_dpo,
        ),
        Stage(
            "ppo",
            PPOStage,
            "The ppo stage.",
            reads="prompts",
            references=(
                MODEL,
                Reference("rewards.*.model", stage="reward"),
                Reference("value.init"),
                *DATA,
            ),
            run=_run_ppo,
            plan=_plan_ppo,
        ),
        Stage(
            "compare",
            CompareStage,
            "The closing evaluation report.",
            reads="prompts",
            references=(
                Reference("models.*.path", base=True),
                Reference("proxy.*.model", stage="reward"),
                Reference("judges.*.model", stage="reward"),
                Reference("pairwise_judges.*.model", base=True),  # a model judge: any causal LM of the pipeline
                Reference("prompts.path", file=True),
            ),
            run=_run_compare,
            inputs=lambda cfg: (cfg.prompts.path,),
            check=_check_compare,
        ),
    )
}

# A named arm is any training stage's section under a name of its own; its `stage:` says which.
TrainingRecipe = Annotated[Union[tuple(s.schema for s in STAGES.values() if s.trains)], Field(discriminator="stage")]  # noqa: UP007 (a Union built from a tuple)

PipelineRecipe = create_model(
    "PipelineRecipe",
    __base__=PipelineBase,
    __module__=__name__,
    **{name: (stage.schema | None, Field(None, description=stage.summary)) for name, stage in STAGES.items()},
    arms=(
        dict[Annotated[str, Field(pattern=ARM_NAME)], TrainingRecipe],
        Field(
            default_factory=dict,
            description="Named training sections beyond the stages' own, run in this order after them and before "
            "compare, each with its `stage:` (e.g. `grpo: {stage: ppo, advantage: {estimator: grpo}, ...}`). It "
            "writes <run_dir>/NAME; later sections and compare refer to it as 'stage:NAME'.",
        ),
    ),
)
PipelineRecipe.__doc__ = PipelineBase.__doc__
StageRecipe = StageBase | CompareStage
Recipe = PipelineRecipe | StageRecipe


def stage_of(cfg: BaseModel) -> Stage:
    """The declaration of the stage a stage recipe runs."""
    return STAGES[cfg.stage]


def training_stage_names() -> list[str]:
    """The stages that train, in pipeline order."""
    return [name for name, stage in STAGES.items() if stage.trains]


def field_values(cfg: BaseModel, field: str) -> Iterator[tuple[str, str]]:
    """(concrete dotted path, value) for every string a dotted field pattern (`*` over list items) reaches."""

    def walk(node: Any, parts: list[str], path: list[str]) -> Iterator[tuple[str, str]]:
        if node is None:
            return
        if not parts:
            if isinstance(node, str):
                yield ".".join(path), node
            return
        head, rest = parts[0], parts[1:]
        if head == "*":
            for i, item in enumerate(node):
                yield from walk(item, rest, [*path, str(i)])
        else:
            yield from walk(getattr(node, head), rest, [*path, head])

    yield from walk(cfg, field.split("."), [])


def declared_references(cfg: BaseModel) -> Iterator[tuple[Reference, str, str]]:
    """(declaration, concrete field path, value) for every value in a stage recipe's reference fields."""
    for reference in stage_of(cfg).references:
        for path, value in field_values(cfg, reference.field):
            yield reference, path, value


def stage_references(cfg: BaseModel) -> list[tuple[str, str]]:
    """Every `stage:NAME` reference a stage recipe makes, as (field path, reference) pairs."""
    return [(path, value) for _, path, value in declared_references(cfg) if value.startswith(STAGE_REF_PREFIX)]


def replace_references(cfg: BaseModel, replace: Callable[[str], str]) -> BaseModel:
    """A copy of a stage recipe with `replace` applied to the value of every declared reference field."""

    def rebuild(node: Any, parts: list[str]) -> Any:
        if node is None:
            return None
        if not parts:
            return replace(node)
        head, rest = parts[0], parts[1:]
        if head == "*":
            return [rebuild(item, rest) for item in node]
        return node.model_copy(update={head: rebuild(getattr(node, head), rest)})

    for reference in stage_of(cfg).references:
        cfg = rebuild(cfg, reference.field.split("."))
    return cfg
