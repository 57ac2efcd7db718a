"""The `rlhf` command line: `rlhf run RECIPE [key=value ...]` and `rlhf validate RECIPE [key=value ...]`.

`rlhf plan RECIPE [key=value ...] --launch CONFIG` estimates each stage's memory per device (`rlhf.planner`).

Both check the recipe, its data (`rlhf.data.doctor`), the upstream artifacts it names and its output directory
before anything runs. Exit codes: 0 success; 2 the input was refused (recipe, data, artifact, checkpoint, output
directory), with one `error:` message naming what to change; 1 training failed (a non-finite loss).

`rlhf compare ...` writes the evaluation report (its forms: `rlhf.compare.command`).
`rlhf voice check|pairs ...` audits replies against a voice spec and turns support logs into data (`rlhf.voice`).
`rlhf sweep RECIPE key=[a, b] ...` runs a pipeline over the cross product of swept keys, or prints one command per job
(`rlhf.sweep`); `rlhf compare --sweep RUN_DIR` reports a sweep's arms over seeds (`rlhf.compare.study`).

Recipes are loaded and validated before anything heavy (torch, transformers) is imported, so a typo fails in
milliseconds. The same commands run under `accelerate launch [options] -m rlhf run RECIPE ...`.

Known third-party noise (`quiet_third_party`) is kept out of the log unless `-v` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

from rlhf import sweep as sweep_command
from rlhf.artifacts import ArtifactError, check_output_dir, check_references
from rlhf.checkpoint import ResumeError
from rlhf.compare import command as compare_command
from rlhf.config import STAGE_REF_PREFIX, StageBase
from rlhf.data.doctor import DataProblems, examine
from rlhf.data.formats import DataError
from rlhf.recipe import RecipeError, load_recipe
from rlhf.stages.registry import PipelineRecipe, Recipe, declared_references, stage_of
from rlhf.voice import command as voice_command

logger = logging.getLogger("rlhf")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rlhf` console script and of `python -m rlhf`."""
    parser = argparse.ArgumentParser(prog="rlhf", description="SFT -> reward -> PPO alignment from YAML recipes.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "run a stage or pipeline recipe"),
        ("validate", "check a recipe and its data without training"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("recipe", help="path to a recipe YAML file")
        sub.add_argument("overrides", nargs="*", help="key.sub=value overrides (values are YAML)")
        sub.add_argument(
            "--allow-output-dir",
            action="store_true",
            help="write into an output directory outside the working directory (via '..') or one that "
            "holds files rlhf did not write",
        )
        _add_verbose_argument(sub)
    compare = commands.add_parser("compare", help="compare models on held-out prompts: report, intervals, alarms")
    compare_command.add_arguments(compare)
    _add_verbose_argument(compare)
    _add_plan_arguments(commands.add_parser("plan", help="estimate per-device memory of each stage (docs/memory.md)"))
    voice_command.add_arguments(commands.add_parser("voice", help="brand voice: check replies, make pairs from logs"))
    sweep = commands.add_parser("sweep", help="run a pipeline over swept keys (seeds, KL...), or print the commands")
    sweep_command.add_arguments(sweep)
    _add_verbose_argument(sweep)
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    _configure_logging(verbose)
    if args.command == "plan":
        return _plan(args)
    if args.command == "voice":
        return voice_command.run(args)
    if args.command == "sweep":
        return sweep_command.run(args)
    if args.command == "compare" and args.sweep is not None:
        return compare_command.run_sweep(args)

    try:
        recipe = compare_command.load(args) if args.command == "compare" else load_recipe(args.recipe, args.overrides)
        if args.command == "run" and isinstance(recipe, PipelineRecipe) and recipe.sweep:
            raise RecipeError(
                f"{args.recipe} is a study (it has sweep: {', '.join(recipe.sweep)}): run it with rlhf sweep, or "
                "pass sweep={} to run one combination"
            )
        checked = validate(recipe, allow_output_dir=getattr(args, "allow_output_dir", False))
    except (RecipeError, DataError, ArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command == "validate":
        for line in checked:
            print(line)
        print(f"ok: {args.recipe}")
        return 0
    for line in checked:
        (logger.warning if "warning:" in line else logger.info)(line)
    return run_validated(recipe, verbose)


def run_validated(recipe: Recipe, verbose: bool = False) -> int:
    """Runs a recipe that `validate` accepted; returns the exit code (2 refused, 1 training failed)."""
    if verbose:
        return _run(recipe)
    from rlhf.tracking import unused_wandb_mode_unset

    with unused_wandb_mode_unset(recipe.selected_stages() if isinstance(recipe, PipelineRecipe) else [recipe]):
        return _run(recipe)


def validate(recipe: Recipe, *, tokenizers: bool = True, allow_output_dir: bool = False) -> list[str]:
    """Checks everything about a recipe that can be checked without loading a model; returns the report's lines.

    Args:
        recipe: A stage or pipeline recipe.
        tokenizers: Count token lengths with the stages' tokenizers when they load cheaply (else estimate).
        allow_output_dir: Skip the output-directory safety rule (`--allow-output-dir`).

    Raises:
        RecipeError: A referenced local model directory does not exist.
        DataError: Data files have bad rows (`DataProblems` lists every error the doctor found).
        ArtifactError: An upstream artifact is missing, half-written or of the wrong stage; or the output directory
            is refused.
    """
    stages = recipe.selected_stages() if isinstance(recipe, PipelineRecipe) else [recipe]
    report = examine(recipe, tokenizers=tokenizers)
    if report.errors:
        raise DataProblems(report.errors)
    # One report per training stage, in order (two sections may run the same stage, e.g. ppo and a grpo arm).
    reports = iter(report.stages)
    lines = []
    for stage in stages:
        if stage_of(stage).check is not None:  # compare, pairs: no data block for the doctor
            lines.append(stage_of(stage).check(stage))
            continue
        for ref in _model_references(stage):
            _check_local_model(ref, stage.stage)
        lines += next(reports).lines()
    lines += [f"warning: {w}" for w in report.cross_warnings]
    check_references(recipe)
    if isinstance(recipe, PipelineRecipe):
        check_output_dir(recipe.run_dir, allow=allow_output_dir, pipeline=True)
    else:
        check_output_dir(recipe.output_dir, allow=allow_output_dir)
    return lines


def _model_references(stage: StageBase) -> list[str]:
    """Every model a stage recipe names in its declared reference fields (`rlhf.stages.registry`)."""
    return [value for reference, _, value in declared_references(stage) if not reference.file]


def _check_local_model(ref: str, stage: str) -> None:
    """A reference that is clearly a local path (not a hub id 'org/name') must exist."""
    if ref.startswith((STAGE_REF_PREFIX, "embedded:")):
        return
    looks_local = ref.startswith(("/", "./", "../", "~")) or ref.count("/") > 1
    if looks_local and not Path(ref).expanduser().exists():
        raise RecipeError(f"{stage}: model directory not found: {ref}")


def _run(recipe: Recipe) -> int:
    from rlhf.compare.report import REPORT_HTML
    from rlhf.distributed import shutdown
    from rlhf.models.loading import ModelLoadError
    from rlhf.pipeline import run_recipe
    from rlhf.precision import PrecisionError
    from rlhf.rewards.sources import RewardError
    from rlhf.stages.hf_checkpoints import NonFiniteLossError
    from rlhf.stages.ppo import NonFiniteError

    started = time.time()
    try:
        outputs = run_recipe(recipe)
    except (ArtifactError, ResumeError, ModelLoadError, DataError, RewardError, PrecisionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, NonFiniteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"\nfinished in {time.time() - started:.0f} s; outputs:")
        for path in outputs:
            print(f"  {path}")
        for path in outputs:
            if (path / REPORT_HTML).is_file():
                print(f"report: {path / REPORT_HTML}")
    return 0


def _add_plan_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("recipe", help="path to a recipe YAML file")
    sub.add_argument("overrides", nargs="*", help="key.sub=value overrides (values are YAML)")
    sub.add_argument("--launch", required=True, help="accelerate launch config, e.g. recipes/launch/zero3.yaml")
    sub.add_argument("--num-processes", type=int, help="processes in all (as accelerate launch --num_processes)")
    sub.add_argument(
        "--device-memory-gb",
        type=float,
        help="also list which shipped launch configs fit devices with this much memory (GiB)",
    )
    sub.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cuda: Triton LM-head kernel and a CUDA reserve when checking fit; cpu: torch fallbacks",
    )


def _plan(args: argparse.Namespace) -> int:
    """`rlhf plan`: the memory table for each stage under one launch config, and which shipped configs fit."""
    from rlhf.planner import LaunchSpec, fitting_configs, format_plan, plan_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides)
        launch = LaunchSpec.from_file(args.launch, args.num_processes)
        print(format_plan(plan_recipe(recipe, launch, args.device), launch))
        if args.device_memory_gb:
            print(
                f"\nshipped launch configs on {args.device_memory_gb:g} GiB {args.device} devices "
                "(largest stage per device, plus the CUDA reserve on cuda):"
            )
            for name, count, worst, fits in fitting_configs(
                recipe, args.device_memory_gb, args.num_processes, args.device
            ):
                if worst is None:
                    print(f"  {'refused':<8} {name:<14} {count:>3} processes  (mixed_precision bf16 under DeepSpeed)")
                else:
                    print(f"  {'fits' if fits else 'too big':<8} {name:<14} {count:>3} processes  {worst:9.3f} GiB")
    except (RecipeError, ValueError) as err:  # PlanError, ShapeError and ModelLoadError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _add_verbose_argument(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show everything: third-party warnings, load reports and progress bars that are filtered by default, "
        "and rlhf's debug messages",
    )


