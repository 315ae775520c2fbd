"""The TOFU suite: answer probabilities, ROUGE-L recall, truth ratios, forget quality, model utility.

Everything the model computes is batched: one log-likelihood pass over every (question, candidate
answer) pair of every split, one greedy generation pass over every question, one teacher-forced
argmax pass over the forget and retain answers. Definitions: :mod:`obliviate.metrics.tofu` and
docs/tofu.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from obliviate.data.tofu import TofuData, TofuItem
from obliviate.errors import UserError
from obliviate.metrics import tofu as m
from obliviate.metrics.memorisation import argmax_hits
from obliviate.metrics.text import rouge_l_recall
from obliviate.models.generation import generate, score_loglik

SUITE = "tofu"
TEMPLATES = ("plain", "chat", "auto")
# Splits whose truth ratio prefers indifference (forget) or the truth (the rest); the names are
# OpenUnlearning's aggregator names.
AGGREGATIONS = {"forget": "closer_to_1_better", "retain": "true_better", "real-authors": "true_better", "world-facts": "true_better"}
# Splits with a paraphrased answer, so the truth ratio's "correct" side is the paraphrase and the
# memorisation figures are computed; on the others the answer itself is the correct side.
MEMORISATION_SPLITS = ("forget", "retain")
UTILITY_SPLITS = ("retain", "real-authors", "world-facts")
UTILITY_METRICS = ("probability", "rouge_l_recall", "truth_ratio")


def read_retain_reference(path: str | Path, forget_split: str, count: int) -> list[float]:
    """The retain model's raw forget truth ratios from its ``eval/tofu_<tag>.json``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: retain result not found; give the retain model's eval/tofu_<tag>.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); expected a TOFU result file") from None
    ratios = data.get("forget_truth_ratios") if isinstance(data, dict) else None
    if not isinstance(ratios, list) or not all(isinstance(r, (int, float)) for r in ratios) or not ratios:
        raise UserError(f"{path}: forget_truth_ratios: missing or not a list of numbers; expected a TOFU result of the retain model")
    reference_split = (data.get("settings") or {}).get("forget_split")
    if reference_split and reference_split != forget_split:
        raise UserError(f"{path}: settings.forget_split: the retain result is of {reference_split}, this run scores {forget_split}")
    if len(ratios) != count:
        raise UserError(
            f"{path}: forget_truth_ratios: {len(ratios)} ratios but {count} forget questions are scored here; "
            f"evaluate both models on the same split with the same limit"
        )
    return [float(r) for r in ratios]


def _candidates(split: str, item: TofuItem) -> tuple[str, list[str]]:
    """(correct side of the truth ratio, perturbed answers) of one item."""
    correct = item.paraphrased_answer if split in MEMORISATION_SPLITS and item.paraphrased_answer else item.answer
    return correct, list(item.perturbed_answers)


def _score_all(model, tokenizer, splits: dict[str, list[TofuItem]], batch_size: int, template: str) -> dict:
    """Mean token log-probability of every candidate answer of every item, in one batched call.

    Returns ``{split: [(answer, correct, [perturbed...]) per item]}`` of mean log-probabilities."""
    # Each distinct (question, answer) pair is scored once: on real-authors and world-facts the
    # "correct" side of the truth ratio is the answer itself, and scoring is most of the suite's time.
    pairs: dict[tuple[str, str], int] = {}
    wanted: dict[str, list[list[int]]] = {}
    for split, items in splits.items():
        wanted[split] = []
        for item in items:
            correct, perturbed = _candidates(split, item)
            wanted[split].append([pairs.setdefault((item.question, r), len(pairs)) for r in (item.answer, correct, *perturbed)])
    unique = list(pairs)
    means = [s.mean for s in score_loglik(model, tokenizer, [q for q, _ in unique], [r for _, r in unique],
                                          batch_size=batch_size, template=template)]
    out: dict[str, list[tuple[float, float, list[float]]]] = {}
    for split, rows in wanted.items():
        out[split] = [(means[row[0]], means[row[1]], [means[i] for i in row[2:]]) for row in rows]
    return out


def _item_row(split: str, index: int, item: TofuItem, logs: tuple[float, float, list[float]], generation: str) -> dict[str, Any]:
    answer_log, correct_log, perturbed_logs = logs
    answer_p = m.length_normalised_probability(answer_log)
    perturbed_p = [m.length_normalised_probability(v) for v in perturbed_logs]
    row: dict[str, Any] = {"index": index, "question": item.question, "answer": item.answer, "generation": generation}
    if split in MEMORISATION_SPLITS:
        row["probability"] = answer_p
        row["paraphrased_probability"] = m.length_normalised_probability(correct_log)
        row["perturbed_probability"] = m.mean(perturbed_p)
    else:
        row["probability"] = m.option_normalised_probability(answer_p, perturbed_p)
        row["answer_probability"] = answer_p
    row["rouge_l_recall"] = rouge_l_recall(generation, item.answer, use_stemmer=True)
    row["truth_ratio_raw"] = m.truth_ratio_from_log(correct_log, perturbed_logs)
    return row


