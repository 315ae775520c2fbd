"""Labelled judge data: rows with a response text and a harmful/harmless label.

Fields: ``text`` (the response alone) or ``prompt`` + ``response``; the label in ``label``
(0/1, "0"/"1", true/false, "harmful"/"safe"/"unsafe") or ``harmful`` (true/false). Any file
:func:`obliviate.data.loaders.iter_rows` reads works (.jsonl, .json, .csv, .parquet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.data.loaders import iter_rows
from obliviate.errors import UserError

_TRUE = {"1", "true", "yes", "harmful", "unsafe"}
_FALSE = {"0", "false", "no", "harmless", "safe"}


@dataclass(frozen=True)
class LabeledItem:
    prompt: str
    response: str
    harmful: int  # 1 harmful, 0 harmless


def _label(value: Any, where: str, field: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return int(value.strip().lower() in _TRUE)
    raise UserError(
        f"{where}: field '{field}' is {value!r}; use 0/1, true/false or harmful/safe"
    )


def load_labeled(path: str | Path) -> list[LabeledItem]:
    """Read every row; the first bad row stops with its file, line and field named."""
    items: list[LabeledItem] = []
    for where, row in iter_rows(path):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected an object with text (or prompt and response) and label")
        if "text" in row and row["text"] is not None:
            prompt, response = "", row["text"]
        elif "response" in row and row["response"] is not None:
            prompt, response = row.get("prompt") or "", row["response"]
        else:
            raise UserError(f"{where}: missing field 'text' (or 'prompt' and 'response')")
        if not isinstance(response, str) or not isinstance(prompt, str):
            raise UserError(f"{where}: fields text/prompt/response must be strings")
        if "label" in row and row["label"] not in (None, ""):
            harmful = _label(row["label"], where, "label")
        elif "harmful" in row and row["harmful"] not in (None, ""):
            harmful = _label(row["harmful"], where, "harmful")
        else:
            raise UserError(f"{where}: missing field 'label' (0/1) or 'harmful' (true/false)")
        items.append(LabeledItem(prompt=prompt, response=response, harmful=harmful))
    if not items:
        raise UserError(f"{path}: no rows")
    return items
