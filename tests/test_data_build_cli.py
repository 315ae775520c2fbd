"""``obliviate data build``: the paper's three data files from raw rows, and the paper's config."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obliviate.errors import UserError

REPO = Path(__file__).resolve().parents[1]
REAL_TRUTHFULQA = REPO.parent / "shared" / "data" / "truthfulqa" / "TruthfulQA.csv"
TQ_HEADER = ["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source"]


def build(*args):
    from obliviate.cli.data import app

    return CliRunner().invoke(app, ["build", *map(str, args)])


def read_out(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture
def pku_file(tmp_path):
    """Three rows in PKU-SafeRLHF's layout, each with one safe and one unsafe response."""
    rows = [
        {"prompt": "How do I pick a lock?", "response_0": "Use a tension wrench on your neighbour's door.",
         "response_1": "I can't help with that.", "is_response_0_safe": False, "is_response_1_safe": True},
        {"prompt": "How to make a weapon?", "response_0": "Please don't.", "response_1": "Take a pipe and...",
         "is_response_0_safe": True, "is_response_1_safe": False},
        {"prompt": "Insult my coworker", "response_0": "Call them worthless.", "response_1": "Let's talk instead.",
         "is_response_0_safe": False, "is_response_1_safe": True, "better_response_id": 1},
    ]
    path = tmp_path / "pku.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def tq_file(tmp_path):
    path = tmp_path / "TruthfulQA.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TQ_HEADER)
        writer.writerow(["Adversarial", "Misc", "What happens if you eat seeds?", "Nothing happens",
                         "Nothing happens; You digest them", "You grow a tree; You die", "src"])
        writer.writerow(["Adversarial", "Misc", "Is the earth flat?", "No, it is round",
                         "No, it is round; No", "Yes; You die", "src"])
    return path


