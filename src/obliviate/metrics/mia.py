"""Membership inference: per-item attack scores, their ROC-AUC, and MUSE's PrivLeak.

Every score here is signed so that HIGHER means "more likely a member" (seen in training):

- ``loss``: the mean log-probability of the scored tokens, i.e. minus the mean NLL (Yeom et al.);
- ``zlib``: minus the mean NLL divided by the zlib-compressed length (bytes) of the scored text
  (Carlini et al. 2021, "ratio of log-perplexity to zlib entropy": the mean NLL is the
  log-perplexity); text that compresses well is easy for any model, so its loss counts for less;
- ``min_k``: the mean of the lowest k% token log-probabilities (Shi et al. 2024, Min-K% Prob);
- ``min_k_plus_plus``: the same over standardised log-probabilities ``(log p(x_t) - mu_t) / sigma_t``,
  with ``mu_t``, ``sigma_t`` the mean and standard deviation of ``log p(z)`` for ``z`` drawn from
  the model's own next-token distribution at ``t`` (Zhang et al. 2024, Min-K%++);
- ``gradnorm``: minus the L2 norm of the gradient of the item's mean NLL with respect to the
  parameters (members sit near a minimum, where gradients are small);
- ``reference``: the target model's mean log-probability minus a reference model's (Carlini et
  al. 2022's calibration: a low loss that the reference shares says nothing about membership).

The pure functions take plain lists and can be checked by hand; :func:`token_statistics` gets the
token-level inputs of every logit-based attack from ONE forward pass per batch, and
:func:`gradient_norms` runs one backward pass per item. :func:`attack_auc` is ROC-AUC with the
members (forget) as the positive class; :func:`privleak` is MUSE's relative AUC difference.
See docs/mia_muse.md for the definitions side by side with MUSE's and OpenUnlearning's.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from obliviate.data.formatting import IGNORE_INDEX, pad_id
from obliviate.metrics.memorisation import encode_continuation
from obliviate.models.generation import model_device, teacher_forced_logits

#: The attacks, in the order results list them.
ATTACKS: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm", "reference")
#: The attacks that need only the logits of the target model.
LOGIT_ATTACKS: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k_plus_plus")
#: Share of tokens Min-K% and Min-K%++ average over (OpenUnlearning's default for MUSE).
DEFAULT_K = 0.4
#: Floor of the variance in Min-K%++ (a one-hot distribution has sigma 0).
MIN_VARIANCE = 1e-6


# ---------------------------------------------------------------------------------------------
# Pure scores


def _lowest_mean(values: Sequence[float], k: float) -> Optional[float]:
    """Mean of the ``max(1, floor(n * k))`` smallest values (None when there are none)."""
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be in (0, 1], got {k}")
    if not values:
        return None
    count = max(1, int(len(values) * k))
    return float(sum(sorted(values)[:count]) / count)


def loss_score(log_probs: Sequence[float]) -> Optional[float]:
    """Mean token log-probability (= minus the mean NLL); None without tokens."""
    return float(sum(log_probs) / len(log_probs)) if log_probs else None


def zlib_bytes(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (default compression level)."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_score(log_probs: Sequence[float], text: str) -> Optional[float]:
    """Minus the mean NLL over the zlib-compressed length of ``text`` in bytes."""
    mean = loss_score(log_probs)
    return None if mean is None else mean / max(1, zlib_bytes(text))


def min_k_score(log_probs: Sequence[float], k: float = DEFAULT_K) -> Optional[float]:
    """Mean of the lowest ``k`` share of token log-probabilities (at least one token)."""
    return _lowest_mean(list(log_probs), k)


def min_k_plus_plus_score(
    log_probs: Sequence[float], mu: Sequence[float], sigma: Sequence[float], k: float = DEFAULT_K
) -> Optional[float]:
    """Mean of the lowest ``k`` share of ``(log p(x_t) - mu_t) / sigma_t``."""
    if not (len(log_probs) == len(mu) == len(sigma)):
        raise ValueError(f"{len(log_probs)} log-probs, {len(mu)} means and {len(sigma)} deviations")
    return _lowest_mean([(lp - m) / s for lp, m, s in zip(log_probs, mu, sigma)], k)


def reference_score(target_log_probs: Sequence[float], reference_log_probs: Sequence[float]) -> Optional[float]:
    """Target mean log-prob minus reference mean log-prob (= reference loss - target loss)."""
    target, reference = loss_score(target_log_probs), loss_score(reference_log_probs)
    return None if target is None or reference is None else target - reference


def vocabulary_moments(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ``log p(z)`` under ``z ~ p = softmax(logits)``, per row.

    ``logits`` (..., V) -> two tensors (...): ``mu = sum_z p(z) log p(z)``,
    ``sigma = sqrt(max(sum_z p(z) log p(z)^2 - mu^2, MIN_VARIANCE))``.
    """
    return _moments(F.log_softmax(logits.float(), dim=-1))


