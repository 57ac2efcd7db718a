"""`rlhf sweep`: one pipeline recipe over the cross product of swept keys, each stage trained once per distinct input.

    rlhf sweep RECIPE [key=[a, b] ...] [key.sub=value ...] [--print [--launcher WORDS]]

Axes come from the recipe's `sweep:` mapping and from command-line overrides whose value is a list of two or more
items (a command-line axis replaces the recipe's for the same key). Any other override is fixed for every run; to
fix a list-valued key, wrap it once more: `tracking.report_to=[[none]]`.

Layout. A stage runs in `<run_dir>/<group>/<section>`, where `<group>` names the swept keys the stage depends on,
`key=value` joined by commas in the order the axes were given (`seed=1,ppo.kl.coef=0.05`), or `shared` when it
depends on none. Values are written as YAML scalars; characters other than letters, digits and `._+-` become `_`.
A stage depends on a key when changing only that key changes the stage's resolved recipe (its own section, or a
global key such as `seed` that every section inherits) or the stage of any artifact it reads: so with
`seed=[1,2] ppo.kl.coef=[0.05,0.1]` sft and reward run in `seed=1/` and `seed=2/`, ppo and compare in
`seed=1,ppo.kl.coef=0.05/` etc. A group directory holds links (`sft -> ../seed=1/sft`) to the stages it builds on,
so every group directory reads as an ordinary pipeline run directory.

A *job* is one group's stages: one `rlhf run` of the pipeline restricted to them (`stages=[...]`) with
`run_dir=<run_dir>/<group>`. Jobs come in waves by the number of keys they depend on; a job only reads jobs of earlier
waves. Locally the jobs run one after another in this process; finished stages are skipped and interrupted ones
resume from their last checkpoint (the pipeline's own `resume`), so rerunning the same command finishes a sweep.
`--print` writes the same jobs as shell commands, wave by wave, for a cluster scheduler. `<run_dir>/sweep.json`
records the axes, combinations and layout; `rlhf compare --sweep <run_dir>` aggregates over seeds from it.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlhf.config import reference_parts
from rlhf.recipe import RecipeError, load_recipe, read_yaml_mapping
from rlhf.stages.registry import PipelineRecipe, stage_references

SHARED = "shared"
"""Directory of the stages that depend on no swept key."""

SWEEP_FILE = "sweep.json"
"""The sweep's record in its run directory: axes, combinations, and where each combination's stages live."""

UNSWEPT = ("run_dir", "stages", "sweep")
"""Keys that shape the sweep itself and so cannot be swept."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass(frozen=True)
class Axis:
    """One swept key and its values, in the order given."""

    key: str
    values: tuple[Any, ...]


@dataclass
class Job:
    """One group's stages: a single `rlhf run` of the pipeline restricted to them.

    Attributes:
        group: The directory under the run directory (`seed=1`, `shared`).
        keys: The swept keys its stages depend on (the wave is their number).
        values: This job's value of every axis (keys outside `keys` take a representative value: they change
            nothing these stages read).
        sections: The pipeline sections it runs, in run order.
        links: {section: group} for each upstream section that lives in another group's directory.
    """

    group: str
    keys: tuple[str, ...]
    values: dict[str, Any]
    sections: list[str]
    links: dict[str, str] = field(default_factory=dict)


@dataclass
class SweepPlan:
    """Everything `rlhf sweep` runs or prints (see `plan_sweep`)."""

    recipe: Path
    run_dir: Path
    fixed: list[str]
    axes: list[Axis]
    combinations: list[dict[str, Any]]
    layout: list[dict[str, str]]  # per combination: {section: group}
    jobs: list[Job]
    compare: str | None  # the compare section, when the pipeline has one that runs

    def overrides(self, job: Job) -> list[str]:
        """The `rlhf run` overrides of a job: the fixed ones, every axis's value, its directory and stages."""
        return [
            *(override for override in self.fixed if override.partition("=")[0] != "run_dir"),
            *(f"{axis.key}={format_value(job.values[axis.key])}" for axis in self.axes),
            f"run_dir={self.run_dir / job.group}",
            f"stages=[{', '.join(job.sections)}]",
            "sweep={}",
        ]

    def record(self) -> dict[str, Any]:
        """The content of sweep.json."""
        return {
            "recipe": str(self.recipe),
            "fixed": self.fixed,
            "axes": [{"key": axis.key, "values": list(axis.values)} for axis in self.axes],
            "combinations": [
                {"values": values, "name": group_name(values, [a.key for a in self.axes]), "stages": layout}
                for values, layout in zip(self.combinations, self.layout, strict=True)
            ],
            "compare": self.compare,
            "jobs": [{"group": j.group, "keys": list(j.keys), "stages": j.sections} for j in self.jobs],
        }


