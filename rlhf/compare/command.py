"""The `rlhf compare` command: a recipe, or a quick form that writes the recipe for you.

    rlhf compare RECIPE [key.sub=value ...]
        RECIPE is a compare recipe (`stage: compare`) or a pipeline recipe with a `compare` section (then only that
        section runs, its `stage:NAME` references pointing into the pipeline's run directory).

    rlhf compare --models NAME=PATH [NAME=PATH ...] --prompts FILE --judge [NAME=]SPEC [...]
                 [--reward [NAME=]DIR] [--reference NAME] --out DIR [key.sub=value ...]
        The quick form builds the same compare recipe from flags (paths relative to the working directory), then
        applies the overrides, e.g. `samples_per_prompt=4 rollout.max_new_tokens=32`. A judge SPEC is a reward-model
        directory (anything with a '/' or an existing directory) or a programmatic reward ('brand_voice',
        'package.module:function'). `--reward` is the training reward (the proxy); `--reference` defaults to the
        first model. The resolved recipe is written to DIR/recipe.yaml, so `rlhf compare DIR/recipe.yaml` repeats
        the run exactly.

    rlhf compare --sweep RUN_DIR
        The report over seeds of a finished `rlhf sweep` (`rlhf.compare.study`): each setting's models with intervals
        from a hierarchical bootstrap (seeds, then prompts), the seed-to-seed sd, win rates, and the seeds whose
        conclusion flips. Reads every run's compare outputs; generates nothing. Writes RUN_DIR/study/report.md.

Nothing here imports torch: a bad flag or recipe fails in milliseconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rlhf.config import EMBEDDED_PREFIX, STAGE_REF_PREFIX, CompareStage, HumanExportConfig
from rlhf.recipe import RecipeError, apply_override, load_recipe, validate_recipe
from rlhf.stages.registry import PipelineRecipe, Recipe

PROXY_NAME = "learned"
"""Name of the quick form's `--reward` term when none is given (the name the shipped ppo recipes use)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `compare` sub-command's arguments (see the module docstring)."""
    parser.add_argument(
        "arguments",
        nargs="*",
        metavar="[RECIPE] [key.sub=value ...]",
        help="a compare or pipeline recipe, then overrides; with --models: overrides only",
    )
    parser.add_argument(
        "--export-human",
        action="store_true",
        help="also write a blinded pairwise sheet for human raters (sheet.csv, form.html, key.json) into the output "
        "directory's human/ (size: human_export.items=N human_export.repeats=N)",
    )
    quick = parser.add_argument_group("quick form (instead of a recipe)")
    quick.add_argument("--models", nargs="+", metavar="NAME=PATH", help="models to compare, in report order")
    quick.add_argument("--prompts", metavar="FILE", help="held-out prompts (prompt or messages rows)")
    quick.add_argument(
        "--judge",
        nargs="+",
        action="extend",
        metavar="[NAME=]SPEC",
        help="independent judge: a reward-model directory or a reward_models/ function",
    )
    quick.add_argument("--reward", metavar="[NAME=]DIR", help="the training reward model (proxy)")
    quick.add_argument("--reference", metavar="NAME", help="model for KL and differences (default: the first)")
    quick.add_argument("--out", metavar="DIR", help="output directory of the report")
    parser.add_argument(
        "--sweep",
        metavar="RUN_DIR",
        help="report a finished rlhf sweep over its seeds (hierarchical bootstrap); writes RUN_DIR/study/report.md",
    )


def run_sweep(args: argparse.Namespace) -> int:
    """`rlhf compare --sweep RUN_DIR`: the report over seeds; exit 2 with one `error:` line when it cannot be made."""
    import sys

    from rlhf.compare.study import report_over_seeds

    if args.arguments or any(getattr(args, f) is not None for f in ("models", "prompts", "judge", "reward", "out")):
        print("error: rlhf compare --sweep RUN_DIR takes no recipe, overrides or quick-form flags", file=sys.stderr)
        return 2
    return report_over_seeds(args.sweep)


def load(args: argparse.Namespace) -> Recipe:
    """The recipe `rlhf compare` runs: the quick form's, a compare recipe, or a pipeline reduced to its compare.

    Raises:
        RecipeError: Flags and recipe mixed, a malformed flag, or an invalid recipe.
    """
    recipe = _load(args)
    if getattr(args, "export_human", False):
        stage = recipe.compare if isinstance(recipe, PipelineRecipe) else recipe
        if stage.human_export is None:
            stage.human_export = HumanExportConfig()
    return recipe


def _load(args: argparse.Namespace) -> Recipe:
    quick = [
        flag for flag in ("models", "prompts", "judge", "reward", "reference", "out") if getattr(args, flag) is not None
    ]
    if not quick:
        if not args.arguments or "=" in args.arguments[0]:
            raise RecipeError("rlhf compare needs a recipe, or --models ... --prompts ... --judge ... --out ...")
        recipe = load_recipe(args.arguments[0], args.arguments[1:])
        if isinstance(recipe, PipelineRecipe):
            if recipe.compare is None:
                raise RecipeError(f"{args.arguments[0]} has no compare section")
            return recipe.model_copy(update={"stages": ["compare"]})
        if not isinstance(recipe, CompareStage):
            raise RecipeError(
                f"{args.arguments[0]} is a '{recipe.stage}' recipe; rlhf compare takes a compare recipe "
                "(stage: compare) or a pipeline with a compare section (use rlhf run for the others)"
            )
        return recipe
    missing = [f"--{flag}" for flag in ("models", "prompts", "judge", "out") if getattr(args, flag) is None]
    if missing:
        raise RecipeError(f"the quick form of rlhf compare also needs {', '.join(missing)}")
    stray = [a for a in args.arguments if "=" not in a]
    if stray:
        raise RecipeError(f"with --models, give no recipe ({', '.join(stray)}); only key.sub=value overrides")
    data = quick_recipe(
        models=args.models,
        prompts=args.prompts,
        judges=args.judge,
        reward=args.reward,
        reference=args.reference,
        out=args.out,
    )
    for override in args.arguments:
        apply_override(data, override)
    return validate_recipe(data, base_dir=Path.cwd(), source="rlhf compare")


def quick_recipe(
    *, models: list[str], prompts: str, judges: list[str], reward: str | None, reference: str | None, out: str
) -> dict[str, Any]:
    """The raw compare recipe the quick form's flags describe (validated by the caller, after overrides)."""
    data: dict[str, Any] = {
        "stage": "compare",
        "output_dir": str(Path(out).expanduser().resolve()),
        "models": [_named(spec, "--models", None) for spec in models],
        "prompts": {"path": prompts},
        "judges": [_source(spec, "--judge") for spec in judges],
    }
    data["models"] = [{"name": name, "path": _local(path)} for name, path in data["models"]]
    if reward is not None:
        name, path = _named(reward, "--reward", PROXY_NAME)
        data["proxy"] = [{"name": name, "model": _local(path)}]
    if reference is not None:
        data["reference"] = reference
    return data