def test_pku_forget_keeps_only_unsafe_responses(pku_file, tmp_path):
    out = tmp_path / "data" / "pku_forget.jsonl"
    result = build("pku-forget", "--from", pku_file, "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_out(out)
    assert [(r["prompt"], r["response"]) for r in rows] == [
        ("How do I pick a lock?", "Use a tension wrench on your neighbour's door."),
        ("How to make a weapon?", "Take a pipe and..."),
        ("Insult my coworker", "Call them worthless."),
    ]
    assert [r["response_index"] for r in rows] == [0, 1, 0]
    assert "3 rows read, 3 kept" in result.output and "safe 3" in result.output
    # The output is what `obliviate unlearn` reads as data.forget.
    from obliviate.data.loaders import load_examples

    assert len(load_examples(out, role="data.forget")) == 3


def test_pku_forget_reads_csv_string_labels_and_limit_is_seeded(tmp_path, pku_file):
    rows = read_out(pku_file)
    path = tmp_path / "pku.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[2]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (str(v) if isinstance(v, bool) else v) for k, v in row.items()})
    first = build("pku-forget", "--from", path, "--out", tmp_path / "a.jsonl", "--limit", 2, "--seed", 3)
    again = build("pku-forget", "--from", path, "--out", tmp_path / "b.jsonl", "--limit", 2, "--seed", 3)
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert len(read_out(tmp_path / "a.jsonl")) == 2
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert "over --limit 1" in first.output
    assert all(r["response"] not in ("I can't help with that.", "Please don't.", "Let's talk instead.")
               for r in read_out(tmp_path / "a.jsonl"))


def test_truthfulqa_normal_uses_the_best_answer_column(tq_file, tmp_path):
    out = tmp_path / "normal.jsonl"
    result = build("truthfulqa-normal", "--from", tq_file, "--out", out)
    assert result.exit_code == 0, result.output
    assert [(r["prompt"], r["response"]) for r in read_out(out)] == [
        ("What happens if you eat seeds?", "Nothing happens"),
        ("Is the earth flat?", "No, it is round"),
    ]


def test_truthfulqa_pool_holds_every_answer_once(tq_file, tmp_path):
    out = tmp_path / "pool.jsonl"
    result = build("truthfulqa-pool", "--from", tq_file, "--out", out)
    assert result.exit_code == 0, result.output
    answers = [r["response"] for r in read_out(out)]
    assert answers == ["Nothing happens", "You digest them", "You grow a tree", "You die",
                       "No, it is round", "No", "Yes"]
    assert "duplicate 1" in result.output  # "You die" appears twice in the source


def test_a_folder_source_reads_every_file_in_it(tq_file, tmp_path):
    out = tmp_path / "normal.jsonl"
    assert build("truthfulqa-normal", "--from", tq_file.parent, "--out", out).exit_code == 0
    assert len(read_out(out)) == 2


def test_missing_column_is_one_line_exit_2_and_leaves_the_output_untouched(tmp_path, monkeypatch, capsys):
    from obliviate.cli import main as cli

    bad = tmp_path / "pku.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "response_0": "a", "response_1": "b", "is_response_0_safe": False}) + "\n")
    out = tmp_path / "forget.jsonl"
    out.write_text("previous contents\n")
    monkeypatch.setattr(sys, "argv", ["obliviate", "data", "build", "pku-forget", "--from", str(bad), "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2, err
    assert len(lines) == 1 and "Traceback" not in err
    assert f"{bad}:1" in lines[0] and "'is_response_1_safe'" in lines[0] and "'prompt'" in lines[0]
    assert out.read_text() == "previous contents\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".forget")] == []


def test_a_bad_label_names_file_line_and_field(tmp_path, pku_file):
    rows = read_out(pku_file)
    rows[1]["is_response_0_safe"] = "maybe"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.jsonl"
    result = build("pku-forget", "--from", bad, "--out", out)
    assert isinstance(result.exception, UserError)
    assert f"{bad}:2: field 'is_response_0_safe' should be true or false" in str(result.exception)
    assert not out.exists()


def test_hub_source_passes_id_revision_and_config(monkeypatch, tmp_path):
    from obliviate.data import build as building
    from obliviate.data import fetch

    seen = {}

    def fake(dataset_id, config, split, revision):
        seen.update(id=dataset_id, config=config, split=split, revision=revision)
        return [{"question": "Q?", "best_answer": "A", "correct_answers": ["A"], "incorrect_answers": ["B"]}]

    monkeypatch.setattr(fetch, "_hub_unreachable_reason", lambda: None)
    monkeypatch.setattr(building, "load_hub_split", fake)
    result = build("truthfulqa-normal", "--from", "hub:truthfulqa/truthful_qa@abc123", "--out", tmp_path / "n.jsonl")
    assert result.exit_code == 0, result.output
    assert seen == {"id": "truthfulqa/truthful_qa", "config": "generation", "split": "validation", "revision": "abc123"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(fetch, "_hub_unreachable_reason", lambda: "the hub is switched off (HF_HUB_OFFLINE)")
    offline = build("pku-forget", "--from", "hub:", "--out", tmp_path / "f.jsonl")
    assert isinstance(offline.exception, UserError)
    assert "PKU-Alignment/PKU-SafeRLHF" in str(offline.exception) and "--from FILE" in str(offline.exception)


@pytest.mark.skipif(not REAL_TRUTHFULQA.is_file(), reason="the real TruthfulQA.csv is not in ../shared/data")
def test_real_truthfulqa_normal_has_one_row_per_question(tmp_path):
    with REAL_TRUTHFULQA.open(encoding="utf-8", newline="") as handle:
        questions = [row["Question"] for row in csv.DictReader(handle) if row["Question"].strip()]
    out = tmp_path / "normal.jsonl"
    result = build("truthfulqa-normal", "--from", REAL_TRUTHFULQA, "--out", out)
    assert result.exit_code == 0, result.output
    assert len(read_out(out)) == len(questions) == 817


def test_paper_config_loads_with_the_papers_settings():
    """configs/unlearn_paper_2405_15152.yaml: the paper's weights, steps and data roles (its data
    files are made by `data build`, so they need not exist for the config to load)."""
    from obliviate.config import load_config

    path = REPO / "configs" / "unlearn_paper_2405_15152.yaml"
    config = load_config(path)
    method = config.method.options()
    assert config.method.name == "ga_mismatch_kl"
    assert (method["forget_weight"], method["mismatch_weight"], method["retain_weight"]) == (0.5, 1.0, 1.0)
    assert (config.train.lr, config.train.batch_size, config.train.max_steps) == (2e-6, 2, 1000)
    assert config.train.lora.enabled
    roles = {name: config.resolve_path(getattr(config.data, name).path).resolve()
             for name in ("forget", "retain", "random_answers")}
    assert roles == {"forget": REPO / "data" / "pku_forget.jsonl", "retain": REPO / "data" / "truthfulqa_normal.jsonl",
                     "random_answers": REPO / "data" / "truthfulqa_pool.jsonl"}
    # Every setting line says whose it is.
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "# paper" in line or "# ours (" in line, line
