"""Load examples from JSONL, JSON, CSV, Parquet, ``datasets`` folders or hub ids, and builtin sets.

Every problem names the file, the line (or row) and the field, and says what would be valid.
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from obliviate.data.examples import Example
from obliviate.errors import UserError

FORMATS_BY_SUFFIX = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def builtin_path(name: str) -> Path:
    path = resources.files("obliviate.data") / "builtin" / f"{name}.jsonl"
    if not path.is_file():
        known = sorted(p.name[:-6] for p in (resources.files("obliviate.data") / "builtin").iterdir() if p.name.endswith(".jsonl"))
        raise UserError(f"no builtin data set '{name}' (known: {', '.join(known)})")
    return Path(str(path))


def _rows_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not valid JSON ({err.msg}); each line must be one JSON object") from None
            except (ValueError, RecursionError) as err:
                raise UserError(f"{path}:{number}: not readable JSON ({_json_limit(err)}); each line must be one JSON object") from None
            yield f"{path}:{number}", row


def _rows_json(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except (ValueError, RecursionError) as err:
        raise UserError(f"{path}: not readable JSON ({_json_limit(err)})") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise UserError(f"{path}: expected a JSON list of objects (or an object holding exactly one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects")
    for index, row in enumerate(data, start=1):
        yield f"{path}: row {index}", row


def _json_limit(err: BaseException) -> str:
    """What a JSON value that parses but exceeds a limit of Python's is (a number of more than
    4300 digits, arrays nested past the recursion limit), without the hint meant for programmers."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err).split(";")[0].strip() or type(err).__name__


