"""A TOFU-style benchmark from one recipe: the full and retain models, then every method unlearns.

TOFU (Maini et al. 2024, arXiv 2401.06121) fine-tunes a model on 4,000 questions about 200
fictitious authors (the "full" model), unlearns the questions of 1%, 5% or 10% of the authors
(forget01/05/10) and compares the result with a "retain" model fine-tuned on everything but that
forget split: forget quality is the KS-test p-value of the unlearned model's forget truth ratios
against the retain model's (:mod:`obliviate.metrics.tofu`).

The laptop-sized version here keeps the TOFU files and definitions and shrinks the fine-tuning set
(the recipe ``scenarios/recipes/tofu.yaml`` says how much):

- fine-tuning set of the full model: the first ``retain_authors`` authors of TOFU's retain set
  (the authors of ``retain_perturbed.json``, so the retain figures are about questions the model
  was trained on) plus the largest forget split of ``forget_splits``;
- one retain model per forget split: the same set without that split. The forget splits are
  nested (forget01 is the last two authors of forget05), so a smaller split's retain model is
  trained on the larger split's other authors too;
- membership inference takes the matching holdout split (authors no model saw) as non-members.

:func:`build_reference_models` writes ``data/`` (the pairs files), ``full/`` and
``retain-<split>/`` (fine-tuning run folders with a merged ``model/``) and ``tofu_models.json``;
:func:`run_benchmark` (``bench/bench_tofu.py``) then evaluates them and unlearns with every
method of the recipe into ``<method>-<split>/``, and writes a comparison report.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field

from obliviate.data.loaders import iter_rows
from obliviate.errors import UserError
from obliviate.io import atomic_write_json, write_jsonl
from obliviate.models import DEFAULT_MODEL
from obliviate.scenarios.recipe import read_recipe
from obliviate.train.finetune import PAPER_FINETUNE_DEFAULTS, deep_merge

FORGET_SPLITS = ("forget01", "forget05", "forget10")
#: TOFU's file of the retain authors with paraphrased and perturbed answers: the first 400 rows
#: (20 authors) of retain90.json.
RETAIN_PERTURBED_AUTHORS = 20
QUESTIONS_PER_AUTHOR = 20
MANIFEST = "tofu_models.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UnlearnSection(_Strict):
    methods: dict[str, dict[str, Any]] = Field(description="method name -> its options, in table order")
    train: dict[str, Any] = Field(description="the train section of every unlearning run")


class QuestionCaps(_Strict):
    forget: Optional[int] = Field(gt=0, description="forget questions scored (the first N; also the MIA members)")
    retain: Optional[int] = Field(gt=0, description="retain questions scored (the first N of the retain authors)")
    real_authors: Optional[int] = Field(gt=0, description="real-authors questions scored (first N)")
    world_facts: Optional[int] = Field(gt=0, description="world-facts questions scored (first N)")


class EvalSection(_Strict):
    batch_size: int = Field(gt=0, description="rows per forward pass")
    max_questions: QuestionCaps = Field(description="questions scored per split; null = all")
    max_new_tokens: int = Field(gt=0, description="greedy answer length for ROUGE")
    mia: bool = Field(description="run the membership-inference suite too")
    mia_reference: bool = Field(description="the reference-model attack with the recipe's base model (never fine-tuned "
                                            "on TOFU) as the reference")


class TofuRecipe(_Strict):
    """The TOFU benchmark's settings; every value lives in ``scenarios/recipes/tofu.yaml``."""

    model: Optional[str] = Field(description="model name, path or alias; null = the default model")
    tofu_dir: Optional[str] = Field(description="folder with TOFU's files (hub layout); null = give --tofu-dir")
    forget_splits: list[str] = Field(min_length=1, description="forget01 | forget05 | forget10, one or more")
    retain_authors: int = Field(gt=0, le=RETAIN_PERTURBED_AUTHORS,
                                description="authors of TOFU's retain set in the fine-tuning set (first N)")
    finetune: dict[str, Any] = Field(description="run-config sections laid over the papers' fine-tuning defaults")
    unlearn: UnlearnSection
    eval: EvalSection


