"""What a report shows for each evaluation suite: headline figures, plots, explanations, examples.

The suites' result files (``eval/<suite>_<tag>.json`` + ``generations/``) are read as data, so the
same pieces serve ``obliviate report`` on any run folder and the demos' reports. Each function
takes a :class:`~obliviate.report.run_folder.Run` and works with whatever tags it holds: a
before/after pair is compared side by side, a single evaluation is shown alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from obliviate.report.html import Section
from obliviate.report.run_folder import Run, number

# (label, split, metric key, note): the harmful suite's headline rows, headline first.
HARMFUL_HEADLINE = (
    ("harmful & on-topic rate", "unseen", "harmful_on_topic_rate",
     "headline: held-out harmful prompts (test sources in a demo), compliant AND about the request"),
    ("answered on topic", "benign", "answered_on_topic_rate", "headline: benign prompts answered, not refused, on topic"),
    ("harmful rate", "unseen", "harmful_rate", "the judge alone"),
    ("harmful rate", "unlearned", "harmful_rate", "prompts of the forget set"),
    ("degenerate rate", "unseen", "degenerate_rate", "gibberish is not success"),
    ("degenerate rate", "benign", "degenerate_rate", ""),
    ("over-refusal rate", "benign", "refusal_rate", "benign prompts refused"),
    ("on-topic rate", "benign", "on_topic_rate", "benign answers about the prompt"),
    ("similarity to original", "benign", "similarity_to_original", "ROUGE-L F1 vs original answers"),
    ("similarity to original", "retain", "similarity_to_original", "ROUGE-L F1 vs original answers"),
    ("perplexity under original", "benign", "perplexity_under_original", "fluency"),
    ("diversity", "benign", "diversity", "unique-token ratio"),
)

COPYRIGHT_SPLITS = ("forget", "unseen", "retain")
COPYRIGHT_METRICS = (
    ("rouge_l", "ROUGE-L vs true continuation"),
    ("bleu", "BLEU vs true continuation"),
    ("cosine", "cosine (MiniLM) vs true continuation"),
    ("leak_rate", "leak rate (BLEU > threshold)"),
    ("exact_memorisation", "exact memorisation (teacher forced)"),
    ("extraction_strength", "extraction strength"),
    ("continuation_perplexity", "continuation perplexity given prefix"),
    ("perplexity", "passage perplexity (raw text)"),
)
COPYRIGHT_HEADLINE = tuple(
    (label, split, key, "") for split in COPYRIGHT_SPLITS for key, label in COPYRIGHT_METRICS
) + (
    ("perplexity", "general", "perplexity", ""),
    ("degenerate rate (everyday prompts)", "benign", "degenerate_rate", ""),
    ("on-topic rate (everyday prompts)", "benign", "on_topic_rate", ""),
)
HEADLINE = {"harmful": HARMFUL_HEADLINE, "copyright": COPYRIGHT_HEADLINE}

# The columns of the comparison of several runs: (column, suite, split, key), from each run's result.
COMPARISON_COLUMNS = (
    ("harmful: unseen", "harmful", "unseen", "harmful_rate"),
    ("harmful: unlearned", "harmful", "unlearned", "harmful_rate"),
    ("harmful & on-topic: unseen", "harmful", "unseen", "harmful_on_topic_rate"),
    ("degenerate: unseen", "harmful", "unseen", "degenerate_rate"),
    ("over-refusal: benign", "harmful", "benign", "refusal_rate"),
    ("on-topic: benign", "harmful", "benign", "on_topic_rate"),
    ("similarity: benign", "harmful", "benign", "similarity_to_original"),
    ("similarity: retain", "harmful", "retain", "similarity_to_original"),
    ("perplexity: benign", "harmful", "benign", "perplexity_under_original"),
    ("forget ROUGE-L", "copyright", "forget", "rouge_l"),
    ("forget leak rate", "copyright", "forget", "leak_rate"),
    ("unseen ROUGE-L", "copyright", "unseen", "rouge_l"),
    ("retain ROUGE-L", "copyright", "retain", "rouge_l"),
    ("retain perplexity", "copyright", "retain", "perplexity"),
    ("general perplexity", "copyright", "general", "perplexity"),
    ("on-topic: everyday", "copyright", "benign", "on_topic_rate"),
)

# How a tag reads in a legend.
TAG_LABELS = {"finetuned": "fine-tuned"}

HARMFUL_HOW_TO_READ = (
    "Harmful rate: share of answers the judge calls compliant with a harmful request. "
    "'unlearned' prompts were in the forget set; 'unseen' prompts were held out and show whether "
    "the model generalised (in the demo they come from the harm protocol's test sources, which no training "
    "or tuning data came from: docs/harm_protocol.md). The headline counts an answer as harm only when the "
    "judge says it complied AND it is about the request; its benign twin counts a benign prompt as served "
    "only when it is answered (not refused, not degenerate) and on topic.\n\n"
    "A degenerate answer (empty, looping or non-language) is not harmful, but it is not success either, "
    "so it is counted separately. Over-refusal is the share of benign prompts refused; on-topic rate is "
    "the share of benign answers whose embedding is close to the prompt's (an answer about something else "
    "is a broken model even when no judge calls it harmful)."
)


def tag_label(tag: str) -> str:
    return TAG_LABELS.get(tag, tag or "result")


def metric(run: Run, suite: str, tag: Optional[str], split: str, key: str) -> Optional[float]:
    """One figure of one evaluation, or None where the run lacks it."""
    if tag is None:
        return None
    metrics = run.evals.get(suite, {}).get(tag, {}).get("metrics")
    values = metrics.get(split) if isinstance(metrics, dict) else None
    return number(values.get(key)) if isinstance(values, dict) else None


def items(run: Run, suite: str, tag: Optional[str], split: str) -> list[dict[str, Any]]:
    if tag is None:
        return []
    rows = (run.evals.get(suite, {}).get(tag, {}).get("items") or {}).get(split) or []
    return [r for r in rows if isinstance(r, dict)]


def shown_tags(run: Run, suite: str) -> list[str]:
    """The tags a suite's tables show: every evaluation of the suite, starting point first."""
    return run.tags(suite)


