"""Plain supervised fine-tuning (NLL on the responses), used to build the models unlearning starts
from: a model that memorised a book, or the "retain" and "full" models other suites compare to.

Equation:  L = NLL_theta(y | x) over the training set (given as ``data.forget``; the name is the
loop's slot for "the set this run is about", ``obliviate finetune --data`` fills it).

Paper: the fine-tuning stage of Yao et al. 2023 (arXiv 2310.10683) and Gundavarapu et al. 2024
(arXiv 2405.15152): LoRA r 16, alpha 32, dropout 0.05, lr 2e-4, 3 epochs, warmup 100, weight
decay 0.1 (set these in the training section; ``configs/finetune_*.yaml`` does).

Deviations: none.
"""

from __future__ import annotations

from obliviate.methods import losses
from obliviate.methods.base import LossTerm, Method, MethodConfig, forward_answers, register


class FinetuneConfig(MethodConfig):
    pass


@register
class Finetune(Method):
    name = "finetune"
    Config = FinetuneConfig

    def terms(self, model, batch, reference):
        out, labels = forward_answers(model, batch["forget"])
        yield LossTerm("nll", 1.0, losses.nll(out.logits, labels))