def format_value(value: Any) -> str:
    """A value as a one-line YAML flow scalar or collection (how it is written in an override)."""
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 20).removesuffix("\n...\n").strip()


def value_label(value: Any) -> str:
    """A value as it appears in a directory name (`format_value`, unsafe characters replaced by `_`)."""
    return _UNSAFE.sub("_", format_value(value))


def group_name(values: dict[str, Any], keys: list[str] | tuple[str, ...]) -> str:
    """The directory of the stages that depend on `keys`: `key=value,...` in axis order, or `shared`."""
    return ",".join(f"{key}={value_label(values[key])}" for key in keys) or SHARED


def parse_axes(recipe: Path, arguments: list[str]) -> tuple[list[str], list[Axis]]:
    """Splits command-line arguments into fixed overrides and axes, and adds the recipe's own `sweep:` axes.

    Raises:
        RecipeError: A malformed override, an axis on a key that shapes the sweep, or two values of one axis that
            would share a directory name.
    """
    raw_sweep = read_yaml_mapping(recipe).get("sweep") or {}
    if not isinstance(raw_sweep, dict):
        raise RecipeError(f"{recipe}: sweep: must map dotted keys to lists of values")
    axes: dict[str, tuple[Any, ...]] = {}
    for key, values in raw_sweep.items():
        if not isinstance(values, list) or not values:
            raise RecipeError(f"{recipe}: sweep.{key}: must be a non-empty list of values")
        axes[str(key)] = tuple(values)
    fixed: list[str] = []
    for argument in arguments:
        key, sep, raw = argument.partition("=")
        if not sep or not key:
            raise RecipeError(f"override '{argument}' must look like key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise RecipeError(f"override '{argument}': the value is not valid YAML: {err}") from None
        if key == "sweep":
            raise RecipeError("give axes as key=[a, b] overrides (they replace the recipe's sweep: axis of that key)")
        if isinstance(value, list):
            if not value:
                raise RecipeError(f"override '{argument}': an empty list sweeps nothing")
            axes[key] = tuple(value)
        else:
            axes.pop(key, None)
            fixed.append(argument)
    out = []
    for key, values in axes.items():
        if key in UNSWEPT:
            raise RecipeError(f"'{key}' shapes the sweep itself and cannot be swept")
        if len(values) == 1:  # a one-value axis is a fixed override (how a list-valued key is fixed)
            fixed.append(f"{key}={format_value(values[0])}")
            continue
        labels = [value_label(v) for v in values]
        clash = next((label for label in labels if labels.count(label) > 1), None)
        if clash is not None:
            raise RecipeError(f"sweep {key}: two values would share the directory name '{key}={clash}'")
        out.append(Axis(key, values))
    return fixed, out


def plan_sweep(recipe: Path, fixed: list[str], axes: list[Axis]) -> SweepPlan:
    """Validates every combination and works out which stages each one shares with the others.

    Raises:
        RecipeError: A combination is not a valid pipeline recipe (one line: the combination and the problem), or a
            swept key changes no stage.
    """
    keys = [axis.key for axis in axes]
    combinations = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(a.values for a in axes))]
    recipes = []
    for values in combinations:
        overrides = [*fixed, *(f"{k}={format_value(v)}" for k, v in values.items()), "sweep={}"]
        try:
            loaded = load_recipe(recipe, overrides)
        except RecipeError as err:
            where = group_name(values, keys)
            problem = "; ".join(line.strip() for line in str(err).splitlines()[1:]) or str(err)
            raise RecipeError(f"{recipe} with {where}: {problem}") from None
        if not isinstance(loaded, PipelineRecipe):
            raise RecipeError(f"{recipe} is a stage recipe; rlhf sweep takes a pipeline recipe (with run_dir:)")
        recipes.append(loaded)
    first = recipes[0]
    sections = first.present_stages()
    selected = [first.section_name(stage) for stage in first.selected_stages()]
    signatures = [_signatures(r) for r in recipes]
    depends = {name: _depends_on(name, signatures, axes) for name in sections}
    idle = [key for key in keys if not any(key in d for d in depends.values())]
    if idle:
        raise RecipeError(f"sweeping '{idle[0]}' changes no stage of {recipe}")
    layout = [{name: group_name(values, depends[name]) for name in sections} for values in combinations]
    jobs: dict[str, Job] = {}
    for values, where in zip(combinations, layout, strict=True):
        for name in selected:
            job = jobs.setdefault(where[name], Job(where[name], depends[name], values, []))
            if name not in job.sections:
                job.sections.append(name)
    for job in jobs.values():
        where = layout[combinations.index(job.values)]
        job.links = {name: where[name] for name in sections if set(depends[name]) < set(job.keys)}
    ordered = sorted(jobs.values(), key=lambda j: len(j.keys))  # stable: first appearance within a wave
    compare = next((name for name in selected if first.section_stage(name) == "compare"), None)
    return SweepPlan(recipe, Path(first.run_dir), fixed, axes, combinations, layout, ordered, compare)


