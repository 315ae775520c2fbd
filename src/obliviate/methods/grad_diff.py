"""Gradient difference: gradient ascent on the forget set, descent on the retain set.

Equation:  L = w_f * (-NLL_forget) + w_r * NLL_retain

Paper: Liu et al. 2022, "Continual Learning and Private Unlearning" (arXiv 2203.12817); the GradDiff
baseline of TOFU (Maini et al. 2024, arXiv 2401.06121).

Defaults: w_f = 1.0, w_r = 1.0.

Deviations: none; response tokens only.
"""

from __future__ import annotations

from obliviate.methods import losses
from obliviate.methods.base import LossTerm, Method, MethodConfig, forward_answers, register, retain_term


class GradDiffConfig(MethodConfig):
    forget_weight: float = 1.0
    retain_weight: float = 1.0


@register
class GradDiff(Method):
    name = "grad_diff"
    Config = GradDiffConfig
    needs_retain = True

    def terms(self, model, batch, reference):
        out, labels = forward_answers(model, batch["forget"])
        yield LossTerm("forget", self.config.forget_weight, losses.gradient_ascent(out.logits, labels))
        yield from retain_term("grad_diff", "nll", self.config.retain_weight, model, batch, reference)
