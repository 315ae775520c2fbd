"""What a report shows for the benchmark suites: TOFU, membership inference (MIA), MUSE and lm-eval.

The suites' result files (``eval/<suite>_<tag>.json`` + ``generations/<suite>_<tag>_<split>.jsonl``)
are read as data, as for the harmful and copyright suites (``report/suites.py``). A run's page gets,
per suite: a headline table (one column per evaluation tag, the change of a before/after pair, and the
retain model's figures where the result names a readable retain reference), how to read it, and
per-item tables ordered worst first:

- TOFU forget items: highest answer probability first (the items the model still knows best),
  ties broken by ROUGE-L recall; retain, real-authors and world-facts items: lowest answer
  probability first (what the model lost that it should keep).
- MIA items: most member-like first, i.e. highest LOSS-attack score (every attack scores "higher =
  more likely a member"); without a ``loss`` score, the first attack score the row has.
- MUSE forget items: highest ROUGE-L first (most remembered); retain items: lowest first; verbatim
  and knowledge rows (``kind``) in separate tables.
- lm-eval samples: wrong answers first, then right ones.

Each table shows at most ``ITEM_COUNT`` rows and says how many there are.

The comparison of several runs plots forget quality (log x axis) against model utility, one point
per run, and tabulates each run's TOFU summary beside its MIA AUC and PrivLeak and the retain model's.
A run's role (``retain``, ``full`` or an unlearned model) is, first match wins: the ``role`` field
of its ``summary.json``; the ``role`` field of its TOFU result's ``settings``; its folder name
containing ``retain``; its folder name containing ``full`` (case-insensitive).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from obliviate.report import robustness_section
from obliviate.report.html import Section
from obliviate.report.run_folder import Run, number
from obliviate.report.suites import items, metric, tag_label

BENCHMARK_SUITES = ("tofu", "mia", "muse", "lm-eval")
ITEM_COUNT = 10  # rows per per-item table
TEXT_LIMIT = 160  # characters of a question, answer or generation shown in a table cell
ROLES = ("retain", "full")
# What scores each suite (every report names its judge).
BENCHMARK_JUDGE = {
    "tofu": "TOFU metrics (answer probability, ROUGE-L, truth ratio; no judge model)",
    "mia": "membership-inference attacks (ROC-AUC, no judge model)",
    "muse": "MUSE metrics (ROUGE-L; no judge model)",
    "lm-eval": "lm-evaluation-harness task metrics",
}

TOFU_SPLITS = ("forget", "retain", "real-authors", "world-facts")
# (label, split, key, note) of the TOFU headline table; "summary" rows come first.
TOFU_HEADLINE = (
    ("forget quality", "summary", "forget_quality", "KS-test p-value vs the retain model; higher is better, 1 = retain"),
    ("model utility", "summary", "model_utility", "harmonic mean over retain, real-authors, world-facts; higher is better"),
    ("forget truth ratio", "summary", "forget_truth_ratio", "mean min(R, 1/R) on forget items"),
    ("forget probability", "summary", "forget_probability", "lower: forgotten"),
    ("forget ROUGE-L recall", "summary", "forget_rouge_l_recall", "lower: forgotten"),
) + tuple(
    (label, split, key, "")
    for split in TOFU_SPLITS
    for key, label in (
        ("probability", "answer probability"),
        ("rouge_l_recall", "ROUGE-L recall"),
        ("truth_ratio", "truth ratio"),
        ("paraphrased_probability", "paraphrased answer probability"),
        ("perturbed_probability", "perturbed answer probability"),
        ("extraction_strength", "extraction strength"),
        ("exact_memorisation", "exact memorisation"),
    )
)
MIA_ATTACKS = (
    ("loss", "LOSS"),
    ("zlib", "zlib"),
    ("min_k", "Min-K%"),
    ("min_k_plus_plus", "Min-K%++"),
    ("gradnorm", "gradient norm"),
    ("reference", "reference model"),
)
MIA_HEADLINE = tuple(
    (f"AUC ({label})", "summary", f"auc_{key}", "forget vs holdout; 0.5 = cannot tell them apart") for key, label in MIA_ATTACKS
) + tuple(
    (f"PrivLeak ({label})", "summary", f"privleak_{key}", "relative to the retain model; 0 = like it") for key, label in MIA_ATTACKS
)
MUSE_HEADLINE = (
    ("verbatim memorisation (forget)", "summary", "verbmem_forget", "ROUGE-L of continuations; lower: forgotten"),
    ("knowledge memorisation (forget)", "summary", "knowmem_forget", "QA ROUGE-L; lower: forgotten"),
    ("knowledge memorisation (retain)", "summary", "knowmem_retain", "QA ROUGE-L; higher: kept"),
    ("PrivLeak", "summary", "privleak", "relative to the retain model; 0 = like it"),
    ("utility", "summary", "utility", "higher is better"),
    ("MIA AUC (Min-K%)", "summary", "auc_min_k", "forget vs holdout; 0.5 = cannot tell them apart"),
    ("verbatim ROUGE-L", "forget", "verbmem_rouge_l", ""),
    ("knowledge ROUGE-L", "forget", "knowmem_rouge_l", ""),
    ("verbatim ROUGE-L", "retain", "verbmem_rouge_l", ""),
    ("knowledge ROUGE-L", "retain", "knowmem_rouge_l", ""),
)
# The MIA attack shown in the comparison table: the first one every compared run has.
HEADLINE_ATTACKS = ("min_k_plus_plus", "min_k", "loss", "zlib", "gradnorm", "reference")

TOFU_HOW_TO_READ = (
    "Forget quality is the p-value of a two-sample Kolmogorov-Smirnov test between this model's truth ratios on "
    "the forget items and the retain model's (a model trained without the forget set): a high value (above 0.05) "
    "means the two cannot be told apart, which is the goal; the retain model scores 1 against itself. It is '—' "
    "when no retain reference was given. Model utility is the harmonic mean of answer probability, ROUGE-L recall "
    "and truth ratio over the retain, real-authors and world-facts splits: it should stay where the full model had "
    "it.\n\n"
    "Answer probability is length-normalised; the truth ratio compares the probability of perturbed (wrong) "
    "answers with that of a paraphrased correct answer. Extraction strength and exact memorisation measure how much "
    "of the answer the model reproduces token by token. The docs define each figure beside the TOFU paper's."
)
MIA_HOW_TO_READ = (
    "Each attack scores every text; the ROC-AUC says how well the score separates the forget texts (seen in "
    "training, then unlearned) from holdout texts the model never saw. 0.5 means the attack cannot tell them apart. "
    "PrivLeak compares that AUC with the retain model's (the relative difference, as the docs define it): near 0 "
    "is best, a large positive value means the forget set still leaks, a large negative one that unlearning went "
    "too far, which an attacker can detect too. '—' means no retain result was given."
)
MUSE_HOW_TO_READ = (
    "Verbatim memorisation: ROUGE-L between the model's continuation of a forget passage's opening and the true "
    "continuation. Knowledge memorisation: ROUGE-L of answers to questions about the forget (or retain) text. "
    "Unlearning should lower both on forget and keep knowledge on retain; PrivLeak near 0 means the forget texts look "
    "like unseen ones to a membership attack, as for the retain model."
)
LM_EVAL_HOW_TO_READ = (
    "Figures as lm-evaluation-harness reports them (its '_stderr' columns are its standard errors). WMDP tasks "
    "measure hazardous knowledge: lower accuracy after unlearning is the goal (25% is chance on four options). "
    "General tasks such as MMLU measure utility: they should not drop."
)


def _clip(value: Any, limit: int = TEXT_LIMIT) -> str:
    text = "" if value is None else (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first(row: dict[str, Any], keys: Sequence[str]) -> Any:
    return next((row[k] for k in keys if row.get(k) is not None), None)


def result_of(run: Run, suite: str, tag: Optional[str]) -> dict[str, Any]:
    found = run.evals.get(suite, {}).get(tag or "", {}) if tag is not None else {}
    return found if isinstance(found, dict) else {}


def summary_value(run: Run, suite: str, tag: Optional[str], key: str) -> Any:
    """A raw ``metrics["summary"]`` entry (numbers, strings such as a reference path, or None)."""
    metrics = result_of(run, suite, tag).get("metrics")
    summary = metrics.get("summary") if isinstance(metrics, dict) else None
    return summary.get(key) if isinstance(summary, dict) else None


def retain_reference(run: Run, suite: str, tag: Optional[str]) -> Optional[dict[str, Any]]:
    """The retain model's result a suite was computed against, read from the path its summary records.

    A relative path is tried as given (from the working folder), then from the run folder and its
    parent; an unreadable or missing file gives None (the report shows what it has)."""
    reference = summary_value(run, suite, tag, "retain_reference")
    if not isinstance(reference, str) or not reference:
        return None
    path = Path(reference)
    candidates = [path] if path.is_absolute() else [path, run.path / path, run.path.parent / path]
    for candidate in candidates:
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                return None
            return data if isinstance(data, dict) else None
    return None


def _reference_metric(reference: Optional[dict[str, Any]], split: str, key: str) -> Optional[float]:
    metrics = reference.get("metrics") if isinstance(reference, dict) else None
    values = metrics.get(split) if isinstance(metrics, dict) else None
    return number(values.get(key)) if isinstance(values, dict) else None


def headline_table(run: Run, suite: str, spec: Sequence[tuple[str, str, str, str]], *,
                   keep: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per figure of ``spec``: a column per tag, the change of a before/after pair and the
    retain model's value; rows no evaluation has are left out unless their key is in ``keep`` (they
    then read "—")."""
    tags = run.tags(suite)
    before, after = run.pair(suite)
    reference = retain_reference(run, suite, run.final_tag(suite))
    rows = []
    for label, split, key, note in spec:
        values = {tag_label(tag): metric(run, suite, tag, split, key) for tag in tags}
        retain = _reference_metric(reference, split, key)
        if all(v is None for v in values.values()) and retain is None and key not in keep:
            continue
        row: dict[str, Any] = {"metric": label, "split": split, **values}
        if before and after:
            b, a = values[tag_label(before)], values[tag_label(after)]
            row["change"] = a - b if a is not None and b is not None else ""
        if reference is not None:
            row["retain model"] = retain
        if note:
            row["note"] = note
        rows.append(row)
    return rows


