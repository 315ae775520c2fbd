"""The copyrighted-text suite (Yao et al., arXiv 2310.10683; Gundavarapu et al., arXiv 2405.15152).

A model that memorised a book is prompted with the opening (prefix) of each passage and its
greedy continuation is compared with the true continuation. Splits (each a list of
``Example(prompt=prefix, response=true continuation)``):

- ``forget``: passages that were unlearned (the "unlearned" split of the papers);
- ``unseen``: passages of the same book that were memorised but not unlearned: do they leak?
- ``retain``: passages (or any other text) the model must keep.

Figures per split:

- ``rouge_l``, ``bleu`` (and ``cosine`` of sentence embeddings when an embedder is given) of the
  generated against the true continuation;
- ``leak_rate``: share of passages whose BLEU exceeds a threshold calibrated on unrelated pieces
  of the same text (:func:`obliviate.metrics.memorisation.calibrate_bleu_threshold`);
- ``exact_memorisation`` and ``extraction_strength`` of the continuation tokens (teacher forced);
- ``continuation_nll`` (and its exponential ``continuation_perplexity``): mean negative log-likelihood per continuation token given the prefix, in
  the prompt format the model was fine-tuned with (what fine-tuning lowers and unlearning raises);
- ``perplexity``: perplexity of the raw passage text (prefix + continuation, no template).

Besides: ``general`` perplexity of text that is not from the book, and the ``degenerate_rate`` of
answers to everyday prompts (a model broken by unlearning stops answering sensibly), with their
``on_topic_rate`` (prompt-answer embedding cosine above the on-topic threshold) when an embedder
is given.

Prompt format (``template``): ``"plain"``/``"chat"``/``"auto"`` wrap the prefix as a question the
way :mod:`obliviate.data.formatting` does for training pairs; ``"none"`` continues the raw prefix
(the book as printed). Score a model in the format it was fine-tuned with.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from obliviate.data.examples import Example
from obliviate.data.formatting import IGNORE_INDEX, collate, pad_id
from obliviate.errors import UserError
from obliviate.eval.results import write_suite_results
from obliviate.judges.refusal import is_degenerate
from obliviate.metrics.memorisation import encode_continuation, leak_rate, perplexity
from obliviate.metrics.text import bleu, rouge_l_f1
from obliviate.models.generation import model_device, until_stop

SPLITS = ("forget", "unseen", "retain")
TEMPLATES = ("none", "plain", "chat", "auto")


@dataclass
class CopyrightSettings:
    """How the suite prompts and scores.

    ``template``: prompt format of the passages (see the module docstring). ``max_new_tokens``
    bounds each greedy continuation (set it near the longest true continuation: a longer
    generation only lowers precision-based scores). ``benign_prompts``: how many built-in
    everyday prompts are answered for the degenerate rate (0 = skip).
    """

    template: str = "plain"
    max_new_tokens: int = 64
    batch_size: int = 16
    max_length: int = 512
    benign_prompts: int = 16
    benign_max_new_tokens: int = 48

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise UserError(f"template '{self.template}' is not valid (valid: {', '.join(TEMPLATES)})")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")


# ---------------------------------------------------------------------------------------------
# Generation


def generate_continuations(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    template: str = "plain",
    max_new_tokens: int = 64,
    batch_size: int = 16,
) -> list[str]:
    """Greedy continuations of ``prompts``, in input order.

    ``template="none"`` feeds the raw prefix (no special tokens) and returns the raw continuation
    (leading whitespace kept so that ``prefix + continuation`` reads as the book would);
    other templates go through :func:`obliviate.models.generation.generate`.
    """
    if template != "none":
        from obliviate.models.generation import generate

        return generate(
            model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size, template=template
        )
    if not prompts:
        return []
    from transformers import GenerationConfig

    from obliviate.models.generation import stop_token_ids

    pad = pad_id(tokenizer)
    stops = stop_token_ids(tokenizer)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0,
        eos_token_id=stops or None, pad_token_id=pad,
    )
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    out: list[str] = [""] * len(prompts)
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                width = max(len(encoded[i]) for i in batch)
                # Left padding: every row's last real token sits at the same position, where
                # generation starts.
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, index in enumerate(batch):
                    n = len(encoded[index])
                    if n:
                        ids[row, width - n :] = torch.tensor(encoded[index])
                        mask[row, width - n :] = 1
                generated = model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
                )[:, width:].tolist()
                for row, index in enumerate(batch):
                    out[index] = tokenizer.decode(until_stop(generated[row], stops), skip_special_tokens=True)
    finally:
        if was_training:
            model.train()
    return out


# ---------------------------------------------------------------------------------------------
# Teacher-forced likelihood


@dataclass
class TeacherForced:
    """Per-pair teacher-forced figures of one continuation given its prompt.

    ``nll``: mean negative log-likelihood per continuation token (nats); ``exact_memorisation``:
    share of continuation tokens that are the argmax; ``extraction_strength``: ``1 - k/n`` with
    ``k`` the fewest continuation tokens to give before greedy decoding reproduces the rest (the
    definitions of :mod:`obliviate.metrics.memorisation`). NaN when no token is scored.
    """

    nll: float
    exact_memorisation: float
    extraction_strength: float


def _extraction(hits: list[bool]) -> float:
    # Greedy decoding from the true prefix of length k reproduces the rest exactly when every later
    # token is the argmax, so k is the position after the last miss.
    k = len(hits)
    while k > 0 and hits[k - 1]:
        k -= 1
    return 1.0 - k / len(hits)


def teacher_forced(
    model,
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    template: str = "plain",
    batch_size: int = 8,
    max_length: int = 512,
) -> list[TeacherForced]:
    """NLL, exact memorisation and extraction strength of each continuation, from one forward pass.

    Pairs are encoded by :func:`obliviate.metrics.memorisation.encode_continuation` (labels on
    continuation tokens only) and right-padded into (B, T); logits (B, T, V) at position t score
    label t + 1. Same values as ``exact_memorisation`` / ``extraction_strength`` of the metrics
    module, which each run their own pass (three passes cost three times as much on a CPU).
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    encoded = [encode_continuation(tokenizer, p, c, max_length, template) for p, c in zip(prompts, continuations)]
    nan = float("nan")
    result = [TeacherForced(nan, nan, nan) for _ in encoded]
    if not encoded:
        return result
    device, pad = model_device(model), pad_id(tokenizer)
    # Similar lengths share a batch (less padding); results go back in input order.
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i].input_ids), i))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                tensors = collate([encoded[i] for i in indices], pad)
                logits = model(
                    input_ids=tensors["input_ids"].to(device), attention_mask=tensors["attention_mask"].to(device)
                ).logits[:, :-1].float()  # (B, T-1, V)
                labels = tensors["labels"][:, 1:].to(device)  # (B, T-1)
                token_nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
                predicted = logits.argmax(dim=-1)
                scored = labels != IGNORE_INDEX
                for row, index in enumerate(indices):
                    mask = scored[row]
                    count = int(mask.sum())
                    if not count:
                        continue
                    hits = (predicted[row][mask] == labels[row][mask]).tolist()
                    result[index] = TeacherForced(
                        nll=float(token_nll[row].sum()) / count,
                        exact_memorisation=sum(hits) / count,
                        extraction_strength=_extraction(hits),
                    )
    finally:
        if was_training:
            model.train()
    return result


