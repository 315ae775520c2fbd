"""The run config's schema: strict pydantic sections (unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from obliviate.config.early_stopping import EarlyStoppingConfig
from obliviate.errors import UserError
from obliviate.models import DEFAULT_MODEL

LLAMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Strict(BaseModel):
    # allow_inf_nan=False: lr: .inf passes a "> 0" bound and would only show up as a NaN loss later.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RunSection(Strict):
    name: str = "unlearn"
    output_dir: str = "runs"

    @field_validator("name")
    @classmethod
    def _one_folder_name(cls, name: str) -> str:
        # The run folder is <output_dir>/<name>: a name with a path in it would put the run (and
        # what --overwrite clears) anywhere on disk.
        if not name.strip() or name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
            raise ValueError(
                "must be one folder name (not empty, '.' or '..', no '/' or '\\'); "
                "to write the run elsewhere give the folder with --run-dir"
            )
        return name


class ModelSection(Strict):
    name: str = DEFAULT_MODEL
    trust_remote_code: bool = False


class DatasetSpec(Strict):
    """Where a set of examples comes from and which fields hold the prompt and the response.

    ``path`` is a file (.jsonl, .json, .csv, .parquet), a folder saved by ``datasets``, a hub
    dataset id (format ``hf``), or ``builtin:NAME`` for the small sets shipped with obliviate.
    """

    path: str
    format: Literal["auto", "jsonl", "json", "csv", "parquet", "hf"] = "auto"
    prompt_field: str = "prompt"
    response_field: str = "response"
    split: str = "train"
    limit: Optional[int] = Field(default=None, gt=0)


class DataSection(Strict):
    forget: DatasetSpec
    retain: Optional[DatasetSpec] = None
    random_answers: Optional[DatasetSpec] = Field(
        default=None,
        description="pool of answers for the mismatch loss; defaults to the retain responses",
    )
    max_length: int = Field(default=256, gt=8)
    template: Literal["auto", "chat", "plain", "text"] = Field(
        default="auto", description="auto | chat | plain | text (raw text, loss on every token: token blocks)"
    )


class LoRASection(Strict):
    enabled: bool = True
    r: int = Field(default=8, gt=0)
    alpha: float = Field(default=16, gt=0)
    # 0 by default for unlearning: LoRA dropout cost ~13% of a CPU step (mask draws) and kept an
    # extra copy of every adapted input; the seed papers use 0.05 when fine-tuning (configs/finetune_*).
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_LINEAR_MODULES))
    fused: bool = Field(
        default=True,
        description="compute each adapted layer as base + (A x)·s·Bᵀ in one accumulating matrix product (same maths, "
        "fewer passes over memory; obliviate.models.lora_fused); false: peft's own forward",
    )
    init_from: Optional[str] = Field(
        default=None,
        description="continue training this LoRA adapter (an adapter folder or a run folder) instead of a new one; "
        "r, alpha and target modules then come from the adapter (dropout from this section), and the reference model is "
        "model.name with the adapter as loaded",
    )


class SaliencySection(Strict):
    """Train only the weights the forget loss's gradient is largest on (``obliviate.train.saliency``)."""

    top_percent: float = Field(
        default=10.0, gt=0, le=100,
        description="share of weights kept (full fine-tuning), or of the LoRA candidates' weights whose modules get adapters",
    )


class TrainSection(Strict):
    lr: float = Field(default=2e-6, gt=0)
    batch_size: int = Field(default=2, gt=0)
    retain_batch_size: Optional[int] = Field(
        default=None, gt=0, description="retain examples per micro-batch; default: batch_size"
    )
    grad_accum: int = Field(default=1, gt=0)
    max_steps: Optional[int] = Field(default=1000, gt=0)
    epochs: Optional[float] = Field(default=None, gt=0)
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, ge=0)
    seed: int = 42
    save_every: int = Field(default=100, ge=0, description="checkpoint every N steps; 0 = never")
    keep_checkpoints: int = Field(default=2, gt=0)
    log_every: int = Field(default=1, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    gradient_checkpointing: bool = Field(
        default=False,
        description="recompute each layer's activations in the backward pass: far less memory, ~1/3 more compute",
    )
    merge_lora: bool = False
    group_by_length: bool = Field(
        default=False,
        description="put forget rows of similar token length in the same batch (less padding); every row still comes "
        "once per epoch, in an order fixed by seed and epoch",
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="experiment trackers that also get each train_log.jsonl line (a list or a comma-separated string); "
        "their files go to <run>/trackers/",
    )
    lora: LoRASection = Field(default_factory=LoRASection)
    saliency: Optional[SaliencySection] = Field(
        default=None, description="SalUn-style: train only the weights most salient to the forget loss (any method)"
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _tracker_list(cls, value: Any) -> Any:
        # `--set train.report_to=tensorboard,wandb` arrives as one string; a tracker named twice is one tracker.
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            value = list(dict.fromkeys(value))
        return value

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> "TrainSection":
        if self.epochs is not None and "max_steps" not in self.model_fields_set:
            self.__dict__["max_steps"] = None  # epochs given alone: they decide the length
        if self.max_steps is None and self.epochs is None:
            raise ValueError("give train.max_steps or train.epochs")
        return self


class MethodSection(BaseModel):
    """``name`` picks the method; the other keys are that method's options (checked by it)."""

    model_config = ConfigDict(extra="allow")
    name: str = "ga_mismatch_kl"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RunConfig(Strict):
    run: RunSection = Field(default_factory=RunSection)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    method: MethodSection = Field(default_factory=MethodSection)
    train: TrainSection = Field(default_factory=TrainSection)
    early_stopping: Optional[EarlyStoppingConfig] = Field(
        default=None, description="evaluator-driven early stopping for any method (see docs/evaluator_gated.md)"
    )

    # Where relative data paths are resolved from (the config file's folder); not user-facing.
    _base_dir: Path = Path(".")
    # Where the config came from and the line of each key, for messages about it after loading.
    _source: str = "config"
    _lines: dict = {}

    def resolve_path(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self._base_dir / p)

    def check_files(self) -> None:
        """Every local data file the config names exists (hub datasets and ``builtin:`` sets are not
        checked here); otherwise a one-line ``UserError`` naming the config's line and the field."""
        checks: list[tuple[tuple[str, ...], str, str]] = []
        for name in ("forget", "retain", "random_answers"):
            spec = getattr(self.data, name)
            if spec is not None and spec.format != "hf":
                checks.append((("data", name, "path"), spec.path, "data file"))
        if self.early_stopping is not None:
            for name in ("prompts", "retain_prompts"):
                value = getattr(self.early_stopping, name)
                if value is not None:
                    checks.append((("early_stopping", name), value, "prompt file"))
        for key, value, what in checks:
            if value.startswith("builtin:"):
                continue
            path = self.resolve_path(value)
            looks_like_hub_id = "/" in value and not value.startswith((".", "/", "~")) and not path.suffix
            if not path.exists() and not looks_like_hub_id:
                line = self._lines.get(key)
                where = f"{self._source}:{line}" if line else self._source
                raise UserError(f"{where}: {'.'.join(key)}: {what} {path} does not exist")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