def _lm_eval_rows(run: Run) -> list[dict[str, Any]]:
    """Every task's metrics (stderr beside its metric), one column per tag."""
    tags = run.tags("lm-eval")
    before, after = run.pair("lm-eval")
    tasks: list[str] = []
    keys: dict[str, list[str]] = {}
    for tag in tags:
        metrics = result_of(run, "lm-eval", tag).get("metrics")
        for task, values in (metrics.items() if isinstance(metrics, dict) else ()):
            if task == "summary" or not isinstance(values, dict):
                continue
            if task not in tasks:
                tasks.append(task)
            for key, value in values.items():
                if key != "count" and not key.endswith("_stderr") and number(value) is not None \
                        and key not in keys.setdefault(task, []):
                    keys[task].append(key)
    rows = []
    final = run.final_tag("lm-eval")
    for task in tasks:
        for key in keys.get(task, []):
            values = {tag_label(tag): metric(run, "lm-eval", tag, task, key) for tag in tags}
            row: dict[str, Any] = {"task": task, "metric": key, **values}
            if before and after:
                b, a = values[tag_label(before)], values[tag_label(after)]
                row["change"] = a - b if a is not None and b is not None else ""
            row["stderr"] = metric(run, "lm-eval", final, task, f"{key}_stderr")
            row["count"] = metric(run, "lm-eval", final, task, "count")
            rows.append(row)
    return rows