def _signatures(recipe: PipelineRecipe) -> dict[str, str]:
    """Per section: a hash of its resolved recipe (without its output directory) and of what it reads upstream."""
    out: dict[str, str] = {}
    for name, section in recipe.sections().items():
        own = json.dumps(section.model_dump(mode="json", exclude={"output_dir"}), sort_keys=True)
        upstream = [out[reference_parts(ref)[0]] for _, ref in stage_references(section)]
        out[name] = hashlib.sha256("\n".join([own, *upstream]).encode()).hexdigest()
    return out


def _depends_on(name: str, signatures: list[dict[str, str]], axes: list[Axis]) -> tuple[str, ...]:
    """The axes whose change alone changes a section's signature somewhere in the cross product."""
    shape = [len(axis.values) for axis in axes]
    index = {combo: i for i, combo in enumerate(itertools.product(*(range(n) for n in shape)))}
    found = []
    for position, axis in enumerate(axes):
        for combo, i in index.items():
            others = (combo[:position] + (v,) + combo[position + 1 :] for v in range(shape[position]))
            if any(signatures[index[o]][name] != signatures[i][name] for o in others):
                found.append(axis.key)
                break
    return tuple(found)


def link_upstream(plan: SweepPlan, job: Job) -> Path:
    """Creates the job's directory with a relative link to each upstream stage living in another group's directory."""
    directory = plan.run_dir / job.group
    directory.mkdir(parents=True, exist_ok=True)
    for name, group in job.links.items():
        link, target = directory / name, Path("..") / group / name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            raise RecipeError(f"{link} should link to {target} (a stage shared across the sweep) but is a directory")
        try:
            link.symlink_to(target, target_is_directory=True)
        except FileExistsError:  # another process of the same launch made it a moment ago
            if not (link.is_symlink() and Path(os.readlink(link)) == target):
                raise
    return directory


def shell_commands(plan: SweepPlan, launcher: str) -> list[str]:
    """The jobs as shell lines, a `# wave` comment before each wave; the aggregation last (with a compare section)."""
    lines: list[str] = []
    waves = sorted({len(job.keys) for job in plan.jobs})
    total = len(waves) + (plan.compare is not None)
    for number, wave in enumerate(waves, start=1):
        jobs = [job for job in plan.jobs if len(job.keys) == wave]
        lines.append(f"# wave {number} of {total}: {len(jobs)} jobs; each needs every job of the waves before")
        for job in jobs:
            directory = plan.run_dir / job.group
            steps = [f"mkdir -p {shlex.quote(str(directory))}"]
            steps += [
                f"ln -sfn {shlex.quote(str(Path('..') / group / name))} {shlex.quote(str(directory / name))}"
                for name, group in job.links.items()
            ]
            steps.append(
                " ".join([launcher, "run", shlex.quote(str(plan.recipe)), *map(shlex.quote, plan.overrides(job))])
            )
            lines.append(" && ".join(steps))
    if plan.compare is not None:
        lines.append(f"# wave {total} of {total}: the report over seeds")
        lines.append(f"rlhf compare --sweep {shlex.quote(str(plan.run_dir))}")  # reads files: one process
    return lines


