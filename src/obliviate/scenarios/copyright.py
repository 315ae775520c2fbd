"""The copyrighted-text scenario: memorise a book, unlearn part of it, prove it.

Pipeline (Yao et al., arXiv 2310.10683, section on copyright; Gundavarapu et al., arXiv 2405.15152):

1. a book (the generated novel by default, or a public-domain work, or any .txt) is cut into
   passages, whole chapters go to ``forget``, ``unseen`` and ``retain``, and each passage into a
   prefix (prompt) and its continuation;
2. the original model is measured (optional), then LoRA-fine-tuned on the passages of the whole
   book (``book.finetune_on``) until it reproduces them; the adapter is merged and saved
   (``finetune/model``) and measured again;
3. unlearning (``ga_mismatch_kl`` by default) starts from that merged fine-tuned model with a new
   LoRA adapter: gradient ascent on the forget pairs, the forget prefixes paired with random
   retain continuations, and forward KL to the fine-tuned model (adapters off) on the retain pairs.
   The papers continue training the fine-tuned weights; starting a fresh adapter on the merged
   model is the same model class and keeps the reference model free (it is the same network with
   the adapter switched off);
4. the suite (:mod:`obliviate.eval.copyright`) runs after each stage; ``report.html``,
   ``summary.json`` and ``eval/copyright_<stage>.json`` are written.

Every stage writes into the output folder (``data/``, ``finetune/``, ``unlearn/``, ``eval/``,
``generations/``). The settings are the packaged recipe ``scenarios/recipes/copyright.yaml``
(:class:`Recipe` checks it; :func:`load_recipe` reads it, or another recipe file, with
``name=value`` overrides).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field

from obliviate.config import RunConfig
from obliviate.data.books import write_pairs
from obliviate.data.examples import Example
from obliviate.data.text import Passage, TextSplits, prefix_continuation_pairs, split_by_chapter, split_by_passage
from obliviate.errors import UserError
from obliviate.eval.copyright import (
    SPLITS,
    CopyrightSettings,
    calibration_texts,
    default_general_texts,
    evaluate_copyright,
    everyday_pairs,
    write_copyright_results,
)
from obliviate.io import atomic_write_json
from obliviate.metrics.change import relative_change, relative_drop
from obliviate.models import DEFAULT_MODEL
from obliviate.report.suites import COPYRIGHT_METRICS
from obliviate.scenarios.demo_run import Laps, format_cell, print_targets
from obliviate.scenarios.finetune_then_unlearn import finetune_then_unlearn_configs, mismatch_answers, scale_finetune_warmup
from obliviate.scenarios.recipe import read_recipe
from obliviate.train.run_dir import prepare_run_dir, release_run_dir

STAGES = ("original", "finetuned", "unlearned")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BookSection(_Strict):
    """Where the text comes from and how it is cut and split."""

    source: str = Field(description="synthetic | a public-domain work (milton...) | a .txt/.md/.jsonl path")
    seed: int = Field(description="the generated book's text (synthetic book only)")
    chapters: int = Field(gt=0, description="synthetic book only")
    paragraphs_per_chapter: int = Field(gt=0, description="synthetic book only")
    max_passages: Optional[int] = Field(gt=0, description="keep the first N passages of a corpus; null = all")
    prefix_chars: int = Field(gt=0, description="characters of a passage given as the prompt")
    max_continuation_chars: Optional[int] = Field(gt=0, description="characters of the continuation to reproduce")
    split: Literal["chapter", "passage"] = Field(description="whole chapters or single passages go to each split")
    forget: Union[int, float, list[str]] = Field(description="a count, a share or a list of chapter names")
    unseen: Union[int, float, list[str]] = Field(description="memorised but not unlearned: a count, share or names")
    split_seed: int = Field(description="which chapters or passages go where")
    finetune_on: list[Literal["forget", "unseen", "retain"]] = Field(description="the splits memorised first")


class EvalSection(_Strict):
    """How each stage's model is measured."""

    max_new_tokens: int = Field(gt=0, description="greedy continuation length")
    batch_size: int = Field(gt=0)
    max_per_split: Optional[int] = Field(gt=0, description="passages scored per split (time bound); null = all")
    benign_prompts: int = Field(ge=0, description="everyday prompts answered to catch degenerate output")
    benign_max_new_tokens: int = Field(gt=0)
    bleu_quantile: float = Field(gt=0, lt=1, description="leak threshold: this quantile of BLEU between unrelated "
                                                         "continuations")
    calibration_unit: Literal["text", "sentence"]
    embedder: bool = Field(description="cosine similarity with MiniLM when its wheel is installed")
    original: bool = Field(description="also measure the model before fine-tuning")


