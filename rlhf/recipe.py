"""Loading recipes: YAML files plus `key.sub=value` overrides, validated against `rlhf.config`.

Errors are raised as `RecipeError` with one line per problem, each naming the dotted key and, for unknown keys,
the closest valid key. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rlhf.stages.registry import STAGES, PipelineRecipe, Recipe, training_stage_names


class RecipeError(ValueError):
    """A recipe (or an override) that cannot be used; the message says what to change."""


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Reads a recipe file, applies overrides and validates the result.

    Args:
        path: A stage recipe (has `stage:`) or a pipeline recipe (has `run_dir:`).
        overrides: `dotted.key=value` strings; values are parsed as YAML (`3`, `1e-4`, `[a, b]`, `null`).

    Returns:
        The validated recipe. Relative data paths are resolved against the recipe file's directory.

    Raises:
        RecipeError: The file is missing or not YAML, an override is malformed, or the recipe is invalid.
    """
    path = Path(path)
    data = read_yaml_mapping(path)
    for override in overrides:
        apply_override(data, override)
    return validate_recipe(data, base_dir=path.resolve().parent, source=str(path))


def read_yaml_mapping(path: Path, what: str = "recipe file") -> dict[str, Any]:
    """Reads a UTF-8 YAML file that must hold a mapping (a recipe, a voice spec).

    Raises:
        RecipeError: The file is missing (named as `what`), not UTF-8 (byte and line named), not YAML, or not a
            mapping.
    """
    if not path.is_file():
        raise RecipeError(f"{what} not found: {path}")
    try:
        # safe_load: a recipe is data, never a way to construct arbitrary Python objects.
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as err:
        raise RecipeError(f"{path} is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        line = path.read_bytes().count(b"\n", 0, err.start) + 1
        raise RecipeError(
            f"{path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} on line {line}): re-save it as UTF-8"
        ) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], override: str) -> None:
    """Sets one `dotted.key=value` override in a raw recipe mapping (list items by index: `rewards.0.weight=2`)."""
    key, sep, raw = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override '{override}' must look like key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise RecipeError(f"override '{override}': the value is not valid YAML: {err}") from err
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, here)]
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict | list):
            raise RecipeError(f"override '{override}': '{here}' is a value ({child!r}), not a section")
        node = child
    if isinstance(node, list):
        node[_list_index(node, parts[-1], key)] = value
    else:
        node[parts[-1]] = value


def _list_index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise RecipeError(f"'{where}': expected an index below {len(node)} into a list")
    return int(part)


def validate_recipe(data: dict[str, Any], base_dir: Path | None = None, source: str = "recipe") -> Recipe:
    """Validates a raw recipe mapping as a stage recipe (`stage:`) or a pipeline recipe (`run_dir:`)."""
    if "stage" in data:
        stage = data["stage"]
        if stage not in STAGES:
            raise RecipeError(f"{source}: stage: '{stage}' is not a stage{_suggest(str(stage), list(STAGES))}")
        cls: type[BaseModel] = STAGES[stage].schema
    elif "run_dir" in data:
        cls = PipelineRecipe
    else:
        raise RecipeError(
            f"{source}: a recipe needs `stage:` (one stage: {', '.join(training_stage_names())}) or `run_dir:` "
            "(a pipeline)"
        )
    try:
        return cls.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as err:
        lines = describe_errors(err, cls)
        raise RecipeError(f"{source} is not a valid recipe:\n  " + "\n  ".join(lines)) from None


def recipe_to_yaml(recipe: BaseModel) -> str:
    """The fully resolved recipe as YAML, every default written out."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, width=120)


def describe_errors(err: ValidationError, root: type[BaseModel]) -> list[str]:
    """One readable line per pydantic error of validating `root` (dotted key; closest valid key for unknown ones)."""
    return [_describe(error, root) for error in err.errors()]


def _describe(error: dict[str, Any], root: type[BaseModel]) -> str:
    """One readable line for one pydantic error."""
    loc = [str(part) for part in error["loc"]]
    dotted = ".".join(loc) or "(recipe)"
    if error["type"] == "extra_forbidden":
        parent = _model_at(root, error["loc"][:-1])
        siblings = list(parent.model_fields) if parent else []
        hint = _suggest(loc[-1], siblings, prefix=".".join(loc[:-1]))
        if not hint:
            # A key in the wrong section: look for the name anywhere in the schema.
            hint = _suggest(loc[-1], _all_paths(root), match_leaf=True)
        return f"unknown key '{dotted}'{hint}"
    if error["type"] == "missing":
        return f"missing required key '{dotted}'"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in ("value_error", "assertion_error") or not loc:
        return f"{dotted}: {message}" if loc else message
    return f"{dotted}: {message} (got {error.get('input')!r})"


def _suggest(word: str, candidates: list[str], prefix: str = "", match_leaf: bool = False) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or '' when nothing is close."""
    if match_leaf:
        leaves: dict[str, str] = {}
        for candidate in candidates:  # the first (shallowest, earliest-stage) path wins for a shared leaf name
            leaves.setdefault(candidate.rsplit(".", 1)[-1], candidate)
        close = difflib.get_close_matches(word, list(leaves), n=1, cutoff=0.6)
        return f" (did you mean '{leaves[close[0]]}'?)" if close else ""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    if not close:
        return ""
    return f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)"


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class found by walking a validation location from the root model."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue  # list index: the list's item model was already selected
        field = model.model_fields.get(part)
        model = _inner_model(field.annotation) if field else None
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside Optional[...], list[...], Annotated[...] or a union, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def _all_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts (list items shown without an index)."""
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        inner = _inner_model(field.annotation)
        if inner is not None:
            paths.extend(_all_paths(inner, path + "."))
    return paths
