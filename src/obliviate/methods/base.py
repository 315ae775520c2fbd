"""What the training loop knows about a method: a loss with a few declared needs.

A method is a class with a pydantic ``Config`` of its options, registered under a snake_case
name. The loop reads ``needs_reference`` and ``needs_retain``, asks ``trainable_modules`` which
weights train (default: all), may call ``setup``, builds each
step's example groups with ``build_batch`` (default: forget and retain), tokenises them, and
calls ``terms``. After the last step, before the model is saved, it calls ``on_train_end`` (a
method that edits the trained weights, e.g. ``task_vector``'s negation, does it there; checkpoints
taken during training never hold the edit, so a resumed run applies it once). No method inherits
from another; shared maths lives in ``obliviate.methods.losses``.

A method's loss is a weighted sum of terms, each computed on one example group (forget,
mismatch, retain, ...). ``terms`` yields them one at a time so that the loop can backpropagate
each term as soon as it exists: only one group's activations are alive at a time, which is most
of a step's memory. ``loss`` sums the same terms for callers that want one scalar.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from obliviate.data.examples import Example
from obliviate.data.formatting import IGNORE_INDEX

Batch = dict[str, torch.Tensor]  # input_ids, attention_mask, labels: (B, T) each


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class LossOutput:
    """``total`` is what is minimised; ``parts`` are logged as ``loss/<name>`` (detached floats)."""

    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class LossTerm:
    """One weighted term of a method's loss: ``weight * value`` is added to the total.

    ``value`` is logged as ``loss/<name>`` (unweighted); ``extra`` holds further detached figures
    to log with it (e.g. the share of tokens a bounded loss still pushes)."""

    name: str
    weight: float
    value: torch.Tensor
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchContext:
    """What ``build_batch`` may draw on. ``rng`` is seeded by (seed, micro-step), so any random
    choice is reproducible and survives a resume without saved state."""

    rng: np.random.Generator
    random_answers: list[str]


class Reference:
    """The original model's outputs, without keeping two models when it can be avoided.

    Under LoRA the reference is the same network with its adapters switched off; under full
    fine-tuning it is a frozen copy made once before training.
    """

    def __init__(self, model: torch.nn.Module, frozen_copy: Optional[torch.nn.Module] = None):
        self._model = model
        self._copy = frozen_copy

    @property
    def network(self) -> torch.nn.Module:
        """The module that computes the reference's outputs (the copy, or the adapted model)."""
        return self._copy if self._copy is not None else self._model

    @torch.no_grad()
    def logits(self, batch: Batch) -> torch.Tensor:
        """Logits at every position, (B, T, V)."""
        return self.forward(batch, output_hidden_states=False).logits

    @torch.no_grad()
    def answer_logits(self, batch: Batch) -> torch.Tensor:
        """Logits over the answer window only, aligned with ``forward_answers`` on the same batch."""
        keep = _logits_to_keep(self.network, batch["labels"])
        return self.forward(batch, **({"logits_to_keep": keep} if keep else {})).logits

    @torch.no_grad()
    def forward(self, batch: Batch, output_hidden_states: bool = False, **kwargs):
        if self._copy is not None:
            return self._copy(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=output_hidden_states,
                **kwargs,
            )
        with self.adapters_disabled():
            return self._model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=output_hidden_states,
                **kwargs,
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


def answer_window(labels: torch.Tensor) -> int:
    """How many trailing positions are needed to score every answer token of the batch.

    Position t predicts token t+1, so the window starts one before the earliest answer token of
    any row. Prompt positions before it never reach the output layer: with a 49k-word vocabulary
    that layer and its log-softmax are a large share of a step's time and memory, and prompts
    (chat template included) are often half of the tokens. Returns T when nothing can be cut.
    """
    answer = labels != IGNORE_INDEX
    length = labels.shape[1]
    rows = answer.any(dim=1)
    if not bool(rows.any()):
        return length
    first = int(answer[rows].float().argmax(dim=1).min())
    return length - max(first - 1, 0)


def forward_answers(model: torch.nn.Module, batch: Batch, **kwargs) -> tuple[Any, torch.Tensor]:
    """Forward pass with the output layer applied over the answer window only.

    Returns the model output (``logits`` of shape (B, W, V); hidden states, if asked for, still
    cover all T positions) and the labels cut to the same W positions, so every loss in
    ``obliviate.methods.losses`` reads the pair exactly as it reads full-length logits and labels.
    Models whose forward has no ``logits_to_keep`` argument get full-length logits and labels.
    """
    keep = _logits_to_keep(model, batch["labels"])
    if not keep:
        return forward(model, batch, **kwargs), batch["labels"]
    return forward(model, batch, logits_to_keep=keep, **kwargs), batch["labels"][:, -keep:]


