"""``report.html`` for any run folder, and one comparison page for several (``obliviate report``).

One run: its configuration and environment, training curves, early-stopping and forget-gate
checks, every evaluation (headline table, plots, all figures, example answers, escaped) and a
demo's ``summary.json``. Several runs: one table with a row per run and the harm-against-utility
trade-off plot. The demos build their reports with the same functions, so rerunning
``obliviate report`` on a demo folder rebuilds the demo's page.

Only the report and its ``plots/*.png`` are written; a run's inputs are never touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from obliviate.errors import UserError
from obliviate.report.benchmark_sections import (
    BENCHMARK_COMPARISON_TEXT,
    BENCHMARK_JUDGE,
    BENCHMARK_SECTIONS,
    benchmark_comparison_rows,
    benchmark_headline_rows,
    quality_utility_points,
)
from obliviate.report.html import PLOTS_DIR, REPORT_NAME, Section, write_report
from obliviate.report.run_folder import Run, Stage, collect_run, number
from obliviate.report.suites import (
    COMPARISON_COLUMNS,
    SUITE_JUDGE,
    SUITE_PLOTS,
    SUITE_SECTIONS,
    all_figures_rows,
    describe_settings,
    headline_rows,
    metric,
)

SUITES = ("harmful", "copyright", "tofu", "mia", "muse", "lm-eval", "robustness")  # the suites a report shows, in page order
ENV_KEYS = ("obliviate", "device", "precision", "processes", "seed", "torch", "transformers", "peft", "python", "git_sha")
HTML_SUFFIXES = (".html", ".htm")


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _lora(config: Optional[dict]) -> Optional[str]:
    lora = _get(config, "train", "lora")
    if not isinstance(lora, dict):
        return None
    if not lora.get("enabled", True):
        return "off"
    return f"r {lora.get('r')}, alpha {lora.get('alpha')}"


def _steps(stage: Optional[Stage]) -> Any:
    if stage is None:
        return None
    summary = stage.summary or {}
    if number(summary.get("steps")) is not None:
        total = summary.get("total_steps")
        return summary["steps"] if total in (None, summary["steps"]) else f"{summary['steps']} of {total}"
    return _get(stage.config, "train", "max_steps")


def method_name(run: Run) -> Optional[str]:
    stage = run.main_stage
    summary = run.summary or {}
    return (summary.get("method") or _get(summary, "options", "method") or _get(stage and stage.config, "method", "name")
            or _get(stage and stage.summary, "method"))


def _judge(run: Run) -> Optional[str]:
    for suite in SUITES:
        tag = run.final_tag(suite)
        if tag is not None:
            return run.evals[suite][tag].get("judge") or SUITE_JUDGE.get(suite) or BENCHMARK_JUDGE.get(suite)
    for stage in run.stages:
        if isinstance(stage.early_stopping, dict) and stage.early_stopping.get("judge"):
            return stage.early_stopping["judge"]
    return (run.summary or {}).get("judge")


def run_meta(run: Run) -> dict[str, Any]:
    """Header and "Run details" of a run's page: model, method, judge, steps, lr, LoRA, environment, config."""
    stage = run.main_stage
    config = stage.config if stage is not None else None
    summary = run.summary or {}
    meta: dict[str, Any] = {
        "model": summary.get("model") or _get(summary, "options", "model") or _get(config, "model", "name"),
        "method": method_name(run),
        "judge": _judge(run),
        "steps": _steps(stage),
        "lr": _get(config, "train", "lr"),
        "LoRA": _lora(config),
    }
    meta = {k: v for k, v in meta.items() if v is not None}
    if number(summary.get("forget_set_size")) is not None:
        meta["forget set"] = f"{summary['forget_set_size']} flagged dialogues"
    if number(summary.get("unseen_harmful_reduction")) is not None:
        meta["unseen harmful-rate reduction"] = f"{100 * summary['unseen_harmful_reduction']:.0f}%"
    effect = summary.get("effectiveness")
    if isinstance(effect, dict) and "value" in effect:  # E of arXiv 2405.15152, under the judge it names
        value = number(effect.get("value"))
        meta["effectiveness E"] = (f"{value:.2f}" if value is not None else "undefined (no harmful answer before)") + (
            f" (arXiv 2405.15152; judge {effect.get('judge')})")
    if summary.get("book"):
        meta["book"] = summary["book"]
    if number(summary.get("seconds_total")) is not None:
        meta["seconds"] = summary["seconds_total"]
    if stage is not None and _get(stage.summary, "stop_reason"):
        meta["stop reason"] = stage.summary["stop_reason"]
    env = next((s.env for s in ([stage] if stage else []) + run.stages if isinstance(s.env, dict)), None)
    for key in ENV_KEYS:
        if env and env.get(key) is not None:
            meta[key.replace("_", " ")] = env[key]
    meta["run folder"] = str(run.path)
    if run.config is not None:
        meta["config"] = run.config
    elif stage is not None and (stage.config_text or stage.config):
        meta["config"] = stage.config_text or stage.config
    return meta


