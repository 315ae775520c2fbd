"""The Python API: unlearn, evaluate and configure from a notebook in a few lines (docs/api.md).

``obliviate.unlearn(...)`` trains and writes a run folder, ``obliviate.evaluate(...)`` runs a suite,
``obliviate.load_config(...)`` builds a validated run config, and ``obliviate.tune_memory()`` applies
the allocator settings the command line applies (call it before importing torch). The command line
is a thin layer over these functions.

Importing this module loads no torch: the heavy imports happen inside the functions, so
``tune_memory()`` can still come first.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from obliviate.errors import UserError

if TYPE_CHECKING:
    from obliviate.config import RunConfig
    from obliviate.data.examples import Example

__all__ = ["SUITES", "UnlearnResult", "evaluate", "in_context_baseline", "load_config", "tune_memory", "unlearn"]

#: The evaluation suites ``evaluate`` runs.
SUITES = ("harmful", "copyright", "tofu", "lm-eval", "mia", "muse", "robustness")
#: The data sets of a run, as ``unlearn`` takes them and as ``data.<name>`` in the config.
DATA_ROLES = ("forget", "retain", "random_answers")
#: How many built-in benign prompts the harmful suite answers when none are given.
DEFAULT_BENIGN_PROMPTS = 32

PathLike = Union[str, "os.PathLike[str]"]


def tune_memory() -> dict[str, bool]:
    """Apply the CPU allocator settings of :mod:`obliviate.memory_tuning`; returns what was applied.

    Call it before anything imports torch (PyTorch reads ``THP_MEM_ALLOC_ENABLE`` once, at its
    first allocation). ``import obliviate`` changes nothing by itself; the ``obliviate`` command
    calls this first thing.
    """
    from obliviate.memory_tuning import tune

    return tune()


# ----------------------------------------------------------------------------------------------
# Configs


def load_config(
    path: Union[PathLike, Mapping[str, Any], "RunConfig", None] = None,
    overrides: Sequence[str] = (),
    **sections: Any,
) -> "RunConfig":
    """A validated run config from a YAML file, a dict or a ``RunConfig``, with changes on top.

    ``sections`` are the config's sections as keywords (``train={"lr": 1e-4}``), merged key by key
    over ``path``; ``overrides`` are ``"key.path=value"`` strings as the command line takes them,
    applied last. A relative path given as a keyword or override is taken from the current
    directory (inside a YAML file, from the file's folder). Every problem is a one-line
    ``UserError`` naming the file, the line and the field.
    """
    if isinstance(overrides, str):
        raise UserError("overrides must be a list of 'key.path=value' strings, e.g. ['train.lr=1e-4']")
    from obliviate.config import RunConfig
    from obliviate.config import load_config as read_config

    changes = [*_section_overrides(sections), *overrides]
    if path is None:
        return read_config(None, changes, data={})
    if isinstance(path, RunConfig):
        config = read_config(None, changes, data=path.model_dump(mode="json", exclude_unset=True))
        config._base_dir = path._base_dir  # relative paths of the original stay relative to its file
        return config
    if isinstance(path, Mapping):
        return read_config(None, changes, data=copy.deepcopy(dict(path)))
    if isinstance(path, (str, os.PathLike)):
        return read_config(Path(path), changes)
    raise UserError(
        f"config must be a path to a YAML file, a dict of sections or a RunConfig, not {type(path).__name__}"
    )


def _override(keys: Sequence[str], value: Any) -> str:
    """``keys=value`` with the value written so that the override parser reads back exactly ``value``."""
    import yaml

    value = _plain(value, keys)
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=2**31 - 1, allow_unicode=True)
    except yaml.YAMLError:
        raise UserError(f"{'.'.join(keys)}: {value!r} is not a plain value (text, number, bool, list or dict)") from None
    if text.endswith("\n...\n"):  # the document-end marker PyYAML adds after a bare scalar
        text = text[: -len("\n...\n")]
    return f"{'.'.join(keys)}={text.rstrip(chr(10))}"


def _plain(value: Any, keys: Sequence[str]) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple):
        return [_plain(v, keys) for v in value]
    if isinstance(value, list):
        return [_plain(v, keys) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v, [*keys, str(k)]) for k, v in value.items()}
    return value


def _section_overrides(sections: Mapping[str, Any]) -> list[str]:
    """Keyword sections as overrides, one per leaf: ``train={"lr": 1e-4, "lora": {"r": 4}}`` gives
    ``train.lr=0.0001`` and ``train.lora.r=4``, so they merge into the config key by key."""
    out: list[str] = []

    def walk(keys: list[str], value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str) or not key or "." in key or "=" in key:
                    raise UserError(f"{'.'.join(keys)}: {key!r} is not a setting name")
                walk([*keys, key], item)
        else:
            out.append(_override(keys, value))

    for name, value in sections.items():
        walk([name], value)
    return out


# ----------------------------------------------------------------------------------------------
# Data given in memory


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _rows(value: Any, role: str) -> list[Any]:
    """The rows of an in-memory data set: a list (of dicts), a ``datasets.Dataset`` or a pandas
    ``DataFrame``."""
    kind = type(value).__name__
    if kind in ("DatasetDict", "IterableDatasetDict"):
        raise UserError(f"{role}: a {kind} holds several splits; pick one, e.g. {role}=dataset['train']")
    if isinstance(value, Mapping):
        raise UserError(f"{role}: expected a list of rows (dicts with a prompt and a response), not one dict")
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        return list(value.to_dict(orient="records"))
    if isinstance(value, (bytes, bytearray)):
        raise UserError(f"{role}: expected a file path, a datasets.Dataset or a list of dicts, not bytes")
    try:
        return list(value)  # a datasets.Dataset yields one dict per row
    except TypeError:
        raise UserError(f"{role}: expected a file path, a datasets.Dataset or a list of dicts, not {kind}") from None


def _checked(
    rows: Sequence[Any], role: str, *, prompt_field: str, response_field: str, require_response: bool = True,
    limit: Optional[int] = None, setting: Optional[str] = None,
) -> list["Example"]:
    """Rows checked the way a file's rows are; a bad one names ``role[index]`` and the field."""
    from obliviate.data.loaders import examples_from_rows

    if not rows:
        raise UserError(f"{role}: no rows; give at least one")
    return examples_from_rows(
        ((f"{role}[{i}]", row) for i, row in enumerate(rows)), prompt_field=prompt_field,
        response_field=response_field, require_response=require_response, limit=limit, role=role, setting=setting,
    )


# ----------------------------------------------------------------------------------------------
# Unlearning


@dataclass
class UnlearnResult:
    """What :func:`unlearn` returns: the run folder, the trained model and the run's figures.

    ``model`` is the trained model object (LoRA adapters attached when the run used LoRA, so
    ``model.disable_adapter()`` gives the original back); ``model_dir`` holds the same model on disk.
    """

    run_dir: Path
    model: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    config: "RunConfig" = field(repr=False)
    steps: int = 0
    stop_reason: str = ""
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    peak_memory_mb: float = 0.0
    model_dir: Optional[Path] = None


def _is_model_object(value: Any) -> bool:
    import torch

    return isinstance(value, torch.nn.Module)


def unlearn(
    config: Union[PathLike, Mapping[str, Any], "RunConfig", None] = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    forget: Any = None,
    retain: Any = None,
    random_answers: Any = None,
    run_dir: Optional[PathLike] = None,
    overwrite: bool = False,
    resume: bool = False,
    overrides: Sequence[str] = (),
    progress: bool = True,
    log: Optional[Callable[[str], None]] = print,
    **sections: Any,
) -> UnlearnResult:
    """Unlearn ``forget`` (keeping ``retain``) and write a run folder; returns the trained model.

    Args:
        config: a YAML file, a dict of sections or a ``RunConfig`` (default: every default, which
            is the ``ga_mismatch_kl`` method with LoRA on the default model).
        model: a model name or path (alias, folder, ``.gguf``, hub id), a loaded model object
            (then ``tokenizer`` too; it is trained in place), or a dict for the config's model section.
        forget, retain, random_answers: a data file (any format ``data.<name>.path`` takes), a
            ``datasets.Dataset``, a pandas ``DataFrame`` or a list of dicts with a prompt and a
            response (``random_answers`` also takes a list of strings). Rows given in memory are
            checked like a file's rows and written to ``<run_dir>/data/<name>.jsonl``, which the
            run's ``config.yaml`` names, so the run can be resumed or repeated.
        run_dir: the run folder (default: ``<run.output_dir>/<run.name>``).
        overwrite, resume: replace an existing run folder, or continue it from its last checkpoint.
        overrides: ``"key.path=value"`` strings, applied after ``sections``.
        progress: show a progress bar; ``log``: where status lines go (``None``: nowhere).
        sections: config sections as keywords (``method={"name": "grad_diff"}``,
            ``train={"lr": 1e-4, "max_steps": 50}``), merged key by key over ``config``.

    Every input is checked before a model loads; a problem is a one-line ``UserError``.
    """
    if overwrite and resume:
        raise UserError("overwrite and resume exclude each other")
    if isinstance(overrides, str):
        raise UserError("overrides must be a list of 'key.path=value' strings, e.g. ['train.lr=1e-4']")
    sections = dict(sections)
    if isinstance(model, Mapping):  # the config's model section, e.g. {"trust_remote_code": True}
        sections["model"] = model
        model = None
    late: list[str] = []  # overrides built from the arguments: applied last, so they win
    model_object = None
    if model is None:
        if tokenizer is not None:
            raise UserError("tokenizer= goes with a model object (model=); a model name brings its own tokenizer")
    elif _is_path(model):
        if tokenizer is not None:
            raise UserError("tokenizer= goes with a model object; a model name or path brings its own tokenizer")
        late.append(_override(["model", "name"], os.fspath(model)))
    elif _is_model_object(model):
        if tokenizer is None:
            raise UserError("a model object needs its tokenizer: pass tokenizer=")
        model_object = model
        name = getattr(model, "name_or_path", "") or ""
        if name:  # recorded in config.yaml (and by peft as the adapter's base model)
            late.append(_override(["model", "name"], name))
    else:
        raise UserError(
            f"model must be a name or path, a model object (a transformers model) or a dict of model settings, "
            f"not {type(model).__name__}"
        )

    in_memory: dict[str, list[Any]] = {}
    for role, value in (("forget", forget), ("retain", retain), ("random_answers", random_answers)):
        if value is None:
            continue
        if _is_path(value):
            late.append(_override(["data", role, "path"], os.fspath(value)))
            continue
        rows = _rows(value, role)
        if role == "random_answers" and any(isinstance(r, str) for r in rows):
            rows = [{"response": r} if isinstance(r, str) else r for r in rows]
            late.append(_override(["data", role, "response_field"], "response"))
        in_memory[role] = rows

    from obliviate.io import atomic_write_text, jsonl_text

    texts: dict[str, str] = {role: jsonl_text(rows) for role, rows in in_memory.items()}
    with tempfile.TemporaryDirectory(prefix="obliviate-data-") as staging:
        # The rows are staged as JSONL so that the config names real files and the run reads them
        # back exactly as a resumed run will.
        for role, text in texts.items():
            staged = Path(staging) / f"{role}.jsonl"
            staged.write_text(text, encoding="utf-8")
            late += [_override(["data", role, "path"], str(staged)), _override(["data", role, "format"], "jsonl")]
        cfg = load_config(config, [*overrides, *late], **sections)
        for role, rows in in_memory.items():
            spec = getattr(cfg.data, role)
            _checked(
                rows, role, prompt_field=spec.response_field if role == "random_answers" else spec.prompt_field,
                response_field=spec.response_field, setting=f"data.{role}.",
            )
        target = Path(run_dir) if run_dir is not None else Path(cfg.run.output_dir) / cfg.run.name
        from obliviate.train.run_dir import check_run_dir, config_inputs, holds_a_run, is_first_rank

        # The rows given in memory are staged outside the run folder here: every input is checked.
        check_run_dir(target, inputs=config_inputs(cfg), resume=resume)
        if is_first_rank() and holds_a_run(target) and not (overwrite or resume):
            raise UserError(f"run folder {target} already exists; pass overwrite=True to replace it or resume=True to continue it")
        from obliviate.methods import build_method
        from obliviate.train.loop import load_train_data

        method = build_method(cfg.method.name, cfg.method.options())
        data = load_train_data(cfg, method)  # every data error surfaces before a model loads
    written: dict[Path, str] = {}
    for role, text in texts.items():
        final = (target / "data" / f"{role}.jsonl").resolve()
        if resume and final.is_file() and final.read_text(encoding="utf-8") != text:
            raise UserError(f"cannot resume {target}: the {role} rows differ from {final}, the ones the run trained on")
        setattr(cfg.data, role, getattr(cfg.data, role).model_copy(update={"path": str(final)}))
        written[final] = text

    def write_data(_run_dir: Path) -> None:
        for path, text in written.items():
            atomic_write_text(path, text)

    from obliviate.models.loading import load_model_and_tokenizer, prepare_tokenizer
    from obliviate.train.loop import run_training

    if model_object is None:
        model_object, tokenizer = load_model_and_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code)
    else:
        tokenizer = prepare_tokenizer(tokenizer, "right")
    result = run_training(
        cfg, target, resume=resume, overwrite=overwrite, model=model_object, tokenizer=tokenizer, method=method,
        data=data, progress=progress, log=log or (lambda message: None), on_run_dir=write_data if written else None,
        own_data=list(written),
    )
    return UnlearnResult(
        run_dir=result.run_dir, model=result.model, tokenizer=tokenizer, config=cfg, steps=result.steps,
        stop_reason=result.stop_reason, seconds=result.seconds, tokens_per_s=result.tokens_per_s,
        peak_memory_mb=result.peak_memory_mb, model_dir=result.model_dir,
    )


