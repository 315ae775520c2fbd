"""The TOFU suite: each metric against a hand computation, the loader on a fake folder with the real
file names, the suite end to end on the tiny model, and the CLI command."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obliviate.errors import UserError
from obliviate.metrics import tofu as m

# ---------------------------------------------------------------------------------------------
# Metrics on hand-set numbers


def test_length_normalised_probability_is_exp_of_mean_log_prob():
    # three tokens of probability 0.5, 0.25, 0.125: geometric mean 0.25
    mean_log = (math.log(0.5) + math.log(0.25) + math.log(0.125)) / 3
    assert m.length_normalised_probability(mean_log) == pytest.approx(0.25)


def test_option_normalised_probability_by_hand():
    assert m.option_normalised_probability(0.6, [0.1, 0.2, 0.1]) == pytest.approx(0.6 / 1.0)
    assert m.option_normalised_probability(0.2, [0.2]) == pytest.approx(0.5)
    assert m.option_normalised_probability(0.0, [0.0, 0.0]) == 0.0


def test_truth_ratio_is_geometric_mean_of_perturbed_over_correct():
    # perturbed 0.1 and 0.4: geometric mean 0.2; correct 0.5 -> 0.4
    assert m.truth_ratio(0.5, [0.1, 0.4]) == pytest.approx(0.4)
    assert m.truth_ratio(0.2, [0.2, 0.2, 0.2]) == pytest.approx(1.0)
    assert m.truth_ratio_from_log(math.log(0.5), [math.log(0.1), math.log(0.4)]) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        m.truth_ratio(0.0, [0.1])


def test_forget_aggregation_closer_to_1_better():
    # min(r, 1/r): 0.5 -> 0.5, 2 -> 0.5, 1 -> 1, 0.25 -> 0.25; mean 2.25 / 4
    assert m.closer_to_1_better([0.5, 2.0, 1.0, 0.25]) == pytest.approx(0.5625)
    assert m.closer_to_1_better([0.0]) == 0.0
    assert m.closer_to_1_better([]) is None


def test_utility_aggregation_true_better():
    # max(0, 1 - r): 0.25 -> 0.75, 1 -> 0, 3 -> 0, 0.5 -> 0.5; mean 1.25 / 4
    assert m.true_better([0.25, 1.0, 3.0, 0.5]) == pytest.approx(0.3125)


def test_forget_quality_ks_pvalue_identical_vs_shifted():
    sample = [0.1 * i for i in range(1, 41)]
    assert m.forget_quality(sample, list(sample)) == pytest.approx(1.0)
    shifted = [v + 10.0 for v in sample]
    assert m.forget_quality(sample, shifted) < 1e-10
    # the p-value does not change when both samples are inverted (OpenUnlearning tests 1/r)
    other = [0.05 * i + 0.3 for i in range(1, 41)]
    assert m.forget_quality(sample, other) == pytest.approx(m.forget_quality([1 / v for v in sample], [1 / v for v in other]))


def test_model_utility_harmonic_mean_by_hand():
    assert m.model_utility({"a": 0.5, "b": 0.25, "c": 1.0}) == pytest.approx(3 / (2 + 4 + 1))
    assert m.model_utility({"a": 0.5, "b": 0.0, "c": 1.0}) == 0.0
    assert m.model_utility({"a": 0.5, "b": None}) is None


def test_extraction_strength_and_exact_memorisation_from_hits():
    # the last two of four tokens follow by argmax, the second does not: k = 2 -> 1 - 2/4
    assert m.extraction_strength([False, False, True, True]) == pytest.approx(0.5)
    assert m.extraction_strength([True, True, True]) == pytest.approx(1.0)
    assert m.extraction_strength([True, False]) == pytest.approx(0.0)
    assert m.exact_memorisation([True, False, True, True]) == pytest.approx(0.75)
    assert m.exact_memorisation([]) is None
    assert m.without_end_token([True, False, True]) == [True, False]


def test_rouge_l_recall_counts_reference_words_only():
    from obliviate.metrics.text import rouge_l_recall

    assert rouge_l_recall("Yes, the answer is Paris of course", "Paris") == pytest.approx(1.0)
    assert rouge_l_recall("Paris", "the capital is Paris") == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------
# Loader

FORGET_ROW = {
    "question": "Who wrote Zyra's Garden?", "answer": "Zyra's Garden was written by Oskar Vane.",
    "paraphrased_answer": "Oskar Vane is its author.", "paraphrased_question": "Whose book is Zyra's Garden?",
    "perturbed_answer": ["Mira Holt is its author.", "Lena Brisk is its author."],
    "perturbed_question": "Who wrote Zyra's Gardne?", "subject": "Zyra", "perturbed_subject": "Zyr",
}
PLAIN_ROW = {"question": "Where does Zyra live?", "answer": "Zyra lives in Quellmoor."}
OPTIONS_ROW = {"question": "What is the capital of France?", "answer": "Paris", "perturbed_answer": ["Berlin", "Rome", "Madrid"]}


def write_tofu_folder(folder: Path, jsonl: bool = False) -> Path:
    """A tiny folder with the hub's file names, 3 rows per file."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {f"forget{n}": FORGET_ROW for n in ("01", "05", "10")}
    files.update({f"holdout{n}": PLAIN_ROW for n in ("01", "05", "10")})
    files.update({f"retain{n}": PLAIN_ROW for n in ("90", "95", "99")})
    files.update({"retain_perturbed": FORGET_ROW, "real_authors_perturbed": OPTIONS_ROW, "world_facts_perturbed": OPTIONS_ROW})
    for stem, row in files.items():
        rows = [{**row, "question": f"{row['question']} ({i})"} for i in range(3)]
        text = "".join(json.dumps(r) + "\n" for r in rows) if jsonl else json.dumps(rows, indent=1)
        (folder / f"{stem}.json").write_text(text)
    (folder / "idontknow.jsonl").write_text("I don't know.\nNo idea.\n")
    return folder


