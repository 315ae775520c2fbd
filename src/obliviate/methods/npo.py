"""Negative preference optimisation: forget pairs treated as dispreferred answers only.

Equation (Zhang et al. 2024, eq. 3):

    L = w_f * L_NPO + w_r * L_retain
    L_NPO = (2/beta) * E_(x,y)~forget [ log(1 + (pi_theta(y|x) / pi_ref(y|x))^beta) ]

with pi(y|x) the sequence likelihood (log pi = the SUM of response-token log-probabilities) and
pi_ref the original model. L_retain is nothing, the mean token NLL on retain pairs (``nll``, as
OpenUnlearning's NPO, the GradDiff-style retain term) or the forward KL to the original model on
retain pairs (``kl``, as in ``ga_kl``). L_NPO equals (2/beta) log 2 at the start and falls towards
0 as the likelihood of the forget answers drops below the reference's; as beta -> 0 its gradient
becomes gradient ascent's, but weighted down on examples already forgotten, which is what keeps
NPO from collapsing the model as fast as gradient ascent does.

Paper: Zhang, Lin, Bai, Mei, "Negative Preference Optimization: From Catastrophic Collapse to
Effective Unlearning", 2024, https://arxiv.org/abs/2404.05868.

Defaults (OpenUnlearning's NPO trainer config): beta = 0.1, w_f = 1.0, retain term ``nll`` with
w_r = 1.0.

Deviations:
- The reference log-likelihoods of the forget pairs are computed once, before training, for
  every distinct (prompt, response), and kept in the run folder as ``reference_logprobs.json``
  (read back on resume instead of recomputed). The reference does not change during training,
  so the values are the ones a per-step reference pass would give, save for rounding: they are
  computed in fp32 outside any autocast, while under ``train.precision: bf16`` the trained
  model's log-likelihoods come from bf16 autocast.
- Response tokens only (the prompt carries no loss); pairs cut by ``data.max_length`` are scored
  on the tokens that remain, for the reference as for the trained model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import torch
from pydantic import Field

from obliviate.methods import losses
from obliviate.methods.base import (
    LossTerm,
    Method,
    MethodConfig,
    forget_and_optional_retain,
    forward_answers,
    register,
    retain_term,
)

CACHE_FILE = "reference_logprobs.json"
_CHUNK = 8  # forget pairs per reference forward pass in setup


class NPOConfig(MethodConfig):
    beta: float = Field(default=0.1, gt=0, description="inverse temperature of the preference loss")
    forget_weight: float = Field(default=1.0, ge=0)
    retain_loss: Literal["none", "nll", "kl"] = "nll"
    retain_weight: float = Field(default=1.0, ge=0)


@register
class NPO(Method):
    name = "npo"
    Config = NPOConfig
    needs_reference = True
    needs_retain = True  # with the default retain term; ``retain_loss: none`` needs none

    def __init__(self, config: NPOConfig):
        super().__init__(config)
        self.needs_retain = config.retain_loss != "none"
        self._reference_logprobs: dict[tuple, float] = {}  # token key -> log pi_ref(y|x)

    def setup(self, model, reference, context):
        encoder, device = context["encoder"], context["device"]
        examples = list({(e.prompt, e.response): e for e in context["data"].forget}.values())
        settings = {"template": str(encoder.template), "max_length": int(encoder.max_length)}
        run_dir: Optional[Path] = Path(context["run_dir"]) if context.get("run_dir") is not None else None
        cached = _read_cache(run_dir / CACHE_FILE, settings) if run_dir is not None else None
        pairs = [(e.prompt, e.response) for e in examples]
        if cached is None or not set(pairs) <= cached.keys():
            values = reference_logprobs(reference, encoder, examples, device)
            cached = dict(zip(pairs, values))
            if run_dir is not None and _is_main_process():
                from obliviate.io import atomic_write_json

                entries = [{"prompt": p, "response": r, "logprob": v} for (p, r), v in cached.items()]
                atomic_write_json(run_dir / CACHE_FILE, {**settings, "entries": entries})
        self._reference_logprobs = {
            _token_key(encoder.encode(e).input_ids, encoder.encode(e).labels): cached[(e.prompt, e.response)]
            for e in examples
        }

    def build_batch(self, forget, retain, ctx):
        return forget_and_optional_retain(self.config.retain_loss, forget, retain)

    def terms(self, model, batch, reference):
        cfg = self.config
        forget = batch["forget"]
        out, labels = forward_answers(model, forget)
        logp = losses.sequence_logprob(out.logits, labels)
        ref = torch.tensor(self._lookup(forget), dtype=logp.dtype, device=logp.device)
        yield LossTerm("forget", cfg.forget_weight, losses.npo_loss(logp, ref, cfg.beta))
        yield from retain_term("npo", cfg.retain_loss, cfg.retain_weight, model, batch, reference)

    def _lookup(self, batch) -> list[float]:
        """The cached reference log-likelihood of each row of a tokenised forget batch."""
        values = []
        lengths = batch["attention_mask"].sum(-1).tolist()
        for ids, labels, n in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), lengths):
            key = _token_key(ids[:n], labels[:n])
            if key not in self._reference_logprobs:
                raise RuntimeError("npo: a forget row has no reference log-likelihood; setup() saw other forget data")
            values.append(self._reference_logprobs[key])
        return values


@torch.no_grad()
def reference_logprobs(reference, encoder, examples, device) -> list[float]:
    """log pi_ref(y|x), the sum of response-token log-probabilities, of each example, in order."""
    values: list[float] = []
    for start in range(0, len(examples), _CHUNK):
        batch = encoder.batch(examples[start: start + _CHUNK], device)
        logits = reference.answer_logits(batch)
        labels = batch["labels"][:, -logits.shape[1]:]
        values.extend(float(v) for v in losses.sequence_logprob(logits.float(), labels).tolist())
    return values


def _token_key(input_ids, labels) -> tuple:
    """A row's identity as the loop tokenises it (prompt and response split included)."""
    return tuple(input_ids), tuple(labels)


def _read_cache(path: Path, settings: dict) -> Optional[dict[tuple[str, str], float]]:
    """The cached values of ``path`` if it was written with the same tokenisation settings."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if any(saved.get(key) != value for key, value in settings.items()):
            return None
        return {(e["prompt"], e["response"]): float(e["logprob"]) for e in saved["entries"]}
    except (ValueError, KeyError, TypeError):
        return None  # a damaged cache is recomputed, never trusted


def _is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0
