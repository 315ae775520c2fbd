"""TruthfulQA as shipped with obliviate, and the hallucination scenario's question split.

``data/builtin/truthfulqa.csv`` is an unchanged copy of TruthfulQA.csv (Lin, Hilton and Evans
2021, Apache-2.0, https://github.com/sylinrl/TruthfulQA; licence and attribution in
``data/builtin/truthfulqa.LICENSE.txt``): 817 questions with a best answer and ';'-separated
correct and incorrect answers.
"""

from __future__ import annotations

import csv
import io
import random
from importlib import resources
from typing import Any

COLUMNS = ("Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source")


def truthfulqa_rows() -> list[dict[str, str]]:
    """The 817 rows of the shipped TruthfulQA.csv, in file order, as dicts keyed by its columns."""
    text = resources.files("obliviate.data").joinpath("builtin", "truthfulqa.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or tuple(rows[0]) != COLUMNS:  # a packaging error, not a user error
        raise ValueError(f"built-in truthfulqa.csv: expected the columns {COLUMNS}")
    return rows


def split_answers(value: str) -> list[str]:
    """A ';'-separated answers cell as a list of stripped, non-empty answers."""
    return [part.strip() for part in str(value or "").split(";") if part.strip()]


def split_questions(
    rows: list[dict[str, Any]], n_train: int, n_validation: int, n_test: int, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """A plain seeded shuffle of ``rows`` cut into disjoint train, validation and test parts.

    Not stratified by category: with 38 categories, some of one or two questions, a stratified
    cut of a few hundred questions would not be much closer in mix. The test part is the LAST
    ``n_test`` of the shuffled order and validation the ``n_validation`` before it, so the held-out
    questions stay the same whatever ``n_train`` is and runs of different sizes compare.
    """
    if min(n_train, n_validation, n_test) < 0 or n_train + n_validation + n_test > len(rows):
        raise ValueError(f"{n_train} + {n_validation} + {n_test} questions asked of {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    test = order[len(order) - n_test:]
    validation = order[len(order) - n_test - n_validation: len(order) - n_test]
    train = order[:n_train]
    return {name: [rows[i] for i in part] for name, part in
            (("train", train), ("validation", validation), ("test", test))}


__all__ = ["COLUMNS", "truthfulqa_rows", "split_answers", "split_questions"]
