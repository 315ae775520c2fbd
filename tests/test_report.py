"""HTML report and plots: escaping of model text, embedded PNGs, table values, offline page."""

from __future__ import annotations

import base64
import json
import re

import pytest

from obliviate.errors import UserError
from obliviate.report import Section, write_report
from obliviate.report import plots
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