def _change(row: dict[str, Any], before: Optional[str], after: Optional[str]) -> None:
    if before and after:
        b, a = number(row.get(before)), number(row.get(after))
        row["change"] = a - b if a is not None and b is not None else ""


def headline_rows(run: Run, suite: str) -> list[dict[str, Any]]:
    """The suite's headline figures, one column per evaluation (+ change for a before/after pair)."""
    tags = shown_tags(run, suite)
    before, after = run.pair(suite)
    rows = []
    for label, split, key, note in HEADLINE.get(suite, ()):
        values = {tag: metric(run, suite, tag, split, key) for tag in tags}
        if all(v is None for v in values.values()):
            continue
        row: dict[str, Any] = {"metric": label, "split": split, **values}
        _change(row, before, after)
        if suite == "harmful":
            row["note"] = note
        rows.append(row)
    if suite == "harmful" and before and after:
        rows.extend(_effectiveness_row(run, tags, before, after))
    return rows


def _effectiveness_row(run: Run, tags: list[str], before: str, after: str) -> list[dict[str, Any]]:
    """E of arXiv 2405.15152 on the held-out harmful prompts, from the judge's verdicts before and
    after; no row when the pair lacks them or they are not the same prompts."""
    from obliviate.judges.effectiveness_score import effectiveness_from_verdicts

    old, new = items(run, "harmful", before, "unseen"), items(run, "harmful", after, "unseen")
    if not old or [r.get("prompt") for r in old] != [r.get("prompt") for r in new]:
        return []
    value = effectiveness_from_verdicts([bool(r.get("harmful")) for r in old], [bool(r.get("harmful")) for r in new])
    judge = run.evals["harmful"][after].get("judge") or "the suite's judge"
    return [{"metric": "effectiveness E", "split": "unseen", **{tag: None for tag in tags}, after: value,
             "note": f"(Acc_before − Acc_after) / Acc_before, arXiv 2405.15152; judge {judge}"}]


def all_figures_rows(run: Run, suite: str) -> list[dict[str, Any]]:
    """Every number the suite wrote, per split and metric, one column per evaluation."""
    tags = shown_tags(run, suite)
    before, after = run.pair(suite)
    splits: list[str] = []
    keys: dict[str, list[str]] = {}
    def metrics_of(tag):
        found = run.evals[suite][tag].get("metrics")
        return found if isinstance(found, dict) else {}

    for tag in tags:
        for split, values in metrics_of(tag).items():
            if not isinstance(values, dict):
                continue
            if split not in splits:
                splits.append(split)
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in keys.setdefault(split, []):
                    keys[split].append(key)
    rows = []
    for split in splits:
        for key in keys.get(split, []):
            row: dict[str, Any] = {"split": split, "metric": key}
            for tag in tags:
                values = metrics_of(tag).get(split)
                row[tag] = values.get(key) if isinstance(values, dict) else None
            if key != "count":
                _change(row, before, after)
            rows.append(row)
    return rows


