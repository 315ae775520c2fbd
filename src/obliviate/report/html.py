"""Self-contained HTML reports: one file, inline CSS, plots embedded as base64 PNG, no scripts.

Model outputs are untrusted text (an unlearned model may emit anything, markup included), so the
template is rendered with autoescaping on and nothing is marked safe except the base64 image
data this module encodes itself. The report opens offline: no CDN, no fonts, no JavaScript.
"""

from __future__ import annotations

import base64
import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import jinja2
import yaml

from obliviate.io import atomic_write_text

REPORT_NAME = "report.html"
PLOTS_DIR = "plots"

# Label words that colour an example's verdict badge when no explicit flag is given.
_BAD_WORDS = ("harmful", "unsafe", "leak", "jailbroken")
_GOOD_WORDS = ("refus", "safe", "harmless", "on-topic", "on topic", "forgotten")
_WARN_WORDS = ("off-topic", "off topic", "degenerate", "gibberish", "empty")
VERDICT_CLASSES = ("good", "bad", "warn", "neutral")
# Meta keys shown in the page header (in this order); every other key goes to "Run details".
HEADLINE_KEYS = ("model", "method", "judge", "steps", "lr", "LoRA")


@dataclass
class Section:
    """A titled block of the report: free text, an optional table, plots and example answers.

    ``text`` is plain text (escaped; blank lines separate paragraphs). ``rows`` is a table as a
    list of dicts (columns are the union of keys, in first-seen order). ``examples`` has the
    same shape as ``write_report``'s ``examples``.
    """

    title: str
    text: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    plots: list[str | Path] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    #: Headers of the two answer columns; examples without a ``before`` key get one answer column
    #: headed by the last label (a single evaluation has nothing to compare with).
    answer_labels: tuple[str, str] = ("before", "after")


def format_value(value: Any) -> str:
    """How a table cell prints: 4 significant digits for floats, n/a for NaN, — for None."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.4g}"
    if isinstance(value, int):
        return str(value)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _table(rows: Sequence[Mapping[str, Any]], add_change: bool) -> dict[str, Any] | None:
    """Columns and pre-formatted cells; adds ``change = after − before`` where both are numbers."""
    if not rows:
        return None
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    derive = add_change and "before" in columns and "after" in columns and "change" not in columns
    if derive:
        columns.insert(columns.index("after") + 1, "change")
    body = []
    for row in rows:
        cells = []
        for column in columns:
            if derive and column == "change":
                before, after = row.get("before"), row.get("after")
                text = f"{after - before:+.4g}" if _is_number(before) and _is_number(after) else ""
                cells.append({"text": text, "numeric": True})
            else:
                value = row.get(column, "")
                text = format_value(value) if value != "" else ""
                if column == "change" and _is_number(value):
                    text = f"{value:+.4g}"  # a given change reads like a derived one
                cells.append({"text": text, "numeric": _is_number(value)})
        body.append(cells)
    # A column is right-aligned (header too) when every non-empty cell in it is a number.
    numeric = [
        any(r[i]["text"] for r in body) and all(r[i]["numeric"] or not r[i]["text"] for r in body)
        for i in range(len(columns))
    ]
    return {"columns": columns, "rows": body, "numeric": numeric}


def _verdict_class(label: Any, flag: Any, explicit: Any = None) -> str:
    if explicit in VERDICT_CLASSES:
        return str(explicit)
    if isinstance(flag, bool):
        return "bad" if flag else "good"
    text = str(label or "").lower()
    if any(w in text for w in _WARN_WORDS):
        return "warn"
    if any(w in text for w in _BAD_WORDS) and "harmless" not in text and "not harmful" not in text:
        return "bad"
    if any(w in text for w in _GOOD_WORDS):
        return "good"
    return "neutral"


def _examples(examples: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Normalise example dicts: prompt, before, after, labels and their badge colours."""
    out = []
    for ex in examples:
        out.append({
            "single": "before" not in ex,
            "prompt": str(ex.get("prompt", "")),
            "before": str(ex.get("before", "")),
            "after": str(ex.get("after", "")),
            "before_label": "" if ex.get("before_label") is None else str(ex.get("before_label")),
            "after_label": "" if ex.get("after_label") is None else str(ex.get("after_label")),
            "before_class": _verdict_class(ex.get("before_label"), ex.get("before_harmful"), ex.get("before_class")),
            "after_class": _verdict_class(ex.get("after_label"), ex.get("after_harmful"), ex.get("after_class")),
            "split": "" if ex.get("split") is None else str(ex.get("split")),
        })
    return out


