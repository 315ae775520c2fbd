"""``obliviate report``: run folders written by hand (as the stages write them) become one HTML page."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from obliviate.cli.main import app
from obliviate.errors import UserError

SCRIPT = "Sure & here it is: <script>alert(1)</script>"
SPLITS = ("unlearned", "unseen", "benign")


def _rows(tag: str, split: str, n: int = 3) -> list[dict]:
    """Per-item rows shaped as obliviate.eval.harmful writes them to generations/<tag>_<split>.jsonl."""
    harmful_prompts = split != "benign"
    rows = []
    for i in range(n):
        complied = tag == "before" and harmful_prompts
        response = SCRIPT if (split == "unseen" and i == 0) else (
            f"Step {i}: here is how" if complied else f"I can't help with that ({split} {i})")
        if split == "benign":
            response = f"A friendly answer {i} & more"
        row = {"prompt": f"{split} prompt {i}?", "response": response, "harmful": complied,
               "score": 1.0 if complied else 0.0, "label": "complied" if complied else "refusal",
               "refusal": not complied and split != "benign", "degenerate": False, "diversity": 0.8,
               "perplexity": 3.0, "on_topic_cosine": 0.6 if split == "benign" else 0.1}
        if split == "benign" and tag == "after":
            row["original"] = f"A friendly answer {i}"
            row["similarity"] = 0.5 + 0.1 * i
        rows.append(row)
    return rows


def harmful_result(unseen: float, unlearned: float, refusal: float, on_topic: float, similarity: float | None) -> dict:
    benign = {"harmful_rate": 0.0, "refusal_rate": refusal, "degenerate_rate": 0.0, "diversity": 0.7,
              "perplexity_under_original": 3.25, "count": 3, "on_topic_rate": on_topic, "harmful_on_topic_rate": 0.0}
    if similarity is not None:
        benign["similarity_to_original"] = similarity
    return {
        "metrics": {
            "unlearned": {"harmful_rate": unlearned, "refusal_rate": 1 - unlearned, "degenerate_rate": 0.0,
                          "diversity": 0.8, "perplexity_under_original": 4.0, "count": 3},
            "unseen": {"harmful_rate": unseen, "refusal_rate": 1 - unseen, "degenerate_rate": 0.0,
                       "diversity": 0.8, "perplexity_under_original": 4.5, "count": 3},
            "benign": benign,
        },
        "judge": "refusal:test-judge",
        "on_topic": {"model": "all-MiniLM-L6-v2", "threshold": 0.25},
        "settings": {"max_new_tokens": 48, "batch_size": 16, "do_sample": False, "seed": 0},
    }


def make_run(root: Path, name: str, *, after_unseen: float = 0.0625, after_on_topic: float = 0.9,
             lr: float = 1e-4, gating: bool = False) -> Path:
    """A run folder as `obliviate unlearn` + `obliviate eval --tag before/after` leave it."""
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "generations").mkdir()
    config = {"run": {"name": name}, "model": {"name": "tiny-llama"}, "method": {"name": "ga_mismatch_kl"},
              "train": {"lr": lr, "max_steps": 4, "lora": {"enabled": True, "r": 8, "alpha": 16.0}}}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "env.json").write_text(json.dumps({"obliviate": "0.1.0", "device": "test-cpu", "precision": "fp32",
                                              "seed": 0, "torch": "2.x", "git_sha": "abc123"}))
    log = [{"step": s, "epoch": s / 4, "lr": lr, "loss/total": 3.0 - 0.5 * s, "loss/forget": -0.25 * s,
            "loss/retain_kl": 0.01 * s, "grad_norm": 2.0 / s, "tokens": 100, "tokens_per_s": 50.0, "elapsed_s": s}
           for s in range(1, 5)]
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (run / "train_summary.json").write_text(json.dumps({
        "method": "ga_mismatch_kl", "steps": 4, "total_steps": 4, "stop_reason": "max_steps", "seconds": 12.5,
        "tokens_per_s": 32.0, "peak_memory_mb": 321.0, "processes": 1, "lora": True}))
    results = {"before": harmful_result(0.8125, 0.875, 0.0, 1.0, None),
               "after": harmful_result(after_unseen, 0.125, 0.1875, after_on_topic, 0.6172)}
    for tag, result in results.items():
        (run / "eval" / f"harmful_{tag}.json").write_text(json.dumps(result, indent=2))
        for split in SPLITS:
            (run / "generations" / f"{tag}_{split}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in _rows(tag, split)))
    if gating:
        checks = [{"step": 0, "harmful_rate": 0.9, "degenerate_rate": 0.0, "similarity": 1.0, "utility_ok": True,
                   "labels": {"complied": 9, "refusal": 1}, "seconds": 1.0},
                  {"step": 2, "harmful_rate": 0.2, "degenerate_rate": 0.0, "similarity": 0.7, "utility_ok": True,
                   "labels": {"complied": 2, "refusal": 8}, "seconds": 1.0}]
        (run / "early_stopping.jsonl").write_text("".join(json.dumps(c) + "\n" for c in checks))
        (run / "early_stopping.json").write_text(json.dumps({
            "chosen_step": 2, "reason": "harmful rate 0.2 <= target 0.25", "judge": "refusal:test-judge",
            "config": {"target_rate": 0.25}, "checks": checks}))
        (run / "forget_gate.jsonl").write_text("".join(json.dumps(
            {"step": s, "active": a, "of": 8, "labels": {"complied": a}, "seconds": 0.5}) + "\n"
            for s, a in ((1, 6), (2, 3))))
    return run


def snapshot(folder: Path) -> dict[str, str]:
    """Digest of every file a report must leave alone (everything but the report and its plots)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "report.html" and "plots" not in p.parts}


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def first_table(html: str) -> str:
    return html[html.index('<table class="data">'):html.index("</table>")]


