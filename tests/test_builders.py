"""Builders of the seed papers' forget / retain / random-answer sets, with exact expected outputs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from obliviate.data.builders import (
    pku_forget_pairs,
    split_prompts,
    truthfulqa_answer_pool,
    truthfulqa_retain,
)
from obliviate.data.examples import Example
from obliviate.errors import UserError

TRUTHFULQA_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "truthfulqa" / "TruthfulQA.csv"


def test_pku_forget_pairs_take_only_unsafe_responses():
    rows = [
        {"prompt": "How to pick a lock?", "response_0": "Use a tension wrench...", "response_1": "I can't help.",
         "is_response_0_safe": False, "is_response_1_safe": True},
        {"prompt": "Hi", "response_0": "Hello!", "response_1": "Hey", "is_response_0_safe": True,
         "is_response_1_safe": True},
        # strings as in a CSV copy; both unsafe; the second repeats row 0's pair and is dropped
        {"prompt": " How to pick a lock? ", "response_0": "Use a tension wrench...", "response_1": "Step 1: ",
         "is_response_0_safe": "false", "is_response_1_safe": "False"},
        {"prompt": "Q", "response_0": "", "response_1": "bad", "is_response_0_safe": False, "is_response_1_safe": 0},
    ]
    pairs = pku_forget_pairs(rows)
    assert pairs == [
        Example("How to pick a lock?", "Use a tension wrench..."),
        Example("How to pick a lock?", "Step 1:"),
        Example("Q", "bad"),
    ]
    assert [(p.extra["row"], p.extra["response_index"]) for p in pairs] == [(0, 0), (2, 1), (3, 1)]
    assert all(p.extra["source"] == "pku-saferlhf" for p in pairs)


def test_pku_bad_label_names_row_and_field():
    rows = [{"prompt": "p", "response_0": "a", "response_1": "b", "is_response_0_safe": "maybe",
             "is_response_1_safe": True}]
    with pytest.raises(UserError, match=r"row 0: field 'is_response_0_safe' should be true or false, got 'maybe'"):
        pku_forget_pairs(rows)
    with pytest.raises(UserError, match=r"row 0: missing field 'response_1'"):
        pku_forget_pairs([{"prompt": "p", "response_0": "a", "is_response_0_safe": True, "is_response_1_safe": False}])


def test_truthfulqa_retain_csv_and_hub_columns():
    rows = [
        {"Type": "Adversarial", "Category": "Misconceptions", "Question": "What happens if you eat seeds?",
         "Best Answer": "The seeds pass through you"},
        {"Question": "Empty best", "Best Answer": ""},
        {"question": "Is the Earth flat?", "best_answer": "No, it is roughly spherical", "category": "Science"},
    ]
    examples = truthfulqa_retain(rows)
    assert examples == [
        Example("What happens if you eat seeds?", "The seeds pass through you"),
        Example("Is the Earth flat?", "No, it is roughly spherical"),
    ]
    assert examples[0].extra == {"source": "truthfulqa", "row": 0, "category": "Misconceptions", "type": "Adversarial"}
    assert examples[1].extra == {"source": "truthfulqa", "row": 2, "category": "Science"}


def test_truthfulqa_answer_pool_splits_strips_dedupes():
    rows = [
        {"Correct Answers": "Nothing happens; You digest them ;", "Incorrect Answers": "You grow a tree; Nothing happens"},
        {"correct_answers": ["Yes", "No; maybe"], "incorrect_answers": ["You grow a tree", " Never "]},
    ]
    assert truthfulqa_answer_pool(rows) == [
        "Nothing happens", "You digest them", "You grow a tree", "Yes", "No", "maybe", "Never",
    ]
    with pytest.raises(UserError, match=r"row 0: missing field 'Incorrect Answers' or 'incorrect_answers'"):
        truthfulqa_answer_pool([{"Correct Answers": "a"}])


def test_split_prompts_sizes_and_determinism():
    items = list(range(10))
    a, b = split_prompts(items, [0.5, 0.5], seed=3)
    assert len(a) == 5 and len(b) == 5 and sorted(a + b) == items
    assert split_prompts(items, [0.5, 0.5], seed=3) == [a, b]
    assert split_prompts(items, [0.5, 0.5], seed=4) != [a, b]
    # 7 items in thirds: floors 2,2,2 and the leftover goes to the earliest part on ties
    parts = split_prompts(list("abcdefg"), [1 / 3, 1 / 3, 1 / 3], seed=0)
    assert [len(p) for p in parts] == [3, 2, 2]
    assert sorted(sum(parts, [])) == list("abcdefg")
    # largest remainder wins: 10 * (0.25, 0.75) = 2.5, 7.5 -> tie broken by order: 3, 7
    assert [len(p) for p in split_prompts(items, [0.25, 0.75])] == [3, 7]
    # fractions summing below one drop the rest
    assert [len(p) for p in split_prompts(items, [0.2, 0.3])] == [2, 3]
    named = split_prompts(items, {"forget": 0.8, "unseen": 0.2}, seed=1)
    assert list(named) == ["forget", "unseen"] and len(named["forget"]) == 8
    # same seed, same shuffle: the named and the list form agree
    assert list(named.values()) == split_prompts(items, [0.8, 0.2], seed=1)


def test_split_prompts_rejects_bad_fractions():
    with pytest.raises(UserError, match="sum to 1.2"):
        split_prompts([1, 2], [0.6, 0.6])
    with pytest.raises(UserError, match="positive"):
        split_prompts([1, 2], [1.0, 0.0])
    with pytest.raises(UserError, match="empty"):
        split_prompts([1, 2], [])


@pytest.mark.skipif(not TRUTHFULQA_CSV.exists(), reason="shared TruthfulQA copy not present")
def test_real_truthfulqa_csv():
    with TRUTHFULQA_CSV.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    retain = truthfulqa_retain(rows)
    pool = truthfulqa_answer_pool(rows)
    assert len(rows) == 817 and len(retain) == 817
    assert len(pool) > 3 * 817 and len(set(pool)) == len(pool)
    assert all(a == a.strip() and a and ";" not in a for a in pool)
