"""Gradient ascent with a KL anchor to the original model on retain data.

Equation:  L = w_f * (-NLL_forget) + w_r * KL(p_ref || p_theta)_retain
where the KL is summed over the vocabulary per predicted response token and averaged over tokens.

Paper: TOFU's KL baseline (Maini et al. 2024, arXiv 2401.06121); the normal-data term of
Yao et al. 2023 (arXiv 2310.10683).

Defaults: w_f = 1.0, w_r = 1.0.

Deviations: the KL is the forward KL named in the seed papers, restricted to response tokens
(the seed code averages a cross-entropy over all positions, padding included).
"""

from __future__ import annotations

from obliviate import losses
from obliviate.methods.base import LossOutput, Method, MethodConfig, forward, register


class GAKLConfig(MethodConfig):
    forget_weight: float = 1.0
    retain_weight: float = 1.0


@register
class GAKL(Method):
    name = "ga_kl"
    Config = GAKLConfig
    needs_retain = True
    needs_reference = True

    def loss(self, model, batch, reference):
        forget, retain = batch["forget"], batch["retain"]
        ga = losses.gradient_ascent(forward(model, forget).logits, forget["labels"])
        kl = losses.forward_kl(reference.logits(retain), forward(model, retain).logits, retain["labels"])
        total = self.config.forget_weight * ga + self.config.retain_weight * kl
        return LossOutput(total, {"forget": ga.item(), "retain_kl": kl.item()})