def test_report_of_one_run_escapes_model_output_and_shows_its_figures(tmp_path):
    run = make_run(tmp_path, "run-a", gating=True)
    before = snapshot(run)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    report = run / "report.html"
    assert result.output.strip() == str(report)
    html = report.read_text()
    # model output is escaped, never markup; the page carries no script at all
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html and "<script" not in html.lower()
    assert "Sure &amp; here it is" in html and "A friendly answer 0 &amp; more" in html
    # the headline table: before, after and the change of the unseen harmful rate
    summary = first_table(html)
    for text in ("harmful rate", "0.8125", "0.0625", "-0.75", "over-refusal rate", "0.1875", "0.6172"):
        assert f">{text}<" in summary, text
    # header: model, method, judge, steps, lr, LoRA from the config and the train summary
    for text in ("tiny-llama", "ga_mismatch_kl", "refusal:test-judge", "0.0001", "r 8, alpha 16.0", "test-cpu"):
        assert text in html, text
    # the training curves are drawn, kept under plots/ and embedded in the page
    curve = (run / "plots" / "loss_curves.png").read_bytes()
    pngs = embedded_pngs(html)
    assert curve in pngs
    assert (run / "plots" / "rates_before_after.png").read_bytes() in pngs
    assert (run / "plots" / "early_stopping.png").read_bytes() in pngs
    assert (run / "plots" / "forget_gate.png").read_bytes() in pngs
    # the gating records and the side-by-side answers are there
    assert "Chosen step: 2 (harmful rate 0.2 &lt;= target 0.25)" in html
    assert ">Forget gate<" in html and ">Held-out harmful prompts (unseen)<" in html
    assert 'class="badge bad">complied<' in html and 'class="badge good">refusal<' in html
    assert snapshot(run) == before  # the inputs are untouched
    # a second report replaces the first, atomically (no temporary file left behind)
    assert CliRunner().invoke(app, ["report", str(run), "--title", "Again <b>"]).exit_code == 0
    assert "Again &lt;b&gt;" in report.read_text()
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_report_of_two_runs_is_one_comparison_with_the_trade_off_plot(tmp_path):
    a = make_run(tmp_path, "lr-small", after_unseen=0.3125, after_on_topic=0.95)
    b = make_run(tmp_path, "lr-large", after_unseen=0.0625, after_on_topic=0.4375, lr=1e-3)
    inputs = {a: snapshot(a), b: snapshot(b)}
    out = tmp_path / "cmp" / "compare.html"
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(out), "--title", "lr sweep"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    html = out.read_text()
    assert "<title>lr sweep</title>" in html
    table = first_table(html)
    # one row per run, with the result's figures side by side
    assert table.count("<tr>") == 3  # header + two runs
    for text in ("lr-small", "lr-large", "0.3125", "0.0625", "0.95", "0.4375", "0.001"):
        assert f">{text}<" in table, text
    trade_off = out.parent / "plots" / "compare_harm_utility.png"
    assert trade_off.read_bytes() in embedded_pngs(html)
    assert not (a / "report.html").exists() and not (b / "report.html").exists()
    assert {a: snapshot(a), b: snapshot(b)} == inputs
    # several runs need --out; a non-HTML --out is refused before anything is read
    result = CliRunner().invoke(app, ["report", str(a), str(b)])
    assert isinstance(result.exception, UserError) and "--out" in str(result.exception)
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(a / "config.yaml")])
    assert isinstance(result.exception, UserError) and ".html" in str(result.exception)
    assert snapshot(a) == inputs[a]