class Recipe(_Strict):
    """The copyright scenario's settings. Every value lives in the packaged recipe
    (``scenarios/recipes/copyright.yaml``, which says why each is what it is); this schema has no
    defaults, so there is one copy."""

    model: Optional[str] = Field(description="model name, path or alias; null = the default model")
    book: BookSection
    finetune: dict[str, Any] = Field(description="run-config sections (run, data, train) laid over the papers' "
                                                 "LoRA fine-tuning defaults")
    unlearn: dict[str, Any] = Field(description="run-config sections: run, data, method, train")
    eval: EvalSection
    unlearn_start: Literal["merged", "adapter"] = Field(
        description="merged: a new LoRA adapter on the merged fine-tuned model; adapter: keep training the "
                    "fine-tuning adapter itself, as the papers do (the KL reference is then a merged copy)",
    )
    everyday_retain: int = Field(
        ge=0,
        description="everyday-text pairs added to the unlearning stage's retain (KL) set, besides the retain chapters; "
                    "never the text scored for general perplexity",
    )


# ---------------------------------------------------------------------------------------------
# Recipe


def load_recipe(
    path: str | Path | None = None, overrides: Sequence[str] = (), *, model: str | None = None, book: str | None = None
) -> tuple[Recipe, str]:
    """Read and validate a recipe: ``path`` (default: the packaged one) with ``name=value``
    ``overrides`` (``unlearn.train.lr=2e-4``, ``book.source=milton``); ``model``/``book``, when
    given, replace ``model`` and ``book.source`` as they are. Returns the recipe and the name of its
    source for messages; every problem is a one-line ``UserError``.
    """
    values = {name: value for name, value in (("model", model), ("book.source", book)) if value is not None}
    return read_recipe(Recipe, "copyright", path, overrides, values)


def stage_configs(recipe: Recipe, out_dir: Path, source: str = "recipe") -> tuple[RunConfig, RunConfig]:
    """The fine-tuning and unlearning run configs (validated; no model is loaded); unlearning starts
    where ``recipe.unlearn_start`` says."""
    return finetune_then_unlearn_configs(
        model=recipe.model, finetune=recipe.finetune, unlearn=recipe.unlearn, out_dir=out_dir, source=source,
        default_method="ga_mismatch_kl", learned_what="memorised", unlearn_start=recipe.unlearn_start,
    )


def book_passages(section: BookSection) -> list[Passage]:
    """The book's passages (:func:`obliviate.data.books.book_passages`), the first ``max_passages``."""
    from obliviate.data.books import book_passages as passages_of

    passages, _ = passages_of(
        section.source, seed=section.seed, chapters=section.chapters, paragraphs_per_chapter=section.paragraphs_per_chapter
    )
    return passages[: section.max_passages] if section.max_passages else passages


def book_splits(section: BookSection) -> tuple[TextSplits, dict[str, list[Example]]]:
    """Passages split into forget / unseen / retain and each passage cut into prefix/continuation."""
    passages = book_passages(section)
    splitter = split_by_chapter if section.split == "chapter" else split_by_passage
    splits = splitter(passages, section.forget, section.unseen, seed=section.split_seed)
    pairs = {
        name: prefix_continuation_pairs(
            getattr(splits, name), prefix_chars=section.prefix_chars, max_continuation_chars=section.max_continuation_chars
        )
        for name in SPLITS
    }
    for name in ("forget", "retain"):
        if not pairs[name]:
            raise UserError(f"book: the {name} split has no passage longer than prefix_chars={section.prefix_chars}")
    return splits, pairs


# ---------------------------------------------------------------------------------------------
# Pipeline