def _lm_eval_summary_rows(run: Run) -> list[dict[str, Any]]:
    tags = run.tags("lm-eval")
    before, after = run.pair("lm-eval")
    names: list[str] = []
    for tag in tags:
        metrics = result_of(run, "lm-eval", tag).get("metrics")
        summary = metrics.get("summary") if isinstance(metrics, dict) else None
        names += [k for k in (summary or {}) if k not in names]
    rows = []
    for name in names:
        values = {tag_label(tag): metric(run, "lm-eval", tag, "summary", name) for tag in tags}
        row: dict[str, Any] = {"metric": name, "split": "summary", **values}
        if before and after:
            b, a = values[tag_label(before)], values[tag_label(after)]
            row["change"] = a - b if a is not None and b is not None else ""
        rows.append(row)
    return rows


def benchmark_headline_rows(run: Run, suite: str) -> list[dict[str, Any]]:
    """The few figures of a suite that go into the page's headline table."""
    if suite == "tofu":
        return headline_table(run, suite, TOFU_HEADLINE[:3], keep=("forget_quality",))
    if suite == "mia":  # the LOSS and Min-K%++ attacks; the suite's section has every attack
        return headline_table(run, suite, [r for r in MIA_HEADLINE if r[2].endswith(("_loss", "_min_k_plus_plus"))])
    if suite == "muse":
        return headline_table(run, suite, MUSE_HEADLINE[:5])
    if suite == "lm-eval":
        return _lm_eval_summary_rows(run)
    if suite == "robustness":
        return robustness_section.headline_rows(run)
    return []


