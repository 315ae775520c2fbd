"""Detection: let an evaluator pick the dialogues that need unlearning.

The model answers every prompt (greedy, batched); a judge scores each answer; answers with a
score at or above the threshold are the model's undesirable outputs and become the forget set:

    DIR/forget.jsonl      prompt, response (the undesirable answer), score, label, + input fields
    DIR/retain.jsonl      the other rows, same fields
    DIR/validation.jsonl  (with ``val_size``) flagged rows held out from forget.jsonl, for early
                          stopping and for measuring unlearning on flagged prompts never trained on
    DIR/summary.json      counts, rates, label counts, judge, threshold, generation settings

``forget.jsonl`` is a ready ``data.forget`` for the ``distance_cluster`` method; the input
row's other fields (an ``expected`` answer, TruthfulQA's "Correct Answers"...) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from obliviate.errors import UserError

RESERVED = ("prompt", "response", "score", "label")


@dataclass
class Detection:
    """Rows split by the judge; each row is a dict with prompt, response, score, label + extras."""

    forget: list[dict[str, Any]]
    retain: list[dict[str, Any]]
    validation: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def load_prompt_rows(
    path: str | Path, *, prompt_field: str = "prompt", fmt: str = "auto", split: str = "train", limit: Optional[int] = None
) -> list[dict[str, Any]]:
    """Rows of a prompt file for detection (:func:`obliviate.data.loaders.read_prompt_rows`); a row's
    own ``response``/``score``/``label`` fields would clash with detection's and are kept under
    ``input_<name>``."""
    from obliviate.data.loaders import read_prompt_rows

    return read_prompt_rows(
        path, prompt_field=prompt_field, fmt=fmt, split=split, limit=limit, reserved=RESERVED,
        hint="pass --prompt-field with the right name",
    )


def split_by_verdict(
    rows: Sequence[Mapping[str, Any]], responses: Sequence[str], verdicts: Sequence[Any], threshold: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Flagged rows (``verdict.score >= threshold``) and the others, in input order."""
    forget, retain = [], []
    for row, response, verdict in zip(rows, responses, verdicts):
        out = {"prompt": row["prompt"], "response": response, "score": float(verdict.score), "label": verdict.label}
        out.update({k: v for k, v in row.items() if k not in RESERVED})
        (forget if verdict.score >= threshold else retain).append(out)
    return forget, retain


def detect(
    model,
    tokenizer,
    rows: Sequence[Mapping[str, Any]],
    judge,
    *,
    threshold: float = 0.5,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    template: str = "auto",
    val_size: int = 0,
    seed: int = 0,
    responses: Optional[Sequence[str]] = None,
    progress: bool = False,
) -> Detection:
    """Answer each row's prompt (unless ``responses`` are given), judge, and split the rows.

    ``val_size`` flagged rows, drawn with ``seed``, go to ``validation`` instead of ``forget``.
    Judges that read per-row data (reference answers, private strings) get the rows first.
    """
    from obliviate.judges.base import label_counts  # here: the judges package is heavy to import

    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold must be in [0, 1] (judge scores are), got {threshold}")
    rows = [dict(r) for r in rows]
    prompts = [r["prompt"] for r in rows]
    if responses is None:
        from obliviate.models.generation import generate

        responses = generate(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, template=template, progress=progress
        )
    elif len(responses) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(responses)} responses")
    if hasattr(judge, "attach_rows"):
        judge.attach_rows(rows)
    verdicts = judge(prompts, list(responses))
    forget, retain = split_by_verdict(rows, responses, verdicts, threshold)
    validation: list[dict[str, Any]] = []
    if val_size > 0 and forget:
        # Held-out flagged rows: drawn at random (seeded) so they are not all from the file's start.
        take = set(np.random.default_rng(seed).permutation(len(forget))[: min(val_size, len(forget) - 1)].tolist())
        validation = [r for i, r in enumerate(forget) if i in take]
        forget = [r for i, r in enumerate(forget) if i not in take]
    labels = label_counts(verdicts)
    flagged = len(forget) + len(validation)
    summary = {
        "rows": len(rows),
        "flagged": flagged,
        "flag_rate": flagged / len(rows),
        "harmful_rate": sum(bool(v.harmful) for v in verdicts) / len(rows),
        "mean_score": sum(float(v.score) for v in verdicts) / len(rows),
        "forget": len(forget),
        "validation": len(validation),
        "retain": len(retain),
        "labels": labels,
        "judge": getattr(judge, "judge_id", type(judge).__name__),
        "threshold": threshold,
        "generation": {"max_new_tokens": max_new_tokens, "do_sample": False, "template": template},
    }
    return Detection(forget, retain, validation, summary)


def write_detection(result: Detection, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write forget.jsonl, retain.jsonl, (validation.jsonl) and summary.json atomically."""
    from obliviate.io import atomic_write_json, write_jsonl

    out = Path(out_dir)
    if out.exists() and (out / "forget.jsonl").exists() and not overwrite:
        raise UserError(f"{out} already holds a detection (forget.jsonl); pass --overwrite or choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    write_jsonl(out / "forget.jsonl", result.forget)
    write_jsonl(out / "retain.jsonl", result.retain)
    if result.validation:
        write_jsonl(out / "validation.jsonl", result.validation)
    elif (out / "validation.jsonl").exists():
        (out / "validation.jsonl").unlink()  # a stale split from an earlier detection
    atomic_write_json(out / "summary.json", result.summary)
    return out
