"""A leaner forward for peft's LoRA linear layers: the same maths in fewer passes over memory.

peft computes ``base(x) + B(A(dropout(x))) * s``: the scale multiplies and the sum adds two
tensors as wide as the layer's output, forward and again backward, in every adapted layer. On a
CPU those element-wise passes are memory-bound and cost a visible share of an unlearning step.
Here the scale goes on the rank-r intermediate (``(A x) s`` has r columns, not out_features) and
the sum is the accumulating form of the second matrix product (in-place ``addmm_``: base +=
h Bᵀ in one BLAS call). ``B (A x) s == B ((A x) s)`` exactly in real arithmetic; in floating point the
results agree to rounding (tested).

Only the plain case is taken over: one active vanilla LoRA adapter on an ``nn.Linear``, not
merged, adapters enabled, no per-call adapter names. Anything else (DoRA and other variants,
several adapters, disabled adapters for the reference model) runs peft's own forward.
"""

from __future__ import annotations

import types

import torch


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    active = [name for name in self.active_adapters if name in self.lora_A]
    if (
        args
        or kwargs
        or self.disable_adapters
        or self.merged
        or len(active) != 1
        or active[0] in self.lora_variant
        or not isinstance(self.base_layer, torch.nn.Linear)
        or getattr(self, "fan_in_fan_out", False)
        or self.base_layer.weight.dtype != self.lora_A[active[0]].weight.dtype
        or x.dtype != self.base_layer.weight.dtype and not torch.is_autocast_enabled(x.device.type)
    ):
        return type(self).forward(self, x, *args, **kwargs)
    name = active[0]
    lora_a, lora_b = self.lora_A[name], self.lora_B[name]
    flat = x.reshape(-1, x.shape[-1])
    result = self.base_layer(flat)
    low = lora_a(self.lora_dropout[name](flat)) * self.scaling[name]
    if lora_b.bias is not None:
        return (result + lora_b(low)).reshape(*x.shape[:-1], result.shape[-1])
    # result += low @ Bᵀ inside the matrix product (beta = 1): no extra pass and, being in place,
    # no copy of ``result`` either (out-of-place addmm copies its input first). Autograd allows it:
    # the base layer's backward needs its input and weight, not this output. In-place ops are
    # not autocast, so the operands take the output's dtype explicitly.
    result.addmm_(low.to(result.dtype), lora_b.weight.t().to(result.dtype))
    return result.reshape(*x.shape[:-1], result.shape[-1])


def fuse_lora_layers(model: torch.nn.Module) -> int:
    """Give every peft LoRA ``Linear`` in ``model`` the fused forward; returns how many.

    Only instances of peft's own ``lora.Linear`` class are touched (quantised and other subclasses
    keep theirs). The parameters, saving, merging and ``disable_adapter`` are unchanged.
    """
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count
