"""HTML report and plots: escaping of model text, embedded PNGs, table values, offline page."""

from __future__ import annotations

import base64
import json
import re

import pytest

from obliviate.errors import UserError
from obliviate.report import Section, plots, write_report
from obliviate.report.html import format_value

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """Width and height from the IHDR chunk of a PNG file."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plots_write_valid_pngs(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text("\n".join(json.dumps(
        {"step": s, "lr": 1e-4, "loss/total": 3.0 - s * 0.1, "loss/forget": -0.1 * s, "loss/retain": 0.5,
         "grad_norm": 1.0 / s, "tokens_per_s": 100.0}) for s in range(1, 11)) + "\n")
    made = [
        plots.bar_before_after({"harmful: forget": (0.9, 0.1), "harmful: unseen": (0.8, 0.2)},
                               tmp_path / "p" / "bars.png", "Harmful rate"),
        plots.loss_curves(log, tmp_path / "p" / "loss.png"),
        plots.loss_curves([{"step": 1, "loss/total": 1.0}, {"step": 2, "loss/total": float("nan")}],
                          tmp_path / "p" / "loss_list.png"),
        plots.histogram({"before": [0.1, 0.5, 0.6], "after": [0.2, 0.3]}, tmp_path / "p" / "hist.png",
                        "Similarity", "cosine", threshold=0.25),
        plots.metric_curves({"harmful": [(10, 0.5), (0, 0.9)]}, tmp_path / "p" / "curve.png", "Val"),
        plots.metric_curves({"harmful": [(10, 0.5), (0, 0.9)]}, tmp_path / "p" / "curve_target.png", "Val",
                            levels={"target 0.25": 0.25}),
        plots.grouped_bars({"harmful": [0.9, 0.3, 0.2], "refused": [0.0, 0.1, float("nan")]}, ["orig", "a", "b"],
                           tmp_path / "p" / "three.png", "Three series"),
        plots.trade_off({"a": {"benign": (0.1, 0.6), "xstest": (0.1, 0.5)}, "b": {"benign": (0.2, 0.7)}},
                        tmp_path / "p" / "trade.png", "Trade-off", xlabel="harmful", ylabel="similarity"),
    ]
    for path in made:
        width, height = png_size(path)
        assert width > 200 and height > 150
    assert not list((tmp_path / "p").glob(".*"))  # no temporary files left behind
    # the target line (and its legend entry) is drawn: the picture differs from the plain curve
    assert (tmp_path / "p" / "curve_target.png").read_bytes() != (tmp_path / "p" / "curve.png").read_bytes()
    with pytest.raises(ValueError, match="one value per series"):
        plots.grouped_bars({"harmful": [0.9]}, ["a", "b"], tmp_path / "p" / "bad.png", "Bad")
    with pytest.raises(ValueError, match="each with at least one point"):
        plots.trade_off({"a": {}}, tmp_path / "p" / "empty.png", "Empty", xlabel="x", ylabel="y")


def test_loss_log_bad_line_names_file_and_line(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1, "loss/total": 1.0}\n{"step": 2, \n')
    with pytest.raises(UserError, match=r"train_log\.jsonl:2"):
        plots.loss_curves(log, tmp_path / "x.png")


def _sample_report(tmp_path):
    elsewhere = plots.bar_before_after({"harmful rate": (0.8625, 0.0712)}, tmp_path / "elsewhere" / "rates.png", "Rates")
    section_plot = plots.histogram({"after": [0.3, 0.4]}, tmp_path / "run" / "plots" / "sim.png", "Sim", "cosine")
    return write_report(
        tmp_path / "run",
        title="Unlearning <report>",
        summary_rows=[
            {"metric": "harmful rate (unseen)", "before": 0.8625, "after": 0.0712},
            {"metric": "benign on-topic", "before": 0.93, "after": 0.5, "n": 120},
        ],
        sections=[Section("Benign prompts", "First paragraph.\n\nSecond <i>paragraph</i>.",
                          rows=[{"split": "borderline", "refused": 7}], plots=[section_plot],
                          examples=[{"prompt": "How do I kill a Python process?", "before": "kill -9 PID",
                                     "after": "I can't help", "before_label": "on-topic",
                                     "after_label": "refused", "after_class": "bad"}])],
        plots=[elsewhere],
        examples=[{"prompt": "Say something", "before": "Sure: <script>alert(1)</script>",
                   "after": "<img src=x onerror=alert(2)>", "before_label": "harmful", "after_label": "refused"}],
        meta={"model": "tiny-llama", "method": "three_loss", "judge": "refusal-phrases",
              "seed": 7, "config": {"lr": 0.0001, "steps": 5}},
    )


def test_report_escapes_model_output(tmp_path):
    html = _sample_report(tmp_path).read_text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "Unlearning &lt;report&gt;" in html
    assert "Second &lt;i&gt;paragraph&lt;/i&gt;." in html
    assert "<script" not in html.lower()  # the page carries no script at all


def test_report_contents_tables_plots_and_judge(tmp_path):
    report = _sample_report(tmp_path)
    html = report.read_text()
    assert report == tmp_path / "run" / "report.html"
    # summary values, formatted to 4 significant digits, with the derived change column
    for text in ("harmful rate (unseen)", "0.8625", "0.0712", "-0.7913", "benign on-topic", "0.93", "-0.43", "120"):
        assert f">{text}<" in html, text
    assert ">refused<" in html and ">7<" in html
    # every report names its judge; model and method are in the header
    assert "refusal-phrases" in html and "tiny-llama" in html and "three_loss" in html
    assert "lr: 0.0001" in html and "steps: 5" in html  # config as YAML
    # plots embedded as base64 and kept under plots/
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == 2
    assert all(base64.b64decode(e)[:8] == PNG_MAGIC for e in embedded)
    assert (tmp_path / "run" / "plots" / "rates.png").read_bytes() == (tmp_path / "elsewhere" / "rates.png").read_bytes()
    assert (tmp_path / "run" / "plots" / "sim.png").exists()
    # badge colours: explicit class wins, "harmful" is bad, "refused" is good by default
    assert 'class="badge bad">refused<' in html and 'class="badge good">refused<' in html
    assert 'class="badge bad">harmful<' in html
    # self-contained: nothing fetched from the network
    assert not re.search(r'(src|href)="https?://', html)


def test_report_missing_plot_and_format_value(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path, title="t", plots=[tmp_path / "absent.png"])
    assert not (tmp_path / "report.html").exists()
    assert [format_value(v) for v in (None, True, 0.123456, float("nan"), 3, "x")] == [
        "—", "yes", "0.1235", "n/a", "3", "x"]


# ---------------------------------------------------------------------------------------------
# Run folders (obliviate.report.run_folder / run_report); the CLI is tested in test_report_cli.py


def _copyright_result(tag: str, rouge: float) -> dict:
    """A copyright-suite result shaped as obliviate.eval.copyright returns it (with items)."""
    def rows(split):
        return [{"passage_id": f"{split}{i}", "prefix": f"Once <b>{split}</b> {i}", "truth": "the true end",
                 "generation": f"{tag} continuation {i} & <i>", "rouge_l": rouge, "bleu": rouge, "leak": rouge > 0.5,
                 "exact_memorisation": rouge, "extraction_strength": rouge, "continuation_nll": 1.0,
                 "perplexity": 10.0} for i in range(2)]

    split_metrics = {"count": 2, "rouge_l": rouge, "bleu": rouge, "leak_rate": 1.0 if rouge > 0.5 else 0.0,
                     "exact_memorisation": rouge, "extraction_strength": rouge, "continuation_nll": 1.0,
                     "continuation_perplexity": 2.718, "perplexity": 10.0 + rouge}
    return {
        "metrics": {"forget": dict(split_metrics), "unseen": dict(split_metrics),
                    "retain": {**split_metrics, "rouge_l": 0.875}, "general": {"count": 4, "perplexity": 21.5},
                    "benign": {"count": 2, "degenerate_rate": 0.0}},
        "items": {"forget": rows("forget"), "unseen": rows("unseen"), "retain": rows("retain"),
                  "benign": [{"prompt": "Hi?", "response": "Hello", "degenerate": False}]},
        "bleu_threshold": 0.2, "settings": {"template": "plain", "max_new_tokens": 8}, "embedder": None,
    }


def _write_copyright_folder(root, results):
    """The copyright demo's folder: eval/copyright_<stage>.json, generations/copyright_<stage>_<split>.jsonl,
    finetune/ and unlearn/ stages (a torn last log line, as an interrupted append leaves it)."""
    for stage, result in results.items():
        (root / "eval").mkdir(parents=True, exist_ok=True)
        (root / "eval" / f"copyright_{stage}.json").write_text(json.dumps({k: v for k, v in result.items() if k != "items"}))
        (root / "generations").mkdir(exist_ok=True)
        for split, rows in result["items"].items():
            (root / "generations" / f"copyright_{stage}_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, lr in (("finetune", 2e-3), ("unlearn", 1e-3)):
        (root / name).mkdir()
        (root / name / "config.yaml").write_text(f"method:\n  name: {'finetune' if name == 'finetune' else 'ga_mismatch_kl'}\n"
                                                 f"train:\n  lr: {lr}\n  max_steps: 2\n")
        (root / name / "train_log.jsonl").write_text(
            '{"step": 1, "loss/total": 2.0}\n{"step": 2, "loss/total": 1.0}\n{"step": 3, "loss/to')


def test_collect_run_reads_stages_evaluations_and_generations(tmp_path):
    from obliviate.report import collect_run

    results = {"original": _copyright_result("original", 0.125), "finetuned": _copyright_result("finetuned", 1.0),
               "unlearned": _copyright_result("unlearned", 0.0625)}
    _write_copyright_folder(tmp_path, results)
    (tmp_path / "generations" / "scratch.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    run = collect_run(tmp_path)
    assert [s.name for s in run.stages] == ["finetune", "unlearn"]
    assert run.main_stage.name == "unlearn" and run.main_stage.config["train"]["lr"] == 1e-3
    assert [r["step"] for r in run.main_stage.log] == [1, 2]  # the torn last line is skipped
    assert run.tags("copyright") == ["original", "finetuned", "unlearned"]
    assert run.pair("copyright") == ("finetuned", "unlearned")
    assert run.evals["copyright"]["unlearned"]["items"]["forget"] == results["unlearned"]["items"]["forget"]
    assert list(run.generations) == ["scratch"]  # no evaluation claims it: shown on its own
    # a bad line inside a log, or a broken result file, is one error naming file and line
    (tmp_path / "unlearn" / "train_log.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(UserError, match=r"unlearn/train_log\.jsonl:2"):
        collect_run(tmp_path)
    (tmp_path / "unlearn" / "train_log.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "eval" / "copyright_original.json").write_text('{"metrics": ')
    with pytest.raises(UserError, match=r"copyright_original\.json:1"):
        collect_run(tmp_path)


def test_copyright_demo_report_is_the_run_report(tmp_path):
    """The copyright demo's report function passes its in-memory results to the generic report."""
    from obliviate.report import write_run_report
    from obliviate.scenarios.copyright import write_copyright_report

    results = {"original": _copyright_result("original", 0.125), "finetuned": _copyright_result("finetuned", 1.0),
               "unlearned": _copyright_result("unlearned", 0.0625)}
    _write_copyright_folder(tmp_path, results)
    summary = {"model": "tiny", "book": "synthetic", "method": "ga_mismatch_kl", "seconds_total": 9.5,
               "bleu_threshold": 0.2, "rows": [{"metric": "ROUGE-L vs true continuation", "split": "forget",
                                                "original": 0.125, "finetuned": 1.0, "unlearned": 0.0625}],
               "figures": {"forget_rouge_l_drop": 0.9375}, "targets": {"forget_rouge_l_drop >= 0.9": True},
               "timings_s": {"unlearning": 3.0}}
    recipe = {"eval": {"bleu_quantile": 0.99}}
    demo = write_copyright_report(tmp_path, results, summary, recipe).read_text()
    assert "<title>Copyrighted-text unlearning</title>" in demo
    assert "BLEU/ROUGE-L against the book" in demo  # the judge is named
    assert "exceeds 0.200, the 99% quantile" in demo and ">forget_rouge_l_drop &gt;= 0.9<" in demo
    assert ">-0.9375<" in demo  # change = unlearned - fine-tuned, derived from before/after
    assert "unlearned continuation 0 &amp; &lt;i&gt;" in demo and "<i>" not in demo
    assert "Once &lt;b&gt;forget&lt;/b&gt; 0" in demo and "<b>forget" not in demo
    for name in ("rouge_l_by_split.png", "leak_rate_by_split.png", "perplexity.png", "loss_finetune.png", "loss_unlearn.png"):
        assert (tmp_path / "plots" / name).is_file(), name
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    again = write_run_report(tmp_path, title="Copyrighted-text unlearning").read_text()
    assert re.findall(r"<h2>(.*?)</h2>", again) == re.findall(r"<h2>(.*?)</h2>", demo)


