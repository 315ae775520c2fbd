"""Loss functions as pure tensor maths, shared by every method.

Conventions: ``logits`` is (B, T, V) from a causal LM, ``labels`` is (B, T) with -100 on tokens
that carry no loss (prompt, padding). Position t predicts token t+1, so logits and labels are
shifted by one before they meet. Per-example values average over that example's response tokens;
batch values average over examples (as the seed papers' code does), which also makes the loss
of a batch split across processes average to the loss of the whole batch.
"""

from __future__ import annotations

import torch

from obliviate.data.formatting import IGNORE_INDEX


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align predictions with targets: (B, T-1, V) logits and (B, T-1) labels."""
    return logits[:, :-1, :], labels[:, 1:]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each target token and its mask, both (B, T-1); masked positions are 0."""
    next_labels = shifted_labels(labels)
    mask = next_labels != IGNORE_INDEX
    logp = TargetLogProb.apply(logits.float(), next_labels.masked_fill(~mask, 0))
    return (logp * mask)[:, :-1], mask[:, :-1]


def shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) targets aligned with (B, T) logits: position t gets labels[t+1], the last none.

    The same alignment as ``shift`` without slicing the logits: a slice of a (B, T, V) tensor is
    not contiguous, and the kernels below would first copy all of it.
    """
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


class TargetLogProb(torch.autograd.Function):
    """``log_softmax(logits)[..., target]`` with a lean backward: (B, T, V), (B, T) -> (B, T).

    Forward keeps only the log-normaliser (B, T) beside the logits, which the caller holds
    anyway; autograd's log_softmax + gather would keep a second (B, T, V) tensor and spend a
    zero-filled (B, T, V) scatter and two more full passes in backward. Gradient:
    g * (onehot(target) - softmax(logits)), built in one buffer.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, dim=-1)
        picked = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(logits, lse, target)
        return picked - lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, lse, target = ctx.saved_tensors
        out = torch.sub(logits, lse.unsqueeze(-1)).exp_()  # softmax
        out.mul_(-grad.unsqueeze(-1))
        out.scatter_add_(-1, target.unsqueeze(-1), grad.unsqueeze(-1))
        return out, None


class ForwardKLPerToken(torch.autograd.Function):
    """``sum_v p_v (log p_v - log q_v)`` per position, p = softmax(reference), q = softmax(logits).

    (B, T, V), (B, T, V) -> (B, T); the gradient flows to ``logits`` only: g * (q - p). Forward
    keeps p and the log-normaliser of the logits (the logits the caller holds anyway), where
    autograd would keep log q and p and run five full passes backward.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(reference_logits, dim=-1)
        p = log_p.exp()
        # log q as log_softmax computes it (not logits - lse), so that KL is exactly 0 when the
        # two models agree; it lives only inside forward.
        kl = (p * (log_p - torch.log_softmax(logits, dim=-1))).sum(-1)
        ctx.save_for_backward(logits, torch.logsumexp(logits, dim=-1), p)
        return kl

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, lse, p = ctx.saved_tensors
        out = torch.sub(logits, lse.unsqueeze(-1)).exp_().sub_(p)  # q - p
        out.mul_(grad.unsqueeze(-1))
        return out, None


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of response-token log-probabilities per example, (B,)."""
    logp, _ = token_logprobs(logits, labels)
    return logp.sum(-1)


def per_example_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over each example's response tokens, (B,).

    An example with no response token (all cut by truncation) contributes 0.
    """
    logp, mask = token_logprobs(logits, labels)
    count = mask.sum(-1)
    return -(logp.sum(-1)) / count.clamp(min=1)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch NLL: the mean over examples of the per-example mean token NLL (a scalar)."""
    return per_example_nll(logits, labels).mean()