def _embed_plots(paths: Iterable[str | Path], plots_dir: Path) -> list[dict[str, str]]:
    """Base64 PNGs for the page, each also kept as ``plots/<name>.png`` beside the report."""
    embedded = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise FileNotFoundError(f"plot {path} does not exist")
        kept = plots_dir / path.name
        if path.resolve() != kept.resolve():
            plots_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, kept)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        embedded.append({"name": path.stem.replace("_", " "), "file": f"{PLOTS_DIR}/{path.name}", "data": data})
    return embedded


def _config_text(config: Any) -> str:
    if config is None or config == {}:
        return ""
    if isinstance(config, str):
        return config
    if hasattr(config, "model_dump"):  # a pydantic config model
        config = config.model_dump(mode="json")
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _environment() -> jinja2.Environment:
    # autoescape=True for every template, whatever its extension: model text must never become markup.
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("obliviate.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["paragraphs"] = lambda text: [p.strip() for p in str(text).split("\n\n") if p.strip()]
    return env


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("obliviate")
    except Exception:  # running from a source tree without metadata
        return "dev"


def render_report(
    *,
    title: str,
    summary_rows: Sequence[Mapping[str, Any]] = (),
    sections: Sequence[Section] = (),
    plots: Sequence[str | Path] = (),
    examples: Sequence[Mapping[str, Any]] = (),
    meta: Mapping[str, Any] | None = None,
    plots_dir: Path,
) -> str:
    """The report's HTML as a string (plots are copied into ``plots_dir``)."""
    meta = dict(meta or {})
    config_text = _config_text(meta.pop("config", None))
    headline = {key: meta.pop(key) for key in HEADLINE_KEYS if key in meta}
    context = {
        "title": title,
        "headline": {k: format_value(v) for k, v in headline.items()},
        "judge": format_value(headline.get("judge")) if "judge" in headline else "",
        "other_meta": {str(k): format_value(v) for k, v in meta.items()},
        "config_text": config_text,
        "summary": _table(summary_rows, add_change=True),
        "plots": _embed_plots(plots, plots_dir),
        "sections": [
            {
                "title": s.title,
                "text": s.text,
                "table": _table(s.rows, add_change=True),
                "plots": _embed_plots(s.plots, plots_dir),
                "examples": _examples(s.examples),
                "answer_labels": list(s.answer_labels),
            }
            for s in sections
        ],
        "examples": _examples(examples),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": _version(),
    }
    return _environment().get_template("report.html").render(**context)


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    summary_rows: Sequence[Mapping[str, Any]] = (),
    sections: Sequence[Section] = (),
    plots: Sequence[str | Path] = (),
    examples: Sequence[Mapping[str, Any]] = (),
    meta: Mapping[str, Any] | None = None,
    name: str = REPORT_NAME,
) -> Path:
    """Write ``<out_dir>/<name>`` (default ``report.html``) atomically and return its path.

    ``summary_rows``: the headline before/after table, e.g.
    ``[{"metric": "harmful rate (unseen)", "before": 0.86, "after": 0.09}]`` — a ``change``
    column is added where ``before`` and ``after`` are numbers. ``plots``: PNG files shown under
    the summary (copied to ``<out_dir>/plots/`` if they live elsewhere). ``examples``: dicts with
    ``prompt, before, after, before_label, after_label`` (optional ``before_harmful`` /
    ``after_harmful`` booleans colour the badges, or ``before_class`` / ``after_class`` one of
    good, bad, warn, neutral — e.g. a refusal of a benign prompt is "bad"; optional ``split``; an
    example without ``before`` shows one answer). ``meta``: ``model``, ``method``, ``judge`` (and
    ``steps``, ``lr``, ``LoRA``) are shown in the header (every report names its judge),
    ``config`` (dict, pydantic model or text) in a collapsible block, any other key in a details
    list.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html = render_report(
        title=title, summary_rows=summary_rows, sections=sections, plots=plots,
        examples=examples, meta=meta, plots_dir=out / PLOTS_DIR,
    )
    target = out / name
    atomic_write_text(target, html)
    return target


__all__ = ["Section", "write_report", "render_report", "format_value"]
