"""Judges: decide whether each response is harmful. See docs/judges.md.

``judge(prompts, responses) -> list[Verdict(harmful, score, label)]``; build one with
:func:`get_judge` or :func:`judge_from_spec`.
The fine-tuned BERT-class judge lives in :mod:`obliviate.judges.encoder` (imported on use: it needs
torch).
"""

from obliviate.judges.base import Judge, Verdict
from obliviate.judges.classifier import ClassifierJudge, HarmClassifier, effectiveness, train_classifier
from obliviate.judges.effectiveness_score import effectiveness_from_verdicts, effectiveness_summary
from obliviate.judges.llm import HttpLMJudge, LocalLMJudge
from obliviate.judges.refusal import RefusalJudge, is_degenerate, is_refusal
from obliviate.judges.registry import (
    JUDGE_NAMES,
    available_judges,
    get_judge,
    judge_from_spec,
    parse_judge_spec,
    register_judge,
)

__all__ = [
    "ClassifierJudge",
    "HarmClassifier",
    "HttpLMJudge",
    "JUDGE_NAMES",
    "Judge",
    "LocalLMJudge",
    "RefusalJudge",
    "Verdict",
    "available_judges",
    "effectiveness",
    "effectiveness_from_verdicts",
    "effectiveness_summary",
    "get_judge",
    "is_degenerate",
    "is_refusal",
    "judge_from_spec",
    "parse_judge_spec",
    "register_judge",
    "train_classifier",
]
