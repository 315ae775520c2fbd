"""TOFU's metrics as pure functions on numbers (definitions side by side with the paper's in docs/tofu.md).

Every probability here is *length-normalised*: ``P(a | q) ** (1 / |a|)`` = ``exp`` of the mean
token log-probability of the answer, so long and short answers compare.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

# exp() of anything beyond this overflows a float; a ratio that large is "infinitely far from 1"
# for every aggregation below, and keeping it finite keeps the results plain JSON.
_MAX_LOG = 700.0


def length_normalised_probability(mean_log_probability: float) -> float:
    """``exp(mean token log-probability)``: the geometric mean of the answer's token probabilities."""
    return math.exp(max(-_MAX_LOG, min(_MAX_LOG, mean_log_probability)))


def option_normalised_probability(correct: float, perturbed: Sequence[float]) -> float:
    """``P(correct) / (P(correct) + sum of P(perturbed))`` for the real-authors and world-facts
    splits (multiple-choice style: the share of probability on the right option). 0 when all are 0."""
    total = correct + sum(perturbed)
    return correct / total if total > 0 else 0.0


def truth_ratio_from_log(correct_mean_log: float, perturbed_mean_logs: Sequence[float]) -> float:
    """The truth ratio from mean token log-probabilities:
    ``exp(mean_j log P~(perturbed_j) - log P~(correct))``, with ``P~`` length-normalised."""
    if not perturbed_mean_logs:
        raise ValueError("the truth ratio needs at least one perturbed answer")
    log_ratio = sum(perturbed_mean_logs) / len(perturbed_mean_logs) - correct_mean_log
    return math.exp(max(-_MAX_LOG, min(_MAX_LOG, log_ratio)))


def truth_ratio(correct: float, perturbed: Sequence[float]) -> float:
    """Per item: the geometric mean of the perturbed answers' normalised probabilities divided by
    the correct (paraphrased) answer's, ``(prod_j P~(perturbed_j)) ** (1/n) / P~(correct)``.

    Near 1: the model cannot tell the true answer from wrong ones; near 0: it prefers the truth.
    (The TOFU paper writes the arithmetic mean; its code and OpenUnlearning average the
    log-probabilities, i.e. the geometric mean, and so does this.) Probabilities must be positive.
    """
    if correct <= 0 or any(p <= 0 for p in perturbed):
        raise ValueError("truth_ratio needs positive probabilities; use truth_ratio_from_log for log-probabilities")
    return truth_ratio_from_log(math.log(correct), [math.log(p) for p in perturbed])


def closer_to_1_better(ratios: Sequence[float]) -> float | None:
    """Forget split aggregation: ``mean(min(r, 1/r))``; 1 when the model is indifferent between
    true and false answers (as one that never saw them), lower when it prefers either."""
    if not ratios:
        return None
    return sum(min(r, 1.0 / r) if r > 0 else 0.0 for r in ratios) / len(ratios)


def true_better(ratios: Sequence[float]) -> float | None:
    """Utility splits aggregation: ``mean(max(0, 1 - r))``; higher when the true answer is the
    more likely one."""
    if not ratios:
        return None
    return sum(max(0.0, 1.0 - r) for r in ratios) / len(ratios)


def forget_quality(unlearned_ratios: Sequence[float], retain_ratios: Sequence[float]) -> float:
    """p-value of the two-sample Kolmogorov-Smirnov test between the unlearned model's raw forget
    truth ratios and the retain model's. High (up to 1): the two distributions cannot be told apart.

    OpenUnlearning tests ``1/r``; the KS statistic only depends on the order of the pooled values,
    which ``1/r`` reverses for both samples alike, so the p-value is the same.
    """
    from scipy.stats import ks_2samp

    if not unlearned_ratios or not retain_ratios:
        raise ValueError("forget quality needs truth ratios from both models")
    return float(ks_2samp(list(unlearned_ratios), list(retain_ratios)).pvalue)


def model_utility(values: Mapping[str, float | None]) -> float | None:
    """Harmonic mean of the utility figures (retain, real-authors and world-facts x probability,
    ROUGE-L recall and truth ratio): ``n / sum(1/x)``; 0 if any is 0, None if any is missing."""
    numbers = list(values.values())
    if not numbers or any(v is None for v in numbers):
        return None
    if any(v <= 0 for v in numbers):  # type: ignore[operator]
        return 0.0
    return len(numbers) / sum(1.0 / v for v in numbers)  # type: ignore[operator]


def without_end_token(hits: Sequence[bool]) -> list[bool]:
    """Argmax hits without the template's closing end-of-turn token (OpenUnlearning scores the
    answer's own tokens only)."""
    return list(hits[:-1]) if len(hits) > 1 else list(hits)


def exact_memorisation(hits: Sequence[bool]) -> float | None:
    """Share of answer tokens that are the teacher-forced argmax; None with no token."""
    return sum(hits) / len(hits) if hits else None


def extraction_strength(hits: Sequence[bool]) -> float | None:
    """``1 - k/n``: ``k`` the fewest answer tokens to give before every remaining one is the
    argmax (``n`` tokens in all). 1: the question alone extracts the answer; 0: not even the last
    token. As in :mod:`obliviate.metrics.memorisation`, ``k`` may reach ``n`` (OpenUnlearning
    stops at ``n - 1``, giving ``1/n`` for a model that predicts nothing right)."""
    if not hits:
        return None
    k = len(hits)
    while k > 0 and hits[k - 1]:
        k -= 1
    return 1.0 - k / len(hits)


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None (None when none is left)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
