"""The quantisation attack: is the unlearning still there once the weights are rounded?

Unlearning often moves each weight by very little. Quantising the model for deployment rounds
every weight to a grid whose step is far coarser than many of those moves, so the rounded
unlearned model can land back on the rounded original and answer what it "forgot" (Zhang et al.
2024, arXiv 2410.16454). Three tools here:

- :func:`quantise_int8`: CPU dynamic int8 quantisation of every ``nn.Linear`` (per output row);
- :func:`quantise_4bit`: 4-bit NF4 loading through bitsandbytes (CUDA only);
- :func:`quantise_q4_0`: the weights a GGUF Q4_0 file would hold (llama.cpp's 4-bit blocks of
  32, through the ``gguf`` package's own quantiser), put back into a transformers model;
- :func:`rounding_share`: the share of the unlearning updates smaller than half an int8 step of
  their row, i.e. those int8 rounding can erase.

None of them changes the model it is given.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import torch

from obliviate.errors import UserError

Scheme = Literal["int8", "nf4", "q4_0"]
SCHEMES: tuple[str, ...] = ("int8", "nf4", "q4_0")

#: GGUF's Q4_0 quantises rows in blocks of this many weights.
Q4_0_BLOCK = 32

#: Symmetric int8 keeps the levels -127..127, so a row's step is max|w| / 127.
INT8_LEVELS = 127


def merged_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` with any PEFT (LoRA) adapter folded into its weights.

    The caller's model keeps its adapter; the copy is a plain transformers model, which is what
    quantisation and further training expect."""
    duplicate = copy.deepcopy(model)
    if hasattr(duplicate, "merge_and_unload"):
        duplicate = duplicate.merge_and_unload()
    return duplicate


def quantise_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers are int8 (dynamic quantisation, CPU).

    Weights are rounded per output row (symmetric; torch's step is ``max|w| / 127.5``, within
    0.4% of the ``max|w| / 127`` :func:`rounding_share` assumes); activations are quantised on
    the fly at each call. A LoRA
    adapter is merged into the copy first, so the adapter's update is rounded with the weights it
    changes. The input model is left as it is (same weights, same device, same mode).
    """
    duplicate = merged_copy(model).to("cpu").eval()
    with warnings.catch_warnings():
        # torch marks its eager quantisation API deprecated in favour of a separate package; it
        # is still the one CPU int8 path that ships with torch itself.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(duplicate, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def quantise_4bit(model_or_spec: Union[str, Path, torch.nn.Module], *, trust_remote_code: bool = False) -> torch.nn.Module:
    """The model loaded in 4-bit NF4 (bitsandbytes, compute in bf16) on the first CUDA device.

    ``model_or_spec`` is a model spec (alias, local folder, hub id) or a model object; an object
    (LoRA adapter merged) is saved to a temporary folder and loaded back quantised, since
    bitsandbytes quantises while loading. Needs a CUDA GPU and the ``bitsandbytes`` package
    (not a dependency of obliviate); without them a one-line ``UserError`` says so.
    """
    missing = _nf4_missing()
    if missing:
        raise UserError(
            f"quantisation scheme nf4: needs a CUDA GPU and the bitsandbytes package ({missing}); "
            "install bitsandbytes on a CUDA machine, or use scheme int8 (CPU)"
        )
    if isinstance(model_or_spec, torch.nn.Module):
        with tempfile.TemporaryDirectory(prefix="obliviate-nf4-") as folder:
            merged_copy(model_or_spec).save_pretrained(folder, safe_serialization=True)
            return _load_nf4(folder, trust_remote_code)
    from obliviate.models.loading import resolve_model

    resolved = resolve_model(str(model_or_spec))
    return _load_nf4(str(resolved.location), trust_remote_code, local=resolved.kind != "hub")


def quantise_q4_0(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` weights are rounded as GGUF Q4_0 rounds them.

    Each weight row is cut into blocks of 32; a block keeps one fp16 scale and 4-bit levels
    (``gguf.quants``, the same numerics as llama.cpp's converter). The rounded weights are put
    back as floats, so the model runs in transformers and is scored like any other: what a user
    who downloads a Q4_0 GGUF of the unlearned model would get, without llama.cpp. Deviations: a
    llama.cpp ``Q4_0`` file often keeps the output layer at a higher precision, and here every
    Linear whose input size is a multiple of 32 is rounded (the output layer too; embeddings are
    not Linear and stay as they are). A LoRA adapter is merged first; the input model is not
    changed.
    """
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    duplicate = merged_copy(model).eval()
    with torch.no_grad():
        for module in duplicate.modules():
            if not isinstance(module, torch.nn.Linear) or module.in_features % Q4_0_BLOCK:
                continue
            weight = module.weight.detach().to("cpu", torch.float32).numpy()
            packed = quants.quantize(np.ascontiguousarray(weight), GGMLQuantizationType.Q4_0)
            rounded = quants.dequantize(packed, GGMLQuantizationType.Q4_0).reshape(weight.shape)
            module.weight.copy_(torch.from_numpy(rounded).to(module.weight.dtype))
    return duplicate


