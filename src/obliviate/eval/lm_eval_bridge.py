"""The ``lm-eval`` suite: benchmark tasks (MMLU, WMDP, ...) scored by lm-evaluation-harness.

The field reports general utility (MMLU) and hazardous knowledge (WMDP) with lm-evaluation-harness,
so obliviate hands its in-memory model to that tool instead of re-implementing the tasks: the
prompts, the answer scoring and the aggregation are lm-eval's, and the figures can be put next to
published ones. lm-eval is an optional extra (``pip install 'obliviate[lm-eval]'``); nothing here
imports it until a task is asked for.

Two steps, so that every input is checked before a model is loaded:
:func:`prepare_tasks` resolves the task names (built-in tasks plus the YAML tasks of
``include_path``), then :func:`evaluate_lm_eval` runs them on a model and returns the suite's
result (docs/lm_eval.md):

- ``metrics[<task>]``: every figure lm-eval reports for the task or group (its ``,none`` filter
  suffix dropped, other filters appended as ``_<filter>``; standard errors as ``<metric>_stderr``)
  and ``count`` (documents scored);
- ``metrics["summary"]``: ``{<task as asked>: its main metric}``;
- ``items[<task>]``: one row per document lm-eval scored (doc id, prompt, reference, the model's
  choice or generation, whether it was right, each per-document metric).

Split names hold no underscore (run folders' file names are split on "_"), so a task's key in
``metrics`` and ``items`` is its lm-eval name with "_" written as "-" (``wmdp_bio`` ->
``wmdp-bio``); the summary and each item row keep the lm-eval name.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from obliviate.errors import UserError
from obliviate.eval.results import write_suite_results

SUITE = "lm-eval"
INSTALL_HINT = "pip install 'obliviate[lm-eval]'"
DEFAULT_BATCH_SIZE = 8
# The metric a task's summary shows, when the task reports it (first found wins).
MAIN_METRICS = ("acc", "exact_match", "acc_norm", "f1", "mcc", "bleu", "word_perplexity", "perplexity")
# Errors raised while a task's dataset is fetched (the class names, so that no optional library
# has to be imported to recognise them).
FETCH_ERRORS = {
    "ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "HfHubHTTPError", "DatasetNotFoundError",
    "RepositoryNotFoundError", "GatedRepoError", "HTTPError", "Timeout", "ConnectTimeout", "ReadTimeout",
}

# Indexing lm-eval's thousands of task files takes seconds; a process reuses the index per include path.
_task_managers: dict[tuple[str, ...], Any] = {}


@dataclass
class PreparedTasks:
    """Task names lm-eval knows, with the task manager that resolved them."""

    names: list[str]
    include_path: list[str]
    task_manager: Any


def require_lm_eval() -> None:
    """Raise a one-line UserError when lm-evaluation-harness is not installed."""
    try:
        missing = importlib.util.find_spec("lm_eval") is None
    except (ImportError, ValueError):
        missing = True
    if missing:
        raise UserError(f"the lm-eval suite needs lm-evaluation-harness, which is not installed: {INSTALL_HINT}")


def parse_tasks(tasks: Union[str, Sequence[str], None]) -> list[str]:
    """Task names from ``"a,b"`` or a list; duplicates dropped, order kept."""
    if tasks is None:
        raise UserError("the lm-eval suite needs tasks: --tasks a,b (e.g. --tasks mmlu,wmdp_bio; tasks= in the API)")
    parts = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise UserError(f"tasks: expected task names (strings), got {part!r}")
        name = part.strip()
        if name and name not in names:
            names.append(name)
    if not names:
        raise UserError("tasks: no task name given; e.g. --tasks mmlu,wmdp_bio")
    return names


def _include_paths(include_path: Union[str, Path, Sequence[Union[str, Path]], None]) -> list[str]:
    if include_path is None:
        return []
    paths = [include_path] if isinstance(include_path, (str, Path)) else list(include_path)
    folders = []
    for path in paths:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise UserError(f"--include-path {path}: no such folder; give a folder of lm-eval task YAML files")
        folders.append(str(folder.resolve()))
    return folders


def _task_manager(include_path: list[str]) -> Any:
    key = tuple(include_path)
    if key not in _task_managers:
        from lm_eval.tasks import TaskManager

        _task_managers[key] = TaskManager(include_path=include_path or None)
    return _task_managers[key]


def prepare_tasks(
    tasks: Union[str, Sequence[str], None], include_path: Union[str, Path, Sequence[Union[str, Path]], None] = None
) -> PreparedTasks:
    """Check that lm-eval is installed and knows every task; the result goes to :func:`evaluate_lm_eval`."""
    names = parse_tasks(tasks)
    folders = _include_paths(include_path)
    require_lm_eval()
    manager = _task_manager(folders)
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            where = f" or in {', '.join(folders)}" if folders else " (local tasks: --include-path DIR)"
            raise UserError(f"lm-eval task '{name}' is unknown: not among lm-eval's tasks{where}{hint}")
    return PreparedTasks(names=names, include_path=folders, task_manager=manager)


def check_settings(*, num_fewshot: Optional[int], limit: Optional[Union[int, float]], batch_size: int) -> None:
    """Raise a one-line UserError for a setting lm-eval cannot run with."""
    if num_fewshot is not None and num_fewshot < 0:
        raise UserError(f"--num-fewshot {num_fewshot}: must be 0 or more")
    if limit is not None and limit <= 0:
        raise UserError(f"--limit {limit}: must be above 0 (documents per task, or a share of them below 1)")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be 1 or more")


def split_name(task: str) -> str:
    """A task's key in ``metrics`` and ``items`` (no underscore: run-folder file names split on "_")."""
    return task.replace("_", "-")


