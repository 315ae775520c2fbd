"""The relearning attack: how quickly does a little fine-tuning bring the forgotten back?

An attacker fine-tunes the unlearned model on a small part of the forget set (the *attack* split)
and measures the rest of it (the *rest* split, never trained on). If the rest comes back after a
few steps, the knowledge was hidden, not removed (Lynch et al. 2024, arXiv 2402.16835; Deeb and
Roger 2024, arXiv 2410.08827). :func:`split_for_relearning` makes the two disjoint splits;
:func:`relearn` fine-tunes a copy and records the caller's metrics along the way.

The fine-tuning is the project's one training loop (``run_training``) with the ``finetune``
method (plain NLL on the answers) under LoRA, on a throw-away run folder: a stop hook that never
stops takes the measurements at the asked steps, so no second loop exists to drift from the first.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.io import jsonl_text

Measure = Callable[[torch.nn.Module], dict[str, Any]]


@dataclass
class RelearnResult:
    """``curve``: one entry per measure point, ``{"step", "tokens", **metrics}``, step 0 first
    (``tokens``: answer and prompt tokens trained on up to that step). ``tokens`` and ``seconds``:
    the whole run's tokens and training wall time (the measurements' own time left out).
    ``model``: the relearned copy (LoRA adapter attached), for further evaluation."""

    curve: list[dict[str, Any]]
    tokens: int
    seconds: float
    steps: int
    model: Any = None


def split_for_relearning(
    rows: Sequence[Example], size: Union[int, float], seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Split the forget rows into (attack, rest): disjoint, the same for the same seed.

    ``size`` is the attack split's row count (an int >= 1) or its share of the rows (a float
    in (0, 1), rounded, at least one row). The rest keeps at least one row, since it is where
    the attack is measured. Both splits keep the rows' original order.
    """
    n = len(rows)
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise UserError(f"relearning split size: {size!r} is not a number; give a row count (int) or a share in (0, 1)")
    if isinstance(size, float):
        if not 0 < size < 1:
            raise UserError(f"relearning split size: share {size} is not in (0, 1); give e.g. 0.1, or a row count")
        count = max(1, round(size * n))
    else:
        count = size
    if not 1 <= count < n:
        raise UserError(
            f"relearning split size: {count} attack rows out of {n}; give between 1 and {n - 1} so that both splits have rows"
        )
    chosen = set(np.random.default_rng(seed).permutation(n)[:count].tolist())
    attack = [row for i, row in enumerate(rows) if i in chosen]
    rest = [row for i, row in enumerate(rows) if i not in chosen]
    return attack, rest


def relearn(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[Example],
    *,
    steps: int,
    measure: Measure,
    measure_at: Sequence[int] = (),
    lr: float = 1e-4,
    lora_r: int = 8,
    batch_size: int = 4,
    seed: int = 0,
    template: str = "auto",
    max_length: int = 256,
    precision: str = "auto",
    target_modules: Optional[Sequence[str]] = None,
) -> RelearnResult:
    """Fine-tune a copy of ``model`` on ``rows`` for ``steps`` steps; measure it along the way.

    The copy (any LoRA adapter of ``model`` merged into it) gets a new LoRA adapter of rank
    ``lora_r`` (alpha 2r, no dropout) on ``target_modules`` (default: the Llama-style linear
    layers) and is trained with plain NLL on the answers, AdamW at ``lr`` with no warm-up or
    decay, ``batch_size`` rows a step. ``measure(model)`` runs on the copy (in eval mode) before
    training (step 0) and after each step listed in ``measure_at``; it returns a dict of metrics
    (without the keys ``step`` or ``tokens``). The caller's model and tokenizer are not changed.
    """
    from obliviate.config import load_config
    from obliviate.methods import build_method
    from obliviate.models.quantise import merged_copy
    from obliviate.train.loop import TrainData, TrainState, run_training

    if not rows:
        raise UserError("relearning: no rows to train on; give at least one (prompt, answer) row")
    if steps < 1:
        raise UserError(f"relearning steps: {steps}; give 1 or more")
    points = sorted(set(int(s) for s in measure_at))
    outside = [s for s in points if not 1 <= s <= steps]
    if outside:
        raise UserError(f"relearning measure_at: step {outside[0]} is outside 1..{steps} (steps={steps})")

    attacked = merged_copy(model)
    curve: list[dict[str, Any]] = []
    tokens = 0
    measuring = 0.0

    def take(step: int, network: torch.nn.Module) -> None:
        nonlocal measuring
        started = time.perf_counter()
        was_training = network.training
        network.eval()
        metrics = dict(measure(network))
        network.train(was_training)
        clash = {"step", "tokens"} & metrics.keys()
        if clash:
            raise ValueError(f"measure returned the reserved key {sorted(clash)[0]!r}; rename that metric")
        curve.append({"step": step, "tokens": tokens, **metrics})
        measuring += time.perf_counter() - started

    def at_step_end(state: TrainState) -> None:
        nonlocal tokens
        tokens += int(state.record["tokens"])
        if state.step in points:
            take(state.step, state.model)
        return None  # never stops the run

    take(0, attacked)
    train: dict[str, Any] = {
        "lr": lr, "max_steps": steps, "batch_size": batch_size, "seed": seed, "save_every": 0,
        "warmup_steps": 0, "weight_decay": 0.0, "precision": precision, "log_every": steps,
        "lora": {"enabled": True, "r": lora_r, "alpha": 2 * lora_r, "dropout": 0.0},
    }
    if target_modules is not None:
        train["lora"]["target_modules"] = list(target_modules)
    name = getattr(getattr(attacked, "config", None), "_name_or_path", "") or "relearn-model"
    with tempfile.TemporaryDirectory(prefix="obliviate-relearn-") as folder:
        # The loop writes a run folder (config, log, adapter) and its config names a data file;
        # both are throw-away here: the rows are handed over in memory.
        attack_file = Path(folder) / "attack.jsonl"
        attack_file.write_text(jsonl_text(row.to_dict() for row in rows), encoding="utf-8")
        config = load_config(None, data={
            "run": {"name": "relearn"},
            "model": {"name": str(name)},
            "data": {"forget": {"path": str(attack_file)}, "template": template, "max_length": max_length},
            "method": {"name": "finetune"},
            "train": train,
        })
        started = time.perf_counter()
        with warnings.catch_warnings():
            # peft notes it saves the output layer with an adapter placed on it; that saved
            # adapter is thrown away with the folder.
            warnings.filterwarnings("ignore", message=".*save_embedding_layers.*")
            result = run_training(
                config, Path(folder) / "run", model=attacked, tokenizer=tokenizer, method=build_method("finetune", {}),
                data=TrainData(forget=list(rows)), stop_hooks=[at_step_end], progress=False, log=lambda message: None,
            )
        seconds = time.perf_counter() - started - measuring
    return RelearnResult(curve=curve, tokens=tokens, seconds=max(seconds, 0.0), steps=result.steps, model=result.model)
