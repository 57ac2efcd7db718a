"""What a stage leaves behind: recipe.yaml, manifest.json, and the checks a later stage makes on them.

The manifest is written last and atomically, so a directory with `final/` but no complete manifest is a half-written
artifact and later stages refuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rlhf.config import is_data_file
from rlhf.recipe import recipe_to_yaml

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
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def data_hashes(*paths: str | None) -> dict[str, str]:
    """SHA-256 of each local data file (hub datasets are recorded by name)."""
    return {p: (file_sha256(p) if is_data_file(p) else "hub") for p in paths if p is not None}


def write_manifest(output_dir: Path, recipe: BaseModel, *, data: dict[str, str], parents: dict[str, str],
                   results: dict[str, Any], started: float) -> dict[str, Any]:
    """Writes manifest.json: what went in (recipe, data, parent artifacts, versions) and what came out."""
    manifest = {
        "stage": getattr(recipe, "stage", None),
        "status": "complete",
        "recipe_sha256": recipe_hash(recipe),
        "seed": getattr(recipe, "seed", None),
        "data": data,
        "parents": parents,
        "outputs": {"final": FINAL, "recipe": RECIPE, "metrics": METRICS},
        "results": results,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(time.time() - started, 2),
    }
    write_atomic(output_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def read_manifest(output_dir: Path) -> dict[str, Any]:
    """Reads a stage's manifest.json."""
    return json.loads((output_dir / MANIFEST).read_text())


def check_parent(model_dir: str | Path, expected_stage: str | None = None) -> dict[str, str]:
    """Checks an upstream artifact a stage builds on and returns its lineage record.

    A directory made by this project (a `final/` whose parent has recipe.yaml or manifest.json) must have a complete
    manifest of the expected stage. Other model directories (hub downloads, user checkpoints) pass with their path.

    Raises:
        ArtifactError: The artifact is half-written, of the wrong stage, or has no model files.
    """
    model_dir = Path(model_dir)
    stage_dir = model_dir.parent
    ours = model_dir.name == FINAL and ((stage_dir / RECIPE).exists() or (stage_dir / MANIFEST).exists())
    if not ours:
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
    if not any((model_dir / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise ArtifactError(f"{model_dir} has a manifest but no config.json: the model files are missing")
    return {"path": str(model_dir), "stage": manifest["stage"], "recipe_sha256": manifest["recipe_sha256"]}