def gradient_ascent(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Minimising this raises the NLL of the targets: L_GA = -NLL."""
    return -nll(logits, labels)


def forward_kl(
    reference_logits: torch.Tensor,
    current_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    all_positions: bool = False,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Forward KL(p_ref || p_cur) per predicted token, averaged over response tokens, then examples.

    KL(p || q) = sum_v p_v (log p_v - log q_v). With ``all_positions`` every non-padding position
    counts (the seed code's behaviour is coarser still: it averages over padding too; see
    ``reference_style_kl``).
    """
    kl = ForwardKLPerToken.apply(current_logits.float(), reference_logits.detach().float())[:, :-1]  # (B, T-1)
    if all_positions and attention_mask is not None:
        mask = attention_mask[:, 1:].bool()
    else:
        mask = labels[:, 1:] != IGNORE_INDEX
    per_example = (kl * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_example.mean()


def reference_style_kl(reference_logits: torch.Tensor, current_logits: torch.Tensor) -> torch.Tensor:
    """The seed code's "KL": cross-entropy of p_cur under p_ref averaged over every position,
    padding included (opt-in quirk, kept to reproduce published numbers)."""
    log_p = torch.log_softmax(reference_logits.float(), dim=-1)
    log_q = torch.log_softmax(current_logits.float(), dim=-1)
    return -(log_p.exp() * log_q).sum(-1).mean()


def unmasked_nll(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """NLL over every non-padding token, prompt included (the seed code's mismatch-loss quirk)."""
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return nll(logits, labels)


def dpo_loss(
    policy_w: torch.Tensor, policy_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float
) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, arXiv 2305.18290, eq. 7), mean over the batch (a scalar).

    All four inputs are (B,) sequence log-probabilities (``sequence_logprob``: the sum over
    response tokens) of the preferred answer ``w`` and the dispreferred answer ``l`` of each
    prompt, under the trained policy and under the reference model:

        L = -mean_i log sigmoid(beta * ((policy_w - ref_w) - (policy_l - ref_l)))

    The reference values carry no gradient (they are detached here).
    """
    margin = (policy_w - ref_w.detach()) - (policy_l - ref_l.detach())
    return -torch.nn.functional.logsigmoid(beta * margin.float()).mean()


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative preference optimisation: ``(2/β) · mean_i log(1 + (π_θ(y_i|x_i) / π_ref(y_i|x_i))^β)``.

    ``logp`` and ``ref_logp`` are (B,) sequence log-likelihoods (sums over response tokens) under
    the trained and the reference model; returns a scalar. Written as ``softplus(β·(logp − ref))``,
    which is ``log(1 + ratio^β)`` without overflow; it is ``(2/β)·log 2`` where the two agree and
    falls towards 0 as the trained model's likelihood drops below the reference's.
    """
    ratio = logp - ref_logp.detach().to(logp.dtype)
    return (2.0 / beta) * torch.nn.functional.softplus(beta * ratio).mean()


def simnpo_loss(logp: torch.Tensor, lengths: torch.Tensor, beta: float, gamma: float = 0.0) -> torch.Tensor:
    """Reference-free, length-normalised NPO: ``−(2/β) · mean_i log σ(−(β/|y_i|) · logp_i − γ)``.

    ``logp`` is (B,) sequence log-likelihoods (sums over response tokens), ``lengths`` (B,) the
    number of response tokens |y_i| (an example with none counts as 1); ``gamma`` is the reward
    margin. Returns a scalar. ``−logp/|y|`` is the per-token NLL, so the loss falls as it rises.
    """
    mean_logp = logp / lengths.to(logp.dtype).clamp(min=1)
    return -(2.0 / beta) * torch.nn.functional.logsigmoid(-beta * mean_logp - gamma).mean()


def weighted_ascent(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Weighted gradient ascent (WGA): ``mean_i (1/|y_i|) · Σ_t sg(p_θ(y_t))^β · log p_θ(y_t)``.

    ``logits`` (B, T, V) and ``labels`` (B, T) as everywhere in this module; returns a scalar.
    Each response token's log-probability is weighted by the model's own probability of it raised
    to ``beta``, detached (sg: no gradient through the weight). Minimising the loss pushes the
    log-probabilities down, and a token already unlikely gets little weight, so the ascent stops
    pushing where there is nothing left to forget. ``beta = 0`` gives every token weight 1: plain
    gradient ascent (``gradient_ascent``). An example with no response token contributes 0.
    """
    logp, mask = token_logprobs(logits, labels)
    weight = torch.exp(beta * logp.detach())
    per_example = (weight * logp).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_example.mean()


def adjusted_logit_distillation(
    reference_logits: torch.Tensor, current_logits: torch.Tensor, labels: torch.Tensor, gamma: float
) -> torch.Tensor:
    """UNDIAL: KL(p_adj ‖ p_θ) per response token, averaged over tokens, then examples (a scalar).

    ``reference_logits`` and ``current_logits`` are (B, T, V) over the same positions, ``labels``
    (B, T). The target at the position that predicts response token y_t is
    ``p_adj = softmax(reference_logits − γ · onehot(y_t))``: the original model's distribution with
    the token to forget made e^γ times less likely against the rest. The target carries no
    gradient. ``gamma = 0`` is the forward KL to the reference (``forward_kl``). The KL differs from
    the cross-entropy to p_adj by the target's entropy, a constant: same gradient, but a value that
    is 0 where the model matches the target.
    """
    adjusted = reference_logits.detach().to(torch.float32, copy=True)
    targets = shifted_labels(labels)
    mask = targets != IGNORE_INDEX
    penalty = torch.full(targets.shape, -float(gamma), dtype=adjusted.dtype, device=adjusted.device) * mask
    adjusted.scatter_add_(-1, targets.masked_fill(~mask, 0).unsqueeze(-1), penalty.unsqueeze(-1))
    return forward_kl(adjusted, current_logits, labels)


def activation_mse(activations: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's distance: ``mean_i (1/|T_i|)·Σ_{t∈T_i} (1/d)·‖a_it − target_it‖²`` (a scalar).

    ``activations`` (B, T, d) hidden states, ``target`` (B, T, d) or broadcastable to it (a
    steering vector of shape (d,)), ``mask`` (B, T) the positions that count (T_i); a row with
    none contributes 0. Computed in fp32.
    """
    squared = (activations.float() - target.detach().float()).pow(2).mean(-1)  # (B, T)
    mask = mask.to(squared.dtype)
    return ((squared * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def saturation_importance_ascent(logits: torch.Tensor, labels: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """SatImp: ``mean_i (1/|y_i|)·Σ_t sg(p_t^β1 · (1 − p_t)^β2) · log p_t``, p_t = p_θ(y_t | x, y_<t).

    Gradient ascent with each token weighted (no gradient through the weight) by a saturation
    factor p^β1, which, like WGA's, fades the push on tokens already unlikely, times an importance
    factor (1 − p)^β2, which fades it on tokens the model is already sure of (often function
    words and forced continuations that carry no knowledge). Minimising lowers the weighted
    log-probabilities; β1 = β2 = 0 is plain gradient ascent. Scalar; an example with no response
    token contributes 0.
    """
    logp, mask = token_logprobs(logits, labels)
    p = logp.detach().exp()
    weight = p.pow(beta1) * (1 - p).clamp(min=0).pow(beta2)
    per_example = (weight * logp).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_example.mean()


def cross_entropy_unlearning(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE-U: the cross-entropy from the model's own distribution with the true token removed.

    At each position that predicts a response token y_t the target is ``r = softmax(sg(z) with
    z_y = −∞)``, the model's current distribution renormalised over every other token, and the
    loss is ``H(r, p_θ) = −Σ_v r_v log p_θ(v)``. Its gradient in the logits is ``p_θ − r``: the true
    token's probability is pushed to 0 and the rest keep their relative sizes, a bounded descent
    towards a moving target rather than an ascent. Since ``r_v = p_v/(1 − p_y)``, the value is
    ``H(r) − log(1 − p_y)``. Averaged over each example's response tokens, then examples (a scalar).
    """
    targets = shifted_labels(labels)
    mask = targets != IGNORE_INDEX
    z = logits.float()
    log_p = torch.log_softmax(z, dim=-1)
    removed = z.detach().scatter(-1, targets.masked_fill(~mask, 0).unsqueeze(-1), float("-inf"))
    r = torch.softmax(removed, dim=-1)
    per_token = -(r * log_p.masked_fill(r == 0, 0.0)).sum(-1)  # 0·(−∞) where p_v underflows counts as 0
    per_token = per_token * mask
    return (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def logit_margin_flattening(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PDU's forget loss: ``mean_i (1/|y_i|)·Σ_t (max_v z_tv − mean_v z_tv)²`` over the positions
    that predict response tokens (a scalar). It is 0 only when every logit of a position is equal,
    i.e. the output distribution is uniform: minimising it drives the model to maximal
    uncertainty on the forget answers, a bounded target, with no reference to the true token.
    """
    mask = shifted_labels(labels) != IGNORE_INDEX
    z = logits.float()
    gap = (z.max(dim=-1).values - z.mean(dim=-1)).pow(2) * mask
    return (gap.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