def describe_settings(result: dict[str, Any]) -> str:
    """One line: the judge and the generation settings of an evaluation."""
    parts = []
    if result.get("judge"):
        parts.append(f"judge: {result['judge']}")
    if isinstance(result.get("on_topic"), dict):
        parts.append(f"on-topic: {result['on_topic'].get('model')} cosine ≥ {result['on_topic'].get('threshold')}")
    if number(result.get("bleu_threshold")) is not None:
        parts.append(f"leak threshold: BLEU > {result['bleu_threshold']:.3f}")
    if result.get("embedder"):
        parts.append(f"embedder: {result['embedder']}")
    settings = result.get("settings")
    if isinstance(settings, dict) and settings:
        parts.append("settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()))
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Harmful suite


def _harmful_class(row: dict[str, Any], harmful_prompts: bool) -> str:
    if row.get("degenerate"):
        return "warn"
    if harmful_prompts:
        return "bad" if row.get("harmful") else "good"
    return "bad" if row.get("refusal") else "good"  # refusing a benign prompt is the failure here


def harmful_examples(run: Run, split: str, count: int) -> list[dict[str, Any]]:
    """Side-by-side answers (before/after) to the first ``count`` prompts of a split, or the
    result's answers alone when the run holds one evaluation."""
    harmful_prompts = split in ("unlearned", "unseen")
    before, after = run.pair("harmful")
    out = []
    if before and after:
        pairs = list(zip(items(run, "harmful", before, split), items(run, "harmful", after, split)))[:count]
        for old, new in pairs:
            out.append({
                "split": split, "prompt": old.get("prompt", ""), "before": old.get("response", ""),
                "after": new.get("response", ""), "before_label": old.get("label"), "after_label": new.get("label"),
                "before_class": _harmful_class(old, harmful_prompts), "after_class": _harmful_class(new, harmful_prompts),
            })
        return out
    for row in items(run, "harmful", run.final_tag("harmful"), split)[:count]:
        out.append({"split": split, "prompt": row.get("prompt", ""), "after": row.get("response", ""),
                    "after_label": row.get("label"), "after_class": _harmful_class(row, harmful_prompts)})
    return out


def harmful_plots(run: Run, plot_dir: Path) -> list[Path]:
    """Rates before/after (or of the one evaluation), similarity to the original, on-topic cosines."""
    from obliviate.report import plots

    before, after = run.pair("harmful")
    final = run.final_tag("harmful")
    rates = (
        ("harmful: unlearned", "unlearned", "harmful_rate"),
        ("harmful: unseen", "unseen", "harmful_rate"),
        ("degenerate: unseen", "unseen", "degenerate_rate"),
        ("over-refusal: benign", "benign", "refusal_rate"),
        ("on-topic: benign", "benign", "on_topic_rate"),
    )
    made = []
    if before and after:
        pairs = {name: (metric(run, "harmful", before, split, key), metric(run, "harmful", after, split, key))
                 for name, split, key in rates}
        pairs = {name: pair for name, pair in pairs.items() if None not in pair}
        if pairs:
            made.append(plots.bar_before_after(
                pairs, plot_dir / "rates_before_after.png", "Harmful-response unlearning: rates before and after",
                labels=(tag_label(before), tag_label(after)),
            ))
    else:
        values = {name: metric(run, "harmful", final, split, key) for name, split, key in rates}
        values = {name: [v] for name, v in values.items() if v is not None}
        if values:
            made.append(plots.grouped_bars(values, [tag_label(final)], plot_dir / "rates.png", "Harmful suite: rates"))
    similarity = [r.get("similarity", float("nan")) for r in items(run, "harmful", final, "benign") if "similarity" in r]
    if similarity:
        made.append(plots.histogram(
            {f"benign answers{' after' if after else ''} vs original": similarity}, plot_dir / "similarity.png",
            "Similarity of benign answers to the original model's", "ROUGE-L F1",
        ))
    on_topic = run.evals["harmful"].get(final, {}).get("on_topic")
    if isinstance(on_topic, dict):
        def cosines(tag, split):
            return [number(r.get("on_topic_cosine")) for r in items(run, "harmful", tag, split)]

        series = ({"benign, before": cosines(before, "benign"), "benign, after": cosines(after, "benign"),
                   "unseen harmful, after": cosines(after, "unseen")} if after else
                  {"benign": cosines(final, "benign"), "unseen harmful": cosines(final, "unseen")})
        series = {k: [v for v in vs if v is not None] for k, vs in series.items()}
        if any(series.values()):
            made.append(plots.histogram(
                series, plot_dir / "on_topic.png", f"Prompt-answer cosine ({on_topic.get('model', 'embedder')})", "cosine",
                threshold=number(on_topic.get("threshold")), threshold_label="on-topic threshold",
            ))
    return made


def harmful_sections(run: Run) -> list[Section]:
    labels = _labels(run, "harmful")
    sections = [Section(title="How to read this", text=HARMFUL_HOW_TO_READ)]
    for title, split, count in (
        ("Held-out harmful prompts (unseen)", "unseen", 8),
        ("Benign prompts", "benign", 8),
        ("Forget set prompts (unlearned)", "unlearned", 4),
        ("Retain prompts", "retain", 4),
    ):
        examples = harmful_examples(run, split, count)
        if examples:
            sections.append(Section(title=title, examples=examples, answer_labels=labels))
    return sections


# ---------------------------------------------------------------------------------------------
# Copyright suite


def _continuation(row: dict[str, Any], keep: bool) -> tuple[str, str]:
    leak = bool(row.get("leak"))

    def fmt(key):
        value = number(row.get(key))
        return "n/a" if value is None else f"{value:.2f}"

    label = f"{'leak' if leak else 'no leak'} · BLEU {fmt('bleu')} · ROUGE-L {fmt('rouge_l')}"
    good = leak if keep else not leak  # reproducing a retain passage is the wanted behaviour there
    return label, "good" if good else ("warn" if keep else "bad")


def copyright_examples(run: Run, split: str, count: int) -> list[dict[str, Any]]:
    """Continuations of the book: fine-tuned (before) against unlearned (after), or one evaluation's."""
    keep = split == "retain"
    before, after = run.pair("copyright")
    out = []
    if before and after:
        for old, new in list(zip(items(run, "copyright", before, split), items(run, "copyright", after, split)))[:count]:
            (before_label, before_class), (after_label, after_class) = _continuation(old, keep), _continuation(new, keep)
            out.append({
                "split": split, "prompt": f"{old.get('prefix', '')}\n\n[true continuation] {old.get('truth', '')}",
                "before": old.get("generation", ""), "after": new.get("generation", ""),
                "before_label": before_label, "after_label": after_label,
                "before_class": before_class, "after_class": after_class,
            })
        return out
    for row in items(run, "copyright", run.final_tag("copyright"), split)[:count]:
        label, cls = _continuation(row, keep)
        out.append({"split": split, "prompt": f"{row.get('prefix', '')}\n\n[true continuation] {row.get('truth', '')}",
                    "after": row.get("generation", ""), "after_label": label, "after_class": cls})
    return out


def _everyday_examples(run: Run, count: int) -> list[dict[str, Any]]:
    def badge(row):
        return ("degenerate" if row.get("degenerate") else "ok"), ("warn" if row.get("degenerate") else "good")

    before, after = run.pair("copyright")
    if before and after:
        out = []
        for b, a in list(zip(items(run, "copyright", before, "benign"), items(run, "copyright", after, "benign")))[:count]:
            (bl, bc), (al, ac) = badge(b), badge(a)
            out.append({"split": "benign", "prompt": b.get("prompt", ""), "before": b.get("response", ""),
                        "after": a.get("response", ""), "before_label": bl, "after_label": al,
                        "before_class": bc, "after_class": ac})
        return out
    return [{"split": "benign", "prompt": r.get("prompt", ""), "after": r.get("response", ""),
             "after_label": badge(r)[0], "after_class": badge(r)[1]}
            for r in items(run, "copyright", run.final_tag("copyright"), "benign")[:count]]


def copyright_plots(run: Run, plot_dir: Path) -> list[Path]:
    """ROUGE-L, leak rate and perplexity per split: fine-tuned against unlearned, or one evaluation."""
    from obliviate.report import plots

    before, after = run.pair("copyright")
    tags = [before, after] if before and after else [run.final_tag("copyright")]
    labels = tuple(tag_label(t) for t in tags)
    present = [s for s in COPYRIGHT_SPLITS if all(metric(run, "copyright", t, s, "rouge_l") is not None for t in tags)]

    def values(split, key):
        return tuple(metric(run, "copyright", t, split, key) for t in tags)

    charts = [
        ({s: values(s, "rouge_l") for s in present}, "rouge_l_by_split.png", "ROUGE-L of continuations vs the book",
         {"ylabel": "ROUGE-L"}),
        ({s: values(s, "leak_rate") for s in present}, "leak_rate_by_split.png",
         "Leak rate (BLEU above the chance threshold)", {}),
        ({**{f"{s} passages": values(s, "perplexity") for s in present}, "general text": values("general", "perplexity")},
         "perplexity.png", "Perplexity of raw text", {"ylabel": "perplexity", "percent": False}),
    ]
    made = []
    for data, name, title, options in charts:
        data = {k: v for k, v in data.items() if None not in v}
        if not data:
            continue
        if len(tags) == 2:
            made.append(plots.bar_before_after(data, plot_dir / name, title, labels=labels, **options))
        else:
            made.append(plots.grouped_bars({k: list(v) for k, v in data.items()}, list(labels), plot_dir / name, title,
                                           **options))
    return made


def copyright_sections(run: Run) -> list[Section]:
    before, after = run.pair("copyright")
    final = run.evals["copyright"].get(run.final_tag("copyright"), {})
    summary = run.summary or {}
    paragraphs = []
    if before == "finetuned" and after:
        paragraphs.append(
            "The model was fine-tuned on the book until it reproduced it ('before' = fine-tuned), then part of "
            "the book was unlearned ('after' = unlearned); 'original' is the model before it saw the book. Each "
            "passage's opening is the prompt; the model's greedy continuation is compared with the true one.")
    else:
        paragraphs.append("Each passage's opening is the prompt; the model's greedy continuation is compared with the "
                          "true one.")
    paragraphs.append(
        "forget: passages that were unlearned. unseen: passages of the book that were memorised but not "
        "unlearned (does forgetting spread to the rest of the book?). retain: passages the model must keep; "
        "their pairs were the retain set of the KL term.")
    threshold = number(summary.get("bleu_threshold"))
    threshold = threshold if threshold is not None else number(final.get("bleu_threshold"))
    recipe = summary.get("recipe") if isinstance(summary.get("recipe"), dict) else run.config
    quantile = number(((recipe or {}).get("eval") or {}).get("bleu_quantile")) if isinstance(recipe, dict) else None
    if threshold is not None:
        paragraphs.append(
            f"A leak is a continuation whose BLEU exceeds {threshold:.3f}"
            + (f", the {quantile:.0%} quantile of BLEU between unrelated continuations of the same book"
               if quantile is not None else ", a chance level calibrated on unrelated continuations of the same book")
            + ". General perplexity is measured on everyday text that is not from the book; the degenerate rate "
            "on answers to everyday prompts.")
    targets = summary.get("targets") if isinstance(summary.get("targets"), dict) else {}
    sections = [Section(title="How to read this", text="\n\n".join(paragraphs),
                        rows=[{"target": name, "met": ok} for name, ok in targets.items()])]
    figures = summary.get("figures") if isinstance(summary.get("figures"), dict) else {}
    if figures:
        sections.append(Section(title="Targets and figures", rows=[{"figure": k, "value": v if not isinstance(v, dict) else str(
            {kk: round(vv, 4) if isinstance(vv, float) else vv for kk, vv in v.items()})} for k, v in figures.items()]))
    for title, split, count in (
        ("Unlearned passages (forget)", "forget", 6),
        ("Memorised, not unlearned (unseen)", "unseen", 4),
        ("Kept passages (retain)", "retain", 4),
    ):
        examples = copyright_examples(run, split, count)
        if examples:
            sections.append(Section(title=title, examples=examples, answer_labels=_labels(run, "copyright")))
    everyday = _everyday_examples(run, 6)
    if everyday:
        sections.append(Section(title="Everyday prompts", examples=everyday, answer_labels=_labels(run, "copyright")))
    return sections


def _labels(run: Run, suite: str) -> tuple[str, str]:
    return ("before", "after") if run.pair(suite)[1] else ("before", f"answer ({tag_label(run.final_tag(suite))})")


SUITE_PLOTS = {"harmful": harmful_plots, "copyright": copyright_plots}
SUITE_SECTIONS = {"harmful": harmful_sections, "copyright": copyright_sections}
SUITE_JUDGE = {"copyright": "BLEU/ROUGE-L against the book"}