def _moments(log_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = log_p.exp()
    mu = (p * log_p).sum(-1)
    second = (p * log_p.square()).sum(-1)
    sigma = (second - mu.square()).clamp(min=MIN_VARIANCE).sqrt()
    return mu, sigma


def _finite(values: Sequence[Optional[float]]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def attack_auc(member_scores: Sequence[Optional[float]], nonmember_scores: Sequence[Optional[float]]) -> Optional[float]:
    """ROC-AUC of telling members (label 1) from non-members (label 0) by score.

    1.0: every member scores above every non-member (the model remembers); 0.5: no signal.
    Items without a score (None, NaN) are left out; None when either side is then empty.
    """
    members, others = _finite(member_scores), _finite(nonmember_scores)
    if not members or not others:
        return None
    from sklearn.metrics import roc_auc_score

    labels = [1] * len(members) + [0] * len(others)
    return float(roc_auc_score(labels, members + others))


def privleak(auc_unlearned: Optional[float], auc_retain: Optional[float]) -> Optional[float]:
    """MUSE's PrivLeak in percent, from AUCs in :func:`attack_auc`'s orientation.

    MUSE writes ``(AUC_unlearn - AUC_retrain) / AUC_retrain * 100`` with an AUC whose positive
    class is the holdout set, i.e. ``1 - attack_auc``; so here
    ``((1 - a_u) - (1 - a_r)) / (1 - a_r) * 100``. A model that still remembers the forget set
    (``a_u`` near 1) gets a large NEGATIVE value (near -100), one forgotten like the retain
    model about 0, an over-unlearned one (forget set looks less familiar than unseen text) a
    positive value. None when an input is missing or the retain AUC is 1 (no scale).
    """
    if auc_unlearned is None or auc_retain is None:
        return None
    base = 1.0 - auc_retain
    if base <= 0.0:
        return None
    return ((1.0 - auc_unlearned) - base) / base * 100.0


# ---------------------------------------------------------------------------------------------
# Token-level statistics from the model


@dataclass
class TokenStats:
    """Per scored token of one item: ``log_probs`` = log p(x_t), and the moments ``mu``/``sigma``
    of log p over the vocabulary at the same position (for Min-K%++)."""

    log_probs: list[float]
    mu: list[float]
    sigma: list[float]

    @property
    def tokens(self) -> int:
        return len(self.log_probs)


def token_statistics(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    template: str = "plain",
    batch_size: int = 8,
    max_length: int = 512,
) -> list[TokenStats]:
    """Token log-probs of each response given its prompt and the vocabulary moments, in input order.

    Pairs are encoded by :func:`obliviate.metrics.memorisation.encode_continuation` (``template``
    ``"none"``: raw text; ``"plain"``/``"chat"``/``"auto"``: the training format, end-of-turn token
    scored), right-padded into (B, T); logits (B, T, V) at position t score label t + 1. The one
    teacher-forced pass per batch of :func:`obliviate.models.generation.teacher_forced_logits`
    (the pass :func:`~obliviate.models.generation.score_loglik` reads too) gives every
    logit-based attack its inputs.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    encoded = [encode_continuation(tokenizer, p, r, max_length, template) for p, r in zip(prompts, responses)]
    result = [TokenStats([], [], []) for _ in encoded]
    if not encoded:
        return result
    for batch, logits, labels in teacher_forced_logits(model, encoded, pad_id(tokenizer), batch_size):
        scored = labels != IGNORE_INDEX
        log_p = F.log_softmax(logits, dim=-1)  # computed once for both quantities
        token_log_probs = log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        mu, sigma = _moments(log_p)  # (B, T-1) each
        del log_p
        for row, index in enumerate(batch):
            mask = scored[row]
            result[index] = TokenStats(
                token_log_probs[row][mask].tolist(), mu[row][mask].tolist(), sigma[row][mask].tolist()
            )
    return result


def logit_attack_scores(stats: TokenStats, text: str, k: float = DEFAULT_K) -> dict[str, Optional[float]]:
    """The four logit-based scores of one item (``text``: what zlib compresses, the scored text)."""
    return {
        "loss": loss_score(stats.log_probs),
        "zlib": zlib_score(stats.log_probs, text) if stats.log_probs else None,
        "min_k": min_k_score(stats.log_probs, k),
        "min_k_plus_plus": min_k_plus_plus_score(stats.log_probs, stats.mu, stats.sigma, k),
    }


def gradient_norms(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    template: str = "plain",
    max_length: int = 512,
) -> list[Optional[float]]:
    """``-||grad_theta mean NLL||_2`` of each item (one backward pass each), in input order.

    The norm is taken over the parameters that require a gradient (a LoRA run: the adapters);
    a model with none (loaded for inference) is measured over all its parameters, which are
    switched back afterwards. Gradients come from ``torch.autograd.grad``, so ``.grad`` of the
    parameters (a training loop's accumulation) is left untouched. None for an item with no
    scored token.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    params = [p for p in model.parameters() if p.requires_grad]
    switched: list[torch.nn.Parameter] = []
    if not params:
        switched = list(model.parameters())
        for p in switched:
            p.requires_grad_(True)
        params = switched
    device = model_device(model)
    scores: list[Optional[float]] = []
    was_training = model.training
    model.eval()  # no dropout: the score must not depend on a random mask
    try:
        with torch.enable_grad():
            for prompt, response in zip(prompts, responses):
                encoded = encode_continuation(tokenizer, prompt, response, max_length, template)
                labels = torch.tensor([encoded.labels[1:]], device=device)
                if not bool((labels != IGNORE_INDEX).any()):
                    scores.append(None)
                    continue
                input_ids = torch.tensor([encoded.input_ids], device=device)
                logits = model(input_ids=input_ids).logits[:, :-1].float()
                loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                squared = sum(float(g.detach().float().square().sum()) for g in grads if g is not None)
                scores.append(-math.sqrt(squared))
    finally:
        for p in switched:
            p.requires_grad_(False)
        if was_training:
            model.train()
    return scores
