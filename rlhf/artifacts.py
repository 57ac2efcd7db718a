"""What a stage leaves behind: recipe.yaml, manifest.json, and the checks a later stage makes on them.

The manifest is written last and atomically, so a directory with `final/` but no complete manifest is a half-written
artifact and later stages refuse it. The manifest lists the files of `final/` with their sizes, and `check_parent`
verifies them. `check_output_dir` is the output-path safety rule, `scrub_secrets` keeps tokens out of the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rlhf.config import is_data_file, reference_parts
from rlhf.recipe import recipe_to_yaml
from rlhf.stages.registry import STAGES, PipelineRecipe, declared_references, stage_of, stage_references

MANIFEST = "manifest.json"
RECIPE = "recipe.yaml"
METRICS = "metrics.jsonl"
FINAL = "final"
PACKAGES = ("rlhf", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "deepspeed")


class ArtifactError(ValueError):
    """An upstream artifact that is missing, half-written, or not what the recipe expects."""


def write_atomic(path: Path, text: str) -> None:
    """Writes a file so that readers see either the old content or the new, never a partial file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recipe_hash(recipe: BaseModel) -> str:
    """SHA-256 of the fully resolved recipe's YAML."""
    return hashlib.sha256(recipe_to_yaml(recipe).encode()).hexdigest()


def write_recipe(recipe: BaseModel, output_dir: Path) -> None:
    """Writes the fully resolved recipe next to the outputs."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(output_dir / RECIPE, recipe_to_yaml(recipe))


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a run's results."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """The source tree's git commit, with '+dirty' when it has uncommitted changes; None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def data_hashes(*paths: str | None) -> dict[str, str]:
    """SHA-256 of each local data file (and any other local file, e.g. a voice spec; hub datasets: 'hub')."""
    return {p: (file_sha256(p) if is_data_file(p) or Path(p).is_file() else "hub") for p in paths if p is not None}


