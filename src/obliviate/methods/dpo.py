"""DPO with "I don't know" preferred over the forget answer (IdkDPO).

Equation (Rafailov et al. 2023, eq. 7, with y_w an IdK answer and y_l the forget answer):

    L = w_f * L_DPO + w_r * NLL_theta(retain)
    L_DPO = -mean_x log sigmoid(beta * ((log pi_theta(y_w|x) - log pi_ref(y_w|x))
                                       - (log pi_theta(y_l|x) - log pi_ref(y_l|x))))

log pi(y|x) is the sum of the response tokens' log-probabilities; pi_ref is the original model
(adapters off under LoRA, a frozen copy under full fine-tuning). For each forget pair (x, y_l)
one IdK answer y_w is drawn per step from the answer set (``answers``).

Papers: Rafailov et al. 2023, *Direct Preference Optimization* (arXiv 2305.18290); used for
unlearning as TOFU's preference baseline (Maini et al. 2024, arXiv 2401.06121) and
OpenUnlearning's IdkDPO (github.com/locuslab/open-unlearning, ``trainer/unlearn/dpo.py``).

Defaults: ``beta`` 0.1 (TOFU's; the DPO paper's usual value), ``forget_weight`` 1.0,
``retain_weight`` 1.0 (OpenUnlearning's gamma = alpha = 1 with an NLL retain loss),
``answers`` ``builtin:idk_answers``.

Deviations:
- OpenUnlearning scales the DPO term by 2/beta (``-2/beta * logsigmoid(...)``, the NPO
  convention); this is the paper's unscaled loss. ``forget_weight: 20`` with ``beta: 0.1``
  reproduces their scale.
- The reference log-probabilities are recomputed every step (one no-grad forward per group)
  rather than cached per example; the values are the same.
- The IdK answer is drawn with the loop's generator seeded by (seed, micro-step), so a resumed
  run draws what an uninterrupted one draws.
- ``retain_weight: 0`` drops the retain term (TOFU's DPO without its retain half).
"""

from __future__ import annotations

import torch
from pydantic import Field

from obliviate.methods import answer_sets, losses
from obliviate.methods.base import LossTerm, Method, MethodConfig, forward_answers, register, retain_term

DEFAULT_ANSWERS = "builtin:idk_answers"


class DPOConfig(MethodConfig):
    beta: float = Field(default=0.1, gt=0, description="inverse temperature of the preference")
    forget_weight: float = Field(default=1.0, ge=0, description="w_f, the DPO term on forget prompts")
    retain_weight: float = Field(default=1.0, ge=0, description="w_r, NLL on retain data")
    answers: str = Field(
        default=DEFAULT_ANSWERS,
        description="preferred IdK answers: builtin:NAME or a file (rows with 'response', or .txt one per line)",
    )


@register
class DPO(Method):
    name = "dpo"
    Config = DPOConfig
    needs_reference = True
    needs_retain = True

    def __init__(self, config: DPOConfig):
        super().__init__(config)
        self.pool = answer_sets.AnswerPool(config.answers)

    def setup(self, model, reference, context) -> None:
        self.pool.load(context.get("base_dir"))

    def build_batch(self, forget, retain, ctx):
        # Row i of "preferred" belongs to row i of "forget": the loop splits both groups across
        # processes with the same stride, so pairs stay together.
        preferred = self.pool.pair(forget, ctx.rng)
        return {"forget": forget, "preferred": preferred, "retain": retain}

    def terms(self, model, batch, reference):
        cfg = self.config
        policy_w, ref_w = _logprobs(model, reference, batch["preferred"])
        policy_l, ref_l = _logprobs(model, reference, batch["forget"])
        value = losses.dpo_loss(policy_w, policy_l, ref_w, ref_l, cfg.beta)
        with torch.no_grad():
            margin = (policy_w - ref_w) - (policy_l - ref_l)
        extra = {"dpo_margin": margin.mean().item(), "dpo_accuracy": (margin > 0).float().mean().item()}
        yield LossTerm("forget", cfg.forget_weight, value, extra)
        if cfg.retain_weight > 0 and batch.get("retain") is not None:
            yield from retain_term("dpo", "nll", cfg.retain_weight, model, batch, reference)


def _logprobs(model, reference, group) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probabilities (B,) of the group's answers under the model and the reference."""
    out, labels = forward_answers(model, group)
    policy = losses.sequence_logprob(out.logits, labels)
    with torch.no_grad():
        ref = losses.sequence_logprob(reference.answer_logits(group), labels)
    return policy, ref
