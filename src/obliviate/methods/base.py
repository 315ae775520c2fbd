"""What the training loop knows about a method: a loss with a few declared needs.

A method is a class with a pydantic ``Config`` of its options, registered under a snake_case
name. The loop reads ``needs_reference`` and ``needs_retain``, may call ``setup``, builds each
step's example groups with ``build_batch`` (default: forget and retain), tokenises them, and
calls ``loss``. No method inherits from another; shared maths lives in ``obliviate.losses``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from obliviate.data.examples import Example

Batch = dict[str, torch.Tensor]  # input_ids, attention_mask, labels: (B, T) each


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class LossOutput:
    """``total`` is what is minimised; ``parts`` are logged as ``loss/<name>`` (detached floats)."""

    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchContext:
    """What ``build_batch`` may draw on. ``rng`` is seeded by (seed, micro-step), so any random
    choice is reproducible and survives a resume without saved state."""

    rng: np.random.Generator
    answer_pool: list[str]


class Reference:
    """The original model's outputs, without keeping two models when it can be avoided.

    Under LoRA the reference is the same network with its adapters switched off; under full
    fine-tuning it is a frozen copy made once before training.
    """

    def __init__(self, model: torch.nn.Module, frozen_copy: Optional[torch.nn.Module] = None):
        self._model = model
        self._copy = frozen_copy

    @torch.no_grad()
    def logits(self, batch: Batch) -> torch.Tensor:
        return self.forward(batch, output_hidden_states=False).logits

    @torch.no_grad()
    def forward(self, batch: Batch, output_hidden_states: bool = False):
        if self._copy is not None:
            return self._copy(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=output_hidden_states,
            )
        with self.adapters_disabled():
            return self._model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=output_hidden_states,
            )

    @contextlib.contextmanager
    def adapters_disabled(self):
        model = getattr(self._model, "module", self._model)  # unwrap DDP
        if hasattr(model, "disable_adapter"):
            was_training = model.training
            model.eval()  # no LoRA dropout noise in the reference either
            with model.disable_adapter():
                yield
            model.train(was_training)
        else:
            yield


def forward(model: torch.nn.Module, batch: Batch, **kwargs) -> Any:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)


class Method:
    """Base of the protocol (plain defaults, no behaviour to inherit beyond them)."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    needs_reference: ClassVar[bool] = False
    needs_retain: ClassVar[bool] = False

    def __init__(self, config: MethodConfig):
        self.config = config

    def setup(self, model: torch.nn.Module, reference: Optional[Reference], context: dict) -> None:
        """Called once before training (precompute reference quantities here)."""

    def build_batch(
        self, forget: list[Example], retain: Optional[list[Example]], ctx: BatchContext
    ) -> dict[str, list[Example]]:
        groups = {"forget": forget}
        if retain is not None:
            groups["retain"] = retain
        return groups

    def loss(self, model: torch.nn.Module, batch: dict[str, Batch], reference: Optional[Reference]) -> LossOutput:
        raise NotImplementedError

    def on_step_end(self, state: Any) -> Optional[str]:
        """Return a reason to stop training early, or None."""
        return None


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Method]]:
    return _REGISTRY


StopHook = Callable[[Any], Optional[str]]
