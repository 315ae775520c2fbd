"""Task-vector negation: fine-tune on the forget set, then subtract the change that made.

Equation:  train with L = w_f · NLL_θ(y | x) over the forget set (plain descent, as ``finetune``),
reaching θ_ft; then  θ_unlearned = θ_0 − α·(θ_ft − θ_0),  with θ_0 the weights training started
from and τ = θ_ft − θ_0 the "task vector" of the forget data. The negation is applied once, after
the last step and before the model is saved, so the saved model (and the one handed back in
process) is the unlearned one. The logged loss is the forget NLL of the model being fine-tuned:
it falls during training; the forget NLL of the saved model is what rises.

Under LoRA the adapter's change to a weight is ΔW = B·A·s with B starting at zero, so negating
and scaling it is B ← −α·B (A untouched): exactly W − α·ΔW, as a saved adapter or merged.
Under full fine-tuning a CPU copy of the trainable parameters is kept at setup and each becomes
p ← p0 − α·(p − p0) at the end. α = 0 gives back θ_0 exactly.

Paper: Ilharco, Ribeiro, Wortsman, Gururangan, Schmidt, Hajishirzi, Farhadi 2023, "Editing Models
with Task Arithmetic" (ICLR 2023, arXiv 2212.04089), "forgetting via negation"; the task
arithmetic baseline of the unlearning survey arXiv 2402.08787.

Defaults: ``scale`` (α) 1.0, ``forget_weight`` 1.0.

Deviations:
  - The paper fine-tunes a separate model and negates its task vector, choosing α on held-out
    data; here fine-tuning and negation are one run with a fixed α (try several runs to tune it).
  - A LoRA adapter continued from a saved one (``train.lora.init_from``) has B ≠ 0 at the start;
    its change B·A − B0·A0 is not a rank-r adapter, so there the formula is applied to A and B
    themselves (A ← A0 − α(A − A0), B ← B0 − α(B − B0)), which negates ΔW to first order in the
    change, not exactly (a warning says so).
  - Stop hooks and in-training evaluation (early stopping, forget gate) see the fine-tuned model,
    not the negated one; checkpoints hold the fine-tuned weights, which is what lets a resumed
    run negate only once, at its end.
  - Full fine-tuning keeps one copy of the trainable weights in CPU memory for the whole run.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from pydantic import Field

from obliviate.methods import losses
from obliviate.methods.base import LossTerm, Method, MethodConfig, Reference, forward_answers, register


class TaskVectorConfig(MethodConfig):
    scale: float = Field(default=1.0, ge=0, description="α: how much of the task vector to subtract")
    forget_weight: float = Field(default=1.0, gt=0, description="weight of the forget NLL during fine-tuning")


@register
class TaskVector(Method):
    name = "task_vector"
    Config = TaskVectorConfig

    def __init__(self, config: TaskVectorConfig):
        super().__init__(config)
        self._zero_start_b: list[str] = []  # LoRA B matrices that start at zero: scaled by −α
        self._start: dict[str, torch.Tensor] = {}  # everything else: p0 on the CPU

    def setup(self, model: torch.nn.Module, reference: Optional[Reference], context: dict) -> None:
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        zero_b = {name for name, p in trainable.items() if "lora_B" in name and not bool(p.detach().any())}
        # A fresh adapter's A matrices stay as trained: B·A·s is the whole change, and B carries the sign.
        paired_a = {name.replace("lora_B", "lora_A") for name in zero_b}
        self._zero_start_b = sorted(zero_b)
        self._start = {
            name: p.detach().to("cpu", copy=True)
            for name, p in trainable.items()
            if name not in zero_b and name not in paired_a
        }
        if any("lora_" in name for name in self._start):
            warnings.warn(
                "task_vector: the LoRA adapter does not start at zero (train.lora.init_from); its factors are "
                "negated one by one, which negates the weight change only to first order",
                stacklevel=2,
            )

    def terms(self, model, batch, reference):
        out, labels = forward_answers(model, batch["forget"])
        yield LossTerm("forget_nll", self.config.forget_weight, losses.nll(out.logits, labels))

    @torch.no_grad()
    def on_train_end(self, model: torch.nn.Module) -> None:
        alpha = self.config.scale
        params = dict(model.named_parameters())
        for name in self._zero_start_b:
            params[name].mul_(-alpha)
        for name, start in self._start.items():
            p = params[name]
            p0 = start.to(p.device, p.dtype)
            p.copy_(p0 - alpha * (p - p0))