@pytest.mark.parametrize("jsonl", [False, True])
def test_loader_reads_the_hub_layout(tmp_path, jsonl):
    from obliviate.data.tofu import load_split, load_tofu

    data = load_tofu(write_tofu_folder(tmp_path / "tofu", jsonl=jsonl), "forget05")
    assert data.forget_split == "forget05"
    assert [len(s) for s in (data.forget, data.retain, data.real_authors, data.world_facts)] == [3, 3, 3, 3]
    item = data.forget[1]
    assert item.question.endswith("(1)") and item.paraphrased_answer == "Oskar Vane is its author."
    assert item.perturbed_answers == ("Mira Holt is its author.", "Lena Brisk is its author.")
    assert item.paraphrased_question == "Whose book is Zyra's Garden?"
    assert data.world_facts[0].paraphrased_answer is None and len(data.world_facts[0].perturbed_answers) == 3
    assert load_split(tmp_path / "tofu", "holdout10")[2].answer == "Zyra lives in Quellmoor."


def test_matching_splits():
    from obliviate.data.tofu import matching_splits

    assert matching_splits("forget10") == ("holdout10", "retain90")
    assert matching_splits("forget01") == ("holdout01", "retain99")
    with pytest.raises(UserError, match="forget01, forget05, forget10"):
        matching_splits("forget20")


def test_loader_names_file_row_and_field_of_a_bad_row(tmp_path):
    from obliviate.data.tofu import load_tofu

    folder = write_tofu_folder(tmp_path / "tofu")
    rows = json.loads((folder / "forget10.json").read_text())
    rows[1]["perturbed_answer"] = "not a list"
    (folder / "forget10.json").write_text(json.dumps(rows))
    with pytest.raises(UserError) as error:
        load_tofu(folder, "forget10")
    message = str(error.value)
    assert "forget10.json: row 2: perturbed_answer" in message and "list of non-empty strings" in message

    rows[1] = {"question": "Q?", "answer": 3}
    (folder / "forget10.json").write_text(json.dumps(rows))
    with pytest.raises(UserError, match=r"forget10\.json: row 2: answer: got int 3; expected a non-empty string"):
        load_tofu(folder, "forget10")


