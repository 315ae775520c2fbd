"""Bootstrap confidence intervals for the rates the suites report.

A rate over 32 prompts moves by 3 points per prompt; a figure without its count and interval
cannot say whether a change is real. Every rate gets a percentile-bootstrap interval over its
items (``scipy.stats.bootstrap``), and a change between two models on the same prompts gets a
*paired* interval: items are resampled together, so the interval reflects the prompts that
changed, not two independent noises.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95


def rate_interval(
    flags: Sequence[bool], *, confidence: float = CONFIDENCE, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """``{"rate", "count", "hits", "low", "high"}``: the share of true ``flags`` with a percentile
    bootstrap interval. An empty sequence gives NaN figures; a constant one a zero-width interval."""
    values = np.asarray(list(flags), dtype=float)
    n = int(values.size)
    if n == 0:
        nan = float("nan")
        return {"rate": nan, "count": 0, "hits": 0, "low": nan, "high": nan}
    rate = float(values.mean())
    low, high = _percentile_bootstrap((values,), _mean_of_first, confidence, resamples, seed)
    return {"rate": rate, "count": n, "hits": int(values.sum()), "low": low, "high": high}


def paired_change_interval(
    before: Sequence[bool],
    after: Sequence[bool],
    *,
    relative: bool,
    confidence: float = CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The change from ``before`` to ``after`` rate on the same items, with a paired bootstrap interval.

    ``relative=True``: the relative drop ``(before - after) / before`` (0.75 = cut by 75%);
    resamples whose before-rate is 0 are left out. ``relative=False``: ``after - before`` in
    rate units (a points figure is this times 100)."""
    b = np.asarray(list(before), dtype=float)
    a = np.asarray(list(after), dtype=float)
    if b.shape != a.shape:
        raise ValueError(f"paired interval needs as many before as after items ({b.size} vs {a.size})")
    nan = float("nan")
    if b.size == 0:
        return {"value": nan, "low": nan, "high": nan, "count": 0}
    statistic = _relative_drop if relative else _difference
    value = float(statistic(b, a, axis=-1))
    low, high = _percentile_bootstrap((b, a), statistic, confidence, resamples, seed)
    return {"value": value, "low": low, "high": high, "count": int(b.size)}


def _mean_of_first(x, axis=-1):
    return np.mean(x, axis=axis)


def _difference(b, a, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _relative_drop(b, a, axis=-1):
    mb = np.mean(b, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mb > 0, (mb - np.mean(a, axis=axis)) / np.where(mb > 0, mb, 1.0), np.nan)


def _percentile_bootstrap(samples, statistic, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over paired resamples of the items of ``samples``.

    scipy's ``bootstrap`` does the resampling; a constant sample (every flag the same) has a
    zero-width interval, which scipy warns about, so it is answered directly."""
    from scipy import stats

    if all(np.all(s == s.flat[0]) for s in samples):
        value = float(statistic(*samples, axis=-1))
        return value, value
    result = stats.bootstrap(
        samples, statistic, paired=True, vectorized=True, confidence_level=confidence,
        n_resamples=resamples, method="percentile", random_state=np.random.default_rng(seed),
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if math.isnan(low) or math.isnan(high):
        # The relative drop is undefined on resamples whose before-rate is 0: take the
        # percentiles over the resamples where it is defined.
        rng = np.random.default_rng(seed)
        n = samples[0].shape[-1]
        idx = rng.integers(0, n, size=(resamples, n))
        values = statistic(*(s[idx] for s in samples), axis=-1)
        values = values[~np.isnan(values)]
        if values.size == 0:
            return float("nan"), float("nan")
        tail = (1 - confidence) / 2
        low, high = (float(v) for v in np.quantile(values, [tail, 1 - tail]))
    return low, high


def seed_summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean and range of one figure over seeds: ``{"mean", "min", "max", "n", "values"}``."""
    finite = [float(v) for v in values if v == v]
    if not finite:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0, "values": list(values)}
    return {"mean": sum(finite) / len(finite), "min": min(finite), "max": max(finite), "n": len(finite),
            "values": [float(v) for v in values]}