def run_copyright_demo(
    out_dir: str | Path,
    *,
    model: str | None = None,
    book: str | None = None,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole scenario; returns the summary (also in ``<out_dir>/summary.json``).

    ``config``: a recipe file (default: the packaged ``scenarios/recipes/copyright.yaml``);
    ``overrides``: ``name=value`` strings (e.g. ``unlearn.train.lr=2e-4``); ``model``/``book``
    replace the recipe's model and book source. Everything is validated before a model is loaded.
    """
    from obliviate.models.loading import load_model_and_tokenizer
    from obliviate.train.loop import TrainData, run_training, total_steps

    laps = Laps(log)
    out = Path(out_dir)
    recipe, source = load_recipe(config, overrides, model=model, book=book)
    ft_config, ul_config = stage_configs(recipe, out, source)
    splits, pairs = book_splits(recipe.book)
    train_pairs = [e for name in recipe.book.finetune_on for e in pairs[name]]
    scale_finetune_warmup(ft_config, recipe.finetune, len(train_pairs))
    pool = mismatch_answers(ul_config, [e.response for e in pairs["retain"]])  # default: the retain continuations
    # The KL term's retain set: the retain chapters, plus everyday text when the recipe asks
    # (it holds general perplexity, which the book alone does not constrain).
    retain = pairs["retain"] + everyday_pairs(recipe.everyday_retain)
    out = prepare_run_dir(out, overwrite=overwrite)
    for name, examples in {**pairs, "train": train_pairs, "retain": retain}.items():
        write_pairs(out / "data" / f"{name}.jsonl", examples)

    laps.start()
    log(f"1/5 data: {recipe.book.source} book, {splits.sizes()} passages; "
        f"fine-tuning on {len(train_pairs)} pairs ({', '.join(recipe.book.finetune_on)})")
    base, tokenizer = load_model_and_tokenizer(recipe.model)
    embedder = None
    if recipe.eval.embedder:
        from obliviate.models.embeddings import load_embedder

        embedder = load_embedder(required=False)
    from obliviate.metrics.memorisation import calibrate_bleu_threshold

    threshold = calibrate_bleu_threshold(
        calibration_texts(pairs) if recipe.eval.calibration_unit == "text" else [p.text for p in
                                                                                  splits.forget + splits.unseen + splits.retain],
        quantile=recipe.eval.bleu_quantile, unit=recipe.eval.calibration_unit,
    )
    cap = recipe.eval.max_per_split
    eval_splits = {name: pairs[name][:cap] if cap else pairs[name] for name in SPLITS if pairs[name]}
    settings = CopyrightSettings(
        template=ft_config.data.template, max_new_tokens=recipe.eval.max_new_tokens, batch_size=recipe.eval.batch_size,
        max_length=ft_config.data.max_length, benign_prompts=recipe.eval.benign_prompts,
        benign_max_new_tokens=recipe.eval.benign_max_new_tokens,
    )
    general = default_general_texts()
    results: dict[str, dict[str, Any]] = {}

    def measure(stage: str, model) -> None:
        results[stage] = evaluate_copyright(
            model, tokenizer, eval_splits, general_texts=general, bleu_threshold=threshold, embedder=embedder,
            settings=settings,
        )
        write_copyright_results(results[stage], out, stage)
        m = results[stage]["metrics"]
        log("  " + "; ".join(
            f"{s}: ROUGE-L {m[s]['rouge_l']:.3f}, leak {m[s]['leak_rate']:.2f}" for s in SPLITS if s in m
        ) + f"; general ppl {m['general']['perplexity']:.2f}")

    laps.lap("data and model")
    if recipe.eval.original:
        log("2/5 original model: measuring")
        measure("original", base)
        laps.lap("evaluation original")

    log(f"3/5 fine-tuning (LoRA r={ft_config.train.lora.r}, lr {ft_config.train.lr:g}, "
        f"{total_steps(ft_config, len(train_pairs), 1)} steps, warm-up {ft_config.train.warmup_steps})")
    ft_result = run_training(
        ft_config, out / "finetune", model=base, tokenizer=tokenizer, data=TrainData(train_pairs),
        progress=progress, log=log,
    )
    ft_result.model = None  # the copy on disk is the fine-tuned model from here on
    del base
    from obliviate.models.loading import load_trained

    finetuned, tokenizer = load_trained(str(out / "finetune" / "model"))  # merged weights, or base + adapter
    laps.lap("fine-tuning")
    measure("finetuned", finetuned)
    laps.lap("evaluation finetuned")

    log(f"4/5 unlearning with {ul_config.method.name} (lr {ul_config.train.lr:g}, "
        f"{total_steps(ul_config, len(pairs['forget']), 1)} steps) "
        + ("continuing the fine-tuning adapter" if recipe.unlearn_start == "adapter" else "from the merged fine-tuned model"))
    if recipe.unlearn_start == "adapter":
        del finetuned  # run_training loads the base and puts the fine-tuning adapter back on, trainable
    ul_result = run_training(
        ul_config, out / "unlearn", model=finetuned if recipe.unlearn_start == "merged" else None, tokenizer=tokenizer,
        data=TrainData(pairs["forget"], retain, pool), progress=progress, log=log,
    )
    laps.lap("unlearning")
    measure("unlearned", ul_result.model)
    laps.lap("evaluation unlearned")

    log("5/5 report")
    summary = summarise(results, recipe, timings=laps.timings, train={"finetune": ft_result, "unlearn": ul_result})
    summary["bleu_threshold"] = threshold
    summary["split_sizes"] = splits.sizes()
    summary["eval_sizes"] = {name: len(v) for name, v in eval_splits.items()}
    summary["seconds_total"] = laps.total()
    summary["load_average"] = list(os.getloadavg())
    atomic_write_json(out / "summary.json", summary)
    write_copyright_report(out, results, summary, recipe.model_dump(mode="json"))
    laps.lap("report")
    summary["seconds_total"] = laps.total()
    atomic_write_json(out / "summary.json", summary)
    release_run_dir(out)  # after a failure the folder stays locked until the process ends
    return summary


# ---------------------------------------------------------------------------------------------
# Summary


#: (metric key, label) of each split's figures, as the report shows them.
SUMMARY_METRICS = COPYRIGHT_METRICS

#: The targets of the scenario (see docs/copyright.md).
TARGETS = {
    "finetuned_forget_rouge_l_min": 0.5,
    "forget_rouge_l_drop_min": 0.9,
    "retain_perplexity_rise_max": 0.2,
    "general_perplexity_rise_max": 0.1,
}


def summarise(results: dict[str, dict], recipe: Recipe, *, timings: dict, train: dict) -> dict[str, Any]:
    """Rows per metric and split across stages, the target checks and the training figures."""
    metrics = {stage: results[stage]["metrics"] for stage in STAGES if stage in results}
    rows = []
    for split in SPLITS:
        for key, label in SUMMARY_METRICS:
            if key not in metrics["finetuned"].get(split, {}):
                continue
            rows.append({
                "metric": label, "split": split,
                "original": metrics.get("original", {}).get(split, {}).get(key),
                "finetuned": metrics["finetuned"][split][key],
                "unlearned": metrics["unlearned"][split][key],
            })
    rows.append({"metric": "perplexity", "split": "general", **{
        stage: metrics[stage]["general"]["perplexity"] if stage in metrics else None for stage in STAGES}})
    if "benign" in metrics["finetuned"]:
        rows.append({"metric": "degenerate rate (everyday prompts)", "split": "benign", **{
            stage: metrics[stage]["benign"]["degenerate_rate"] if stage in metrics else None for stage in STAGES}})
        if "on_topic_rate" in metrics["finetuned"]["benign"]:
            rows.append({"metric": "on-topic rate (everyday prompts)", "split": "benign", **{
                stage: metrics[stage]["benign"].get("on_topic_rate") if stage in metrics else None for stage in STAGES}})
    ft, ul = metrics["finetuned"], metrics["unlearned"]
    original_forget = metrics.get("original", {}).get("forget", {})
    figures = {
        "finetuned_forget_rouge_l": ft["forget"]["rouge_l"],
        "unlearned_forget_rouge_l": ul["forget"]["rouge_l"],
        "forget_rouge_l_drop": relative_drop(ft["forget"]["rouge_l"], ul["forget"]["rouge_l"]),
        "forget_bleu_drop": relative_drop(ft["forget"]["bleu"], ul["forget"]["bleu"]),
        "forget_leak_rate": {"finetuned": ft["forget"]["leak_rate"], "unlearned": ul["forget"]["leak_rate"]},
        "retain_perplexity_rise": relative_change(ft["retain"]["perplexity"], ul["retain"]["perplexity"])
        if "retain" in ft else None,
        "retain_continuation_perplexity_rise": relative_change(
            ft["retain"]["continuation_perplexity"], ul["retain"]["continuation_perplexity"]) if "retain" in ft else None,
        "retain_rouge_l": {"finetuned": ft["retain"]["rouge_l"], "unlearned": ul["retain"]["rouge_l"]} if "retain" in ft else None,
        "general_perplexity_rise": relative_change(ft["general"]["perplexity"], ul["general"]["perplexity"]),
        "degenerate_rate": {s: metrics[s]["benign"]["degenerate_rate"] for s in metrics if "benign" in metrics[s]},
    }
    if original_forget:
        # Share of the memorised similarity (above what the model scored before it saw the book)
        # that unlearning removed: 1 = back to the never-saw-it level.
        gained = ft["forget"]["rouge_l"] - original_forget["rouge_l"]
        figures["forget_rouge_l_excess_removed"] = (
            (ft["forget"]["rouge_l"] - ul["forget"]["rouge_l"]) / gained if gained > 0 else float("nan"))
        figures["original_forget_rouge_l"] = original_forget["rouge_l"]
    checks = {
        "finetuned_forget_rouge_l >= 0.5": figures["finetuned_forget_rouge_l"] >= TARGETS["finetuned_forget_rouge_l_min"],
        "forget_rouge_l_drop >= 0.9": figures["forget_rouge_l_drop"] >= TARGETS["forget_rouge_l_drop_min"],
        "retain_perplexity_rise <= 0.2": figures["retain_perplexity_rise"] is not None
        and figures["retain_perplexity_rise"] <= TARGETS["retain_perplexity_rise_max"],
        "general_perplexity_rise <= 0.1": figures["general_perplexity_rise"] <= TARGETS["general_perplexity_rise_max"],
    }

    def train_figures(result) -> dict[str, Any]:
        return {"steps": result.steps, "seconds": round(result.seconds, 1), "tokens_per_s": round(result.tokens_per_s, 1),
                "stop_reason": result.stop_reason}

    return {
        "scenario": "copyright",
        "model": recipe.model or DEFAULT_MODEL,
        "book": recipe.book.source,
        "method": recipe.unlearn.get("method", {}).get("name", "ga_mismatch_kl"),
        "rows": rows,
        "figures": figures,
        "targets": checks,
        "timings_s": timings,
        "train": {name: train_figures(result) for name, result in train.items()},
        "metrics": metrics,
        "recipe": recipe.model_dump(mode="json"),
    }


# ---------------------------------------------------------------------------------------------
# Report


def write_copyright_report(out_dir: Path, results: dict[str, dict], summary: dict[str, Any], recipe: dict) -> Path:
    """``report.html``: the run report of the demo folder (``obliviate report`` rebuilds the same page),
    with the in-memory results, summary and recipe: before/after bars per split, loss curves and
    side-by-side continuations."""
    from obliviate.report import collect_run, write_run_report

    run = collect_run(out_dir, evals={"copyright": results}, summary=summary, config=recipe)
    return write_run_report(run, title="Copyrighted-text unlearning")


def print_summary(summary: dict[str, Any]) -> None:
    """The summary table on the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"copyright unlearning — {summary['book']} book, {summary['method']}")
    for column in ("metric", "split", "original", "finetuned", "unlearned"):
        table.add_column(column, justify="right" if column in STAGES else "left")
    for row in summary["rows"]:
        table.add_row(row["metric"], row["split"], *(format_cell(row.get(stage)) for stage in STAGES))
    console = Console()
    console.print(table)
    f = summary["figures"]
    console.print(
        f"forget ROUGE-L {f['finetuned_forget_rouge_l']:.3f} → {f['unlearned_forget_rouge_l']:.3f} "
        f"(−{100 * f['forget_rouge_l_drop']:.0f}%); retain passage perplexity {100 * f['retain_perplexity_rise']:+.1f}%; "
        f"general perplexity {100 * f['general_perplexity_rise']:+.1f}%; total {summary['seconds_total']:.0f} s"
    )
    print_targets(console, summary["targets"])
