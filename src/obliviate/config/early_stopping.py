"""The ``early_stopping`` block of a run config (the stopper itself is :mod:`obliviate.gating.early_stopping`)."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class EarlyStoppingConfig(BaseModel):
    """The ``early_stopping`` block of a run config, for every method (paths relative to the config file)."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(default=10, gt=0, description="check every N optimizer steps (and at the last step)")
    judge: str = Field(default="refusal", description="judge spec, as for --judge")
    target_rate: float = Field(default=0.1, ge=0, le=1, description="stop once the harmful rate is at or below this")
    prompts: Optional[str] = Field(default=None, description="file of flagged validation prompts; default: the forget prompts")
    prompt_field: str = "prompt"
    val_size: int = Field(default=16, gt=0, description="flagged prompts per check")
    retain_prompts: Optional[str] = Field(default=None, description="file of retain prompts; default: the retain prompts")
    retain_size: int = Field(default=8, ge=0, description="retain prompts per check (0: no utility bound)")
    max_degenerate_rate: Optional[float] = Field(default=0.25, ge=0, le=1)
    min_similarity: Optional[float] = Field(default=0.2, ge=0, le=1, description="ROUGE-L of retain answers to the original's")
    max_refusal_rate: Optional[float] = Field(
        default=None, ge=0, le=1,
        description="over-refusal bound: stop once more than this share of the retain prompts (benign) is refused; "
                    "give benign validation prompts as retain_prompts so the bound reads data nobody trains on")
    min_steps: int = Field(default=0, ge=0, description="never stop before this step")
    patience: int = Field(
        default=1, gt=0,
        description="checks in a row at or below the target before stopping: a small slice's reading is noisy "
        "and need not fall monotonically, so one low reading can be luck",
    )
    max_new_tokens: int = Field(default=48, gt=0)
    batch_size: int = Field(default=16, gt=0)
    restore_best: bool = Field(default=True, description="on a utility stop, restore the best check's weights")
