"""Primal-dual unlearning: flatten the forget outputs subject to a bound on the retain loss.

Problem and update (Entesari et al. 2025, constrained entropic unlearning):

    minimise_theta  L_flat(theta)   subject to   L_retain(theta) <= epsilon

    L_flat = E_(x,y)~forget [ (1/|y|) * sum_t (max_v z_tv - mean_v z_tv)^2 ]
    L_retain = the retain set's NLL

solved on the Lagrangian L = w_f * L_flat + lambda * L_retain with one primal step (the optimiser)
and one dual ascent step per optimizer step:

    lambda <- max(0, lambda + eta * (mean retain loss of the step - epsilon))

z_t are the logits of the position that predicts response token y_t; L_flat is 0 only when they are
all equal (a uniform output), so the forget answers are driven to maximal uncertainty, a bounded
target. The multiplier lambda rises while the retain loss is above its bound, which pulls the
model back towards the retain data, and falls (to 0 at least) once the bound holds. lambda is the
method's state: logged as ``loss/retain_multiplier`` and saved with every checkpoint, so a resumed
run goes on with the multiplier it had. dual_step_size 0 keeps lambda fixed (a plain weighted sum).

Paper: Entesari, Hatami, Khaziev, Ramakrishna, Fazlyab, "Constrained Entropic Unlearning: A
Primal-Dual Framework for Large Language Models", 2025; OpenUnlearning's PDU trainer.

Defaults: w_f = 1.0 and a starting lambda of 1.0 (OpenUnlearning's GradDiff-based defaults, their
``gamma`` and ``alpha``), dual_step_size eta = 1.0 (theirs), retain_bound epsilon: the retain loss
of the first step, i.e. of the model before unlearning ("keep the retain loss where it was").

Deviations:
- OpenUnlearning's bound defaults to 0, which no NLL meets, so lambda only grows; here the default
  bound is the starting model's retain loss (measured on the first step's retain batch). A number
  sets it as theirs does.
- The flattening loss counts the positions that predict response tokens, averaged per example,
  then over examples; OpenUnlearning's averages every position of the batch, prompt and padding
  included.
- The dual step uses the step's retain loss averaged over its micro-batches and processes (what
  is logged), once per optimizer step.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from obliviate.methods import losses
from obliviate.methods.base import LossTerm, Method, MethodConfig, forward_answers, register, retain_term


class PDUConfig(MethodConfig):
    forget_weight: float = Field(default=1.0, ge=0)
    retain_weight: float = Field(default=1.0, ge=0, description="starting value of the multiplier lambda")
    dual_step_size: float = Field(default=1.0, ge=0, description="eta of the dual ascent step (0: lambda fixed)")
    retain_bound: Optional[float] = Field(
        default=None, ge=0, description="epsilon, the retain-loss bound; default: the retain loss of the first step"
    )


@register
class PDU(Method):
    name = "pdu"
    Config = PDUConfig
    needs_retain = True

    def __init__(self, config: PDUConfig):
        super().__init__(config)
        self.multiplier = float(config.retain_weight)
        self.bound: Optional[float] = config.retain_bound

    def terms(self, model, batch, reference):
        out, labels = forward_answers(model, batch["forget"])
        yield LossTerm("forget", self.config.forget_weight, losses.logit_margin_flattening(out.logits, labels))
        extra = {"retain_multiplier": self.multiplier}
        yield from retain_term("pdu", "nll", self.multiplier, model, batch, reference, extra)

    def on_step_end(self, state) -> None:
        retain = state.record.get("loss/retain")
        if retain is None:
            return None
        self.multiplier, self.bound = dual_step(self.multiplier, retain, self.bound, self.config.dual_step_size)
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"multiplier": self.multiplier, "bound": self.bound}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "multiplier" in state:
            self.multiplier = float(state["multiplier"])
            self.bound = state.get("bound")


def dual_step(multiplier: float, retain_loss: float, bound: Optional[float], step_size: float) -> tuple[float, float]:
    """One projected dual ascent step: ``(max(0, λ + η·(retain_loss − ε)), ε)``; an unset bound
    becomes ``retain_loss`` (the first step's), which leaves λ where it was."""
    if bound is None:
        bound = retain_loss
    return max(0.0, multiplier + step_size * (retain_loss - bound)), bound
