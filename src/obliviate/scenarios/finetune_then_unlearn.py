"""The run configs of a scenario that first fine-tunes data into a model, then unlearns part of it
(copyright, privacy): one way to build both stages, so the scenarios cannot drift apart.

The fine-tuning stage is the papers' LoRA defaults with the recipe's ``finetune`` sections laid
over them, trained on ``data/train.jsonl``. The unlearning stage reads the fine-tuning stage's
template and length (a model is scored and unlearned in the prompt format it learned the data in)
and starts either from the merged fine-tuned model with a new adapter, or from the fine-tuning
adapter itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from obliviate.config import RunConfig, load_config
from obliviate.errors import UserError
from obliviate.models import DEFAULT_MODEL
from obliviate.train.finetune import PAPER_FINETUNE_DEFAULTS, deep_merge, scaled_warmup

UnlearnStart = Literal["merged", "adapter"]


def finetune_then_unlearn_configs(
    *,
    model: Optional[str],
    finetune: dict[str, Any],
    unlearn: dict[str, Any],
    out_dir: Path,
    source: str,
    default_method: str,
    learned_what: str,
    method_defaults: Mapping[str, Mapping[str, Any]] | None = None,
    unlearn_start: UnlearnStart = "merged",
) -> tuple[RunConfig, RunConfig]:
    """The fine-tuning and unlearning run configs (validated; no model is loaded).

    ``model``: the recipe's model (``None``: the default model); ``finetune``/``unlearn``: the
    recipe's run-config sections; ``default_method``: the unlearning method when the recipe names
    none; ``method_defaults``: per method name, options it gets unless the recipe sets them;
    ``learned_what``: ends the message when the two stages' templates differ ("the format it
    ``learned_what``"); ``unlearn_start``: ``merged`` (a new adapter on the merged fine-tuned
    model) or ``adapter`` (the base model with the fine-tuning adapter trained further). A bad
    section is a one-line ``UserError`` naming ``source`` and the stage.
    """
    model = model or DEFAULT_MODEL
    data_dir = out_dir / "data"
    finetune = deep_merge(PAPER_FINETUNE_DEFAULTS, finetune)
    finetune = deep_merge(finetune, {
        "model": {"name": model},
        "data": {"forget": {"path": str(data_dir / "train.jsonl")}},
        "method": {"name": "finetune"},
    })
    template = finetune.get("data", {}).get("template", "plain")
    unlearn = deep_merge({
        "run": {"name": "unlearn"},
        "method": {"name": default_method},
        "data": {"template": template, "max_length": finetune.get("data", {}).get("max_length", 512)},
        "train": {"save_every": 0},
    }, unlearn)
    for key, value in (method_defaults or {}).get(unlearn["method"].get("name"), {}).items():
        unlearn["method"].setdefault(key, value)
    if unlearn_start == "adapter":  # the base model, with the fine-tuning adapter trained further
        start = {"model": {"name": model}, "train": {"lora": {"enabled": True, "init_from": str(out_dir / "finetune")}}}
    else:  # a new adapter on the merged fine-tuned weights
        start = {"model": {"name": str(out_dir / "finetune" / "model")}}
    unlearn = deep_merge(unlearn, {
        **start,
        "data": {"forget": {"path": str(data_dir / "forget.jsonl")}, "retain": {"path": str(data_dir / "retain.jsonl")}},
    })
    configs = []
    for stage, data in (("finetune", finetune), ("unlearn", unlearn)):
        try:
            configs.append(load_config(None, [], data=data))
        except UserError as err:
            raise UserError(f"{source}, section {stage}: {str(err).removeprefix('config: ').removeprefix('config:')}") from None
    ft, ul = configs
    if ft.data.template != ul.data.template:
        raise UserError(f"{source}: unlearn.data.template ({ul.data.template}) differs from finetune.data.template "
                        f"({ft.data.template}); the model must be unlearned in the format it {learned_what}")
    if unlearn_start == "adapter":
        if not ft.train.lora.enabled:
            raise UserError(f"{source}: unlearn_start is 'adapter' but the fine-tuning stage trains all weights "
                            "(finetune.train.lora.enabled: false); use unlearn_start: merged")
        ft.train.merge_lora = False  # the adapter itself is what unlearning continues
    elif ft.train.lora.enabled:
        ft.train.merge_lora = True  # the unlearning stage starts from the merged fine-tuned model
    return ft, ul


def scale_finetune_warmup(ft_config: RunConfig, finetune: dict[str, Any], train_size: int) -> None:
    """Unless the recipe's ``finetune.train`` sets ``warmup_steps``, fit the papers' warm-up to
    this (shorter) run of ``train_size`` rows."""
    from obliviate.train.loop import total_steps

    if "warmup_steps" not in (finetune.get("train") or {}):
        ft_config.train.warmup_steps = scaled_warmup(total_steps(ft_config, train_size, 1))


def mismatch_answers(ul_config: RunConfig, default: list[str]) -> list[str]:
    """The random answers of mismatch methods (``ga_mismatch_kl``): the pool the recipe names
    (``unlearn.data.random_answers``, e.g. ``builtin:refusal_answers``), or else ``default``."""
    if ul_config.data.random_answers is None:
        return default
    from obliviate.data.loaders import load_spec

    return [e.response for e in load_spec(ul_config.data.random_answers, ul_config, "unlearn.data.random_answers",
                                          require_response=True)]
