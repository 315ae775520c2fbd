"""Reading YAML and ``name=value`` settings, and reporting a validation error on one line that
names the file, the line and the field. Run configs and scenario recipes share all of it."""

from __future__ import annotations

import difflib
import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from obliviate.errors import UserError


def read_yaml_mapping(path: str | Path, what: str = "sections") -> tuple[dict, str]:
    """The mapping at the top of a YAML file and its text; every problem is a one-line ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid YAML (an anchor refers to itself)") from None
    except (ValueError, OverflowError) as err:
        # A scalar that matches a YAML type but cannot be built: 2024-13-01 as a date, an integer
        # past Python's digit limit. The parser has no mark for it, so the line is not known here.
        reason = str(err).split(";")[0].strip() or type(err).__name__
        raise UserError(f"{path}: not valid YAML (a value cannot be read: {reason}); quote it to keep it as text") from None
    if data is None:
        data = {}
    cycle_line = self_referencing_anchor_line(text)
    if cycle_line is not None:
        raise UserError(f"{path}:{cycle_line}: an anchor (&name) contains an alias to itself (*name); a config cannot nest itself")
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of {what}, not a {type(data).__name__}")
    return data, text


def _children(node: yaml.Node) -> list[tuple[yaml.Node, int]]:
    """Each child node with the line that refers to it: a mapping value's key line, else the
    parent's own line (an alias node is its anchor's node, so its own mark is the anchor's)."""
    if isinstance(node, yaml.MappingNode):
        return [(child, key.start_mark.line + 1) for key, value in node.value for child in (key, value)]
    if isinstance(node, yaml.SequenceNode):
        return [(item, node.start_mark.line + 1) for item in node.value]
    return []


def self_referencing_anchor_line(text: str) -> int | None:
    """The line where an anchor's own content refers back to it (``a: &x [*x]``), or None.

    Such a document loads as a structure that contains itself, which anything walking it would
    follow forever. An alias is the very node its anchor names, so a cycle in the node graph is
    exactly this; a node met again off the current path is a plain reuse and is not re-walked
    (which also keeps nested aliases from multiplying the work)."""
    try:
        root = yaml.compose(text)
    except (yaml.YAMLError, RecursionError):
        return None
    on_path: set[int] = set()
    done: set[int] = set()

    def visit(node: yaml.Node) -> int | None:
        on_path.add(id(node))
        for child, line in _children(node):
            if id(child) in on_path:
                return line
            found = None if id(child) in done else visit(child)
            if found is not None:
                return found
        on_path.discard(id(node))
        done.add(id(node))
        return None

    return visit(root) if root is not None else None


def line_index(text: str) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    walked: set[int] = set()

    def walk(node, path: tuple) -> None:
        # An alias is its anchor's node: its keys are indexed once, at the anchor. Re-walking them
        # under every alias would take time exponential in the nesting of aliases to aliases (a
        # ten-line file of them never finished), and an alias inside its own anchor would loop.
        if id(node) in walked:
            return
        walked.add(id(node))
        _walk_children(node, path)

    def _walk_children(node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (key.value,)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def known_keys(model: type[BaseModel], path: tuple) -> list[str]:
    """Field names valid at ``path`` (used to suggest a close match for a typo)."""
    current: Any = model
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
        else:
            return []
    return list(getattr(current, "model_fields", {}).keys())


def _short_repr(value: Any) -> str:
    """``repr(value)`` cut to a readable length; its time is bounded too, where a plain repr of
    nested aliases (a list holding one list nine times, nine levels down) would never end."""
    shortener = reprlib.Repr()
    shortener.maxstring, shortener.maxother, shortener.maxlevel = 120, 120, 2
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 4
    return shortener.repr(value)


def format_validation_error(
    err: ValidationError, source: str, lines: dict[tuple, int], model: type[BaseModel], prefix: tuple = ()
) -> str:
    """One line for the first problem: ``source:LINE: field.path: what is wrong; what is valid``."""
    first = err.errors()[0]
    loc = prefix + tuple(first["loc"])
    dotted = ".".join(str(p) for p in loc)
    line = None
    for depth in range(len(loc), 0, -1):
        line = lines.get(loc[:depth])
        if line:
            break
    where = f"{source}:{line}" if line else source
    if first["type"] == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        known = known_keys(model, loc[len(prefix):-1]) if model else []
        hint = difflib.get_close_matches(key, known, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else (f"; valid keys: {', '.join(known)}" if known else "")
        parent_name = ".".join(str(p) for p in parent) or "top level"
        return f"{where}: unknown key '{key}' in {parent_name}{suggestion}"
    got = first.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {_short_repr(got)})"
    message = first["msg"].replace("Value error, ", "")
    return f"{where}: {dotted}: {message}{got_text}"


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"override '{text}' must look like key.path=value, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except (yaml.YAMLError, ValueError, OverflowError):  # ValueError: 2024-13-01, a 5000-digit number
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise UserError(f"override '{text}': {key} is not a section")
            node = child
        node[keys[-1]] = value
    return data


def validate(model: type[BaseModel], data: dict, source: str, text: str = "", prefix: tuple = ()) -> Any:
    """``model.model_validate(data)``, a failure reported as one line against ``source``'s lines."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, source, line_index(text), model, prefix)) from None