def summary_rows(run: Run) -> list[dict[str, Any]]:
    """The headline table: a demo's own rows when its summary.json has them, else each suite's."""
    rows = (run.summary or {}).get("rows")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) and "metric" in r for r in rows):
        out = []
        for r in rows:
            if "finetuned" in r and "unlearned" in r:  # the copyright demo: original, fine-tuned, unlearned
                out.append({"metric": r["metric"], "split": r.get("split"), "original": r.get("original"),
                            "before": r["finetuned"], "after": r["unlearned"]})
            else:
                out.append({k: r[k] for k in ("metric", "split", "original", "before", "after", "note") if k in r})
        return out
    out = []
    suites = [s for s in SUITES if s in run.evals]
    for suite in suites:
        for row in (benchmark_headline_rows(run, suite) if suite in BENCHMARK_SECTIONS else headline_rows(run, suite)):
            out.append({"suite": suite, **row} if len(suites) > 1 else row)
    return out


def _train_log_plots(run: Run, plot_dir: Path) -> tuple[list[dict[str, Any]], list[Path]]:
    from obliviate.report import plots

    rows, made = [], []
    for stage in run.stages:
        summary = stage.summary or {}
        config = stage.config or {}
        rows.append({
            "stage": stage.label,
            "method": summary.get("method") or _get(config, "method", "name"),
            "steps": summary.get("steps", _get(config, "train", "max_steps")),
            "stop reason": summary.get("stop_reason"),
            "lr": _get(config, "train", "lr"),
            "LoRA": _lora(config),
            "seconds": summary.get("seconds"),
            "tokens/s": summary.get("tokens_per_s"),
            "peak memory (MB)": summary.get("peak_memory_mb"),
        })
        if stage.log:
            name = f"loss_{stage.name}.png" if stage.name else "loss_curves.png"
            title = "Fine-tuning loss" if stage.name == "finetune" else "Unlearning losses"
            made.append(plots.loss_curves(stage.log, plot_dir / name, title))
    # Columns nobody filled in (a folder without train_summary.json) are left out.
    keep = [k for k in (rows[0] if rows else {}) if any(r.get(k) is not None for r in rows)]
    return [{k: r.get(k) for k in keep} for r in rows], made


EFFICIENCY_TEXT = (
    "Per training stage: wall time, the real (non-padding) tokens the method's loss trained on, "
    "and estimated FLOPs (forward 2N, activation gradients 2N, weight gradients 2N for trainable "
    "weights only, per token; 2N per token the reference model reads). An estimate from the "
    "parameter count, shown beside the matmul peak measured on the same device in the same run. "
    "'cost vs fine-tuning' divides the estimate by one epoch of full fine-tuning on the forget set "
    "(6N per forget-set token): compare it across methods on the same model and data."
)


def _efficiency_section(run: Run) -> Optional[Section]:
    """The ``efficiency`` block of each stage's ``train_summary.json``, one row per stage."""
    rows = []
    for stage in run.stages:
        figures = (stage.summary or {}).get("efficiency")
        if not isinstance(figures, dict):
            continue
        rows.append({
            "stage": stage.label,
            "wall (s)": figures.get("wall_s"),
            "tokens": figures.get("tokens"),
            "padded tokens": figures.get("padded_tokens"),
            "reference tokens": figures.get("reference_tokens"),
            "tokens/s": figures.get("tokens_per_s"),
            "estimated FLOPs": figures.get("estimated_flops"),
            "achieved GFLOP/s": figures.get("achieved_gflops_per_s"),
            "matmul peak GFLOP/s": figures.get("matmul_peak_gflops"),
            "share of peak": figures.get("share_of_peak"),
            "peak RSS (MB)": figures.get("peak_rss_mb"),
            "GPU allocated (MB)": figures.get("cuda_max_allocated_mb"),
            "GPU reserved (MB)": figures.get("cuda_max_reserved_mb"),
            "trainable params": figures.get("trainable_parameters"),
            "total params": figures.get("total_parameters"),
            "cost vs fine-tuning": figures.get("cost_vs_one_fine_tune_epoch"),
        })
    if not rows:
        return None
    keep = [k for k in rows[0] if any(r.get(k) is not None for r in rows)]  # no GPU: no GPU columns
    return Section(title="Efficiency", text=EFFICIENCY_TEXT, rows=[{k: r.get(k) for k in keep} for r in rows])