# ---------------------------------------------------------------------------------------------
# Per-item tables


def _ordered(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any], *, highest_first: bool) -> list[dict[str, Any]]:
    """Rows sorted by ``key`` (worst first as the caller defines it), ties in file order; rows whose
    key is None go last."""
    with_value = [r for r in rows if key(r) is not None]
    with_value.sort(key=key, reverse=highest_first)  # a reversed sort keeps ties in order too
    return with_value + [r for r in rows if key(r) is None]


def _before_by_index(run: Run, suite: str, split: str) -> dict[Any, dict[str, Any]]:
    before, after = run.pair(suite)
    if not (before and after):
        return {}
    return {r.get("index", i): r for i, r in enumerate(items(run, suite, before, split))}


def _item_section(title: str, rows: list[dict[str, Any]], total: int, order: str) -> Section:
    shown = f"{len(rows)} of {total} items" if total > len(rows) else f"all {total} items"
    return Section(title=title, text=f"{order}; {shown}.", rows=rows)


def tofu_item_rows(run: Run, split: str, tag: Optional[str] = None, count: int = ITEM_COUNT) -> list[dict[str, Any]]:
    """A TOFU split's items, worst first: forget by highest answer probability (ties: ROUGE-L recall),
    the other splits by lowest answer probability."""
    tag = tag or run.final_tag("tofu")
    forget = split == "forget"

    def key(row):
        probability = number(row.get("probability"))
        if probability is None:
            return None
        return (probability, number(row.get("rouge_l_recall")) or 0.0) if forget else probability

    rows = _ordered(items(run, "tofu", tag, split), key, highest_first=forget)[:count]
    before = _before_by_index(run, "tofu", split)
    out = []
    for i, r in enumerate(rows):
        row: dict[str, Any] = {"#": r.get("index", i), "question": _clip(_first(r, ("question", "prompt", "text"))),
                               "answer": _clip(r.get("answer")), "generation": _clip(r.get("generation"))}
        old = before.get(r.get("index"))
        if old is not None:
            row["probability before"] = number(old.get("probability"))
        row["probability"] = number(r.get("probability"))
        row["ROUGE-L recall"] = number(r.get("rouge_l_recall"))
        truth = r.get("truth_ratio_raw", r.get("truth_ratio"))
        if truth is not None or forget:
            row["truth ratio"] = number(truth)
        if split in ("forget", "retain"):
            row["extraction strength"] = number(r.get("extraction_strength"))
        out.append(row)
    return out


def mia_score(row: dict[str, Any]) -> Optional[float]:
    """The score that orders MIA items: the LOSS attack's, else the first attack score the row has."""
    for key, _ in MIA_ATTACKS:
        if number(row.get(key)) is not None:
            return number(row[key])
    return None


def mia_item_rows(run: Run, split: str = "forget", count: int = ITEM_COUNT) -> list[dict[str, Any]]:
    """MIA items, most member-like (highest LOSS score) first, with every attack's score."""
    rows = _ordered(items(run, "mia", run.final_tag("mia"), split), mia_score, highest_first=True)[:count]
    out = []
    for i, r in enumerate(rows):
        row: dict[str, Any] = {"#": r.get("index", i), "question": _clip(_first(r, ("question", "prompt", "text")))}
        if r.get("answer") is not None:
            row["answer"] = _clip(r["answer"])
        for key, label in MIA_ATTACKS:
            if key in r:
                row[label] = number(r.get(key))
        out.append(row)
    return out


MUSE_ITEM_SCORES = ("rouge_l", "verbmem_rouge_l", "knowmem_rouge_l", "rouge_l_recall")
MUSE_KINDS = (("verbmem", "verbatim"), ("knowmem", "knowledge"))


def _muse_score(row: dict[str, Any]) -> Optional[float]:
    return next((number(row[k]) for k in MUSE_ITEM_SCORES if number(row.get(k)) is not None), None)