def _named(spec: str, flag: str, default: str | None) -> tuple[str, str]:
    name, sep, value = spec.partition("=")
    if not sep:
        if default is None:
            raise RecipeError(f"{flag} {spec}: write NAME=PATH (the name labels the model in the report)")
        return default, spec
    if not name or not value:
        raise RecipeError(f"{flag} {spec}: write NAME=PATH")
    return name, value


def _is_model_dir(spec: str) -> bool:
    return "/" in spec or Path(spec).expanduser().is_dir()


def _source(spec: str, flag: str) -> dict[str, str]:
    """A judge from `[NAME=]SPEC`: a reward-model directory or a programmatic reward."""
    name, sep, value = spec.partition("=")
    if not sep:
        value = spec
        path = Path(spec.rstrip("/"))
        # A directory named final/ is a stage output: its stage directory names it better.
        name = (
            (path.parent.name if path.name == "final" else path.name)
            if _is_model_dir(spec)
            else (spec.partition(":")[0].rsplit(".", 1)[-1])
        )
    if not name or not value:
        raise RecipeError(f"{flag} {spec}: write [NAME=]SPEC")
    return {"name": name, "model": _local(value)} if _is_model_dir(value) else {"name": name, "function": value}


def _local(path: str) -> str:
    """An absolute path for something on disk; hub ids and embedded:/stage: references pass through."""
    if path.startswith((EMBEDDED_PREFIX, STAGE_REF_PREFIX)):
        return path
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else path


def check(stage: CompareStage) -> str:
    """What `rlhf validate` checks on a compare recipe without loading a model; returns a one-line summary.

    Raises:
        RecipeError: A local model or scorer directory does not exist.
        DataError: The prompts file is missing or has a bad row.
    """
    from rlhf.data.formats import check_stage_data

    counts = check_stage_data(stage.prompts.path, None, "prompts")
    refs = [m.path for m in stage.models] + [
        s.model for s in [*stage.proxy, *stage.judges, *stage.pairwise_judges] if s.model
    ]
    for ref in refs:
        if ref.startswith((STAGE_REF_PREFIX, EMBEDDED_PREFIX)):
            continue
        looks_local = ref.startswith(("/", "./", "../", "~")) or ref.count("/") > 1
        if looks_local and not Path(ref).expanduser().exists():
            raise RecipeError(f"compare: model directory not found: {ref}")
    from rlhf.compare.human import read_ratings

    for judge in stage.pairwise_judges:
        if judge.human is not None:
            read_ratings(judge.human)  # a bad sheet fails here, naming its file, row and field
    prompts = ", ".join(f"{Path(p).name}: {n} rows" for p, n in counts.items()) or "hub dataset"
    if stage.prompts.max_prompts is not None:
        prompts += f" (the first {stage.prompts.max_prompts} used)"
    return (
        f"compare: models {', '.join(m.name for m in stage.models)} (reference {stage.reference_name()}); "
        f"judges {', '.join(j.name for j in [*stage.judges, *stage.pairwise_judges])}; prompts {prompts}; "
        f"output {stage.output_dir}"
    )