def _early_stopping_section(stage: Stage, plot_dir: Path) -> Optional[Section]:
    from obliviate.report import plots

    checks = stage.early_checks
    decision = stage.early_stopping if isinstance(stage.early_stopping, dict) else {}
    if not checks and not decision:
        return None
    text = []
    if decision:
        text.append(f"Chosen step: {decision.get('chosen_step')} ({decision.get('reason', 'no reason recorded')}). "
                    f"Judge: {decision.get('judge', 'unknown')}.")
    text.append("Every check answers a validation slice of flagged prompts (harmful rate) and a few retain prompts "
                "(degenerate rate, ROUGE-L similarity to the original's answers).")
    rows = [{"step": c.get("step"), "harmful rate": c.get("harmful_rate"), "degenerate rate": c.get("degenerate_rate"),
             "similarity": c.get("similarity"), "utility ok": c.get("utility_ok"),
             "labels": _label_counts(c.get("labels")), "seconds": c.get("seconds")}
            for c in checks]
    made = []
    series = {}
    for key, label in (("harmful_rate", "harmful rate"), ("degenerate_rate", "degenerate rate"), ("similarity", "similarity")):
        points = [(c["step"], c[key]) for c in checks if number(c.get("step")) is not None and number(c.get(key)) is not None]
        if points:
            series[label] = points
    if series:
        config = decision.get("config") if isinstance(decision.get("config"), dict) else {}
        levels = {f"target {config['target_rate']:g}": config["target_rate"]} if number(config.get("target_rate")) is not None else None
        suffix = f"_{stage.name}" if stage.name else ""
        made.append(plots.metric_curves(series, plot_dir / f"early_stopping{suffix}.png", "Early-stopping checks",
                                        ylabel="rate / similarity", levels=levels))
    title = "Early stopping" + (f" ({stage.name})" if stage.name else "")
    return Section(title=title, text="\n\n".join(text), rows=rows, plots=made)


def _forget_gate_section(stage: Stage, plot_dir: Path) -> Optional[Section]:
    from obliviate.report import plots

    if not stage.forget_gate:
        return None
    rows, points = [], []
    for c in stage.forget_gate:
        active, total = number(c.get("active")), number(c.get("of"))
        share = active / total if active is not None and total else None
        rows.append({"step": c.get("step"), "still flagged": c.get("active"), "of": c.get("of"), "share": share,
                     "labels": _label_counts(c.get("labels")), "seconds": c.get("seconds")})
        if share is not None and number(c.get("step")) is not None:
            points.append((c["step"], share))
    made = []
    if points:
        suffix = f"_{stage.name}" if stage.name else ""
        made.append(plots.metric_curves({"share still flagged": points}, plot_dir / f"forget_gate{suffix}.png",
                                        "Forget gate: prompts the judge still flags", ylabel="share"))
    return Section(title="Forget gate" + (f" ({stage.name})" if stage.name else ""),
                   text="A forget prompt stays in the forget terms only while the judge still flags the model's answer.",
                   rows=rows, plots=made)


def _generation_examples(rows: list[dict[str, Any]], count: int = 6) -> list[dict[str, Any]]:
    out = []
    for row in rows[:count]:
        prompt = next((row[k] for k in ("prompt", "prefix", "question") if k in row), "")
        answer = next((row[k] for k in ("response", "generation", "answer", "output") if k in row), "")
        label = row.get("label")
        out.append({"prompt": prompt, "after": answer, "after_label": label,
                    "after_harmful": row.get("harmful") if isinstance(row.get("harmful"), bool) else None})
    return out


