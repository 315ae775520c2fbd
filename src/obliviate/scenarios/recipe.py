"""Scenario recipes: one YAML file per scenario, shipped in the package, checked by that scenario's
pydantic schema the way run configs are checked.

The packaged YAML (``scenarios/recipes/<scenario>.yaml``) is the one copy of a scenario's
settings: the schema gives every field a type, bounds and a description but no default, so a
recipe names every setting. Another recipe file (``--recipe FILE``) is complete in the same way;
``name=value`` settings change single values with :func:`obliviate.config.apply_overrides`, the
parser run configs use. Every problem is one ``UserError`` line: the file and line for a value in
a file, the setting for a value given on the command line, and what would be valid.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from pydantic import BaseModel, ValidationError

from obliviate.config import apply_overrides, format_validation_error, line_index, parse_override, read_yaml_mapping
from obliviate.errors import UserError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

Schema = TypeVar("Schema", bound=BaseModel)

#: Each scenario's recipe schema (module, class), imported when a recipe is read.
SCHEMAS = {
    "harmful": ("obliviate.scenarios.harmful", "HarmfulRecipe"),
    "copyright": ("obliviate.scenarios.copyright", "Recipe"),
    "tofu": ("obliviate.scenarios.tofu", "TofuRecipe"),
    "privacy": ("obliviate.scenarios.privacy", "PrivacyRecipe"),
    "hallucination": ("obliviate.scenarios.hallucination", "HallucinationRecipe"),
}


def load_recipe(
    name_or_path: str | Path, overrides: Sequence[str] = (), *, scenario: str | None = None
) -> BaseModel:
    """A scenario's recipe, validated: ``name_or_path`` is a scenario name (its packaged recipe) or
    a recipe file, ``overrides`` are ``name=value`` settings. A file's scenario is ``scenario``, or
    else the first word of its name (``copyright_milton.yaml`` is a copyright recipe)."""
    if scenario is None:
        name = str(name_or_path)
        scenario = name if name in SCHEMAS else Path(name).stem.replace("-", "_").split("_")[0]
        if scenario not in SCHEMAS:
            raise UserError(f"{name_or_path}: which scenario is this recipe for? Start its file name with one of "
                            f"{', '.join(SCHEMAS)} or name the scenario")
    if scenario not in SCHEMAS:
        raise UserError(f"unknown scenario '{scenario}' (known: {', '.join(SCHEMAS)})")
    path = None if str(name_or_path) == scenario else name_or_path
    return read_recipe(schema_of(scenario), scenario, path, overrides)[0]


def schema_of(scenario: str) -> type[BaseModel]:
    """The pydantic schema of ``scenario``'s recipe."""
    module, name = SCHEMAS[scenario]
    return getattr(importlib.import_module(module), name)


def packaged_recipe(scenario: str) -> Path:
    """The recipe shipped for ``scenario`` (``harmful``, ``copyright``)."""
    path = RECIPES_DIR / f"{scenario}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        raise UserError(f"no packaged recipe for scenario '{scenario}' (known: {', '.join(known)})")
    return path


def read_recipe(
    schema: type[Schema],
    scenario: str,
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
) -> tuple[Schema, str]:
    """Read, override and validate a recipe; returns it and its source (the file) for messages.

    ``path`` is a recipe file (default: the packaged one of ``scenario``); ``overrides`` are
    ``name=value`` strings, dotted for nested keys (``method_options.retain_weight=6``), the value
    read as YAML; ``values`` maps dotted names to values set as they are (a model name that YAML
    would read as a number stays a string).
    """
    path = packaged_recipe(scenario) if path is None else Path(path)
    if not path.is_file():
        raise UserError(f"recipe file {path} does not exist")
    data, text = read_yaml_mapping(path, f"{scenario} recipe settings ({', '.join(schema.model_fields)})")
    source = str(path)
    recipe = _validate(schema, data, source, line_index(text), scenario)
    overrides = list(overrides)
    if not overrides and not values:
        return recipe, source
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"setting '{item}' must look like name=value (names: {', '.join(schema.model_fields)})")
        apply_overrides(data, [item])
    for name, value in (values or {}).items():
        *parents, key = name.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    try:
        return schema.model_validate(data), source
    except ValidationError as err:
        first = _first(err)
        loc = tuple(str(part) for part in first.errors()[0]["loc"])
        culprit = _setting_for(loc, overrides, values or {})
        raise UserError(format_validation_error(first, culprit, {}, schema)) from None


class _OneError:
    """One error of a ``ValidationError``, in the shape ``format_validation_error`` reads."""

    def __init__(self, error: dict):
        self.error = error

    def errors(self) -> list[dict]:
        return [self.error]


def _first(err: ValidationError) -> Any:
    """The error to report: an unknown key first (a typo often explains a missing key), a missing
    key last."""
    rank = {"extra_forbidden": 0, "missing": 2}
    return _OneError(min(err.errors(), key=lambda e: rank.get(e["type"], 1)))


def _validate(schema: type[Schema], data: dict, source: str, lines: dict, scenario: str) -> Schema:
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        one = _first(err)
        first = one.errors()[0]
        if first["type"] == "missing":
            dotted = ".".join(str(part) for part in first["loc"])
            line = lines.get(tuple(first["loc"][:-1])) if len(first["loc"]) > 1 else None
            where = f"{source}:{line}" if line else source
            raise UserError(
                f"{where}: {dotted} is missing; a recipe names every setting "
                f"(start from a copy of {packaged_recipe(scenario)})"
            ) from None
        raise UserError(format_validation_error(one, source, lines, schema)) from None


def _setting_for(loc: tuple[str, ...], overrides: list[str], values: Mapping[str, Any]) -> str:
    """The command-line setting a validation error at ``loc`` comes from (the last one that touches it)."""
    for item in reversed(overrides):
        keys = tuple(parse_override(item)[0])
        if keys[: len(loc)] == loc[: len(keys)]:
            return f"setting '{item}'"
    for name, value in values.items():
        keys = tuple(name.split("."))
        if keys[: len(loc)] == loc[: len(keys)]:
            return f"{name}={value!r}"
    return "settings"
