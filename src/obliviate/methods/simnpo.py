"""SimNPO: NPO without a reference model, on length-normalised likelihoods, with a margin.

Equation (Fan et al. 2024, eq. 4):

    L = w_f * L_SimNPO + w_r * L_retain
    L_SimNPO = -(2/beta) * E_(x,y)~forget [ log sigmoid( -(beta/|y|) * log pi_theta(y|x) - gamma ) ]

with log pi_theta(y|x) the sum of response-token log-probabilities and |y| the number of response
tokens, so -(1/|y|) log pi_theta is the per-token NLL: the loss falls as it rises. Normalising by
length stops long forget answers from dominating the gradient (NPO's reference ratio weights them
by how far they already moved, whatever their length); gamma is the reward margin. L_retain is
nothing, the mean token NLL on retain pairs (``nll``, OpenUnlearning's default) or the forward KL
to the original model on retain pairs (``kl``; only then is a reference model needed).

Paper: Fan, Liu, Lin, Jia, Zhang, Mei, Liu, "Simplicity Prevails: Rethinking Negative Preference
Optimization for LLM Unlearning", 2024, https://arxiv.org/abs/2410.07163; code OPTML-Group/Unlearn-Simple.

Defaults (OpenUnlearning's SimNPO trainer config, configs/trainer/SimNPO.yaml): beta = 0.7,
gamma = 0.0 (their ``delta``), w_f = 1.0 (their ``gamma``), retain term ``nll`` with w_r = 0.1
(their ``alpha``). The same file notes the authors' settings per benchmark, e.g. TOFU forget05 on
Llama-2-7b-chat: beta 2.5, retain weight 0.135; MUSE News: a margin delta of 3.

Deviations:
- gamma is the paper's margin, outside the product with beta. OpenUnlearning and the authors'
  code compute log sigmoid(beta * (NLL - delta)), so their ``delta`` is gamma / beta here; the two
  agree at the default 0.
- Response tokens only; pairs cut by ``data.max_length`` are scored (and normalised) on the
  tokens that remain.
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


class SimNPOConfig(MethodConfig):
    beta: float = Field(default=0.7, gt=0, description="inverse temperature of the preference loss")
    gamma: float = Field(default=0.0, description="reward margin")
    forget_weight: float = Field(default=1.0, ge=0)
    retain_loss: Literal["none", "nll", "kl"] = "nll"
    retain_weight: float = Field(default=0.1, ge=0)


@register
class SimNPO(Method):
    name = "simnpo"
    Config = SimNPOConfig
    needs_reference = False  # only with ``retain_loss: kl``
    needs_retain = True  # with the default retain term; ``retain_loss: none`` needs none

    def __init__(self, config: SimNPOConfig):
        super().__init__(config)
        self.needs_retain = config.retain_loss != "none"
        self.needs_reference = config.retain_loss == "kl"

    def build_batch(self, forget, retain, ctx):
        return forget_and_optional_retain(self.config.retain_loss, forget, retain)

    def terms(self, model, batch, reference):
        cfg = self.config
        out, labels = forward_answers(model, batch["forget"])
        logp, mask = losses.token_logprobs(out.logits, labels)
        value = losses.simnpo_loss(logp.sum(-1), mask.sum(-1), cfg.beta, cfg.gamma)
        yield LossTerm("forget", cfg.forget_weight, value)
        yield from retain_term("simnpo", cfg.retain_loss, cfg.retain_weight, model, batch, reference)