def metric_key(raw: str) -> Optional[str]:
    """``acc,none`` -> ``acc``; ``exact_match_stderr,strict-match`` -> ``exact_match_strict_match_stderr``;
    None for lm-eval's bookkeeping keys (``alias``, ``name``, ``sample_len``)."""
    if "," not in raw:
        return None
    metric, filter_name = raw.split(",", 1)
    stderr = metric.endswith("_stderr")
    base = metric[: -len("_stderr")] if stderr else metric
    if filter_name and filter_name != "none":
        base = f"{base}_{filter_name}"
    key = re.sub(r"[^0-9a-zA-Z]+", "_", base).strip("_").lower()
    return f"{key}_stderr" if stderr else key


def _number(value: Any) -> Optional[float]:
    """A JSON-safe float (None for lm-eval's "N/A", NaN and anything that is not a number)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(value)  # numpy scalars
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _count(task: str, raw: dict[str, Any], seen: frozenset = frozenset()) -> int:
    """Documents scored for a task, or for a group the sum over its subtasks."""
    counts = raw.get("n-samples") or {}
    if task in counts:
        entry = counts[task]
        return int(entry.get("effective", entry.get("original", 0)) if isinstance(entry, dict) else entry)
    subtasks = (raw.get("group_subtasks") or {}).get(task) or []
    if subtasks and task not in seen:
        return sum(_count(sub, raw, seen | {task}) for sub in subtasks)
    sample_len = (raw.get("results") or {}).get(task, {}).get("sample_len")
    return int(sample_len) if isinstance(sample_len, (int, float)) else 0


def _main_metric(figures: dict[str, Any]) -> Optional[str]:
    for name in MAIN_METRICS:
        if name in figures:
            return name
    return next((k for k in figures if not k.endswith("_stderr") and k != "count"), None)


def task_metrics(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``metrics`` per task and group from lm-eval's ``results`` (and ``groups`` where it keeps them apart)."""
    metrics: dict[str, dict[str, Any]] = {}
    for section in ("results", "groups"):
        for task, values in (raw.get(section) or {}).items():
            figures = metrics.setdefault(split_name(task), {})
            for name, value in values.items():
                key = metric_key(name)
                if key is not None:
                    figures[key] = _number(value)
            figures["count"] = _count(task, raw)
    return metrics


