"""Build the seed papers' training sets from raw dataset rows.

The harmful-response recipe of arXiv 2310.10683 / 2405.15152 uses three sets:

* **forget**: harmful (prompt, answer) pairs — here the unsafe responses of PKU-SafeRLHF;
* **retain**: benign (question, answer) pairs the model should keep — TruthfulQA question with
  its "Best Answer";
* **random-answer pool**: answers unrelated to the forget prompts, paired with them for the
  mismatch loss — every TruthfulQA correct and incorrect answer.

Builders accept both the original files' column names (``Best Answer``, ``Correct Answers`` as a
``;``-separated string) and the hub's (``best_answer``, ``correct_answers`` as a list). A missing
or malformed field is a ``UserError`` naming the row and the field; pass ``locations`` (one per
row, e.g. ``file.jsonl:3`` as :func:`obliviate.data.loaders.iter_rows` gives them) to name the
file and line instead of the row index. Pass a ``Counter`` as ``counts`` to learn what was dropped
and why (``safe``, ``empty``, ``duplicate``).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any, Mapping, Optional, Sequence, TypeVar, overload

from obliviate.data.examples import Example
from obliviate.errors import UserError

T = TypeVar("T")

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _where(index: int, dataset: str, locations: Optional[Sequence[str]]) -> str:
    """How a message names row ``index``: its file location when known, else ``<dataset> row N``."""
    return locations[index] if locations is not None else f"{dataset} row {index}"


def _field(row: Mapping[str, Any], names: Sequence[str], index: int, dataset: str) -> Any:
    """The first of ``names`` present in ``row``; a ``UserError`` if none is.

    ``dataset`` is either a dataset name (messages say ``<dataset> row N``) or, via ``_where``,
    the row's location already."""
    for name in names:
        if name in row:
            return row[name]
    wanted = " or ".join(repr(n) for n in names)
    raise UserError(f"{_label(index, dataset)}: missing field {wanted}; found {', '.join(map(str, row)) or '(none)'}")


def _label(index: int, dataset: str) -> str:
    # A location ("file.csv:3", "file.parquet: row 2") holds ':'; a bare dataset name does not.
    return dataset if ":" in dataset else f"{dataset} row {index}"