def write_manifest(
    output_dir: Path,
    recipe: BaseModel,
    *,
    data: dict[str, str],
    parents: dict[str, str],
    results: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """Writes manifest.json: what went in (recipe, data, parent artifacts, versions) and what came out."""
    manifest = {
        "stage": getattr(recipe, "stage", None),
        "status": "complete",
        "recipe_sha256": recipe_hash(recipe),
        "seed": getattr(recipe, "seed", None),
        "data": data,
        "parents": parents,
        "outputs": {"final": FINAL, "recipe": RECIPE, "metrics": METRICS},
        "final_files": final_files(output_dir / FINAL),
        "results": results,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "command": " ".join(scrub_secrets(sys.argv)),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(time.time() - started, 2),
    }
    write_atomic(output_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def read_manifest(output_dir: Path) -> dict[str, Any]:
    """Reads a stage's manifest.json."""
    return json.loads((output_dir / MANIFEST).read_text())


def final_files(final_dir: Path) -> dict[str, int]:
    """The files of a final/ directory (relative path -> size in bytes), as recorded in the manifest."""
    if not final_dir.is_dir():
        return {}
    return {str(p.relative_to(final_dir)): p.stat().st_size for p in sorted(final_dir.rglob("*")) if p.is_file()}


def check_parent(model_dir: str | Path, expected_stage: str | None = None) -> dict[str, str]:
    """Checks an upstream artifact a stage builds on and returns its lineage record.

    A directory made by this project (a `final/` whose parent has recipe.yaml or manifest.json) must have a complete
    manifest of the expected stage, and every file the manifest lists under final/ must be there with its recorded
    size. Other model directories (hub downloads, user checkpoints) pass with their path.

    Raises:
        ArtifactError: The artifact is half-written, of the wrong stage, or has missing or changed model files.
    """
    model_dir = Path(model_dir)
    stage_dir = model_dir.parent
    ours = model_dir.name == FINAL and ((stage_dir / RECIPE).exists() or (stage_dir / MANIFEST).exists())
    if not ours:
        if expected_stage is not None:
            raise ArtifactError(
                f"{model_dir} is not the final/ output of a '{expected_stage}' stage "
                f"(no {RECIPE} or {MANIFEST} next to it): run the {expected_stage} stage first"
            )
        return {"path": str(model_dir)}
    if not (stage_dir / MANIFEST).is_file():
        raise ArtifactError(
            f"{stage_dir} has no {MANIFEST}: the stage that writes it did not finish (half-written artifact). "
            "Run that stage again (it resumes from its last checkpoint) before building on it."
        )
    try:
        manifest = read_manifest(stage_dir)
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{stage_dir / MANIFEST} is not valid JSON ({err.msg}): the artifact is damaged") from None
    if manifest.get("status") != "complete":
        raise ArtifactError(f"{stage_dir} is marked '{manifest.get('status')}', not complete")
    if expected_stage and manifest.get("stage") != expected_stage:
        raise ArtifactError(f"{model_dir} comes from a '{manifest.get('stage')}' stage, expected '{expected_stage}'")
    writes = STAGES[manifest["stage"]].writes if manifest.get("stage") in STAGES else ()
    if not writes and not any((model_dir / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise ArtifactError(f"{model_dir} has a manifest but no config.json: the model files are missing")
    recorded = manifest.get("final_files") or {}
    missing = [name for name in recorded if not (model_dir / name).is_file()]
    changed = [
        name for name, size in recorded.items() if name not in missing and (model_dir / name).stat().st_size != size
    ]
    if missing or changed:
        problems = ([f"missing {', '.join(missing[:5])}"] if missing else []) + (
            [f"changed size {', '.join(changed[:5])}"] if changed else []
        )
        raise ArtifactError(
            f"{model_dir} does not hold the files its manifest recorded ({'; '.join(problems)}): "
            "the artifact was modified or partly deleted; run its stage again"
        )
    return {
        "path": str(model_dir),
        "stage": manifest["stage"],
        "recipe_sha256": manifest["recipe_sha256"],
        "finished_at": manifest.get("finished_at"),
    }


def check_references(recipe: BaseModel) -> None:
    """Checks, before anything runs, the upstream artifacts a recipe builds on that already have to exist.

    In a pipeline these are the `stage:NAME` references to stages that this run does not run (`stages:` leaves them
    out). In a stage recipe these are model directories written by an earlier stage: a reward source must be a
    reward-stage artifact.

    Raises:
        ArtifactError: Such an artifact is missing, half-written or of the wrong stage.
    """
    if isinstance(recipe, PipelineRecipe):
        running = {recipe.section_name(stage) for stage in recipe.selected_stages()}
        for stage in recipe.selected_stages():
            for field, ref in stage_references(stage):
                target, _ = reference_parts(ref)
                if target in running:
                    continue
                final = recipe.stage_output(target) / FINAL
                if not final.exists():
                    raise ArtifactError(
                        f"{recipe.section_name(stage)}.{field} refers to '{ref}', which this run does not run "
                        f"(stages: {sorted(running)}), and {final} does not exist: run {target} first"
                    )
                check_parent(final, expected_stage=recipe.section_stage(target))
        return
    for reference, _, value in declared_references(recipe):
        if reference.stage is not None and (Path(value).parent / RECIPE).exists():
            check_parent(value, expected_stage=reference.stage)
    model = getattr(getattr(recipe, "model", None), "name_or_path", "")
    if model and Path(model).name == FINAL and Path(model).is_dir():
        check_parent(model)


def up_to_date(stage: BaseModel) -> bool:
    """Whether a stage's output directory already holds a finished run of exactly this recipe, data and parents."""
    output_dir = Path(stage.output_dir)
    try:
        manifest = read_manifest(output_dir)
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("status") != "complete" or manifest.get("recipe_sha256") != recipe_hash(stage):
        return False
    if manifest.get("data") != data_hashes(*stage_of(stage).inputs(stage)):
        return False
    try:
        check_parent(output_dir / FINAL, expected_stage=stage.stage)
        for record in (manifest.get("parents") or {}).values():
            if "finished_at" in record and check_parent(record["path"]).get("finished_at") != record["finished_at"]:
                return False  # an upstream stage ran again since
    except (ArtifactError, OSError):
        return False
    return True


PREVIOUS_MANIFEST = f".{MANIFEST}.previous"


def begin_stage(output_dir: Path) -> None:
    """Marks a stage's output as in progress: the old manifest is moved aside, so that until the stage writes its new
    one the directory reads as a half-written artifact (a kill at any point leaves it so)."""
    if (output_dir / MANIFEST).is_file():
        os.replace(output_dir / MANIFEST, output_dir / PREVIOUS_MANIFEST)


def end_stage(output_dir: Path, started: float, failed: bool) -> None:
    """Drops the set-aside manifest after a stage finished; after a failure, puts it back if final/ was not touched.

    A stage refused before training (changed recipe, bad data) thus leaves an earlier finished artifact usable.
    """
    previous = output_dir / PREVIOUS_MANIFEST
    if not previous.is_file():
        return
    final = output_dir / FINAL
    since = int(started) - 1  # file systems with coarse timestamps round a write made after `started` down
    touched = final.is_dir() and any(p.stat().st_mtime >= since for p in final.rglob("*"))
    if failed and not touched and not (output_dir / MANIFEST).exists():
        os.replace(previous, output_dir / MANIFEST)
    else:
        previous.unlink(missing_ok=True)


# ---- Output paths: a recipe cannot write outside the working directory by accident or into someone else's files.

OWN_ENTRIES = (
    RECIPE,
    MANIFEST,
    METRICS,
    FINAL,
    "checkpoints",
    "tb",
    "wandb",
    "results.json",
    "report.md",
    "report.html",
    "plots",
)


def check_output_dir(path: str | Path, *, allow: bool = False, pipeline: bool = False) -> None:
    """Refuses an output directory a recipe most likely did not mean.

    Refused unless `allow` (the `--allow-output-dir` flag): a relative path whose `..` segments lead outside the
    working directory (an absolute path is taken as meant), and an existing directory that holds files rlhf did not
    write (a stage directory is rlhf's when it has recipe.yaml, manifest.json or other stage outputs; a pipeline
    run directory when it holds only stage directories).

    Raises:
        ArtifactError: The directory is refused; the message says why and how to proceed.
    """
    if allow:
        return
    raw = Path(path).expanduser()
    if not raw.is_absolute() and ".." in raw.parts:
        cwd = Path.cwd().resolve()
        resolved = (cwd / raw).resolve()
        if not resolved.is_relative_to(cwd):
            raise ArtifactError(
                f"output path '{path}' leaves the working directory (it resolves to {resolved}); "
                "write it as an absolute path if that is where it should go, or pass "
                "--allow-output-dir"
            )
    if not raw.is_dir():
        return
    entries = [p for p in raw.iterdir() if not p.name.startswith(".")]
    if not entries:
        return
    if pipeline:
        # A stage directory: a fixed stage's name, or a named arm's directory (it holds the recipe it ran).
        foreign = [p.name for p in entries if not p.is_dir() or (p.name not in STAGES and not (p / RECIPE).exists())]
        if not foreign:
            for stage_dir in entries:
                check_output_dir(stage_dir, allow=allow)
            return
    elif any(p.name in (RECIPE, MANIFEST) for p in entries) or all(p.name in OWN_ENTRIES for p in entries):
        return
    else:
        foreign = [p.name for p in entries if p.name not in OWN_ENTRIES]
    shown = ", ".join(sorted(foreign)[:5]) + (", ..." if len(foreign) > 5 else "")
    raise ArtifactError(
        f"output directory {raw} already holds files rlhf did not write ({shown}); choose a new or "
        "empty directory, or pass --allow-output-dir to write into it anyway"
    )


# ---- Secrets: the manifest records the command line, never a token in it.

_SECRET_KEY = re.compile(r"(token|key|secret|passw|credential|auth)", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|[0-9a-f]{40})\b")
REDACTED = "***"


def scrub_secrets(argv: list[str]) -> list[str]:
    """The command line with anything that looks like a secret replaced by ***.

    Redacted: the value of `NAME=value` and `--NAME value` / `--NAME=value` where NAME mentions a token, key, secret,
    password, credential or auth; and values shaped like Hugging Face, OpenAI or GitHub tokens or 40-hex API keys.
    """
    out: list[str] = []
    redact_next = False
    for arg in argv:
        if redact_next:
            out.append(REDACTED)
            redact_next = False
            continue
        name, sep, _ = arg.partition("=")
        if sep and _SECRET_KEY.search(name):
            out.append(f"{name}={REDACTED}")
            continue
        if arg.startswith("--") and not sep and _SECRET_KEY.search(arg):
            redact_next = True
        out.append(_SECRET_VALUE.sub(REDACTED, arg))
    return out
