"""Gradient ascent (GA) on the forget responses.

Equation:  L = -(1/|B_f|) sum_{(x,y) in B_f} (1/|y|) sum_t -log p_theta(y_t | x, y_<t)
i.e. the negative of the forget-set NLL over response tokens.

Paper: Jang et al. 2022, "Knowledge Unlearning for Mitigating Privacy Risks in Language Models"
(arXiv 2210.01504); the first term of Yao et al. 2023 (arXiv 2310.10683).

Defaults: weight 1.0.

Deviations: none in the maths; the loss covers response tokens only (the prompt is not
unlearned), as in OpenUnlearning.
"""

from __future__ import annotations

from obliviate.methods import losses
from obliviate.methods.base import LossTerm, Method, MethodConfig, forward_answers, register


class GAConfig(MethodConfig):
    forget_weight: float = 1.0


@register
class GradientAscent(Method):
    name = "ga"
    Config = GAConfig

    def terms(self, model, batch, reference):
        out, labels = forward_answers(model, batch["forget"])
        yield LossTerm("forget", self.config.forget_weight, losses.gradient_ascent(out.logits, labels))