def muse_item_rows(run: Run, split: str, kind: Optional[str] = None, count: int = ITEM_COUNT) -> list[dict[str, Any]]:
    """MUSE items of one ``kind`` (verbmem, knowmem; None: all): forget by highest ROUGE-L first (most
    remembered), retain by lowest first."""
    rows = [r for r in items(run, "muse", run.final_tag("muse"), split) if kind is None or r.get("kind") == kind]
    rows = _ordered(rows, _muse_score, highest_first=split == "forget")[:count]
    out = []
    for i, r in enumerate(rows):
        row: dict[str, Any] = {"#": r.get("index", i),
                               "prompt": _clip(_first(r, ("question", "prompt", "prefix", "text"))),
                               "answer": _clip(_first(r, ("answer", "truth", "continuation"))),
                               "generation": _clip(r.get("generation"))}
        row["ROUGE-L"] = _muse_score(r)
        out.append(row)
    return out


LM_EVAL_CORRECT = ("acc", "exact_match", "acc_norm", "correct")


def _correct(row: dict[str, Any]) -> Optional[float]:
    value = _first(row, LM_EVAL_CORRECT)
    if isinstance(value, bool):
        return float(value)
    return number(value)


def lm_eval_item_rows(run: Run, task: str, count: int = ITEM_COUNT) -> list[dict[str, Any]]:
    """A task's samples, wrong answers first (lowest score first), then right ones."""
    rows = _ordered(items(run, "lm-eval", run.final_tag("lm-eval"), task), _correct, highest_first=False)[:count]
    out = []
    for i, r in enumerate(rows):
        score = _correct(r)
        out.append({"#": r.get("index", i), "question": _clip(_first(r, ("question", "prompt", "doc", "input"))),
                    "answer": _clip(_first(r, ("answer", "target"))),
                    "model": _clip(_first(r, ("chosen", "generation", "response", "filtered_resps", "resps"))),
                    "result": None if score is None else ("right" if score >= 1.0 else "wrong" if score <= 0.0 else score)})
    return out


# ---------------------------------------------------------------------------------------------
# Sections of a run's page


def _settings_line(run: Run, suite: str) -> str:
    parts = []
    for tag in run.tags(suite):
        result = result_of(run, suite, tag)
        bits = []
        if result.get("model"):
            bits.append(f"model {result['model']}")
        if number(result.get("seconds")) is not None:
            bits.append(f"{result['seconds']:.1f} s")
        if bits:
            parts.append(f"{tag_label(tag)}: {', '.join(bits)}")
    return "; ".join(parts)


def _fmt(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.4g}"


def tofu_plots(run: Run, plot_dir: Path) -> list[Path]:
    """The forget truth ratios this run's forget quality compares: its own against the retain model's."""
    from obliviate.report import plots

    final = run.final_tag("tofu")

    def ratios(result):
        found = result.get("forget_truth_ratios") if isinstance(result, dict) else None
        return [v for v in (number(x) for x in found or []) if v is not None]

    series = {f"this run ({tag_label(final)})": ratios(result_of(run, "tofu", final)) or
              [v for v in (number(r.get("truth_ratio_raw")) for r in items(run, "tofu", final, "forget")) if v is not None]}
    reference = ratios(retain_reference(run, "tofu", final))
    if reference:
        series["retain model"] = reference
    if not any(series.values()):
        return []
    return [plots.histogram(series, plot_dir / "tofu_forget_truth_ratio.png",
                            "Forget truth ratios: the samples the KS test compares", "truth ratio (raw)",
                            threshold=1.0, threshold_label="ratio")]


def tofu_sections(run: Run, plot_dir: Path) -> list[Section]:
    final = run.final_tag("tofu")
    quality = metric(run, "tofu", final, "summary", "forget_quality")
    utility = metric(run, "tofu", final, "summary", "model_utility")
    reference = summary_value(run, "tofu", final, "retain_reference")
    lead = (f"Forget quality {_fmt(quality)} · model utility {_fmt(utility)} ({tag_label(final)}), "
            + (f"against the retain reference {reference}." if reference else "without a retain reference "
               "(forget quality needs one: eval --retain-result).")
            )
    text = "\n\n".join(p for p in (lead, TOFU_HOW_TO_READ, _settings_line(run, "tofu")) if p)
    sections = [Section(title="TOFU: forget quality and model utility", text=text,
                        rows=headline_table(run, "tofu", TOFU_HEADLINE, keep=("forget_quality", "model_utility")),
                        plots=tofu_plots(run, plot_dir))]
    orders = {"forget": "Highest answer probability first: the forget items the model still knows best"}
    for split in TOFU_SPLITS:
        all_rows = items(run, "tofu", final, split)
        if all_rows:
            order = orders.get(split, "Lowest answer probability first: what the model lost that it should keep")
            sections.append(_item_section(f"TOFU {split} items", tofu_item_rows(run, split), len(all_rows), order))
    return sections