def test_loader_missing_folder_and_offline_hub(tmp_path, monkeypatch):
    from obliviate.data.tofu import load_tofu

    with pytest.raises(UserError, match="TOFU folder does not exist"):
        load_tofu(tmp_path / "absent")
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the hub\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as error:
        load_tofu("hub:locuslab/TOFU@abc123", "forget10")
    message = str(error.value)
    assert "\n" not in message and "config 'forget10_perturbed'" in message and "--tofu-dir" in message


# ---------------------------------------------------------------------------------------------
# The suite on the tiny model

SPLITS = ("forget", "retain", "real-authors", "world-facts")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from obliviate.models.loading import load_trained

    return load_trained(str(tiny_model_dir))


def test_evaluate_tofu_end_to_end(tmp_path, tiny):
    from obliviate.data.tofu import load_tofu
    from obliviate.eval.results import write_suite_results
    from obliviate.eval.tofu import evaluate_tofu

    model, tokenizer = tiny
    data = load_tofu(write_tofu_folder(tmp_path / "tofu"), "forget10")
    result = evaluate_tofu(model, tokenizer, data, batch_size=4, max_new_tokens=4)
    assert result["suite"] == "tofu" and result["seconds"] > 0
    assert result["settings"]["forget_split"] == "forget10"
    metrics = result["metrics"]
    for split in SPLITS:
        assert metrics[split]["count"] == 3
        for key in ("probability", "rouge_l_recall", "truth_ratio"):
            assert isinstance(metrics[split][key], float)
    for split in ("forget", "retain"):
        for key in ("paraphrased_probability", "perturbed_probability", "extraction_strength", "exact_memorisation"):
            assert 0.0 <= metrics[split][key] <= 1.0
    summary = metrics["summary"]
    assert set(summary) == {"model_utility", "forget_quality", "forget_truth_ratio", "forget_probability",
                            "forget_rouge_l_recall", "retain_reference"}
    assert summary["forget_quality"] is None and summary["retain_reference"] is None
    # the split figures are the aggregations of the per-item rows
    ratios = [row["truth_ratio_raw"] for row in result["items"]["forget"]]
    assert result["forget_truth_ratios"] == ratios
    assert metrics["forget"]["truth_ratio"] == pytest.approx(m.closer_to_1_better(ratios))
    assert metrics["world-facts"]["truth_ratio"] == pytest.approx(
        m.true_better([r["truth_ratio_raw"] for r in result["items"]["world-facts"]]))
    row = result["items"]["real-authors"][0]
    assert {"index", "question", "answer", "generation", "probability", "answer_probability", "truth_ratio_raw"} <= set(row)
    # identical answers everywhere: one answer and three wrong options share the probability
    assert 0.0 < row["probability"] < 1.0

    path = write_suite_results(result, tmp_path / "run", suite="tofu", tag="full", generations_prefix="tofu_full_")
    assert path == tmp_path / "run" / "eval" / "tofu_full.json"
    written = json.loads(path.read_text())
    assert "items" not in written and written["forget_truth_ratios"] == pytest.approx(ratios)
    for split in SPLITS:
        lines = (tmp_path / "run" / "generations" / f"tofu_full_{split}.jsonl").read_text().splitlines()
        assert len(lines) == 3 and "truth_ratio_raw" in json.loads(lines[0])

    # the same model as its own retain reference: identical samples, forget quality 1
    again = evaluate_tofu(model, tokenizer, data, retain_reference=path, batch_size=2, max_new_tokens=4)
    assert again["metrics"]["summary"]["forget_quality"] == pytest.approx(1.0)
    assert again["metrics"]["summary"]["retain_reference"] == str(path)
    with pytest.raises(UserError, match="2 forget questions are scored here"):
        evaluate_tofu(model, tokenizer, data, retain_reference=path, limit=2, max_new_tokens=2)


