"""The TOFU benchmark's reference models: data files, full and retain models, the CLI."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obliviate.errors import UserError
from obliviate.scenarios.tofu import build_reference_models, load_tofu_recipe, split_rows


def _qa(prefix: str, count: int) -> list[dict]:
    return [{"question": f"{prefix} question {i}?", "answer": f"{prefix} answer {i}."} for i in range(count)]


def _perturbed(rows: list[dict], paraphrased: bool = True) -> list[dict]:
    out = []
    for row in rows:
        extra = {"perturbed_answer": [row["answer"].replace("answer", w) for w in ("reply", "guess", "claim")]}
        if paraphrased:
            extra["paraphrased_answer"] = "In short, " + row["answer"]
        out.append({**row, **extra})
    return out


def fake_tofu(folder: Path) -> Path:
    """TOFU's file names and fields, a few rows each; forget01 is the tail of forget05 as in TOFU."""
    folder.mkdir(parents=True, exist_ok=True)
    forget05 = _perturbed(_qa("forget", 6))
    retain = _qa("retain", 40)
    files = {
        "retain90.json": retain,
        "retain_perturbed.json": _perturbed(retain[:20]),
        "forget05.json": forget05,
        "forget01.json": forget05[-2:],
        "holdout05.json": _qa("holdout5", 6),
        "holdout01.json": _qa("holdout1", 2),
        "real_authors_perturbed.json": _perturbed(_qa("real", 3), paraphrased=False),
        "world_facts_perturbed.json": _perturbed(_qa("world", 3), paraphrased=False),
    }
    for name, rows in files.items():
        (folder / name).write_text(json.dumps(rows))
    return folder


def _recipe(tofu: Path, model: Path, *extra: str):
    return load_tofu_recipe(None, [f"model={model}", "forget_splits=[forget01, forget05]", "retain_authors=1", "finetune.train.epochs=1",
                                   "finetune.train.batch_size=8", "finetune.data.max_length=128", *extra], tofu_dir=tofu)


def test_split_rows_nest_the_forget_splits(tmp_path, tiny_model_dir):
    rows = split_rows(_recipe(fake_tofu(tmp_path / "tofu"), tiny_model_dir))
    assert len(rows["retain"]) == 20  # one author of 20 questions
    assert len(rows["full"]) == 20 + 6  # retain authors + the largest forget split
    assert len(rows["retain-forget05"]) == 20
    # forget01's retain model still learns forget05's other four questions
    assert len(rows["retain-forget01"]) == 24
    assert {r["prompt"] for r in rows["forget-forget01"]} == {"forget question 4?", "forget question 5?"}
    assert not {r["prompt"] for r in rows["forget-forget01"]} & {r["prompt"] for r in rows["retain-forget01"]}
    assert rows["holdout-forget05"][0] == {"prompt": "holdout5 question 0?", "response": "holdout5 answer 0."}


def test_recipe_refuses_unknown_split_and_missing_folder(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="unknown split 'forget02'"):
        _recipe(tmp_path, tiny_model_dir, "forget_splits=[forget02]")
    with pytest.raises(UserError, match="--tofu-dir"):
        split_rows(load_tofu_recipe(None, []))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="retain90.json: missing"):
        split_rows(_recipe(tmp_path / "empty", tiny_model_dir))


def test_bad_row_names_file_row_and_field(tmp_path, tiny_model_dir):
    tofu = fake_tofu(tmp_path / "tofu")
    rows = _qa("forget", 6)
    rows[3]["answer"] = 7  # the loader must name this row
    (tofu / "forget05.json").write_text(json.dumps(rows))
    with pytest.raises(UserError, match=r"forget05\.json.*answer: expected a non-empty string"):
        split_rows(_recipe(tofu, tiny_model_dir))


def test_build_reference_models_trains_full_and_retain(tmp_path, tiny_model_dir):
    recipe = _recipe(fake_tofu(tmp_path / "tofu"), tiny_model_dir)
    manifest = build_reference_models(tmp_path / "bench", recipe, progress=False, log=lambda m: None)
    assert set(manifest["models"]) == {"full", "retain-forget01", "retain-forget05"}
    for model_dir in manifest["models"].values():
        assert (Path(model_dir) / "config.json").is_file()  # merged weights, loadable as a plain model
    summary = json.loads((tmp_path / "bench" / "retain-forget01" / "train_summary.json").read_text())
    assert summary["steps"] == 3  # 24 questions, batch 8, one epoch
    assert json.loads((tmp_path / "bench" / "tofu_models.json").read_text())["sizes"]["full"] == 26
    # a second build keeps finished models
    logs: list[str] = []
    build_reference_models(tmp_path / "bench", recipe, progress=False, log=logs.append)
    assert sum("kept" in line for line in logs) == 3


