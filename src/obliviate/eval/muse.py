"""A MUSE-style suite (``suite="muse"``; Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation").

On any text the model was trained on, four figures (docs/mia_muse.md has the definitions next
to MUSE's and OpenUnlearning's):

- **verbatim memorisation** (``verbmem_rouge_l``): ROUGE-L F1 of the greedy continuation of each
  forget passage's prefix against its true continuation (MUSE's ``VerbMem``);
- **knowledge memorisation** (``knowmem_rouge_l``): ROUGE-L F1 of the greedy answer to each
  question about the forget (or retain) text against the reference answer (``KnowMem``);
- **PrivLeak**: the Min-K% (k = 0.4) membership AUC of forget passages against holdout passages,
  relative to the retain model's (:func:`obliviate.metrics.mia.privleak`, MUSE's sign);
- **utility**: knowledge memorisation on the retain questions (``KnowMem`` on D_retain).

Inputs: ``forget`` passages (prefix/continuation pairs, or raw text cut into pairs) are required;
``forget_qa``, ``retain_qa`` (question/answer rows), ``holdout`` passages (text of the same kind
the model never saw) and ``retain`` passages are optional, and a figure whose input is missing is
None (listed in ``settings["missing"]``). PrivLeak also needs the retain model's result of this
suite (``retain_reference``, its ``eval/muse_<tag>.json``; an ``eval/mia_<tag>.json`` does too).

The book recipes (``obliviate demo copyright``) give forget / unseen / retain passages; the
synthetic book carries no question/answer pairs whose facts belong to one split only (its
characters appear throughout), so knowledge memorisation there needs QA files written by hand.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from obliviate.errors import UserError
from obliviate.eval.mia import finite_number, qa_pairs, read_qa_file, read_result_summary, score_items
from obliviate.eval.results import write_suite_results
from obliviate.metrics.mia import DEFAULT_K, attack_auc, privleak
from obliviate.metrics.text import rouge_l_f1

SUITE = "muse"
TEMPLATES = ("plain", "chat", "auto", "none")
#: MUSE's knowledge prompt (raw-text models) and where its answers are cut.
RAW_QA_PROMPT = "Question: {question}\nAnswer: "
ANSWER_STOPS = ("\n\n", "\nQuestion", "Question:")


# ---------------------------------------------------------------------------------------------
# Inputs


def _passage_pair(location: str, row: Any, prefix_chars: int) -> Optional[tuple[str, str]]:
    if hasattr(row, "prompt") and hasattr(row, "response"):  # an Example
        return row.prompt, row.response
    if isinstance(row, (tuple, list)) and len(row) == 2 and all(isinstance(x, str) for x in row):
        return row[0], row[1]
    if isinstance(row, str):
        return cut_text(row, prefix_chars)
    if not isinstance(row, dict):
        raise UserError(f"{location}: expected a passage (prompt/response, prefix/continuation, prompt/gt or text)")
    for first, second in (("prompt", "response"), ("prefix", "continuation"), ("prompt", "gt")):
        if first in row and second in row:
            prefix, rest = row[first], row[second]
            if not isinstance(prefix, str) or not isinstance(rest, str) or not prefix.strip() or not rest.strip():
                raise UserError(f"{location}: fields '{first}' and '{second}' must be non-empty strings")
            return prefix, rest
    if isinstance(row.get("text"), str):
        return cut_text(row["text"], prefix_chars)
    present = ", ".join(map(str, row.keys())) or "none"
    raise UserError(
        f"{location}: no passage fields (row has: {present}); give prompt/response, prefix/continuation, prompt/gt or text"
    )


def cut_text(text: str, prefix_chars: int = 200) -> Optional[tuple[str, str]]:
    """(prefix, continuation) of one passage: the first ``prefix_chars`` characters, cut at a word."""
    from obliviate.data.text import Passage, prefix_continuation_pairs

    pairs = prefix_continuation_pairs([Passage("p", " ".join(text.split()), "")], prefix_chars=prefix_chars)
    return (pairs[0].prompt, pairs[0].response) if pairs else None


def passage_pairs(value: Any, role: str, *, prefix_chars: int = 200) -> list[tuple[str, str]]:
    """Prefix/continuation pairs from a file (.txt paragraphs, or rows) or from rows in memory.

    A ``.txt`` file is cut into blank-line separated paragraphs and each paragraph into its first
    ``prefix_chars`` characters and the rest; rows give prompt/response (or prefix/continuation,
    MUSE's prompt/gt) or a ``text`` field cut the same way. Paragraphs too short to cut are skipped.
    """
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.exists():
            raise UserError(f"{role}: data file {path} does not exist")
        if path.suffix.lower() == ".txt":
            from obliviate.eval.copyright import read_general_texts

            rows: list[tuple[str, Any]] = [(f"{path}: paragraph {i + 1}", t) for i, t in enumerate(read_general_texts(path))]
        else:
            from obliviate.data.loaders import iter_rows

            rows = list(iter_rows(path))
    else:
        rows = [(f"{role}[{i}]", r) for i, r in enumerate(value)]
    pairs = [p for p in (_passage_pair(loc, row, prefix_chars) for loc, row in rows) if p is not None]
    if not pairs:
        raise UserError(f"{role}: no passage long enough to cut into a prefix and a continuation (prefix_chars={prefix_chars})")
    return pairs


def question_pairs(value: Any, role: str) -> list[tuple[str, str]]:
    """(question, answer) pairs from a file or rows in memory (question/answer or prompt/response)."""
    if isinstance(value, (str, Path)):
        return read_qa_file(value, role)
    rows = [({"question": r[0], "answer": r[1]} if isinstance(r, tuple) else r) for r in value]
    return qa_pairs(((f"{role}[{i}]", r) for i, r in enumerate(rows)), role=role)


def read_retain_min_k_auc(path: str | Path) -> Optional[float]:
    """The Min-K% AUC of the retain model's muse (or mia) result."""
    summary = read_result_summary(path, (SUITE, "mia"))
    if "auc_min_k" not in summary:
        raise UserError(f"retain reference {path}: metrics.summary has no auc_min_k (run the muse suite with --holdout on the retain model)")
    return finite_number(summary["auc_min_k"])


# ---------------------------------------------------------------------------------------------
# Figures


def cut_answer(text: str) -> str:
    """The answer up to MUSE's stop strings (a raw-text model goes on to invent the next question)."""
    for stop in ANSWER_STOPS:
        text = text.split(stop)[0]
    return text.strip()


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def verbmem_rows(model, tokenizer, pairs, *, template: str, max_new_tokens: int, batch_size: int) -> list[dict[str, Any]]:
    from obliviate.eval.copyright import generate_continuations

    generations = generate_continuations(
        model, tokenizer, [p for p, _ in pairs], template=template, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return [
        {"index": i, "kind": "verbmem", "prompt": p, "answer": c, "generation": g, "rouge_l": rouge_l_f1(g, c)}
        for i, ((p, c), g) in enumerate(zip(pairs, generations))
    ]


def knowmem_rows(model, tokenizer, pairs, *, template: str, max_new_tokens: int, batch_size: int) -> list[dict[str, Any]]:
    from obliviate.eval.copyright import generate_continuations

    questions = [q for q, _ in pairs]
    prompts = [RAW_QA_PROMPT.format(question=q) for q in questions] if template == "none" else questions
    generations = generate_continuations(
        model, tokenizer, prompts, template=template, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    rows = []
    for i, ((question, answer), generation) in enumerate(zip(pairs, generations)):
        generation = cut_answer(generation)
        rows.append({
            "index": i, "kind": "knowmem", "question": question, "answer": answer, "generation": generation,
            "rouge_l": rouge_l_f1(generation, answer),
        })
    return rows


def _split_metrics(verbmem: list[dict], knowmem: list[dict], min_k: Optional[list]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "verbmem_rouge_l": _mean([r["rouge_l"] for r in verbmem]) if verbmem else None,
        "knowmem_rouge_l": _mean([r["rouge_l"] for r in knowmem]) if knowmem else None,
    }
    if min_k is not None:
        out["min_k"] = _mean(min_k)
    out["count"] = len(verbmem) or len(knowmem)
    return out


def evaluate_muse(
    model,
    tokenizer,
    *,
    forget: Any,
    forget_qa: Any = None,
    retain_qa: Any = None,
    holdout: Any = None,
    retain: Any = None,
    retain_reference: Optional[str | Path] = None,
    template: str = "plain",
    max_new_tokens: int = 128,
    knowmem_max_new_tokens: int = 32,
    k: float = DEFAULT_K,
    prefix_chars: int = 200,
    batch_size: int = 8,
    max_length: int = 512,
    limit: Optional[int] = None,
    model_name: Optional[str] = None,
) -> dict[str, Any]:
    """Run the suite; returns the contract result (splits ``forget``, ``retain``, ``holdout``).

    Every input is a file path or rows in memory (see :func:`passage_pairs`,
    :func:`question_pairs`); ``limit`` keeps the first rows of each. All inputs are read and
    checked before the model runs.
    """
    started = time.perf_counter()
    if template not in TEMPLATES:
        raise UserError(f"template '{template}' is not valid for the muse suite (valid: {', '.join(TEMPLATES)})")
    if forget is None:
        raise UserError("the muse suite needs forget passages (--forget: .txt, or rows with prompt/response or text)")
    if retain_reference is not None and holdout is None:
        raise UserError("PrivLeak needs --holdout (passages of the same kind the model never saw) besides --retain-result")

    def first(rows):
        return rows[:limit] if limit else rows

    forget_pairs = first(passage_pairs(forget, "forget", prefix_chars=prefix_chars))
    forget_questions = first(question_pairs(forget_qa, "forget_qa")) if forget_qa is not None else []
    retain_questions = first(question_pairs(retain_qa, "retain_qa")) if retain_qa is not None else []
    holdout_pairs = first(passage_pairs(holdout, "holdout", prefix_chars=prefix_chars)) if holdout is not None else []
    retain_pairs = first(passage_pairs(retain, "retain", prefix_chars=prefix_chars)) if retain is not None else []
    retain_auc = read_retain_min_k_auc(retain_reference) if retain_reference is not None else None
    missing = [name for name, value in (("forget_qa", forget_qa), ("retain_qa", retain_qa), ("holdout", holdout),
                                        ("retain_reference", retain_reference)) if value is None]

    generation = dict(template=template, batch_size=batch_size)
    forget_verb = verbmem_rows(model, tokenizer, forget_pairs, max_new_tokens=max_new_tokens, **generation)
    forget_know = knowmem_rows(model, tokenizer, forget_questions, max_new_tokens=knowmem_max_new_tokens, **generation)
    retain_verb = verbmem_rows(model, tokenizer, retain_pairs, max_new_tokens=max_new_tokens, **generation) if retain_pairs else []
    retain_know = knowmem_rows(model, tokenizer, retain_questions, max_new_tokens=knowmem_max_new_tokens, **generation)

    auc = None
    holdout_rows: list[dict[str, Any]] = []
    forget_min_k: Optional[list] = None
    if holdout_pairs:
        mia = dict(attacks=("min_k",), k=k, template=template, batch_size=batch_size, max_length=max_length)
        forget_scores = [r["min_k"] for r in score_items(model, tokenizer, forget_pairs, **mia)]
        holdout_scores = [r["min_k"] for r in score_items(model, tokenizer, holdout_pairs, **mia)]
        for row, score in zip(forget_verb, forget_scores):
            row["min_k"] = score
        holdout_rows = [
            {"index": i, "prompt": p, "answer": c, "min_k": s} for i, ((p, c), s) in enumerate(zip(holdout_pairs, holdout_scores))
        ]
        forget_min_k = forget_scores
        auc = attack_auc(forget_scores, holdout_scores)

    metrics: dict[str, Any] = {
        "forget": _split_metrics(forget_verb, forget_know, forget_min_k),
        "retain": _split_metrics(retain_verb, retain_know, None),
    }
    if holdout_rows:
        metrics["holdout"] = {"min_k": _mean([r["min_k"] for r in holdout_rows]), "count": len(holdout_rows)}
    knowmem_retain = metrics["retain"]["knowmem_rouge_l"]
    metrics["summary"] = {
        "verbmem_forget": metrics["forget"]["verbmem_rouge_l"],
        "knowmem_forget": metrics["forget"]["knowmem_rouge_l"],
        "knowmem_retain": knowmem_retain,
        "privleak": privleak(auc, retain_auc),
        "utility": knowmem_retain,
        "auc_min_k": auc,
        "retain_reference": str(retain_reference) if retain_reference is not None else None,
    }
    items = {"forget": forget_verb + forget_know, "retain": retain_verb + retain_know}
    if holdout_rows:
        items["holdout"] = holdout_rows
    return {
        "suite": SUITE,
        "model": model_name or getattr(model, "name_or_path", "") or type(model).__name__,
        "settings": {
            "template": template, "max_new_tokens": max_new_tokens, "knowmem_max_new_tokens": knowmem_max_new_tokens,
            "k": k, "prefix_chars": prefix_chars, "batch_size": batch_size, "max_length": max_length, "limit": limit,
            "rouge": "rouge_l_f1", "privleak_attack": "min_k", "privleak_convention": "muse",
            "retain_reference": metrics["summary"]["retain_reference"], "missing": missing,
        },
        "seconds": time.perf_counter() - started,
        "metrics": metrics,
        "items": items,
    }


def write_muse_results(result: dict[str, Any], run_dir: str | Path, tag: str) -> Path:
    """``eval/muse_<tag>.json`` and ``generations/muse_<tag>_<split>.jsonl``; returns the JSON path."""
    return write_suite_results(result, run_dir, suite=SUITE, tag=tag, generations_prefix=f"{SUITE}_{tag}_")