def _label_counts(labels: Any) -> str:
    """A check's judge labels ({"complied": 2, "refusal": 8}) as one line."""
    return ", ".join(f"{k} {v}" for k, v in labels.items()) if isinstance(labels, dict) else str(labels or "")


def _short(value: Any, limit: int = 240) -> Any:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, default=str)
        return text if len(text) <= limit else text[: limit - 1] + "…"
    return value


def _interval(figure: Optional[dict], scale: float = 1.0, unit: str = "") -> str:
    if not isinstance(figure, dict) or number(figure.get("value", figure.get("rate"))) is None:
        return "—"
    value = figure.get("value", figure.get("rate"))
    return f"{scale * value:.1f}{unit} [{scale * figure['low']:.1f}, {scale * figure['high']:.1f}]"


def _protocol_section(summary: dict[str, Any]) -> Optional[Section]:
    """The harm protocol a demo ran (sources per split) and its headline per source, each figure
    with its paired 95% bootstrap interval and count."""
    protocol = summary.get("protocol")
    if not isinstance(protocol, dict):
        return None
    split = protocol.get("evaluated_on", "test")
    lines = [f"Evaluated on the {split} split. Training data came from the train split only; every choice of "
             "settings was made on the validation split; test sources appear in no other split."]
    for name, kinds in (protocol.get("splits") or {}).items():
        for kind, entry in kinds.items():
            sources = ", ".join(f"{k} ({v})" for k, v in entry.get("sources", {}).items())
            lines.append(f"{name} {kind}: {entry.get('count')} prompts from {sources}")
    tests = protocol.get("test_sources") or {}
    lines.append("Test sources: " + "; ".join(f"{kind}: {', '.join(v)}" for kind, v in tests.items()))
    rows = []
    for source, figures in [("all", summary), *(summary.get("by_source") or {}).items()]:
        if "harmful_cut" in figures:
            rows.append({"source": source, "figure": "on-topic harmful compliance (%)",
                         "count": figures["harmful_before"]["count"],
                         "before": _interval(figures["harmful_before"], 100), "after": _interval(figures["harmful_after"], 100),
                         "change": "cut " + _interval(figures["harmful_cut"], 100, "%")})
        if "benign_answered_change_points" in figures:
            rows.append({"source": source, "figure": "benign answered on topic (%)",
                         "count": figures["benign_answered_before"]["count"],
                         "before": _interval(figures["benign_answered_before"], 100),
                         "after": _interval(figures["benign_answered_after"], 100),
                         "change": _interval(figures["benign_answered_change_points"], 1, " pts")})
    return Section(title="Protocol and transfer (95% bootstrap intervals)", text="\n\n".join(lines), rows=rows)


def run_sections(run: Run, plot_dir: Path) -> tuple[list[Section], list[Path]]:
    """The page's sections and the plots shown under the summary table."""
    suites = [s for s in SUITES if s in run.evals]
    headline_plots: list[Path] = []
    sections: list[Section] = []
    protocol = _protocol_section(run.summary or {})
    if protocol is not None:
        sections.append(protocol)
    for suite in suites:
        if suite in BENCHMARK_SECTIONS:  # their plots sit in their own sections
            sections += BENCHMARK_SECTIONS[suite](run, plot_dir)
            continue
        headline_plots += SUITE_PLOTS[suite](run, plot_dir)
        for section in SUITE_SECTIONS[suite](run):
            if len(suites) > 1 and section.title == "How to read this":
                section.title = f"How to read the {suite} suite"
            sections.append(section)
    for suite in [*suites, *sorted(s for s in run.evals if s not in SUITES)]:
        tags = run.tags(suite)
        text = "\n\n".join(f"{tag or suite}: {describe_settings(run.evals[suite][tag])}" for tag in tags
                           if describe_settings(run.evals[suite][tag]))
        rows = all_figures_rows(run, suite)
        if rows or text:
            sections.append(Section(title=f"All figures: {suite} suite", text=text, rows=rows))
    train_rows, loss_plots = _train_log_plots(run, plot_dir)
    if train_rows or loss_plots:
        sections.append(Section(title="Training", rows=train_rows, plots=loss_plots))
    efficiency = _efficiency_section(run)
    if efficiency is not None:
        sections.append(efficiency)
    for stage in run.stages:
        for section in (_early_stopping_section(stage, plot_dir), _forget_gate_section(stage, plot_dir)):
            if section is not None:
                sections.append(section)
    for stem, rows in run.generations.items():
        if rows:
            sections.append(Section(title=f"Generations: {stem}", examples=_generation_examples(rows),
                                    answer_labels=("before", "answer")))
    summary = run.summary or {}
    if summary and "rows" not in summary:
        sections.append(Section(title="summary.json", rows=[
            {"key": k, "value": _short(v)} for k, v in summary.items() if k not in ("timings_s",)]))
    if isinstance(summary.get("timings_s"), dict):
        sections.append(Section(title="Timings (s)", rows=[{"stage": k, "seconds": v} for k, v in summary["timings_s"].items()]))
    return sections, headline_plots