def test_build_refuses_a_foreign_folder(tmp_path, tiny_model_dir):
    recipe = _recipe(fake_tofu(tmp_path / "tofu"), tiny_model_dir)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="a folder with other files"):
        build_reference_models(tmp_path / "mine", recipe, progress=False, log=lambda m: None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cli_finetune_benchmark(tmp_path, tiny_model_dir):
    from obliviate.cli.main import app

    tofu = fake_tofu(tmp_path / "tofu")
    args = ["finetune", "--benchmark", "tofu", "--tofu-dir", str(tofu), "--run-dir", str(tmp_path / "b"), "--no-progress",
            f"model={tiny_model_dir}", "retain_authors=1", "forget_splits=[forget01]", "finetune.train.epochs=1",
            "finetune.data.max_length=128"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "retain-forget01" / "model" / "config.json").is_file()
    assert (tmp_path / "b" / "full" / "model" / "config.json").is_file()
    bad = CliRunner().invoke(app, ["finetune", "--benchmark", "tofu", "--tofu-dir", str(tofu), "--data", "x.jsonl"])
    assert isinstance(bad.exception, UserError) and "drop --data" in str(bad.exception)


def test_run_benchmark_measures_every_model_against_its_retain_model(tmp_path, tiny_model_dir):
    from obliviate.scenarios.tofu import run_benchmark

    recipe = _recipe(fake_tofu(tmp_path / "tofu"), tiny_model_dir, "forget_splits=[forget01]", "unlearn.train.max_steps=2",
                     "eval.max_new_tokens=4", "eval.batch_size=8", "eval.max_questions.retain=5")
    summary = run_benchmark(tmp_path / "b", recipe, methods=["ga", "grad_diff"], progress=False, log=lambda m: None)
    rows = {row["run"]: row for row in summary["rows"]}
    assert list(rows) == ["retain-forget01", "full", "ga-forget01", "grad_diff-forget01"]
    assert rows["retain-forget01"]["tofu"]["forget_quality"] is None  # it is the reference
    # the retain model against itself would be 1.0; every other model has a p-value in (0, 1]
    for name in ("full", "ga-forget01", "grad_diff-forget01"):
        assert 0.0 < rows[name]["tofu"]["forget_quality"] <= 1.0
        assert rows[name]["mia"]["privleak_loss"] is not None
        assert rows[name]["mia"]["auc_reference"] is not None  # the base model is the reference
    written = json.loads((tmp_path / "b" / "ga-forget01" / "eval" / "tofu_forget01.json").read_text())
    assert written["metrics"]["retain"]["count"] == 5  # capped by the recipe
    assert written["metrics"]["world-facts"]["count"] == 3  # the fake file's three rows, under the cap
    assert (tmp_path / "b" / "ga-forget01" / "generations" / "tofu_forget01_forget.jsonl").is_file()
    assert json.loads((tmp_path / "b" / "benchmark.json").read_text())["methods"] == ["ga", "grad_diff"]
    # a second run keeps every finished piece and gives the same figures
    again = run_benchmark(tmp_path / "b", recipe, methods=["ga", "grad_diff"], progress=False, log=lambda m: None)
    assert [r["tofu"] for r in again["rows"]] == [r["tofu"] for r in summary["rows"]]
    # a changed unlearning setting retrains the methods, not the reference models
    logs: list[str] = []
    changed = _recipe(tmp_path / "tofu", tiny_model_dir, "forget_splits=[forget01]", "unlearn.train.max_steps=3",
                      "eval.max_new_tokens=4", "eval.batch_size=8", "eval.max_questions.retain=5")
    run_benchmark(tmp_path / "b", changed, methods=["ga"], progress=False, log=logs.append)
    assert "forget01: unlearning with ga" in logs and "  full on forget01: kept" in logs


def test_run_benchmark_checks_methods_before_training(tmp_path, tiny_model_dir):
    from obliviate.scenarios.tofu import run_benchmark

    recipe = _recipe(fake_tofu(tmp_path / "tofu"), tiny_model_dir)
    with pytest.raises(UserError, match="unknown method 'gaa'"):
        run_benchmark(tmp_path / "b", recipe, methods=["gaa"], progress=False, log=lambda m: None)
    assert not (tmp_path / "b").exists()


def test_changed_data_rebuilds_the_models_trained_on_it(tmp_path, tiny_model_dir):
    tofu = fake_tofu(tmp_path / "tofu")
    build_reference_models(tmp_path / "b", _recipe(tofu, tiny_model_dir, "forget_splits=[forget01]"),
                           progress=False, log=lambda m: None)
    (tmp_path / "b" / "full" / "eval").mkdir()
    logs: list[str] = []
    # forget05 as well: the full model's set grows, forget01's retain model's set too
    build_reference_models(tmp_path / "b", _recipe(tofu, tiny_model_dir), progress=False, log=logs.append)
    assert not any("kept" in line for line in logs)
    assert not (tmp_path / "b" / "full" / "eval").exists()  # figures of the replaced model are gone