def _text(value: Any, field: str, index: int, dataset: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if not isinstance(value, str):
        raise UserError(f"{_label(index, dataset)}: field {field!r} should be text, got {type(value).__name__}")
    return value.strip()


def _boolean(value: Any, field: str, index: int, dataset: str) -> bool:
    """Parse a safety label; CSV copies hold strings, the hub holds booleans."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise UserError(
        f"{_label(index, dataset)}: field {field!r} should be true or false, got {value!r}"
    )


def pku_forget_pairs(
    rows: Sequence[Mapping[str, Any]],
    locations: Optional[Sequence[str]] = None,
    counts: Optional[Counter] = None,
) -> list[Example]:
    """Forget pairs from PKU-SafeRLHF: every response labelled unsafe, with its prompt.

    For each row and X in (0, 1), ``response_X`` is kept when ``is_response_X_safe`` is false.
    Empty responses and exact (prompt, response) repeats are dropped — the dataset repeats
    prompts across rows, and a duplicated pair would only weigh that answer twice.
    ``extra`` records ``source``, ``row`` (index in ``rows``) and ``response_index`` (0 or 1).
    """
    counts = Counter() if counts is None else counts
    pairs: list[Example] = []
    seen: set[tuple[str, str]] = set()
    for index, row in enumerate(rows):
        where = _where(index, "pku-saferlhf", locations)
        prompt = _text(_field(row, ["prompt"], index, where), "prompt", index, where)
        for which in (0, 1):
            safe_field = f"is_response_{which}_safe"
            safe = _boolean(_field(row, [safe_field], index, where), safe_field, index, where)
            if safe:
                counts["safe"] += 1
                continue
            response_field = f"response_{which}"
            response = _text(_field(row, [response_field], index, where), response_field, index, where)
            if not prompt or not response:
                counts["empty"] += 1
                continue
            if (prompt, response) in seen:
                counts["duplicate"] += 1
                continue
            seen.add((prompt, response))
            pairs.append(Example(prompt, response, {"source": "pku-saferlhf", "row": index, "response_index": which}))
    return pairs


def truthfulqa_retain(
    rows: Sequence[Mapping[str, Any]],
    locations: Optional[Sequence[str]] = None,
    counts: Optional[Counter] = None,
) -> list[Example]:
    """The retain set: each TruthfulQA question with its best answer.

    Rows without a question or best answer are skipped. ``extra`` keeps ``source``, ``row`` and,
    when present, ``category`` and ``type``.
    """
    counts = Counter() if counts is None else counts
    examples: list[Example] = []
    for index, row in enumerate(rows):
        where = _where(index, "truthfulqa", locations)
        question = _text(_field(row, ["Question", "question"], index, where), "Question", index, where)
        answer = _text(_field(row, ["Best Answer", "best_answer"], index, where), "Best Answer", index, where)
        if not question or not answer:
            counts["empty"] += 1
            continue
        extra: dict[str, Any] = {"source": "truthfulqa", "row": index}
        for key in ("Category", "category", "Type", "type"):
            if row.get(key):
                extra[key.lower()] = row[key]
        examples.append(Example(question, answer, extra))
    return examples


def _answers(value: Any, field: str, index: int, where: str = "truthfulqa") -> list[str]:
    """Split a ``;``-separated answer string (CSV) or flatten a list of answers (hub)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        parts = value.split(";")
    elif isinstance(value, (list, tuple)):
        parts = [piece for item in value for piece in _answers(item, field, index, where)]
    else:
        raise UserError(f"{_label(index, where)}: field {field!r} should be text or a list, got {type(value).__name__}")
    return [part.strip() for part in parts if part.strip()]


def truthfulqa_answer_pool(
    rows: Sequence[Mapping[str, Any]],
    locations: Optional[Sequence[str]] = None,
    counts: Optional[Counter] = None,
) -> list[str]:
    """Every correct and incorrect TruthfulQA answer, split on ';', stripped, deduplicated.

    Order is first appearance (row by row, correct answers before incorrect ones), so the pool
    is the same on every run.
    """
    counts = Counter() if counts is None else counts
    pool: dict[str, None] = {}
    for index, row in enumerate(rows):
        where = _where(index, "truthfulqa", locations)
        for names in (("Correct Answers", "correct_answers"), ("Incorrect Answers", "incorrect_answers")):
            value = _field(row, names, index, where)
            for answer in _answers(value, names[0], index, where):
                if answer in pool:
                    counts["duplicate"] += 1
                pool.setdefault(answer, None)
    return list(pool)


@overload
def split_prompts(items: Sequence[T], fractions: Sequence[float], seed: int = 0) -> list[list[T]]: ...
@overload
def split_prompts(items: Sequence[T], fractions: Mapping[str, float], seed: int = 0) -> dict[str, list[T]]: ...


def split_prompts(items, fractions, seed=0):
    """Shuffle ``items`` with ``seed`` and cut them into parts of the given fractions.

    ``fractions`` is a list (returns a list of parts) or a name -> fraction mapping (returns a
    dict with the same names, e.g. ``{"forget": 0.5, "unseen": 0.5}``). Fractions must be
    positive and sum to at most 1; what they leave over is dropped. Part sizes are
    ``floor(f * n)`` plus one for the parts with the largest remainders, so when the fractions sum
    to 1 every item lands in exactly one part. The same items, fractions and seed always give the
    same parts, and items keep their shuffled order inside a part.
    """
    named = isinstance(fractions, Mapping)
    values = [float(f) for f in (fractions.values() if named else fractions)]
    if not values:
        raise UserError("split fractions are empty; give at least one, e.g. [0.8, 0.2]")
    if any(not math.isfinite(f) or f <= 0 for f in values):
        raise UserError(f"split fractions must be positive numbers, got {values}")
    total = sum(values)
    if total > 1 + 1e-9:
        raise UserError(f"split fractions sum to {total:g}; they must sum to at most 1")
    n = len(items)
    exact = [f * n for f in values]
    sizes = [math.floor(e + 1e-9) for e in exact]
    # Hand the items that flooring left over to the parts that lost the most, earliest first on ties.
    target = min(n, round(total * n))
    by_remainder = sorted(range(len(values)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_remainder[: max(0, target - sum(sizes))]:
        sizes[i] += 1
    order = list(range(n))
    random.Random(seed).shuffle(order)
    parts: list[list[Any]] = []
    start = 0
    for size in sizes:
        parts.append([items[i] for i in order[start:start + size]])
        start += size
    if named:
        return dict(zip(fractions.keys(), parts))
    return parts


__all__ = ["pku_forget_pairs", "truthfulqa_retain", "truthfulqa_answer_pool", "split_prompts"]
