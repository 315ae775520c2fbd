"""Saliency-restricted unlearning (SalUn-style): train only the weights the forget loss leans on.

Before the first step the forget set's loss gradient is taken once, on the model as loaded, and
each weight is scored by its magnitude ``|∂ NLL(forget) / ∂w|`` (the gradient of gradient
ascent's loss has the same magnitude). Then, for any method:

* full fine-tuning: the top ``top_percent`` % of the trainable weights (one threshold over all of
  them) keep their gradient; every other weight's gradient is multiplied by 0 in a hook, so Adam
  never moves it (with ``train.weight_decay`` 0, the default, it stays bit-identical);
* LoRA: a mask inside an adapter means nothing, so whole modules are chosen instead: the
  candidate modules (``train.lora.target_modules``, or the method's own) ranked by mean score
  per weight, taken in that order until they hold ``top_percent`` % of the candidates' weights;
  only they get adapters.

The scores come from the model before anything trains, with no randomness, so a resumed run and
every process of a multi-process run choose the same weights without saving the choice.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from obliviate.methods import losses
from obliviate.train.trainable import in_modules

_CHUNK = 8  # forget pairs per forward pass while scoring


@dataclass
class Saliency:
    """The weights a run trains. ``masks`` (full fine-tuning): parameter name -> bool mask of the
    weights that keep their gradient; ``modules`` (LoRA): the modules that get adapters."""

    top_percent: float
    selected: int  # weights chosen
    total: int  # weights that could have been chosen
    masks: Optional[dict[str, torch.Tensor]] = None
    modules: Optional[list[str]] = None

    @property
    def share(self) -> float:
        return self.selected / self.total if self.total else 0.0

    def mask_gradients(self, model: torch.nn.Module) -> None:
        """Zero, in every backward pass, the gradient of each weight outside the selection."""
        params = dict(model.named_parameters())
        for name, mask in (self.masks or {}).items():
            param = params[name]
            keep = mask.to(param.device)
            param.register_hook(lambda grad, keep=keep: grad * keep.to(grad.dtype))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "top_percent": self.top_percent, "weights_selected": self.selected, "weights_eligible": self.total,
            "share_updated": round(self.share, 6),
        }
        if self.modules is not None:
            out["modules"] = list(self.modules)
        return out


def forget_gradient_scores(model: torch.nn.Module, encoder, forget: Sequence, device) -> dict[str, torch.Tensor]:
    """``|∂ NLL / ∂w|`` of every parameter, NLL the mean over the forget examples (fp32, on ``device``).

    The model is scored in eval mode outside autocast; its ``requires_grad`` flags and gradients
    are as they were afterwards."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    model.to(device).eval().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    n = len(forget)
    try:
        for start in range(0, n, _CHUNK):
            rows = list(forget[start: start + _CHUNK])
            batch = encoder.batch(rows, device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            (losses.nll(logits.float(), batch["labels"]) * len(rows) / n).backward()
        scores = {
            name: p.grad.detach().float().abs() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)
            for name, p in model.named_parameters()
        }
    finally:
        model.zero_grad(set_to_none=True)
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
        model.train(was_training)
    return scores


def top_weights(scores: dict[str, torch.Tensor], names: list[str], top_percent: float) -> Saliency:
    """Masks of the ``top_percent`` % highest-scoring weights among the parameters ``names``.

    One threshold over all of them: the k-th largest score, k = ceil(share · count). Ties at the
    threshold are all kept; a weight with no gradient at all (score 0) never is."""
    flat = torch.cat([scores[name].flatten() for name in names])
    k = max(1, math.ceil(flat.numel() * top_percent / 100))
    threshold = torch.topk(flat, k).values.min()
    masks = {name: (scores[name] >= threshold) & (scores[name] > 0) for name in names}
    selected = int(sum(int(m.sum()) for m in masks.values()))
    return Saliency(top_percent, selected, int(flat.numel()), masks=masks)


def top_modules(scores: dict[str, torch.Tensor], modules: list[str], top_percent: float) -> Saliency:
    """The candidate ``modules`` with the highest mean score per weight, taken in that order until
    they hold ``top_percent`` % of the candidates' weights (at least one module)."""
    size: dict[str, int] = {}
    mass: dict[str, float] = {}
    for name, score in scores.items():
        owner = next((m for m in modules if name.startswith(m + ".")), None)
        if owner is not None:
            size[owner] = size.get(owner, 0) + score.numel()
            mass[owner] = mass.get(owner, 0.0) + float(score.sum())
    ranked = sorted(size, key=lambda m: (-mass[m] / size[m], m))
    total = sum(size.values())
    chosen: list[str] = []
    covered = 0
    for module in ranked:
        if chosen and covered >= total * top_percent / 100:
            break
        chosen.append(module)
        covered += size[module]
    return Saliency(top_percent, covered, total, modules=chosen)


def lora_candidates(model: torch.nn.Module, target_modules: Sequence[str]) -> list[str]:
    """Full names of the modules LoRA would adapt: those whose last name is in ``target_modules``."""
    targets = set(target_modules)
    return [name for name, _ in model.named_modules() if name and name.rsplit(".", 1)[-1] in targets]


def select_salient(
    model: torch.nn.Module, encoder, forget: Sequence, config, method_modules: Optional[list[str]], device
) -> Saliency:
    """Score the weights of ``model`` (as loaded, no adapter yet) on the forget set and choose the
    ones to train, within ``method_modules`` when the method names its own."""
    settings = config.train.saliency
    scores = forget_gradient_scores(model, encoder, forget, device)
    if config.train.lora.enabled:
        candidates = method_modules if method_modules is not None else lora_candidates(model, config.train.lora.target_modules)
        return top_modules(scores, candidates, settings.top_percent)
    names = [
        name for name, p in model.named_parameters()
        if p.requires_grad and (method_modules is None or in_modules(name, method_modules))
    ]
    if config.train.weight_decay > 0:
        warnings.warn(
            "train.saliency with train.weight_decay > 0: decoupled weight decay still shrinks the weights outside "
            "the selection (set weight_decay: 0 to leave them untouched)",
            stacklevel=2,
        )
    return top_weights(scores, names, settings.top_percent)
