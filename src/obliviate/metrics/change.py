"""Relative change of a figure between two models, one definition for every suite and scenario."""

from __future__ import annotations


def relative_change(before: float, after: float) -> float:
    """(after - before) / before: 0.2 means the figure rose by 20%, -0.9 that it fell by 90%.

    NaN when ``before`` is 0: a change relative to nothing is undefined, and a 0 (or an infinity)
    would read as a measured result.
    """
    return (after - before) / before if before else float("nan")


def relative_drop(before: float, after: float) -> float:
    """(before - after) / before: 0.9 means the figure fell by 90% (NaN when ``before`` is 0)."""
    return -relative_change(before, after)
