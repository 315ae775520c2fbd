"""Weighted gradient ascent: gradient ascent that stops pushing tokens already forgotten.

Equation (Wang et al. 2025, weighted gradient ascent):

    L = w_f * L_WGA + w_r * L_retain
    L_WGA = E_(x,y)~forget [ (1/|y|) * sum_t sg(p_theta(y_t | x, y_<t))^beta * log p_theta(y_t | x, y_<t) ]

with sg a stop-gradient. Minimising L_WGA lowers the log-probability of each forget token, with a
gradient scaled by the token's own probability to the power beta: a token the model still
predicts well is pushed at full strength, one already unlikely hardly at all, which is what keeps
WGA from the unbounded collapse of plain gradient ascent (beta = 0 is plain gradient ascent).
L_retain is nothing, the mean token NLL on retain pairs (``nll``, OpenUnlearning's default) or the
forward KL to the original model on retain pairs (``kl``; only then is a reference model needed).

Paper: Wang, Zhou, Zhou, Shin, Han, Weinberger, "Rethinking LLM Unlearning Objectives: A Gradient
Perspective and Go Beyond", ICLR 2025, https://arxiv.org/abs/2502.19301.

Defaults (OpenUnlearning's WGA trainer config, configs/trainer/WGA.yaml): beta = 1.0,
w_f = 1.0 (their ``gamma``), retain term ``nll`` with w_r = 1.0 (their ``alpha``).

Deviations:
- The forget term averages each example's tokens, then the examples (as every loss here does);
  OpenUnlearning averages all response tokens of the batch at once, which weighs long answers more.
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


class WGAConfig(MethodConfig):
    beta: float = Field(default=1.0, ge=0, description="power of the token probability that weights each token (0: plain ascent)")
    forget_weight: float = Field(default=1.0, ge=0)
    retain_loss: Literal["none", "nll", "kl"] = "nll"
    retain_weight: float = Field(default=1.0, ge=0)


@register
class WGA(Method):
    name = "wga"
    Config = WGAConfig
    needs_reference = False  # only with ``retain_loss: kl``
    needs_retain = True  # with the default retain term; ``retain_loss: none`` needs none

    def __init__(self, config: WGAConfig):
        super().__init__(config)
        self.needs_retain = config.retain_loss != "none"
        self.needs_reference = config.retain_loss == "kl"

    def build_batch(self, forget, retain, ctx):
        return forget_and_optional_retain(self.config.retain_loss, forget, retain)

    def terms(self, model, batch, reference):
        cfg = self.config
        out, labels = forward_answers(model, batch["forget"])
        yield LossTerm("forget", cfg.forget_weight, losses.weighted_ascent(out.logits, labels, cfg.beta))
        yield from retain_term("wga", cfg.retain_loss, cfg.retain_weight, model, batch, reference)