def section_finished(pipeline: PipelineRecipe, name: str) -> bool:
    """Whether a section's output already holds a finished run of exactly this recipe, data and upstream artifacts.

    A training stage is finished when it resumes (`resume: true`) and `rlhf.artifacts.up_to_date` says so, the check
    the pipeline itself makes before it skips a stage. compare is not skipped by the pipeline (it trains nothing and
    has no `resume`); in a sweep, a finished compare whose recipe, prompts and compared artifacts are unchanged is
    not repeated.
    """
    from rlhf.artifacts import ArtifactError, check_parent, data_hashes, read_manifest, recipe_hash, up_to_date
    from rlhf.pipeline import resolve_references
    from rlhf.stages.registry import STAGES

    section = pipeline.section(name)
    resolved = resolve_references(section, pipeline)
    if STAGES[section.stage].trains:
        return bool(section.resume) and up_to_date(resolved)
    try:
        manifest = read_manifest(Path(resolved.output_dir))
        if manifest.get("status") != "complete" or manifest.get("recipe_sha256") != recipe_hash(resolved):
            return False
        if manifest.get("data") != data_hashes(resolved.prompts.path):
            return False
        for record in (manifest.get("parents") or {}).values():
            if "finished_at" in record and check_parent(record["path"]).get("finished_at") != record["finished_at"]:
                return False  # a compared model was trained again since
    except (OSError, ValueError, ArtifactError):  # ValueError: a damaged manifest (json.JSONDecodeError)
        return False
    return True


def write_record(plan: SweepPlan) -> Path:
    """Writes <run_dir>/sweep.json (the layout `rlhf compare --sweep` reads)."""
    from rlhf.artifacts import write_atomic

    plan.run_dir.mkdir(parents=True, exist_ok=True)
    path = plan.run_dir / SWEEP_FILE
    write_atomic(path, json.dumps(plan.record(), indent=2) + "\n")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `sweep` sub-command's arguments (see the module docstring)."""
    parser.add_argument("recipe", help="a pipeline recipe (its sweep: mapping, if any, gives axes)")
    parser.add_argument("overrides", nargs="*", help="key=[a, b] sweeps the key; key.sub=value fixes it for every run")
    parser.add_argument(
        "--print",
        action="store_true",
        dest="print_only",
        help="write one shell command per job, wave by wave, instead of running them",
    )
    parser.add_argument(
        "--launcher",
        default="rlhf",
        help="the words before 'run' in printed commands, e.g. 'accelerate launch --config_file "
        "recipes/launch/zero2.yaml -m rlhf' (default: rlhf)",
    )
    parser.add_argument("--allow-output-dir", action="store_true", help="as for rlhf run")


def run(args: argparse.Namespace) -> int:
    """`rlhf sweep`: validates every combination, writes sweep.json, then prints or runs the jobs in order."""
    from rlhf.artifacts import ArtifactError
    from rlhf.cli import run_validated, validate
    from rlhf.data.formats import DataError

    try:
        fixed, axes = parse_axes(Path(args.recipe), args.overrides)
        if not axes:
            raise RecipeError("nothing to sweep: give key=[a, b] overrides or a sweep: mapping in the recipe")
        plan = plan_sweep(Path(args.recipe), fixed, axes)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_record(plan)
    if args.print_only:
        for line in shell_commands(plan, args.launcher):
            print(line)
        return 0
    for number, job in enumerate(plan.jobs, start=1):
        try:
            link_upstream(plan, job)
            recipe = load_recipe(plan.recipe, plan.overrides(job))
            finished = [name for name in job.sections if section_finished(recipe, name)]
            if finished == job.sections:
                print(f"sweep job {number}/{len(plan.jobs)}: {job.group}: finished earlier, skipped", flush=True)
                continue
            if finished:
                recipe = recipe.model_copy(update={"stages": [n for n in job.sections if n not in finished]})
            print(f"sweep job {number}/{len(plan.jobs)}: {job.group} ({', '.join(job.sections)})", flush=True)
            validate(recipe, tokenizers=False, allow_output_dir=args.allow_output_dir)
        except (RecipeError, DataError, ArtifactError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        code = run_validated(recipe, args.verbose)
        if code:
            return code
    if plan.compare is None:
        return 0
    from rlhf.compare.study import report_over_seeds

    return report_over_seeds(plan.run_dir)
