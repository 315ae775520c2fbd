"""The hallucination scenario: TruthfulQA shipped, its split, MC1/MC2, the recipe and the whole demo on a tiny model."""

import json
import math
from pathlib import Path

import pytest

from obliviate.data.truthfulqa import COLUMNS, split_questions, truthfulqa_rows
from obliviate.errors import UserError
from obliviate.judges.base import Judge, Verdict
from obliviate.metrics.truthfulqa_mc import mc1, mc2

ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV = ROOT.parent / "shared" / "data" / "truthfulqa" / "TruthfulQA.csv"
BUILTIN = ROOT / "src" / "obliviate" / "data" / "builtin"


def test_the_shipped_csv_has_817_rows_and_its_licence():
    rows = truthfulqa_rows()
    assert len(rows) == 817 and tuple(rows[0]) == COLUMNS
    assert rows[0]["Question"] == "What happens to you if you eat watermelon seeds?"
    notice = (BUILTIN / "truthfulqa.LICENSE.txt").read_text()
    assert "Apache License" in notice and "github.com/sylinrl/TruthfulQA" in notice and "Lin" in notice
    package_data = (ROOT / "pyproject.toml").read_text()
    assert '"data/builtin/truthfulqa.csv"' in package_data and '"data/builtin/truthfulqa.LICENSE.txt"' in package_data


@pytest.mark.skipif(not SHARED_CSV.is_file(), reason="../shared/data/truthfulqa is not here")
def test_the_shipped_csv_is_an_unchanged_copy():
    assert (BUILTIN / "truthfulqa.csv").read_bytes() == SHARED_CSV.read_bytes()


def test_mc1_on_hand_set_log_probs():
    assert mc1(-2.0, [-3.0, -2.5]) == 1.0
    assert mc1(-2.0, [-3.0, -1.9]) == 0.0
    assert mc1(-2.0, [-2.0]) == 0.0  # a tie is not a win
    with pytest.raises(ValueError):
        mc1(-1.0, [])


def test_mc2_on_hand_set_log_probs():
    # p(correct) = 0.5 + 0.25, p(incorrect) = 0.25 -> 0.75
    assert mc2([math.log(0.5), math.log(0.25)], [math.log(0.25)]) == pytest.approx(0.75)
    # equal mass on both sides -> 0.5, and very small probabilities stay finite
    assert mc2([-1000.0], [-1000.0]) == pytest.approx(0.5)
    assert mc2([math.log(0.1)], [math.log(0.3), math.log(0.6)]) == pytest.approx(0.1)


def test_the_split_is_disjoint_deterministic_and_keeps_test_fixed():
    rows = truthfulqa_rows()
    a = split_questions(rows, 200, 40, 100, seed=0)
    b = split_questions(rows, 200, 40, 100, seed=0)
    assert [len(a[k]) for k in ("train", "validation", "test")] == [200, 40, 100]
    questions = {k: {r["Question"] for r in v} for k, v in a.items()}
    assert not questions["train"] & questions["validation"] and not questions["train"] & questions["test"]
    assert not questions["validation"] & questions["test"]
    assert a == b
    assert split_questions(rows, 50, 40, 100, seed=0)["test"] == a["test"]  # held-out set does not move with n_train
    assert split_questions(rows, 200, 40, 100, seed=1)["test"] != a["test"]
    with pytest.raises(ValueError):
        split_questions(rows, 700, 40, 100, seed=0)


def test_the_recipe_rejects_an_unknown_key_on_one_line(tmp_path):
    from obliviate.scenarios.hallucination import load_recipe
    from obliviate.scenarios.recipe import packaged_recipe

    recipe = load_recipe()
    assert recipe.method == "distance_cluster" and recipe.n_test == 100
    text = packaged_recipe("hallucination").read_text().replace("n_test: 100", "n_tests: 100")
    path = tmp_path / "hallucination_mine.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_recipe(path)
    assert "n_tests" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError):
        load_recipe(None, ["method=npo"])


def test_both_methods_make_a_valid_unlearning_config(tmp_path):
    from obliviate.scenarios.hallucination import load_recipe, unlearn_config

    config = unlearn_config(load_recipe(), tmp_path, early_stopping=True)
    method = config.method.model_dump()
    assert (method["name"], method["expected_source"], method["expected_field"], method["expected_separator"]) == (
        "distance_cluster", "field", "Correct Answers", ";")
    assert method["num_clusters"] == 4 and config.early_stopping.every == 10
    config = unlearn_config(load_recipe(None, ["method=ga_mismatch_kl"]), tmp_path, early_stopping=False)
    assert config.method.name == "ga_mismatch_kl" and config.method.num_random_answers == 3
    assert config.early_stopping is None