def _rows_csv(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        try:
            yield from _csv_rows(path, reader)
        except csv.Error as err:  # a cell past csv's field size limit, a quote left open at the end
            raise UserError(f"{path}:{reader.line_num}: not a readable CSV row ({err})") from None


def _csv_rows(path: Path, reader) -> Iterator[tuple[str, Any]]:
    """(location, row) for each CSV row after the header; a row of the wrong length is a UserError."""
    header = next(reader, None)
    if header is None:
        return
    for cells in reader:
        where = f"{path}:{reader.line_num}"
        if not cells:
            continue  # a blank line, as DictReader skips it
        if len(cells) != len(header):
            # DictReader would fill a short row with None, reported later as a "missing" field.
            short = len(cells) < len(header)
            fix = "give every column a cell (an empty one still needs its comma)" if short else "quote cells that hold a comma"
            raise UserError(
                f"{where}: {'short' if short else 'long'} row: {len(cells)} cell(s) where the header "
                f"({', '.join(header)}) has {len(header)}; {fix}"
            )
        yield where, dict(zip(header, cells))


def _rows_table(table, source: str) -> Iterator[tuple[str, Any]]:
    for index, row in enumerate(table, start=1):
        yield f"{source}: row {index}", row


def _rows_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for a bad file
        raise UserError(f"{path}: not a readable Parquet file ({err})") from None
    yield from _rows_table(table, str(path))


def _rows_datasets(path: str, split: str) -> Iterator[tuple[str, Any]]:
    import datasets

    local = Path(path)
    try:
        if local.is_dir() and ((local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists()):
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise UserError(f"{path}: no split '{split}' (splits: {', '.join(loaded)})")
                loaded = loaded[split]
        else:
            loaded = datasets.load_dataset(path, split=split)
    except UserError:
        raise
    except Exception as err:
        raise UserError(
            f"{path}: could not load it with datasets ({type(err).__name__}); without network, pass a local "
            "file (.jsonl/.json/.csv/.parquet) or a folder saved with Dataset.save_to_disk"
        ) from None
    yield from _rows_table(loaded, path)


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    if path.is_dir():
        return "hf"
    fmt = FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: cannot tell the format from the suffix; use .jsonl, .json, .csv or .parquet, or set format")
    return fmt


def iter_rows(path: str | Path, fmt: str = "auto", split: str = "train") -> Iterator[tuple[str, Any]]:
    """Yield (location, row) pairs; ``location`` is ``file:line`` or ``file: row N`` for messages."""
    text = str(path)
    if text.startswith("builtin:"):
        yield from _rows_jsonl(builtin_path(text.split(":", 1)[1]))
        return
    p = Path(path)
    if fmt == "hf" or (fmt == "auto" and not p.exists() and "/" in text and not text.startswith((".", "/"))):
        yield from _rows_datasets(text, split)
        return
    if not p.exists():
        raise UserError(f"data file {p} does not exist")
    fmt = detect_format(p, fmt)
    if fmt == "hf":
        yield from _rows_datasets(text, split)
        return
    if p.is_dir():
        raise UserError(f"{p} is a folder; give a data file or set format: hf for a saved datasets folder")
    try:
        reader = {"jsonl": _rows_jsonl, "json": _rows_json, "csv": _rows_csv, "parquet": _rows_parquet}[fmt]
        yield from reader(p)
    except UnicodeDecodeError:
        raise UserError(f"{p}:{_first_bad_utf8_line(p)}: not UTF-8 text; save the file as UTF-8") from None
    except OSError as err:
        raise UserError(f"{p}: cannot read it ({err.__class__.__name__}: {err})") from None


def _first_bad_utf8_line(path: Path) -> int:
    """The line of the first byte that is not UTF-8 (the decoder's own offset is into a buffer)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return data[: err.start].count(b"\n") + 1
    return 1


def load_examples(
    path: str | Path,
    *,
    prompt_field: str = "prompt",
    response_field: str = "response",
    fmt: str = "auto",
    split: str = "train",
    limit: int | None = None,
    role: str = "data",
    require_response: bool = True,
    setting: str | None = None,
) -> list[Example]:
    """Load (prompt, response) examples; other fields of each row go to ``Example.extra``.

    ``role`` names the config entry (``data.forget``...) so errors can say which setting to change
    (``<role>.prompt_field``; ``setting`` replaces the ``<role>.`` prefix, ``""`` for a plain argument).
    """
    examples = examples_from_rows(
        iter_rows(path, fmt, split), prompt_field=prompt_field, response_field=response_field, limit=limit,
        role=role, require_response=require_response, setting=setting,
    )
    if not examples:
        raise UserError(f"{role} set {path} is empty: at least one row is needed")
    return examples


def examples_from_rows(
    rows: Iterable[tuple[str, Any]],
    *,
    prompt_field: str = "prompt",
    response_field: str = "response",
    limit: int | None = None,
    role: str = "data",
    require_response: bool = True,
    setting: str | None = None,
) -> list[Example]:
    """Check ``(location, row)`` pairs and turn them into examples (the rows of a file, or rows
    held in memory with locations such as ``forget[3]``); a bad row is a one-line ``UserError``
    naming its location and the field."""
    examples: list[Example] = []
    for location, row in rows:
        if not isinstance(row, dict):
            raise UserError(f"{location}: expected an object with fields {prompt_field!r} and {response_field!r}")
        fields = [prompt_field, response_field] if require_response else [prompt_field]
        for name in fields:
            if name not in row or row[name] is None:
                present = ", ".join(map(str, row.keys())) or "none"
                key = "prompt_field" if name == prompt_field else "response_field"
                prefix = f"{role}." if setting is None else setting
                raise UserError(
                    f"{location}: field '{name}' missing (row has: {present}); set {prefix}{key} to the right field"
                )
            if not isinstance(row[name], str) or not row[name].strip():
                raise UserError(f"{location}: field '{name}' must be a non-empty string (got {row[name]!r})")
        extra = {k: v for k, v in row.items() if k not in (prompt_field, response_field)}
        examples.append(Example(row[prompt_field], row.get(response_field, "") or "", extra))
        if limit is not None and len(examples) >= limit:
            break
    return examples


def load_spec(spec, config, role: str, require_response: bool = True) -> list[Example]:
    """Load a ``DatasetSpec`` of a run config (paths relative to the config file)."""
    path = spec.path if spec.path.startswith("builtin:") else config.resolve_path(spec.path)
    if not spec.path.startswith("builtin:") and not Path(path).exists() and spec.format != "hf":
        if "/" in spec.path and not spec.path.startswith((".", "/", "~")) and not Path(spec.path).suffix:
            path = spec.path  # looks like a hub dataset id
        else:
            raise UserError(f"{role}.path: data file {path} does not exist")
    return load_examples(
        path,
        prompt_field=spec.prompt_field,
        response_field=spec.response_field,
        fmt=spec.format,
        split=spec.split,
        limit=spec.limit,
        role=role,
        require_response=require_response,
    )


def read_prompt_rows(
    path: str | Path,
    *,
    prompt_field: str = "prompt",
    fmt: str = "auto",
    split: str = "train",
    limit: Optional[int] = None,
    reserved: Sequence[str] = (),
    hint: str = "set the prompt field to the right name",
) -> list[dict[str, Any]]:
    """Rows of a prompt file as dicts with ``prompt`` set from ``prompt_field``; the other fields
    are kept (one named in ``reserved`` as ``input_<name>``, so it cannot clash with what the
    caller adds). A row without a non-empty string prompt is a one-line ``UserError`` naming the
    file, the line and the field; ``hint`` says how to fix it."""
    rows: list[dict[str, Any]] = []
    for where, row in iter_rows(path, fmt, split):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected an object with a field '{prompt_field}'")
        value = row.get(prompt_field)
        if not isinstance(value, str) or not value.strip():
            present = ", ".join(map(str, row)) or "none"
            raise UserError(f"{where}: field '{prompt_field}' missing or empty (row has: {present}); {hint}")
        out = {"prompt": value}
        for key, item in row.items():
            if key != prompt_field:
                out[f"input_{key}" if key in reserved else key] = item
        rows.append(out)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows
