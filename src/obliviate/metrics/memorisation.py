"""Memorisation of a text: leak rate, exact memorisation, extraction strength, perplexity.

- **Leak rate** (Yao et al., arXiv 2310.10683): prompt the model with the opening of a passage,
  compare its continuation with the true one by sentence BLEU, and count a leak when the BLEU
  exceeds a threshold. The threshold is calibrated on the text itself: BLEU between *unrelated*
  sentences of the same text measures how similar two pieces of it are by chance (shared names,
  function words, style), and a continuation is a leak only if it is more similar to the truth
  than that. :func:`calibrate_bleu_threshold` takes a high quantile of those chance scores.
- **Exact memorisation** (teacher-forced): the share of continuation tokens that are the model's
  argmax given the true text before them.
- **Extraction strength** (MUSE / OpenUnlearning): 1 - k/n, where k is the shortest prefix of the
  n-token continuation after which the model reproduces the rest under greedy decoding. With
  teacher forcing, greedy decoding from the true prefix of length k reproduces the remaining
  tokens exactly when every one of them is the argmax at its position, so k is found from one
  forward pass.
- **Perplexity** of plain text.

Prompt formats: ``template="none"`` (the default here) concatenates the raw prefix and its
continuation, as the text appears in the book the model was fine-tuned on; the continuation is
tokenised separately after one space (unless the prefix already ends with whitespace), so the
boundary between scored and unscored tokens is exact. ``"auto"``, ``"chat"`` and ``"plain"`` use
:func:`obliviate.data.formatting.encode_pair`, whose scored tokens include the template's closing
end-of-turn token, as in training.
"""

from __future__ import annotations

import math
import random
from typing import Literal, Sequence

import numpy as np
import torch.nn.functional as F

from obliviate.data.formatting import IGNORE_INDEX, Encoded, collate, encode_pair, fit_pair, pad_id
from obliviate.data.text import split_sentences
from obliviate.errors import UserError
from obliviate.metrics.text import CorpusScore, bleu
from obliviate.models.generation import eval_mode, length_sorted_batches, model_device

MemorisationTemplate = Literal["auto", "chat", "plain", "none"]


# ---------------------------------------------------------------------------------------------
# Leak rate


def unrelated_bleu_scores(
    texts: Sequence[str],
    seed: int = 0,
    pairs: int = 1000,
    unit: Literal["sentence", "text"] = "sentence",
    min_words: int = 4,
) -> list[float]:
    """Sentence BLEU of random pairs of different pieces of the same text (chance similarity).

    ``unit="sentence"`` splits every text into sentences first; ``"text"`` pairs the texts as
    given (use it with pieces as long as the continuations you will score). Pieces with fewer than
    ``min_words`` words are left out (one-word lines such as speaker names say nothing about
    chance overlap), and identical strings are never paired. All pairs are used when there are no
    more than ``pairs`` of them; otherwise ``pairs`` ordered pairs are drawn with
    ``random.Random(seed)``, so the result depends only on the inputs and the seed.
    """
    pieces: list[str] = []
    for text in texts:
        pieces.extend(split_sentences(text) if unit == "sentence" else [" ".join(text.split())])
    pieces = list(dict.fromkeys(p for p in pieces if len(p.split()) >= min_words))
    if len(pieces) < 2:
        raise UserError(
            f"need at least two different {unit}s of {min_words}+ words to calibrate a BLEU threshold, "
            f"found {len(pieces)}"
        )
    n = len(pieces)
    if n * (n - 1) <= pairs:
        chosen = [(i, j) for i in range(n) for j in range(n) if i != j]
    else:
        rng = random.Random(seed)
        chosen = []
        while len(chosen) < pairs:
            i, j = rng.randrange(n), rng.randrange(n)
            if i != j:
                chosen.append((i, j))
    # BLEU is not symmetric (brevity penalty, precision over the prediction), so ordered pairs.
    return [bleu(pieces[i], pieces[j]) for i, j in chosen]