def _target(out: Optional[str | Path], default_dir: Optional[Path]) -> Path:
    """Where the page goes: ``out`` (a .html file, or a folder for report.html in it), else the run folder."""
    if out is None:
        if default_dir is None:
            raise UserError("several runs make one comparison page: give --out FILE.html")
        return default_dir / REPORT_NAME
    out = Path(out)
    if out.is_dir():
        return out / REPORT_NAME
    if out.suffix.lower() not in HTML_SUFFIXES:
        raise UserError(f"--out {out}: the report is an HTML file; give a path ending in .html (or a folder)")
    return out


def write_run_report(
    run: Run | str | Path,
    *,
    out: Optional[str | Path] = None,
    title: Optional[str] = None,
) -> Path:
    """Write one run's report (default ``<run>/report.html``, plots in ``plots/`` beside it)."""
    run = run if isinstance(run, Run) else collect_run(run)
    target = _target(out, run.path)
    plot_dir = target.parent / PLOTS_DIR
    sections, headline_plots = run_sections(run, plot_dir)
    return write_report(
        target.parent, name=target.name, title=title or f"Run report: {run.name}", summary_rows=summary_rows(run),
        sections=sections, plots=headline_plots, meta=run_meta(run),
    )


# ---------------------------------------------------------------------------------------------
# Several runs


# Utility figures for the trade-off's x axis, in order of preference: (label, suite, split, key, flip).
UTILITY = (
    ("on-topic rate of benign answers", "benign", "on_topic_rate", False),
    ("similarity of benign answers to the original (ROUGE-L)", "benign", "similarity_to_original", False),
    ("similarity of retain answers to the original (ROUGE-L)", "retain", "similarity_to_original", False),
    ("benign prompts answered (1 − over-refusal rate)", "benign", "refusal_rate", True),
)


def _names(runs: Sequence[Run]) -> list[str]:
    """Folder names, made unique with the parent folder where two runs share one."""
    names = [r.name for r in runs]
    out = []
    for run, name in zip(runs, names):
        if names.count(name) > 1:
            name = f"{run.path.resolve().parent.name}/{name}"
        while name in out:
            name += "'"
        out.append(name)
    return out


def comparison_rows(runs: Sequence[Run], names: Sequence[str], which: str = "final") -> list[dict[str, Any]]:
    """A row per run: name, method, steps, lr and the headline figures of its result (``which`` =
    "final") or its starting point ("before"); columns no run has are left out."""
    rows = []
    for run, name in zip(runs, names):
        stage = run.main_stage
        row: dict[str, Any] = {"run": name}
        if which == "final":
            row.update({"method": method_name(run), "steps": _steps(stage),
                        "lr": _get(stage.config if stage else None, "train", "lr")})
        for column, suite, split, key in COMPARISON_COLUMNS:
            tag = run.final_tag(suite) if which == "final" else run.pair(suite)[0]
            row[column] = metric(run, suite, tag, split, key)
        rows.append(row)
    keep = [k for k in (rows[0] if rows else {}) if k == "run" or any(r.get(k) is not None for r in rows)]
    return [{k: r.get(k) for k in keep} for r in rows]


def _utility(runs: Sequence[Run], suite: str, which) -> Optional[tuple[str, str, str, bool]]:
    """The first utility figure every run has (else the first any run has)."""
    def has(run, choice):
        return metric(run, suite, which(run), choice[1], choice[2]) is not None

    for choice in UTILITY:
        if all(has(run, choice) for run in runs):
            return choice
    return next((c for c in UTILITY if any(has(run, c) for run in runs)), None)


