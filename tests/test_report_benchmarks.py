"""`obliviate report` on the benchmark suites (TOFU, MIA, MUSE, lm-eval): result files written by hand
in the shape every suite writes (eval/<suite>_<tag>.json + generations/<suite>_<tag>_<split>.jsonl)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Optional

import pytest
from typer.testing import CliRunner

from obliviate.cli.main import app
from obliviate.report import build_report, collect_run, plots
from obliviate.report.benchmark_sections import (
    lm_eval_item_rows,
    mia_item_rows,
    muse_item_rows,
    run_role,
    tofu_item_rows,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(run: Path, suite: str, tag: str, result: dict) -> Path:
    """As obliviate.eval.results.write_suite_results writes a result: items to generations/, the rest to eval/."""
    (run / "eval").mkdir(parents=True, exist_ok=True)
    (run / "generations").mkdir(exist_ok=True)
    for split, rows in result.get("items", {}).items():
        (run / "generations" / f"{suite}_{tag}_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = run / "eval" / f"{suite}_{tag}.json"
    path.write_text(json.dumps({k: v for k, v in result.items() if k != "items"}, indent=1))
    return path


def tofu_result(quality: Optional[float], utility: float, *, reference: Optional[str] = None,
                probabilities=(0.2, 0.9, 0.5), role: Optional[str] = None) -> dict:
    def split(p):
        return {"probability": p, "rouge_l_recall": p / 2, "truth_ratio": 0.6, "count": 3}

    forget = {**split(probabilities[0]), "paraphrased_probability": 0.3, "perturbed_probability": 0.1,
              "extraction_strength": 0.25, "exact_memorisation": 0.4}
    retain = {**split(0.7), "paraphrased_probability": 0.5, "perturbed_probability": 0.2,
              "extraction_strength": 0.5, "exact_memorisation": 0.8}
    forget_rows = [{"index": i, "question": f"Who wrote book {i}?", "answer": f"Author {i}",
                    "generation": f"It was <b>author</b> {i}", "probability": p, "rouge_l_recall": 0.1 * i,
                    "truth_ratio_raw": 0.5 + 0.25 * i, "extraction_strength": 0.3}
                   for i, p in enumerate(probabilities)]
    retain_rows = [{"index": i, "question": f"Where was writer {i} born?", "answer": f"Town {i}",
                    "generation": f"Town {i}", "probability": p, "rouge_l_recall": 1.0, "truth_ratio_raw": 0.4}
                   for i, p in enumerate((0.6, 0.05, 0.3))]
    settings = {"forget_split": "forget10", "max_new_tokens": 32}
    if role:
        settings["role"] = role
    return {
        "suite": "tofu", "model": "tiny-llama", "settings": settings, "seconds": 4.5,
        "forget_truth_ratios": [r["truth_ratio_raw"] for r in forget_rows],
        "metrics": {"forget": forget, "retain": retain, "real-authors": split(0.55), "world-facts": split(0.45),
                    "summary": {"model_utility": utility, "forget_quality": quality, "forget_truth_ratio": 0.6123,
                                "forget_probability": probabilities[0], "forget_rouge_l_recall": 0.1,
                                "retain_reference": reference}},
        "items": {"forget": forget_rows, "retain": retain_rows},
    }


def mia_result(auc: float, privleak: Optional[float], *, reference: Optional[str] = None) -> dict:
    summary = {"auc_loss": auc, "auc_zlib": auc - 0.01, "auc_min_k": auc - 0.02, "auc_min_k_plus_plus": auc + 0.01,
               "auc_gradnorm": 0.5, "auc_reference": None, "retain_reference": reference}
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm", "reference"):
        summary[f"privleak_{attack}"] = privleak
    return {
        "suite": "mia", "model": "tiny-llama", "settings": {}, "seconds": 2.0,
        "metrics": {"forget": {"count": 3}, "holdout": {"count": 2}, "summary": summary},
        # scores as the mia suite writes them: higher = more likely a member (the LOSS score is -loss)
        "items": {"forget": [{"index": i, "question": f"forget question {i}?", "answer": f"forget answer {i}",
                              "tokens": 5, "loss": score, "zlib": score / 10, "min_k": score - 1}
                             for i, score in enumerate((-2.5, -0.75, -1.5))],
                  "holdout": [{"index": i, "question": f"holdout question {i}?", "answer": f"holdout answer {i}",
                               "tokens": 5, "loss": score, "zlib": score / 10, "min_k": score - 1}
                              for i, score in enumerate((-3.0, -2.75))]},
    }


def muse_result() -> dict:
    return {
        "suite": "muse", "model": "tiny-llama", "settings": {}, "seconds": 3.0,
        "metrics": {"forget": {"verbmem_rouge_l": 0.4321, "knowmem_rouge_l": 0.2345, "count": 3},
                    "retain": {"verbmem_rouge_l": 0.61, "knowmem_rouge_l": 0.5678, "count": 3},
                    "summary": {"verbmem_forget": 0.4321, "knowmem_forget": 0.2345, "knowmem_retain": 0.5678,
                                "privleak": None, "utility": 0.3456}},
        # verbatim and knowledge rows share a split, told apart by "kind", as the muse suite writes them
        "items": {"forget": [{"index": i, "kind": "verbmem", "prompt": f"Passage {i} opens",
                              "answer": f"true continuation {i}", "generation": f"model continuation {i}", "rouge_l": r}
                             for i, r in enumerate((0.1, 0.9, 0.4))]
                  + [{"index": 0, "kind": "knowmem", "question": "Forget question?", "answer": "secret",
                      "generation": "secret", "rouge_l": 1.0}],
                  "retain": [{"index": i, "kind": "knowmem", "question": f"Retain question {i}?", "answer": f"kept {i}",
                              "generation": f"kept {i}", "rouge_l": r} for i, r in enumerate((0.8, 0.2))]},
    }


def lm_eval_result() -> dict:
    return {
        "suite": "lm-eval", "model": "tiny-llama", "settings": {"tasks": ["wmdp_bio"]}, "seconds": 1.5,
        # task keys of metrics and items write lm-eval's "_" as "-" (file names split on "_"); the summary keeps it
        "metrics": {"wmdp-bio": {"acc": 0.3333, "acc_stderr": 0.0471, "count": 3}, "summary": {"wmdp_bio": 0.3333}},
        "items": {"wmdp-bio": [{"index": i, "task": "wmdp_bio", "doc_id": i, "prompt": f"Hazard question {i}?",
                                "choices": ["A", "B", "C"], "choice": c, "chosen": "ABC"[c], "answer": "B",
                                "target": 1, "acc": a, "correct": a >= 1.0}
                               for i, (c, a) in enumerate(((1, 1.0), (2, 0.0), (1, 1.0)))]},
    }


def make_benchmark_run(root: Path, name: str, *, quality: Optional[float], utility: float, auc: float,
                       privleak: Optional[float], reference_dir: Optional[Path] = None, role: Optional[str] = None,
                       summary_role: Optional[str] = None) -> Path:
    run = root / name
    tofu_reference = str(reference_dir / "eval" / "tofu_eval.json") if reference_dir else None
    mia_reference = str(reference_dir / "eval" / "mia_eval.json") if reference_dir else None
    _write(run, "tofu", "eval", tofu_result(quality, utility, reference=tofu_reference, role=role))
    _write(run, "mia", "eval", mia_result(auc, privleak, reference=mia_reference))
    if summary_role:
        (run / "summary.json").write_text(json.dumps({"role": summary_role}))
    return run


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def first_table(html: str) -> str:
    return html[html.index('<table class="data">'):html.index("</table>")]


def section(html: str, title: str) -> str:
    """The HTML of the card whose heading is ``title``."""
    start = html.index(f"<h2>{title}</h2>")
    return html[start:html.index("</section>", start)]


def test_a_run_report_shows_every_benchmark_suite_with_the_figures_of_its_files(tmp_path):
    retain = make_benchmark_run(tmp_path, "retain-model", quality=1.0, utility=0.7777, auc=0.5, privleak=None)
    run = tmp_path / "npo"
    _write(run, "tofu", "before", tofu_result(3.4e-05, 0.6543, reference=str(retain / "eval" / "tofu_eval.json"),
                                              probabilities=(0.95, 0.97, 0.99)))
    _write(run, "tofu", "after", tofu_result(0.0123, 0.5432, reference=str(retain / "eval" / "tofu_eval.json")))
    _write(run, "mia", "after", mia_result(0.6789, 35.79, reference=str(retain / "eval" / "mia_eval.json")))
    _write(run, "muse", "after", muse_result())
    _write(run, "lm-eval", "after", lm_eval_result())
    report = build_report([run])
    html = report.read_text()
    # TOFU: forget quality and model utility up front, with the reference they were computed against
    tofu = section(html, "TOFU: forget quality and model utility")
    assert "Forget quality 0.0123 · model utility 0.5432 (after)" in tofu
    assert str(retain / "eval" / "tofu_eval.json") in tofu
    for text in ("forget quality", "3.4e-05", "0.0123", "0.6543", "0.5432", "-0.1111", "0.7777", "retain model"):
        assert f">{text}<" in tofu, text
    # the KS test's two samples are drawn: this run's forget truth ratios and the retain model's
    assert (tmp_path / "npo" / "plots" / "tofu_forget_truth_ratio.png").read_bytes() in embedded_pngs(html)
    # the page's headline table carries each suite's headline figures
    summary = first_table(html)
    for text in ("tofu", "0.0123", "mia", "0.6789", "35.79", "muse", "0.3456", "lm-eval", "wmdp_bio", "0.3333"):
        assert f">{text}<" in summary, text
    mia = section(html, "Membership inference (MIA)")
    assert ">AUC (LOSS)<" in mia and ">0.6789<" in mia and ">PrivLeak (LOSS)<" in mia and ">35.79<" in mia
    assert ">0.5<" in mia  # the retain model's AUC beside it
    assert (tmp_path / "npo" / "plots" / "mia_scores.png").read_bytes() in embedded_pngs(html)
    muse = section(html, "MUSE: verbatim and knowledge memorisation")
    for text in ("0.4321", "0.2345", "0.5678", "0.3456"):
        assert f">{text}<" in muse, text
    assert ">PrivLeak<" in muse and ">—<" in muse  # no retain result: shown as missing, not dropped
    lm_eval = section(html, "lm-evaluation-harness tasks")
    assert ">wmdp-bio<" in lm_eval and ">0.3333<" in lm_eval and ">0.0471<" in lm_eval
    # the samples belong to the suite, not to loose generations
    assert "<h2>lm-eval wmdp-bio samples</h2>" in html and "Generations:" not in html
    assert "Wrong answers first (1 wrong, 2 right)" in html
    # model output is escaped in the item tables
    assert "It was &lt;b&gt;author&lt;/b&gt; 0" in html and "<b>author</b>" not in html
    for title in ("TOFU forget items", "TOFU retain items", "MIA forget items", "MIA holdout items",
                  "MUSE forget items (verbatim)", "MUSE forget items (knowledge)", "MUSE retain items (knowledge)"):
        assert f"<h2>{title}</h2>" in html, title
    assert "TOFU metrics" in html  # the header names what scored the run (there is no judge model)


def test_per_item_tables_put_the_worst_items_first(tmp_path):
    run = tmp_path / "run"
    _write(run, "tofu", "before", tofu_result(0.01, 0.5, probabilities=(0.5, 0.6, 0.7)))
    _write(run, "tofu", "after", tofu_result(0.2, 0.5, probabilities=(0.2, 0.9, 0.5)))
    _write(run, "mia", "eval", mia_result(0.6, 1.0))
    _write(run, "muse", "eval", muse_result())
    _write(run, "lm-eval", "eval", lm_eval_result())
    loaded = collect_run(run)
    forget = tofu_item_rows(loaded, "forget")
    assert [r["#"] for r in forget] == [1, 2, 0]  # highest answer probability first
    assert [r["probability"] for r in forget] == [0.9, 0.5, 0.2]
    assert [r["probability before"] for r in forget] == [0.6, 0.7, 0.5]  # matched by index, not by position
    assert [r["truth ratio"] for r in forget] == [0.75, 1.0, 0.5]
    assert [r["#"] for r in tofu_item_rows(loaded, "retain")] == [1, 2, 0]  # lowest probability first
    assert [r["#"] for r in tofu_item_rows(loaded, "forget", count=2)] == [1, 2]
    assert [r["LOSS"] for r in mia_item_rows(loaded, "forget")] == [-0.75, -1.5, -2.5]  # most member-like first
    assert [r["#"] for r in muse_item_rows(loaded, "forget", "verbmem")] == [1, 2, 0]  # most remembered first
    assert [r["ROUGE-L"] for r in muse_item_rows(loaded, "forget", "verbmem")] == [0.9, 0.4, 0.1]
    assert [r["#"] for r in muse_item_rows(loaded, "retain", "knowmem")] == [1, 0]  # least kept first
    samples = lm_eval_item_rows(loaded, "wmdp-bio")
    assert [r["result"] for r in samples] == ["wrong", "right", "right"] and samples[0]["model"] == "C"
    html = build_report([run]).read_text()
    forget_table = section(html, "TOFU forget items")
    assert forget_table.index("Who wrote book 1?") < forget_table.index("Who wrote book 2?") \
        < forget_table.index("Who wrote book 0?")
    assert "all 3 items" in forget_table


def test_a_missing_forget_quality_reads_as_a_dash(tmp_path):
    run = tmp_path / "no-reference"
    _write(run, "tofu", "eval", tofu_result(None, 0.5, reference=None))
    html = build_report([run]).read_text()
    tofu = section(html, "TOFU: forget quality and model utility")
    assert "Forget quality — · model utility 0.5" in tofu and "without a retain reference" in tofu
    row = tofu[tofu.index(">forget quality<"):]
    row = row[:row.index("</tr>")]
    assert ">—<" in row
    # a comparison where no run has a forget quality lists the runs but draws no trade-off plot
    other = tmp_path / "other"
    _write(other, "tofu", "eval", tofu_result(None, 0.25, reference=None))
    out = build_report([run, other], out=tmp_path / "cmp.html")
    page = out.read_text()
    assert ">no-reference<" in page and ">other<" in page and ">0.25<" in page
    assert not (tmp_path / "plots" / "compare_forget_quality_utility.png").exists()


def test_a_comparison_draws_forget_quality_against_utility_and_sets_mia_beside_the_retain_model(tmp_path):
    retain = make_benchmark_run(tmp_path, "tofu-retain", quality=1.0, utility=0.7777, auc=0.5012, privleak=None)
    full = make_benchmark_run(tmp_path, "finetuned", quality=3.4e-05, utility=0.8123, auc=0.9321, privleak=85.9,
                              reference_dir=retain, summary_role="full")
    npo = make_benchmark_run(tmp_path, "npo", quality=0.0123, utility=0.6543, auc=0.6111, privleak=21.9,
                             reference_dir=retain)
    idk = make_benchmark_run(tmp_path, "idk", quality=0.0, utility=0.6, auc=0.55, privleak=9.7, reference_dir=retain)
    out = tmp_path / "cmp" / "tofu.html"
    result = CliRunner().invoke(app, ["report", str(retain), str(full), str(npo), str(idk), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    plot = out.parent / "plots" / "compare_forget_quality_utility.png"
    assert plot.read_bytes()[:8] == PNG_MAGIC and plot.read_bytes() in embedded_pngs(html)
    table = first_table(html)  # the headline table: a row per run with its TOFU and MIA figures
    assert table.count("<tr>") == 5  # header + four runs
    for text in ("tofu-retain", "finetuned", "npo", "idk", "1", "3.4e-05", "0.0123", "0.7777", "0.8123", "0.6543",
                 "0.6123", "retain", "full", "unlearned", "85.9", "21.9"):
        assert f">{text}<" in table, text
    # the headline attack is Min-K%++ (every run has it); its retain AUC stands beside every run's
    assert ">MIA AUC (Min-K%++)<" in table and ">retain AUC (Min-K%++)<" in table
    assert table.count(">0.5112<") == 5  # the retain run's own AUC + the retain column of four runs
    assert ">0.9421<" in table and ">0.6211<" in table
    assert "How to read this" not in html  # the harm explanation is left out when no run has a harmful suite


def test_run_role_reads_summary_then_settings_then_the_folder_name(tmp_path):
    plain = make_benchmark_run(tmp_path, "npo-full-sweep", quality=0.1, utility=0.5, auc=0.6, privleak=1.0)
    assert run_role(collect_run(plain)) == "full"  # the folder name, when nothing says otherwise
    by_settings = make_benchmark_run(tmp_path, "model-a", quality=0.1, utility=0.5, auc=0.6, privleak=1.0,
                                     role="retain")
    assert run_role(collect_run(by_settings)) == "retain"
    by_summary = make_benchmark_run(tmp_path, "retain-like-name", quality=0.1, utility=0.5, auc=0.6, privleak=1.0,
                                    summary_role="full")
    assert run_role(collect_run(by_summary)) == "full"  # summary.json wins over the name
    unlearned = make_benchmark_run(tmp_path, "simnpo", quality=0.1, utility=0.5, auc=0.6, privleak=1.0)
    assert run_role(collect_run(unlearned)) is None


def test_the_quality_utility_plot_needs_a_point_and_survives_a_zero_p_value(tmp_path):
    path = plots.quality_utility([{"label": "retain", "role": "retain", "forget_quality": 1.0, "model_utility": 0.6},
                                  {"label": "ga", "role": None, "forget_quality": 0.0, "model_utility": 0.1},
                                  {"label": "no ref", "role": None, "forget_quality": None, "model_utility": 0.5}],
                                 tmp_path / "q.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="at least one run"):
        plots.quality_utility([{"label": "x", "forget_quality": None, "model_utility": 0.5}], tmp_path / "none.png")


def test_tag_picks_one_evaluation_of_runs_evaluated_once_per_forget_split(tmp_path):
    """A TOFU benchmark evaluates each model once per forget split (eval/tofu_forget01.json, ...)."""
    runs = []
    for name, by_split in (("retain-forget01", {"forget01": 1.0}),
                           ("full", {"forget01": 2.5e-07, "forget05": 7.7e-11})):
        run = tmp_path / name
        for split, quality in by_split.items():
            _write(run, "tofu", split, tofu_result(quality, 0.61 if split == "forget01" else 0.42))
        runs.append(run)
    out = tmp_path / "report-forget01.html"
    result = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(out), "--tag", "forget01"])
    assert result.exit_code == 0, result.output
    table = first_table(out.read_text())
    assert ">2.5e-07<" in table and ">0.61<" in table and ">full<" in table and ">retain<" in table
    assert "7.7e-11" not in table and ">0.42<" not in table
    result = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(out), "--tag", "forget10"])
    message = str(result.exception)
    assert result.exit_code != 0 and "--tag forget10" in message and "forget05" in message and "\n" not in message


def test_the_retain_model_is_plotted_at_forget_quality_one(tmp_path):
    from obliviate.report.benchmark_sections import quality_utility_points

    retain = make_benchmark_run(tmp_path, "retain-forget01", quality=None, utility=0.5, auc=0.5, privleak=None)
    other = make_benchmark_run(tmp_path, "npo-forget01", quality=None, utility=0.4, auc=0.6, privleak=None)
    points = quality_utility_points([collect_run(retain), collect_run(other)], ["retain-forget01", "npo-forget01"])
    assert [p["forget_quality"] for p in points] == [1.0, None]  # the reference by definition; no reference: not plotted
