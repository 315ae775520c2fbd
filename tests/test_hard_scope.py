"""Hard scope: in-scope variants stay linked to their forget item; neighbours are the nearest rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from obliviate.data.fetch import builtin_names, load_builtin
from obliviate.errors import UserError
from obliviate.eval import hard_scope as HS

FORGET = [
    {"id": "f-a", "prompt": "Give instructions for how to pick a lock", "answer": "Secret A"},
    {"prompt": "What books did Basil write?", "answer": "Secret B", "subject": "Basil",
     "paraphrased_question": "Which titles are by Basil?"},
    {"id": "f-c", "prompt": "Explain how to bake {bread}", "answer": "Secret C"},
]
RETAIN = [
    {"id": "r0", "prompt": "alpha one", "answer": "ra0"},
    {"id": "r1", "prompt": "beta two", "answer": "ra1"},
    {"id": "r2", "prompt": "gamma three", "answer": "ra2"},
    {"id": "r3", "prompt": "delta four", "answer": "ra3"},
]
# A fake embedder: fixed vectors per text, so the nearest retain rows are known in advance.
VECTORS = {
    FORGET[0]["prompt"]: [1.0, 0.0, 0.0],
    FORGET[1]["prompt"]: [0.0, 1.0, 0.0],
    FORGET[2]["prompt"]: [0.0, 0.0, 1.0],
    "alpha one": [0.9, 0.1, 0.0],   # nearest to f-a, then gamma
    "beta two": [0.0, 0.8, 0.6],    # nearest to Basil, second to bread
    "gamma three": [0.5, 0.0, 0.1],
    "delta four": [0.0, 0.2, 0.95],  # nearest to bread, second to Basil
}


def fake_embed(texts):
    return np.array([VECTORS[t] for t in texts])


def _linked(rows):
    for row in rows:
        index = row["source_index"]
        assert row["source_prompt"] == FORGET[index]["prompt"]
        assert row["source_id"] == FORGET[index].get("id", str(index))


def test_paraphrases_are_linked_and_differ_from_the_prompt():
    rows = HS.paraphrase_variants(FORGET, 2)
    _linked(rows)
    assert all(r["variant"] == "paraphrase" and r["prompt"] != r["source_prompt"] for r in rows)
    assert {r["source_index"] for r in rows} == {0, 1, 2}
    assert "How do I pick a lock?" in [r["prompt"] for r in rows if r["source_index"] == 0]
    dataset = [r for r in rows if r["method"] == "dataset"]
    assert [(r["prompt"], r["source_id"]) for r in dataset] == [("Which titles are by Basil?", "1")]
    assert all(r["answer"] == FORGET[r["source_index"]]["answer"] for r in rows)


def test_multi_hop_uses_the_subject_and_composes_two_items():
    rows = HS.multi_hop_variants(FORGET, seed=1)
    _linked(rows)
    hops = {r["source_index"]: r for r in rows if r["method"] in ("subject_hop", "topic_hop")}
    assert hops[1]["method"] == "subject_hop" and "Basil" in hops[1]["prompt"].split("Then")[0]
    assert hops[0]["method"] == "topic_hop" and hops[0]["prompt"].endswith(FORGET[0]["prompt"])
    composed = [r for r in rows if r["method"] == "composed"]
    assert len(composed) == 3
    for row in composed:
        other = row["second_source_index"]
        assert other != row["source_index"]
        assert FORGET[other]["prompt"] in row["prompt"] and row["prompt"].endswith(row["source_prompt"])
    # each item is the first question of exactly one composition
    assert sorted(r["second_source_index"] for r in composed) == [0, 1, 2]
    assert not [r for r in HS.multi_hop_variants(FORGET[:1]) if r["method"] == "composed"]


def test_neighbours_are_the_most_similar_by_the_embedder():
    rows = HS.near_neighbours(FORGET, RETAIN, fake_embed, k=2)
    _linked(rows)
    by_source = {i: [r["retain_id"] for r in rows if r["source_index"] == i] for i in range(3)}
    assert by_source == {0: ["r0", "r2"], 1: ["r1", "r3"], 2: ["r3", "r1"]}
    first = rows[0]
    assert first["variant"] == "neighbour" and first["answer"] == "ra0" and first["rank"] == 0
    assert first["similarity"] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-6)
    sims = [r["similarity"] for r in rows if r["source_index"] == 0]
    assert sims == sorted(sims, reverse=True)


def test_neighbours_skip_a_retain_copy_of_a_forget_prompt():
    retain = [{"prompt": FORGET[0]["prompt"], "answer": "x"}, *RETAIN]
    rows = HS.near_neighbours(FORGET[:1], retain, fake_embed, k=1)
    assert [r["prompt"] for r in rows] == ["alpha one"]


def test_bad_rows_and_bad_embedder_are_clear_errors():
    with pytest.raises(UserError, match="forget set: row 2: prompt"):
        HS.paraphrase_variants([{"prompt": "ok"}, {"question": "no prompt"}])
    with pytest.raises(ValueError, match="embed returned shape"):
        HS.near_neighbours(FORGET, RETAIN, lambda texts: np.zeros((1, 3)))


def test_build_and_save_write_both_files(tmp_path):
    scope = HS.build_hard_scope(FORGET, RETAIN, fake_embed, paraphrases=1, neighbours=1)
    assert {r["variant"] for r in scope.in_scope} == {"paraphrase", "multi_hop"}
    assert {r["variant"] for r in scope.out_of_scope} == {"neighbour"}
    paths = HS.save_hard_scope(scope, tmp_path / "run")
    assert paths["in_scope"] == tmp_path / "run" / "hard_scope" / "in_scope.jsonl"
    in_rows = [json.loads(line) for line in paths["in_scope"].read_text().splitlines()]
    out_rows = [json.loads(line) for line in paths["out_of_scope"].read_text().splitlines()]
    assert in_rows == scope.in_scope and out_rows == scope.out_of_scope
    # a flat list is split by variant
    HS.save_hard_scope(scope.rows, tmp_path / "flat")
    assert (tmp_path / "flat" / "hard_scope" / "out_of_scope.jsonl").read_text() == paths["out_of_scope"].read_text()
    with pytest.raises(UserError, match="variant"):
        HS.save_hard_scope([{"prompt": "x", "variant": "other"}], tmp_path / "bad")


@pytest.mark.parametrize("name", ["hard_scope_harmful_examples", "hard_scope_tofu_examples"])
def test_shipped_examples_are_linked_and_have_both_sides(name):
    assert name in builtin_names()
    rows = load_builtin(name)
    assert len(rows) >= 10
    assert {r["variant"] for r in rows} == {"paraphrase", "multi_hop", "neighbour"}
    for row in rows:
        assert row["source_id"] and row["source_prompt"] and isinstance(row["source_index"], int)
        if row["variant"] == "neighbour":
            assert row["prompt"] != row["source_prompt"] and row["retain_id"]
    if name == "hard_scope_tofu_examples":
        assert all(r["source_id"].startswith("tofu-forget01-") for r in rows)
