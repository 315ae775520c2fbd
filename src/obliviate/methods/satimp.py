"""SatImp: gradient ascent with each token weighted by its saturation and its importance.

Equation (Yang et al. 2025):

    L = w_f * L_SatImp + w_r * L_retain
    L_SatImp = E_(x,y)~forget [ (1/|y|) * sum_t sg(p_t^beta1 * (1 - p_t)^beta2) * log p_t ]

with p_t = p_theta(y_t | x, y_<t) and sg a stop-gradient. The saturation factor p^beta1 (as in
WGA) stops pushing tokens already forgotten; the importance factor (1 - p)^beta2 spares the tokens
the model is near-certain of, which the paper finds are mostly ones that carry no knowledge (the
continuation of a word, punctuation), so the ascent concentrates on the informative tokens.
beta1 = beta2 = 0 is plain gradient ascent. L_retain is nothing, the retain NLL (``nll``, the
default) or the forward KL to the original model on retain pairs (``kl``).

Paper: Yang, Wang, Huang, Liu, Zhang, Han, "Exploring Criteria of Loss Reweighting to Enhance LLM
Unlearning", ICML 2025.

Defaults (OpenUnlearning's configs/trainer/SatImp.yaml): beta1 = 5.0, beta2 = 1.0,
w_f = 0.1 (their ``gamma``), retain term ``nll`` with w_r = 1.0 (their ``alpha``).

Deviations:
- Each example's tokens are averaged, then the examples; OpenUnlearning averages every response
  token of the batch at once.
- Response tokens only; pairs cut by ``data.max_length`` are scored on the tokens that remain.
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


class SatImpConfig(MethodConfig):
    beta1: float = Field(default=5.0, ge=0, description="power of p in the weight (saturation)")
    beta2: float = Field(default=1.0, ge=0, description="power of 1 - p in the weight (importance)")
    forget_weight: float = Field(default=0.1, ge=0)
    retain_loss: Literal["none", "nll", "kl"] = "nll"
    retain_weight: float = Field(default=1.0, ge=0)


@register
class SatImp(Method):
    name = "satimp"
    Config = SatImpConfig
    needs_reference = False  # only with ``retain_loss: kl``
    needs_retain = True  # with the default retain term; ``retain_loss: none`` needs none

    def __init__(self, config: SatImpConfig):
        super().__init__(config)
        self.needs_retain = config.retain_loss != "none"
        self.needs_reference = config.retain_loss == "kl"

    def build_batch(self, forget, retain, ctx):
        return forget_and_optional_retain(self.config.retain_loss, forget, retain)

    def terms(self, model, batch, reference):
        cfg = self.config
        out, labels = forward_answers(model, batch["forget"])
        value = losses.saturation_importance_ascent(out.logits, labels, cfg.beta1, cfg.beta2)
        yield LossTerm("forget", cfg.forget_weight, value)
        yield from retain_term("satimp", cfg.retain_loss, cfg.retain_weight, model, batch, reference)