def test_report_of_an_empty_folder_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["report", str(empty)])
    assert isinstance(result.exception, UserError)
    message = str(result.exception)
    assert "\n" not in message and str(empty) in message and "config.yaml" in message and "eval/" in message
    from obliviate.cli import main as cli

    monkeypatch.setattr(sys, "argv", ["obliviate", "report", str(empty)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert [line for line in err.strip().splitlines()] == [f"error: {message}"]
    assert list(empty.iterdir()) == []  # nothing written
    result = CliRunner().invoke(app, ["report", str(tmp_path / "absent")])
    assert isinstance(result.exception, UserError) and "absent" in str(result.exception)


def test_report_of_a_single_evaluation_shows_one_answer_column(tmp_path):
    """`obliviate eval --tag eval` into a folder: no before/after, so no change column and one answer."""
    run = tmp_path / "eval-only"
    (run / "eval").mkdir(parents=True)
    (run / "generations").mkdir()
    (run / "eval" / "harmful_eval.json").write_text(json.dumps(harmful_result(0.4375, 0.5, 0.0625, 0.8, None)))
    for split in SPLITS:
        (run / "generations" / f"eval_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows("after", split)))
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    html = (run / "report.html").read_text()
    summary = first_table(html)
    assert ">0.4375<" in summary and ">eval<" in summary and "change" not in summary
    assert "<th>answer (eval)</th>" in html and "<th>before</th>" not in html
    assert "&lt;script&gt;" in html and "<script>alert" not in html
    assert (run / "plots" / "rates.png").read_bytes() in embedded_pngs(html)


def test_demo_reports_are_the_run_report_of_their_folder(tmp_path):
    """The harmful demo's report function and `obliviate report` on its folder build the same page."""
    from obliviate.scenarios.harmful_report import write_harmful_report

    run = make_run(tmp_path, "demo")
    results = {}
    for tag in ("before", "after"):
        result = json.loads((run / "eval" / f"harmful_{tag}.json").read_text())
        result["items"] = {s: _rows(tag, s) for s in SPLITS}
        results[tag] = result
    summary = {
        "judge": "refusal:test-judge", "options": {"model": None, "method": "ga_mismatch_kl"}, "forget_set_size": 3,
        "unseen_harmful_reduction": 0.923,
        "rows": [{"metric": "harmful rate", "split": "unseen", "before": 0.8125, "after": 0.0625, "note": "headline"}],
        "timings_s": {"unlearning": 12.5},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    demo = write_harmful_report(run, results["before"], results["after"], summary,
                                yaml.safe_load((run / "config.yaml").read_text())).read_text()
    assert "<title>Harmful-response unlearning</title>" in demo
    assert "3 flagged dialogues" in demo and "92%" in demo and ">headline<" in demo and ">Timings (s)<" in demo
    assert "&lt;script&gt;alert(1)" in demo and "<script>alert" not in demo
    assert CliRunner().invoke(app, ["report", str(run), "--title", "Harmful-response unlearning"]).exit_code == 0
    again = (run / "report.html").read_text()

    def headings(page):
        return re.findall(r"<h2>(.*?)</h2>", page)

    assert headings(again) == headings(demo)
    assert first_table(again) == first_table(demo)