class _AlternateJudge(Judge):
    """Flags every other question it has been given, so the tiny model has a forget and a retain set."""

    name = "alternate"

    def __init__(self, questions):
        super().__init__()
        self.flag = {q: i % 2 == 0 for i, q in enumerate(questions)}

    @property
    def judge_id(self):
        return "alternate"

    def _judge_batch(self, prompts, responses):
        return [Verdict(True, 0.9, "hallucinated") if self.flag[p] else Verdict(False, 0.1, "correct") for p in prompts]


@pytest.mark.parametrize("method", ["distance_cluster", "ga_mismatch_kl"])
def test_the_demo_end_to_end_on_a_tiny_model(tmp_path, tiny_model_dir, monkeypatch, method):
    from obliviate.scenarios import hallucination
    from obliviate.scenarios.hallucination import load_recipe, run_hallucination_demo

    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hallucination, "reference_judge",
                        lambda options, rows: _AlternateJudge([r["Question"] for r in rows]))
    options = load_recipe(None, [
        f"model={tiny_model_dir}", f"method={method}", "n_train=6", "n_validation=2", "n_test=3", "n_benign=2",
        "n_retain_eval=2", "max_new_tokens=4", "steps=2", "batch_size=2", "retain_batch_size=2", "early_stop_every=1",
        "gen_batch_size=4", "score_batch_size=8",
    ])
    summary = run_hallucination_demo(tmp_path / "demo", options, progress=False, log=lambda m: None)
    run = tmp_path / "demo"
    saved = json.loads((run / "summary.json").read_text())
    assert saved["method"] == method and saved["forget_set_size"] == 3 and saved["retain_set_size"] == 3
    for stage in ("before", "after"):
        test = saved[stage]["test"]
        assert test["count"] == 3
        for key in ("truthful_rate", "correct_rate", "hallucination_rate", "mc1", "mc2"):
            assert 0.0 <= test[key] <= 1.0
        assert saved[stage]["retain"]["perplexity"] > 1.0
    assert 0.0 <= saved["after"]["benign"]["similarity_to_original"] <= 1.0
    assert set(saved["figures"]) >= {"truthful_gain_points", "mc1_change_points", "mc2_change_points",
                                     "retain_perplexity_rise", "benign_similarity", "retain_similarity"}
    assert set(saved["targets"]) == {"truthful_gain_points >= 10", "retain_perplexity_rise <= 0.10",
                                     "benign_similarity >= 0.90", "seconds_total <= 600"}
    assert [r["metric"] for r in saved["rows"]][:5] == ["truthful rate (reference judge)", "correct rate (reference judge)",
                                                        "hallucination rate", "MC1", "MC2"]
    assert summary["train"]["steps"] <= 2
    forget = [json.loads(x) for x in (run / "data" / "forget.jsonl").read_text().splitlines()]
    assert len(forget) == 3 and all(";" in r["Correct Answers"] or r["Correct Answers"] for r in forget)
    assert (run / "generations" / "after_test.jsonl").is_file()
    page = (run / "report.html").read_text()
    assert "Hallucination unlearning" in page and "MC2" in page and "truthful rate" in page
    assert "target: truthful_gain_points &gt;= 10" in page or "target: truthful_gain_points >= 10" in page


def test_the_cli_runs_the_scenario_and_refuses_a_bad_setting_on_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from obliviate.cli import main as cli
    from obliviate.scenarios.hallucination import load_recipe, run_hallucination_demo

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli.app, ["demo", "--scenario", "hallucination", "--out", str(out), "bogus=1"])
    assert isinstance(result.exception, UserError) and result.exception.exit_code == 2
    assert "\n" not in str(result.exception) and "unknown key 'bogus'" in str(result.exception)
    # A method option the method does not take stops the demo before any folder or model.
    with pytest.raises(UserError, match="hallucination recipe, its unlearning run config: .*bogus"):
        run_hallucination_demo(out, load_recipe(None, ["method_options.distance_cluster.bogus=1"]), progress=False,
                               log=lambda m: None)
    assert not out.exists() and not (tmp_path / "runs").exists()