def _configure_logging(verbose: bool = False) -> None:
    main_process = int(os.environ.get("RANK", "0")) == 0
    level = logging.INFO if main_process else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if verbose:
        if main_process:
            logger.setLevel(logging.DEBUG)
        return
    quiet_third_party()


# Warnings that libraries raise about their own or each other's internals, as (category, message regex, module regex
# of the code the warning is attributed to). Nothing in them is for the user of a run to act on.
KNOWN_WARNINGS = (
    # DeepSpeed's ZeRO calls torch.distributed's old collective names (reduce_scatter_tensor, all_gather_into_tensor):
    # two lines per collective, rank and step.
    (FutureWarning, r"`torch\.distributed\.\w+` is deprecated", r"torch\.distributed\."),
    # transformers 5.24 renamed TrainingArguments' gradient_checkpointing to activation_checkpointing; the new name
    # does not exist in the older releases the project supports, so the stages pass the old one.
    (FutureWarning, r"`gradient_checkpointing(_kwargs)?` is deprecated", r"transformers\.training_args"),
)

# Rows of transformers' LOAD REPORT that a reward model or critic built from a causal LM always has: its new score
# head is missing from the checkpoint, and the LM head is left out. Any other row (missing trunk weights, a size
# mismatch) means a wrong checkpoint, and the report is kept.
EXPECTED_LOAD_ROWS = (("score.", "MISSING"), ("lm_head.", "UNEXPECTED"))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def quiet_third_party() -> None:
    """Keeps known third-party noise out of this process's log (`-v` skips this).

    Filtered: the warnings in `KNOWN_WARNINGS`, transformers' LOAD REPORT when it lists only the rows every reward
    model built from a causal LM has (`EXPECTED_LOAD_ROWS`), and, when stderr is not a terminal, the progress bars
    of transformers, the hub and datasets (a log file gets every redraw). wandb's offline banner is handled where the
    recipe is known (`rlhf.tracking.unused_wandb_mode_unset`). Call before transformers or datasets is imported: the
    progress-bar switches are read at import.
    """
    from rlhf.tracking import interactive

    for category, message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    logging.getLogger("transformers.modeling_utils").addFilter(_unexpected_load_report)
    if not interactive():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _unexpected_load_report(record: logging.LogRecord) -> bool:
    """False (drop) for a LOAD REPORT whose rows are all in `EXPECTED_LOAD_ROWS`; True for everything else."""
    message = _ANSI.sub("", record.getMessage())
    if "LOAD REPORT" not in message:
        return True
    table = message.split("\n\n")[0].splitlines()[1:]  # the title line, then the table up to the notes
    rows = [[cell.strip() for cell in line.split("|")] for line in table if "|" in line]
    rows = [row for row in rows if row[0] != "Key"]
    expected = all(
        any(row[0].startswith(prefix) and row[1] == status for prefix, status in EXPECTED_LOAD_ROWS) for row in rows
    )
    return not (rows and expected)