def _text(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _loglikelihoods(responses: Any) -> list[Optional[float]]:
    """Per-choice log-likelihoods from a multiple-choice sample's ``filtered_resps``."""
    values = []
    for response in responses or []:
        if isinstance(response, (list, tuple)) and response:
            response = response[0]
        values.append(_number(response))
    return values


def sample_row(index: int, task: str, sample: dict[str, Any], output_type: Optional[str]) -> dict[str, Any]:
    """One per-document row: doc id, prompt, reference, the model's choice or generation, correctness, metrics."""
    arguments = sample.get("arguments") or []
    first = arguments[0] if arguments else ()
    if isinstance(first, dict):  # some lm-eval versions log arguments as {"gen_args_0": {"arg_0": ...}}
        first = tuple(first.values())
    target = sample.get("target")
    row: dict[str, Any] = {"index": index, "task": task, "doc_id": sample.get("doc_id"),
                           "prompt": _text(first[0]) if first else None}
    if sample.get("filter") not in (None, "none"):
        row["filter"] = sample["filter"]
    if output_type == "multiple_choice":
        choices = []
        for argument in arguments:
            values = tuple(argument.values()) if isinstance(argument, dict) else argument
            choices.append(str(values[1]).lstrip() if len(values) > 1 else None)
        lls = _loglikelihoods(sample.get("filtered_resps"))
        scored = [(ll, i) for i, ll in enumerate(lls) if ll is not None]
        choice = max(scored)[1] if scored else None
        row.update(choices=choices, loglikelihoods=lls, choice=choice,
                   chosen=choices[choice] if choice is not None and choice < len(choices) else None)
        if isinstance(target, int) and 0 <= target < len(choices):
            row["answer"] = choices[target]
        elif isinstance(target, str):
            row["answer"] = target
        row["target"] = target if isinstance(target, (int, str)) else _text(target)
    else:
        row["answer"] = _text(target)
        responses = sample.get("filtered_resps")
        if output_type == "generate_until" and responses:
            row["generation"] = _text(responses[0] if isinstance(responses, (list, tuple)) else responses)
    for name in sample.get("metrics") or []:
        if name in sample:
            value = _number(sample[name])
            if value is not None or sample[name] is None:
                row[name] = value
    for name in ("acc", "exact_match"):
        if row.get(name) is not None:
            row["correct"] = bool(row[name] >= 1.0)
            break
    return row


def _output_types(raw: dict[str, Any]) -> dict[str, Optional[str]]:
    return {task: (config or {}).get("output_type") for task, config in (raw.get("configs") or {}).items()}


def task_items(raw: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``items`` per task from lm-eval's ``samples`` (empty when lm-eval logged none)."""
    kinds = _output_types(raw)
    items: dict[str, list[dict[str, Any]]] = {}
    for task, samples in (raw.get("samples") or {}).items():
        items[split_name(task)] = [sample_row(i, task, s, kinds.get(task)) for i, s in enumerate(samples)]
    return items


def _fetch_failure(error: BaseException) -> Optional[BaseException]:
    """The error in ``error``'s chain that says a dataset could not be fetched, if any."""
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in FETCH_ERRORS:
            return current
        current = current.__cause__ or current.__context__
    return None


def evaluate_lm_eval(
    model: Any,
    tokenizer: Any,
    prepared: PreparedTasks,
    *,
    num_fewshot: Optional[int] = None,
    limit: Optional[Union[int, float]] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    model_name: str = "",
) -> dict[str, Any]:
    """Run the prepared tasks on an in-memory model through lm-eval's Hugging Face wrapper."""
    check_settings(num_fewshot=num_fewshot, limit=limit, batch_size=batch_size)
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    started = time.perf_counter()
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        raw = lm_eval.simple_evaluate(
            model=wrapped, tasks=list(prepared.names), num_fewshot=num_fewshot, limit=limit,
            task_manager=prepared.task_manager, log_samples=True,
        )
    except Exception as error:
        failure = _fetch_failure(error)
        if failure is None:
            raise
        raise UserError(
            f"lm-eval task data could not be fetched ({failure}); tasks such as mmlu and wmdp_bio download "
            "their datasets from the Hugging Face Hub: run with network access (HF_HUB_OFFLINE unset) once "
            "to cache them, or use a local task (--include-path DIR)"
        ) from error
    if raw is None:  # not rank 0 of a distributed launch
        raise UserError("lm-eval returned no results (only the first process of a distributed launch gets them)")
    metrics = task_metrics(raw)
    summary: dict[str, Any] = {}
    for name in prepared.names:
        figures = metrics.get(split_name(name), {})
        main = _main_metric(figures)
        summary[name] = figures.get(main) if main else None
    metrics["summary"] = summary
    return {
        "suite": SUITE,
        "model": model_name,
        "settings": {
            "tasks": list(prepared.names),
            "include_path": list(prepared.include_path),
            "num_fewshot": num_fewshot,
            "n_shot": {split_name(k): v for k, v in (raw.get("n-shot") or {}).items()},
            "limit": limit,
            "batch_size": batch_size,
            "versions": {split_name(k): _text(v) for k, v in (raw.get("versions") or {}).items()},
            "lm_eval_version": _text(raw.get("lm_eval_version") or _lm_eval_version()),
            "main_metric": {name: _main_metric(metrics.get(split_name(name), {})) for name in prepared.names},
        },
        "seconds": time.perf_counter() - started,
        "metrics": metrics,
        "items": task_items(raw),
    }


def _lm_eval_version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("lm_eval")
    except Exception:  # noqa: BLE001 - only a label in the settings
        return None


def write_lm_eval_results(result: dict[str, Any], run_dir: Union[str, Path], tag: str) -> Path:
    """Write ``eval/lm-eval_<tag>.json`` (figures) and ``generations/lm-eval_<tag>_<task>.jsonl``."""
    return write_suite_results(result, run_dir, suite=SUITE, tag=tag, generations_prefix=f"{SUITE}_{tag}_")
