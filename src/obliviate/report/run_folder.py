"""Read what a run folder holds, as plain data, for the reports (see docs/run_dir.md).

Everything is read from the files (JSON, JSON lines, YAML): the report layer imports nothing of the
training, gating or evaluation code, so any folder written by any version of those stages (or by
hand) can be reported on. Missing pieces are skipped; a folder with none of them is a
``UserError``.

A run folder may nest training stages one level down (the demos keep ``finetune/`` and
``unlearn/`` beside their evaluations); each stage is a folder with a ``train_log.jsonl``,
``train_summary.json`` or ``config.yaml``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from obliviate.errors import UserError

STAGE_FILES = ("train_log.jsonl", "train_summary.json", "config.yaml")
# Stage folders shown first, in this order; any other stage folder follows alphabetically.
STAGE_ORDER = ("finetune", "unlearn")
# Sub-folders of a run that never hold a training stage.
NOT_STAGES = {"checkpoints", "model", "eval", "generations", "plots", "data"}
# Evaluation tags in the order their columns appear: the starting point first, the result last.
TAG_ORDER = ("original", "before", "finetuned", "eval", "after", "unlearned")
BEFORE_TAGS = ("before", "finetuned", "original")
AFTER_TAGS = ("after", "unlearned")
# File-name prefix of a suite's generations (generations/<prefix><tag>_<split>.jsonl).
GENERATION_PREFIX = {"harmful": "", "copyright": "copyright_"}

WHAT_A_RUN_HOLDS = (
    "a run folder holds config.yaml, train_log.jsonl, train_summary.json, eval/<suite>_<tag>.json, "
    "generations/*.jsonl or summary.json (or a stage folder such as unlearn/ with them)"
)


@dataclass
class Stage:
    """One training run: its folder, resolved config, log rows and gating records."""

    name: str  # "" for the run folder itself
    path: Path
    config: Optional[dict[str, Any]] = None
    config_text: str = ""
    env: Optional[dict[str, Any]] = None
    log: list[dict[str, Any]] = field(default_factory=list)
    summary: Optional[dict[str, Any]] = None
    early_stopping: Optional[dict[str, Any]] = None  # early_stopping.json: the decision
    early_checks: list[dict[str, Any]] = field(default_factory=list)  # early_stopping.jsonl
    forget_gate: list[dict[str, Any]] = field(default_factory=list)  # forget_gate.jsonl

    @property
    def label(self) -> str:
        return self.name or "training"


@dataclass
class Run:
    """Everything a report can show about one run folder.

    ``evals`` maps a suite to ``{tag: result}``, each result shaped as the suite returns it:
    ``metrics`` per split, ``judge``, ``settings``…, and ``items`` per split (the rows of
    ``generations/``). ``generations`` holds the generation files no evaluation claimed.
    """

    path: Path
    name: str
    stages: list[Stage] = field(default_factory=list)
    evals: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    generations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    summary: Optional[dict[str, Any]] = None  # summary.json (demos, detection)
    config: Any = None  # replaces the main stage's config when given (a demo's recipe)

    @property
    def main_stage(self) -> Optional[Stage]:
        """The unlearning stage: the folder itself if it trained, else ``unlearn/``, else the last."""
        by_name = {s.name: s for s in self.stages}
        return by_name.get("") or by_name.get("unlearn") or (self.stages[-1] if self.stages else None)

    @property
    def resolved_config(self) -> Any:
        if self.config is not None:
            return self.config
        stage = self.main_stage
        return stage.config if stage is not None else None

    def tags(self, suite: str) -> list[str]:
        return ordered_tags(self.evals.get(suite, {}))

    def pair(self, suite: str) -> tuple[Optional[str], Optional[str]]:
        """(before tag, after tag) of a suite: both set when the run compares two evaluations."""
        return before_after(self.tags(suite))

    def final_tag(self, suite: str) -> Optional[str]:
        """The evaluation that describes the run's result: the after tag, else the last one."""
        tags = self.tags(suite)
        before, after = before_after(tags)
        return after or (tags[-1] if tags else None)


def ordered_tags(tags) -> list[str]:
    known = [t for t in TAG_ORDER if t in tags]
    return known + sorted(t for t in tags if t not in TAG_ORDER)


def before_after(tags) -> tuple[Optional[str], Optional[str]]:
    after = next((t for t in AFTER_TAGS if t in tags), None)
    before = next((t for t in BEFORE_TAGS if t in tags), None)
    if after is None or before is None:
        return None, None
    return before, after


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON lines; a torn last line (an interrupted append) is skipped, a bad line elsewhere is an error."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_yaml(path: Path) -> tuple[Optional[dict[str, Any]], str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: not valid YAML") from None
    return (data if isinstance(data, dict) else None), text