def calibrate_bleu_threshold(
    texts_or_sentences: Sequence[str],
    seed: int = 0,
    quantile: float = 0.99,
    pairs: int = 1000,
    unit: Literal["sentence", "text"] = "sentence",
    min_words: int = 4,
) -> float:
    """The BLEU above which a continuation counts as leaked: a quantile of chance similarity.

    The 0.99 quantile makes the threshold a test at about the 1% level: a continuation that merely
    shares the text's names and style (an unrelated piece of the same book) is above it only 1%
    of the time, so a model that never saw the book leaks on about 1% of prompts, and leak rates
    well above that show memorisation. A lower quantile finds more partial leaks at the price of
    more false alarms. See :func:`unrelated_bleu_scores` for the pairs.
    """
    if not 0.0 < quantile < 1.0:
        raise UserError(f"quantile must lie strictly between 0 and 1, got {quantile}")
    scores = unrelated_bleu_scores(texts_or_sentences, seed, pairs, unit, min_words)
    return float(np.quantile(np.asarray(scores, dtype=np.float64), quantile))


def leak_rate(bleu_scores: Sequence[float], threshold: float) -> CorpusScore:
    """Share of continuations whose BLEU is strictly above ``threshold``; per item 1.0 or 0.0."""
    items = [1.0 if score > threshold else 0.0 for score in bleu_scores]
    return CorpusScore(sum(items) / len(items) if items else float("nan"), items)


# ---------------------------------------------------------------------------------------------
# Teacher-forced memorisation


def encode_continuation(
    tokenizer, prompt: str, continuation: str, max_length: int = 1024, template: MemorisationTemplate = "none"
) -> Encoded:
    """Token ids of prompt + continuation with labels on the continuation only.

    ``template="none"``: raw concatenation, no special tokens, one space between the two unless
    either side already has whitespace at the join. When too long, the prompt is cut from the
    left (keeping the text nearest the continuation) down to half of ``max_length`` at most, then
    the continuation from the right. Other templates: :func:`encode_pair`.
    """
    if template != "none":
        return encode_pair(tokenizer, prompt, continuation, max_length=max_length, template=template)
    joint = prompt and continuation and not prompt[-1].isspace() and not continuation[0].isspace()
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer((" " if joint else "") + continuation, add_special_tokens=False)["input_ids"]
    return fit_pair(prompt_ids, response_ids, max_length)


