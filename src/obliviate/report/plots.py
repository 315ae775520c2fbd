"""PNG plots for reports (matplotlib, Agg backend: no display needed).

Every function draws one figure, writes it atomically to ``path`` (folders created) and returns
the path, so a report can both embed the PNG and keep it under ``plots/``.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from obliviate.errors import UserError  # noqa: E402
from obliviate.io import atomic_target  # noqa: E402

BEFORE_COLOUR = "#9aa5b1"
AFTER_COLOUR = "#2f6fb0"
PALETTE = ["#2f6fb0", "#d9822b", "#3c9a5f", "#c23b3b", "#7d5ba6", "#8c6d46", "#d65db1", "#6b7b8c"]


def _save(fig: "plt.Figure", path: str | Path) -> Path:
    path = Path(path)
    try:
        with atomic_target(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def bar_before_after(
    metrics: Mapping[str, tuple[float, float]],
    path: str | Path,
    title: str,
    *,
    ylabel: str = "rate",
    labels: tuple[str, str] = ("before", "after"),
    percent: bool | None = None,
) -> Path:
    """Grouped bars: one pair (before, after) per metric, each bar labelled with its value.

    ``metrics`` maps a name (e.g. ``"harmful rate: unseen"``) to ``(before, after)``. With
    ``percent`` (default: all values in [0, 1]) values are shown as percentages.
    """
    return grouped_bars(metrics, labels, path, title, ylabel=ylabel, percent=percent,
                        colours=(BEFORE_COLOUR, AFTER_COLOUR))


def grouped_bars(
    metrics: Mapping[str, Sequence[float]],
    series: Sequence[str],
    path: str | Path,
    title: str,
    *,
    ylabel: str = "rate",
    percent: bool | None = None,
    colours: Sequence[str] | None = None,
) -> Path:
    """One group of bars per metric, one bar per series (e.g. per model or method), each labelled.

    ``metrics`` maps a metric name to one value per entry of ``series``. With ``percent`` (default:
    all values in [0, 1]) values are shown as percentages.
    """
    if not metrics:
        raise ValueError("a bar chart needs at least one metric")
    names = list(metrics)
    if any(len(metrics[n]) != len(series) for n in names):
        raise ValueError(f"every metric needs one value per series ({len(series)})")
    columns = [[float(metrics[n][i]) for n in names] for i in range(len(series))]
    finite = [v for column in columns for v in column if math.isfinite(v)]
    if percent is None:
        percent = bool(finite) and all(0.0 <= v <= 1.0 for v in finite)
    scale = 100.0 if percent else 1.0
    colours = list(colours or [PALETTE[i % len(PALETTE)] for i in range(len(series))])
    fig, ax = plt.subplots(figsize=(max(5.0, (0.45 * len(series) + 0.4) * len(names) + 2.5), 3.8))
    width = 0.76 / len(series)
    xs = range(len(names))
    for i, (values, label) in enumerate(zip(columns, series)):
        offset = (i - (len(series) - 1) / 2) * width
        heights = [v * scale if math.isfinite(v) else 0.0 for v in values]
        bars = ax.bar([x + offset for x in xs], heights, width, color=colours[i % len(colours)], label=label)
        for bar, value in zip(bars, values):
            text = "n/a" if not math.isfinite(value) else (f"{value * 100:.0f}%" if percent else f"{value:.3g}")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7 if len(series) > 2 else 8, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_xticks(list(xs))
    # Wrap long names onto several lines so neighbouring labels never overlap.
    ax.set_xticklabels([textwrap.fill(n, 16) for n in names], fontsize=9)
    ax.set_ylabel(f"{ylabel} (%)" if percent else ylabel)
    if percent:
        ax.set_ylim(0, 108)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def read_train_log(source: str | Path | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a ``train_log.jsonl`` (one JSON object per line) or an iterable of dicts."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise UserError(f"{path}: training log not found")
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        return rows
    return [dict(row) for row in source]


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for index, row in enumerate(rows):
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(float(row.get("step", index)))
            values.append(float(value))
    return steps, values


def loss_curves(
    log: str | Path | Iterable[Mapping[str, Any]],
    path: str | Path,
    title: str = "Training losses",
) -> Path:
    """Lines of ``loss/total`` and every ``loss/<part>`` against ``step``.

    A second panel shows ``grad_norm`` (log scale) when the log has it. Non-finite values are
    skipped rather than breaking the axis scale.
    """
    rows = read_train_log(log)
    keys: list[str] = []
    for row in rows:
        for key in row:
            if key.startswith("loss/") and key not in keys:
                keys.append(key)
    keys.sort(key=lambda k: (k != "loss/total", k))  # total first, then parts alphabetically
    has_grad = bool(_series(rows, "grad_norm")[0])
    fig, axes = plt.subplots(2 if has_grad else 1, 1, figsize=(7.5, 5.2 if has_grad else 3.6),
                             sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.3]} if has_grad else None)
    ax = axes[0][0]
    for i, key in enumerate(keys):
        steps, values = _series(rows, key)
        if steps:
            ax.plot(steps, values, label=key, color=PALETTE[i % len(PALETTE)],
                    linewidth=2.2 if key == "loss/total" else 1.4, marker="o" if len(steps) < 30 else None,
                    markersize=3)
    if not keys:
        ax.text(0.5, 0.5, "no loss/* values in the log", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.axhline(0.0, color="#cccccc", linewidth=0.8, zorder=0)
    if keys:
        # Outside the axes: loss lines fill the whole plot area, a legend inside would hide them.
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    if has_grad:
        gax = axes[1][0]
        steps, values = _series(rows, "grad_norm")
        gax.plot(steps, values, color="#6b7b8c", linewidth=1.2)
        if values and all(v > 0 for v in values) and max(values) / min(values) > 20:
            gax.set_yscale("log")
        gax.set_ylabel("grad norm")
        gax.spines[["top", "right"]].set_visible(False)
        gax.set_xlabel("step")
    else:
        ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers (the axis is shared)
    return _save(fig, path)


def histogram(
    values_by_label: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str,
    xlabel: str,
    *,
    bins: int = 30,
    threshold: float | None = None,
    threshold_label: str = "threshold",
) -> Path:
    """Overlaid histograms, one per label (e.g. prompt-answer similarity before vs after).

    All labels share the same bin edges so their shapes compare directly; ``threshold`` draws a
    dashed vertical line (e.g. the on-topic cut-off).
    """
    clean = {label: [float(v) for v in values if math.isfinite(float(v))]
             for label, values in values_by_label.items()}
    pooled = [v for values in clean.values() for v in values]
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    if pooled:
        low, high = min(pooled), max(pooled)
        if threshold is not None:
            low, high = min(low, threshold), max(high, threshold)
        if high == low:
            low, high = low - 0.5, high + 0.5
        edges = [low + (high - low) * i / bins for i in range(bins + 1)]
        for i, (label, values) in enumerate(clean.items()):
            if values:
                ax.hist(values, bins=edges, alpha=0.55, color=PALETTE[i % len(PALETTE)],
                        label=f"{label} (n={len(values)})", edgecolor="white", linewidth=0.4)
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    if threshold is not None:
        ax.axvline(threshold, color="#333333", linestyle="--", linewidth=1, label=f"{threshold_label} = {threshold:g}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    if pooled or threshold is not None:
        ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def metric_curves(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    title: str,
    *,
    xlabel: str = "step",
    ylabel: str = "value",
    levels: Optional[Mapping[str, float]] = None,
) -> Path:
    """Lines of metrics measured at several points, e.g. harmful rate per checkpoint step.

    ``series`` maps a label to ``[(x, y), ...]``; points are sorted by x. ``levels`` maps a label
    to a y value drawn as a dashed grey line across the plot (a target, a bound).
    """
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    for i, (label, points) in enumerate(series.items()):
        ordered = sorted((float(x), float(y)) for x, y in points if math.isfinite(float(y)))
        if ordered:
            ax.plot([p[0] for p in ordered], [p[1] for p in ordered], marker="o", markersize=3,
                    color=PALETTE[i % len(PALETTE)], label=label)
    for j, (label, y) in enumerate((levels or {}).items()):
        ax.axhline(float(y), color="0.45", linestyle=("--", ":", "-.")[j % 3], linewidth=1, label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlabel == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if series or levels:
        ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def trade_off(
    points: Mapping[str, Mapping[str, tuple[float, float]]],
    path: str | Path,
    title: str,
    *,
    xlabel: str,
    ylabel: str,
) -> Path:
    """Two figures that pull against each other, e.g. harmful rate (x) against similarity to the
    original (y), one colour per method and one marker per split: a method up and to the left of
    another is better on both.

    ``points`` maps a method to ``{split: (x, y)}``; every method needs at least one point. Colours
    and markers are explained in two legends, so labels never overlap however close the points.
    """
    if not points or any(not by_split for by_split in points.values()):
        raise ValueError("a trade-off plot needs at least one method, each with at least one point")
    splits = list(dict.fromkeys(split for by_split in points.values() for split in by_split))
    markers = dict(zip(splits, "osD^v<>p"))
    fig, ax = plt.subplots(figsize=(9.0, 4.4))
    for i, (method, by_split) in enumerate(points.items()):
        colour = PALETTE[i % len(PALETTE)]
        for split, (x, y) in by_split.items():
            ax.scatter([float(x)], [float(y)], s=46, marker=markers[split], color=colour, edgecolor="white", linewidth=0.6)
        ax.scatter([], [], s=46, marker="o", color=colour, label=method)  # the method's legend entry
    # Both legends sit in the figure's right margin (an axes legend placed outside the axes can be
    # cut off by the tight crop).
    fig.subplots_adjust(right=0.66)
    fig.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(0.68, 0.9), title="method")
    handles = [plt.Line2D([], [], linestyle="", marker=markers[split], color="#555555", markersize=7) for split in splits]
    fig.legend(handles, splits, frameon=False, fontsize=8, loc="lower left", bbox_to_anchor=(0.68, 0.1), title="split")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


ROLE_STYLE = {  # how the reference models of a TOFU-style benchmark are marked
    "retain": {"marker": "*", "color": "#1f7a4d", "s": 220},
    "full": {"marker": "s", "color": "#b42318", "s": 90},
}


def quality_utility(
    points: Sequence[Mapping[str, Any]],
    path: str | Path,
    title: str = "Forget quality against model utility",
    *,
    significance: float = 0.05,
) -> Path:
    """TOFU's trade-off: forget quality (log x axis) against model utility (y), one labelled point per run.

    ``points`` holds dicts with ``label``, ``forget_quality``, ``model_utility`` and ``role``
    (``"retain"``, ``"full"`` or None for an unlearned model); the retain and full models get their
    own marker and colour, and a dashed line marks forget quality = ``significance`` (above it a KS
    test cannot tell the run's truth ratios from the retain model's). Points without both figures
    are skipped; at least one must remain.
    """
    usable = [p for p in points if isinstance(p.get("forget_quality"), (int, float))
              and isinstance(p.get("model_utility"), (int, float))
              and math.isfinite(p["forget_quality"]) and math.isfinite(p["model_utility"])]
    if not usable:
        raise ValueError("a forget-quality plot needs at least one run with both forget quality and model utility")
    # A p-value of 0 cannot sit on a log axis: it is drawn a hundredth below the smallest other value
    # (or the significance line) and labelled "≤".
    positive = [float(p["forget_quality"]) for p in usable if p["forget_quality"] > 0]
    floor = min(positive + [significance]) / 100
    fig, ax = plt.subplots(figsize=(8.0, 4.6))
    unlearned = 0
    seen_roles: set[str] = set()
    for point in usable:
        quality = max(float(point["forget_quality"]), floor)
        utility = float(point["model_utility"])
        role = point.get("role")
        if role in ROLE_STYLE:
            style = ROLE_STYLE[role]
            legend = f"{role} model" if role not in seen_roles else None
            seen_roles.add(role)
        else:
            style = {"marker": "o", "color": PALETTE[unlearned % len(PALETTE)], "s": 60}
            legend = "unlearned" if "unlearned" not in seen_roles else None
            seen_roles.add("unlearned")
            unlearned += 1
        ax.scatter([quality], [utility], edgecolor="white", linewidth=0.7, zorder=3, label=legend, **style)
        prefix = "≤ " if float(point["forget_quality"]) < floor else ""
        ax.annotate(f"{prefix}{point['label']}", (quality, utility), xytext=(7, 5), textcoords="offset points",
                    fontsize=8, color="#333333")
    ax.set_xscale("log")
    ax.axvline(significance, color="0.5", linestyle="--", linewidth=1, label=f"forget quality = {significance:g}")
    low = min(max(float(p["forget_quality"]), floor) for p in usable)
    ax.set_xlim(min(low, significance) / 10, 3.0)  # room for the labels right of the retain model at 1
    ax.set_xlabel("forget quality (KS-test p-value vs retain model, log scale)")
    ax.set_ylabel("model utility")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="major")
    ax.legend(frameon=False, fontsize=8, loc="best")
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


__all__ = ["bar_before_after", "grouped_bars", "loss_curves", "histogram", "metric_curves", "read_train_log", "trade_off",
           "quality_utility"]