def load_tofu_recipe(path: str | Path | None = None, overrides: Sequence[str] = (), *,
                     tofu_dir: str | Path | None = None) -> TofuRecipe:
    """The packaged recipe (or ``path``) with ``name=value`` overrides; ``tofu_dir`` replaces the
    recipe's. Unknown forget splits are refused here, before anything runs."""
    values = {"tofu_dir": str(tofu_dir)} if tofu_dir is not None else {}
    recipe, source = read_recipe(TofuRecipe, "tofu", path, overrides, values)
    for split in recipe.forget_splits:
        if split not in FORGET_SPLITS:
            raise UserError(f"{source}: forget_splits: unknown split '{split}' (valid: {', '.join(FORGET_SPLITS)})")
    if len(set(recipe.forget_splits)) != len(recipe.forget_splits):
        raise UserError(f"{source}: forget_splits: {recipe.forget_splits} names a split twice")
    return recipe


#: ``load_recipe`` is the name every scenario module gives its recipe reader.
load_recipe = load_tofu_recipe


def tofu_folder(recipe: TofuRecipe) -> Path:
    """The recipe's TOFU folder, checked to exist."""
    if recipe.tofu_dir is None:
        raise UserError("the TOFU benchmark needs the TOFU files: pass --tofu-dir DIR (a folder with forget01.json, "
                        "retain90.json, ... as on the hub) or set tofu_dir in the recipe")
    folder = Path(recipe.tofu_dir)
    if not folder.is_dir():
        raise UserError(f"tofu_dir: {folder} is not a folder (expected TOFU's files in the hub layout)")
    return folder


def stage_configs(recipe: TofuRecipe, out_dir: str | Path) -> list[Any]:
    """Every run config the benchmark trains (validated; nothing is read or loaded): the full
    model's fine-tuning, then each method on each forget split."""
    from obliviate.config import load_config

    out = Path(out_dir)
    configs = [load_config(None, [], data=finetune_overrides(recipe, out / "data" / "full.jsonl"))]
    return configs + [unlearn_config(recipe, out, name, split) for split in recipe.forget_splits
                      for name in recipe.unlearn.methods]


# ---------------------------------------------------------------------------------------------
# Data


def _qa_rows(folder: Path, name: str) -> list[dict[str, str]]:
    path = folder / f"{name}.json"
    if not path.is_file():
        raise UserError(f"{path}: missing; a TOFU folder holds {name}.json (the hub's file layout)")
    rows = []
    for where, row in iter_rows(path):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected an object with question and answer, got {type(row).__name__}")
        for field in ("question", "answer"):
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise UserError(f"{where}: {field}: expected a non-empty string")
        rows.append({"prompt": row["question"], "response": row["answer"]})
    return rows


def holdout_split(forget_split: str) -> str:
    """``forget05`` -> ``holdout05``: the authors of the same size that no model saw."""
    return "holdout" + forget_split.removeprefix("forget")


def split_rows(recipe: TofuRecipe) -> dict[str, list[dict[str, str]]]:
    """The pairs of every data file the benchmark trains on: ``full``, ``retain-<split>``,
    ``forget-<split>``, ``holdout-<split>`` and ``retain`` (the retain authors only, the retain
    set of every unlearning run)."""
    folder = tofu_folder(recipe)
    retain_all = _qa_rows(folder, "retain90")
    retain = retain_all[: recipe.retain_authors * QUESTIONS_PER_AUTHOR]
    forget = {split: _qa_rows(folder, split) for split in recipe.forget_splits}
    largest = max(recipe.forget_splits, key=lambda s: len(forget[s]))
    prompts_of = {split: {r["prompt"] for r in rows} for split, rows in forget.items()}
    for split in recipe.forget_splits:
        if not prompts_of[split] <= prompts_of[largest]:
            raise UserError(f"{folder}: {split} is not part of {largest}; TOFU's forget splits are nested")
    rows: dict[str, list[dict[str, str]]] = {"full": retain + forget[largest], "retain": retain}
    for split in recipe.forget_splits:
        rows[f"retain-{split}"] = retain + [r for r in forget[largest] if r["prompt"] not in prompts_of[split]]
        rows[f"forget-{split}"] = forget[split]
        rows[f"holdout-{split}"] = _qa_rows(folder, holdout_split(split))
    return rows