def mia_sections(run: Run, plot_dir: Path) -> list[Section]:
    from obliviate.report import plots

    final = run.final_tag("mia")
    reference = summary_value(run, "mia", final, "retain_reference")
    text = "\n\n".join(p for p in (
        MIA_HOW_TO_READ,
        f"Retain reference: {reference}." if reference else "No retain reference: PrivLeak is '—'.",
        _settings_line(run, "mia")) if p)
    made = []
    scores = {split: [v for v in (mia_score(r) for r in items(run, "mia", final, split)) if v is not None]
              for split in ("forget", "holdout")}
    if all(scores.values()):
        made.append(plots.histogram(scores, plot_dir / "mia_scores.png",
                                    "Membership scores (LOSS attack): forget against holdout",
                                    "score (higher: more like a training member)"))
    sections = [Section(title="Membership inference (MIA)", text=text, rows=headline_table(run, "mia", MIA_HEADLINE),
                        plots=made)]
    for split, order in (("forget", "Most member-like first (highest LOSS score): the forget items that leak most"),
                         ("holdout", "Most member-like first: unseen texts an attack would mistake for training data")):
        all_rows = items(run, "mia", final, split)
        if all_rows:
            sections.append(_item_section(f"MIA {split} items", mia_item_rows(run, split), len(all_rows), order))
    return sections


def muse_sections(run: Run, plot_dir: Path) -> list[Section]:
    final = run.final_tag("muse")
    text = "\n\n".join(p for p in (MUSE_HOW_TO_READ, _settings_line(run, "muse")) if p)
    sections = [Section(title="MUSE: verbatim and knowledge memorisation", text=text,
                        rows=headline_table(run, "muse", MUSE_HEADLINE, keep=("privleak",)))]
    for split, order in (("forget", "Highest ROUGE-L first: the most remembered forget items"),
                         ("retain", "Lowest ROUGE-L first: what the model lost that it should keep")):
        all_rows = items(run, "muse", final, split)
        kinds = [(k, label) for k, label in MUSE_KINDS if any(r.get("kind") == k for r in all_rows)]
        for kind, label in kinds or [(None, "")]:
            count = sum(1 for r in all_rows if kind is None or r.get("kind") == kind)
            if count:
                title = f"MUSE {split} items" + (f" ({label})" if label else "")
                sections.append(_item_section(title, muse_item_rows(run, split, kind), count, order))
    return sections


def lm_eval_sections(run: Run, plot_dir: Path) -> list[Section]:
    final = run.final_tag("lm-eval")
    text = "\n\n".join(p for p in (LM_EVAL_HOW_TO_READ, _settings_line(run, "lm-eval")) if p)
    sections = [Section(title="lm-evaluation-harness tasks", text=text, rows=_lm_eval_rows(run))]
    for task, rows in (result_of(run, "lm-eval", final).get("items") or {}).items():
        rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
        if not rows:
            continue
        wrong = sum(1 for r in rows if (_correct(r) or 0.0) <= 0.0 and _correct(r) is not None)
        right = sum(1 for r in rows if (_correct(r) or 0.0) >= 1.0)
        order = f"Wrong answers first ({wrong} wrong, {right} right)"
        sections.append(_item_section(f"lm-eval {task} samples", lm_eval_item_rows(run, task), len(rows), order))
    return sections


BENCHMARK_SECTIONS: dict[str, Callable[[Run, Path], list[Section]]] = {
    "tofu": tofu_sections, "mia": mia_sections, "muse": muse_sections, "lm-eval": lm_eval_sections,
    "robustness": robustness_section.robustness_sections,
}


# ---------------------------------------------------------------------------------------------
# Several runs


def run_role(run: Run) -> Optional[str]:
    """``retain``, ``full`` or None (an unlearned model); the rule is in the module docstring."""
    for source in ((run.summary or {}).get("role"),
                   (result_of(run, "tofu", run.final_tag("tofu")).get("settings") or {}).get("role")):
        if isinstance(source, str) and source.strip().lower() in ROLES:
            return source.strip().lower()
    name = run.name.lower()
    return next((role for role in ROLES if role in name), None)