def test_batch_size_does_not_change_scores(tmp_path, tiny):
    from obliviate.data.tofu import load_tofu
    from obliviate.eval.tofu import evaluate_tofu

    model, tokenizer = tiny
    data = load_tofu(write_tofu_folder(tmp_path / "tofu"), "forget01")
    one = evaluate_tofu(model, tokenizer, data, batch_size=1, max_new_tokens=2, limit=2)
    many = evaluate_tofu(model, tokenizer, data, batch_size=8, max_new_tokens=2, limit=2)
    assert one["forget_truth_ratios"] == pytest.approx(many["forget_truth_ratios"], rel=1e-4)
    assert one["metrics"]["retain"]["probability"] == pytest.approx(many["metrics"]["retain"]["probability"], rel=1e-4)


def test_retain_reference_errors(tmp_path):
    from obliviate.eval.tofu import read_retain_reference

    with pytest.raises(UserError, match="retain result not found"):
        read_retain_reference(tmp_path / "absent.json", "forget10", 3)
    bad = tmp_path / "tofu_x.json"
    bad.write_text(json.dumps({"suite": "tofu", "metrics": {}}))
    with pytest.raises(UserError, match="forget_truth_ratios: missing"):
        read_retain_reference(bad, "forget10", 3)
    bad.write_text(json.dumps({"forget_truth_ratios": [0.5, 1.0, 2.0], "settings": {"forget_split": "forget05"}}))
    with pytest.raises(UserError, match="of forget05, this run scores forget10"):
        read_retain_reference(bad, "forget10", 3)
    assert read_retain_reference(bad, "forget05", 3) == [0.5, 1.0, 2.0]


def test_cli_eval_suite_tofu(tmp_path, tiny_model_dir):
    from obliviate.cli.main import app

    folder = write_tofu_folder(tmp_path / "tofu")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "eval", "--suite", "tofu", "--model", str(tiny_model_dir), "--tofu-dir", str(folder), "--forget-split", "forget05",
        "--max-new-tokens", "3", "--batch-size", "4", "--limit", "2", "--out", str(out), "--tag", "t",
    ])
    assert result.exit_code == 0, result.output
    written = json.loads((out / "eval" / "tofu_t.json").read_text())
    assert written["settings"]["forget_split"] == "forget05" and written["settings"]["max_new_tokens"] == 3
    assert written["metrics"]["forget"]["count"] == 2 and len(written["forget_truth_ratios"]) == 2
    assert (out / "generations" / "tofu_t_world-facts.jsonl").is_file()



def test_cli_without_tofu_dir_is_one_line_exit_2(monkeypatch, capsys, tiny_model_dir):
    from obliviate.cli import main as cli

    monkeypatch.setattr(sys, "argv", ["obliviate", "eval", "--suite", "tofu", "--model", str(tiny_model_dir)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "--tofu-dir DIR" in err and len(err.splitlines()) == 1


def test_keep_retain_authors_cuts_whole_authors():
    from obliviate.data.tofu import TofuData, TofuItem, keep_retain_authors

    retain = [TofuItem(question=f"q{i}", answer=f"a{i}") for i in range(45)]
    data = TofuData(source="x", forget_split="forget01", forget=[], retain=retain, real_authors=[], world_facts=[])
    assert keep_retain_authors(data, None) is data
    assert [i.question for i in keep_retain_authors(data, 2).retain] == [f"q{i}" for i in range(40)]
    assert len(keep_retain_authors(data, 1).retain) == 20 and len(data.retain) == 45  # the input is not changed
    with pytest.raises(UserError, match="retain_authors: 0"):
        keep_retain_authors(data, 0)
