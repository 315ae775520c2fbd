"""Run configuration: strict pydantic models loaded from YAML plus ``key=value`` overrides.

Every problem is reported on one line that names the file, the line and the field and says what
would be valid, before any model is loaded. Unknown keys are errors with a close-match hint.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from obliviate.config.early_stopping import EarlyStoppingConfig
from obliviate.config.loading import (
    apply_overrides,
    format_validation_error,
    line_index,
    parse_override,
    read_yaml_mapping,
    validate,
)
from obliviate.config.schema import (
    DataSection,
    DatasetSpec,
    LoRASection,
    MethodSection,
    ModelSection,
    RunConfig,
    RunSection,
    TrainSection,
)
from obliviate.errors import UserError
from obliviate.models import DEFAULT_MODEL

__all__ = [
    "DEFAULT_MODEL", "DataSection", "DatasetSpec", "EarlyStoppingConfig", "LoRASection", "MethodSection", "ModelSection",
    "RunConfig", "RunSection", "TrainSection", "apply_overrides", "format_validation_error", "line_index", "load_config",
    "parse_override", "read_yaml_mapping", "validate",
]


#: Keys that were renamed, with the name to use now (an old key fails with this hint).
RENAMED_KEYS: dict[tuple[str, ...], str] = {
    ("data", "normal"): "data.retain",
    ("data", "answer_pool"): "data.random_answers",
    ("method", "normal_weight"): "method.retain_weight",
    ("method", "answer_pool"): "data.random_answers",
    ("method", "early_stopping"): "the run config's top-level early_stopping block (paths relative to the config file)",
}

#: Fields that hold a file or folder path: given as a command-line override, a relative path is
#: taken from the current directory (inside a config file it stays relative to the file).
PATH_FIELDS: tuple[tuple[str, ...], ...] = (
    ("data", "forget", "path"), ("data", "retain", "path"), ("data", "random_answers", "path"),
    ("train", "lora", "init_from"), ("early_stopping", "prompts"), ("early_stopping", "retain_prompts"),
    ("model", "name"), ("run", "output_dir"),
)


def _check_renamed(data: dict, source: str, lines: dict) -> None:
    for old, new in RENAMED_KEYS.items():
        node = data
        for key in old[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and old[-1] in node:
            line = lines.get(old)
            where = f"{source}:{line}" if line else source
            raise UserError(f"{where}: '{'.'.join(old)}' was renamed; use {new}")


def _anchor_override_paths(data: dict, overrides: list[str]) -> None:
    """Make the relative paths given as overrides absolute from the current directory."""
    for text in overrides:
        keys, value = parse_override(text)
        if tuple(keys) not in PATH_FIELDS or not isinstance(value, str) or not value or value.startswith("builtin:"):
            continue
        candidate = Path(value).expanduser()
        if candidate.is_absolute():
            continue
        if keys[0] == "model" and not candidate.exists():
            continue  # an alias or a hub id, not a path
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = str(Path.cwd() / candidate)


def load_config(path: str | Path | None, overrides: list[str] | None = None, data: dict | None = None) -> RunConfig:
    """Read, override and validate a run config; every error is a one-line ``UserError``.

    ``path`` is a YAML file (relative data paths inside it are taken from its folder), or None
    with ``data`` a mapping of sections. ``overrides`` are ``key.path=value`` strings.
    """
    overrides = overrides or []
    text, source, base_dir = "", "config", Path(".")
    if path is not None:
        path = Path(path)
        data, text = read_yaml_mapping(path, "sections (run, model, data, method, train)")
        source, base_dir = str(path), path.parent
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{source}: the top level must be a mapping of sections (run, model, data, method, train)")
    data = dict(data or {})
    apply_overrides(data, overrides)
    _anchor_override_paths(data, overrides)
    lines = line_index(text)
    _check_renamed(data, source, lines)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, source, lines, RunConfig)) from None
    config._base_dir = base_dir
    config._source, config._lines = source, lines
    from obliviate.methods import get_method_class  # here: the method registry imports torch

    try:
        method_class = get_method_class(config.method.name)
    except UserError as err:
        line = lines.get(("method", "name"))
        raise UserError(f"{source}:{line}: {err}" if line else f"{source}: {err}") from None
    try:
        method_class.Config.model_validate(config.method.options())
    except ValidationError as err:
        raise UserError(
            format_validation_error(err, source, lines, method_class.Config, prefix=("method",))
        ) from None
    return config