def _optional(path: Path, reader):
    return reader(path) if path.is_file() else None


def _stage(path: Path, name: str) -> Stage:
    stage = Stage(name=name, path=path)
    if (path / "config.yaml").is_file():
        stage.config, stage.config_text = _read_yaml(path / "config.yaml")
    stage.env = _optional(path / "env.json", _read_json)
    stage.log = _optional(path / "train_log.jsonl", _read_jsonl) or []
    stage.summary = _optional(path / "train_summary.json", _read_json)
    stage.early_stopping = _optional(path / "early_stopping.json", _read_json)
    stage.early_checks = _optional(path / "early_stopping.jsonl", _read_jsonl) or []
    if not stage.early_checks and isinstance(stage.early_stopping, dict):
        stage.early_checks = [c for c in stage.early_stopping.get("checks", []) if isinstance(c, dict)]
    stage.forget_gate = _optional(path / "forget_gate.jsonl", _read_jsonl) or []
    return stage


def _is_stage(path: Path) -> bool:
    return any((path / name).is_file() for name in STAGE_FILES)


def _stages(root: Path) -> list[Stage]:
    stages = [_stage(root, "")] if _is_stage(root) else []
    subs = [p for p in root.iterdir() if p.is_dir() and p.name not in NOT_STAGES and not p.name.startswith(".")
            and _is_stage(p)]
    subs.sort(key=lambda p: (STAGE_ORDER.index(p.name) if p.name in STAGE_ORDER else len(STAGE_ORDER), p.name))
    return stages + [_stage(p, p.name) for p in subs]


def _suite_and_tag(stem: str) -> tuple[str, str]:
    """``harmful_before`` -> (harmful, before); ``copyright`` -> (copyright, "")."""
    suite, _, tag = stem.partition("_")
    return suite, tag


def _evals(root: Path, generation_files: dict[str, Path]) -> dict[str, dict[str, dict[str, Any]]]:
    evals: dict[str, dict[str, dict[str, Any]]] = {}
    folder = root / "eval"
    if not folder.is_dir():
        return evals
    for path in sorted(folder.glob("*.json")):
        data = _read_json(path)
        if not isinstance(data, dict):
            continue
        suite, tag = _suite_and_tag(path.stem)
        result = dict(data)
        items = dict(result.get("items") or {})
        prefix = f"{GENERATION_PREFIX.get(suite, suite + '_')}{tag + '_' if tag else ''}"
        for stem in sorted(generation_files) if prefix else ():  # an empty prefix would claim every file
            split = stem[len(prefix):]
            if stem.startswith(prefix) and split and "_" not in split:
                items.setdefault(split, _read_jsonl(generation_files.pop(stem)))
        result["items"] = items
        evals.setdefault(suite, {})[tag] = result
    return evals


def collect_run(
    path: str | Path,
    *,
    evals: Optional[Mapping[str, Mapping[str, Mapping[str, Any]]]] = None,
    summary: Optional[Mapping[str, Any]] = None,
    config: Any = None,
) -> Run:
    """Read a run folder. ``evals`` (suite -> tag -> result with ``items``), ``summary`` and
    ``config`` replace what the files hold (a demo passes the results it has in memory)."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"{root}: no such run folder")
    if not root.is_dir():
        raise UserError(f"{root}: not a folder; {WHAT_A_RUN_HOLDS}")
    generation_files = {p.stem: p for p in sorted((root / "generations").glob("*.jsonl"))} \
        if (root / "generations").is_dir() else {}
    run = Run(path=root, name=root.resolve().name, stages=_stages(root))
    run.evals = _evals(root, generation_files)
    for suite, by_tag in (evals or {}).items():
        for tag, result in by_tag.items():
            run.evals.setdefault(suite, {})[tag] = {**dict(result), "items": dict(result.get("items") or {})}
    run.generations = {stem: _read_jsonl(p) for stem, p in generation_files.items()}
    run.summary = dict(summary) if summary is not None else _optional(root / "summary.json", _read_json)
    if run.summary is not None and not isinstance(run.summary, dict):
        run.summary = None
    run.config = config
    if not (run.stages or run.evals or run.generations or run.summary):
        raise UserError(f"{root}: nothing to report; {WHAT_A_RUN_HOLDS}")
    return run


def number(value: Any) -> Optional[float]:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


__all__ = ["Run", "Stage", "collect_run", "before_after", "ordered_tags", "number", "WHAT_A_RUN_HOLDS"]
