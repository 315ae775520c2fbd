"""Batched generation and batched log-likelihood scoring.

Both functions take a model and its tokenizer (a plain ``transformers`` causal LM or a PEFT
wrapper around one) and a list of prompts, format every prompt with
:func:`obliviate.data.formatting.prompt_text`, and work in batches of prompts of similar length so
little compute goes to padding. Results always come back in the order of the input.

Generation pads on the LEFT: every row then ends at the same position, so the next token of every
row is read from the last column and new tokens are appended in lockstep. The padding is built here
from token ids rather than by the tokenizer, so the tokenizer object is never modified.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from obliviate.data.formatting import Encoded, Template, collate, encode_pair, pad_id, prompt_text

# Tokens that close an assistant turn in common chat templates; generation stops at any of them
# that the tokenizer knows, besides its EOS token.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


@dataclass(frozen=True)
class LogLik:
    """Log-likelihood of one response given its prompt.

    ``total`` is the sum of the natural-log probabilities of the response tokens (including the
    template's end-of-turn token), ``tokens`` their number, ``mean`` = total / tokens (its negative
    exponential is the perplexity of the response).
    """

    total: float
    tokens: int

    @property
    def mean(self) -> float:
        return self.total / self.tokens if self.tokens else 0.0

    @property
    def perplexity(self) -> float:
        return math.exp(-self.mean) if self.tokens else float("nan")


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus any end-of-turn token of the chat template the tokenizer knows, without duplicates."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    if isinstance(eos, int):
        ids.append(eos)
    elif isinstance(eos, (list, tuple)):
        ids.extend(int(i) for i in eos)
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        token_id = vocab.get(token)
        if token_id is not None and token_id not in ids:
            ids.append(token_id)
    return ids


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters is not a language model
        return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Evaluation mode and no autograd, restoring training mode afterwards (the training loop
    calls these functions between steps)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            model.train()


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (an out-of-memory error,
    if any, then happens on the first batch rather than after minutes)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _left_pad(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into ``input_ids`` and ``attention_mask``, both (B, T) long."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            attention[i, width - len(row):] = 1
    return input_ids, attention


def _progress(enabled: bool, total: int, description: str):
    """A rich progress bar (or a stand-in that does nothing)."""
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    return _ProgressTask(progress, total, description)


class _ProgressTask:
    def __init__(self, progress, total: int, description: str) -> None:
        self.progress = progress
        self.total = total
        self.description = description
        self.task = None

    def __enter__(self) -> "_ProgressTask":
        self.progress.__enter__()
        self.task = self.progress.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


def _generation_config(
    max_new_tokens: int, do_sample: bool, temperature: float, top_p: float, stops: list[int], pad: int
):
    from transformers import GenerationConfig

    # Everything is set explicitly: `generate` fills unset fields from the model's own
    # generation_config (a hub model may ship top_k=50 or a repetition penalty), and our results
    # must depend only on the arguments of `generate` below.
    settings = dict(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        num_beams=1,
        repetition_penalty=1.0,
        eos_token_id=stops or None,
        pad_token_id=pad,
    )
    if do_sample:
        # top_k=0 switches off the top-k filter a model's own config may carry.
        settings.update(temperature=temperature, top_p=top_p, top_k=0)
    return GenerationConfig(**settings)


def until_stop(tokens: list[int], stops) -> list[int]:
    """The generated ``tokens`` up to the first stop token. Rows that finished early are filled
    with the pad id, which may be an ordinary token in some vocabularies, so the cut is made here
    rather than left to ``skip_special_tokens``."""
    for cut, token in enumerate(tokens):
        if token in stops:
            return tokens[:cut]
    return tokens


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    template: Template = "auto",
    progress: bool = False,
) -> list[str]:
    """Answer every prompt; returns the decoded answers in the order of ``prompts``.

    Prompts are formatted with the chat template (or the plain template), sorted by token length
    and generated ``batch_size`` at a time with left padding: ``input_ids`` and
    ``attention_mask`` of shape (B, T) go to ``model.generate``, which returns (B, T + new).
    Generation of a row stops at EOS or at the chat end-of-turn token; the answer is cut there and
    decoded without special tokens.

    Greedy decoding is the default. With ``do_sample`` the global torch RNG is seeded with
    ``seed`` (plus the batch number) inside a forked RNG state, so the same call gives the same
    answers and the caller's RNG stream is left untouched.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be positive when sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not prompts:
        return []
    device = model_device(model)
    pad = pad_id(tokenizer)
    stops = stop_token_ids(tokenizer)
    config = _generation_config(max_new_tokens, do_sample, temperature, top_p, stops, pad)
    encoded = [
        tokenizer(prompt_text(tokenizer, p, template), add_special_tokens=False)["input_ids"]
        for p in prompts
    ]
    batches = length_sorted_batches([len(e) for e in encoded], batch_size)
    answers: list[str | None] = [None] * len(prompts)
    stop_set = set(stops)

    with eval_mode(model), _progress(progress, len(prompts), "generating") as bar:
        for batch_number, batch in enumerate(batches):
            input_ids, attention = _left_pad([encoded[i] for i in batch], pad)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed + batch_number)
                output = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    generation_config=config,
                )
            new_tokens = output[:, input_ids.shape[1]:].tolist()
            for row, index in enumerate(batch):
                tokens = until_stop(new_tokens[row], stop_set)
                answers[index] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            if bar is not None:
                bar.advance(len(batch))
    return [a if a is not None else "" for a in answers]