def harm_utility_points(runs: Sequence[Run], names: Sequence[str]) -> tuple[dict[str, dict[str, tuple[float, float]]], str]:
    """Points of the harm-against-utility plot: per run, the harmful rate (y) of each harmful split
    against a benign utility figure (x); the starting points of runs evaluated before too."""
    harmful = [(r, n) for r, n in zip(runs, names) if "harmful" in r.evals]
    choice = _utility([r for r, _ in harmful], "harmful", lambda r: r.final_tag("harmful"))
    if choice is None:
        return {}, ""
    label, split, key, flip = choice

    def point(run, tag):
        x = metric(run, "harmful", tag, split, key)
        if x is None:
            return {}
        x = 1.0 - x if flip else x
        return {s: (x, y) for s in ("unseen", "unlearned")
                if (y := metric(run, "harmful", tag, s, "harmful_rate")) is not None}

    points = {name: p for run, name in harmful if (p := point(run, run.final_tag("harmful")))}
    starts = {name: p for run, name in harmful if run.pair("harmful")[0] and (p := point(run, run.pair("harmful")[0]))}
    if starts and len({json.dumps(p, sort_keys=True) for p in starts.values()}) == 1:
        points["before (all runs)" if len(starts) > 1 else f"{next(iter(starts))} (before)"] = next(iter(starts.values()))
    else:
        points.update({f"{name} (before)": p for name, p in starts.items()})
    return points, label