# ----------------------------------------------------------------------------------------------
# The in-context baseline


def in_context_baseline(
    model: Optional[PathLike] = None,
    *,
    forget: Any = None,
    run_dir: Optional[PathLike] = None,
    instruction: Optional[str] = None,
    max_targets: int = 20,
    prompt_field: str = "prompt",
    overwrite: bool = False,
) -> Path:
    """Write a run folder for the in-context baseline: no training, no weight changed.

    The folder's ``model/in_context.json`` names the base model and holds a system prompt: an
    instruction not to reveal or discuss the forget targets (the forget prompts, deduplicated, the
    first ``max_targets``). Loading the folder (``evaluate(run_dir)``, ``obliviate eval``,
    :func:`obliviate.models.loading.load_trained`) gives the base model with every prompt opened by
    that system prompt, so a report can set it beside real unlearning runs.

    Args:
        model: a model name or path (alias, folder, ``.gguf``, hub id, an unlearned run folder);
            default: the default model. It is loaded at evaluation, not here.
        forget: a data file, a list of dicts, a list of prompt strings or a ``datasets.Dataset``.
        run_dir: the run folder (default: ``runs/in_context``).
        instruction: replaces the default instruction; ``{targets}`` marks where the list of
            targets goes (default: after the instruction).
        max_targets: how many distinct forget prompts the instruction names.
        overwrite: replace an existing run folder.

    Returns the run folder.
    """
    from obliviate.models import DEFAULT_MODEL
    from obliviate.models.in_context import build_system_prompt, write_in_context_model

    if model is not None and not _is_path(model):
        raise UserError(
            f"model must be a model name or path (the folder records it, no weights are copied), not {type(model).__name__}"
        )
    if forget is None:
        raise UserError("forget= is required: the prompts the instruction tells the model not to reveal")
    if isinstance(max_targets, bool) or not isinstance(max_targets, int):
        raise UserError(f"max_targets must be a whole number, not {max_targets!r}")
    prompts = _prompts(forget, "forget", prompt_field)
    system_prompt = build_system_prompt(prompts, instruction, max_targets)
    base = DEFAULT_MODEL if model is None else os.fspath(model)
    if Path(base).expanduser().exists():  # a local path is recorded absolute: the folder may be read from elsewhere
        base = str(Path(base).expanduser().resolve())
    target = Path(run_dir) if run_dir is not None else Path("runs") / "in_context"

    import yaml

    from obliviate.io import atomic_write_json, atomic_write_text, jsonl_text
    from obliviate.train.run_dir import check_run_dir, environment, prepare_run_dir, release_run_dir

    inputs = [("model", Path(base))] if Path(base).exists() else []
    if _is_path(forget):
        inputs.append(("forget", Path(forget).expanduser()))
    check_run_dir(target, inputs=inputs)
    target = prepare_run_dir(target, overwrite=overwrite)
    try:
        if _is_path(forget):
            forget_path = Path(forget).expanduser().resolve()
        else:  # rows given in memory are kept, so that config.yaml names a real file
            forget_path = (target / "data" / "forget.jsonl").resolve()
            atomic_write_text(forget_path, jsonl_text([{prompt_field: p} for p in prompts]))
        config = {
            "model": {"name": base},
            "data": {"forget": {"path": str(forget_path), "prompt_field": prompt_field}},
            "method": {"name": "in_context", "instruction": instruction, "max_targets": max_targets},
        }
        atomic_write_text(target / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        atomic_write_json(target / "env.json", environment(seed=0, precision="float32", extra={"method": "in_context"}))
        write_in_context_model(target / "model", base, system_prompt)
    finally:
        release_run_dir(target)
    return target


# ----------------------------------------------------------------------------------------------
# Evaluation


def _prompts(value: Any, role: str, prompt_field: str) -> list[str]:
    """Prompts from a file, a list of strings, a list of dicts or a ``datasets.Dataset``."""
    if value is None:
        return []
    if _is_path(value):
        from obliviate.data.loaders import load_examples

        return [
            e.prompt for e in load_examples(value, prompt_field=prompt_field, role=role, require_response=False, setting="")
        ]
    rows = [{prompt_field: r} if isinstance(r, str) else r for r in _rows(value, role)]
    return [e.prompt for e in _checked(rows, role, prompt_field=prompt_field, response_field="", require_response=False, setting="")]


def _pairs(value: Any, role: str, prompt_field: str, response_field: str, limit: Optional[int]) -> list["Example"]:
    """Prefix/continuation pairs from a file or rows in memory."""
    if _is_path(value):
        from obliviate.data.loaders import load_examples

        if not Path(value).exists():
            raise UserError(f"{role}: data file {value} does not exist")
        return load_examples(
            value, prompt_field=prompt_field, response_field=response_field, limit=limit, role=role, setting=""
        )
    return _checked(
        _rows(value, role), role, prompt_field=prompt_field, response_field=response_field, limit=limit, setting=""
    )


def _texts(value: Any, role: str) -> list[str]:
    if _is_path(value):
        from obliviate.eval.copyright import read_general_texts

        return read_general_texts(value)
    texts = _rows(value, role)
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{role}[{index}]: expected a non-empty string (got {text!r})")
    if not texts:
        raise UserError(f"{role}: no texts; give at least one")
    return texts


def _model_for_eval(model: Any, tokenizer: Any, trust_remote_code: bool) -> tuple[Any, Any, str]:
    """(model, tokenizer, name) from a run result, a model object, or anything ``load_trained`` takes."""
    if isinstance(model, UnlearnResult):
        return model.model, model.tokenizer, str(model.run_dir)
    if model is None or _is_path(model):
        if tokenizer is not None:
            raise UserError("tokenizer= goes with a model object; a model name, folder or run folder brings its own")
        from obliviate.models.loading import load_trained

        loaded, loaded_tokenizer = load_trained(model, trust_remote_code=trust_remote_code)
        return loaded, loaded_tokenizer, "default" if model is None else os.fspath(model)
    if _is_model_object(model):
        if tokenizer is None:
            raise UserError("a model object needs its tokenizer: pass tokenizer=")
        return model, tokenizer, getattr(model, "name_or_path", "") or type(model).__name__
    raise UserError(
        "model must be a name or path (model folder, adapter folder, run folder, alias), a model object or "
        f"the result of obliviate.unlearn, not {type(model).__name__}"
    )


def evaluate(
    model: Any = None,
    *,
    suite: str = "harmful",
    tokenizer: Any = None,
    run_dir: Optional[PathLike] = None,
    tag: str = "eval",
    forget: Any = None,
    harmful: Any = None,
    benign: Any = None,
    unseen: Any = None,
    retain: Any = None,
    general: Any = None,
    judge: Any = "refusal",
    prompt_field: str = "prompt",
    response_field: str = "response",
    max_new_tokens: Optional[int] = None,
    template: str = "plain",
    bleu_threshold: Optional[float] = None,
    bleu_quantile: float = 0.99,
    limit: Optional[int] = None,
    benign_prompts: int = 16,
    embed: bool = True,
    tofu_dir: Optional[PathLike] = None,
    forget_split: str = "forget10",
    retain_result: Optional[PathLike] = None,
    retain_authors: Optional[int] = None,
    batch_size: int = 16,
    tasks: Union[str, Sequence[str], None] = None,
    include_path: Union[PathLike, Sequence[PathLike], None] = None,
    num_fewshot: Optional[int] = None,
    holdout: Any = None,
    reference_model: Any = None,
    forget_qa: Any = None,
    retain_qa: Any = None,
    mode: str = "harmful",
    attacks: Union[str, Sequence[str], None] = None,
    original_model: Any = None,
    retain_model: Any = None,
    max_items: Optional[int] = None,
    relearn_steps: Optional[Sequence[int]] = None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run an evaluation suite on a model; returns the suite's result (``result["metrics"]``).

    ``model``: the result of :func:`unlearn`, a loaded model object (with ``tokenizer``), or a
    name or path: run folder, LoRA adapter folder (loaded on its base), model folder, alias, hub
    id (default: the default model). With ``run_dir`` the result is also written there:
    ``eval/<suite>_<tag>.json`` and ``generations/*.jsonl`` (``result["path"]`` is the JSON file).

    Data (each a file, a ``datasets.Dataset``, a list of dicts, or for prompts a list of strings):

    - ``suite="harmful"``: ``forget`` (the prompts the model unlearned) and/or ``harmful``
      (held-out harmful prompts), ``benign`` (default: obliviate's built-in benign prompts) and
      optional ``retain`` prompts; ``judge`` is a judge spec (``refusal``, ``classifier:DIR``,
      ``llm[:MODEL|URL,...]``) or a judge object; ``max_new_tokens`` defaults to 48.
    - ``suite="copyright"``: ``forget`` (required), ``unseen`` and ``retain`` prefix/continuation
      pairs; ``general``: a .txt/.jsonl file or a list of texts not from the book; ``template``,
      ``bleu_threshold`` (default: calibrated at ``bleu_quantile`` on the given continuations),
      ``limit`` rows per split, ``benign_prompts`` everyday prompts for the degenerate rate;
      ``max_new_tokens`` defaults to 64.

    - ``suite="tofu"``: ``tofu_dir`` (a folder with the TOFU hub's files, or
      ``hub:locuslab/TOFU[@revision]``), ``forget_split`` (forget01/05/10), ``retain_result`` (the
      retain model's ``eval/tofu_<tag>.json``, for forget quality), ``batch_size``, ``limit``
      questions per split, ``template`` (default ``plain``); ``max_new_tokens`` defaults to 200;
      ``retain_authors`` scores the first N retain authors only (those a laptop benchmark trained on).
      Definitions: docs/tofu.md.
    - ``suite="lm-eval"`` (the extra ``pip install 'obliviate[lm-eval]'``): ``tasks`` (``"mmlu,wmdp_bio"``
      or a list of lm-eval task names), ``include_path`` (a folder, or several, of local lm-eval task
      YAML files), ``num_fewshot`` (default: each task's own), ``limit`` documents per task,
      ``batch_size``. Results keyed by task: docs/lm_eval.md.

    - ``suite="mia"``: ``forget`` (members) and ``holdout`` (non-members) question/answer rows
      (question/answer or prompt/response fields), or ``tofu_dir`` + ``forget_split`` (its
      forgetNN.json and holdoutNN.json); ``reference_model`` (name or path) for the reference
      attack; ``retain_result`` (the retain model's ``eval/mia_<tag>.json``) for PrivLeak;
      ``template``, ``batch_size``, ``limit``. Definitions: docs/mia_muse.md.
    - ``suite="muse"``: ``forget`` passages (.txt or prefix/continuation rows; required),
      ``forget_qa`` and ``retain_qa`` question/answer rows, ``holdout`` passages and
      ``retain_result`` (the retain model's ``eval/muse_<tag>.json``) for PrivLeak, optional
      ``retain`` passages; ``max_new_tokens`` defaults to 128. Definitions: docs/mia_muse.md.
    - ``suite="robustness"``: ``forget`` (prompt/response rows; a run folder's ``data/forget.jsonl``
      when left out) attacked on the original and the unlearned model; ``mode`` ``harmful`` or
      ``memorisation``; ``attacks`` (names or ``"a,b"``; default: all), ``original_model``
      (default: ``model`` with its LoRA adapter off), ``retain_model``, ``retain`` rows (hard-scope
      neighbours; a run folder's ``data/retain.jsonl`` when left out), ``max_items`` (40),
      ``relearn_steps`` ([5, 10, 20]), ``max_new_tokens`` (48), ``batch_size``. Definitions:
      docs/robustness.md.

    ``embed``: load the sentence embedder for on-topic figures (left out with a warning when it
    cannot be fetched). Every input is checked before the model loads.
    """
    if suite not in SUITES:
        raise UserError(f"unknown suite '{suite}' (known: {', '.join(SUITES)})")
    if suite == "robustness":
        return _evaluate_robustness(
            model, tokenizer=tokenizer, run_dir=run_dir, tag=tag, forget=forget, retain=retain, mode=mode,
            attacks=attacks, original_model=original_model, retain_model=retain_model, max_items=max_items,
            relearn_steps=relearn_steps, max_new_tokens=max_new_tokens, batch_size=batch_size, judge=judge,
            prompt_field=prompt_field, response_field=response_field, embed=embed,
            trust_remote_code=trust_remote_code, progress=progress,
        )
    if suite in ("mia", "muse"):
        return _evaluate_mia_or_muse(
            suite, model, tokenizer=tokenizer, run_dir=run_dir, tag=tag, forget=forget, holdout=holdout, retain=retain,
            forget_qa=forget_qa, retain_qa=retain_qa, tofu_dir=tofu_dir, forget_split=forget_split,
            retain_result=retain_result, reference_model=reference_model, template=template, batch_size=batch_size,
            limit=limit, max_new_tokens=max_new_tokens, trust_remote_code=trust_remote_code,
        )
    if suite == "lm-eval":
        return _evaluate_lm_eval(model, tokenizer=tokenizer, run_dir=run_dir, tag=tag, tasks=tasks, include_path=include_path,
                                 num_fewshot=num_fewshot, limit=limit, batch_size=batch_size, trust_remote_code=trust_remote_code)
    if suite == "tofu":
        return _evaluate_tofu(
            model, tokenizer=tokenizer, run_dir=run_dir, tag=tag, tofu_dir=tofu_dir, forget_split=forget_split,
            retain_result=retain_result, batch_size=batch_size, limit=limit, template=template,
            max_new_tokens=200 if max_new_tokens is None else max_new_tokens, trust_remote_code=trust_remote_code,
            progress=progress, retain_authors=retain_authors,
        )
    if suite == "copyright":
        return _evaluate_copyright(
            model, tokenizer=tokenizer, run_dir=run_dir, tag=tag, forget=forget, unseen=unseen, retain=retain,
            general=general, prompt_field=prompt_field, response_field=response_field,
            max_new_tokens=64 if max_new_tokens is None else max_new_tokens, template=template,
            bleu_threshold=bleu_threshold, bleu_quantile=bleu_quantile, limit=limit, benign_prompts=benign_prompts,
            embed=embed, trust_remote_code=trust_remote_code,
        )
    unlearned = _prompts(forget, "forget", prompt_field)
    unseen_prompts = _prompts(harmful, "harmful", prompt_field)
    if not unlearned and not unseen_prompts:
        raise UserError("the harmful suite needs harmful= (held-out harmful prompts) and/or forget= (the forget set's prompts)")
    retain_prompts = _prompts(retain, "retain", prompt_field)
    if benign is not None:
        benign_list = _prompts(benign, "benign", prompt_field)
    else:
        from obliviate.data.fetch import load_builtin

        benign_list = [r["prompt"] for r in load_builtin("benign_prompts")][:DEFAULT_BENIGN_PROMPTS]
    if isinstance(judge, str):
        from obliviate.judges.registry import judge_from_spec

        judge = judge_from_spec(judge)
    from obliviate.eval.harmful import GenerationSettings, HarmfulSplits, evaluate_harmful, write_harmful_results

    loaded, loaded_tokenizer, name = _model_for_eval(model, tokenizer, trust_remote_code)
    embedder = None
    if embed:
        from obliviate.models.embeddings import load_embedder

        embedder = load_embedder(required=False)
    result = evaluate_harmful(
        loaded, loaded_tokenizer,
        HarmfulSplits(unlearned=unlearned, unseen=unseen_prompts, benign=benign_list, retain=retain_prompts), judge,
        embedder=embedder, settings=GenerationSettings(max_new_tokens=48 if max_new_tokens is None else max_new_tokens),
        progress=progress,
    )
    result["model"] = name
    if run_dir is not None:
        result["path"] = str(write_harmful_results(result, Path(run_dir), tag))
    return result


def _evaluate_copyright(
    model: Any, *, tokenizer: Any, run_dir: Optional[PathLike], tag: str, forget: Any, unseen: Any, retain: Any,
    general: Any, prompt_field: str, response_field: str, max_new_tokens: int, template: str,
    bleu_threshold: Optional[float], bleu_quantile: float, limit: Optional[int], benign_prompts: int, embed: bool,
    trust_remote_code: bool,
) -> dict[str, Any]:
    from obliviate.eval.copyright import (
        CopyrightSettings,
        calibration_texts,
        default_general_texts,
        evaluate_copyright,
        write_copyright_results,
    )
    from obliviate.metrics.memorisation import calibrate_bleu_threshold

    if forget is None:
        raise UserError("the copyright suite needs forget= (prefix/continuation pairs; unseen=, retain=, general= optional)")
    settings = CopyrightSettings(template=template, max_new_tokens=max_new_tokens, benign_prompts=benign_prompts)
    splits: dict[str, list[Example]] = {}
    for role, value in (("forget", forget), ("unseen", unseen), ("retain", retain)):
        if value is not None:
            splits[role] = _pairs(value, role, prompt_field, response_field, limit)
    general_texts = _texts(general, "general") if general is not None else default_general_texts()
    if bleu_threshold is None:
        bleu_threshold = calibrate_bleu_threshold(calibration_texts(splits), quantile=bleu_quantile, unit="text")
    loaded, loaded_tokenizer, name = _model_for_eval(model, tokenizer, trust_remote_code)
    embedder = None
    if embed:
        from obliviate.models.embeddings import load_embedder

        embedder = load_embedder(required=False)
    result = evaluate_copyright(
        loaded, loaded_tokenizer, splits, general_texts=general_texts, bleu_threshold=bleu_threshold,
        embedder=embedder, settings=settings,
    )
    result["model"] = name
    if run_dir is not None:
        result["path"] = str(write_copyright_results(result, Path(run_dir), tag))
    return result


def _evaluate_tofu(
    model: Any, *, tokenizer: Any, run_dir: Optional[PathLike], tag: str, tofu_dir: Optional[PathLike], forget_split: str,
    retain_result: Optional[PathLike], batch_size: int, limit: Optional[int], max_new_tokens: int, template: str,
    trust_remote_code: bool, progress: bool, retain_authors: Optional[int] = None,
) -> dict[str, Any]:
    from obliviate.data.tofu import keep_retain_authors, load_tofu
    from obliviate.eval.results import write_suite_results
    from obliviate.eval.tofu import SUITE, evaluate_tofu

    if tofu_dir is None:
        raise UserError("the tofu suite needs tofu_dir= (a folder with the TOFU hub's files, or hub:locuslab/TOFU[@revision])")
    # every row checked before the model loads
    data = keep_retain_authors(load_tofu(os.fspath(tofu_dir), forget_split), retain_authors)
    loaded, loaded_tokenizer, name = _model_for_eval(model, tokenizer, trust_remote_code)
    result = evaluate_tofu(
        loaded, loaded_tokenizer, data, retain_reference=retain_result, batch_size=batch_size,
        max_new_tokens=max_new_tokens, limit=limit, template=template, progress=progress,
    )
    result["model"] = name
    if run_dir is not None:
        path = write_suite_results(result, run_dir, suite=SUITE, tag=tag, generations_prefix=f"{SUITE}_{tag}_")
        result["path"] = str(path)
    return result


def _evaluate_lm_eval(
    model: Any, *, tokenizer: Any, run_dir: Optional[PathLike], tag: str, tasks: Union[str, Sequence[str], None],
    include_path: Union[PathLike, Sequence[PathLike], None], num_fewshot: Optional[int], limit: Optional[int],
    batch_size: int, trust_remote_code: bool,
) -> dict[str, Any]:
    from obliviate.eval.lm_eval_bridge import check_settings, evaluate_lm_eval, prepare_tasks, write_lm_eval_results

    check_settings(num_fewshot=num_fewshot, limit=limit, batch_size=batch_size)
    prepared = prepare_tasks(tasks, include_path)  # installed, and every task known, before the model loads
    loaded, loaded_tokenizer, name = _model_for_eval(model, tokenizer, trust_remote_code)
    result = evaluate_lm_eval(
        loaded, loaded_tokenizer, prepared, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size, model_name=name,
    )
    if run_dir is not None:
        result["path"] = str(write_lm_eval_results(result, Path(run_dir), tag))
    return result


def _evaluate_mia_or_muse(
    suite: str, model: Any, *, tokenizer: Any, run_dir: Optional[PathLike], tag: str, forget: Any, holdout: Any,
    retain: Any, forget_qa: Any, retain_qa: Any, tofu_dir: Optional[PathLike], forget_split: str,
    retain_result: Optional[PathLike], reference_model: Any, template: str, batch_size: int, limit: Optional[int],
    max_new_tokens: Optional[int], trust_remote_code: bool,
) -> dict[str, Any]:
    """The mia and muse suites (docs/mia_muse.md): inputs read and checked, then the model loads."""
    if suite == "muse":
        from obliviate.eval.muse import evaluate_muse, passage_pairs, question_pairs, write_muse_results

        if forget is None:
            raise UserError("the muse suite needs forget= (passages: a .txt file or prefix/continuation rows)")
        inputs = {
            "forget": passage_pairs(forget, "forget"),
            "forget_qa": question_pairs(forget_qa, "forget_qa") if forget_qa is not None else None,
            "retain_qa": question_pairs(retain_qa, "retain_qa") if retain_qa is not None else None,
            "holdout": passage_pairs(holdout, "holdout") if holdout is not None else None,
            "retain": passage_pairs(retain, "retain") if retain is not None else None,
        }
        loaded, loaded_tokenizer, name = _model_for_eval(model, tokenizer, trust_remote_code)
        result = evaluate_muse(
            loaded, loaded_tokenizer, **inputs, retain_reference=retain_result, template=template, batch_size=batch_size,
            limit=limit, max_new_tokens=128 if max_new_tokens is None else max_new_tokens, model_name=name,
        )
        if run_dir is not None:
            result["path"] = str(write_muse_results(result, Path(run_dir), tag))
        return result
    from obliviate.eval.mia import evaluate_mia, read_pairs, read_retain_aucs, tofu_mia_files, write_mia_results

    if tofu_dir is not None:
        if forget is not None or holdout is not None:
            raise UserError("give either tofu_dir= (with forget_split=) or forget= and holdout=, not both")
        forget, holdout = tofu_mia_files(tofu_dir, forget_split)
    if forget is None or holdout is None:
        raise UserError("the mia suite needs forget= and holdout= (question/answer rows), or tofu_dir= with forget_split=")
    forget_rows, holdout_rows = read_pairs(forget, "forget"), read_pairs(holdout, "holdout")
    if limit:
        forget_rows, holdout_rows = forget_rows[:limit], holdout_rows[:limit]
    if retain_result is not None:
        read_retain_aucs(retain_result)  # a bad path fails before any model loads
    loaded, loaded_tokenizer, name = _model_for_eval(model, tokenizer, trust_remote_code)
    reference, reference_tokenizer, reference_name = None, None, None
    if reference_model is not None and _is_model_object(reference_model):  # scored with the target's tokenizer
        reference, reference_tokenizer, reference_name = reference_model, loaded_tokenizer, type(reference_model).__name__
    elif reference_model is not None:
        reference, reference_tokenizer, reference_name = _model_for_eval(reference_model, None, trust_remote_code)
    result = evaluate_mia(
        loaded, loaded_tokenizer, forget_rows, holdout_rows, reference_model=reference,
        reference_tokenizer=reference_tokenizer, retain_reference=retain_result, template=template,
        batch_size=batch_size, model_name=name, reference_name=reference_name,
    )
    if run_dir is not None:
        result["path"] = str(write_mia_results(result, Path(run_dir), tag))
    return result


def _run_folder_file(model: Any, name: str) -> Optional[Path]:
    """``<run>/data/<name>`` when ``model`` is a run folder that holds it (the harm demo's data)."""
    if not _is_path(model):
        return None
    found = Path(model) / "data" / name
    return found if found.is_file() else None


def _evaluate_robustness(
    model: Any, *, tokenizer: Any, run_dir: Optional[PathLike], tag: str, forget: Any, retain: Any, mode: str,
    attacks: Union[str, Sequence[str], None], original_model: Any, retain_model: Any, max_items: Optional[int],
    relearn_steps: Optional[Sequence[int]], max_new_tokens: Optional[int], batch_size: int, judge: Any,
    prompt_field: str, response_field: str, embed: bool, trust_remote_code: bool, progress: bool,
) -> dict[str, Any]:
    """The robustness suite (docs/robustness.md): settings and rows checked, then the models load."""
    from obliviate.scenarios.robustness import MODES, RobustnessSettings, run_robustness

    if mode not in MODES:
        raise UserError(f"mode: {mode!r}; valid: {', '.join(MODES)}")
    options: dict[str, Any] = {"max_new_tokens": 48 if max_new_tokens is None else max_new_tokens,
                               "batch_size": batch_size}
    if attacks is not None:
        options["attacks"] = [a.strip() for a in attacks.split(",") if a.strip()] if isinstance(attacks, str) else list(attacks)
    if max_items is not None:
        options["max_items"] = max_items
    if relearn_steps is not None:
        options["relearn_steps"] = list(relearn_steps)
    settings = RobustnessSettings(**options)
    forget = forget if forget is not None else _run_folder_file(model, "forget.jsonl")
    if forget is None:
        raise UserError("the robustness suite needs forget= (prompt/response rows; a run folder with data/forget.jsonl has them)")
    retain = retain if retain is not None else _run_folder_file(model, "retain.jsonl")
    # Harmful prompts may come without answers (few-shot and relearning then say they were skipped).
    need = mode == "memorisation"
    forget_rows = _robustness_rows(forget, "forget", prompt_field, response_field, need)
    retain_rows = _robustness_rows(retain, "retain", prompt_field, response_field, need) if retain is not None else None
    if isinstance(judge, str):
        from obliviate.judges.registry import judge_from_spec

        judge = judge_from_spec(judge)
    loaded, loaded_tokenizer, name = _model_for_eval(model, tokenizer, trust_remote_code)
    original = retain_loaded = None
    if original_model is not None:
        original = original_model if _is_model_object(original_model) else _model_for_eval(original_model, None, trust_remote_code)[0]
    if retain_model is not None:
        retain_loaded = retain_model if _is_model_object(retain_model) else _model_for_eval(retain_model, None, trust_remote_code)[0]
    embed_texts = None
    if embed:
        from obliviate.models.embeddings import load_embedder

        embedder = load_embedder(required=False)
        if embedder is not None:
            def embed_texts(texts: list[str]) -> Any:
                return embedder.embed(list(texts))
    result = run_robustness(
        loaded, loaded_tokenizer, original_model=original, retain_model=retain_loaded, forget_rows=forget_rows,
        retain_rows=retain_rows, mode=mode, settings=settings, embed=embed_texts, judge=judge, run_dir=run_dir, tag=tag,
        progress=progress, model_name=name,
    )
    return result


def _robustness_rows(value: Any, role: str, prompt_field: str, response_field: str, need: bool) -> list["Example"]:
    if _is_path(value):
        from obliviate.data.loaders import load_examples

        if not Path(value).exists():
            raise UserError(f"{role}: data file {value} does not exist")
        return load_examples(value, prompt_field=prompt_field, response_field=response_field, role=role,
                             require_response=need, setting="")
    rows = [{prompt_field: r} if isinstance(r, str) else r for r in _rows(value, role)]
    return _checked(rows, role, prompt_field=prompt_field, response_field=response_field, require_response=need, setting="")
