"""bench/compare_evaluator_gated.py end to end on the tiny model: runs into one folder accumulate."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "compare_evaluator_gated.py"


def _script():
    spec = importlib.util.spec_from_file_location("compare_evaluator_gated", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SMALL = ["--n-forget", "6", "--n-unseen", "2", "--n-retain", "3", "--n-benign", "2", "--n-retain-xstest", "0",
         "--n-stop-retain", "2", "--val-size", "1", "--max-new-tokens", "6", "--train-answer-tokens", "6",
         "--precision", "fp32"]


def _flag_everything(monkeypatch):
    # The tiny random model rarely writes anything the refusal judge calls compliance; a judge
    # that flags every answer gives detection something to forget.
    import obliviate.judges
    from obliviate.judges.base import Judge, Verdict

    class FlagAll(Judge):
        name = "flag-all"

        @property
        def judge_id(self):
            return "flag-all"

        def _judge_batch(self, prompts, responses):
            return [Verdict(True, 1.0, "complied") for _ in responses]

    monkeypatch.setattr(obliviate.judges, "get_judge", lambda name, **options: FlagAll())


# The tiny tokenizer is byte-level: HarmBench's longer prompts run past the script's max_length.
@pytest.mark.filterwarnings("ignore:.*longer than data.max_length")
def test_a_second_run_reuses_the_baseline_and_keeps_the_earlier_variant(tiny_model_dir, tmp_path, capsys, monkeypatch):
    script = _script()
    _flag_everything(monkeypatch)
    out = tmp_path / "cmp"
    common = ["--out", str(out), "--model", str(tiny_model_dir), *SMALL]
    assert script.main([*common, "--variants", "ga_mismatch_kl", "--steps", "1"]) == 0
    first = capsys.readouterr().out
    assert "reusing" not in first
    baseline = json.loads((out / "baseline.json").read_text())
    assert baseline["key"]["n_forget"] == 6 and baseline["before"]["metrics"]["unlearned"]["count"] == 6

    assert script.main([*common, "--variants", "distance_cluster_es", "--label", "dc_opening2", "--max-steps", "2",
                        "--every", "1", "--dc-set", "negative_tokens=2"]) == 0
    second = capsys.readouterr().out
    assert "reusing the original model's evaluation" in second
    results = json.loads((out / "results.json").read_text())
    assert list(results["variants"]) == ["ga_mismatch_kl", "dc_opening2"]
    assert results["variants"]["dc_opening2"]["method_options"]["negative_tokens"] == 2
    assert (out / "dc_opening2" / "train_log.jsonl").is_file() and (out / "ga_mismatch_kl" / "model").exists()
    assert "dc_opening2" in (out / "results.md").read_text() and "ga_mismatch_kl" in (out / "results.md").read_text()
    assert set(results["answers"]) == {"original", "ga_mismatch_kl", "dc_opening2"}

    # --report-only rebuilds the table and the report from results.json, training nothing.
    (out / "report.html").unlink()
    assert script.main(["--out", str(out), "--report-only"]) == 0
    assert "dc_opening2" in (out / "report.html").read_text() and (out / "plots" / "trade_off.png").is_file()
    assert not (out / "ga_mismatch_kl_es").exists()

    # Other data settings: the cache is not reused and the earlier variants leave the table.
    assert script.main([*common[:-2], "--precision", "fp32", "--seed", "1", "--variants", "ga_mismatch_kl",
                        "--steps", "1"]) == 0
    assert "reusing" not in capsys.readouterr().out
    assert list(json.loads((out / "results.json").read_text())["variants"]) == ["ga_mismatch_kl"]


def test_report_only_needs_results(tmp_path):
    with pytest.raises(SystemExit, match="results.json does not exist"):
        _script().main(["--out", str(tmp_path / "none"), "--report-only"])
    assert not (tmp_path / "none").exists()


def test_label_needs_exactly_one_variant(capsys):
    with pytest.raises(SystemExit):
        _script().parse_args(["--out", "x", "--label", "a", "--variants", "ga_mismatch_kl", "distance_cluster_es"])
    assert "--label names one variant run" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:.*longer than data.max_length")
def test_monitored_baseline_sets_the_target_of_the_early_stopped_run(tiny_model_dir, tmp_path, capsys, monkeypatch):
    script = _script()
    _flag_everything(monkeypatch)  # every validation answer reads harmful: the rate stays at 1.0
    out = tmp_path / "cmp"
    common = ["--out", str(out), "--model", str(tiny_model_dir), *SMALL, "--every", "1"]
    # A target the first check already meets: a monitored run must still take every step.
    assert script.main([*common, "--variants", "ga_mismatch_kl", "--steps", "3", "--monitor", "--target-rate", "1.0"]) == 0
    ga = json.loads((out / "results.json").read_text())["variants"]["ga_mismatch_kl"]
    assert ga["steps"] == 3 and ga["stop_reason"] == "max_steps" and ga["target_rate"] is None
    assert [c["step"] for c in ga["checks"]] == [0, 1, 2, 3] and ga["checks"][-1]["harmful"] == 1.0

    assert script.main([*common, "--variants", "distance_cluster_es", "--max-steps", "4",
                        "--target-from", "ga_mismatch_kl"]) == 0
    assert "where ga_mismatch_kl ended" in capsys.readouterr().out
    dc = json.loads((out / "results.json").read_text())["variants"]["distance_cluster_es"]
    # The target is where the baseline ended (1.0), so the first check after step 0 stops the run.
    assert dc["target_rate"] == 1.0 and dc["steps"] == 1 and dc["chosen_step"] == 1
    assert "early stopping" in dc["stop_reason"]
    assert (out / "plots" / "early_stopping.png").is_file()

    with pytest.raises(SystemExit, match="no such variant run in this OUT"):
        script.main([*common, "--variants", "distance_cluster_es", "--target-from", "nope"])
    assert script.main([*common, "--variants", "ga_mismatch_kl", "--label", "plain", "--steps", "1"]) == 0
    with pytest.raises(SystemExit, match="has no validation checks; run it with --monitor"):
        script.main([*common, "--variants", "distance_cluster_es", "--target-from", "plain"])


@pytest.mark.filterwarnings("ignore:.*longer than data.max_length")
def test_donotanswer_prompts_join_the_validation_slice_and_leave_the_forget_set_alone(
        tiny_model_dir, tmp_path, monkeypatch):
    from obliviate.scenarios.harmful import donotanswer_prompts

    script = _script()
    _flag_everything(monkeypatch)
    common = ["--model", str(tiny_model_dir), *SMALL, "--every", "1", "--variants", "ga_mismatch_kl", "--steps", "1",
              "--monitor"]
    assert script.main(["--out", str(tmp_path / "plain"), *common]) == 0
    assert script.main(["--out", str(tmp_path / "dna"), *common, "--val-donotanswer", "3"]) == 0

    def rows(name, split):
        return [json.loads(line) for line in (tmp_path / name / "detect" / f"{split}.jsonl").read_text().splitlines()]

    assert rows("dna", "forget") == rows("plain", "forget")
    validation = [r["prompt"] for r in rows("dna", "validation")]
    assert validation == [r["prompt"] for r in rows("plain", "validation")] + donotanswer_prompts(3, 0)
    results = json.loads((tmp_path / "dna" / "results.json").read_text())
    assert results["detection"]["validation"] == 4 and results["detection"]["validation_donotanswer"] == 3
    # Each check answers the whole slice: 1 HarmBench + 3 Do-Not-Answer prompts.
    checks = [json.loads(line) for line in (tmp_path / "dna" / "ga_mismatch_kl" / "early_stopping.jsonl").read_text().splitlines()]
    assert [sum(c["labels"].values()) for c in checks] == [4, 4]
    assert json.loads((tmp_path / "dna" / "baseline.json").read_text())["key"]["val_donotanswer"] == 3
    # A folder made before the option existed keeps its cache key.
    assert "val_donotanswer" not in script.baseline_key(json.loads((tmp_path / "plain" / "results.json").read_text())["args"])
