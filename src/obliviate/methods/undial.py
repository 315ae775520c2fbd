"""UNDIAL: self-distillation towards the original model with the forget token's logit lowered.

Equation (Dong et al. 2024):

    L = w_f * L_UNDIAL + w_r * L_retain
    L_UNDIAL = E_(x,y)~forget [ (1/|y|) * sum_t KL( p_adj,t || p_theta(. | x, y_<t) ) ]
    p_adj,t = softmax( z_ref(x, y_<t) - gamma * onehot(y_t) )

with z_ref the original model's logits at the position that predicts response token y_t, and
p_adj,t fixed (no gradient). The student is taught the original distribution with only the token
to forget made e^gamma times less likely against the rest: a bounded target, so unlike gradient
ascent the loss has a minimum and the rest of the distribution is kept. gamma = 0 is plain
distillation (forward KL to the original model). L_retain is nothing (the default), the mean
token NLL on retain pairs (``nll``) or the forward KL to the original model on them (``kl``).

Paper: Dong, Lin, Belkin, Huerta, Vulić, "UNDIAL: Self-Distillation with Adjusted Logits for Robust
Unlearning in Large Language Models", NAACL 2025, https://arxiv.org/abs/2402.10052.

Defaults (OpenUnlearning's UNDIAL trainer config, configs/trainer/UNDIAL.yaml): gamma = 10.0
(their ``beta``, "the strength of penalty for memorized tokens"), w_f = 1.0 (their ``gamma``),
no retain term (their retain weight ``alpha`` is 0.0, so ``retain_loss`` defaults to ``none``
and no retain set is needed); ``retain_weight`` 1.0 applies once a retain term is chosen.

Deviations:
- The value is the KL to the adjusted target, not OpenUnlearning's cross-entropy to it: the two
  differ by the target's entropy, a constant, so the gradient is the same, and the logged value
  is 0 where the model matches the target (at the first step it is the KL of the adjustment alone).
- Response tokens only, each example's tokens averaged, then the examples. OpenUnlearning
  averages over every position of the batch, prompt and padding included (the adjustment at a
  padding position then lands on an arbitrary vocabulary entry).
- Pairs cut by ``data.max_length`` are scored on the tokens that remain.
"""

from __future__ import annotations

from typing import Literal

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


class UNDIALConfig(MethodConfig):
    gamma: float = Field(default=10.0, ge=0, description="how far the forget token's reference logit is lowered")
    forget_weight: float = Field(default=1.0, ge=0)
    retain_loss: Literal["none", "nll", "kl"] = "none"
    retain_weight: float = Field(default=1.0, ge=0)


@register
class UNDIAL(Method):
    name = "undial"
    Config = UNDIALConfig
    needs_reference = True
    needs_retain = False  # with the default; a retain term needs a retain set

    def __init__(self, config: UNDIALConfig):
        super().__init__(config)
        self.needs_retain = config.retain_loss != "none"

    def build_batch(self, forget, retain, ctx):
        return forget_and_optional_retain(self.config.retain_loss, forget, retain)

    def terms(self, model, batch, reference):
        cfg = self.config
        forget = batch["forget"]
        target = reference.answer_logits(forget)
        out, labels = forward_answers(model, forget)
        yield LossTerm("forget", cfg.forget_weight, losses.adjusted_logit_distillation(target, out.logits, labels, cfg.gamma))
        yield from retain_term("undial", cfg.retain_loss, cfg.retain_weight, model, batch, reference)