def argmax_hits(
    model,
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    template: MemorisationTemplate = "none",
    batch_size: int = 8,
    max_length: int = 1024,
) -> list[list[bool]]:
    """For each pair, whether each continuation token is the model's teacher-forced argmax.

    One forward pass per batch over right-padded ``input_ids`` (B, T); logits (B, T, V) at
    position t predict token t + 1, and only labelled (continuation) positions are read.
    Returns, in input order, one list of booleans per pair, one per scored token.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    encoded = [encode_continuation(tokenizer, p, c, max_length, template) for p, c in zip(prompts, continuations)]
    results: list[list[bool]] = [[] for _ in encoded]
    if not encoded:
        return results
    device, pad = model_device(model), pad_id(tokenizer)
    with eval_mode(model):
        for batch in length_sorted_batches([len(e.input_ids) for e in encoded], batch_size):
            tensors = collate([encoded[i] for i in batch], pad)
            logits = model(
                input_ids=tensors["input_ids"].to(device), attention_mask=tensors["attention_mask"].to(device)
            ).logits
            predicted = logits[:, :-1].argmax(dim=-1).cpu()  # (B, T-1)
            targets = tensors["labels"][:, 1:]  # (B, T-1)
            scored = targets != IGNORE_INDEX
            for row, index in enumerate(batch):
                mask = scored[row]
                results[index] = (predicted[row][mask] == targets[row][mask]).tolist()
    return results


def _mean_finite(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def exact_memorisation(
    model,
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    template: MemorisationTemplate = "none",
    batch_size: int = 8,
    max_length: int = 1024,
) -> CorpusScore:
    """Per pair: the share of continuation tokens predicted by teacher-forced argmax.

    ``value`` is the mean over pairs (each pair weighs the same whatever its length); a pair with
    no continuation token scores NaN and is left out of the mean.
    """
    hits = argmax_hits(
        model, tokenizer, prompts, continuations, template=template, batch_size=batch_size, max_length=max_length
    )
    items = [sum(h) / len(h) if h else float("nan") for h in hits]
    return CorpusScore(_mean_finite(items), items)


def extraction_strength(
    model,
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    template: MemorisationTemplate = "none",
    batch_size: int = 8,
    max_length: int = 1024,
) -> CorpusScore:
    """Per pair: ``1 - k / n`` with ``k`` the fewest continuation tokens to give before the model
    reproduces all the rest (``n`` tokens in all).

    1 means the prompt alone extracts the whole continuation; 0 means not even the last token is
    predicted. Deviation: OpenUnlearning's loop stops at ``k = n - 1`` when nothing matches and so
    reports ``1/n`` instead of 0 for a model that predicts nothing right; here ``k`` may reach ``n``.
    """
    hits = argmax_hits(
        model, tokenizer, prompts, continuations, template=template, batch_size=batch_size, max_length=max_length
    )
    items: list[float] = []
    for h in hits:
        if not h:
            items.append(float("nan"))
            continue
        k = len(h)
        while k > 0 and h[k - 1]:
            k -= 1
        items.append(1.0 - k / len(h))
    return CorpusScore(_mean_finite(items), items)


# ---------------------------------------------------------------------------------------------
# Perplexity


def perplexity(
    model,
    tokenizer,
    texts: Sequence[str],
    block_size: int = 512,
    *,
    batch_size: int = 8,
    add_bos: bool = True,
) -> CorpusScore:
    """Perplexity of plain texts: ``exp`` of the mean negative log-likelihood per token.

    Each text is tokenised without special tokens; with ``add_bos`` (and a tokenizer that has a
    BOS token) BOS is put first so the first word is scored too. Texts longer than
    ``block_size`` are scored in windows of ``block_size`` tokens that overlap by one token, so
    every token after the first is scored exactly once, with up to ``block_size - 1`` tokens of
    context. ``per_item`` is each text's perplexity (NaN for a text with no scored token);
    ``value`` pools all tokens: ``exp(sum NLL / sum tokens)``.
    """
    if block_size < 2:
        raise UserError(f"block_size must be at least 2, got {block_size}")
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    windows: list[tuple[int, list[int]]] = []
    for index, text in enumerate(texts):
        ids = bos + list(tokenizer(text, add_special_tokens=False)["input_ids"])
        start = 0
        while start < len(ids) - 1:
            windows.append((index, ids[start : start + block_size]))
            start += block_size - 1
    nll = [0.0] * len(texts)
    counts = [0] * len(texts)
    if windows:
        device, pad = model_device(model), pad_id(tokenizer)
        encoded = [Encoded(input_ids=w, labels=list(w)) for _, w in windows]
        with eval_mode(model):
            for batch in length_sorted_batches([len(e.input_ids) for e in encoded], batch_size):
                tensors = collate([encoded[i] for i in batch], pad)
                logits = model(
                    input_ids=tensors["input_ids"].to(device), attention_mask=tensors["attention_mask"].to(device)
                ).logits.float()
                labels = tensors["labels"][:, 1:].to(device)
                token_nll = F.cross_entropy(
                    logits[:, :-1].transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
                )  # (B, T-1), 0 where ignored
                sums = token_nll.sum(dim=1).tolist()
                scored = (labels != IGNORE_INDEX).sum(dim=1).tolist()
                for row, window_index in enumerate(batch):
                    text_index = windows[window_index][0]
                    nll[text_index] += float(sums[row])
                    counts[text_index] += int(scored[row])
    items = [math.exp(n / c) if c else float("nan") for n, c in zip(nll, counts)]
    total_tokens = sum(counts)
    value = math.exp(sum(nll) / total_tokens) if total_tokens else float("nan")
    return CorpusScore(value, items)