def quantise(model: Any, scheme: str = "int8") -> torch.nn.Module:
    """Quantise ``model`` with ``scheme``: ``int8`` (a model object, CPU), ``q4_0`` (a model
    object; GGUF Q4_0 rounding) or ``nf4`` (a model object or spec, CUDA + bitsandbytes). The
    input is never modified."""
    if scheme in ("int8", "q4_0"):
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"quantisation scheme {scheme}: needs a loaded model object, not {type(model).__name__}")
        return quantise_int8(model) if scheme == "int8" else quantise_q4_0(model)
    if scheme == "nf4":
        return quantise_4bit(model)
    raise UserError(f"quantisation scheme {scheme!r}: unknown; valid schemes: {', '.join(SCHEMES)}")


@dataclass(frozen=True)
class RoundingShare:
    """How much of an unlearning update int8 rounding can erase.

    ``updated``: weights the update changed (Δw ≠ 0); ``erasable``: those with |Δw| below half the
    int8 step of their row; ``share`` = erasable / updated (0.0 when nothing changed).
    """

    share: float
    updated: int
    erasable: int


def rounding_share(
    original: Union[torch.nn.Module, Mapping[str, torch.Tensor]],
    unlearned: Union[torch.nn.Module, Mapping[str, torch.Tensor]],
) -> RoundingShare:
    """The share of unlearning updates smaller than half the int8 quantisation step of their row.

    Over every ``nn.Linear`` weight of the two models (or every 2-D tensor of two mappings from
    name to weight, for hand-made cases), with Δw = unlearned − original and a row's step
    ``max|w_original| / 127`` (per-channel symmetric int8, as :func:`quantise_int8` rounds): the
    share of the changed weights with ``|Δw| < step / 2``.

    A diagnostic, not a prediction: such a move is erased whenever both values round to the same
    level, which depends on where the original sits between two levels; a move of half a step or
    more always survives. A share near 1 says the unlearning lives mostly below int8's resolution.
    Unlearned weights are matched to original ones by name; a LoRA adapter on either model is
    merged (on a copy) first.
    """
    before, after = _linear_weights(original), _linear_weights(unlearned)
    updated = erasable = 0
    for name, weight in before.items():
        if name not in after:
            continue
        new = after[name]
        if new.shape != weight.shape:
            raise ValueError(f"{name}: shape {tuple(new.shape)} in the unlearned model, {tuple(weight.shape)} in the original")
        w, delta = weight.detach().float().cpu(), (new.detach().float().cpu() - weight.detach().float().cpu()).abs()
        half_step = w.abs().amax(dim=1, keepdim=True) / INT8_LEVELS / 2
        changed = delta > 0
        updated += int(changed.sum())
        erasable += int((changed & (delta < half_step)).sum())
    return RoundingShare(erasable / updated if updated else 0.0, updated, erasable)


def _linear_weights(source: Union[torch.nn.Module, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if isinstance(source, torch.nn.Module):
        model = merged_copy(source) if hasattr(source, "merge_and_unload") else source
        return {name: module.weight for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    return {name: tensor for name, tensor in source.items() if tensor.dim() == 2}


def _nf4_missing() -> str:
    """What this machine lacks for NF4 loading ('' when nothing)."""
    lacking = []
    if not torch.cuda.is_available():
        lacking.append("no CUDA device here")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        lacking.append("bitsandbytes is not installed")
    return "; ".join(lacking)


def _load_nf4(location: str, trust_remote_code: bool, local: bool = True) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
    )
    extra: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
    if local:
        extra["local_files_only"] = True
    model = AutoModelForCausalLM.from_pretrained(location, quantization_config=config, device_map={"": 0}, **extra)
    return model.eval()
