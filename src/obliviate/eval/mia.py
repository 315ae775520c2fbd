"""The membership-inference suite (``suite="mia"``): can an attacker tell the forget set from held-out data?

Each forget row (a member: the model was trained on it) and each holdout row (a non-member of
the same kind) gets one score per attack of :mod:`obliviate.metrics.mia`, higher meaning "more
likely a member", from the log-probabilities of the answer given the question. The headline is
the ROC-AUC of forget (positive) against holdout per attack: about 0.5 when the forget set looks
as unfamiliar as unseen data (the retain model's case), near 1 while the model remembers it.

PrivLeak (MUSE) compares that AUC with the retain model's, read from the retain model's own
``eval/mia_<tag>.json`` (``retain_reference``); without it the PrivLeak figures are None.

Result (the shared suite contract): ``metrics["forget"]`` / ``metrics["holdout"]`` hold the mean
score per attack and ``count``; ``metrics["summary"]`` holds ``auc_<attack>`` for every attack
(None when it was not run, e.g. ``reference`` without a reference model), ``privleak_<attack>``
and ``retain_reference``; ``items[split]`` one row per item with every score.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from obliviate.errors import UserError
from obliviate.eval.results import write_suite_results
from obliviate.metrics.mia import (
    ATTACKS,
    DEFAULT_K,
    attack_auc,
    gradient_norms,
    logit_attack_scores,
    privleak,
    reference_score,
    token_statistics,
)

SUITE = "mia"
SPLITS = ("forget", "holdout")
#: TOFU's forget splits and the holdout file of the same size.
TOFU_FORGET_SPLITS = ("forget01", "forget05", "forget10")
TEMPLATES = ("plain", "chat", "auto", "none")


# ---------------------------------------------------------------------------------------------
# Inputs


def qa_pairs(
    rows: Iterable[tuple[str, Any]], *, role: str, question_field: Optional[str] = None, answer_field: Optional[str] = None
) -> list[tuple[str, str]]:
    """(question, answer) pairs from ``(location, row)`` pairs.

    Rows are dicts with ``question``/``answer`` fields (TOFU's names) or else ``prompt``/``response``
    (obliviate's); explicit field names override both. A bad row is a one-line ``UserError``.
    """
    pairs: list[tuple[str, str]] = []
    for location, row in rows:
        if hasattr(row, "prompt") and hasattr(row, "response"):  # an Example
            row = {"prompt": row.prompt, "response": row.response}
        if not isinstance(row, dict):
            raise UserError(f"{location}: expected an object with a question and an answer (fields question/answer or prompt/response)")
        if question_field or answer_field:
            fields = (question_field or "question", answer_field or "answer")
        elif "question" in row or "answer" in row:
            fields = ("question", "answer")
        else:
            fields = ("prompt", "response")
        for name in fields:
            value = row.get(name)
            if not isinstance(value, str) or not value.strip():
                present = ", ".join(map(str, row.keys())) or "none"
                raise UserError(
                    f"{location}: field '{name}' must be a non-empty string (row has: {present}); "
                    "give question/answer or prompt/response rows"
                )
        pairs.append((row[fields[0]], row[fields[1]]))
    if not pairs:
        raise UserError(f"{role}: no rows; give at least one question/answer row")
    return pairs


def read_qa_file(path: str | Path, role: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of a JSONL/JSON/CSV/Parquet file (question/answer or prompt/response)."""
    from obliviate.data.loaders import iter_rows

    if not Path(path).exists():
        raise UserError(f"{role}: data file {path} does not exist")
    return qa_pairs(iter_rows(path), role=role)


def in_memory_pairs(rows: Sequence[Any], role: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of rows held in memory (dicts or examples)."""
    return qa_pairs(((f"{role}[{i}]", row) for i, row in enumerate(rows)), role=role)


def tofu_mia_files(tofu_dir: str | Path, forget_split: str) -> tuple[Path, Path]:
    """The forget and holdout files of a TOFU folder (hub layout): ``forget10`` -> forget10.json, holdout10.json."""
    if forget_split not in TOFU_FORGET_SPLITS:
        raise UserError(f"forget split '{forget_split}' is not valid (valid: {', '.join(TOFU_FORGET_SPLITS)})")
    folder = Path(tofu_dir)
    if not folder.is_dir():
        raise UserError(f"--tofu-dir {folder}: no such folder (give a folder with TOFU's forgetNN.json and holdoutNN.json)")
    size = forget_split[len("forget"):]
    found = []
    for stem in (forget_split, f"holdout{size}"):
        candidates = [folder / f"{stem}.json", folder / f"{stem}.jsonl", folder / stem / "train.json"]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise UserError(f"{folder}: no {stem}.json; a TOFU folder holds {forget_split}.json and holdout{size}.json")
        found.append(path)
    return found[0], found[1]


def read_result_summary(path: str | Path, suites: Sequence[str], *, role: str = "retain reference") -> dict[str, Any]:
    """``metrics.summary`` of a suite result JSON (another run's ``eval/<suite>_<tag>.json``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{role} {path}: no such file (give the retain model's eval/{suites[0]}_<tag>.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{role} {path}: not a JSON result ({err})") from None
    found = data.get("suite") if isinstance(data, dict) else type(data).__name__
    if found not in suites:
        raise UserError(
            f"{role} {path}: suite is {found!r}, expected {' or '.join(map(repr, suites))} "
            f"(run the {suites[0]} suite on the retain model)"
        )
    summary = (data.get("metrics") or {}).get("summary")
    if not isinstance(summary, dict):
        raise UserError(f"{role} {path}: no metrics.summary in the file")
    return summary


def finite_number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def read_retain_aucs(path: str | Path) -> dict[str, Optional[float]]:
    """``auc_<attack>`` of the retain model's MIA result (its ``eval/mia_<tag>.json``)."""
    summary = read_result_summary(path, (SUITE,))
    if not any(f"auc_{a}" in summary for a in ATTACKS):
        raise UserError(f"retain reference {path}: metrics.summary holds no auc_<attack> figures")
    return {attack: finite_number(summary.get(f"auc_{attack}")) for attack in ATTACKS}


# ---------------------------------------------------------------------------------------------
# Scoring


def score_items(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    *,
    attacks: Sequence[str] = ATTACKS,
    k: float = DEFAULT_K,
    template: str = "plain",
    batch_size: int = 8,
    max_length: int = 512,
    reference_model=None,
    reference_tokenizer=None,
) -> list[dict[str, Any]]:
    """Per pair: ``tokens`` and one score per attack asked for (None where it cannot be computed).

    The logit attacks share one forward pass per batch; ``gradnorm`` runs a backward pass per
    item; ``reference`` one more forward pass on ``reference_model`` (with its own tokenizer).
    """
    prompts = [q for q, _ in pairs]
    answers = [a for _, a in pairs]
    stats = token_statistics(model, tokenizer, prompts, answers, template=template, batch_size=batch_size, max_length=max_length)
    rows: list[dict[str, Any]] = []
    for stat, answer in zip(stats, answers):
        scores = logit_attack_scores(stat, answer, k)
        row: dict[str, Any] = {"tokens": stat.tokens}
        row.update({a: scores[a] for a in attacks if a in scores})
        rows.append(row)
    if "gradnorm" in attacks:
        for row, norm in zip(rows, gradient_norms(model, tokenizer, prompts, answers, template=template, max_length=max_length)):
            row["gradnorm"] = norm
    if "reference" in attacks:
        if reference_model is None:
            for row in rows:
                row["reference"] = None
        else:
            reference_stats = token_statistics(
                reference_model, reference_tokenizer or tokenizer, prompts, answers, template=template,
                batch_size=batch_size, max_length=max_length,
            )
            for row, stat, ref in zip(rows, stats, reference_stats):
                row["reference"] = reference_score(stat.log_probs, ref.log_probs)
    return rows


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def check_attacks(attacks: Sequence[str]) -> list[str]:
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks:
        raise UserError(f"unknown attack(s) {', '.join(unknown) or '(none given)'} (known: {', '.join(ATTACKS)})")
    return [a for a in ATTACKS if a in attacks]


def evaluate_mia(
    model,
    tokenizer,
    forget_rows: Sequence[Any],
    holdout_rows: Sequence[Any],
    *,
    reference_model=None,
    reference_tokenizer=None,
    retain_reference: Optional[str | Path] = None,
    attacks: Sequence[str] = ATTACKS,
    k: float = DEFAULT_K,
    batch_size: int = 8,
    max_length: int = 512,
    template: str = "plain",
    model_name: Optional[str] = None,
    reference_name: Optional[str] = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every attack on forget (members) and holdout (non-members); returns the suite result.

    ``forget_rows``/``holdout_rows``: (question, answer) tuples, dicts (question/answer or
    prompt/response) or examples. ``retain_reference``: the retain model's ``eval/mia_<tag>.json``,
    which PrivLeak compares with; read before any scoring so a bad path fails at once.
    """
    started = time.perf_counter()
    attacks = check_attacks(attacks)
    if template not in TEMPLATES:
        raise UserError(f"template '{template}' is not valid for the mia suite (valid: {', '.join(TEMPLATES)})")
    if not 0.0 < k <= 1.0:
        raise UserError(f"k must be in (0, 1], got {k}")
    splits = {
        "forget": read_pairs(forget_rows, "forget"),
        "holdout": read_pairs(holdout_rows, "holdout"),
    }
    retain_aucs = read_retain_aucs(retain_reference) if retain_reference is not None else None
    metrics: dict[str, dict[str, Any]] = {}
    items: dict[str, list[dict[str, Any]]] = {}
    for split, pairs in splits.items():
        if progress:
            print(f"mia: scoring {len(pairs)} {split} items")
        scored = score_items(
            model, tokenizer, pairs, attacks=attacks, k=k, template=template, batch_size=batch_size,
            max_length=max_length, reference_model=reference_model, reference_tokenizer=reference_tokenizer,
        )
        items[split] = [
            {"index": i, "question": q, "answer": a, **row} for i, ((q, a), row) in enumerate(zip(pairs, scored))
        ]
        metrics[split] = {**{a: _mean([r.get(a) for r in scored]) for a in attacks}, "count": len(pairs)}
    summary: dict[str, Any] = {}
    for attack in ATTACKS:
        auc = None
        if attack in attacks:
            auc = attack_auc([r.get(attack) for r in items["forget"]], [r.get(attack) for r in items["holdout"]])
        summary[f"auc_{attack}"] = auc
    for attack in ATTACKS:
        reference_auc = retain_aucs.get(attack) if retain_aucs else None
        summary[f"privleak_{attack}"] = privleak(summary[f"auc_{attack}"], reference_auc)
    summary["retain_reference"] = str(retain_reference) if retain_reference is not None else None
    metrics["summary"] = summary
    return {
        "suite": SUITE,
        "model": model_name or getattr(model, "name_or_path", "") or type(model).__name__,
        "settings": {
            "attacks": list(attacks), "k": k, "template": template, "batch_size": batch_size,
            "max_length": max_length, "reference_model": reference_name if reference_model is not None else None,
            "retain_reference": summary["retain_reference"], "auc_positive_class": "forget",
            "privleak_convention": "muse",
        },
        "seconds": time.perf_counter() - started,
        "metrics": metrics,
        "items": items,
    }


def read_pairs(rows: Any, role: str) -> list[tuple[str, str]]:
    """(question, answer) pairs from a file path, (question, answer) tuples, dicts or examples."""
    if isinstance(rows, (str, Path)):
        return read_qa_file(rows, role)
    rows = list(rows)
    if rows and all(isinstance(r, tuple) and len(r) == 2 for r in rows):
        return in_memory_pairs([{"question": q, "answer": a} for q, a in rows], role)
    return in_memory_pairs(rows, role)


def write_mia_results(result: dict[str, Any], run_dir: str | Path, tag: str) -> Path:
    """``eval/mia_<tag>.json`` and ``generations/mia_<tag>_<split>.jsonl``; returns the JSON path."""
    return write_suite_results(result, run_dir, suite=SUITE, tag=tag, generations_prefix=f"{SUITE}_{tag}_")
