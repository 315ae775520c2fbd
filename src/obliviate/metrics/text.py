"""Text similarity and diversity: ROUGE-L, sentence BLEU, unique-token ratio.

Used to compare a model's continuation of a prompt with the original text (memorisation), an
unlearned model's answers with the original model's (similarity), and to spot degenerate
repetitive output (diversity).

Conventions shared by every score here: values lie in [0, 1]; two texts that are both empty
(after tokenisation) score 1 (they are identical), one empty text against a non-empty one scores
0. The libraries themselves return 0 for empty against empty, which would make "the model said
nothing, and nothing was expected" look like a total mismatch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import sacrebleu
from rouge_score import rouge_scorer


@dataclass
class CorpusScore:
    """A corpus-level value and the per-item values it summarises (``value`` = their mean)."""

    value: float
    per_item: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"value": self.value, "per_item": list(self.per_item)}


@lru_cache(maxsize=2)
def _rouge_l(use_stemmer: bool) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def _rouge_tokens(text: str) -> list[str]:
    # rouge-score's own tokenisation: lower-case, runs of [a-z0-9] only.
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l_f1(pred: str, ref: str, use_stemmer: bool = False) -> float:
    """ROUGE-L F1: the longest common subsequence of words, as F-measure of precision and recall.

    With LCS length ``l``, ``P = l / len(pred)``, ``R = l / len(ref)``, ``F1 = 2PR / (P + R)``.
    Words are lower-cased alphanumeric runs (rouge-score's tokeniser: punctuation and non-ASCII
    letters are ignored). No stemming by default, so only exact word forms match.
    """
    pred_empty, ref_empty = not _rouge_tokens(pred), not _rouge_tokens(ref)
    if pred_empty or ref_empty:
        return 1.0 if pred_empty and ref_empty else 0.0
    return float(_rouge_l(use_stemmer).score(ref, pred)["rougeL"].fmeasure)


def rouge_l_recall(pred: str, ref: str, use_stemmer: bool = False) -> float:
    """ROUGE-L recall: ``l / len(ref)``, the share of the reference's words found in order in the
    prediction (TOFU's answer score: a right answer with extra words still scores 1)."""
    pred_empty, ref_empty = not _rouge_tokens(pred), not _rouge_tokens(ref)
    if pred_empty or ref_empty:
        return 1.0 if pred_empty and ref_empty else 0.0
    return float(_rouge_l(use_stemmer).score(ref, pred)["rougeL"].recall)


def bleu(pred: str, ref: str) -> float:
    """Sentence BLEU of ``pred`` against one reference, scaled to [0, 1].

    sacrebleu's ``sentence_bleu`` with its defaults (13a tokenisation, case-sensitive, 4-grams,
    exponential smoothing so that short texts without a 4-gram match do not collapse to 0).
    """
    if not pred.strip() or not ref.strip():
        return 1.0 if not pred.strip() and not ref.strip() else 0.0
    score = sacrebleu.sentence_bleu(pred, [ref]).score / 100.0
    return min(1.0, max(0.0, score))  # sacrebleu can return 100.00000000000004


def unique_token_ratio(text: str, tokenizer=None) -> float:
    """Distinct tokens / all tokens of one text (1 = no repetition; degenerate loops go to 0).

    Tokens are lower-cased words (``\\w+``) by default, or the tokenizer's ids when one is given
    (the diversity measure of Yao et al. counts model tokens). An empty text scores 0.
    """
    if tokenizer is not None:
        tokens: list = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        tokens = re.findall(r"\w+", text.lower())
    return len(set(tokens)) / len(tokens) if tokens else 0.0


def _check_lengths(preds: Sequence[str], refs: Sequence[str]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def corpus_rouge_l(preds: Sequence[str], refs: Sequence[str], use_stemmer: bool = False) -> CorpusScore:
    """Mean ROUGE-L F1 over aligned pairs, with the per-pair values."""
    _check_lengths(preds, refs)
    items = [rouge_l_f1(p, r, use_stemmer) for p, r in zip(preds, refs)]
    return CorpusScore(_mean(items), items)


def corpus_bleu(preds: Sequence[str], refs: Sequence[str]) -> CorpusScore:
    """Mean sentence BLEU (0..1) over aligned pairs, with the per-pair values.

    This is the mean of per-item scores (what a leak rate thresholds), not sacrebleu's corpus
    BLEU, which pools n-gram counts.
    """
    _check_lengths(preds, refs)
    items = [bleu(p, r) for p, r in zip(preds, refs)]
    return CorpusScore(_mean(items), items)


def corpus_unique_token_ratio(texts: Sequence[str], tokenizer=None) -> CorpusScore:
    """Mean unique-token ratio over texts, with the per-text values."""
    items = [unique_token_ratio(t, tokenizer) for t in texts]
    return CorpusScore(_mean(items), items)
