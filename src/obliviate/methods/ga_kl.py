"""Gradient ascent with a KL anchor to the original model on retain data.

Equation:  L = w_f * (-NLL_forget) + w_r * KL(p_ref || p_theta)_retain
where the KL is summed over the vocabulary per predicted response token and averaged over tokens.

Paper: TOFU's KL baseline (Maini et al. 2024, arXiv 2401.06121); the retain-data term of
Yao et al. 2023 (arXiv 2310.10683).

Defaults: w_f = 1.0, w_r = 1.0.

Deviations: the KL is the forward KL named in the seed papers, restricted to response tokens
(the seed code averages a cross-entropy over all positions, padding included).
"""

from __future__ import annotations

from obliviate.methods import losses
from obliviate.methods.base import LossTerm, Method, MethodConfig, forward_answers, register, retain_term


class GAKLConfig(MethodConfig):
    forget_weight: float = 1.0
    retain_weight: float = 1.0


@register
class GAKL(Method):
    name = "ga_kl"
    Config = GAKLConfig
    needs_retain = True
    needs_reference = True

    def terms(self, model, batch, reference):
        out, labels = forward_answers(model, batch["forget"])
        yield LossTerm("forget", self.config.forget_weight, losses.gradient_ascent(out.logits, labels))
        yield from retain_term("ga_kl", "kl", self.config.retain_weight, model, batch, reference)