def continuation_nll(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str], **kwargs) -> list[float]:
    """Mean negative log-likelihood (nats per token) of each continuation given its prompt."""
    return [t.nll for t in teacher_forced(model, tokenizer, prompts, continuations, **kwargs)]


# ---------------------------------------------------------------------------------------------
# Inputs


def passage_text(example: Example) -> str:
    """The passage as printed: prefix and continuation joined by one space (the cut dropped it)."""
    prefix, rest = example.prompt, example.response
    if prefix and rest and not prefix[-1].isspace() and not rest[0].isspace():
        return f"{prefix} {rest}"
    return prefix + rest


def benign_prompts(count: int = 16) -> list[str]:
    """The first ``count`` everyday prompts shipped with obliviate (cooking, science, travel...)."""
    from obliviate.data.fetch import load_builtin

    rows = [r for r in load_builtin("benign_prompts") if r.get("kind") == "everyday"]
    # Every n-th prompt, so a small count still spans the topics (the file is grouped by topic).
    step = max(1, len(rows) // max(1, count))
    return [r["prompt"] for r in rows[::step][:count]]


def default_general_texts(paragraphs: int = 8, per_paragraph: int = 12) -> list[str]:
    """Text that is not from any book: the built-in benign prompts, ``per_paragraph`` to a paragraph.

    Ordinary modern English questions on everyday topics, shipped with the package, so general
    perplexity needs no download. Pass your own ``general_texts`` for a richer measure.
    """
    from obliviate.data.fetch import load_builtin

    prompts = [r["prompt"] for r in load_builtin("benign_prompts") if r["kind"] in ("everyday", "borderline")]
    chunks = [" ".join(prompts[i : i + per_paragraph]) for i in range(0, len(prompts), per_paragraph)]
    return chunks[:paragraphs]


def everyday_pairs(count: int, *, skip_paragraphs: int = 8, per_paragraph: int = 12) -> list[Example]:
    """Up to ``count`` (prefix, continuation) pairs of everyday text for a retain (KL) set.

    Built from the built-in benign prompts that :func:`default_general_texts` leaves out (it uses
    the first ``skip_paragraphs * per_paragraph``), so the general-perplexity figure is never
    measured on text the unlearning stage trained on: one prompt is the prefix, the next two are
    the continuation.
    """
    from obliviate.data.fetch import load_builtin

    # Everyday and risky-sounding questions only, the same text the general figure is made of.
    rows = [r for r in load_builtin("benign_prompts") if r["kind"] in ("everyday", "borderline")]
    prompts = [r["prompt"] for r in rows][skip_paragraphs * per_paragraph :]
    pairs = [
        Example(prompts[i], " ".join(prompts[i + 1 : i + 3]), {"source": "everyday"})
        for i in range(0, len(prompts) - 2, 3)
    ]
    return pairs[:count]


def calibration_texts(splits: dict[str, Sequence[Example]]) -> list[str]:
    """The true continuations of every split: the pieces whose chance overlap sets the threshold."""
    return [e.response for examples in splits.values() for e in examples]


# ---------------------------------------------------------------------------------------------
# The suite


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def evaluate_copyright(
    model,
    tokenizer,
    splits: dict[str, Sequence[Example]],
    *,
    general_texts: Sequence[str],
    bleu_threshold: float,
    embedder=None,
    settings: CopyrightSettings | None = None,
    benign: Optional[Sequence[str]] = None,
) -> dict[str, Any]:
    """Run the suite on ``model``; returns figures, per-item rows and the settings used.

    ``splits`` maps a split name (``forget``, ``unseen``, ``retain`` or any other) to
    prefix/continuation examples (``extra["passage_id"]`` is copied into the rows when present).
    ``bleu_threshold`` is fixed by the caller (calibrate it once per book and keep it for every
    model compared). ``benign`` overrides the built-in everyday prompts of the degenerate rate.

    Returns ``{"metrics": {split: {...}, "general": {...}, "benign": {...}}, "items": {split:
    [rows]}, "bleu_threshold": float, "settings": {...}, "embedder": name or None}``.
    """
    settings = settings or CopyrightSettings()
    if not general_texts:
        raise UserError("general_texts is empty: give at least one paragraph of text that is not from the book")
    metrics: dict[str, dict[str, Any]] = {}
    items: dict[str, list[dict[str, Any]]] = {}
    for name, examples in splits.items():
        if not examples:
            continue
        prompts = [e.prompt for e in examples]
        truths = [e.response for e in examples]
        generations = generate_continuations(
            model, tokenizer, prompts, template=settings.template,
            max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
        )
        rouge = [rouge_l_f1(g, t) for g, t in zip(generations, truths)]
        bleus = [bleu(g, t) for g, t in zip(generations, truths)]
        leaks = leak_rate(bleus, bleu_threshold)
        cosine = embedder.pair_cosine(generations, truths) if embedder is not None else None
        forced = teacher_forced(
            model, tokenizer, prompts, truths, template=settings.template, batch_size=settings.batch_size,
            max_length=settings.max_length,
        )
        nll = [f.nll for f in forced]
        memorised = [f.exact_memorisation for f in forced]
        extraction = [f.extraction_strength for f in forced]
        ppl = perplexity(
            model, tokenizer, [passage_text(e) for e in examples], block_size=settings.max_length,
            batch_size=settings.batch_size,
        )
        rows = []
        for i, example in enumerate(examples):
            row = {
                "passage_id": example.extra.get("passage_id", str(i)),
                "prefix": example.prompt,
                "truth": example.response,
                "generation": generations[i],
                "rouge_l": rouge[i],
                "bleu": bleus[i],
                "leak": bool(leaks.per_item[i]),
                "exact_memorisation": memorised[i],
                "extraction_strength": extraction[i],
                "continuation_nll": nll[i],
                "perplexity": ppl.per_item[i],
            }
            if cosine is not None:
                row["cosine"] = cosine[i]
            rows.append(row)
        mean_nll = _mean(nll)
        split_metrics = {
            "count": len(examples),
            "rouge_l": _mean(rouge),
            "bleu": _mean(bleus),
            "leak_rate": leaks.value,
            "exact_memorisation": _mean(memorised),
            "extraction_strength": _mean(extraction),
            "continuation_nll": mean_nll,
            "continuation_perplexity": math.exp(mean_nll) if math.isfinite(mean_nll) else float("nan"),
            "perplexity": ppl.value,
        }
        if cosine is not None:
            split_metrics["cosine"] = _mean(cosine)
        metrics[name] = split_metrics
        items[name] = rows
    general = perplexity(model, tokenizer, list(general_texts), block_size=settings.max_length, batch_size=settings.batch_size)
    metrics["general"] = {"count": len(general_texts), "perplexity": general.value}
    prompts = list(benign) if benign is not None else benign_prompts(settings.benign_prompts)
    if prompts:
        from obliviate.models.generation import generate

        answers = generate(
            model, tokenizer, prompts, max_new_tokens=settings.benign_max_new_tokens, batch_size=settings.batch_size
        )
        degenerate = [is_degenerate(a) for a in answers]
        metrics["benign"] = {"count": len(prompts), "degenerate_rate": sum(degenerate) / len(degenerate)}
        items["benign"] = [
            {"prompt": p, "response": a, "degenerate": d} for p, a, d in zip(prompts, answers, degenerate)
        ]
        if embedder is not None:
            # A fluent answer about something else is not caught by the degenerate check.
            from obliviate.models.embeddings import ON_TOPIC_THRESHOLD

            cosines = embedder.pair_cosine(prompts, answers)
            on_topic = [c >= ON_TOPIC_THRESHOLD and not d for c, d in zip(cosines, degenerate)]
            metrics["benign"]["on_topic_rate"] = sum(on_topic) / len(on_topic)
            for row, cosine in zip(items["benign"], cosines):
                row["on_topic_cosine"] = cosine
    return {
        "metrics": metrics,
        "items": items,
        "bleu_threshold": bleu_threshold,
        "settings": asdict(settings),
        "embedder": "all-MiniLM-L6-v2" if embedder is not None else None,
    }


def write_copyright_results(result: dict[str, Any], run_dir: str | Path, tag: str) -> Path:
    """Write ``eval/copyright_<tag>.json`` (figures) and ``generations/copyright_<tag>_<split>.jsonl``."""
    return write_suite_results(result, run_dir, suite="copyright", tag=tag, generations_prefix=f"copyright_{tag}_")




# ---------------------------------------------------------------------------------------------
# Inputs of a stand-alone evaluation (``obliviate.api.evaluate(suite="copyright")``)


def read_general_texts(path: str | Path) -> list[str]:
    """Paragraphs of a ``.txt`` file (blank-line separated) or ``text`` fields of a ``.jsonl`` file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (give general text as .txt or .jsonl with a 'text' field)")
    if path.suffix.lower() == ".jsonl":
        from obliviate.io import iter_jsonl

        texts = []
        for line_no, row in iter_jsonl(path):
            if not isinstance(row.get("text"), str):
                raise UserError(f"{path}, line {line_no}: expected an object with a string field 'text'")
            texts.append(row["text"])
    else:
        import re

        texts = [" ".join(p.split()) for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError(f"{path}: holds no text")
    return texts
