"""The TOFU benchmark's files (Maini et al., arXiv 2401.06121): a local folder or the hub.

A local folder has the hub's file layout: ``forget01.json`` / ``forget05.json`` / ``forget10.json``
(questions about fictitious authors, with a paraphrased answer and perturbed wrong answers),
``holdout01/05/10.json`` and ``retain90/95/99.json`` (plain question/answer pairs),
``retain_perturbed.json``, ``real_authors_perturbed.json`` and ``world_facts_perturbed.json`` (the
three model-utility splits). Each file is a JSON list of rows, or JSON lines (some hub revisions
ship them so). ``idontknow.jsonl`` holds plain refusal lines and is not read here.

A hub source is ``hub:locuslab/TOFU`` or ``hub:locuslab/TOFU@<revision>``; each split is loaded
with ``datasets.load_dataset(name, config, revision=...)``, the config being the file's stem (the
forget split's perturbed rows are the ``<split>_perturbed`` config there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from obliviate.errors import UserError

FORGET_SPLITS = ("forget01", "forget05", "forget10")
HUB_PREFIX = "hub:"
# The utility splits' files (the retain split scored is the perturbed 400-question one).
UTILITY_FILES = {"retain": "retain_perturbed", "real-authors": "real_authors_perturbed", "world-facts": "world_facts_perturbed"}


@dataclass(frozen=True)
class TofuItem:
    """One TOFU question with its reference answer and, where the split has them, the paraphrased
    answer (the "correct" side of the truth ratio) and the perturbed (wrong) answers."""

    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()
    paraphrased_question: str | None = None


@dataclass(frozen=True)
class TofuData:
    """The four splits the TOFU suite scores, and where they came from."""

    source: str
    forget_split: str
    forget: list[TofuItem]
    retain: list[TofuItem]
    real_authors: list[TofuItem]
    world_facts: list[TofuItem]


def matching_splits(forget_split: str) -> tuple[str, str]:
    """(holdout split, retain split) that go with ``forget_split``: forget10 -> holdout10, retain90.

    The holdout split has as many questions as the forget split about authors nobody trained on;
    the retain split is the rest of the 4,000 questions (a retain model is fine-tuned on it).
    """
    check_forget_split(forget_split)
    share = forget_split[len("forget"):]
    return f"holdout{share}", f"retain{100 - int(share)}"


def check_forget_split(forget_split: str) -> None:
    if forget_split not in FORGET_SPLITS:
        raise UserError(f"forget split '{forget_split}' is not a TOFU forget split; valid: {', '.join(FORGET_SPLITS)}")


def _row_error(where: str, row: int, field: str, problem: str) -> UserError:
    return UserError(f"{where}: row {row}: {field}: {problem}")


def _text(where: str, row: int, record: dict[str, Any], field: str, required: bool) -> str | None:
    value = record.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        got = "missing" if field not in record else f"got {type(value).__name__} {json.dumps(value)[:40]}"
        raise _row_error(where, row, field, f"{got}; expected a non-empty string")
    return value


def _answers(where: str, row: int, record: dict[str, Any], required: bool) -> tuple[str, ...]:
    value = record.get("perturbed_answer")
    if value is None and not required:
        return ()
    valid = "expected a non-empty list of non-empty strings (the wrong answers)"
    if not isinstance(value, list) or not value:
        got = "missing" if "perturbed_answer" not in record else f"got {type(value).__name__}"
        raise _row_error(where, row, "perturbed_answer", f"{got}; {valid}")
    for position, answer in enumerate(value):
        if not isinstance(answer, str) or not answer.strip():
            raise _row_error(where, row, "perturbed_answer", f"entry {position} is {answer!r}; {valid}")
    return tuple(value)


def items_from_rows(rows: Iterable[Any], where: str, *, perturbed: bool, paraphrased: bool) -> list[TofuItem]:
    """Checked items from raw rows; a bad row is a ``UserError`` naming ``where``, the row (from 1)
    and the field. ``perturbed``/``paraphrased``: whether those fields are required."""
    items = []
    for row, record in enumerate(rows, start=1):
        if not isinstance(record, dict):
            raise _row_error(where, row, "(row)", f"got {type(record).__name__}; expected an object with question and answer")
        items.append(TofuItem(
            question=_text(where, row, record, "question", True) or "",
            answer=_text(where, row, record, "answer", True) or "",
            paraphrased_answer=_text(where, row, record, "paraphrased_answer", paraphrased),
            perturbed_answers=_answers(where, row, record, perturbed),
            paraphrased_question=_text(where, row, record, "paraphrased_question", False),
        ))
    if not items:
        raise UserError(f"{where}: no rows; expected a list of TOFU rows (question, answer, ...)")
    return items


def read_rows(path: Path) -> list[Any]:
    """Rows of a JSON list file or a JSON-lines file (whichever the text is)."""
    if not path.is_file():
        raise UserError(f"{path}: no such TOFU file; a TOFU folder has the hub's files (forget10.json, retain_perturbed.json, ...)")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); expected a JSON list of rows or JSON lines") from None
        return rows
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{line_number}: not valid JSON ({error.msg}); expected one JSON object per line") from None
    return rows


def _hub_rows(source: str, config: str) -> list[Any]:
    """Rows of one config of a hub data set; any failure (offline, unknown revision) is one line."""
    name, _, revision = source[len(HUB_PREFIX):].partition("@")
    try:
        import datasets

        return list(datasets.load_dataset(name, config, revision=revision or None, split="train"))
    except Exception as error:  # offline, unknown config or revision: say so in one line
        detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise UserError(
            f"{source}: cannot load config '{config}' from the hub ({detail}); download the files into a folder "
            f"with the hub's layout and pass it as --tofu-dir"
        ) from None


def load_split(source: str | Path, name: str, *, perturbed: bool = False, paraphrased: bool = False) -> list[TofuItem]:
    """One TOFU split by its file stem (``forget10``, ``holdout10``, ``retain_perturbed``, ...)."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        config = f"{name}_perturbed" if name in FORGET_SPLITS else name
        return items_from_rows(_hub_rows(text, config), f"{text} config {config}", perturbed=perturbed, paraphrased=paraphrased)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder}: TOFU folder does not exist; give a folder with the hub's files or hub:locuslab/TOFU[@revision]")
    path = folder / f"{name}.json"
    if not path.is_file() and (folder / f"{name}.jsonl").is_file():
        path = folder / f"{name}.jsonl"
    return items_from_rows(read_rows(path), str(path), perturbed=perturbed, paraphrased=paraphrased)


QUESTIONS_PER_AUTHOR = 20


def keep_retain_authors(data: TofuData, authors: int | None) -> TofuData:
    """``data`` with the retain split cut to its first ``authors`` authors (20 questions each):
    the ones a laptop-sized benchmark fine-tunes on (``None``: all of them)."""
    if authors is None:
        return data
    if authors < 1:
        raise UserError(f"retain_authors: {authors}; expected a positive number of authors (or none for all)")
    from dataclasses import replace

    return replace(data, retain=data.retain[: authors * QUESTIONS_PER_AUTHOR])


def load_tofu(source: str | Path, forget_split: str = "forget10") -> TofuData:
    """The forget split and the three utility splits, every row checked."""
    check_forget_split(forget_split)
    return TofuData(
        source=str(source),
        forget_split=forget_split,
        forget=load_split(source, forget_split, perturbed=True, paraphrased=True),
        retain=load_split(source, UTILITY_FILES["retain"], perturbed=True, paraphrased=True),
        real_authors=load_split(source, UTILITY_FILES["real-authors"], perturbed=True),
        world_facts=load_split(source, UTILITY_FILES["world-facts"], perturbed=True),
    )
