"""Run configuration: strict pydantic models loaded from YAML plus ``key=value`` overrides.

Every problem is reported on one line that names the file, the line and the field and says what
would be valid, before any model is loaded. Unknown keys are errors with a close-match hint.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from obliviate.early_stopping import EarlyStoppingConfig
from obliviate.errors import UserError

DEFAULT_MODEL = "smollm2-135m-instruct"
LLAMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunSection(Strict):
    name: str = "unlearn"
    output_dir: str = "runs"


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
        "fewer passes over memory; obliviate.lora_fused); false: peft's own forward",
    )
    init_from: Optional[str] = Field(
        default=None,
        description="continue training this LoRA adapter (an adapter folder or a run folder) instead of a new one; "
        "r, alpha and target modules then come from the adapter (dropout from this section), and the reference model is "
        "model.name with the adapter as loaded",
    )


class TrainSection(Strict):
    lr: float = Field(default=2e-6, gt=0)
    batch_size: int = Field(default=2, gt=0)
    retain_batch_size: Optional[int] = Field(
        default=None, gt=0, description="retain (normal) examples per micro-batch; default: batch_size"
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
    lora: LoRASection = Field(default_factory=LoRASection)

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

    def resolve_path(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self._base_dir / p)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ----------------------------------------------------------------------------- loading


def _line_index(text: str) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (key.value,)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def _known_keys(model: type[BaseModel], path: tuple) -> list[str]:
    """Field names valid at ``path`` (used to suggest a close match for a typo)."""
    current: Any = model
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
        else:
            return []
    return list(getattr(current, "model_fields", {}).keys())


def format_validation_error(
    err: ValidationError, source: str, lines: dict[tuple, int], model: type[BaseModel], prefix: tuple = ()
) -> str:
    """One line for the first problem: ``source:LINE: field.path: what is wrong; what is valid``."""
    first = err.errors()[0]
    loc = prefix + tuple(first["loc"])
    dotted = ".".join(str(p) for p in loc)
    line = None
    for depth in range(len(loc), 0, -1):
        line = lines.get(loc[:depth])
        if line:
            break
    where = f"{source}:{line}" if line else source
    if first["type"] == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        known = _known_keys(model, loc[len(prefix):-1]) if model else []
        hint = difflib.get_close_matches(key, known, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else (f"; valid keys: {', '.join(known)}" if known else "")
        parent_name = ".".join(str(p) for p in parent) or "top level"
        return f"{where}: unknown key '{key}' in {parent_name}{suggestion}"
    got = first.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    message = first["msg"].replace("Value error, ", "")
    return f"{where}: {dotted}: {message}{got_text}"


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"override '{text}' must look like key.path=value, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise UserError(f"override '{text}': {key} is not a section")
            node = child
        node[keys[-1]] = value
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None, data: dict | None = None) -> RunConfig:
    """Read, override and validate a run config; every error is a one-line ``UserError``."""
    overrides = overrides or []
    text, source, base_dir = "", "config", Path(".")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} does not exist")
        text = path.read_text()
        source, base_dir = str(path), path.parent
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise UserError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    data = dict(data or {})
    if not isinstance(data, dict):
        raise UserError(f"{source}: the top level must be a mapping of sections (run, model, data, method, train)")
    apply_overrides(data, overrides)
    lines = _line_index(text)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, source, lines, RunConfig)) from None
    config._base_dir = base_dir
    from obliviate.methods import get_method_class  # late import: methods import config

    try:
        method_class = get_method_class(config.method.name)
    except UserError as err:
        line = lines.get(("method", "name"))
        raise UserError(f"{source}:{line}: {err}" if line else f"{source}: {err}") from None
    try:
        method_class.Config.model_validate(config.method.options())
    except ValidationError as err:
        raise UserError(
            format_validation_error(err, source, lines, method_class.Config, prefix=("method",))
        ) from None
    return config