def _split_metrics(split: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [r["truth_ratio_raw"] for r in rows]
    aggregate = m.closer_to_1_better if AGGREGATIONS[split] == "closer_to_1_better" else m.true_better
    metrics: dict[str, Any] = {
        "probability": m.mean([r["probability"] for r in rows]),
        "rouge_l_recall": m.mean([r["rouge_l_recall"] for r in rows]),
        "truth_ratio": aggregate(ratios),
    }
    if split in MEMORISATION_SPLITS:
        for key in ("paraphrased_probability", "perturbed_probability", "extraction_strength", "exact_memorisation"):
            metrics[key] = m.mean([r[key] for r in rows])
    metrics["count"] = len(rows)
    return metrics


def evaluate_tofu(
    model,
    tokenizer,
    data: TofuData,
    *,
    retain_reference: str | Path | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 200,
    limit: int | None = None,
    template: str = "plain",
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``model`` on the TOFU splits of ``data``; returns the suite result (see docs/tofu.md).

    ``retain_reference``: the retain model's ``eval/tofu_<tag>.json``, for forget quality (None
    without it). ``limit``: the first N questions of each split. ``template``: the prompt format
    the model was fine-tuned with (``plain``: ``### Question: ... ### Answer:``).
    """
    if template not in TEMPLATES:
        raise UserError(f"template '{template}' is not usable for TOFU; valid: {', '.join(TEMPLATES)}")
    if limit is not None and limit < 1:
        raise UserError(f"limit: {limit}; expected a positive number of questions per split (or none)")
    started = time.perf_counter()
    splits = {"forget": data.forget, "retain": data.retain, "real-authors": data.real_authors, "world-facts": data.world_facts}
    splits = {name: items[:limit] if limit else list(items) for name, items in splits.items()}
    reference = None
    if retain_reference is not None:
        reference = read_retain_reference(retain_reference, data.forget_split, len(splits["forget"]))

    logs = _score_all(model, tokenizer, splits, batch_size, template)
    questions = [item.question for items in splits.values() for item in items]
    answers = iter(generate(
        model, tokenizer, questions, max_new_tokens=max_new_tokens, batch_size=batch_size, template=template, progress=progress,
    ))
    memorised = [(s, i) for s in MEMORISATION_SPLITS for i in splits[s]]
    hits = iter(argmax_hits(
        model, tokenizer, [i.question for _, i in memorised], [i.answer for _, i in memorised],
        template=template, batch_size=batch_size,
    ))

    items: dict[str, list[dict[str, Any]]] = {}
    for split, split_items in splits.items():
        items[split] = [_item_row(split, n, item, logs[split][n], next(answers)) for n, item in enumerate(split_items)]
    for split in MEMORISATION_SPLITS:
        for row in items[split]:
            answer_hits = m.without_end_token(next(hits))
            row["extraction_strength"] = m.extraction_strength(answer_hits)
            row["exact_memorisation"] = m.exact_memorisation(answer_hits)

    metrics: dict[str, Any] = {split: _split_metrics(split, rows) for split, rows in items.items()}
    forget_ratios = [r["truth_ratio_raw"] for r in items["forget"]]
    utility = {f"{s}_{k}": metrics[s][k] for s in UTILITY_SPLITS for k in UTILITY_METRICS}
    metrics["summary"] = {
        "model_utility": m.model_utility(utility),
        "forget_quality": m.forget_quality(forget_ratios, reference) if reference is not None else None,
        "forget_truth_ratio": metrics["forget"]["truth_ratio"],
        "forget_probability": metrics["forget"]["probability"],
        "forget_rouge_l_recall": metrics["forget"]["rouge_l_recall"],
        "retain_reference": str(retain_reference) if retain_reference is not None else None,
    }
    settings = {
        "source": data.source, "forget_split": data.forget_split, "template": template, "batch_size": batch_size,
        "max_new_tokens": max_new_tokens, "limit": limit, "decoding": "greedy",
        "truth_ratio_aggregation": dict(AGGREGATIONS), "rouge": "rougeL recall, stemmed",
    }
    return {
        "suite": SUITE, "model": getattr(model, "name_or_path", "") or type(model).__name__, "settings": settings,
        "seconds": round(time.perf_counter() - started, 3), "metrics": metrics, "items": items,
        "forget_truth_ratios": forget_ratios,
    }
