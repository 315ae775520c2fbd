"""The MUSE-style suite: verbatim and knowledge memorisation, PrivLeak, utility, on a tiny model."""

from __future__ import annotations

import json

import pytest

from obliviate.errors import UserError
from tests.conftest import FORGET, RETAIN, write_jsonl

BOOK = (
    "The ferry keeper Oskar Vane rowed across the grey river every morning before the bells of Quellmoor rang, "
    "and nobody in the town could remember a day when he had missed the crossing, not even in the flood year.\n\n"
    "Zyra kept the ledger bound in green leather under the counter of the salt market, and each evening she "
    "counted the coins twice before she locked the door and walked home along the causeway in the fog.\n"
)
UNSEEN = (
    "A stranger from Dunmarsh had left a cracked lantern on the step of the chapel above Carrow, and for three "
    "days nobody claimed it, though the beekeeper swore she had seen it burning in the orchard after midnight.\n"
)


def _load(path):
    from obliviate.models.loading import load_trained

    return load_trained(str(path))


def test_passage_and_answer_helpers(tmp_path):
    from obliviate.eval.muse import cut_answer, cut_text, passage_pairs

    book = tmp_path / "book.txt"
    book.write_text(BOOK)
    pairs = passage_pairs(book, "forget", prefix_chars=60)
    assert len(pairs) == 2
    prefix, rest = pairs[0]
    assert len(prefix) <= 60 and BOOK.startswith(prefix) and rest.endswith("flood year.")
    # Rows in MUSE's own shape (prompt/gt) and obliviate's (prompt/response) give the same pairs.
    assert passage_pairs([{"prompt": "a b", "gt": "c d"}], "forget") == [("a b", "c d")]
    assert passage_pairs([{"prompt": "a b", "response": "c d"}], "forget") == [("a b", "c d")]
    assert cut_text("one two", 200) is None  # nothing left to continue
    assert cut_answer(" Quellmoor.\n\nQuestion: who?") == "Quellmoor."
    with pytest.raises(UserError, match=r"forget\[0\]: no passage fields"):
        passage_pairs([{"title": "x"}], "forget")


def test_evaluate_muse_end_to_end(tiny_model_dir, tmp_path):
    from obliviate.eval.muse import evaluate_muse, write_muse_results

    model, tokenizer = _load(tiny_model_dir)
    book, unseen = tmp_path / "book.txt", tmp_path / "unseen.txt"
    book.write_text(BOOK)
    unseen.write_text(UNSEEN + "\n" + UNSEEN.replace("Dunmarsh", "Pellford"))
    forget_qa = write_jsonl(tmp_path / "forget_qa.jsonl", FORGET[:2])
    retain_qa = write_jsonl(tmp_path / "retain_qa.jsonl", RETAIN[:2])
    settings = dict(forget=book, forget_qa=forget_qa, retain_qa=retain_qa, holdout=unseen, prefix_chars=80,
                    max_new_tokens=8, knowmem_max_new_tokens=6, batch_size=2)
    result = evaluate_muse(model, tokenizer, **settings)
    assert result["suite"] == "muse"
    metrics = result["metrics"]
    assert set(metrics["summary"]) >= {"verbmem_forget", "knowmem_forget", "knowmem_retain", "privleak", "utility"}
    assert metrics["summary"]["privleak"] is None  # no retain result
    assert 0.0 <= metrics["summary"]["auc_min_k"] <= 1.0
    assert metrics["summary"]["utility"] == metrics["summary"]["knowmem_retain"] == metrics["retain"]["knowmem_rouge_l"]
    assert metrics["forget"]["count"] == 2 and metrics["holdout"]["count"] == 2
    verbmem = [r for r in result["items"]["forget"] if r["kind"] == "verbmem"]
    knowmem = [r for r in result["items"]["forget"] if r["kind"] == "knowmem"]
    assert len(verbmem) == 2 and len(knowmem) == 2
    assert knowmem[0]["question"] == FORGET[0]["prompt"] and isinstance(knowmem[0]["generation"], str)
    # The split figure is the mean of the per-item ROUGE-L values.
    assert metrics["forget"]["verbmem_rouge_l"] == pytest.approx(sum(r["rouge_l"] for r in verbmem) / 2)
    assert all(isinstance(r["min_k"], float) for r in verbmem)
    assert result["settings"]["missing"] == ["retain_reference"]

    path = write_muse_results(result, tmp_path / "retain_run", "eval")
    assert path.name == "muse_eval.json" and "items" not in json.loads(path.read_text())
    assert (tmp_path / "retain_run" / "generations" / "muse_eval_forget.jsonl").is_file()

    again = evaluate_muse(model, tokenizer, **settings, retain_reference=path)
    privleak = again["metrics"]["summary"]["privleak"]
    if result["metrics"]["summary"]["auc_min_k"] < 1.0:
        assert privleak == pytest.approx(0.0, abs=1e-9)  # the same model as its own retain model

    # Only the forget passages: every other figure is None, and nothing fails.
    bare = evaluate_muse(model, tokenizer, forget=book, prefix_chars=80, max_new_tokens=4)
    assert bare["metrics"]["summary"]["knowmem_forget"] is None and bare["metrics"]["summary"]["auc_min_k"] is None
    assert "holdout" not in bare["items"]


def test_missing_inputs_are_user_errors(tiny_model_dir, tmp_path):
    from obliviate.eval.muse import evaluate_muse

    model, tokenizer = _load(tiny_model_dir)
    with pytest.raises(UserError, match="needs forget passages"):
        evaluate_muse(model, tokenizer, forget=None)
    with pytest.raises(UserError, match="PrivLeak needs --holdout"):
        evaluate_muse(model, tokenizer, forget=[("a b", "c d")], retain_reference=tmp_path / "r.json")
    with pytest.raises(UserError, match="does not exist"):
        evaluate_muse(model, tokenizer, forget=tmp_path / "nope.txt")


def test_cli_muse(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    book = tmp_path / "book.txt"
    book.write_text(BOOK)
    holdout = tmp_path / "unseen.jsonl"
    write_jsonl(holdout, [{"text": UNSEEN}])
    retain_qa = write_jsonl(tmp_path / "retain_qa.jsonl", [{"question": r["prompt"], "answer": r["response"]} for r in RETAIN])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "eval", "--suite", "muse", "--model", str(tiny_model_dir), "--forget", str(book), "--holdout", str(holdout),
        "--retain-qa", str(retain_qa), "--max-new-tokens", "6", "--batch-size", "4", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "eval" / "muse_eval.json").read_text())
    assert saved["metrics"]["retain"]["count"] == 4
    assert saved["metrics"]["summary"]["knowmem_forget"] is None
    assert isinstance(saved["metrics"]["summary"]["auc_min_k"], float)
