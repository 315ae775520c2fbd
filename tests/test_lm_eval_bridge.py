"""The lm-eval suite: obliviate's model handed to lm-evaluation-harness, on a local two-question
task (tests/fixtures/lm_eval_tasks), offline."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obliviate.api import evaluate
from obliviate.cli.main import app
from obliviate.errors import UserError
from obliviate.eval.lm_eval_bridge import metric_key, prepare_tasks, task_metrics

TASKS_DIR = Path(__file__).parent / "fixtures" / "lm_eval_tasks"
TASK = "obliviate_tiny_mc"
SPLIT = "obliviate-tiny-mc"  # the task's split name: no underscore in run-folder file names
QUESTIONS = [json.loads(line) for line in (TASKS_DIR / f"{TASK}.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def in_tasks_dir(monkeypatch):
    # The task YAML names its data file relative to the working directory.
    monkeypatch.chdir(TASKS_DIR)


@pytest.fixture(scope="module", autouse=True)
def task_index():
    """Index lm-eval's built-in tasks and the fixture folder once (seconds; the bridge keeps the index)."""
    return prepare_tasks(TASK, TASKS_DIR)


@pytest.fixture(scope="module")
def uniform_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny model with its final norm zeroed: every logit is 0, every token has probability
    1/V, so a choice's log-likelihood is -(its token count) * log V and the shortest choice wins."""
    import torch

    from obliviate.models.loading import load_trained

    model, tokenizer = load_trained(str(tiny_model_dir))
    with torch.no_grad():
        model.model.norm.weight.zero_()
    folder = tmp_path_factory.mktemp("uniform") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_local_task_metrics_items_and_files(tiny_model_dir, tmp_path):
    result = evaluate(str(tiny_model_dir), suite="lm-eval", tasks=TASK, include_path=TASKS_DIR, run_dir=tmp_path,
                      tag="before", batch_size=2)

    figures = result["metrics"][SPLIT]
    assert figures["count"] == 2
    assert set(figures) >= {"acc", "acc_stderr"} and not any("," in key for key in figures)
    rows = result["items"][SPLIT]
    assert [row["doc_id"] for row in rows] == [0, 1]
    for row, question in zip(rows, QUESTIONS):
        assert row["task"] == TASK and question["question"] in row["prompt"]
        assert row["choices"] == question["choices"] and row["target"] == question["answer"]
        assert row["answer"] == question["choices"][question["answer"]]
        assert row["choice"] == max(range(3), key=lambda i: row["loglikelihoods"][i])
        assert row["correct"] == (row["choice"] == question["answer"]) == (row["acc"] == 1.0)
    assert figures["acc"] == pytest.approx(sum(row["correct"] for row in rows) / 2)
    assert result["metrics"]["summary"] == {TASK: figures["acc"]}
    assert result["settings"]["tasks"] == [TASK] and result["settings"]["main_metric"] == {TASK: "acc"}

    written = json.loads((tmp_path / "eval" / "lm-eval_before.json").read_text())
    assert written["suite"] == "lm-eval" and "items" not in written and written["metrics"][SPLIT]["count"] == 2
    lines = (tmp_path / "generations" / f"lm-eval_before_{SPLIT}.jsonl").read_text().splitlines()
    assert [json.loads(line)["correct"] for line in lines] == [row["correct"] for row in rows]


def test_model_that_prefers_the_shortest_choice(uniform_model_dir):
    # Asked through a group of the one task (as mmlu groups its subjects): both get a row.
    result = evaluate(str(uniform_model_dir), suite="lm-eval", tasks=["obliviate_tiny_group"], include_path=str(TASKS_DIR))

    rows = result["items"][SPLIT]
    vocab = 261  # the tiny byte-level tokenizer's size (obliviate.testing)
    for row, question in zip(rows, QUESTIONS):
        # lm-eval puts a space before each choice; one token per byte
        expected = [-(1 + len(choice)) * math.log(vocab) for choice in question["choices"]]
        assert row["loglikelihoods"] == pytest.approx(expected, rel=1e-4)
    # Question 1's answer is its shortest choice, question 2's is not ("one" beats "four").
    assert [row["choice"] for row in rows] == [0, 0]
    assert [row["correct"] for row in rows] == [True, False]
    assert result["metrics"][SPLIT]["acc"] == 0.5
    assert result["metrics"]["obliviate-tiny-group"]["acc"] == 0.5 and result["metrics"]["obliviate-tiny-group"]["count"] == 2
    assert result["metrics"]["summary"] == {"obliviate_tiny_group": 0.5}
    assert list(result["items"]) == [SPLIT]  # documents belong to tasks, not groups