def quality_utility_points(runs: Sequence[Run], names: Sequence[str]) -> list[dict[str, Any]]:
    """One point per run with a TOFU result: label, role, forget quality (None: no reference) and utility."""
    points = []
    for run, name in zip(runs, names):
        if "tofu" not in run.evals:
            continue
        tag = run.final_tag("tofu")
        role = run_role(run)
        quality = metric(run, "tofu", tag, "summary", "forget_quality")
        if quality is None and role == "retain":
            quality = 1.0  # the retain model is the reference: its forget quality is 1 by definition
        points.append({"label": name, "role": role, "forget_quality": quality,
                       "model_utility": metric(run, "tofu", tag, "summary", "model_utility")})
    return points


def _headline_attack(runs: Sequence[Run]) -> Optional[str]:
    mia_runs = [r for r in runs if "mia" in r.evals]

    def has(run, attack):
        return metric(run, "mia", run.final_tag("mia"), "summary", f"auc_{attack}") is not None

    return (next((a for a in HEADLINE_ATTACKS if all(has(r, a) for r in mia_runs)), None)
            or next((a for a in HEADLINE_ATTACKS if any(has(r, a) for r in mia_runs)), None))


def benchmark_comparison_rows(runs: Sequence[Run], names: Sequence[str]) -> list[dict[str, Any]]:
    """A row per run with TOFU or MIA results: role, forget quality, model utility, forget truth ratio,
    and the headline attack's AUC and PrivLeak beside the retain model's AUC (the compared run whose
    role is retain, else the retain reference the MIA result names)."""
    attack = _headline_attack(runs)
    label = dict(MIA_ATTACKS).get(attack or "", attack)
    retain_runs = [r for r in runs if run_role(r) == "retain" and "mia" in r.evals]
    retain_auc = (metric(retain_runs[0], "mia", retain_runs[0].final_tag("mia"), "summary", f"auc_{attack}")
                  if retain_runs and attack else None)
    rows = []
    for run, name in zip(runs, names):
        if "tofu" not in run.evals and "mia" not in run.evals:
            continue
        tofu, mia = run.final_tag("tofu"), run.final_tag("mia")
        row: dict[str, Any] = {"run": name, "role": run_role(run) or "unlearned"}
        if any("tofu" in r.evals for r in runs):
            row["forget quality"] = metric(run, "tofu", tofu, "summary", "forget_quality")
            row["model utility"] = metric(run, "tofu", tofu, "summary", "model_utility")
            row["forget truth ratio"] = metric(run, "tofu", tofu, "summary", "forget_truth_ratio")
        if attack:
            row[f"MIA AUC ({label})"] = metric(run, "mia", mia, "summary", f"auc_{attack}")
            reference = retain_auc
            if reference is None and mia is not None:
                reference = _reference_metric(retain_reference(run, "mia", mia), "summary", f"auc_{attack}")
            row[f"retain AUC ({label})"] = reference
            row[f"PrivLeak ({label})"] = metric(run, "mia", mia, "summary", f"privleak_{attack}")
        rows.append(row)
    return rows


BENCHMARK_COMPARISON_TEXT = (
    "Forget quality against model utility: one point per run with a TOFU result. Forget quality (log scale) is "
    "the KS-test p-value of the run's forget truth ratios against the retain model's; the retain model sits at 1 by "
    "definition and the full model (trained on the forget set) far to the left. The best unlearning runs sit at the "
    "upper right: close to the retain model in forget quality while keeping the full model's utility. A run's role "
    "(retain, full, unlearned) comes from the 'role' field of its summary.json or TOFU settings, else from its "
    "folder name containing 'retain' or 'full'. Runs without a forget quality (no retain reference) are listed in "
    "the table but not plotted. The MIA columns show the same attack for every run, beside the retain model's AUC "
    "(PrivLeak near 0 is best)."
)


__all__ = ["BENCHMARK_SUITES", "BENCHMARK_SECTIONS", "BENCHMARK_JUDGE", "BENCHMARK_COMPARISON_TEXT",
           "benchmark_headline_rows", "benchmark_comparison_rows", "quality_utility_points", "run_role",
           "tofu_item_rows", "mia_item_rows", "muse_item_rows", "lm_eval_item_rows", "retain_reference"]
