"""Descent on "I don't know": teach the model to answer a forget prompt with an IdK answer.

Equation (TOFU's "IDK" baseline, OpenUnlearning's IdkNLL):

    L = w_idk * NLL_theta(y_idk | x_forget) + w_r * NLL_theta(retain)

For each forget prompt x, one answer y_idk is drawn per step from the answer set (``answers``).

Papers: Maini et al. 2024, *TOFU: A Task of Fictitious Unlearning for LLMs* (arXiv 2401.06121,
the "I don't know" baseline); OpenUnlearning (github.com/locuslab/open-unlearning), IdkNLL.

Defaults: ``idk_weight`` 1.0, ``retain_weight`` 1.0 (OpenUnlearning's gamma = alpha = 1, retain
loss NLL), ``answers`` ``builtin:idk_answers`` (40 answers written for this project; TOFU's own
list is ``idontknow.jsonl`` in the TOFU data and can be passed as ``answers``).

Deviations:
- Response tokens only, each example's NLL averaged over its tokens and then over examples
  (the project's convention); OpenUnlearning averages over all tokens of the batch.
- The answer is drawn with the loop's generator seeded by (seed, micro-step), so a resumed run
  draws what an uninterrupted one draws; TOFU and OpenUnlearning draw with Python's ``random``.
- ``retain_weight: 0`` drops the retain term (TOFU's IDK without its retain half).
"""

from __future__ import annotations

from pydantic import Field

from obliviate.methods import answer_sets, losses
from obliviate.methods.base import LossTerm, Method, MethodConfig, forward_answers, register, retain_term

DEFAULT_ANSWERS = "builtin:idk_answers"


class IdkNLLConfig(MethodConfig):
    idk_weight: float = Field(default=1.0, ge=0, description="w_idk, NLL of the drawn IdK answer")
    retain_weight: float = Field(default=1.0, ge=0, description="w_r, NLL on retain data")
    answers: str = Field(
        default=DEFAULT_ANSWERS,
        description="IdK answers: builtin:NAME or a file (rows with 'response', or .txt one per line)",
    )


@register
class IdkNLL(Method):
    name = "idk_nll"
    Config = IdkNLLConfig
    needs_retain = True

    def __init__(self, config: IdkNLLConfig):
        super().__init__(config)
        self.pool = answer_sets.AnswerPool(config.answers)

    def setup(self, model, reference, context) -> None:
        self.pool.load(context.get("base_dir"))

    def build_batch(self, forget, retain, ctx):
        idk = self.pool.pair(forget, ctx.rng)
        return {"idk": idk, "retain": retain}

    def terms(self, model, batch, reference):
        out, labels = forward_answers(model, batch["idk"])
        yield LossTerm("idk", self.config.idk_weight, losses.nll(out.logits, labels))
        if self.config.retain_weight > 0 and batch.get("retain") is not None:
            yield from retain_term("idk_nll", "nll", self.config.retain_weight, model, batch, reference)