# ---------------------------------------------------------------------------------------------
# Reference models


def finetune_overrides(recipe: TofuRecipe, data_file: Path) -> dict[str, Any]:
    """The run config (as a mapping) that fine-tunes the recipe's model on ``data_file``."""
    merged = deep_merge(PAPER_FINETUNE_DEFAULTS, recipe.finetune)
    return deep_merge(merged, {
        "model": {"name": recipe.model or DEFAULT_MODEL},
        "data": {"forget": {"path": str(data_file)}},
        "method": {"name": "finetune"},
        "train": {"save_every": 0},
    })


def reference_runs(recipe: TofuRecipe) -> dict[str, str]:
    """Run-folder name -> data file name of every reference model: ``full`` and one retain model per split."""
    return {"full": "full", **{f"retain-{split}": f"retain-{split}" for split in recipe.forget_splits}}


def build_reference_models(
    out_dir: str | Path,
    recipe: TofuRecipe,
    *,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the data files and fine-tune the full and retain models; returns the manifest
    (also written to ``<out_dir>/tofu_models.json``). A model whose run folder already holds a
    finished model is kept unless ``overwrite``, so an interrupted build continues where it stopped."""
    from obliviate.config import load_config
    from obliviate.train.finetune import scaled_warmup
    from obliviate.train.loop import run_training, total_steps

    out = Path(out_dir)
    rows = split_rows(recipe)
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file() and not (out / "data").is_dir():
        raise UserError(f"{out}: a folder with other files; the TOFU benchmark writes data/, full/, retain-*/ and "
                        f"{MANIFEST} into a new or empty folder (or one it built before)")
    out.mkdir(parents=True, exist_ok=True)
    changed = set()
    for name, pairs in rows.items():
        path = out / "data" / f"{name}.jsonl"
        before = path.read_bytes() if path.is_file() else None
        write_jsonl(path, pairs)
        if path.read_bytes() != before:
            changed.add(name)  # a model trained on the old file is stale
    manifest: dict[str, Any] = {
        "benchmark": "tofu", "tofu_dir": str(recipe.tofu_dir), "forget_splits": recipe.forget_splits,
        "retain_authors": recipe.retain_authors, "sizes": {name: len(pairs) for name, pairs in rows.items()},
        "models": {}, "seconds": {},
    }
    for run_name, data_name in reference_runs(recipe).items():
        run_dir = out / run_name
        model_dir = run_dir / "model"
        manifest["models"][run_name] = str(model_dir)
        if ((model_dir / "config.json").is_file() and (run_dir / "train_summary.json").is_file()
                and data_name not in changed and not overwrite):
            log(f"{run_name}: kept (already fine-tuned; --overwrite rebuilds it)")
            continue
        config = load_config(None, [], data=finetune_overrides(recipe, out / "data" / f"{data_name}.jsonl"))
        config.run.name = run_name
        if "warmup_steps" not in (recipe.finetune.get("train") or {}):
            config.train.warmup_steps = scaled_warmup(total_steps(config, len(rows[data_name]), 1))
        log(f"{run_name}: fine-tuning on {len(rows[data_name])} questions")
        for stale in ("eval", "generations"):  # figures of a model about to be replaced
            if (run_dir / stale).is_dir():
                shutil.rmtree(run_dir / stale)
        started = time.perf_counter()
        run_training(config, run_dir, overwrite=True, progress=progress, log=log)
        manifest["seconds"][run_name] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: missing; build the reference models first "
                        "(obliviate finetune --benchmark tofu --tofu-dir DIR --run-dir FOLDER)")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# The benchmark


def tofu_data(recipe: TofuRecipe, forget_split: str):
    """The TOFU suite's splits for ``forget_split``, the retain split cut to the retain authors the
    models were trained on (the others are questions neither the full nor the retain model saw)."""
    from dataclasses import replace

    from obliviate.data.tofu import keep_retain_authors, load_tofu

    data = keep_retain_authors(load_tofu(str(tofu_folder(recipe)), forget_split), recipe.retain_authors)
    caps = recipe.eval.max_questions
    return replace(data, forget=data.forget[: caps.forget], retain=data.retain[: caps.retain],
                   real_authors=data.real_authors[: caps.real_authors], world_facts=data.world_facts[: caps.world_facts])


def unlearn_config(recipe: TofuRecipe, out: Path, method: str, forget_split: str) -> Any:
    """The run config of ``method`` unlearning ``forget_split`` from the full model (validated)."""
    from obliviate.config import load_config

    finetune = deep_merge(PAPER_FINETUNE_DEFAULTS, recipe.finetune)
    data = finetune.get("data", {})
    options = dict(recipe.unlearn.methods[method] or {})
    mapping = {
        "run": {"name": f"{method}-{forget_split}"},
        "model": {"name": str(out / "full" / "model")},
        "method": {"name": method, **options},
        "data": {"template": data.get("template", "plain"), "max_length": data.get("max_length", 512),
                 "forget": {"path": str(out / "data" / f"forget-{forget_split}.jsonl")},
                 "retain": {"path": str(out / "data" / "retain.jsonl")}},
        "train": dict(recipe.unlearn.train),
    }
    try:
        return load_config(None, [], data=mapping)
    except UserError as err:
        raise UserError(f"tofu recipe, unlearn.methods.{method}: {str(err).removeprefix('config: ')}") from None


def _done(run_dir: Path, tag: str, suites: Sequence[str]) -> bool:
    return all((run_dir / "eval" / f"{suite}_{tag}.json").is_file() for suite in suites)


def measure(run_dir: Path, recipe: TofuRecipe, forget_split: str, *, model=None, tokenizer=None,
            retain_dir: Optional[Path] = None, log: Callable[[str], None] = print, progress: bool = False) -> dict[str, Any]:
    """Run the TOFU (and MIA) suites on the model of ``run_dir`` for ``forget_split``; the results
    go to ``run_dir/eval/<suite>_<forget_split>.json``, compared with ``retain_dir``'s when given."""
    from obliviate.eval.mia import evaluate_mia, write_mia_results
    from obliviate.eval.results import write_suite_results
    from obliviate.eval.tofu import evaluate_tofu
    from obliviate.models.loading import load_trained

    if model is None:
        model, tokenizer = load_trained(run_dir)
    template = deep_merge(PAPER_FINETUNE_DEFAULTS, recipe.finetune).get("data", {}).get("template", "plain")
    tag = forget_split
    reference = (retain_dir / "eval" / f"tofu_{tag}.json") if retain_dir is not None else None
    result = evaluate_tofu(model, tokenizer, tofu_data(recipe, forget_split), retain_reference=reference,
                           batch_size=recipe.eval.batch_size, max_new_tokens=recipe.eval.max_new_tokens,
                           template=template, progress=progress)
    result["model"] = str(run_dir)
    write_suite_results(result, run_dir, suite="tofu", tag=tag, generations_prefix=f"tofu_{tag}_")
    figures = {"tofu": result["metrics"]["summary"], "seconds": {"tofu": result.get("seconds")}}
    if recipe.eval.mia:
        out = run_dir.parent
        # members: the forget questions the TOFU suite scores; as many non-members from the holdout split
        cap = recipe.eval.max_questions.forget
        forget = [(r["prompt"], r["response"]) for r in _read_pairs(out / "data" / f"forget-{forget_split}.jsonl")][:cap]
        holdout = [(r["prompt"], r["response"]) for r in _read_pairs(out / "data" / f"holdout-{forget_split}.jsonl")]
        holdout = holdout[: len(forget)]
        mia_reference = (retain_dir / "eval" / f"mia_{tag}.json") if retain_dir is not None else None
        reference_model = reference_tokenizer = None
        if recipe.eval.mia_reference:
            reference_model, reference_tokenizer = load_trained(recipe.model or DEFAULT_MODEL)
        mia = evaluate_mia(model, tokenizer, forget, holdout, retain_reference=mia_reference,
                           reference_model=reference_model, reference_tokenizer=reference_tokenizer,
                           reference_name=recipe.model or DEFAULT_MODEL,
                           batch_size=recipe.eval.batch_size, template=template, model_name=str(run_dir))
        write_mia_results(mia, run_dir, tag)
        figures["mia"] = mia["metrics"]["summary"]
        figures["seconds"]["mia"] = mia.get("seconds")
    summary = figures["tofu"]
    log(f"  {run_dir.name} on {forget_split}: forget quality {_fmt(summary.get('forget_quality'))}, "
        f"model utility {_fmt(summary.get('model_utility'))}, forget truth ratio {_fmt(summary.get('forget_truth_ratio'))}")
    return figures


def _fmt(value: Any) -> str:
    return "—" if value is None else (f"{value:.3g}" if isinstance(value, float) else str(value))


def _read_pairs(path: Path) -> list[dict[str, str]]:
    return [row for _, row in iter_rows(path)]


def run_benchmark(
    out_dir: str | Path,
    recipe: TofuRecipe,
    *,
    methods: Optional[Sequence[str]] = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole benchmark: reference models, their figures, every method on every forget split.

    Finished pieces (a model with its evaluation files) are kept, so a stopped benchmark goes on
    where it stopped; ``overwrite`` redoes everything. Returns (and writes to
    ``<out_dir>/benchmark.json``) one row per (split, model) with the TOFU and MIA summaries and
    the wall time of each stage.
    """
    from obliviate.methods import get_method_class
    from obliviate.train.loop import run_training

    out = Path(out_dir)
    tofu_folder(recipe)
    chosen = list(methods) if methods is not None else list(recipe.unlearn.methods)
    for name in chosen:
        get_method_class(name)  # an unknown method fails before hours of work
        if name not in recipe.unlearn.methods:
            raise UserError(f"method '{name}' has no entry in the recipe's unlearn.methods "
                            f"(there: {', '.join(recipe.unlearn.methods)})")
    for split in recipe.forget_splits:
        for name in chosen:
            unlearn_config(recipe, out, name, split)  # every config is checked before the first model trains
    started = time.perf_counter()
    manifest = build_reference_models(out, recipe, overwrite=overwrite, progress=progress, log=log)
    rows: list[dict[str, Any]] = []

    def evaluated(run_dir: Path, split: str, role: str, method: Optional[str], retain_dir: Optional[Path],
                  fresh: bool = False) -> bool:
        """Measure (or read back) one model's figures; True when they were measured now."""
        suites = ("tofu", "mia") if recipe.eval.mia else ("tofu",)
        t = time.perf_counter()
        measured = overwrite or fresh or not _done(run_dir, split, suites)
        if measured:
            figures = measure(run_dir, recipe, split, retain_dir=retain_dir, log=log)
        else:
            figures = {suite: json.loads((run_dir / "eval" / f"{suite}_{split}.json").read_text())["metrics"]["summary"]
                       for suite in suites}
            log(f"  {run_dir.name} on {split}: kept")
        figures.pop("seconds", None)
        rows.append({"split": split, "run": run_dir.name, "role": role, "method": method,
                     "eval_seconds": round(time.perf_counter() - t, 1), **figures})
        return measured

    for split in recipe.forget_splits:
        retain_dir = out / f"retain-{split}"
        log(f"{split}: reference models")
        # New retain figures make every comparison with the old ones stale.
        remeasure = evaluated(retain_dir, split, "retain", None, None)
        evaluated(out / "full", split, "full", None, retain_dir, fresh=remeasure)
        for name in chosen:
            run_dir = out / f"{name}-{split}"
            config = unlearn_config(recipe, out, name, split)
            # kept only when finished with the same settings (a changed recipe retrains it)
            finished = ((run_dir / "train_summary.json").is_file() and (run_dir / "model").is_dir()
                        and (run_dir / "config.yaml").is_file() and (run_dir / "config.yaml").read_text() == config.to_yaml())
            t = time.perf_counter()
            fresh = overwrite or not finished
            if fresh:
                log(f"{split}: unlearning with {name}")
                run_training(config, run_dir, overwrite=True, progress=progress, log=lambda m: None)
            train_seconds = round(time.perf_counter() - t, 1)
            # Every model is measured as loaded from its folder, so an attack that reads the
            # trainable weights (gradnorm) sees the same set for the reference and unlearned models.
            evaluated(run_dir, split, "unlearned", name, retain_dir, fresh=fresh or remeasure)
            rows[-1]["train_seconds"] = train_seconds
    summary = {"benchmark": "tofu", "manifest": manifest, "methods": chosen, "rows": rows,
               "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_json(out / "benchmark.json", summary)
    return summary
