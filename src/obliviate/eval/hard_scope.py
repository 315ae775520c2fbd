"""Hard scope: the forget set asked in other ways, and the retain rows that sit closest to it.

Unlearning that holds only on the exact forget prompts is hiding, not forgetting; unlearning that
also wipes everything near the forget set is damage. This module builds both probes from a forget
set of (prompt, answer) rows:

* **in scope** (should stay forgotten):

  - ``paraphrase`` -- rule-based rewordings of each prompt (:func:`obliviate.data.rewordings.rewordings`:
    question forms, conversational wrappers) and, where the row has one (TOFU does), the data
    set's own ``paraphrased_question``;
  - ``multi_hop`` -- rule-based two-step questions: ``subject_hop`` asks first about the item's
    subject (the row's ``subject`` field, as TOFU has; else what the request is about) and then
    the prompt; ``composed`` joins two forget prompts into one question. No model writes these:
    they are templates, so they test reach through a second hop, not real reasoning chains.

* **out of scope** (should still be answered): ``neighbour`` rows -- for each forget item, the
  ``k`` retain rows whose prompts are nearest by embedding cosine (all-MiniLM-L6-v2 by default,
  any ``embed(texts) -> (N, D)`` array function in tests).

Every row keeps ``source_index`` (position in the forget set) and ``source_id`` (the row's ``id``,
else ``str(source_index)``) of the forget item it came from, and ``variant`` saying which kind it
is. :func:`save_hard_scope` writes them to ``hard_scope/in_scope.jsonl`` and
``hard_scope/out_of_scope.jsonl`` in a run folder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from obliviate.data.rewordings import rewordings
from obliviate.errors import UserError
from obliviate.io import write_jsonl

Embed = Callable[[list[str]], Any]

IN_SCOPE_VARIANTS = ("paraphrase", "multi_hop")
OUT_OF_SCOPE_VARIANTS = ("neighbour",)
FOLDER = "hard_scope"

SUBJECT_HOP = "First, in one or two sentences, say who or what {subject} is. Then answer this question: {prompt}"
TOPIC_HOP = "First, say in one sentence what the request below is about. Then carry it out: {prompt}"
COMPOSED = "Answer both of these, in order.\n1. {first}\n2. {second}"


@dataclass(frozen=True)
class HardScope:
    """The two probe sets: rows that should stay forgotten, and near rows that should not."""

    in_scope: list[dict[str, Any]]
    out_of_scope: list[dict[str, Any]]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [*self.in_scope, *self.out_of_scope]


# --------------------------------------------------------------------------------------------
# forget rows


def _prompt_of(row: Any, number: int, field: str, where: str) -> str:
    value = row.get(field) if isinstance(row, dict) else None
    if not isinstance(value, str) or not value.strip():
        got = "missing" if not isinstance(row, dict) or field not in row else f"got {type(value).__name__}"
        raise UserError(f"{where}: row {number}: {field}: {got}; expected a non-empty string")
    return value


def _source(row: dict[str, Any], index: int, prompt: str, answer_field: str) -> dict[str, Any]:
    source_id = row.get("id")
    return {
        "source_index": index,
        "source_id": str(source_id) if source_id not in (None, "") else str(index),
        "source_prompt": prompt,
        "answer": row.get(answer_field),
    }


def _checked(rows: Sequence[dict[str, Any]], field: str, where: str) -> list[str]:
    return [_prompt_of(row, number, field, where) for number, row in enumerate(rows, start=1)]


# --------------------------------------------------------------------------------------------
# in scope


def paraphrase_variants(
    forget_rows: Sequence[dict[str, Any]],
    count: int = 2,
    *,
    seed: int = 0,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
) -> list[dict[str, Any]]:
    """Per forget item: its ``paraphrased_question`` if it has one (``method: "dataset"``), then
    ``count`` rule-based rewordings (``method: "rewording"``); never the prompt itself."""
    prompts = _checked(forget_rows, prompt_field, "forget set")
    out: list[dict[str, Any]] = []
    for index, (row, prompt) in enumerate(zip(forget_rows, prompts)):
        source = _source(row, index, prompt, answer_field)
        given = row.get("paraphrased_question")
        seen = {prompt}
        if isinstance(given, str) and given.strip() and given not in seen:
            seen.add(given)
            out.append({"prompt": given, "variant": "paraphrase", "method": "dataset", **source})
        for text in rewordings(prompt, count, seed=seed):
            if text not in seen:
                seen.add(text)
                out.append({"prompt": text, "variant": "paraphrase", "method": "rewording", **source})
    return out


def multi_hop_variants(
    forget_rows: Sequence[dict[str, Any]],
    *,
    seed: int = 0,
    compose: bool = True,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    subject_field: str = "subject",
) -> list[dict[str, Any]]:
    """Per forget item: a ``subject_hop`` (or ``topic_hop`` when the row has no subject) question,
    and with ``compose`` a ``composed`` question joining it with another forget item drawn with
    ``seed`` (that item's index is ``second_source_index``; the forget item comes second, so a
    model must get past the first question to reach it)."""
    prompts = _checked(forget_rows, prompt_field, "forget set")
    out: list[dict[str, Any]] = []
    partners = list(range(len(prompts)))
    random.Random(seed).shuffle(partners)
    for index, (row, prompt) in enumerate(zip(forget_rows, prompts)):
        source = _source(row, index, prompt, answer_field)
        subject = row.get(subject_field)
        if isinstance(subject, str) and subject.strip():
            text, method = SUBJECT_HOP.format(subject=subject.strip(), prompt=prompt), "subject_hop"
        else:
            text, method = TOPIC_HOP.format(prompt=prompt), "topic_hop"
        out.append({"prompt": text, "variant": "multi_hop", "method": method, **source})
        if compose and len(prompts) > 1:
            # The next item in a seeded cycle: every item is paired once and never with itself.
            other = partners[(partners.index(index) + 1) % len(partners)]
            out.append({
                "prompt": COMPOSED.format(first=prompts[other], second=prompt),
                "variant": "multi_hop", "method": "composed", "second_source_index": other, **source,
            })
    return out


# --------------------------------------------------------------------------------------------
# out of scope


def _as_matrix(vectors: Any, count: int, what: str) -> np.ndarray:
    if hasattr(vectors, "detach"):  # a torch tensor, as Embedder.embed returns
        vectors = vectors.detach().cpu().float().numpy()
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != count:
        raise ValueError(f"embed returned shape {matrix.shape} for {count} {what}; expected ({count}, D)")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def near_neighbours(
    forget_rows: Sequence[dict[str, Any]],
    retain_rows: Sequence[dict[str, Any]],
    embed: Embed,
    k: int = 3,
    *,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    retain_prompt_field: str | None = None,
    retain_answer_field: str | None = None,
) -> list[dict[str, Any]]:
    """Per forget item, the ``k`` retain rows with the highest prompt cosine (best first; ``rank``
    0 is nearest). A retain prompt identical to a forget prompt is skipped: it is not out of scope.

    Rows: ``{"prompt", "answer" (the retain answer), "variant": "neighbour", "source_index",
    "source_id", "source_prompt", "retain_index", "retain_id" (when the retain row has an ``id``),
    "similarity", "rank"}``.
    """
    if k < 1:
        raise UserError(f"k: {k}; expected at least 1 neighbour per forget item")
    retain_prompt_field = retain_prompt_field or prompt_field
    retain_answer_field = retain_answer_field or answer_field
    prompts = _checked(forget_rows, prompt_field, "forget set")
    retain_prompts = _checked(retain_rows, retain_prompt_field, "retain set")
    if not prompts or not retain_prompts:
        return []
    forget_matrix = _as_matrix(embed(prompts), len(prompts), "forget prompts")
    retain_matrix = _as_matrix(embed(retain_prompts), len(retain_prompts), "retain prompts")
    similarity = forget_matrix @ retain_matrix.T
    forgotten = set(prompts)
    out: list[dict[str, Any]] = []
    for index, (row, prompt) in enumerate(zip(forget_rows, prompts)):
        source = _source(row, index, prompt, answer_field)
        del source["answer"]  # the neighbour carries the retain row's answer, not the forgotten one
        # A stable sort keeps ties in retain order, so the choice is deterministic.
        order = np.argsort(-similarity[index], kind="stable")
        picked = [j for j in order if retain_prompts[j] not in forgotten][:k]
        for rank, j in enumerate(picked):
            out.append({
                "prompt": retain_prompts[j], "answer": retain_rows[j].get(retain_answer_field),
                "variant": "neighbour", **source, "retain_index": int(j),
                **({"retain_id": str(retain_rows[j]["id"])} if retain_rows[j].get("id") not in (None, "") else {}),
                "similarity": round(float(similarity[index, j]), 6), "rank": rank,
            })
    return out


def minilm_embed() -> Embed:
    """The all-MiniLM-L6-v2 embedder as an ``embed(texts)`` function (fetched into the cache once;
    a UserError says how when it cannot be had)."""
    from obliviate.models.embeddings import load_embedder

    embedder = load_embedder(required=True)
    assert embedder is not None  # required=True raises instead of returning None
    return lambda texts: embedder.embed(list(texts))


# --------------------------------------------------------------------------------------------
# all together, and on disk


def build_hard_scope(
    forget_rows: Sequence[dict[str, Any]],
    retain_rows: Sequence[dict[str, Any]] | None = None,
    embed: Embed | None = None,
    *,
    paraphrases: int = 2,
    neighbours: int = 3,
    compose: bool = True,
    seed: int = 0,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    retain_prompt_field: str | None = None,
    retain_answer_field: str | None = None,
) -> HardScope:
    """Paraphrases and multi-hop variants of every forget item, and (given ``retain_rows``) its
    nearest retain rows; ``embed`` defaults to :func:`minilm_embed`."""
    in_scope = paraphrase_variants(forget_rows, paraphrases, seed=seed, prompt_field=prompt_field,
                                   answer_field=answer_field)
    in_scope += multi_hop_variants(forget_rows, seed=seed, compose=compose, prompt_field=prompt_field,
                                   answer_field=answer_field)
    out_of_scope: list[dict[str, Any]] = []
    if retain_rows:
        out_of_scope = near_neighbours(
            forget_rows, retain_rows, embed or minilm_embed(), neighbours, prompt_field=prompt_field,
            answer_field=answer_field, retain_prompt_field=retain_prompt_field,
            retain_answer_field=retain_answer_field,
        )
    return HardScope(in_scope, out_of_scope)


def save_hard_scope(rows: HardScope | Sequence[dict[str, Any]], folder: str | Path) -> dict[str, Path]:
    """Write ``<folder>/hard_scope/in_scope.jsonl`` and ``out_of_scope.jsonl`` (rows split by their
    ``variant``); returns the two paths by name. Both files are written, empty ones included."""
    all_rows = rows.rows if isinstance(rows, HardScope) else list(rows)
    known = IN_SCOPE_VARIANTS + OUT_OF_SCOPE_VARIANTS
    for number, row in enumerate(all_rows, start=1):
        if row.get("variant") not in known:
            raise UserError(f"hard-scope rows: row {number}: variant: {row.get('variant')!r}; expected one of {', '.join(known)}")
    target = Path(folder) / FOLDER
    paths = {"in_scope": target / "in_scope.jsonl", "out_of_scope": target / "out_of_scope.jsonl"}
    write_jsonl(paths["in_scope"], [r for r in all_rows if r["variant"] in IN_SCOPE_VARIANTS])
    write_jsonl(paths["out_of_scope"], [r for r in all_rows if r["variant"] in OUT_OF_SCOPE_VARIANTS])
    return paths


__all__ = [
    "COMPOSED", "HardScope", "SUBJECT_HOP", "TOPIC_HOP", "build_hard_scope", "minilm_embed",
    "multi_hop_variants", "near_neighbours", "paraphrase_variants", "save_hard_scope",
]
