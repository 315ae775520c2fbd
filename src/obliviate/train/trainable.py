"""Which weights train: narrowing a model's trainable parameters to a set of named modules.

A method (``Method.trainable_modules``, e.g. ``rmu``'s few MLP layers) or the saliency option
names modules of the model as loaded, before any LoRA adapter. Under LoRA those names become the
adapter's target modules; whatever the mode, every parameter outside them is then frozen here.
"""

from __future__ import annotations

from typing import Iterable

import torch

from obliviate.errors import UserError

_PEFT_PREFIX = "base_model.model."  # what peft puts before the wrapped model's names


def base_name(parameter_name: str) -> str:
    """A parameter's name as on the model before LoRA (peft's wrapper prefix removed)."""
    return parameter_name[len(_PEFT_PREFIX):] if parameter_name.startswith(_PEFT_PREFIX) else parameter_name


def in_modules(parameter_name: str, modules: Iterable[str]) -> bool:
    name = base_name(parameter_name)
    return any(name.startswith(module + ".") for module in modules)


def restrict_to_modules(model: torch.nn.Module, modules: list[str], *, why: str) -> int:
    """Freeze every trainable parameter outside ``modules``; returns how many elements still train.

    ``why`` names who asked (for the error when nothing is left to train, e.g. a continued LoRA
    adapter that adapts none of the modules)."""
    kept = 0
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if in_modules(name, modules):
            kept += param.numel()
        else:
            param.requires_grad_(False)
    if kept == 0:
        shown = ", ".join(modules[:3]) + (" ..." if len(modules) > 3 else "")
        raise UserError(f"{why}: no trainable weight lies in the modules it chose ({shown})")
    return kept