def _contiguous_input(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def contiguous_output_layer(model: torch.nn.Module) -> None:
    """Make the output layer's input contiguous (once per model; idempotent).

    With ``logits_to_keep`` the model hands its output layer a slice of the hidden states, which
    is not contiguous; ``F.linear`` then multiplies through a batched product against the
    49k-row weight expanded per row of the batch, about 2.5 times slower on a CPU than one
    matrix product over a contiguous copy (the copy is the size of the hidden states of the
    window: tiny next to the logits).
    """
    inner = _innermost(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if head is None or getattr(head, "_obliviate_contiguous_input", False):
        return
    head.register_forward_pre_hook(_contiguous_input)
    head._obliviate_contiguous_input = True


def _logits_to_keep(model: torch.nn.Module, labels: torch.Tensor) -> int:
    """The window for ``logits_to_keep``, or 0 (keep everything) when it would not help or the
    model's forward does not take the argument."""
    keep = answer_window(labels)
    if keep >= labels.shape[1] or not _takes_logits_to_keep(_innermost(model)):
        return 0
    contiguous_output_layer(model)
    return keep


def one_logit(model: torch.nn.Module) -> dict:
    """Forward kwargs for a pass whose logits nobody reads (only hidden states are wanted):
    ``logits_to_keep=1`` where the model takes it, so the wide output layer runs over one
    position instead of all of them."""
    return {"logits_to_keep": 1} if _takes_logits_to_keep(_innermost(model)) else {}


def cache_parameter(model: torch.nn.Module) -> Optional[str]:
    """The name under which the model's forward takes a key/value cache (newer transformers:
    ``cache``, older: ``past_key_values``), or None when it takes none."""
    params = _forward_parameters(type(_innermost(model)))
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def _innermost(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP / accelerate wrappers
    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()
    return model


@functools.cache
def _forward_parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in _forward_parameters(type(model))


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

    def terms(
        self, model: torch.nn.Module, batch: dict[str, Batch], reference: Optional[Reference]
    ) -> Iterator[LossTerm]:
        """Yield the loss's weighted terms, each computed when it is asked for."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, Batch], reference: Optional[Reference]) -> LossOutput:
        """The sum of ``terms`` as one scalar (what a single backward pass would minimise)."""
        total: Any = 0.0
        parts: dict[str, float] = {}
        for term in self.terms(model, batch, reference):
            total = total + term.weight * term.value
            parts[term.name] = term.value.item()
            parts.update(term.extra)
        return LossOutput(total, parts)

    def on_step_end(self, state: Any) -> Optional[str]:
        """Return a reason to stop training early, or None."""
        return None

    def trainable_modules(self, model: torch.nn.Module) -> Optional[list[str]]:
        """Names (as ``model.named_modules()`` gives them, on the model before any LoRA adapter)
        of the only modules whose weights train, or None for all of them (the default). Under
        LoRA these modules are the ones that get adapters, in place of ``train.lora.target_modules``."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What the method changes while it trains (plain floats, ints, lists), saved with every
        checkpoint and handed back to ``load_state_dict`` on resume; empty for most methods."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (called on resume, after ``setup``)."""

    def on_train_end(self, model: torch.nn.Module) -> None:
        """Called once on every process after the last optimizer step, before the final model is
        saved, with the unwrapped model (LoRA adapters attached if any): edit its weights here."""


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Method]]:
    return _REGISTRY


def retain_term(
    method_name: str,
    kind: str,
    weight: float,
    model: torch.nn.Module,
    batch: dict[str, Batch],
    reference: Optional[Reference],
    extra: Optional[dict[str, float]] = None,
) -> Iterator[LossTerm]:
    """The retain term of a forget loss, shared by every method that has one: ``kind`` ``none``
    (nothing), ``nll`` (descent on the retain answers, logged as ``retain``) or ``kl`` (forward KL
    to the reference on them, logged as ``retain_kl``); ``extra`` is logged with it."""
    from obliviate.methods import losses

    if kind == "none":
        return
    if "retain" not in batch:
        raise ValueError(f"{method_name} with retain_loss '{kind}' needs a retain set (data.retain)")
    retain = batch["retain"]
    out, labels = forward_answers(model, retain)
    if kind == "nll":
        yield LossTerm("retain", weight, losses.nll(out.logits, labels), dict(extra or {}))
    else:
        kl = losses.forward_kl(reference.answer_logits(retain), out.logits, labels)
        yield LossTerm("retain_kl", weight, kl, dict(extra or {}))


def forget_and_optional_retain(kind: str, forget: list, retain: Optional[list]) -> dict[str, list]:
    """The example groups of a method whose retain term is optional (``retain_loss``): the retain
    rows only when a retain term is chosen and there are some."""
    if kind == "none" or retain is None:
        return {"forget": forget}
    return {"forget": forget, "retain": retain}
