"""CE-U: cross-entropy unlearning, descent towards the model's own distribution without the answer.

Equation (Yang 2025):

    L = w_f * L_CEU + w_r * L_retain
    L_CEU = E_(x,y)~forget [ (1/|y'|) * sum_{t in y'} H( softmax(sg(z_t) with z_t[y_t] = -inf), p_theta(. | x, y_<t) ) ]

with z_t the model's logits at the position that predicts y_t, sg a stop-gradient, H(r, p) the
cross-entropy -sum_v r_v log p_v, and y' the response tokens after the first ``skip_first``. The
target is the model's current distribution with the true token removed and the rest renormalised:
the gradient in the logits is p_theta - r, which drives the true token's probability to 0 while
leaving the other tokens' relative sizes alone, and which stays bounded as the token is forgotten
(gradient ascent's does not). The value equals H(r) - log(1 - p(y_t)). L_retain is nothing (the
default, as OpenUnlearning's CE-U), the retain NLL (``nll``) or the forward KL to the original
model on retain pairs (``kl``).

Paper: Bo Yang, "CE-U: Cross Entropy Unlearning", 2025, https://arxiv.org/abs/2503.01224.

Defaults (OpenUnlearning's CEU trainer): skip_first = 1 (the paper's footnote: the first answer
token is left out), w_f = 1.0, no retain term; w_r = 1.0 once one is chosen.

Deviations:
- Each example's tokens are averaged, then the examples; OpenUnlearning averages every scored
  token of the batch at once.
- Pairs cut by ``data.max_length`` are scored on the response tokens that remain.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from obliviate.data.formatting import IGNORE_INDEX
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


class CEUConfig(MethodConfig):
    skip_first: int = Field(default=1, ge=0, description="leave out the first N response tokens of each example")
    forget_weight: float = Field(default=1.0, ge=0)
    retain_loss: Literal["none", "nll", "kl"] = "none"
    retain_weight: float = Field(default=1.0, ge=0)


def without_first_tokens(labels: torch.Tensor, n: int) -> torch.Tensor:
    """``labels`` with the first ``n`` response tokens of each row masked (set to the ignore index)."""
    if n == 0:
        return labels
    answer = labels != IGNORE_INDEX
    return labels.masked_fill(answer & (answer.cumsum(-1) <= n), IGNORE_INDEX)


@register
class CEU(Method):
    name = "ce_u"
    Config = CEUConfig
    needs_reference = False  # only with ``retain_loss: kl``
    needs_retain = False  # only with a retain term

    def __init__(self, config: CEUConfig):
        super().__init__(config)
        self.needs_retain = config.retain_loss != "none"
        self.needs_reference = config.retain_loss == "kl"

    def build_batch(self, forget, retain, ctx):
        return forget_and_optional_retain(self.config.retain_loss, forget, retain)

    def terms(self, model, batch, reference):
        cfg = self.config
        out, labels = forward_answers(model, batch["forget"])
        value = losses.cross_entropy_unlearning(out.logits, without_first_tokens(labels, cfg.skip_first))
        yield LossTerm("forget", cfg.forget_weight, value)
        yield from retain_term("ce_u", cfg.retain_loss, cfg.retain_weight, model, batch, reference)