def test_metric_names_and_values_from_lm_eval_results():
    raw = {
        "results": {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": "N/A",
                              "exact_match,flexible-extract": 0.5, "exact_match_stderr,flexible-extract": float("nan")}},
        "groups": {"mmlu": {"alias": "mmlu", "acc,none": 0.4, "acc_stderr,none": 0.01}},
        "group_subtasks": {"mmlu": ["mmlu_stem"], "mmlu_stem": ["mmlu_anatomy", "mmlu_astronomy"]},
        "n-samples": {"gsm8k": {"original": 1319, "effective": 8}, "mmlu_anatomy": {"original": 135, "effective": 135},
                      "mmlu_astronomy": {"original": 152, "effective": 152}},
    }
    assert task_metrics(raw) == {
        "gsm8k": {"exact_match_strict_match": 0.25, "exact_match_strict_match_stderr": None,
                  "exact_match_flexible_extract": 0.5, "exact_match_flexible_extract_stderr": None, "count": 8},
        "mmlu": {"acc": 0.4, "acc_stderr": 0.01, "count": 135 + 152},
    }
    assert metric_key("alias") is None and metric_key("acc_norm,none") == "acc_norm"


def test_unknown_task_named_before_the_model_loads():
    with pytest.raises(UserError, match="lm-eval task 'obliviate_no_such_task' is unknown"):
        evaluate("/no/such/model", suite="lm-eval", tasks="obliviate_tiny_mc,obliviate_no_such_task",
                 include_path=TASKS_DIR)
    with pytest.raises(UserError, match="needs tasks"):
        evaluate("/no/such/model", suite="lm-eval")
    with pytest.raises(UserError, match="no such folder"):
        evaluate("/no/such/model", suite="lm-eval", tasks=TASK, include_path=TASKS_DIR / "absent")


def test_dataset_that_cannot_be_fetched_offline(tiny_model_dir):
    with pytest.raises(UserError, match="could not be fetched.*no-such-dataset") as caught:
        evaluate(str(tiny_model_dir), suite="lm-eval", tasks="obliviate_hub_task", include_path=TASKS_DIR)
    assert "\n" not in str(caught.value)


def test_without_lm_eval_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now fails, as when it is not installed
    with pytest.raises(UserError, match=r"pip install 'obliviate\[lm-eval\]'"):
        evaluate("/no/such/model", suite="lm-eval", tasks=TASK)


def test_cli_writes_the_suite_file(tiny_model_dir, tmp_path):
    result = CliRunner().invoke(app, [
        "eval", "--suite", "lm-eval", "--model", str(tiny_model_dir), "--tasks", TASK,
        "--include-path", str(TASKS_DIR), "--limit", "1", "--batch-size", "1", "--out", str(tmp_path), "--tag", "cli",
    ])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "eval" / "lm-eval_cli.json").read_text())
    assert written["metrics"][SPLIT]["count"] == 1  # --limit reached lm-eval
    assert written["settings"]["limit"] == 1 and written["settings"]["batch_size"] == 1
    assert len((tmp_path / "generations" / f"lm-eval_cli_{SPLIT}.jsonl").read_text().splitlines()) == 1

    missing = CliRunner().invoke(app, ["eval", "--suite", "lm-eval", "--model", str(tiny_model_dir)])
    assert isinstance(missing.exception, UserError) and "--tasks" in str(missing.exception)