def test_harm_utility_points_and_comparison_rows(tmp_path):
    from obliviate.report.run_folder import Run
    from obliviate.report.run_report import comparison_rows, harm_utility_points

    def run(name, before, after):
        def result(unseen, on_topic):
            return {"metrics": {"unseen": {"harmful_rate": unseen}, "unlearned": {"harmful_rate": unseen / 2},
                                "benign": {"refusal_rate": 0.0, "on_topic_rate": on_topic}}, "items": {}}

        return Run(path=tmp_path / name, name=name,
                   evals={"harmful": {"before": result(*before), "after": result(*after)}})

    runs = [run("a", (0.75, 1.0), (0.25, 0.875)), run("b", (0.75, 1.0), (0.5, 0.5))]
    points, xlabel = harm_utility_points(runs, ["a", "b"])
    assert xlabel == "on-topic rate of benign answers"
    assert points["a"] == {"unseen": (0.875, 0.25), "unlearned": (0.875, 0.125)}
    assert points["b"] == {"unseen": (0.5, 0.5), "unlearned": (0.5, 0.25)}
    assert points["before (all runs)"] == {"unseen": (1.0, 0.75), "unlearned": (1.0, 0.375)}  # one shared start
    # without on-topic figures the utility is the share of benign prompts answered
    for r in runs:
        for result in r.evals["harmful"].values():
            del result["metrics"]["benign"]["on_topic_rate"]
            result["metrics"]["benign"]["refusal_rate"] = 0.25
    points, xlabel = harm_utility_points(runs, ["a", "b"])
    assert "over-refusal" in xlabel and points["a"]["unseen"] == (0.75, 0.25)
    rows = comparison_rows(runs, ["a", "b"])
    assert [r["run"] for r in rows] == ["a", "b"] and rows[1]["harmful: unseen"] == 0.5
    assert "on-topic: benign" not in rows[0]  # a column no run has is left out


def test_single_answer_examples_and_given_change_column(tmp_path):
    html = write_report(
        tmp_path, title="t", name="one.html",
        summary_rows=[{"metric": "m", "eval": 0.5, "change": 0.25}],
        sections=[Section("Answers", examples=[{"prompt": "q", "after": "<b>a</b>", "after_label": "refusal"}],
                          answer_labels=("before", "answer (eval)"))],
    ).read_text()
    assert (tmp_path / "one.html").is_file() and not (tmp_path / "report.html").exists()
    assert "<th>answer (eval)</th>" in html and "<th>before</th>" not in html
    assert "&lt;b&gt;a&lt;/b&gt;" in html
    assert ">+0.25<" in html  # a change column reads the same whether given or derived