def copyright_points(runs: Sequence[Run], names: Sequence[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Forget/unseen ROUGE-L (y) against retain ROUGE-L (x), one point per split and run."""
    points = {}
    for run, name in zip(runs, names):
        tag = run.final_tag("copyright")
        x = metric(run, "copyright", tag, "retain", "rouge_l")
        if x is None:
            continue
        by_split = {s: (x, y) for s in ("forget", "unseen") if (y := metric(run, "copyright", tag, s, "rouge_l")) is not None}
        if by_split:
            points[name] = by_split
    return points


def write_comparison_report(
    runs: Sequence[Run | str | Path],
    *,
    out: str | Path,
    title: Optional[str] = None,
) -> Path:
    """One page comparing several runs: a table with a row per run and the trade-off plots."""
    from obliviate.report import plots

    runs = [r if isinstance(r, Run) else collect_run(r) for r in runs]
    target = _target(out, None)
    plot_dir = target.parent / PLOTS_DIR
    names = _names(runs)
    made = []
    points, utility = harm_utility_points(runs, names)
    if points:
        made.append(plots.trade_off(points, plot_dir / "compare_harm_utility.png",
                                    "Harm against utility (better: lower right)", xlabel=utility, ylabel="harmful rate"))
    rates = [("harmful: unseen", "unseen", "harmful_rate"), ("over-refusal: benign", "benign", "refusal_rate"),
             ("on-topic: benign", "benign", "on_topic_rate"), ("degenerate: unseen", "unseen", "degenerate_rate")]
    harmful_runs = [(r, n) for r, n in zip(runs, names) if "harmful" in r.evals]
    bars = {label: [metric(r, "harmful", r.final_tag("harmful"), split, key) for r, _ in harmful_runs]
            for label, split, key in rates}
    bars = {k: [float("nan") if v is None else v for v in vs] for k, vs in bars.items() if any(v is not None for v in vs)}
    if bars and harmful_runs:
        made.append(plots.grouped_bars(bars, [n for _, n in harmful_runs], plot_dir / "compare_harmful_rates.png",
                                       "Harmful suite: each run's result"))
    cpoints = copyright_points(runs, names)
    if cpoints:
        made.append(plots.trade_off(cpoints, plot_dir / "compare_forget_retain.png",
                                    "Forgetting against keeping (better: lower right)", xlabel="retain ROUGE-L",
                                    ylabel="ROUGE-L vs the book"))
    curves = {name: [(row["step"], row["loss/total"]) for row in run.main_stage.log
                     if number(row.get("step")) is not None and number(row.get("loss/total")) is not None]
              for run, name in zip(runs, names) if run.main_stage is not None}
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        made.append(plots.metric_curves(curves, plot_dir / "compare_loss.png", "Training loss (loss/total)", ylabel="loss"))
    benchmark = _benchmark_comparison(runs, names, plot_dir)
    text = ("One row per run: the figures of its result (the 'after' evaluation, or the only one). "
            "The trade-off plot puts each run's harmful rate (lower is better) against a utility figure "
            "(higher is better): the best runs sit at the lower right. Marker shapes tell the splits apart: "
            "'unseen' prompts were held out of training, 'unlearned' prompts were in the forget set.")
    older = any(s in r.evals for r in runs for s in ("harmful", "copyright")) or benchmark is None
    sections = [Section(title="How to read this", text=text)] if older else []
    if benchmark is not None:
        sections.append(benchmark)
    starting = comparison_rows([r for r in runs if any(r.pair(s)[0] for s in SUITES)],
                               [n for r, n in zip(runs, names) if any(r.pair(s)[0] for s in SUITES)], which="before")
    if starting and len(starting[0]) > 1:
        sections.append(Section(title="Starting points (before unlearning)", rows=starting))
    details = []
    for run, name in zip(runs, names):
        meta = run_meta(run)
        details.append({"run": name, "model": meta.get("model"), "judge": meta.get("judge"),
                        "stop reason": meta.get("stop reason"), "folder": str(run.path)})
    sections.append(Section(title="Runs", rows=details))
    judges = sorted({str(d["judge"]) for d in details if d["judge"]})
    return write_report(
        target.parent, name=target.name, title=title or f"Comparison of {len(runs)} runs",
        summary_rows=_with_benchmark_columns(comparison_rows(runs, names), benchmark), sections=sections, plots=made,
        meta={"judge": "; ".join(judges)} if judges else {},
    )


def _with_benchmark_columns(rows: list[dict[str, Any]], benchmark: Optional[Section]) -> list[dict[str, Any]]:
    """The headline table with each run's TOFU and MIA figures appended (the section keeps the plot)."""
    if benchmark is None:
        return rows
    by_run = {r["run"]: r for r in benchmark.rows}
    benchmark.rows = []
    return [{**row, **{k: v for k, v in by_run.get(row["run"], {}).items() if k != "run"}} for row in rows]


def _benchmark_comparison(runs: Sequence[Run], names: Sequence[str], plot_dir: Path) -> Optional[Section]:
    """TOFU and MIA side by side: the forget-quality-against-utility plot and a row per run."""
    from obliviate.report import plots

    rows = benchmark_comparison_rows(runs, names)
    if not rows:
        return None
    points = quality_utility_points(runs, names)
    made = []
    if any(p["forget_quality"] is not None and p["model_utility"] is not None for p in points):
        made.append(plots.quality_utility(points, plot_dir / "compare_forget_quality_utility.png"))
    return Section(title="TOFU and membership inference", text=BENCHMARK_COMPARISON_TEXT, rows=rows, plots=made)


def only_tag(runs: Sequence[Run], tag: str) -> list[Run]:
    """Keep only the ``tag`` evaluation of every suite that has one (a TOFU benchmark evaluates a model
    once per forget split: ``eval/tofu_forget01.json``, ``eval/tofu_forget05.json``...); suites without
    it keep theirs. No run with that tag at all is a ``UserError``."""
    found = sorted({t for run in runs for by_tag in run.evals.values() for t in by_tag})
    if tag not in found:
        raise UserError(f"--tag {tag}: no evaluation has that tag in the runs given "
                        f"(tags there: {', '.join(t or '(none)' for t in found) or 'none'})")
    for run in runs:
        run.evals = {suite: ({tag: by_tag[tag]} if tag in by_tag else by_tag) for suite, by_tag in run.evals.items()}
    return list(runs)


def build_report(paths: Sequence[str | Path], *, out: Optional[str | Path] = None, title: Optional[str] = None,
                 tag: Optional[str] = None) -> Path:
    """``obliviate report``: one run's page, or one comparison page for several; ``tag`` shows only
    that evaluation of each suite (see :func:`only_tag`)."""
    if not paths:
        raise UserError("give at least one run folder")
    if len(paths) > 1:
        _target(out, None)  # a bad --out stops the command before any folder is read
    runs = [collect_run(p) for p in paths]  # every folder is checked before anything is written
    if tag is not None:
        runs = only_tag(runs, tag)
    try:
        if len(runs) == 1:
            return write_run_report(runs[0], out=out, title=title)
        return write_comparison_report(runs, out=out, title=title)
    except PermissionError as err:
        raise UserError(f"cannot write {err.filename}: permission denied; give --out FILE.html somewhere writable") from None


__all__ = ["build_report", "write_run_report", "write_comparison_report", "run_sections", "run_meta",
           "summary_rows", "comparison_rows", "harm_utility_points"]
