"""What a training run cost: the ``efficiency`` block of ``train_summary.json``.

Every figure is counted or measured by the loop, except the FLOPs, which are an **estimate**
from the parameter count (the usual rule for transformer training, per token of a sequence):

- ``N``: parameters that multiply activations, i.e. every parameter of the trained network
  (LoRA adapters included) less an input embedding that is not tied to the output layer (an
  embedding is a table look-up, not a matmul). ``N_base``: the same without LoRA adapters.
- ``N_trainable``: the trainable ones among them.
- A trained token (a real, non-padding token of a batch group the method's loss ran on) costs
  a forward pass ``2N``, the gradients of the activations ``2N`` (needed through frozen weights
  too, LoRA or not) and the gradients of the trainable weights ``2 N_trainable``; with gradient
  checkpointing the forward is run again, ``+2N``. Full fine-tuning gives the familiar ``6N``.
- A token the reference model reads (``Reference.forward``) costs one forward, ``2 N_base``.

  estimated_flops = trained_tokens x (4N + 2N_trainable [+ 2N]) + reference_tokens x 2N_base

The baseline a reader compares methods by is **one epoch of plain full fine-tuning on the forget
set**: ``6 N_base x forget_set_tokens`` (the real tokens of every forget example, encoded as the
run encodes them). ``cost_vs_one_fine_tune_epoch`` is this run's estimate divided by it.

What the estimate leaves out, so that it stays comparable rather than exact: the attention
score term (grows with sequence length; small for short answers), padding (counted apart, as
``padded_tokens``), the output layer applied to the answer window only, optimizer updates, and
forwards a method runs outside its loss or outside ``Reference.forward`` (a gate's or an early
stopper's generations, caches built once in ``setup``). Throughput is shown beside the matmul
peak measured on the same device in the same run, since machines of one kind differ severalfold.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import Any, Optional

import torch

from obliviate.errors import UserError
from obliviate.methods.base import Reference

#: Seconds spent measuring the matmul peak at the start of a run; 0 skips the measurement.
PEAK_SECONDS_ENV = "OBLIVIATE_MATMUL_PEAK_SECONDS"
DEFAULT_PEAK_SECONDS = 1.0


@dataclass(frozen=True)
class ParameterCounts:
    total: int  # every distinct parameter of the trained network, adapters included
    trainable: int
    matmul: int  # N: those that multiply activations
    trainable_matmul: int  # N_trainable
    base_matmul: int  # N_base: N without LoRA adapters (the reference network, the fine-tuning baseline)


def count_parameters(model: torch.nn.Module) -> ParameterCounts:
    """The parameter counts the FLOPs estimate uses (see the module docstring)."""
    embedding = _untied_input_embedding(model)
    total = trainable = matmul = trainable_matmul = adapter = 0
    for name, param in model.named_parameters():  # shared (tied) tensors are listed once
        n = param.numel()
        total += n
        trainable += n if param.requires_grad else 0
        if param is embedding:
            continue
        matmul += n
        trainable_matmul += n if param.requires_grad else 0
        adapter += n if "lora_" in name else 0
    return ParameterCounts(total, trainable, matmul, trainable_matmul, matmul - adapter)


def _untied_input_embedding(model: torch.nn.Module) -> Optional[torch.nn.Parameter]:
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    try:
        inputs = get_in() if get_in else None
        outputs = get_out() if get_out else None
    except (NotImplementedError, AttributeError):
        return None
    weight = getattr(inputs, "weight", None)
    if weight is None or weight is getattr(outputs, "weight", None):
        return None
    return weight


def flops_per_trained_token(matmul: int, trainable_matmul: int, *, recompute: bool = False) -> int:
    """Forward ``2N`` + activation gradients ``2N`` + weight gradients ``2N_trainable`` (+ ``2N``
    when gradient checkpointing runs the forward twice)."""
    return 2 * matmul + 2 * matmul + 2 * trainable_matmul + (2 * matmul if recompute else 0)


def estimate_training_flops(
    counts: ParameterCounts, trained_tokens: int, reference_tokens: int = 0, *, recompute: bool = False
) -> float:
    per_token = flops_per_trained_token(counts.matmul, counts.trainable_matmul, recompute=recompute)
    return float(trained_tokens * per_token + reference_tokens * 2 * counts.base_matmul)


def fine_tune_epoch_flops(base_matmul: int, forget_set_tokens: int) -> float:
    """One epoch of plain full fine-tuning on the forget set: ``6 N_base`` per token."""
    return float(6 * base_matmul * forget_set_tokens)


def peak_seconds() -> float:
    """How long to measure the matmul peak (``OBLIVIATE_MATMUL_PEAK_SECONDS``; 0 skips it)."""
    raw = os.environ.get(PEAK_SECONDS_ENV, "").strip()
    if not raw:
        return DEFAULT_PEAK_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UserError(f"{PEAK_SECONDS_ENV}={raw!r}: not a number of seconds; give 0 (skip the measurement) or more")
    return value


def memory_figures() -> dict[str, Optional[float]]:
    """Peak resident memory of this process and, on CUDA, the allocator's peaks (MB)."""
    figures: dict[str, Optional[float]] = {
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
        "cuda_max_allocated_mb": None,
        "cuda_max_reserved_mb": None,
    }
    if torch.cuda.is_available():
        figures["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        figures["cuda_max_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return figures


def efficiency_block(
    *,
    seconds: float,
    steps_run: int,
    trained_tokens: int,
    padded_tokens: int,
    reference_tokens: int,
    counts: ParameterCounts,
    recompute: bool,
    forget_set_tokens: int,
    peak_gflops: Optional[float],
    peak_dtype: str,
    processes: int,
    memory: dict[str, Optional[float]],
) -> dict[str, Any]:
    """The ``efficiency`` block of ``train_summary.json`` (token counts summed over processes)."""
    flops = estimate_training_flops(counts, trained_tokens, reference_tokens, recompute=recompute)
    baseline = fine_tune_epoch_flops(counts.base_matmul, forget_set_tokens)
    achieved = flops / seconds / 1e9 if seconds > 0 else None
    share = achieved / (peak_gflops * processes) if achieved is not None and peak_gflops else None
    return {
        "wall_s": round(seconds, 6),
        "steps_run": steps_run,
        "tokens": trained_tokens,
        "padded_tokens": padded_tokens,
        "reference_tokens": reference_tokens,
        "tokens_per_s": trained_tokens / seconds if seconds > 0 else None,
        "total_parameters": counts.total,
        "trainable_parameters": counts.trainable,
        "matmul_parameters": counts.matmul,
        "estimated_flops": flops,
        "flops_rule": "tokens x (4N + 2N_trainable" + (" + 2N recompute" if recompute else "")
        + ") + reference_tokens x 2N_base (estimate)",
        "achieved_gflops_per_s": achieved,
        "matmul_peak_gflops": peak_gflops,
        "matmul_peak_dtype": peak_dtype,
        "processes": processes,
        "share_of_peak": share,
        "forget_set_tokens": forget_set_tokens,
        "fine_tune_epoch_flops": baseline,
        "cost_vs_one_fine_tune_epoch": flops / baseline if baseline > 0 else None,
        **memory,
    }


class CountingReference(Reference):
    """A ``Reference`` that counts the real tokens of the batches it reads (for the FLOPs estimate)."""

    def __init__(self, model: torch.nn.Module, frozen_copy: Optional[torch.nn.Module] = None):
        super().__init__(model, frozen_copy)
        self.tokens = 0

    @torch.no_grad()
    def forward(self, batch, output_hidden_states: bool = False, **kwargs):
        self.tokens += int(batch["attention_mask"].sum())
        return super().forward(batch, output_hidden_states=output_hidden_states, **kwargs)
