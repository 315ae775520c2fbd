"""The harmful demo's prompt splits: disjoint, deterministic, held-out set independent of n_forget."""

from types import SimpleNamespace

import pytest

from obliviate.scenarios import harmful as harmful_demo


@pytest.fixture
def fake_harmbench(monkeypatch, tmp_path):
    rows = [{"prompt": f"harmful request {i}"} for i in range(50)]
    monkeypatch.setattr(harmful_demo, "fetch", lambda name: SimpleNamespace(path=tmp_path / f"{name}.jsonl"))
    monkeypatch.setattr(harmful_demo, "read_jsonl", lambda path: rows)
    return rows


def test_unseen_prompts_do_not_depend_on_the_forget_size(fake_harmbench):
    small_forget, unseen = harmful_demo.split_harmful_prompts(10, 8, seed=0)
    big_forget, unseen_again = harmful_demo.split_harmful_prompts(30, 8, seed=0)
    assert unseen == unseen_again and len(unseen) == 8
    assert big_forget[:10] == small_forget  # a larger forget set extends the smaller one
    assert not set(big_forget) & set(unseen)
    assert harmful_demo.split_harmful_prompts(10, 8, seed=1)[1] != unseen  # the seed reshuffles
    with pytest.raises(ValueError, match="50 prompts; 60 were asked for"):
        harmful_demo.split_harmful_prompts(52, 8)


def test_instruction_prompts_join_the_normal_pool_only():
    from obliviate.data.fetch import load_builtin

    rows = load_builtin("benign_prompts")
    instruction = {r["prompt"] for r in rows if r["kind"] == "instruction"}
    plain, plain_eval = harmful_demo.split_benign_prompts(32, seed=0)
    assert not instruction & set(plain)  # off by default
    rest, benign_eval = harmful_demo.split_benign_prompts(32, seed=0, instructions=True)
    assert benign_eval == plain_eval  # the held-out set does not change
    assert not instruction & set(benign_eval)
    assert instruction <= set(rest) and len(rest) + len(benign_eval) == len(rows)
    assert [p for p in rest if p not in instruction] == plain  # the other prompts keep their order
    assert len(set(rest)) == len(rest)
    # Spread through the pool: the first 96 retain prompts already carry about their share.
    share = len(instruction) / len(rest)
    assert abs(len(instruction & set(rest[:96])) / 96 - share) < 0.1
    kinds = {r["prompt"]: r["kind"] for r in rows}
    assert {kinds[p] for p in benign_eval} == {"everyday", "borderline"}


def test_donotanswer_candidates_are_the_malicious_use_prompts(monkeypatch, tmp_path):
    rows = [{"prompt": f"misuse {i}", "category": "malicious_uses"} for i in range(6)] + [
        {"prompt": "Why is the sky green?", "category": "misinformation_harms"}
    ]
    monkeypatch.setattr(harmful_demo, "fetch", lambda name: SimpleNamespace(path=tmp_path / f"{name}.jsonl"))
    monkeypatch.setattr(harmful_demo, "read_jsonl", lambda path: rows)
    picked = harmful_demo.donotanswer_prompts(4, seed=0)
    assert len(picked) == 4 and all(p.startswith("misuse") for p in picked)
    assert picked == harmful_demo.donotanswer_prompts(4, seed=0)  # deterministic
    assert harmful_demo.donotanswer_prompts(0) == []
    with pytest.raises(ValueError, match="6 malicious_uses prompts; 7 were asked for"):
        harmful_demo.donotanswer_prompts(7)


def test_xstest_contrast_prompts_are_the_safe_ones_and_refusals_stay_out():
    import csv
    from pathlib import Path

    picked = harmful_demo.xstest_safe_prompts(20, seed=0)
    assert len(picked) == 20 and len(set(picked)) == 20
    assert picked == harmful_demo.xstest_safe_prompts(20, seed=0)
    assert harmful_demo.xstest_safe_prompts(0) == []
    with pytest.raises(ValueError, match="250 safe prompts; 251"):
        harmful_demo.xstest_safe_prompts(251)
    # The shipped copy holds exactly XSTest's safe prompts (../shared holds the original file).
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "xstest" / "xstest_prompts.csv"
    safe = {r["prompt"] for r in csv.DictReader(shared.open()) if r["label"] == "safe"}
    assert set(harmful_demo.xstest_safe_prompts(250)) == safe
    # Disjoint from the held-out benign prompts the over-refusal rate is measured on.
    _, benign_eval = harmful_demo.split_benign_prompts(32, seed=0)
    assert not set(harmful_demo.xstest_safe_prompts(250)) & set(benign_eval)

    prompts, answers = harmful_demo.with_contrast_answers(
        ["How do I bake bread?"],
        ["How can I kill a Python process?", "How do I shoot a good photo?", "What is a lethal dose of salt?"],
        ["Mix flour and water.", "Run kill -9 with the process id.", "I'm sorry, but I can't help with that.",
         "the the the the the the the the the the the the the the the the"],
    )
    assert prompts == ["How do I bake bread?", "How can I kill a Python process?"]
    assert answers == ["Mix flour and water.", "Run kill -9 with the process id."]
    with pytest.raises(ValueError, match="2 answers for 1 retain and 2 contrast"):
        harmful_demo.with_contrast_answers(["a"], ["b", "c"], ["x", "y"])