def teacher_forced_logits(
    model, encoded: Sequence[Encoded], pad_token_id: int, batch_size: int
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """One teacher-forced forward pass per batch of encoded pairs of similar length, the one pass
    every per-token score (log-likelihood, membership-inference statistics) is read from.

    Pairs are right-padded with :func:`collate`. Yields ``(indices, logits, labels)``: the
    batch's positions in ``encoded``, float32 logits (B, T-1, V) shifted by one so position t
    scores ``labels[:, t]`` (label t + 1; -100 on prompt and padding), and those labels (B, T-1),
    on the model's device. Runs in evaluation mode without autograd.
    """
    device = model_device(model)
    with eval_mode(model):
        for batch in length_sorted_batches([len(e.input_ids) for e in encoded], batch_size):
            tensors = collate([encoded[i] for i in batch], pad_token_id)
            logits = model(
                input_ids=tensors["input_ids"].to(device),
                attention_mask=tensors["attention_mask"].to(device),
            ).logits[:, :-1].float()
            yield batch, logits, tensors["labels"][:, 1:].to(device)


def score_loglik(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    batch_size: int = 16,
    template: Template = "auto",
    max_length: int = 1024,
) -> list[LogLik]:
    """Log-probability of each response given its prompt, in input order.

    Pairs are encoded with :func:`encode_pair` (response-only labels, the template's end-of-turn
    token included) and right-padded with :func:`collate`; the logits (B, T, V) are shifted by
    one so position t scores label t + 1, and only labelled positions count.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        return []
    encoded = [
        encode_pair(tokenizer, p, r, max_length=max_length, template=template)
        for p, r in zip(prompts, responses)
    ]
    results: list[LogLik | None] = [None] * len(prompts)
    for batch, logits, labels in teacher_forced_logits(model, encoded, pad_id(tokenizer), batch_size):
        # cross_entropy with reduction="none" returns -log p(label) (0 where ignored), (B, T-1).
        token_nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        totals = (-token_nll).sum(dim=1).tolist()
        counts = (labels != -100).sum(dim=1).tolist()
        for row, index in enumerate(batch):
            results[index] = LogLik(total=float(totals[row]), tokens=int(counts[row]))
    return [r for r in results if r is not None]
